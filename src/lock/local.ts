// In-process keyed mutex. Waiters queue in order; an entry is deleted when its queue is empty so
// the map holds only keys that are busy right now.

import type { Lock, Locker } from './locker';

export class LocalLocker implements Locker {
  private readonly tails = new Map<string, Promise<void>>();

  async acquire(key: string, ttlMs: number): Promise<Lock> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let releaseNext!: () => void;
    const mine = new Promise<void>((resolve) => (releaseNext = resolve));
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    await previous;

    let released = false;
    // A holder that never releases (a bug) must not wedge the key forever.
    const expiry = setTimeout(() => release(), ttlMs);
    expiry.unref();
    const release = async () => {
      if (released) return;
      released = true;
      clearTimeout(expiry);
      if (this.tails.get(key) === tail) this.tails.delete(key);
      releaseNext();
    };
    return { release };
  }

  async tryAcquire(key: string, ttlMs: number): Promise<Lock | undefined> {
    return this.tails.has(key) ? undefined : this.acquire(key, ttlMs);
  }

  async close(): Promise<void> {
    this.tails.clear();
  }
}
