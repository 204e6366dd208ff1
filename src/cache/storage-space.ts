// Whether storage can take a new file right now. When the file system under the temp directory (or
// local storage) is full, NAR downloads are streamed from upstream to the client without being kept
// instead of failing, small files from upstream are served without being kept, and uploads are
// refused with 507. The state is logged when it changes, exported as ncps_storage_full, and readable
// by the readiness check (status()).

import { statfs } from 'node:fs/promises';
import type { Logger } from '../telemetry/logger';
import type { Metrics } from '../telemetry/metrics';

/** While full, how often free space is looked at again. */
const RECHECK_MS = 1_000;
/** Free space kept beyond a download's size before it is stored (the database and logs need room). */
const HEADROOM_BYTES = 16 << 20;

export interface SpaceStatus {
  full: boolean;
  /** ISO time the full state began. */
  since?: string;
  reason?: string;
}

export class StorageSpace {
  private fullSince: number | undefined;
  private reason: string | undefined;
  private lastCheck = 0;

  constructor(
    /** Local directories new files are written to (the temp directory; local storage's root). */
    private readonly dirs: readonly string[],
    private readonly logger: Logger,
    private readonly metrics?: Metrics,
  ) {
    metrics?.storageFull.set(0);
  }

  /** Free bytes on the fullest of the directories' file systems (as a non-root user sees it). */
  private async freeBytes(): Promise<number> {
    let free = Infinity;
    for (const dir of this.dirs) {
      const fs = await statfs(dir);
      free = Math.min(free, fs.bavail * fs.bsize);
    }
    return free;
  }

  /** A write failed for lack of space. */
  markFull(reason: string): void {
    this.lastCheck = Date.now();
    if (this.fullSince !== undefined) return;
    this.fullSince = Date.now();
    this.reason = reason;
    this.metrics?.storageFull.set(1);
    this.logger.error({ reason }, 'storage is full: NAR downloads are streamed to clients without being kept, uploads are refused (507)');
  }

  private markFree(free: number): void {
    if (this.fullSince === undefined) return;
    this.logger.info({ freeBytes: free, fullForMs: Date.now() - this.fullSince }, 'storage has room again: NAR downloads are kept again');
    this.fullSince = undefined;
    this.reason = undefined;
    this.metrics?.storageFull.set(0);
  }

  /**
   * Whether a new file of `size` bytes (unknown: undefined) should be written. Less free space than
   * the headroom means full; a file that alone does not fit is not written, without storage
   * counting as full. While full, free space is looked at again at most once a second.
   */
  async allowsStoring(size?: number): Promise<boolean> {
    const now = Date.now();
    if (this.fullSince !== undefined && now - this.lastCheck < RECHECK_MS) return false;
    if (this.fullSince === undefined && size === undefined) return true;
    this.lastCheck = now;
    let free: number;
    try {
      free = await this.freeBytes();
    } catch {
      return this.fullSince === undefined;
    }
    if (free < HEADROOM_BYTES) {
      this.markFull(`${free} bytes available`);
      return false;
    }
    this.markFree(free);
    return size === undefined || free >= size + HEADROOM_BYTES;
  }

  get full(): boolean {
    return this.fullSince !== undefined;
  }

  /** For readiness and status pages. */
  status(): SpaceStatus {
    if (this.fullSince === undefined) return { full: false };
    return { full: true, since: new Date(this.fullSince).toISOString(), ...(this.reason ? { reason: this.reason } : {}) };
  }
}
