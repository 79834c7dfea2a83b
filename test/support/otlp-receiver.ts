import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import protobuf from 'protobufjs';

/**
 * An OTLP/HTTP trace receiver on loopback, standing in for an OpenTelemetry collector: it accepts
 * `POST /v1/traces` in both http/json and http/protobuf and keeps every span it was sent.
 */
export interface OtlpReceiver {
  /** the base URL: what OTEL_EXPORTER_OTLP_ENDPOINT is set to */
  url: string;
  spans: ReceivedSpan[];
  /** every export request as it arrived, for checks on the wire bytes */
  requests: { contentType: string; body: Buffer }[];
  close(): Promise<void>;
}

export type AttributeValue = string | number | boolean | AttributeValue[] | undefined;

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** '' for a root span */
  parentSpanId: string;
  traceState: string;
  name: string;
  /** OTLP SpanKind: 1 internal, 2 server, 3 client */
  kind: number;
  attributes: Record<string, AttributeValue>;
  events: { name: string; attributes: Record<string, AttributeValue> }[];
  /** OTLP StatusCode: 0 unset, 1 ok, 2 error */
  status: { code: number; message: string };
  resource: Record<string, AttributeValue>;
}

// The part of opentelemetry-proto's trace service request the tests read (field numbers as in
// opentelemetry/proto/{collector/trace/v1,trace/v1,resource/v1,common/v1}); other fields are skipped.
const OTLP_TRACE_PROTO = `
syntax = "proto3";
package otlp;
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
message Resource { repeated KeyValue attributes = 1; }
message ScopeSpans { repeated Span spans = 2; }
message Span {
  bytes trace_id = 1;
  bytes span_id = 2;
  string trace_state = 3;
  bytes parent_span_id = 4;
  string name = 5;
  int32 kind = 6;
  repeated KeyValue attributes = 9;
  repeated Event events = 11;
  Status status = 15;
  message Event { string name = 2; repeated KeyValue attributes = 3; }
}
message Status { string message = 2; int32 code = 3; }
message KeyValue { string key = 1; AnyValue value = 2; }
message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
    ArrayValue array_value = 5;
  }
}
message ArrayValue { repeated AnyValue values = 1; }
`;
const ExportTraceServiceRequest = protobuf.parse(OTLP_TRACE_PROTO, { keepCase: false }).root.lookupType('otlp.ExportTraceServiceRequest');

/** The OTLP JSON mapping of a request (what http/json sends and what a decoded protobuf becomes). */
interface OtlpJsonValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number;
  arrayValue?: { values?: OtlpJsonValue[] };
}
type OtlpJsonAttributes = { key: string; value?: OtlpJsonValue }[] | undefined;
interface OtlpJsonRequest {
  resourceSpans?: {
    resource?: { attributes?: OtlpJsonAttributes };
    scopeSpans?: {
      spans?: {
        traceId?: string;
        spanId?: string;
        parentSpanId?: string;
        traceState?: string;
        name?: string;
        kind?: number;
        attributes?: OtlpJsonAttributes;
        events?: { name?: string; attributes?: OtlpJsonAttributes }[];
        status?: { code?: number; message?: string };
      }[];
    }[];
  }[];
}

function valueOf(value: OtlpJsonValue | undefined): AttributeValue {
  if (!value) return undefined;
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.boolValue !== undefined) return value.boolValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.arrayValue) return (value.arrayValue.values ?? []).map(valueOf);
  return undefined;
}

const attributesOf = (list: OtlpJsonAttributes) => Object.fromEntries((list ?? []).map((kv) => [kv.key, valueOf(kv.value)]));

function spansOf(request: OtlpJsonRequest): ReceivedSpan[] {
  return (request.resourceSpans ?? []).flatMap((rs) => {
    const resource = attributesOf(rs.resource?.attributes);
    return (rs.scopeSpans ?? []).flatMap((ss) =>
      (ss.spans ?? []).map((span) => ({
        traceId: span.traceId ?? '',
        spanId: span.spanId ?? '',
        parentSpanId: span.parentSpanId ?? '',
        traceState: span.traceState ?? '',
        name: span.name ?? '',
        kind: span.kind ?? 0,
        attributes: attributesOf(span.attributes),
        events: (span.events ?? []).map((event) => ({ name: event.name ?? '', attributes: attributesOf(event.attributes) })),
        status: { code: span.status?.code ?? 0, message: span.status?.message ?? '' },
        resource,
      })),
    );
  });
}

/** protobuf bytes fields become hex ids, 64-bit integers strings: the JSON mapping's shape. */
function decodeProtobuf(body: Buffer): OtlpJsonRequest {
  const message = ExportTraceServiceRequest.decode(body);
  return ExportTraceServiceRequest.toObject(message, { longs: String, bytes: String, defaults: false, oneofs: false }) as OtlpJsonRequest;
}

/** Base64 ids (protobufjs' `bytes: String`) to the lowercase hex OTLP/JSON uses. */
function hexIds(request: OtlpJsonRequest): OtlpJsonRequest {
  const hex = (b64: string | undefined) => (b64 ? Buffer.from(b64, 'base64').toString('hex') : b64);
  for (const rs of request.resourceSpans ?? []) {
    for (const ss of rs.scopeSpans ?? []) {
      for (const span of ss.spans ?? []) {
        span.traceId = hex(span.traceId);
        span.spanId = hex(span.spanId);
        span.parentSpanId = hex(span.parentSpanId);
      }
    }
  }
  return request;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const requests: OtlpReceiver['requests'] = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    void readBody(req).then((body) => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      const contentType = req.headers['content-type'] ?? '';
      requests.push({ contentType, body });
      try {
        if (contentType.startsWith('application/json')) {
          spans.push(...spansOf(JSON.parse(body.toString('utf8')) as OtlpJsonRequest));
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        } else if (contentType.startsWith('application/x-protobuf')) {
          spans.push(...spansOf(hexIds(decodeProtobuf(body))));
          // an empty ExportTraceServiceResponse encodes as zero bytes
          res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
        } else {
          res.writeHead(415).end();
        }
      } catch (err) {
        res.writeHead(400, { 'content-type': 'text/plain' }).end(String(err));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    spans,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
