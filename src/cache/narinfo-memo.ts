// A short-lived memo of served narinfos (the bytes as sent), so that a burst of clients asking for the same paths
// (a fleet rebuilding, a CI matrix) costs one database read per path per moment, not one each.
// Entries live for MEMO_TTL_MS at most: other instances may delete a narinfo, and this bounds how
// long one can still be served after that. Deletions in this process invalidate at once, and
// eviction waits out the TTL before removing NAR files (see lru.ts), so a memoised narinfo never
// points at a NAR that is already gone.

export const MEMO_TTL_MS = 2_000;
const MAX_ENTRIES = 20_000;

/**
 * Times are performance.now() milliseconds: monotonic (a wall-clock step neither ends nor
 * stretches an entry's life), and the hot path has already read that clock for the request.
 */
export class NarInfoMemo {
  private readonly entries = new Map<string, { body: Buffer; expires: number }>();

  get(hash: string, now = performance.now()): Buffer | undefined {
    const entry = this.entries.get(hash);
    if (!entry) return undefined;
    if (entry.expires > now) return entry.body;
    this.entries.delete(hash);
    return undefined;
  }

  set(hash: string, body: Buffer, now = performance.now()): void {
    this.entries.delete(hash);
    this.entries.set(hash, { body, expires: now + MEMO_TTL_MS });
    if (this.entries.size > MAX_ENTRIES) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
  }

  delete(hash: string): void {
    this.entries.delete(hash);
  }

  clear(): void {
    this.entries.clear();
  }
}
