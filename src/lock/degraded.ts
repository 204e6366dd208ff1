// The in-process locks both Redis lockers (./redis.ts, ./redlock.ts) hand out in degraded mode,
// while Redis (or a majority of its servers) cannot be reached and --cache-lock-allow-degraded-mode
// is set. They exclude other holders in this process only; `degraded: true` makes
// ./instrumented.ts count them as local locks.

import { LocalLocker } from './local';
import type { Lock } from './locker';

/** The shape of a RedisLock (./redis.ts), never lost: nothing outside this process can take it away. */
export interface DegradedLock extends Lock {
  readonly key: string;
  readonly lost: false;
  readonly degraded: true;
  readonly signal: AbortSignal;
}

export class DegradedLocks {
  private readonly local = new LocalLocker();
  /** Keys held right now (waiters queued in `local` are not holders). */
  private readonly held = new Set<string>();

  /** `onAcquired` runs for every lock handed out (the locker's counters). */
  constructor(private readonly onAcquired: () => void) {}

  async acquire(key: string, ttlMs: number): Promise<DegradedLock> {
    const inner = await this.local.acquire(key, ttlMs);
    this.onAcquired();
    this.held.add(key);
    let released = false;
    return {
      key,
      lost: false,
      degraded: true,
      signal: new AbortController().signal,
      release: async () => {
        if (released) return;
        released = true;
        this.held.delete(key);
        await inner.release();
      },
    };
  }

  /** The lock, or undefined when this process holds it. */
  async tryAcquire(key: string, ttlMs: number): Promise<DegradedLock | undefined> {
    if (this.held.has(key)) return undefined;
    return this.acquire(key, ttlMs);
  }

  close(): Promise<void> {
    return this.local.close();
  }
}
