import { SpanStatusCode, type Span } from '@opentelemetry/api';
import { ConfigError } from '../config/load.js';
import { GatewayError } from '../errors.js';
import { ERROR_TYPE } from './attributes.js';
import type { Tracing, TracingOptions } from './tracer.js';

export { SpanKind } from '@opentelemetry/api';
export type { Tracing, TracingOptions } from './tracer.js';

type Env = Record<string, string | undefined>;

/** The W3C trace context of a span, as the `traceparent`/`tracestate` header values. */
export interface TraceCarrier {
  traceparent?: string;
  tracestate?: string;
}

const PROTOCOLS = ['http/protobuf', 'http/json'] as const;
export type OtlpProtocol = (typeof PROTOCOLS)[number];

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

/** `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`, checked before anything is loaded for it. */
export function otlpProtocol(env: Env): OtlpProtocol {
  const protocol = (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf').trim();
  if (!(PROTOCOLS as readonly string[]).includes(protocol)) {
    throw new ConfigError(`OTEL_EXPORTER_OTLP_PROTOCOL: "${protocol}" is not supported; use ${PROTOCOLS.join(' or ')}`);
  }
  return protocol as OtlpProtocol;
}

/**
 * The tracer the config and the environment ask for, or undefined: then no span is ever made.
 * The OpenTelemetry SDK and the exporter are loaded only here, when tracing is on (they would
 * otherwise be most of an idle replica's heap); when they cannot be loaded the replica does not
 * start, rather than run untraced.
 */
export async function tracingFor(configured: boolean, options: TracingOptions, env: Env = process.env): Promise<Tracing | undefined> {
  if (!tracingWanted(configured, env)) return undefined;
  const protocol = otlpProtocol(env);
  try {
    const { Tracing } = await import('./tracer.js');
    return await Tracing.start(options, protocol);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new Error(`tracing is on, but its OpenTelemetry SDK (OTLP ${protocol} exporter) did not start: ${reason}`, { cause: err });
  }
}

/** `error.type` of a failure: the gateway error's code, else the exception's class. */
export function errorTypeOf(err: unknown): string {
  if (err instanceof GatewayError) return err.code;
  return err instanceof Error ? err.name : 'unknown';
}

/** Ends `span` as failed with `errorType` (a gateway error code or an exception's name). */
export function endFailed(span: Span, errorType: string, message?: string): void {
  span.setAttribute(ERROR_TYPE, errorType);
  span.setStatus({ code: SpanStatusCode.ERROR, message });
  span.end();
}

