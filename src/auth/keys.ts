import { hash, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { GatewayError } from '../errors.js';
import type { KeyRecord, Store } from '../store/types.js';

export const KEY_PREFIX = 'sk-tg-';

export function hashSecret(secret: string): string {
  // one-shot: no Hash object per request
  return hash('sha256', secret, 'hex');
}

/** A new proxy key: the secret is shown once; only its hash is stored. */
export function generateKey(): { id: string; secret: string; sha256: string } {
  const secret = KEY_PREFIX + randomBytes(24).toString('base64url');
  return { id: 'key_' + randomBytes(8).toString('hex'), secret, sha256: hashSecret(secret) };
}

export type KeyProblem = 'unknown' | 'disabled' | 'expired';

export function keyProblem(record: KeyRecord | null, now: number): KeyProblem | null {
  if (!record) return 'unknown';
  if (record.disabled) return 'disabled';
  if (record.expires_at && Date.parse(record.expires_at) <= now) return 'expired';
  return null;
}

function modelAllowed(record: KeyRecord, model: string | undefined): boolean {
  if (!record.allowed_models) return true;
  return model !== undefined && record.allowed_models.includes(model);
}

/** 403 `model_not_allowed` unless the key may use `model` (every route and frame asks here). */
export function requireModelAllowed(record: KeyRecord, model: string | undefined): void {
  if (!modelAllowed(record, model)) {
    throw new GatewayError('model_not_allowed', `This key may not use model "${model ?? '(none)'}".`, { param: 'model' });
  }
}

/** How many known keys the local cache holds; far more than a deployment has. */
const KNOWN_KEYS_CACHED = 10_000;
/** Unknown hashes are remembered in a small cache of their own, so junk keys never evict good ones. */
const UNKNOWN_KEYS_CACHED = 1_000;

/**
 * Key lookups through a short-lived local cache, so the hot path is not one store round trip
 * per request. Entries live at most `ttlMs`, which bounds how long a key revoked on another
 * replica keeps working here; revocations made here are dropped at once.
 */
export class KeyDirectory {
  /** null when caching is off (ttl 0) */
  private readonly known: LRUCache<string, KeyRecord> | null;
  private readonly unknown: LRUCache<string, true> | null;
  /** lookups under way: concurrent requests of one key whose entry expired share one */
  private readonly lookups = new Map<string, Promise<KeyRecord | null>>();

  constructor(private readonly store: Store, ttlMs: number) {
    this.known = ttlMs > 0 ? new LRUCache({ max: KNOWN_KEYS_CACHED, ttl: ttlMs }) : null;
    this.unknown = ttlMs > 0 ? new LRUCache({ max: UNKNOWN_KEYS_CACHED, ttl: ttlMs }) : null;
  }

  /**
   * The secret is never compared with anything: its SHA-256 is the lookup index, and the time an
   * index lookup takes tells nothing about a secret whose hash a caller cannot steer.
   */
  async byHashOf(sha256: string): Promise<KeyRecord | null> {
    const cached = this.known?.get(sha256);
    if (cached) return cached;
    if (this.unknown?.has(sha256)) return null;
    let lookup = this.lookups.get(sha256);
    if (!lookup) {
      lookup = this.lookUp(sha256).finally(() => this.lookups.delete(sha256));
      this.lookups.set(sha256, lookup);
    }
    return lookup;
  }

  private async lookUp(sha256: string): Promise<KeyRecord | null> {
    const record = await this.store.getKeyByHash(sha256);
    if (record) this.known?.set(sha256, record);
    else this.unknown?.set(sha256, true);
    return record;
  }

  /** Re-reads a key by id, bypassing the cache: used where a decision must be current. */
  byId(id: string): Promise<KeyRecord | null> {
    return this.store.getKeyById(id);
  }

  forget(record: Pick<KeyRecord, 'sha256'>): void {
    this.known?.delete(record.sha256);
  }
}
