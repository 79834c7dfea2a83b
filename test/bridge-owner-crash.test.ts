import { describe, expect, it } from 'vitest';
import { createKeyVia, useCluster } from './support/cluster.js';

const env = useCluster(2);

describe('owner killed in the middle of a forwarded stream', () => {
  it('cuts the caller off promptly instead of hanging, and the session moves on to a live replica', async () => {
    const owner = env.replicas[0]!;
    const other = env.replicas[1]!;
    const { key } = await createKeyVia(other);
    const send = (input: string, stream: boolean) =>
      fetch(`${other.url}/v1/responses`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': key, 'session-id': 'crash-mid-stream' },
        body: JSON.stringify({ model: 'gpt-5', store: false, input, stream }),
      });
    const claim = await fetch(`${owner.url}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': key, 'session-id': 'crash-mid-stream' },
      body: JSON.stringify({ model: 'gpt-5', store: false, input: 'claim' }),
    });
    expect(claim.status).toBe(200); // the owner holds the session; the turns below go through the other replica

    const release = env.mock.holdStreams();
    const res = await send('long answer', true);
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toContain('event: response.created');

    await owner.kill('SIGKILL');
    // the rest of the stream never comes: the body ends or errors, it does not hang
    const rest = (async () => {
      let text = '';
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) return { text, failed: false };
        text += new TextDecoder().decode(chunk.value);
      }
    })().catch(() => ({ text: '', failed: true }));
    const outcome = await Promise.race([rest, new Promise<'hang'>((r) => setTimeout(() => r('hang'), 10_000))]);
    release();
    expect(outcome).not.toBe('hang');
    expect((outcome as { text: string }).text).not.toContain('response.completed');

    // the surviving replica takes the session over once the dead owner is stale
    await expect
      .poll(async () => (await send('after the crash', false)).status, { timeout: 10_000, interval: 200 })
      .toBe(200);
    expect((await fetch(`${other.url}/health/ready`)).status).toBe(200);
  });
});
