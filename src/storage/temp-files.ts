// Partial files in the temp directory: downloads and uploads in progress write `*.part` files there.
// A crash leaves them behind, so they are swept at start-up and then periodically: a `.part` file
// untouched for the maximum age is removed — never one this process still has open (a download
// paused by its upstream is untouched for a while, yet in use). Other processes' files (workers,
// a second instance on one temp directory) are protected by their age: a live download writes.

import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../telemetry/logger';

const inUse = new Set<string>();

/** Marks a temp file as in use until the returned function is called. */
export function holdTempFile(file: string): () => void {
  const resolved = path.resolve(file);
  inUse.add(resolved);
  return () => inUse.delete(resolved);
}

/** Removes `.part` files in `dir` untouched for longer than `maxAgeMs` and not in use here. */
export async function cleanTempDir(dir: string, maxAgeMs: number): Promise<number> {
  let removed = 0;
  const now = Date.now();
  for (const entry of await readdir(dir).catch(() => [] as string[])) {
    if (!entry.endsWith('.part')) continue;
    const file = path.resolve(dir, entry);
    if (inUse.has(file)) continue;
    const info = await stat(file).catch(() => undefined);
    if (info?.isFile() && now - info.mtimeMs > maxAgeMs && !inUse.has(file)) {
      await rm(file, { force: true });
      removed++;
    }
  }
  return removed;
}

/** Sweeps a temp directory now and then every quarter of the maximum age (at most every 15 min). */
export class TempFileSweeper {
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly dir: string,
    private readonly maxAgeMs: number,
    private readonly logger: Logger,
  ) {}

  async sweep(): Promise<number> {
    const removed = await cleanTempDir(this.dir, this.maxAgeMs).catch((error: Error) => {
      this.logger.warn({ dir: this.dir, err: error.message }, 'could not sweep the temp directory');
      return 0;
    });
    if (removed > 0) this.logger.info({ removed, dir: this.dir }, 'removed stale partial files');
    return removed;
  }

  start(): void {
    const every = Math.min(Math.max(this.maxAgeMs / 4, 500), 15 * 60_000);
    this.timer = setInterval(() => void this.sweep(), every);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
