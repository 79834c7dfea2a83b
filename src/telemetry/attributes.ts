import type { Attributes } from '@opentelemetry/api';
import type { ProviderName } from '../config/schema.js';
import type { TokenUsage } from '../usage/tokens.js';

// OpenTelemetry GenAI semantic-convention names. They are still incubating, so they are written
// out here (as @opentelemetry/semantic-conventions advises) rather than imported from /incubating.
export const GEN_AI_PROVIDER_NAME = 'gen_ai.provider.name';
export const GEN_AI_OPERATION_NAME = 'gen_ai.operation.name';
export const GEN_AI_REQUEST_MODEL = 'gen_ai.request.model';
export const GEN_AI_USAGE_INPUT_TOKENS = 'gen_ai.usage.input_tokens';
export const GEN_AI_USAGE_OUTPUT_TOKENS = 'gen_ai.usage.output_tokens';
export const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = 'gen_ai.usage.cache_read.input_tokens';
export const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = 'gen_ai.response.time_to_first_chunk';

// Stable names (HTTP, URL, error), written out too: the semantic-conventions package's entry
// point loads every stable and deprecated name (~1 MB of heap) into a replica that, by default,
// does not trace
export const HTTP_REQUEST_METHOD = 'http.request.method';
export const HTTP_RESPONSE_STATUS_CODE = 'http.response.status_code';
export const HTTP_ROUTE = 'http.route';
export const URL_PATH = 'url.path';
export const ERROR_TYPE = 'error.type';

// Tollgate's own, for what no convention names. Ids only: never a key, credential or hash.
export const TOLLGATE_REQUEST_ID = 'tollgate.request.id';
export const TOLLGATE_KEY_ID = 'tollgate.key.id';
/** the configured provider (`chatgpt` included), next to the GenAI provider name */
export const TOLLGATE_PROVIDER = 'tollgate.provider';
export const TOLLGATE_ACCOUNT_ID = 'tollgate.account.id';
export const TOLLGATE_OWNER_INSTANCE_ID = 'tollgate.owner.instance_id';
export const TOLLGATE_ORIGIN_INSTANCE_ID = 'tollgate.origin.instance_id';

/** The event on an upstream call's span when the first response byte (or bridged event) arrived. */
export const FIRST_BYTE_EVENT = 'tollgate.upstream.first_byte';

// Span names of the steps inside a request's server span
export const ADMISSION_SPAN = 'tollgate.admission';
export const OWNER_FORWARD_SPAN = 'tollgate.owner_forward';
export const BRIDGE_TURN_SPAN = 'tollgate.bridge.turn';

/** `gen_ai.provider.name` of a configured provider: ChatGPT accounts are OpenAI's service. */
function genAiProviderOf(provider: ProviderName): string {
  return provider === 'chatgpt' ? 'openai' : provider;
}

export function providerAttributes(provider: ProviderName): Attributes {
  return { [GEN_AI_PROVIDER_NAME]: genAiProviderOf(provider), [TOLLGATE_PROVIDER]: provider };
}

export function usageAttributes(usage: TokenUsage): Attributes {
  return {
    [GEN_AI_USAGE_INPUT_TOKENS]: usage.input_tokens,
    [GEN_AI_USAGE_OUTPUT_TOKENS]: usage.output_tokens,
    [GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS]: usage.cached_input_tokens,
  };
}
