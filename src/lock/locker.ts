// The Locker seam: mutual exclusion around work that must happen once (one upstream download per
// NAR, one narinfo fetch per hash). In-process locks serve one instance; Redis will serve a cluster.

export interface Lock {
  release(): Promise<void>;
}

/** What the Redis lockers log through (pino's logger fits). */
export interface LockLogger {
  warn(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface Locker {
  /** Waits for the lock on `key`; `ttlMs` bounds how long a crashed holder can keep it. */
  acquire(key: string, ttlMs: number): Promise<Lock>;
  /** Takes the lock only if it is free right now. */
  tryAcquire(key: string, ttlMs: number): Promise<Lock | undefined>;
  close(): Promise<void>;
}

export async function withLock<T>(locker: Locker, key: string, ttlMs: number, work: () => Promise<T>): Promise<T> {
  const lock = await locker.acquire(key, ttlMs);
  try {
    return await work();
  } finally {
    await lock.release();
  }
}

/** Tries for the lock on `key` until `waitMs` have passed; undefined if it stayed taken. */
export async function acquireWithin(locker: Locker, key: string, ttlMs: number, waitMs: number): Promise<Lock | undefined> {
  const deadline = Date.now() + waitMs;
  for (let attempt = 0; ; attempt++) {
    const lock = await locker.tryAcquire(key, ttlMs);
    const left = deadline - Date.now();
    if (lock || left <= 0) return lock;
    await new Promise((resolve) => setTimeout(resolve, Math.min(left, 1_000, 25 * 2 ** attempt)));
  }
}
