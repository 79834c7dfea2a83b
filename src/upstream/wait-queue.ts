import type { CancelSignal } from '../http/client-gone.js';

/** Why a queued request stopped waiting without its turn coming. */
export type QueueExit = 'timeout' | 'gone';

interface Waiter {
  wake: () => void;
}

/**
 * First in, first out: a request that found every account full waits here for its turn. Only the
 * head is woken — by a slot freed on this replica, or by the poll tick that notices slots freed
 * elsewhere — and it tries again; the ones behind it wait until it has gone.
 */
export class WaitQueue {
  private readonly waiters: Waiter[] = [];

  constructor(private readonly pollMs: number) {}

  get depth(): number {
    return this.waiters.length;
  }

  /**
   * Runs `attempt` once this caller is at the head, again after every wake-up, until it returns
   * a value; null when the deadline passed or the signal fired first (the caller left the queue).
   */
  async waitFor<T>(attempt: () => Promise<T | undefined>, deadline: number, signal?: CancelSignal): Promise<T | QueueExit> {
    const waiter: Waiter = { wake: () => {} };
    this.waiters.push(waiter);
    try {
      for (;;) {
        const exit = await this.sleep(waiter, deadline, signal);
        if (exit) return exit;
        if (this.waiters[0] !== waiter) continue;
        const value = await attempt();
        if (value !== undefined) return value;
      }
    } finally {
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      // the next one may find a slot too
      this.wakeHead();
    }
  }

  /** A slot was freed here: the head tries again now rather than at its next poll. */
  wakeHead(): void {
    this.waiters[0]?.wake();
  }

  /** Until woken, the next poll tick, the deadline or the signal; returns why it stopped if not woken. */
  private sleep(waiter: Waiter, deadline: number, signal?: CancelSignal): Promise<QueueExit | undefined> {
    if (signal?.aborted) return Promise.resolve('gone');
    const left = deadline - Date.now();
    if (left <= 0) return Promise.resolve('timeout');
    return new Promise((resolve) => {
      const done = (exit: QueueExit | undefined) => {
        clearTimeout(timer);
        signal?.off('abort', onAbort);
        waiter.wake = () => {};
        resolve(exit);
      };
      const onAbort = () => done('gone');
      const timer = setTimeout(() => done(left <= this.pollMs ? 'timeout' : undefined), Math.min(left, this.pollMs));
      signal?.once('abort', onAbort);
      waiter.wake = () => done(undefined);
    });
  }
}
