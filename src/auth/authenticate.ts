import type { IncomingHttpHeaders } from 'node:http';
import { GatewayError } from '../errors.js';
import type { KeyRecord } from '../store/types.js';
import { hashSecret, keyProblem, type KeyDirectory, type KeyProblem } from './keys.js';

export type AuthSource = 'bearer' | 'x-api-key';

export interface Principal {
  key: KeyRecord;
  source: AuthSource;
}

interface Credential {
  source: AuthSource;
  secret: string;
}

/** Bearer first (scheme case-insensitive, value trimmed), then x-api-key. */
export function presentedCredentials(headers: IncomingHttpHeaders): Credential[] {
  const found: Credential[] = [];
  const authorization = headers.authorization;
  if (typeof authorization === 'string') {
    const match = /^\s*bearer\s+(.+)$/i.exec(authorization);
    const secret = match?.[1]?.trim();
    if (secret) found.push({ source: 'bearer', secret });
  }
  const apiKey = headers['x-api-key'];
  const secret = (Array.isArray(apiKey) ? apiKey[0] : apiKey)?.trim();
  if (secret) found.push({ source: 'x-api-key', secret });
  return found;
}

const PROBLEM_TEXT: Record<KeyProblem, string> = {
  unknown: 'Invalid API key',
  disabled: 'This API key is disabled',
  expired: 'This API key has expired',
};

const HOW_TO = 'send a valid Tollgate key as "Authorization: Bearer <key>" or "x-api-key: <key>".';

/**
 * The one place a request's proxy key is authenticated. An invalid Bearer falls back to
 * x-api-key, so clients behind proxies that add their own Authorization still get in.
 */
export async function authenticate(
  headers: IncomingHttpHeaders,
  keys: KeyDirectory,
  onFailure?: (source: AuthSource | 'none', problem: KeyProblem) => void,
): Promise<Principal> {
  const credentials = presentedCredentials(headers);
  let firstProblem: KeyProblem | null = null;
  const now = Date.now();
  for (const credential of credentials) {
    const record = await keys.byHashOf(hashSecret(credential.secret));
    const problem = keyProblem(record, now);
    if (!problem) return { key: record!, source: credential.source };
    onFailure?.(credential.source, problem);
    firstProblem ??= problem;
  }
  if (!firstProblem) {
    onFailure?.('none', 'unknown');
    throw new GatewayError('invalid_api_key', `Missing API key: ${HOW_TO}`);
  }
  throw new GatewayError('invalid_api_key', `${PROBLEM_TEXT[firstProblem]}: ${HOW_TO}`);
}
