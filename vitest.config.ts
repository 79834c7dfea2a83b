import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // the dashboard bundle, built from web/ (a fresh clone has none)
    globalSetup: ['test/support/build-ui.ts'],
    // replica processes and a real redis-server start per file: give them room, never retry.
    // These only stop a hang: on a loaded 2-core machine a cluster test takes several times longer.
    testTimeout: 60_000,
    hookTimeout: 120_000,
    retry: 0,
    // a poll waits on a fact, not on speed: the 1 s default fails on a loaded machine
    expect: { poll: { timeout: 10_000 } },
  },
});
