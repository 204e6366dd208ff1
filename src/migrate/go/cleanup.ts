// Removing what a takeover kept for the Go ncps, once the operator is sure they will not go back:
// the CDC chunk files of NARs that are whole in storage now, and narinfo files whose narinfo is
// in our database. Nothing else: a chunk another (not taken over) NAR still needs stays, and the
// Go database itself is left for the operator to drop (docs/upgrading.md says how).

import type { Database } from '../../db/database';
import type { Storage } from '../../storage/storage';
import type { Logger } from '../../telemetry/logger';
import type { GoSource } from './source';
import { readTakeoverState, writeTakeoverState } from './state';

export interface CleanupResult {
  chunksRemoved: number;
  /** Chunks kept because a NAR that was not taken over still uses them. */
  chunksKept: number;
  narInfoFilesRemoved: number;
  narInfoFilesKept: number;
}

export class NotTakenOver extends Error {}

export async function removeGoFiles(options: {
  source: GoSource;
  db: Database;
  storage: Storage;
  logger: Logger;
  dryRun: boolean;
}): Promise<CleanupResult> {
  const { source, db, storage, logger, dryRun } = options;
  const state = await readTakeoverState(db).catch(() => undefined);
  if (state?.state !== 'done') {
    throw new NotTakenOver('the Go ncps database has not been taken over (completely) yet: run ncps migrate from-go first');
  }
  const result: CleanupResult = { chunksRemoved: 0, chunksKept: 0, narInfoFilesRemoved: 0, narInfoFilesKept: 0 };

  // A NAR counts as taken over when its reassembled whole file is recorded and in storage.
  const wholeAgain = new Map<string, boolean>();
  const isWhole = async (hash: string): Promise<boolean> => {
    let whole = wholeAgain.get(hash);
    if (whole === undefined) {
      const name = `${hash}.nar.zst`;
      const record = await db.getNarFile(name);
      whole = record?.storedAt !== undefined && (await storage.statNar(name)) !== undefined;
      wholeAgain.set(hash, whole);
    }
    return whole;
  };
  for (const [chunk, users] of await source.chunkUsers()) {
    let removable = true;
    for (const user of users) if (!(await isWhole(user.hash))) removable = false;
    if (!removable) {
      result.chunksKept++;
      continue;
    }
    if (!dryRun) await storage.deleteChunk(chunk);
    result.chunksRemoved++;
  }

  const hashes: string[] = [];
  for await (const hash of storage.listLegacyNarInfos()) hashes.push(hash);
  for (let i = 0; i < hashes.length; i += 500) {
    const batch = hashes.slice(i, i + 500);
    const known = await db.knownNarInfos(batch);
    for (const hash of batch) {
      if (!known.has(hash)) {
        result.narInfoFilesKept++;
        continue;
      }
      if (!dryRun) await storage.deleteLegacyNarInfo(hash);
      result.narInfoFilesRemoved++;
    }
  }
  if (!dryRun) {
    // What is left (files not taken over) is ordinary legacy work again.
    await writeTakeoverState(db, { ...state, keptLegacyFiles: false });
    logger.info({ ...result }, "removed the Go ncps's chunk and narinfo files");
  }
  return result;
}
