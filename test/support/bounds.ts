import { setTimeout as pause } from 'node:timers/promises';
import { expect } from 'vitest';

/**
 * Asks `probe` again and again until `settled(answer)`, and checks that it happened within a
 * promised bound in a way no amount of load can break: the gateway reads its state no earlier
 * than a probe is sent, so an unsettled answer to a probe sent more than `boundMs` after `since`
 * breaks the promise, while a slow answer does not. `since` must be taken after the change was
 * made (e.g. once the revoking call has returned). Returns the settled answer.
 */
export async function settlesWithin<T>(probe: () => Promise<T>, settled: (answer: T) => boolean, since: number, boundMs: number): Promise<T> {
  for (;;) {
    const sentAt = Date.now();
    const answer = await probe();
    if (settled(answer)) return answer;
    expect(sentAt - since, `still unsettled for a probe sent ${sentAt - since} ms after the change`).toBeLessThanOrEqual(boundMs);
    await pause(50); // between probes, not a wait for anything
  }
}
