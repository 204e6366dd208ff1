// The Database seam: everything the cache core needs from metadata storage. SQLite implements it
// for a single instance; PostgreSQL will implement it for several instances sharing one database.

import type { MigrateOptions, SchemaStatus } from './schema';
import type { NarInfo } from '../nix';

/** A NAR file as the cache knows it: where it lives in storage and where it came from. */
export interface NarFileRecord {
  /** File name under nar/, e.g. `<filehash>.nar.xz`; also the storage key. */
  name: string;
  compression: string;
  fileHash?: string;
  fileSize?: number;
  narHash: string;
  narSize: number;
  /** Absolute URL the bytes are fetched from on a miss, when known. */
  upstreamUrl?: string;
  /** Set once the bytes were verified and committed to storage. */
  storedAt?: number;
}

export interface Database {
  /** Brings the schema up to date; returns the versions applied (or that would be, when dry). */
  migrate(options?: MigrateOptions): Promise<number[]>;
  /** Which migrations are applied and which are pending, without changing anything. */
  schemaStatus?(): Promise<SchemaStatus>;
  /** Where the copy taken before the last migrate() run went, for engines that take one (SQLite). */
  readonly lastBackup?: string | undefined;
  /** The narinfo for a store path hash, exactly as it is served (signatures included). */
  getNarInfo(hash: string): Promise<NarInfo | undefined>;
  /**
   * Inserts or replaces a narinfo together with the NAR file it points to, atomically. When a
   * replaced narinfo pointed at another NAR file that nothing references any more, that file's
   * record is deleted too and returned, for the caller to remove from storage.
   */
  putNarInfo(hash: string, narInfo: NarInfo, narFile: NarFileRecord): Promise<RemovedNarFile[]>;
  getNarFile(name: string): Promise<NarFileRecord | undefined>;
  /**
   * Records that a NAR's bytes are in storage (size as written). False when no record exists any
   * more (deleted or evicted while it downloaded): the caller then removes the bytes again.
   */
  markNarFileStored(name: string, size: number): Promise<boolean>;
  /** Notes that these narinfos were served, for least-recently-used eviction. */
  touchNarInfos(hashes: readonly string[], at: number): Promise<void>;
  /** Notes that these NAR files were served (their narinfos count as used). */
  touchNarFiles(names: readonly string[], at: number): Promise<void>;
  /**
   * Deletes a narinfo. NAR files no longer referenced by any narinfo are deleted from the
   * database too and returned, for the caller to remove from storage afterwards.
   */
  deleteNarInfo(hash: string): Promise<{ deleted: boolean; orphanedNarFiles: RemovedNarFile[] }>;
  /** Deletes a NAR file's record and every narinfo pointing at it; returns those narinfo hashes. */
  deleteNarFile(name: string): Promise<string[]>;
  /** When the schema was first migrated (ms since the epoch): no file older than that was recorded here. */
  createdAt(): Promise<number | undefined>;
  /** Which of these NAR file names have a record (stored, or still downloading). */
  knownNarFiles(names: readonly string[]): Promise<Set<string>>;
  /** Which of these store path hashes have a narinfo. */
  knownNarInfos(hashes: readonly string[]): Promise<Set<string>>;
  /** Records a small file kept beside the NARs (replacing an older record of it). */
  putAuxFile(file: AuxFileRecord): Promise<void>;
  /** Notes that these small files were served. */
  touchAuxFiles(files: readonly AuxFileKey[], at: number): Promise<void>;
  deleteAuxFile(file: AuxFileKey): Promise<void>;
  /** Small files by least recent use (listings of pinned closures left out), with when they were last used. */
  leastRecentlyUsedAuxFiles(limit: number): Promise<Array<AuxFileRecord & { lastAccessedAt: number }>>;
  /** Narinfos by least recent use (pinned closures left out), with when they were last used. */
  leastRecentlyUsedNarInfos(limit: number): Promise<Array<{ hash: string; lastAccessedAt: number }>>;
  /** Narinfos by least recent use, leaving out pinned closures. */
  leastRecentlyUsed(limit: number): Promise<string[]>;
  storeStats(): Promise<StoreStats>;
  /** Fails, saying why, when the database cannot be read and written right now (for /readyz). */
  checkWritable(): Promise<void>;
  addPin(hash: string, at: number): Promise<void>;
  removePin(hash: string): Promise<boolean>;
  listPins(): Promise<PinRecord[]>;
  /** Records that a server is alive (insert or refresh its lease). */
  renewLease(lease: ServerLease): Promise<void>;
  removeLease(instanceId: string): Promise<void>;
  /** Leases renewed at or after `since`. */
  liveLeases(since: number): Promise<ServerLease[]>;
  // What `ncps fsck` walks and repairs: every record, page by page (ids ascending).
  /** Narinfos with an id above `afterId`, each with the name of the NAR record it points at. */
  narInfoPage(afterId: number, limit: number): Promise<NarInfoEntry[]>;
  /** NAR records with an id above `afterId`, with how many narinfos use each. */
  narFilePage(afterId: number, limit: number): Promise<NarFileEntry[]>;
  /** Small-file records after `after` in (kind, name) order. */
  auxFilePage(after: AuxFileKey | undefined, limit: number): Promise<AuxFileRecord[]>;
  /** How many records of each kind there are (for progress). */
  recordCounts(): Promise<{ narInfos: number; narFiles: number; auxFiles: number }>;
  /**
   * The cached paths `ncps list` shows, in pages of at most `pageSize`, from one read of one
   * snapshot (a statement stepped through on SQLite, a cursor in a read-only transaction on
   * PostgreSQL): the orders by size and name have no index, so paging with LIMIT would sort the
   * whole table again for every page; this sorts once and never holds more than a page. Nothing
   * else may use this Database until the iteration has ended (SQLite's connection is busy).
   */
  cachedPaths(query: CachedPathQuery, pageSize: number): AsyncIterable<CachedPath[]>;
  /** Records that a NAR's bytes were read back and matched its hashes. */
  markNarFileVerified(name: string, at: number): Promise<void>;
  /** Replaces a narinfo's signatures (in this order); false when there is no such narinfo. */
  setNarInfoSignatures(hash: string, sigs: readonly string[]): Promise<boolean>;
  /** Deletes a NAR record unless a narinfo uses it; returns it when deleted. */
  deleteNarFileIfUnused(name: string): Promise<RemovedNarFile | undefined>;
  getSetting(key: string): Promise<string | undefined>;
  /** Stores a setting unless one exists; returns whichever value is stored (first writer wins). */
  putSettingIfAbsent(key: string, value: string): Promise<string>;
  /** Stores a setting, replacing any value it had. */
  putSetting(key: string, value: string): Promise<void>;
  /**
   * Records taken over from another cache's database (the Go ncps), in one transaction, with their
   * own times: narinfos whose hash is already here are left as they are, a NAR record whose name
   * is already here is shared. Returns how many narinfos were inserted.
   */
  importNarInfos(entries: readonly ImportedNarInfo[]): Promise<number>;
  close(): Promise<void>;
}

