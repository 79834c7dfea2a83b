import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // the dashboard bundle, built from web/ (a fresh clone has none)
    globalSetup: ['test/support/build-ui.ts'],
    // replica processes and a real redis-server start per file: give them room, never retry
    testTimeout: 30_000,
    hookTimeout: 60_000,
    retry: 0,
  },
});
