import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // replica processes and a real redis-server start per file: give them room, never retry
    testTimeout: 30_000,
    hookTimeout: 60_000,
    retry: 0,
    // a poll waits on a fact, not on speed: the 1 s default fails on a loaded machine
    expect: { poll: { timeout: 10_000 } },
  },
});
