import { describe, expect, it } from 'vitest';
import { KeyDirectory, generateKey, hashSecret } from '../src/auth/keys.js';
import { MemoryStore } from '../src/store/memory.js';

/** A real memory store that counts its hash lookups: a cache hit is a lookup that did not happen. */
class CountingStore extends MemoryStore {
  lookups = 0;
  override getKeyByHash(sha256: string) {
    this.lookups += 1;
    return super.getKeyByHash(sha256);
  }
}

async function directoryWithKey(ttlMs: number) {
  const store = new CountingStore();
  const { id, sha256 } = generateKey();
  await store.putKey({ id, sha256, name: 'good', allowed_models: null, expires_at: null, limits: [], disabled: false, created_at: new Date().toISOString(), origin: 'admin' });
  return { store, sha256, keys: new KeyDirectory(store, ttlMs) };
}

describe('KeyDirectory cache', () => {
  it('20 000 unknown keys do not evict a good key', async () => {
    const { store, sha256, keys } = await directoryWithKey(60_000);
    expect(await keys.byHashOf(sha256)).toMatchObject({ name: 'good' });
    for (let i = 0; i < 20_000; i++) expect(await keys.byHashOf(hashSecret(`sk-tg-junk-${i}`))).toBeNull();
    const before = store.lookups;
    expect(await keys.byHashOf(sha256)).toMatchObject({ name: 'good' });
    expect(store.lookups).toBe(before);
  });

  it('an unknown key is remembered as unknown, and a key forgotten here is read again', async () => {
    const { store, sha256, keys } = await directoryWithKey(60_000);
    const junk = hashSecret('sk-tg-junk');
    await keys.byHashOf(junk);
    await keys.byHashOf(junk);
    await keys.byHashOf(sha256);
    expect(store.lookups).toBe(2);
    keys.forget({ sha256 });
    await keys.byHashOf(sha256);
    expect(store.lookups).toBe(3);
  });

  it('ttl 0 caches nothing: every lookup reaches the store', async () => {
    const { store, sha256, keys } = await directoryWithKey(0);
    await keys.byHashOf(sha256);
    await keys.byHashOf(sha256);
    expect(store.lookups).toBe(2);
  });
});
