import type { HeaderMap } from './headers.js';

export const REDACTED = '[redacted]';

/** Shorter secrets are not matched: too likely to occur by chance in an upstream's wording. */
const MIN_SECRET_LENGTH = 8;
/** Masked forms are recognised for secrets at least this long (6 shown + 4 shown + something hidden). */
const MIN_MASKED_LENGTH = 16;
const MASK_PREFIX = 6;
const MASK_SUFFIX = 4;
/** What stands for the hidden middle: `…`, two or more dots, or two or more `*`, in any mix. */
const MASK = '(?:\\u2026|\\.{2,}|\\*{2,})+';
/** Characters a key-like token is made of (the shown parts may be longer than 6 + 4). */
const TOKEN_CHARS = '[A-Za-z0-9_-]*';

/** `"error":{…}`: success events carry `"error":null`, and quotes inside strings are escaped. */
const FAILURE = /"error"\s*:\s*\{/;
const MAX_CLOSE_REASON_BYTES = 123;

const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Removes every configured account secret from text going back to clients: error bodies,
 * response headers, WebSocket error frames and close reasons. Built once per gateway over all
 * accounts' secrets (one precompiled pattern), not only the serving account's, and compiled
 * again when a ChatGPT login's tokens change.
 *
 * Matched: each secret verbatim, and its masked forms — a token that starts with the secret's
 * first 6 characters (possibly more token characters), then a mask (`…`, `...`, `***`, mixed),
 * then token characters ending with the secret's last 4 — e.g. `sk-abc…WXYZ`,
 * `sk-abc123...WXYZ`, `sk-abc1*****WXYZ` (how OpenAI echoes a refused key).
 */
export class SecretScrubber {
  private pattern: RegExp | null = null;
  /** secrets that change at run time (ChatGPT login tokens), by owner: only the current ones */
  private readonly tracked = new Map<string, readonly string[]>();

  constructor(private readonly configured: readonly string[]) {
    this.compile();
  }

  /** Replaces the secrets `owner` had with these (a refreshed login's tokens); the pattern is compiled again. */
  track(owner: string, secrets: readonly string[]): void {
    const previous = this.tracked.get(owner);
    if (previous && previous.length === secrets.length && previous.every((s, i) => s === secrets[i])) return;
    this.tracked.set(owner, [...secrets]);
    this.compile();
  }

  private compile(): void {
    const secrets = [...this.configured, ...[...this.tracked.values()].flat()];
    const usable = [...new Set(secrets)].filter((secret) => secret.length >= MIN_SECRET_LENGTH).sort((a, b) => b.length - a.length);
    const masked = usable
      .filter((secret) => secret.length >= MIN_MASKED_LENGTH)
      .map((secret) => `${escape(secret.slice(0, MASK_PREFIX))}${TOKEN_CHARS}${MASK}${TOKEN_CHARS}${escape(secret.slice(-MASK_SUFFIX))}`);
    const alternatives = [...usable.map(escape), ...masked];
    this.pattern = alternatives.length > 0 ? new RegExp(alternatives.join('|'), 'g') : null;
  }

  text(text: string): string {
    return this.pattern ? text.replace(this.pattern, REDACTED) : text;
  }

  /**
   * An upstream WebSocket text frame, scrubbed when it reports a failure (an `error` event or a
   * failed response: a non-null `error` object); every other frame passes as it is.
   */
  failureFrame(data: Buffer): Buffer {
    if (!this.pattern || !data.includes('"error"') || !FAILURE.test(data.toString('latin1'))) return data;
    return Buffer.from(this.text(data.toString('utf8')));
  }

  /** A WebSocket close reason: scrubbed, and still within the protocol's 123 bytes. */
  closeReason(reason: Buffer): Buffer {
    const scrubbed = Buffer.from(this.text(reason.toString('utf8')));
    return scrubbed.length > MAX_CLOSE_REASON_BYTES ? scrubbed.subarray(0, MAX_CLOSE_REASON_BYTES) : scrubbed;
  }

  headers(headers: HeaderMap): HeaderMap {
    const out: HeaderMap = {};
    for (const [name, value] of Object.entries(headers)) out[name] = Array.isArray(value) ? value.map((v) => this.text(v)) : this.text(value);
    return out;
  }
}