/** A narinfo brought in from elsewhere, with the NAR record it points at and when both were used. */
export interface ImportedNarInfo {
  hash: string;
  narInfo: NarInfo;
  /** `storedAt` set when the bytes are in storage (they always are for a takeover). */
  narFile: NarFileRecord;
  createdAt: number;
  lastAccessedAt: number;
  narFileCreatedAt: number;
  narFileLastAccessedAt: number;
}

/** How `ncps list` orders the cached paths (the values of its --sort). */
export type CachedPathOrder = 'accessed' | 'size' | 'path';

export interface CachedPathQuery {
  /**
   * accessed: most recently used first; size: largest NAR first (both newest record first on a
   * tie); path: by name, the part after the hash, in byte order (then by hash).
   */
  order: CachedPathOrder;
  /** Only the paths a pin keeps: pinned ones and those in a pinned path's closure. */
  pinnedOnly?: boolean;
  /** Only store paths containing this text (case-sensitive). */
  match?: string;
  /** At most this many; all when undefined. */
  limit?: number;
}

/** A narinfo as `ncps list` shows it. */
export interface CachedPath {
  hash: string;
  storePath: string;
  url: string;
  /** The narinfo's Compression; bzip2 when it has none (what the protocol says that means). */
  compression: string;
  narSize: number;
  /** The narinfo's FileSize, else the size of the stored file; undefined when neither is known. */
  fileSize: number | undefined;
  lastAccessedAt: number;
  /** Kept by a pin: pinned itself or referenced (transitively) by a pinned path; LRU never evicts it. */
  pinned: boolean;
  /** Pinned itself (POST /pin). */
  pinnedDirectly: boolean;
  /** Whether the NAR's bytes are in storage; undefined when the narinfo points at no NAR record. */
  narStored: boolean | undefined;
}

/** A narinfo as fsck reads it: row id (for paging), hash, contents and the NAR record it names. */
export interface NarInfoEntry {
  id: number;
  hash: string;
  narInfo: NarInfo;
  /** Name of the NAR record the narinfo points at; undefined when it points at none. */
  narFileName: string | undefined;
}

/** A NAR record as fsck reads it. */
export interface NarFileEntry extends NarFileRecord {
  id: number;
  /** When its bytes last matched FileHash and NarHash (fsck --verify-content). */
  verifiedAt?: number;
  /** Narinfos pointing at it. */
  narInfoCount: number;
}

export interface RemovedNarFile {
  name: string;
  size: number;
}

export interface StoreStats {
  narInfoCount: number;
  narFileCount: number;
  /** Sum of the sizes of NAR files in storage. */
  storedBytes: number;
  /** Sum of the sizes of the recorded small files (listings, logs, realisations, build traces). */
  auxBytes: number;
}

/** A small file kept beside the NARs, by its storage kind and name. */
export interface AuxFileKey {
  kind: string;
  name: string;
}

export interface AuxFileRecord extends AuxFileKey {
  size: number;
}

export interface PinRecord {
  hash: string;
  storePath: string | undefined;
  createdAt: number;
}

export interface ServerLease {
  instanceId: string;
  hostname: string;
  pid: number;
  startedAt: number;
  heartbeatAt: number;
}

export class UnsupportedDatabaseError extends Error {}

/**
 * The database refused a write because it cannot take writes at all (a read-only SQLite file or
 * file system, a PostgreSQL standby or read-only transaction), not because of what was written.
 */
export function isReadOnlyDatabase(error: unknown): boolean {
  const code = String((error as { code?: unknown } | undefined)?.code ?? '');
  return code.startsWith('SQLITE_READONLY') || code === 'SQLITE_CANTOPEN' || code.startsWith('SQLITE_IOERR') || code === '25006';
}
