// When an upstream fails (5xx, 429, a timeout, a refused connection) it is left alone for a while
// instead of being asked again by the next request: exponentially longer after each failure in a
// row, or exactly as long as its Retry-After asks (within bounds). Any real answer resets it.
// A failure never means "the path is absent": only a 404 (or 403/410) does.

const FIRST_DELAY_MS = 1_000;
const MAX_DELAY_MS = 60_000;
/** A Retry-After longer than this is not believed (a broken or hostile upstream). */
const MAX_RETRY_AFTER_MS = 10 * 60_000;

/** Milliseconds a Retry-After header asks for (delta-seconds or an HTTP date), if it parses. */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

export class Backoff {
  private failures = 0;
  /** Epoch milliseconds before which the upstream is not asked. */
  retryAt = 0;

  available(now = Date.now()): boolean {
    return now >= this.retryAt;
  }

  /** Records a failure; returns how long the upstream is now left alone (ms). */
  failed(retryAfter: string | undefined, now = Date.now()): number {
    this.failures++;
    const asked = parseRetryAfter(retryAfter, now);
    const delay =
      asked !== undefined
        ? Math.min(Math.max(asked, FIRST_DELAY_MS), MAX_RETRY_AFTER_MS)
        : Math.min(FIRST_DELAY_MS * 2 ** (this.failures - 1), MAX_DELAY_MS);
    this.retryAt = now + delay;
    return delay;
  }

  succeeded(): void {
    this.failures = 0;
    this.retryAt = 0;
  }
}

/** How many paths' back-offs an upstream remembers; the oldest are dropped first. */
const MAX_PATHS = 10_000;

/**
 * The back-offs of one upstream. Rate limiting (429, any Retry-After) and an upstream that cannot
 * be reached leave the whole upstream alone; any other failure (a 500 on one path, a lookup that
 * timed out) only that path, so one broken path does not hide every other.
 */
export class UpstreamBackoff {
  private readonly whole = new Backoff();
  private readonly paths = new Map<string, Backoff>();

  available(path: string, now = Date.now()): boolean {
    return this.whole.available(now) && (this.paths.get(path)?.available(now) ?? true);
  }

  /** Records a failure; returns how long it is now left alone (ms) and whether for all paths. */
  failed(path: string, scope: 'upstream' | 'path', retryAfter: string | undefined, now = Date.now()): number {
    if (scope === 'upstream') return this.whole.failed(retryAfter, now);
    let backoff = this.paths.get(path);
    if (!backoff) {
      backoff = new Backoff();
      this.paths.set(path, backoff);
      if (this.paths.size > MAX_PATHS) this.paths.delete(this.paths.keys().next().value!);
    }
    return backoff.failed(retryAfter, now);
  }

  succeeded(path: string): void {
    this.whole.succeeded();
    this.paths.delete(path);
  }
}
