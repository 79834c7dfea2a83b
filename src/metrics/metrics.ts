import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

/**
 * A metric's child per combination of label values (in `labelNames` order), made on first use and
 * kept: prom-client would otherwise hash a label object on every call of the request path.
 */
export function childrenOf<Child>(metric: { labels(...values: string[]): Child }): (...values: Array<string | number>) => Child {
  const children = new Map<string, Child>();
  return (...values) => {
    const key = values.join('\u0000');
    let child = children.get(key);
    if (!child) children.set(key, (child = metric.labels(...values.map(String))));
    return child;
  };
}

/** Every series the gateway exports, on a registry of its own (several gateways may share a process in tests). */
export function buildMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const series = buildSeries(registers);
  return {
    registry,
    ...series,
    /** the children the request path uses, by label values */
    per: {
      request: childrenOf(series.requests),
      duration: childrenOf(series.duration),
      error: childrenOf(series.errors),
      ttfb: childrenOf(series.ttfb),
      inFlightStreams: childrenOf(series.inFlightStreams),
      tokens: childrenOf(series.tokens),
    },
  };
}

function buildSeries(registers: Registry[]) {
  return {
    requests: new Counter({ name: 'tollgate_requests_total', help: 'Requests answered', labelNames: ['route', 'status'], registers }),
    // gateway-made errors (src/errors.ts codes), e.g. store_unavailable when Redis does not answer;
    // upstream errors pass through and show only in `requests` by status
    errors: new Counter({ name: 'tollgate_errors_total', help: 'Errors the gateway answered itself, by route and error code', labelNames: ['route', 'code'], registers }),
    duration: new Histogram({ name: 'tollgate_request_duration_seconds', help: 'Time to the last byte', labelNames: ['route'], buckets: LATENCY_BUCKETS, registers }),
    ttfb: new Histogram({ name: 'tollgate_upstream_ttfb_seconds', help: 'Time to the upstream response headers', labelNames: ['provider'], buckets: LATENCY_BUCKETS, registers }),
    upstreamErrors: new Counter({ name: 'tollgate_upstream_errors_total', help: 'Upstream failures by account and kind', labelNames: ['provider', 'account', 'kind'], registers }),
    cooldowns: new Counter({ name: 'tollgate_account_cooldowns_total', help: 'Accounts put in cooldown', labelNames: ['provider', 'account'], registers }),
    accountProbes: new Counter({ name: 'tollgate_account_probes_total', help: 'Probes of an account alone after a 401/403, by verdict', labelNames: ['provider', 'account', 'outcome'], registers }),
    loginRefreshes: new Counter({ name: 'tollgate_account_refreshes_total', help: 'ChatGPT login refreshes by outcome (refreshed, failed, reauth_required)', labelNames: ['provider', 'account', 'outcome'], registers }),
    // as last reported to this replica by an upstream answer
    quotaUsed: new Gauge({ name: 'tollgate_account_quota_used_percent', help: 'Used percent of a ChatGPT account quota window', labelNames: ['provider', 'account', 'window'], registers }),
    authFailures: new Counter({ name: 'tollgate_auth_failures_total', help: 'Rejected proxy credentials by header', labelNames: ['source', 'reason'], registers }),
    tokens: new Counter({ name: 'tollgate_tokens_total', help: 'Tokens reported by upstreams', labelNames: ['provider', 'type'], registers }),
    inFlightStreams: new Gauge({ name: 'tollgate_in_flight_streams', help: 'Upstream responses being streamed', labelNames: ['provider'], registers }),
    wsSessions: new Gauge({ name: 'tollgate_websocket_sessions', help: 'Open client WebSocket sessions', registers }),
    wsFrames: new Counter({ name: 'tollgate_websocket_frames_total', help: 'WebSocket frames relayed', labelNames: ['direction'], registers }),
    wsHandshakeFailures: new Counter({ name: 'tollgate_websocket_handshake_failures_total', help: 'Refused WebSocket handshakes by reason', labelNames: ['reason'], registers }),
    bridgeSessions: new Gauge({ name: 'tollgate_bridge_owned_sessions', help: 'Bridge sessions owned by this replica', registers }),
    bridgeForwards: new Counter({ name: 'tollgate_bridge_forwards_total', help: 'Owner forwards by outcome', labelNames: ['outcome'], registers }),
    bridgeForwardLatency: new Histogram({ name: 'tollgate_bridge_forward_seconds', help: 'Time to the owner response headers', buckets: LATENCY_BUCKETS, registers }),
    unpricedTokens: new Counter({ name: 'tollgate_unpriced_tokens_total', help: 'Tokens of models without a price, counted as costing 0', labelNames: ['model'], registers }),
    queueDepth: new Gauge({ name: 'tollgate_queue_depth', help: 'Requests waiting for a concurrency slot on this replica', labelNames: ['provider'], registers }),
    queueWait: new Histogram({ name: 'tollgate_queue_wait_seconds', help: 'Time queued for a concurrency slot, by outcome (served, timeout, gone)', labelNames: ['provider', 'outcome'], buckets: LATENCY_BUCKETS, registers }),
    usageBacklog: new Gauge({ name: 'tollgate_usage_backlog', help: 'Usage records not yet acknowledged by the store', registers }),
    usageDropped: new Counter({ name: 'tollgate_usage_dropped_total', help: 'Usage records dropped while the store was unreachable', registers }),
  };
}

export type Metrics = ReturnType<typeof buildMetrics>;
