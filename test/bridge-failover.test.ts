import { describe, expect, it } from 'vitest';
import { sessionOf } from '../src/http/session-key.js';
import { settlesWithin } from './support/bounds.js';
import { TEST_BRIDGE, createKeyVia, useCluster, type Replica } from './support/cluster.js';

const env = useCluster(3);

async function turn(replica: Replica, key: string, sessionId: string, body: Record<string, unknown>) {
  const res = await fetch(`${replica.url}/v1/responses`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': key, 'session-id': sessionId },
    body: JSON.stringify({ model: 'gpt-5', store: false, ...body }),
  });
  const text = await res.text();
  return { status: res.status, retryAfter: res.headers.get('retry-after'), text, json: () => JSON.parse(text) };
}

async function ownerOf(keyId: string, sessionId: string) {
  return env.store.getLease(sessionOf({ 'session-id': sessionId }, keyId)!.key);
}

describe('owner failure', () => {
  it('SIGKILL on the owner: the conversation goes on on another replica once the owner is stale', async () => {
    const { id, key } = await createKeyVia(env.replicas[0]!);
    const first = await turn(env.replicas[0]!, key, 'killed-owner', { input: 'one' });
    expect(first.status).toBe(200);
    expect((await ownerOf(id, 'killed-owner'))!.instanceId).toBe(env.replicas[0]!.instanceId);

    await env.replicas[0]!.kill('SIGKILL');
    const killedAt = Date.now();
    // until the dead owner's heartbeat (last written before the kill) is stale, other replicas
    // answer 503 with Retry-After; after it, they take the session over and the continuation
    // meets the upstream's own error
    const continued = await settlesWithin(
      async () => {
        const answer = await turn(env.replicas[1]!, key, 'killed-owner', { input: 'two', previous_response_id: first.json().id });
        if (answer.status === 503) {
          expect(answer.json().error.code).toBe('owner_unavailable');
          expect(Number(answer.retryAfter)).toBeGreaterThan(0);
        }
        return answer;
      },
      (answer) => answer.status !== 503,
      killedAt,
      TEST_BRIDGE.staleAfterMs,
    );
    expect(continued.status).toBe(400);
    expect(continued.json().error.code).toBe('previous_response_not_found');
    const lease = (await ownerOf(id, 'killed-owner'))!;
    expect(lease.instanceId).toBe(env.replicas[1]!.instanceId);

    // the conversation goes on, through any replica, on the new owner's connection
    const fresh = await turn(env.replicas[2]!, key, 'killed-owner', { input: 'three' });
    expect(fresh.status).toBe(200);
    const next = await turn(env.replicas[2]!, key, 'killed-owner', { input: 'four', previous_response_id: fresh.json().id });
    expect(next.status, next.text).toBe(200);
    expect(env.mock.wsConnections).toHaveLength(2);
    expect((await ownerOf(id, 'killed-owner'))!.epoch).toBeGreaterThan(0);
  });

  it('SIGTERM on the owner: the in-flight stream finishes, ownership is released at once, the next turn is served elsewhere', async () => {
    const owner = env.replicas[2]!;
    const { id, key } = await createKeyVia(env.replicas[1]!);
    // the owner claims the session; replica B forwards one turn to it (and remembers the owner)
    expect((await turn(owner, key, 'drained-owner', { input: 'claim' })).status).toBe(200);
    expect((await turn(env.replicas[1]!, key, 'drained-owner', { input: 'via b' })).status).toBe(200);
    const release = env.mock.holdStreams();
    const inFlight = turn(owner, key, 'drained-owner', { input: 'long answer', stream: true });
    await expect.poll(() => env.mock.wsConnections[0]?.frames.length).toBe(3);
    expect((await ownerOf(id, 'drained-owner'))?.instanceId).toBe(owner.instanceId);

    const exited = owner.kill('SIGTERM');
    // draining has begun (it leaves the registry first) while the stream is still held
    await expect.poll(() => env.store.getReplica(owner.instanceId)).toBeNull();
    expect(env.mock.served).toHaveLength(2);
    release();
    const streamed = await inFlight;
    expect(streamed.status).toBe(200);
    expect(streamed.text).toContain('event: response.completed');
    expect(await exited).toBe(0);

    // released, not merely expired: nobody owns it right after the exit
    expect(await ownerOf(id, 'drained-owner')).toBeNull();
    const next = await turn(env.replicas[1]!, key, 'drained-owner', { input: 'after drain' });
    expect(next.status, next.text).toBe(200);
    expect((await ownerOf(id, 'drained-owner'))!.instanceId).toBe(env.replicas[1]!.instanceId);
  });
});
