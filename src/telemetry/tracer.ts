import { ROOT_CONTEXT, SpanKind, trace, type Attributes, type Span } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { detectResources, envDetector, hostDetector, resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { ATTR_SERVICE_INSTANCE_ID, ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import { endFailed, errorTypeOf, type OtlpProtocol, type TraceCarrier } from './tracing.js';

export interface TracingOptions {
  /** the replica's instance id: `service.instance.id`, so one trace tells the replicas apart */
  instanceId: string;
}

const propagator = new W3CTraceContextPropagator();

/** The OTLP exporter of `protocol`, only that one loaded; it reads its endpoint, headers, timeout and compression from `OTEL_*` itself. */
async function otlpExporter(protocol: OtlpProtocol): Promise<SpanExporter> {
  if (protocol === 'http/json') return new (await import('@opentelemetry/exporter-trace-otlp-http')).OTLPTraceExporter();
  return new (await import('@opentelemetry/exporter-trace-otlp-proto')).OTLPTraceExporter();
}

/**
 * This replica's tracer: the OpenTelemetry SDK, loaded (through `tracingFor`) only when tracing
 * is on. Spans are handed from parent to child explicitly (a request carries its server span)
 * rather than through an async-context manager: nothing is registered globally, so several
 * gateways in one process each keep their own resource, and no hook runs per async step.
 */
export class Tracing {
  private readonly tracer;

  private constructor(
    private readonly provider: BasicTracerProvider,
  ) {
    this.tracer = provider.getTracer('tollgate');
  }

  static async start(options: TracingOptions, protocol: OtlpProtocol): Promise<Tracing> {
    // OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES may add to or rename the service; the
    // instance id stays the replica's own
    const resource = resourceFromAttributes({ [ATTR_SERVICE_NAME]: 'tollgate' })
      .merge(detectResources({ detectors: [envDetector, hostDetector] }))
      .merge(resourceFromAttributes({ [ATTR_SERVICE_INSTANCE_ID]: options.instanceId }));
    // sampler, span limits and batch sizes come from OTEL_TRACES_SAMPLER, OTEL_SPAN_*, OTEL_BSP_*
    const provider = new BasicTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(await otlpExporter(protocol))] });
    return new Tracing(provider);
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

  /** `span`'s context for the next hop: the headers (or the signed fields) that make the callee its child. */
  carrierOf(span: Span): TraceCarrier {
    const carrier: TraceCarrier = {};
    propagator.inject(trace.setSpan(ROOT_CONTEXT, span), carrier, {
      set: (c, key, value) => void ((c as Record<string, string>)[key] = value),
    });
    return carrier;
  }

  /** Exports what is still buffered; spans ended afterwards are dropped. */
  shutdown(): Promise<void> {
    return this.provider.shutdown();
  }
}
