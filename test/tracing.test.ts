import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/config/load.js';
import { SpanKind, tracingFor, tracingWanted } from '../src/telemetry/tracing.js';
import { OPENAI_SECRET, startTestGateway, type TestGateway } from './support/gateway.js';
import { startOtlpReceiver, type OtlpReceiver } from './support/otlp-receiver.js';

const CALLER_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const CALLER_SPAN = '00f067aa0ba902b7';
const OTHER_TRACE = '0af7651916cd43dd8448eb211c80319c';

describe('tracingWanted', () => {
  it('is on with an OTLP endpoint or the config switch, and off when the SDK or exporter is disabled', async () => {
    expect(tracingWanted(false, {})).toBe(false);
    expect(tracingWanted(true, {})).toBe(true);
    expect(tracingWanted(false, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' })).toBe(true);
    expect(tracingWanted(false, { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://127.0.0.1:4318/v1/traces' })).toBe(true);
    expect(tracingWanted(true, { OTEL_SDK_DISABLED: 'true' })).toBe(false);
    expect(tracingWanted(false, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318', OTEL_TRACES_EXPORTER: 'none' })).toBe(false);
    await expect(tracingFor(false, { instanceId: 'x' }, {})).resolves.toBeUndefined();
  });

  it('refuses an exporter or protocol it cannot honour with a message naming the variable', async () => {
    expect(() => tracingWanted(true, { OTEL_TRACES_EXPORTER: 'zipkin' })).toThrow(ConfigError);
    expect(() => tracingWanted(true, { OTEL_TRACES_EXPORTER: 'otlp,zipkin' })).toThrow(/OTEL_TRACES_EXPORTER: "zipkin"/);
    expect(tracingWanted(false, { OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' })).toBe(true);
    const grpc = tracingFor(true, { instanceId: 'x' }, { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' });
    await expect(grpc).rejects.toThrow(ConfigError);
    await expect(grpc).rejects.toThrow(/OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" is not supported/);
  });
});

describe.each(['http/protobuf', 'http/json'])('OTLP export over %s', (protocol) => {
  let receiver: OtlpReceiver;
  const saved = { ...process.env };
  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    // the SDK's exporter reads these itself, as it does in a replica
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url;
    process.env.OTEL_EXPORTER_OTLP_PROTOCOL = protocol;
    process.env.OTEL_RESOURCE_ATTRIBUTES = 'deployment.environment.name=test';
  });
  afterEach(() => void receiver.spans.splice(0));
  afterAll(async () => {
    process.env = saved;
    await receiver.close();
  });

  it('exports a server span continuing the caller and its child, with the replica as resource', async () => {
    const tracing = (await tracingFor(true, { instanceId: 'replica-t' }))!;
    const server = tracing.startServerSpan('POST /v1/responses', { traceparent: `00-${CALLER_TRACE}-${CALLER_SPAN}-01`, tracestate: 'vendor=1' }, { 'http.route': '/v1/responses' });
    const child = tracing.startSpan('tollgate.admission', server, SpanKind.INTERNAL)!;
    const next = tracing.carrierOf(child);
    child.end();
    server.end();
    await tracing.shutdown();

    expect(receiver.requests.at(-1)!.contentType).toMatch(protocol === 'http/json' ? /^application\/json/ : /^application\/x-protobuf/);
    const byName = Object.fromEntries(receiver.spans.map((s) => [s.name, s]));
    const [root, admission] = [byName['POST /v1/responses']!, byName['tollgate.admission']!];
    expect(root.traceId).toBe(CALLER_TRACE);
    expect(root.parentSpanId).toBe(CALLER_SPAN);
    expect(root.traceState).toBe('vendor=1');
    expect(root.kind).toBe(2);
    expect(root.attributes['http.route']).toBe('/v1/responses');
    expect(admission.traceId).toBe(CALLER_TRACE);
    expect(admission.parentSpanId).toBe(root.spanId);
    expect(root.resource).toMatchObject({ 'service.name': 'tollgate', 'service.instance.id': 'replica-t', 'deployment.environment.name': 'test' });
    expect(next.traceparent).toBe(`00-${CALLER_TRACE}-${admission.spanId}-01`);
    expect(next.tracestate).toBe('vendor=1');
  });

  it('starts a new trace when the caller sends no valid traceparent', async () => {
    const tracing = (await tracingFor(true, { instanceId: 'replica-t' }))!;
    tracing.startServerSpan('GET /v1/models', { traceparent: 'not-a-traceparent' }, {}).end();
    await tracing.shutdown();
    const [span] = receiver.spans;
    expect(span!.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(span!.traceId).not.toBe(CALLER_TRACE);
    expect(span!.parentSpanId).toBe('');
  });
});

describe('a traced gateway', () => {
  let receiver: OtlpReceiver;
  let gw: TestGateway;
  const saved = { ...process.env };
  const lines: Array<Record<string, unknown>> = [];
  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url;
    process.env.OTEL_BSP_SCHEDULE_DELAY = '20';
    const sink = new Writable({
      write(chunk, _encoding, done) {
        for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
        done();
      },
    });
    gw = await startTestGateway({ logger: pino({ level: 'info' }, sink), config: () => ({ server: { instanceId: 'traced-1' } }) });
  });
  afterAll(async () => {
    await gw.close();
    process.env = saved;
    await receiver.close();
  });
  const traceOf = (traceId: string) => receiver.spans.filter((s) => s.traceId === traceId);

  it('gives a model call one server span continuing the caller, with its facts, and the access line its ids', async () => {
    const { id, secret } = await gw.createKey();
    const res = await fetch(`${gw.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${secret}`, traceparent: `00-${CALLER_TRACE}-${CALLER_SPAN}-01`, 'x-request-id': 'traced-call-1' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }),
    });
    expect(res.status).toBe(200);
    await res.text();
    await expect.poll(() => traceOf(CALLER_TRACE).some((s) => s.kind === 2)).toBe(true);
    const server = traceOf(CALLER_TRACE).find((s) => s.kind === 2)!;
    expect(server.name).toBe('POST /v1/chat/completions');
    expect(server.parentSpanId).toBe(CALLER_SPAN);
    const served = gw.mock.served[0]!.usage;
    expect(server.attributes).toMatchObject({
      'http.request.method': 'POST',
      'http.route': '/v1/chat/completions',
      'http.response.status_code': 200,
      'tollgate.request.id': 'traced-call-1',
      'tollgate.key.id': id,
      'tollgate.provider': 'openai',
      'gen_ai.provider.name': 'openai',
      'tollgate.account.id': 'oa-1',
      'gen_ai.request.model': 'gpt-4o',
      'gen_ai.usage.input_tokens': served.input_tokens,
      'gen_ai.usage.output_tokens': served.output_tokens,
    });
    expect(server.resource).toMatchObject({ 'service.name': 'tollgate', 'service.instance.id': 'traced-1' });

    // its steps: admission, then the upstream call, which the upstream sees as its parent
    await expect.poll(() => traceOf(CALLER_TRACE).length).toBe(3);
    const admission = traceOf(CALLER_TRACE).find((s) => s.name === 'tollgate.admission')!;
    const call = traceOf(CALLER_TRACE).find((s) => s.name === 'chat gpt-4o')!;
    expect(admission.parentSpanId).toBe(server.spanId);
    expect(call.parentSpanId).toBe(server.spanId);
    expect(call.kind).toBe(3);
    expect(call.attributes).toMatchObject({
      'gen_ai.operation.name': 'chat',
      'gen_ai.provider.name': 'openai',
      'gen_ai.request.model': 'gpt-4o',
      'tollgate.account.id': 'oa-1',
      'http.response.status_code': 200,
      'gen_ai.usage.output_tokens': served.output_tokens,
    });
    expect(call.events.map((e) => e.name)).toEqual(['tollgate.upstream.first_byte']);
    expect(call.attributes['gen_ai.response.time_to_first_chunk']).toBeGreaterThan(0);
    expect(gw.mock.requests[0]!.headers.traceparent).toBe(`00-${CALLER_TRACE}-${call.spanId}-01`);

    const line = lines.find((l) => l.msg === 'request' && l.reqId === 'traced-call-1')!;
    expect(line).toMatchObject({ trace_id: CALLER_TRACE, span_id: server.spanId });
    const exported = JSON.stringify(receiver.spans) + receiver.requests.map((r) => r.body.toString('latin1')).join('');
    expect(exported).not.toContain(secret);
    expect(exported).not.toContain(OPENAI_SECRET);
  });

  it('names the gateway error of a refused call on its span', async () => {
    const res = await fetch(`${gw.url}/v1/responses`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': 'sk-tg-not-a-key-0123456789', traceparent: `00-${OTHER_TRACE}-${CALLER_SPAN}-01` },
      body: '{}',
    });
    expect(res.status).toBe(401);
    await expect.poll(() => traceOf(OTHER_TRACE).length).toBe(1);
    expect(traceOf(OTHER_TRACE)[0]!.attributes).toMatchObject({ 'http.response.status_code': 401, 'error.type': 'invalid_api_key' });
    expect(JSON.stringify(traceOf(OTHER_TRACE))).not.toContain('sk-tg-not-a-key-0123456789');
  });
});
