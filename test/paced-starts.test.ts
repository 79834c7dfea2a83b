import type { FastifyReply, FastifyRequest } from 'fastify';
import { Agent, request } from 'undici';
import { describe, expect, it } from 'vitest';
import { pacedStarts } from '../src/server/paced-starts.js';
import { useTestGateway } from './support/gateway.js';
import { usageOf } from './support/http.js';

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('request starts paced over turns of the event loop', () => {
  /** Calls the hook `count` times in one turn; returns the order in which requests were let start. */
  function arrive(hook: ReturnType<typeof pacedStarts>, count: number, started: number[], from = 0) {
    for (let i = from; i < from + count; i++) {
      (hook as (request: FastifyRequest, reply: FastifyReply, done: () => void) => void)({} as FastifyRequest, {} as FastifyReply, () => started.push(i));
    }
  }

  it('starts at most perTurn requests per turn, the rest on the next turns in arrival order', async () => {
    const hook = pacedStarts(4);
    const started: number[] = [];
    arrive(hook, 10, started);
    expect(started).toEqual([0, 1, 2, 3]);
    await nextTurn();
    expect(started).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    // a request arriving while others wait queues behind them
    arrive(hook, 1, started, 10);
    await nextTurn();
    expect(started).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it('a request alone starts at once, turn after turn', async () => {
    const hook = pacedStarts(4);
    const started: number[] = [];
    for (let i = 0; i < 6; i++) {
      arrive(hook, 1, started, i);
      expect(started).toHaveLength(i + 1);
      await nextTurn();
    }
  });
});

describe('a burst larger than one turn through a real gateway', () => {
  const env = useTestGateway();

  it('serves every request of the burst once, none lost while waiting for its turn', async () => {
    const burst = 300;
    const agent = new Agent({ connections: burst });
    try {
      const answers = await Promise.all(
        Array.from({ length: burst }, async (_, i) => {
          const res = await request(`${env.url}/v1/responses`, {
            dispatcher: agent,
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${env.key.secret}` },
            body: JSON.stringify({ model: 'gpt-5', input: `burst ${i}`, stream: true }),
          });
          return { status: res.statusCode, text: await res.body.text() };
        }),
      );
      expect(answers.map((a) => a.status)).toEqual(Array(burst).fill(200));
      for (const answer of answers) expect(answer.text).toContain('response.completed');
      expect(env.mock.requests).toHaveLength(burst);
      expect(new Set(env.mock.requests.map((r) => JSON.parse(r.body).input)).size).toBe(burst);
      await expect.poll(async () => (await usageOf(env, env.key.secret)).request_count).toBe(burst);
    } finally {
      await agent.close();
    }
  });
});
