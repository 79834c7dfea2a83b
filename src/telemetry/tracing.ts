import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Span } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter as OTLPJsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as OTLPProtobufTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { detectResources, envDetector, hostDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { ATTR_ERROR_TYPE, ATTR_SERVICE_INSTANCE_ID, ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import { ConfigError } from '../config/load.js';
import { GatewayError } from '../errors.js';

export { SpanKind } from '@opentelemetry/api';

type Env = Record<string, string | undefined>;

/** The W3C trace context of a span, as the `traceparent`/`tracestate` header values. */
export interface TraceCarrier {
  traceparent?: string;
  tracestate?: string;
}

const PROTOCOLS = ['http/protobuf', 'http/json'] as const;
const propagator = new W3CTraceContextPropagator();

/** `span`'s context for the next hop: the headers (or the signed fields) that make the callee its child. */
export function carrierOf(span: Span): TraceCarrier {
  const carrier: TraceCarrier = {};
  propagator.inject(trace.setSpan(ROOT_CONTEXT, span), carrier, {
    set: (c, key, value) => void ((c as Record<string, string>)[key] = value),
  });
  return carrier;
}

/**
 * Whether this replica exports traces: an OTLP endpoint in the environment or `telemetry.tracing`
 * in the config turns it on; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off.
 */
export function tracingWanted(configured: boolean, env: Env): boolean {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return false;
  const exporters = (env.OTEL_TRACES_EXPORTER ?? '').split(',').map((name) => name.trim().toLowerCase()).filter(Boolean);
  if (exporters.includes('none')) return false;
  const unsupported = exporters.find((name) => name !== 'otlp');
  if (unsupported) throw new ConfigError(`OTEL_TRACES_EXPORTER: "${unsupported}" is not supported; use otlp or none`);
  return configured || Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

/** The OTLP exporter for `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`; it reads its endpoint, headers, timeout and compression from `OTEL_*` itself. */
function otlpExporter(env: Env): SpanExporter {
  const protocol = (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf').trim();
  switch (protocol) {
    case 'http/protobuf':
      return new OTLPProtobufTraceExporter();
    case 'http/json':
      return new OTLPJsonTraceExporter();
    default:
      throw new ConfigError(`OTEL_EXPORTER_OTLP_PROTOCOL: "${protocol}" is not supported; use ${PROTOCOLS.join(' or ')}`);
  }
}

export interface TracingOptions {
  /** the replica's instance id: `service.instance.id`, so one trace tells the replicas apart */
  instanceId: string;
}

/**
 * This replica's tracer. Spans are handed from parent to child explicitly (a request carries its
 * server span) rather than through an async-context manager: nothing is registered globally, so
 * several gateways in one process each keep their own resource, and no hook runs per async step.
 */
export class Tracing {
  private readonly provider: BasicTracerProvider;
  private readonly tracer;

  constructor(options: TracingOptions) {
    // OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES may add to or rename the service; the
    // instance id stays the replica's own
    const resource = resourceFromAttributes({ [ATTR_SERVICE_NAME]: 'tollgate' })
      .merge(detectResources({ detectors: [envDetector, hostDetector] }))
      .merge(resourceFromAttributes({ [ATTR_SERVICE_INSTANCE_ID]: options.instanceId }));
    // sampler, span limits and batch sizes come from OTEL_TRACES_SAMPLER, OTEL_SPAN_*, OTEL_BSP_*
    this.provider = new BasicTracerProvider({
      resource,
      spanProcessors: [new BatchSpanProcessor(otlpExporter(process.env))],
    });
    this.tracer = this.provider.getTracer('tollgate');
  }

  /** A request's server span, continuing the caller's trace when `parent` carries a valid `traceparent`. */
  startServerSpan(name: string, parent: TraceCarrier | Record<string, string | string[] | undefined>, attributes: Attributes): Span {
    const context = propagator.extract(ROOT_CONTEXT, parent, {
      get: (carrier, key) => (carrier as Record<string, string | string[] | undefined>)[key],
      keys: (carrier) => Object.keys(carrier),
    });
    return this.tracer.startSpan(name, { kind: SpanKind.SERVER, attributes }, context);
  }

  /** A child of `parent`; none for a request that has no span (one the tracer never saw). */
  startSpan(name: string, parent: Span | null | undefined, kind: SpanKind = SpanKind.INTERNAL, attributes?: Attributes): Span | undefined {
    return parent ? this.tracer.startSpan(name, { kind, attributes }, trace.setSpan(ROOT_CONTEXT, parent)) : undefined;
  }

  /** `fn` inside a child span of `parent`, ended when `fn` settles (failed when it throws). */
  around<T>(name: string, parent: Span | null | undefined, fn: () => Promise<T>, kind?: SpanKind, attributes?: Attributes): Promise<T> {
    const span = this.startSpan(name, parent, kind, attributes);
    if (!span) return fn();
    return fn().then(
      (value) => {
        span.end();
        return value;
      },
      (err: unknown) => {
        endFailed(span, errorTypeOf(err));
        throw err;
      },
    );
  }


  /** Exports what is still buffered; spans ended afterwards are dropped. */
  shutdown(): Promise<void> {
    return this.provider.shutdown();
  }
}

/** The tracer the config and the environment ask for, or undefined: then no span is ever made. */
export function tracingFor(configured: boolean, options: TracingOptions, env: Env = process.env): Tracing | undefined {
  return tracingWanted(configured, env) ? new Tracing(options) : undefined;
}

/** `error.type` of a failure: the gateway error's code, else the exception's class. */
export function errorTypeOf(err: unknown): string {
  if (err instanceof GatewayError) return err.code;
  return err instanceof Error ? err.name : 'unknown';
}

/** Ends `span` as failed with `errorType` (a gateway error code or an exception's name). */
export function endFailed(span: Span, errorType: string, message?: string): void {
  span.setAttribute(ATTR_ERROR_TYPE, errorType);
  span.setStatus({ code: SpanStatusCode.ERROR, message });
  span.end();
}

