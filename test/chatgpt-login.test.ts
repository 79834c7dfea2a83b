import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createOAuthMock } from '../src/mock/oauth.js';
import { parseAuthFile } from '../src/upstream/chatgpt/auth-file.js';
import { MalformedToken, tokenFacts } from '../src/upstream/chatgpt/jwt.js';
import { parseEncryptionKey } from '../src/config/encryption-key.js';
import { TokenVault } from '../src/upstream/chatgpt/vault.js';

const tokens = { idToken: 'id', accessToken: 'access-secret-value', refreshToken: 'refresh-secret-value' };

describe('ChatGPT login parts', () => {
  it('reads account id, plan, email and expiry from the JWT claims of a Codex auth.json', () => {
    const file = createOAuthMock().login({ chatgptAccountId: 'acct-42', planType: 'pro', email: 'dev@example.com' }, 3_600);
    const login = parseAuthFile(JSON.stringify(file), 'auth.json');
    expect(login.facts).toEqual({ chatgptAccountId: 'acct-42', planType: 'pro', email: 'dev@example.com', expiresAt: expect.any(Number) });
    expect(Math.abs(login.facts.expiresAt - (Date.now() + 3_600_000))).toBeLessThan(60_000);
    expect(login.lastRefresh).toBe(Date.parse(file.last_refresh as string));
  });

  it('names what is wrong with a malformed file or token, never quoting the token', () => {
    const file = createOAuthMock().login({ chatgptAccountId: 'acct-1' }) as { tokens: Record<string, string> };
    const withToken = (name: string, value: string) => JSON.stringify({ ...file, tokens: { ...file.tokens, [name]: value } });
    const cases: [string, RegExp][] = [
      ['{not json', /not JSON/],
      [JSON.stringify({ tokens: {} }), /tokens\.id_token/],
      [withToken('access_token', 'opaque-secret-token'), /access_token is not a JWT/],
      [withToken('id_token', `a.${Buffer.from('[1]').toString('base64url')}.c`), /id_token: the JWT payload is not an object/],
      [withToken('access_token', `a.${Buffer.from('{"sub":1}').toString('base64url')}.c`), /access_token: no numeric exp/],
    ];
    for (const [text, message] of cases) {
      expect(() => parseAuthFile(text, 'auth.json')).toThrow(MalformedToken);
      expect(() => parseAuthFile(text, 'auth.json')).toThrow(message);
      expect(() => parseAuthFile(text, 'auth.json')).not.toThrow(/opaque-secret-token/);
    }
    const noAccount = `a.${Buffer.from(JSON.stringify({ exp: 1 })).toString('base64url')}.c`;
    expect(() => tokenFacts({ idToken: noAccount, accessToken: noAccount })).toThrow(/chatgpt_account_id/);
  });

  it('seals tokens with AES-256-GCM bound to the account; a previous key still opens and is reported stale', () => {
    const oldKey = randomBytes(32);
    const newKey = randomBytes(32);
    const before = new TokenVault(oldKey);
    const sealed = before.seal('cg-1', tokens);
    expect(sealed).not.toContain('secret');
    expect(before.open('cg-1', sealed)).toEqual(tokens);
    expect(() => before.open('cg-2', sealed)).toThrow(); // copied to another account: does not open
    const tampered = sealed.slice(0, -2) + (sealed.endsWith('A') ? 'BB' : 'AA');
    expect(() => before.open('cg-1', tampered)).toThrow();

    const rotating = new TokenVault(newKey, oldKey);
    expect(rotating.isStale(sealed)).toBe(true);
    expect(rotating.open('cg-1', sealed)).toEqual(tokens);
    expect(rotating.isStale(rotating.seal('cg-1', tokens))).toBe(false);
    expect(() => new TokenVault(newKey).open('cg-1', sealed)).toThrow(/TOLLGATE_ENCRYPTION_KEY_PREVIOUS/);
  });

  it('takes a key as 64 hex characters or base64 of 32 bytes, nothing else', () => {
    const key = randomBytes(32);
    expect(parseEncryptionKey(key.toString('hex'), 'k')).toEqual(key);
    expect(parseEncryptionKey(key.toString('base64'), 'k')).toEqual(key);
    expect(() => parseEncryptionKey('too-short', 'k')).toThrow(/32 bytes/);
  });
});
