// A replica process keeps its young generation small while it starts (src/v8-tuning.ts): loading
// the modules would otherwise grow it to V8's maximum (2 × 16 MiB) before anything is served.
import { describe, expect, it } from 'vitest';
import { runReplicaProcess } from './support/replica-process.js';

const V8_DEFAULT_MAX_NEW_SPACE = 32 * 1024 * 1024;

describe('replica process memory', () => {
  it('has not grown its young generation to the maximum by the time it listens', async () => {
    let newSpace: number | undefined;
    const run = await runReplicaProcess({
      config: {
        server: { host: '127.0.0.1', port: 0, internalHost: '127.0.0.1', internalPort: 0 },
        providers: { openai: { baseUrl: 'http://127.0.0.1:9', accounts: [{ id: 'oa-1', apiKey: 'sk-unused' }] } },
      },
      whileListening: async ({ internalUrl }) => {
        const metrics = await (await fetch(`${internalUrl}/metrics`)).text();
        newSpace = Number(/^nodejs_heap_space_size_total_bytes\{space="new"\} (\d+)$/m.exec(metrics)?.[1]);
      },
    });
    expect(run.listening).toBe(true);
    expect(newSpace).toBeGreaterThan(0);
    expect(newSpace).toBeLessThan(V8_DEFAULT_MAX_NEW_SPACE);
  });
});
