// What every fsck check gets: the seams, the moment the run started, a place to put findings
// and figures, and progress reporting. Also the repairs several checks share.

import type { Database } from '../../db/database';
import type { Storage } from '../../storage/storage';
import type { Logger } from '../../telemetry/logger';
import { dropAuxFile } from '../aux-files';
import type { Finding } from './problems';

/** Reports the progress of one phase (a bar on a terminal, log lines otherwise). */
export interface PhaseProgress {
  tick(n?: number): void;
  end(): void;
}

export interface ProgressSink {
  phase(label: string, total: number | undefined): PhaseProgress;
}

export const SILENT_PROGRESS: ProgressSink = { phase: () => ({ tick: () => undefined, end: () => undefined }) };

/** What was looked at, for the summary. */
export interface CheckedCounts {
  narInfos: number;
  narRecords: number;
  narFilesInStorage: number;
  smallFileRecords: number;
  listingsInStorage: number;
  /** NARs whose bytes were hashed (--verify-content). */
  narsVerified: number;
  /** NARs not hashed because they were verified within --verified-since. */
  narsRecentlyVerified: number;
  /** Unrecorded files younger than the orphan grace period: not judged yet. */
  unrecordedYoung: number;
  /** Unrecorded files older than the database: not written through it, kept (as the sweep does). */
  unrecordedOlderThanDatabase: number;
}

export function emptyCounts(): CheckedCounts {
  return {
    narInfos: 0,
    narRecords: 0,
    narFilesInStorage: 0,
    smallFileRecords: 0,
    listingsInStorage: 0,
    narsVerified: 0,
    narsRecentlyVerified: 0,
    unrecordedYoung: 0,
    unrecordedOlderThanDatabase: 0,
  };
}

export interface FsckContext {
  db: Database;
  storage: Storage;
  logger: Logger;
  /** When the run started (ms since the epoch). */
  now: number;
  progress: ProgressSink;
  counts: CheckedCounts;
  /** Things the summary should say about what was not checked, and why. */
  notes: string[];
  found(finding: Finding): void;
}

/** Page size for walking records and batching storage lookups. */
export const PAGE = 500;

/**
 * Removes a NAR's record and every narinfo pointing at it (database first, as deletes and LRU do),
 * and their listings: each path becomes a miss and is fetched again from upstream on demand.
 */
export async function removeNarRecords(ctx: FsckContext, name: string): Promise<{ narinfos: string[] }> {
  const hashes = await ctx.db.deleteNarFile(name);
  for (const hash of hashes) await dropAuxFile(ctx.db, ctx.storage, 'ls', `${hash}.ls`);
  return { narinfos: hashes };
}

/**
 * A NAR whose bytes are wrong: moved out of the served layout first (so no server hands it out
 * again, and a download started meanwhile finds it gone), then its records removed.
 */
export async function quarantineNar(ctx: FsckContext, name: string): Promise<Record<string, unknown>> {
  const quarantinedAs = await ctx.storage.quarantineNar(name, Date.now());
  const { narinfos } = await removeNarRecords(ctx, name);
  return { quarantinedAs: quarantinedAs ?? null, narinfos };
}
