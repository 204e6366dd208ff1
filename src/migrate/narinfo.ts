// Moves narinfo files that older ncps versions kept in storage into the database. The same
// routine serves both ways the upgrading guide offers: the server calls it when a client asks for
// a path the database lacks (background migration), and `ncps migrate-narinfo` calls it for every
// file it finds. Per-hash locks (in-process, or Redis across machines) keep the two from racing,
// and a file is deleted only after its row is committed, so a crash loses nothing.

import type { Database } from '../db/database';
import type { Locker } from '../lock/locker';
import { parseNarInfo, signNarInfo, storePathHash, type NarInfo, type SecretKey } from '../nix';
import type { Storage } from '../storage/storage';
import { NAR_FILE_NAME } from '../nix/file-names';

export type LegacyOutcome =
  /** Inserted into the database, file removed. */
  | 'migrated'
  /** The database already had it; the leftover file was removed. */
  | 'already-migrated'
  /** The file was gone by the time we looked (another migrator took it). */
  | 'gone';

export class InvalidLegacyNarInfo extends Error {}

export interface LegacyMigratorOptions {
  db: Database;
  storage: Storage;
  locker: Locker;
  lockTtlMs: number;
  /** Adds this signature when migrating (the key ncps publishes now, if it is not the old one). */
  signingKey?: SecretKey | undefined;
  dryRun?: boolean;
  /**
   * False when a dry run meets a database whose schema is not migrated yet: it is then treated as
   * empty, and only the files are checked.
   */
  databaseReady?: boolean;
}

export class LegacyNarInfoMigrator {
  constructor(private readonly options: LegacyMigratorOptions) {}

  /** Migrates one hash; returns the outcome and, unless gone, the narinfo as it is served now. */
  async migrate(hash: string): Promise<{ outcome: LegacyOutcome; narInfo?: NarInfo }> {
    const { db, storage, locker, lockTtlMs, dryRun } = this.options;
    const lock = await locker.acquire(`migrate:${hash}`, lockTtlMs);
    try {
      const existing = this.options.databaseReady === false ? undefined : await db.getNarInfo(hash);
      const text = await storage.getLegacyNarInfo(hash);
      if (existing) {
        if (text !== undefined && !dryRun) await storage.deleteLegacyNarInfo(hash);
        return { outcome: 'already-migrated', narInfo: existing };
      }
      if (text === undefined) return { outcome: 'gone' };
      const narInfo = this.validated(hash, text);
      if (dryRun) return { outcome: 'migrated', narInfo };
      const name = narInfo.url.slice('nar/'.length);
      const orphaned = await db.putNarInfo(hash, narInfo, {
        name,
        compression: narInfo.compression,
        narHash: narInfo.narHash.toNix32(),
        narSize: narInfo.narSize,
        ...(narInfo.fileHash ? { fileHash: narInfo.fileHash.toNix32() } : {}),
        ...(narInfo.fileSize !== undefined ? { fileSize: narInfo.fileSize } : {}),
      });
      for (const orphan of orphaned) await storage.deleteNar(orphan.name);
      const size = await storage.statNar(name);
      if (size !== undefined) await db.markNarFileStored(name, size);
      await storage.deleteLegacyNarInfo(hash);
      return { outcome: 'migrated', narInfo };
    } finally {
      await lock.release();
    }
  }

  private validated(hash: string, text: string): NarInfo {
    const narInfo = checkLegacyNarInfo(hash, text);
    // ncps signed these files when it stored them; that signature stays, and ours joins it when
    // the key has changed since.
    const key = this.options.signingKey;
    return key && !narInfo.sigs.some((sig) => sig.startsWith(`${key.name}:`)) ? signNarInfo(narInfo, key) : narInfo;
  }
}

/** The narinfo in a legacy file, if it can be migrated; InvalidLegacyNarInfo says why not. */
export function checkLegacyNarInfo(hash: string, text: string): NarInfo {
  let narInfo: NarInfo;
  try {
    narInfo = parseNarInfo(text);
  } catch (error) {
    throw new InvalidLegacyNarInfo(`${hash}.narinfo: ${(error as Error).message}`);
  }
  let pathHash = '';
  try {
    pathHash = storePathHash(narInfo.storePath);
  } catch {
    // reported below
  }
  if (pathHash !== hash) throw new InvalidLegacyNarInfo(`${hash}.narinfo is for another store path (${narInfo.storePath})`);
  const name = /^nar\/([^/]+)$/.exec(narInfo.url)?.[1];
  if (!name || !NAR_FILE_NAME.test(name)) {
    throw new InvalidLegacyNarInfo(`${hash}.narinfo has a NAR URL ncps cannot serve: ${narInfo.url}`);
  }
  return narInfo;
}

/**
 * Whether storage still holds legacy narinfo files that can be migrated. Files that never can
 * (unparseable, for another path, a NAR URL ncps cannot serve) are moved to the quarantine on the
 * way, reported through `onQuarantined`: left in place, they would count as pending forever.
 */
export async function migratableLegacyNarInfosLeft(
  storage: Storage,
  onQuarantined: (hash: string, reason: string, movedTo: string | undefined) => void,
  options: { dryRun?: boolean } = {},
): Promise<boolean> {
  for await (const hash of storage.listLegacyNarInfos()) {
    const text = await storage.getLegacyNarInfo(hash);
    if (text === undefined) continue; // migrated meanwhile
    try {
      checkLegacyNarInfo(hash, text);
      return true;
    } catch (error) {
      if (!(error instanceof InvalidLegacyNarInfo)) throw error;
      onQuarantined(hash, error.message, options.dryRun ? undefined : await storage.quarantineLegacyNarInfo(hash));
    }
  }
  return false;
}

/** Whether storage holds any legacy narinfo at all (so the server can skip looking on every miss). */
export async function hasLegacyNarInfos(storage: Storage): Promise<boolean> {
  for await (const _hash of storage.listLegacyNarInfos()) return true;
  return false;
}
