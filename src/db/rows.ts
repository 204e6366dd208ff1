// Rows as both engines return them, and their conversion to the cache's types (and back, for what
// both write). The SQL differs per engine; the shape of what comes back does not (references and
// signatures arrive as arrays).

import { NixHash, parseCompression, type NarInfo } from '../nix';
import type { CachedPath, NarFileEntry, NarFileRecord, NarInfoEntry, RemovedNarFile, ServerLease } from './database';

export interface NarInfoRow {
  store_path: string;
  url: string;
  compression: string | null;
  file_hash: string | null;
  file_size: number | null;
  nar_hash: string;
  nar_size: number;
  deriver: string | null;
  system: string | null;
  ca: string | null;
  extra_fields: string | null;
  refs: string[];
  sigs: string[];
}

export interface NarFileRow {
  name: string;
  compression: string;
  file_hash: string | null;
  file_size: number | null;
  nar_hash: string;
  nar_size: number;
  upstream_url: string | null;
  stored_at: number | null;
}

export function narInfoFromRow(row: NarInfoRow): NarInfo {
  const narInfo: NarInfo = {
    storePath: row.store_path,
    url: row.url,
    // NULL: the narinfo had no Compression line (which means bzip2), kept so it formats the same.
    compression: parseCompression(row.compression ?? undefined),
    compressionGiven: row.compression !== null,
    narHash: NixHash.parse(row.nar_hash),
    narSize: row.nar_size,
    references: row.refs,
    sigs: row.sigs,
    extra: row.extra_fields ? (JSON.parse(row.extra_fields) as Array<[string, string]>) : [],
  };
  if (row.file_hash !== null) narInfo.fileHash = NixHash.parse(row.file_hash);
  if (row.file_size !== null) narInfo.fileSize = row.file_size;
  if (row.deriver !== null) narInfo.deriver = row.deriver;
  if (row.system !== null) narInfo.system = row.system;
  if (row.ca !== null) narInfo.ca = row.ca;
  return narInfo;
}

export function narFileFromRow(row: NarFileRow): NarFileRecord {
  return {
    name: row.name,
    compression: row.compression,
    fileHash: row.file_hash ?? undefined,
    fileSize: row.file_size ?? undefined,
    narHash: row.nar_hash,
    narSize: row.nar_size,
    upstreamUrl: row.upstream_url ?? undefined,
    storedAt: row.stored_at ?? undefined,
  };
}

// The other way round: the column values both engines write (SQLite by name, PostgreSQL in
// column order), so a record is stored by the same rules it is read back by above.

/** A narinfo's columns store_path … extra_fields: NULL compression when the narinfo had no Compression line. */
export function narInfoColumns(narInfo: NarInfo) {
  return {
    storePath: narInfo.storePath,
    url: narInfo.url,
    compression: narInfo.compressionGiven ? narInfo.compression : null,
    fileHash: narInfo.fileHash?.toNix32() ?? null,
    fileSize: narInfo.fileSize ?? null,
    narHash: narInfo.narHash.toNix32(),
    narSize: narInfo.narSize,
    deriver: narInfo.deriver ?? null,
    system: narInfo.system ?? null,
    ca: narInfo.ca ?? null,
    extraFields: narInfo.extra.length > 0 ? JSON.stringify(narInfo.extra) : null,
  };
}

/** A NAR file's columns name … upstream_url (stored_at is written only where a record is imported). */
export function narFileColumns(narFile: NarFileRecord) {
  return {
    name: narFile.name,
    compression: narFile.compression,
    fileHash: narFile.fileHash ?? null,
    fileSize: narFile.fileSize ?? null,
    narHash: narFile.narHash,
    narSize: narFile.narSize,
    upstreamUrl: narFile.upstreamUrl ?? null,
  };
}

/** A narinfo row as fsck pages through them. */
export interface NarInfoEntryRow extends NarInfoRow {
  id: number;
  hash: string;
  nar_file_name: string | null;
}

export function narInfoEntryFromRow(row: NarInfoEntryRow): NarInfoEntry {
  return { id: Number(row.id), hash: row.hash, narInfo: narInfoFromRow(row), narFileName: row.nar_file_name ?? undefined };
}

export interface NarFileEntryRow extends NarFileRow {
  id: number;
  verified_at: number | null;
  narinfo_count: number;
}

export function narFileEntryFromRow(row: NarFileEntryRow): NarFileEntry {
  return {
    ...narFileFromRow(row),
    id: Number(row.id),
    narInfoCount: Number(row.narinfo_count),
    ...(row.verified_at !== null ? { verifiedAt: Number(row.verified_at) } : {}),
  };
}

/** A row of `ncps list`'s query; the flags are 0/1 on SQLite and booleans on PostgreSQL. */
export interface CachedPathRow {
  hash: string;
  store_path: string;
  url: string;
  compression: string | null;
  nar_size: number;
  file_size: number | null;
  last_accessed_at: number;
  pinned: number | boolean;
  pinned_directly: number | boolean;
  nar_stored: number | boolean | null;
}

const isSet = (flag: number | boolean): boolean => flag === true || Number(flag) === 1;

export function cachedPathFromRow(row: CachedPathRow): CachedPath {
  return {
    hash: row.hash,
    storePath: row.store_path,
    url: row.url,
    // No Compression line means bzip2.
    compression: row.compression ?? 'bzip2',
    narSize: Number(row.nar_size),
    fileSize: row.file_size === null ? undefined : Number(row.file_size),
    lastAccessedAt: Number(row.last_accessed_at),
    pinned: isSet(row.pinned),
    pinnedDirectly: isSet(row.pinned_directly),
    narStored: row.nar_stored === null ? undefined : isSet(row.nar_stored),
  };
}

/** A NAR file record just deleted: its size counts as freed only if its bytes were stored. */
export interface RemovedNarFileRow {
  name: string;
  size: number | null;
  stored_at: number | null;
}

export function removedNarFileFromRow(row: RemovedNarFileRow): RemovedNarFile {
  return { name: row.name, size: row.stored_at === null ? 0 : (row.size ?? 0) };
}

export interface LeaseRow {
  instance_id: string;
  hostname: string;
  pid: number;
  started_at: number;
  heartbeat_at: number;
}

export function leaseFromRow(row: LeaseRow): ServerLease {
  return {
    instanceId: row.instance_id,
    hostname: row.hostname,
    pid: row.pid,
    startedAt: row.started_at,
    heartbeatAt: row.heartbeat_at,
  };
}
