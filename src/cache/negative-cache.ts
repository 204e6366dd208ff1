// Remembers for a short while that no upstream has a path, so that a client (or a build farm)
// asking again and again does not send every upstream the same doomed request each time.

const MAX_ENTRIES = 100_000;

export class NegativeCache {
  private readonly expiries = new Map<string, number>();

  constructor(private readonly ttlMs: number) {}

  has(key: string): boolean {
    const expiry = this.expiries.get(key);
    if (expiry === undefined) return false;
    if (expiry > Date.now()) return true;
    this.expiries.delete(key);
    return false;
  }

  add(key: string): void {
    if (this.ttlMs <= 0) return;
    // Re-insert so the Map's insertion order stays oldest-first for eviction.
    this.expiries.delete(key);
    this.expiries.set(key, Date.now() + this.ttlMs);
    if (this.expiries.size > MAX_ENTRIES) {
      const oldest = this.expiries.keys().next().value;
      if (oldest !== undefined) this.expiries.delete(oldest);
    }
  }

  delete(key: string): void {
    this.expiries.delete(key);
  }
}
