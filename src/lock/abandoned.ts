// Lock tokens this process may have left behind in Redis. A SET whose answer never came (Redis
// stalled, a connection dropped, the attempt timed out) may still be carried out later: Redis runs
// the commands of a connection in order once it moves again, and then the key holds our token for
// the whole TTL on behalf of a request that gave up long ago, blocking every instance (this one
// included) from that path. So every token an attempt gave up on is deleted again, compare-and-delete
// so that it never touches another holder's lock: the delete is sent at once (on a stalled but open
// connection it queues behind the SET and runs right after it), and retried until it succeeds or the
// TTL it was set with has run out anyway.

import type { LockLogger } from './locker';

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 5_000;

export class AbandonedTokens {
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(private readonly logger?: LockLogger) {}

  /** Number of tokens still waiting to be deleted (for tests and logs). */
  get pending(): number {
    return this.timers.size + this.inFlight;
  }
  private inFlight = 0;

  /**
   * Deletes `token` from `key` with `remove` (a compare-and-delete on one Redis server), now and
   * again until it succeeds or `until` (ms since the epoch) has passed.
   */
  forget(where: string, key: string, until: number, remove: () => Promise<unknown>): void {
    const attempt = (delay: number) => {
      if (this.closed || Date.now() > until) return;
      this.inFlight++;
      remove().then(
        () => {
          this.inFlight--;
          this.logger?.debug({ key, redis: where }, 'abandoned lock token deleted');
        },
        (error: Error) => {
          this.inFlight--;
          if (this.closed || Date.now() > until) return;
          this.logger?.debug({ key, redis: where, err: error.message }, 'abandoned lock token not deleted yet; retrying');
          const timer = setTimeout(() => {
            this.timers.delete(timer);
            attempt(Math.min(delay * 2, MAX_RETRY_MS));
          }, delay);
          timer.unref();
          this.timers.add(timer);
        },
      );
    };
    attempt(FIRST_RETRY_MS);
  }

  close(): void {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }
}
