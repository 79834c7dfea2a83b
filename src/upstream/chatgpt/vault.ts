import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import type { OAuthTokens } from './auth-file.js';

const ALGORITHM = 'aes-256-gcm';
const IV_BYTES = 12;
const FORMAT = 'v1';

/** Names a key in sealed records without revealing it, so the right one of two can be picked. */
const keyIdOf = (key: Buffer) => createHash('sha256').update('tollgate-vault-key-id').update(key).digest('hex').slice(0, 8);

/**
 * Seals OAuth tokens for the store with AES-256-GCM: `v1:<key id>:<iv>:<tag>:<ciphertext>`
 * (base64url). The account id is authenticated data, so a record copied to another account
 * does not open. Rotation: the current key seals; a previous key still opens, and records sealed
 * with it are sealed again with the current one (`isStale`).
 */
export class TokenVault {
  private readonly keys = new Map<string, Buffer>();
  private readonly currentId: string;

  constructor(current: Buffer, previous?: Buffer) {
    this.currentId = keyIdOf(current);
    this.keys.set(this.currentId, current);
    if (previous) this.keys.set(keyIdOf(previous), previous);
  }

  seal(accountId: string, tokens: OAuthTokens): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv(ALGORITHM, this.keys.get(this.currentId)!, iv);
    cipher.setAAD(Buffer.from(accountId));
    const body = Buffer.concat([cipher.update(JSON.stringify(tokens), 'utf8'), cipher.final()]);
    return [FORMAT, this.currentId, iv.toString('base64url'), cipher.getAuthTag().toString('base64url'), body.toString('base64url')].join(':');
  }

  /** Throws when the record was sealed with a key this replica does not have, or was altered. */
  open(accountId: string, sealed: string): OAuthTokens {
    const [format, keyId, iv, tag, body] = sealed.split(':');
    const key = this.keys.get(keyId ?? '');
    if (format !== FORMAT || !key || !iv || !tag || body === undefined) {
      throw new Error(`the tokens of account ${accountId} were sealed with another encryption key (${keyId}); set it as TOLLGATE_ENCRYPTION_KEY_PREVIOUS or import the account again`);
    }
    const decipher = createDecipheriv(ALGORITHM, key, Buffer.from(iv, 'base64url'));
    decipher.setAAD(Buffer.from(accountId));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    const text = Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8');
    return JSON.parse(text) as OAuthTokens;
  }

  /** Sealed with the previous key: to be sealed again with the current one. */
  isStale(sealed: string): boolean {
    return sealed.split(':')[1] !== this.currentId;
  }
}
