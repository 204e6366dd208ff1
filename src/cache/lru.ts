// Keeps the store under --cache-max-size by evicting what was used least recently: store paths
// (never a pinned closure) and the small files kept beside them (listings, logs, realisations,
// build traces), which compete by their last use. Order matters: a narinfo is deleted from the database before its NAR leaves
// storage, because clients cache positive narinfo answers for a month and must never be told
// about a path whose NAR is already gone.

import type { AuxFileKey, Database } from '../db/database';
import type { Locker } from '../lock/locker';
import type { AuxKind, Storage } from '../storage/storage';
import type { Logger } from '../telemetry/logger';
import type { Metrics } from '../telemetry/metrics';
import { dropAuxFile } from './aux-files';
import { MEMO_TTL_MS } from './narinfo-memo';
import type { OrphanSweeper } from './orphans';
import { parseSchedule, startSchedule, type RunningSchedule } from './schedule';

export interface LruOptions {
  db: Database;
  storage: Storage;
  locker: Locker;
  logger: Logger;
  metrics: Metrics;
  maxSizeBytes: number;
  lockTtlMs: number;
  /** Called for each evicted narinfo, before its NAR is removed (the cache drops its memo). */
  onEvicted?: (hash: string) => void;
  /** Removes unrecorded files before the size is measured; run at most once per SWEEP_INTERVAL_MS. */
  sweeper?: OrphanSweeper;
}

export interface LruResult {
  evictedNarInfos: number;
  freedBytes: number;
  sizeAfter: number;
}

/** Applied when a maximum size is set without a schedule. */
export const DEFAULT_LRU_SCHEDULE = '0 * * * *';

const BATCH = 200;

/** Walking all of storage is not free (S3 lists 1000 keys a request): the sweep runs at most this often. */
export const SWEEP_INTERVAL_MS = 6 * 60 * 60 * 1000;

export class LruCleaner {
  private job?: RunningSchedule;
  private running?: Promise<LruResult>;
  private lastSweep = 0;

  constructor(private readonly options: LruOptions) {}

  /** Runs on the schedule (see ./schedule.ts for its forms); `timezone` is an IANA name, or "Local". */
  start(schedule: string, timezone: string): void {
    this.job = startSchedule(parseSchedule(schedule), timezone, () => {
      void this.run().catch((error: Error) => this.options.logger.error({ err: error.message }, 'LRU clean-up failed'));
    });
    this.options.logger.info({ schedule, timezone, next: this.job.next()?.toISOString() }, 'LRU clean-up scheduled');
  }

  /** One clean-up; concurrent calls share the run in progress. */
  run(): Promise<LruResult> {
    this.running ??= this.clean().finally(() => (this.running = undefined));
    return this.running;
  }

  private async clean(): Promise<LruResult> {
    const { db, storage, locker, logger, metrics, maxSizeBytes, lockTtlMs } = this.options;
    // One clean-up at a time across every instance: a node that finds one running skips its turn.
    const lock = await locker.tryAcquire('lru', lockTtlMs);
    if (!lock) {
      logger.info('LRU clean-up already running elsewhere; skipped');
      return { evictedNarInfos: 0, freedBytes: 0, sizeAfter: -1 };
    }
    const timer = metrics.lruDuration.startTimer();
    try {
      metrics.lruRuns.inc();
      if (this.options.sweeper && Date.now() - this.lastSweep >= SWEEP_INTERVAL_MS) {
        this.lastSweep = Date.now();
        await this.options.sweeper.run().catch((error: Error) => logger.error({ err: error.message }, 'orphan sweep failed'));
      }
      const storeSize = async () => {
        const stats = await db.storeStats();
        return stats.storedBytes + stats.auxBytes;
      };
      let size = await storeSize();
      let evictedNarInfos = 0;
      let evictedFiles = 0;
      let freedBytes = 0;
      const freed = (bytes: number) => {
        freedBytes += bytes;
        size -= bytes;
        // Counted when the record goes (the size no longer counts from then on), so the metric
        // never lags behind what storage shows.
        metrics.lruBytesFreed.inc(bytes);
      };
      while (size > maxSizeBytes) {
        // Store paths and small files (listings, logs, realisations, build traces) compete by when
        // they were last used; pinned closures are not offered.
        const [paths, files] = await Promise.all([db.leastRecentlyUsedNarInfos(BATCH), db.leastRecentlyUsedAuxFiles(BATCH)]);
        if (paths.length === 0 && files.length === 0) {
          logger.warn({ size, maxSizeBytes }, 'store is over its maximum size, but everything left is pinned');
          break;
        }
        const doomedNars: string[] = [];
        const doomedFiles: AuxFileKey[] = [];
        const evicted: string[] = [];
        for (let p = 0, f = 0; size > maxSizeBytes && (p < paths.length || f < files.length); ) {
          const path = paths[p];
          const file = files[f];
          if (file && (!path || file.lastAccessedAt < path.lastAccessedAt)) {
            f++;
            await db.deleteAuxFile(file);
            doomedFiles.push(file);
            evictedFiles++;
            metrics.lruAuxFilesEvicted.inc();
            freed(file.size);
            continue;
          }
          p++;
          const { deleted, orphanedNarFiles } = await db.deleteNarInfo(path!.hash);
          if (deleted) {
            evictedNarInfos++;
            metrics.lruNarInfosEvicted.inc();
          }
          evicted.push(path!.hash);
          this.options.onEvicted?.(path!.hash);
          for (const nar of orphanedNarFiles) {
            doomedNars.push(nar.name);
            metrics.lruNarFilesEvicted.inc();
            freed(nar.size);
          }
        }
        // Any instance may still serve a narinfo it memoised just before the delete: let that
        // memo expire before its NAR goes (database first, then files, with a gap in between).
        if (doomedNars.length > 0) await new Promise((resolve) => setTimeout(resolve, MEMO_TTL_MS + 100));
        for (const file of doomedFiles) await storage.deleteAuxFile(file.kind as AuxKind, file.name);
        // An evicted path's listing goes with it.
        for (const hash of evicted) await dropAuxFile(db, storage, 'ls', `${hash}.ls`);
        for (const name of doomedNars) await storage.deleteNar(name);
        if (evicted.length === 0 && doomedFiles.length === 0) break; // nothing could go
        size = await storeSize();
      }
      if (evictedNarInfos > 0 || evictedFiles > 0) {
        logger.info({ evictedNarInfos, evictedFiles, freedBytes, sizeAfter: size }, 'LRU clean-up evicted paths');
      }
      return { evictedNarInfos, freedBytes, sizeAfter: size };
    } finally {
      timer();
      await lock.release();
    }
  }

  stop(): void {
    this.job?.stop();
  }
}
