/** A key that is not 32 bytes as 64 hex characters or base64. */
export class BadEncryptionKey extends Error {
  override name = 'BadEncryptionKey';
}

/** The AES-256 key of `TOLLGATE_ENCRYPTION_KEY`: 32 bytes from 64 hex characters or base64 (`openssl rand -base64 32` or `-hex 32`). */
export function parseEncryptionKey(text: string, name: string): Buffer {
  const trimmed = text.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(trimmed) ? Buffer.from(trimmed, 'hex') : Buffer.from(trimmed, 'base64');
  if (key.length !== 32) throw new BadEncryptionKey(`${name}: must be 32 bytes, as 64 hex characters or base64 (openssl rand -base64 32)`);
  return key;
}
