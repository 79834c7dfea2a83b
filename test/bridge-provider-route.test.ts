import { describe, expect, it } from 'vitest';
import { sessionOf } from '../src/http/session-key.js';
import { createKeyVia, useCluster } from './support/cluster.js';
import { OPENAI_SECRET } from './support/gateway.js';

const CHATGPT_SECRET = 'sk-upstream-chatgpt-' + 'c'.repeat(24);

// both Responses providers configured: openai is the first choice of `/v1/responses`, chatgpt of the Codex path
const env = useCluster(2, {
  config: (mockUrl) => ({
    providers: {
      openai: { baseUrl: mockUrl, accounts: [{ id: 'oa-1', apiKey: OPENAI_SECRET }] },
      chatgpt: { baseUrl: `${mockUrl}/backend-api/codex`, accounts: [{ id: 'cg-1', apiKey: CHATGPT_SECRET, accountId: 'acct-cg-1' }] },
    },
  }),
});

describe('a bridged Codex-path session forwarded between replicas', () => {
  it('stays on the chatgpt provider and account on the owner, also when its upstream WebSocket starts over', async () => {
    const { id, key } = await createKeyVia(env.replicas[0]!);
    let turnState: string | undefined;
    // turns alternate a, b, a, b…: a claims the session, b forwards to it
    const turn = async (i: number) => {
      const res = await fetch(`${env.replicas[i % 2]!.url}/backend-api/codex/responses`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${key}`,
          'content-type': 'application/json',
          'session-id': 'codex-path-session',
          ...(turnState && { 'x-codex-turn-state': turnState }),
        },
        body: JSON.stringify({ model: 'gpt-5', store: false, input: `turn ${i}` }),
      });
      turnState = res.headers.get('x-codex-turn-state') ?? turnState;
      return { status: res.status, text: await res.text() };
    };
    for (const i of [0, 1]) expect((await turn(i)).status).toBe(200);
    // the owner's upstream WebSocket closes mid-turn: the next turn opens a new one on the owner
    env.mock.closeWsNext(1011, 'upstream restarted');
    expect((await turn(3)).status).not.toBe(200);
    for (const i of [5, 6, 7]) {
      const result = await turn(i);
      expect(result.status, result.text).toBe(200);
    }
    // every upstream WebSocket went to ChatGPT's Codex backend with the chatgpt account's credential
    expect(env.mock.wsConnections).toHaveLength(2);
    for (const connection of env.mock.wsConnections) {
      expect(connection.path.split('?')[0]).toBe('/backend-api/codex/responses');
      expect(connection.headers.authorization).toBe(`Bearer ${CHATGPT_SECRET}`);
      expect(connection.headers['chatgpt-account-id']).toBe('acct-cg-1');
    }
    const session = sessionOf({ 'session-id': 'codex-path-session' }, id)!;
    expect((await env.store.getLease(session.key))?.accountId).toBe('cg-1');
  });
});
