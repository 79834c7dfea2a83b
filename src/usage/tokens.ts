// Provider-neutral token accounting. Every provider reports usage differently;
// these normalizers map them onto one shape so quotas and metrics can be
// computed the same way regardless of wire format.

export interface TokenUsage {
  /** All input tokens, cached ones included. */
  input_tokens: number;
  output_tokens: number;
  /** Input tokens served from the provider's prompt cache (subset of input_tokens). */
  cached_input_tokens: number;
  /** Always input_tokens + output_tokens (recomputed, never taken from upstream). */
  total_tokens: number;
}

export type WireFormat = 'openai-responses' | 'openai-chat' | 'anthropic-messages';

export const ZERO_USAGE: TokenUsage = Object.freeze({
  input_tokens: 0,
  output_tokens: 0,
  cached_input_tokens: 0,
  total_tokens: 0,
});

export function addUsage(a: TokenUsage, b: TokenUsage): TokenUsage {
  return make(a.input_tokens + b.input_tokens, a.output_tokens + b.output_tokens, a.cached_input_tokens + b.cached_input_tokens);
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Upstream numbers are untrusted: anything not a finite, non-negative number counts as 0. */
function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0;
}

/** A usage object that carries none of the expected counters is treated as absent. */
function hasAny(u: Obj, keys: readonly string[]): boolean {
  return keys.some((k) => typeof u[k] === 'number');
}

function make(input: number, output: number, cached: number): TokenUsage {
  return { input_tokens: input, output_tokens: output, cached_input_tokens: cached, total_tokens: input + output };
}

/** OpenAI Responses API: `{input_tokens, input_tokens_details:{cached_tokens}, output_tokens}`. */
export function fromResponsesUsage(u: unknown): TokenUsage | null {
  if (!isObj(u) || !hasAny(u, ['input_tokens', 'output_tokens'])) return null;
  const details = isObj(u.input_tokens_details) ? u.input_tokens_details : {};
  return make(num(u.input_tokens), num(u.output_tokens), num(details.cached_tokens));
}

/** OpenAI Chat Completions: `{prompt_tokens, completion_tokens, prompt_tokens_details:{cached_tokens}}`. */
export function fromChatUsage(u: unknown): TokenUsage | null {
  if (!isObj(u) || !hasAny(u, ['prompt_tokens', 'completion_tokens'])) return null;
  const details = isObj(u.prompt_tokens_details) ? u.prompt_tokens_details : {};
  return make(num(u.prompt_tokens), num(u.completion_tokens), num(details.cached_tokens));
}

const ANTHROPIC_KEYS = ['input_tokens', 'cache_creation_input_tokens', 'cache_read_input_tokens', 'output_tokens'] as const;

/**
 * Anthropic Messages: `input_tokens` there excludes cache traffic, so cache
 * writes and reads are added back to get the full input size.
 */
export function fromAnthropicUsage(u: unknown): TokenUsage | null {
  if (!isObj(u) || !hasAny(u, ANTHROPIC_KEYS)) return null;
  const cacheRead = num(u.cache_read_input_tokens);
  const input = num(u.input_tokens) + num(u.cache_creation_input_tokens) + cacheRead;
  return make(input, num(u.output_tokens), cacheRead);
}
