// One trace across two replica processes: a bridged turn sent to the replica that does not own
// the session is forwarded to its owner, and both export their spans (OTLP http/protobuf, the
// default) to one in-process receiver.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, INTERNAL_SECRET, createKeyVia, useCluster, type Replica } from './support/cluster.js';
import { OPENAI_SECRET } from './support/gateway.js';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from './support/otlp-receiver.js';

let receiver: OtlpReceiver;
beforeAll(async () => {
  receiver = await startOtlpReceiver();
});
afterAll(() => receiver.close());

const env = useCluster(2, {
  env: () => ({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_BSP_SCHEDULE_DELAY: '50' }),
});

const SERVER = 2;
const CLIENT = 3;

async function turn(replica: Replica, key: string, traceparent: string, body: Record<string, unknown>) {
  const res = await fetch(`${replica.url}/v1/responses`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'session-id': 'traced-session', traceparent },
    body: JSON.stringify({ model: 'gpt-5', store: false, input: 'hello', ...body }),
  });
  const text = await res.text();
  expect(res.status, text).toBe(200);
  return JSON.parse(text) as { id: string };
}

describe('a forwarded bridged turn', () => {
  it('is one trace with spans from both replicas, continuing the caller and linked across the owner hop', async () => {
    const [owner, origin] = env.replicas as [Replica, Replica];
    const { id: keyId, key } = await createKeyVia(owner);
    const first = await turn(owner, key, `00-${'1'.repeat(32)}-${'2'.repeat(16)}-01`, {});

    const callerTrace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const callerSpan = '00f067aa0ba902b7';
    await turn(origin, key, `00-${callerTrace}-${callerSpan}-01`, { previous_response_id: first.id });

    const inTrace = () => receiver.spans.filter((s) => s.traceId === callerTrace);
    const named = (name: string, instance: string) => inTrace().find((s) => s.name === name && s.resource['service.instance.id'] === instance);
    const expected: [string, string][] = [
      ['POST /v1/responses', origin.instanceId],
      ['tollgate.owner_forward', origin.instanceId],
      ['POST /internal/bridge/responses', owner.instanceId],
      ['tollgate.admission', owner.instanceId],
      ['tollgate.bridge.turn', owner.instanceId],
    ];
    await expect.poll(() => expected.filter(([name, instance]) => !named(name, instance)).map(([name]) => name)).toEqual([]);
    const [originServer, forward, ownerServer, admission, bridgeTurn] = expected.map(([name, instance]) => named(name, instance)!) as ReceivedSpan[];

    // parent links: caller -> origin server -> forward hop -> owner server -> admission, turn
    expect(originServer!.parentSpanId).toBe(callerSpan);
    expect(originServer!.kind).toBe(SERVER);
    expect(forward!.parentSpanId).toBe(originServer!.spanId);
    expect(forward!.kind).toBe(CLIENT);
    expect(ownerServer!.parentSpanId).toBe(forward!.spanId);
    expect(ownerServer!.kind).toBe(SERVER);
    expect(admission!.parentSpanId).toBe(ownerServer!.spanId);
    expect(bridgeTurn!.parentSpanId).toBe(ownerServer!.spanId);
    expect(new Set(inTrace().map((s) => s.resource['service.instance.id']))).toEqual(new Set([owner.instanceId, origin.instanceId]));
    for (const span of inTrace()) expect(span.resource['service.name']).toBe('tollgate');

    expect(originServer!.attributes).toMatchObject({
      'http.route': '/v1/responses',
      'http.response.status_code': 200,
      'tollgate.key.id': keyId,
      'gen_ai.provider.name': 'openai',
      'gen_ai.request.model': 'gpt-5',
    });
    expect(forward!.attributes).toMatchObject({ 'tollgate.owner.instance_id': owner.instanceId, 'http.response.status_code': 200 });
    const served = env.mock.served.at(-1)!.usage;
    expect(ownerServer!.attributes).toMatchObject({
      'tollgate.origin.instance_id': origin.instanceId,
      'tollgate.key.id': keyId,
      'tollgate.account.id': 'oa-1',
      'gen_ai.request.model': 'gpt-5',
      'gen_ai.usage.input_tokens': served.input_tokens,
      'gen_ai.usage.output_tokens': served.output_tokens,
      'http.response.status_code': 200,
    });
    expect(bridgeTurn!.attributes).toMatchObject({ 'tollgate.account.id': 'oa-1', 'gen_ai.request.model': 'gpt-5' });
    expect(bridgeTurn!.events.map((e) => e.name)).toContain('tollgate.upstream.first_byte');

    // nothing secret left either process: not the caller's key, the account's, the cluster's or the admin's
    const exported = JSON.stringify(receiver.spans) + receiver.requests.map((r) => r.body.toString('latin1')).join('');
    for (const secret of [key, OPENAI_SECRET, INTERNAL_SECRET, ADMIN_TOKEN]) expect(exported).not.toContain(secret);
  });
});
