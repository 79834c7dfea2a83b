import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, createKeyVia, useCluster, type Replica } from './support/cluster.js';
import { OPENAI_SECRET, allHeaderText, servedTotals } from './support/gateway.js';
import { metricValue } from './support/http.js';

const env = useCluster(3);

type Credentials = Record<string, string>;

/** One HTTP turn of a session on a given replica. */
async function turn(replica: Replica, credentials: Credentials, session: Record<string, string>, body: Record<string, unknown>) {
  const res = await fetch(`${replica.url}/v1/responses`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...credentials, ...session },
    body: JSON.stringify({ model: 'gpt-5', store: false, ...body }),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
}

/** A conversation of `turns` turns whose turns go round robin over the env.replicas, replaying the turn state. */
async function conversation(credentials: Credentials, sessionId: string, turns: number, stream = false) {
  let previous: string | undefined;
  let turnState: string | undefined;
  const ids: string[] = [];
  for (let i = 0; i < turns; i++) {
    const session: Record<string, string> = { 'session-id': sessionId, ...(turnState && { 'x-codex-turn-state': turnState }) };
    const result = await turn(env.replicas[i % env.replicas.length]!, credentials, session, {
      input: `turn ${i}`,
      stream,
      ...(previous && { previous_response_id: previous }),
    });
    expect(result.status, result.text).toBe(200);
    turnState = result.headers.get('x-codex-turn-state') ?? undefined;
    expect(turnState).toBeTruthy();
    const id: string = stream ? /"response":\{"id":"(resp_\d+)"/.exec(result.text)![1]! : result.json().id;
    ids.push(id);
    previous = id;
  }
  return ids;
}

function expectNoProxyCredential(secret: string) {
  for (const connection of env.mock.wsConnections) {
    expect(connection.headers.authorization).toBe(`Bearer ${OPENAI_SECRET}`);
    expect(allHeaderText(connection.headers)).not.toContain(secret);
    expect(Object.keys(connection.headers).some((h) => h.startsWith('x-tollgate-'))).toBe(false);
  }
}

describe('HTTP-bridge sessions over three env.replicas', () => {
  it('a 5-turn conversation round robin over 3 env.replicas runs over exactly one upstream connection', async () => {
    const { key } = await createKeyVia(env.replicas[0]!);
    const forwardsBefore = await Promise.all(env.replicas.map((r) => metricValue(r, 'tollgate_bridge_forwards_total', { outcome: 'ok' })));
    const ids = await conversation({ authorization: `Bearer ${key}` }, 'conv-bearer', 5);
    expect(new Set(ids).size).toBe(5);
    expect(env.mock.wsConnections).toHaveLength(1);
    // every turn after the first continued the previous response on the same upstream connection
    const frames = env.mock.wsConnections[0]!.frames as Array<{ previous_response_id?: string }>;
    expect(frames.map((f) => f.previous_response_id ?? null)).toEqual([null, ...ids.slice(0, 4)]);
    expectNoProxyCredential(key);
    // turns went to a, b, c, a, b: a owns the session, b forwarded two turns and c one
    const forwardsAfter = await Promise.all(env.replicas.map((r) => metricValue(r, 'tollgate_bridge_forwards_total', { outcome: 'ok' })));
    expect(forwardsAfter.map((n, i) => n - forwardsBefore[i]!)).toEqual([0, 2, 1]);
    expect(await metricValue(env.replicas[0]!, 'tollgate_bridge_owned_sessions', {})).toBeGreaterThanOrEqual(1);
    expect(await metricValue(env.replicas[1]!, 'tollgate_bridge_forward_seconds_count', {})).toBeGreaterThanOrEqual(2);
    // each replica counts its turns in its next usage batch
    const usageNow = async () => (await fetch(`${env.replicas[2]!.url}/v1/usage`, { headers: { authorization: `Bearer ${key}` } })).json();
    await expect
      .poll(async () => {
        const { request_count, total_tokens } = await usageNow();
        return { request_count, total_tokens };
      })
      .toEqual({ request_count: 5, total_tokens: servedTotals(env.mock).total_tokens });
  });

  it('works for an x-api-key-only caller, streamed, through forwarding', async () => {
    const { key } = await createKeyVia(env.replicas[0]!);
    await conversation({ 'x-api-key': key }, 'conv-xapikey', 4, true);
    expect(env.mock.wsConnections).toHaveLength(1);
    expectNoProxyCredential(key);
  });

  it('works for an invalid Bearer plus a valid x-api-key', async () => {
    const { key } = await createKeyVia(env.replicas[0]!);
    const junkBearer = 'sk-tg-not-a-real-key-0000000000';
    await conversation({ authorization: `Bearer ${junkBearer}`, 'x-api-key': key }, 'conv-mixed', 3);
    expect(env.mock.wsConnections).toHaveLength(1);
    expectNoProxyCredential(key);
    for (const connection of env.mock.wsConnections) expect(allHeaderText(connection.headers)).not.toContain(junkBearer);
  });

  it('the official openai client keeps a session going across env.replicas', async () => {
    const { key } = await createKeyVia(env.replicas[0]!);
    let previous: string | undefined;
    for (let i = 0; i < 3; i++) {
      const client = new OpenAI({ apiKey: key, baseURL: `${env.replicas[i]!.url}/v1`, maxRetries: 0, defaultHeaders: { 'session-id': 'sdk-session' } });
      const stream = client.responses.stream({ model: 'gpt-5', input: `sdk ${i}`, store: false, ...(previous && { previous_response_id: previous }) });
      const final = await stream.finalResponse();
      expect(final.status).toBe('completed');
      previous = final.id;
    }
    expect(env.mock.wsConnections).toHaveLength(1);
  });

  it('two callers with the same session id never share a session', async () => {
    const alice = await createKeyVia(env.replicas[0]!, { name: 'alice' });
    const bob = await createKeyVia(env.replicas[0]!, { name: 'bob' });
    await conversation({ 'x-api-key': alice.key }, 'shared-name', 2);
    await conversation({ 'x-api-key': bob.key }, 'shared-name', 2);
    expect(env.mock.wsConnections).toHaveLength(2);
  });

  it('a key revoked between turns is refused on the owner even when the request came through another replica', async () => {
    const { id, key } = await createKeyVia(env.replicas[0]!);
    const credentials = { 'x-api-key': key };
    // replica A owns the session; replica C has the key in its cache when the key is revoked
    const first = await turn(env.replicas[0]!, credentials, { 'session-id': 'conv-revoked' }, { input: 'first' });
    expect(first.status).toBe(200);
    expect((await fetch(`${env.replicas[2]!.url}/v1/usage`, { headers: credentials })).status).toBe(200);
    const framesBefore = env.mock.wsConnections[0]!.frames.length;
    const revoked = await fetch(`${env.replicas[1]!.url}/admin/keys/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    expect(revoked.status).toBe(204);
    const viaOther = await turn(env.replicas[2]!, credentials, { 'session-id': 'conv-revoked' }, { input: 'second', previous_response_id: first.json().id });
    expect(viaOther.status).toBe(401);
    expect(viaOther.json().error.code).toBe('invalid_api_key');
    expect(env.mock.wsConnections[0]!.frames.length).toBe(framesBefore);
  });
});
