// From the Go ncps's rows to our records: pure functions, no I/O (storage is asked through a
// lookup the caller passes in). What cannot be served faithfully is not mapped but skipped, with
// the reason the takeover report gives.

import type { ImportedNarInfo, NarFileRecord } from '../../db/database';
import {
  compressionFromExtension,
  isKnownCompression,
  formatBuildTraceValue,
  isDerivationBaseName,
  isOutputName,
  isStorePathBaseName,
  narFileExtension,
  NixHash,
  parseNarInfo,
  signFingerprint,
  buildTraceFingerprint,
  storePathHash,
  verifySignature,
  type Compression,
  type NarInfo,
  type SecretKey,
} from '../../nix';
import { NAR_FILE_NAME } from '../../nix/file-names';
import type { GoBuildTraceRow, GoNarFileRow, GoNarInfoRow, GoTime } from './source';

/** Why a record was not taken over (the report counts by reason). */
export class Skip {
  constructor(readonly reason: string, readonly detail = '') {}
}

/**
 * Milliseconds since the epoch of a time as a driver returns it: a Date, or the text Go's SQLite
 * driver writes (`2026-01-17 19:50:00.123456789+00:00`) or SQLite's CURRENT_TIMESTAMP
 * (`2026-01-17 19:50:00`, UTC). Undefined for NULL or anything unreadable.
 */
export function goTimeToMs(value: GoTime | undefined): number | undefined {
  if (value === null || value === undefined) return undefined;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? undefined : value.getTime();
  if (typeof value === 'number') return Number.isFinite(value) ? value : undefined;
  const m = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.(\d+))?\s*(Z|[+-]\d{2}:?\d{2})?(?:\s+\S+)?$/.exec(value.trim());
  if (!m) return undefined;
  const fraction = m[3] ? `.${m[3].slice(0, 3).padEnd(3, '0')}` : '';
  const zone = !m[4] || m[4] === 'Z' ? 'Z' : m[4].includes(':') ? m[4] : `${m[4].slice(0, 3)}:${m[4].slice(3)}`;
  const ms = Date.parse(`${m[1]}T${m[2]}${fraction}${zone}`);
  return Number.isNaN(ms) ? undefined : ms;
}

/**
 * The narinfo a Go row describes (v0.8+: the metadata columns), rebuilt as Nix writes it and
 * parsed by our own parser, so a row we would not accept from an upstream is not accepted here.
 */
export function narInfoFromGoRow(row: GoNarInfoRow): NarInfo {
  if (!row.url || !row.storePath || !row.narHash || !row.narSize) {
    throw new Skip('no narinfo metadata in the database (neither a file in storage)');
  }
  const lines = [`StorePath: ${row.storePath}`, `URL: ${row.url}`];
  if (row.compression) lines.push(`Compression: ${row.compression}`);
  if (row.fileHash) lines.push(`FileHash: ${row.fileHash}`);
  if (row.fileSize) lines.push(`FileSize: ${row.fileSize}`);
  lines.push(`NarHash: ${row.narHash}`, `NarSize: ${row.narSize}`);
  // The Go ncps keeps references and signatures as unordered rows; Nix writes references sorted.
  lines.push(`References: ${[...new Set(row.references)].sort().join(' ')}`);
  if (row.deriver) lines.push(`Deriver: ${row.deriver}`);
  if (row.system) lines.push(`System: ${row.system}`);
  for (const sig of row.signatures) lines.push(`Sig: ${sig}`);
  if (row.ca) lines.push(`CA: ${row.ca}`);
  return checkedNarInfo(row.hash, lines.map((l) => `${l}\n`).join(''));
}

/** A narinfo text (a row's, or a legacy file's) parsed and checked against the hash it is kept under. */
export function checkedNarInfo(hash: string, text: string): NarInfo {
  let narInfo: NarInfo;
  try {
    narInfo = parseNarInfo(text);
  } catch (error) {
    throw new Skip('not a valid narinfo', (error as Error).message);
  }
  let pathHash = '';
  try {
    pathHash = storePathHash(narInfo.storePath);
  } catch {
    // reported below
  }
  if (pathHash !== hash) throw new Skip('narinfo is for another store path', narInfo.storePath);
  if (narInfo.narHash.algorithm !== 'sha256') throw new Skip('not a valid narinfo', `NarHash is ${narInfo.narHash.algorithm}`);
  return narInfo;
}

/** Where a narinfo's NAR bytes are: a whole file in storage, CDC chunks, or nowhere. */
export type Backing =
  | { kind: 'file'; name: string; compression: Compression; size: number; narFile?: GoNarFileRow }
  | { kind: 'chunks'; narFile: GoNarFileRow };

/** The storage name a NAR URL means (`nar/<hash>.nar[.ext]`, nix-serve's `<hash>-<hash>` form normalised). */
export function narNameFromUrl(url: string): { hash: string; compression: Compression } | undefined {
  const file = url.split('?')[0]!.split('/').pop() ?? '';
  const m = /^(?:[0-9a-df-np-sv-z]{32}-)?([0-9a-df-np-sv-z]{52})\.nar(\.[a-z0-9]+)?$/.exec(file);
  const compression = m ? compressionFromExtension(m[2] ?? '') : undefined;
  return m && compression ? { hash: m[1]!, compression } : undefined;
}

/** A Go nar_files compression value as ours (`''` meant none in the oldest releases). */
export function goCompression(value: string): Compression | undefined {
  const c = value === '' ? 'none' : value;
  return isKnownCompression(c) ? c : undefined;
}

/**
 * Which stored bytes serve a narinfo. Tried in order: the file its URL names; the files of the NAR
 * records the Go ncps linked to it (those of its compression first); for uncompressed NARs the
 * `.nar.zst` / `.nar.xz` the Go ncps stores them as; then CDC chunks. `stored` gives a file's
 * size in storage, or undefined.
 */
export function resolveBacking(
  narInfo: NarInfo,
  narFiles: readonly GoNarFileRow[],
  stored: (name: string) => number | undefined,
): Backing {
  const candidates: Array<{ hash: string; compression: Compression; narFile?: GoNarFileRow }> = [];
  const fromUrl = narNameFromUrl(narInfo.url);
  if (fromUrl) candidates.push(fromUrl);
  const linked = [...narFiles].sort(
    (a, b) => Number(goCompression(b.compression) === narInfo.compression) - Number(goCompression(a.compression) === narInfo.compression),
  );
  for (const f of linked) {
    const compression = goCompression(f.compression);
    if (compression) candidates.push({ hash: f.hash, compression, narFile: f });
  }
  for (const c of [...candidates]) {
    if (c.compression === 'none') candidates.push({ ...c, compression: 'zstd' }, { ...c, compression: 'xz' });
  }
  for (const c of candidates) {
    const name = `${c.hash}.nar${narFileExtension(c.compression)}`;
    if (!NAR_FILE_NAME.test(name)) continue;
    const size = stored(name);
    const narFile = c.narFile ?? narFiles.find((f) => f.hash === c.hash);
    if (size !== undefined) return { kind: 'file', name, compression: c.compression, size, ...(narFile ? { narFile } : {}) };
  }
  const chunked = linked.find((f) => f.totalChunks > 0 && /^[0-9a-df-np-sv-z]{52}$/.test(f.hash));
  if (chunked) return { kind: 'chunks', narFile: chunked };
  throw new Skip('NAR not in storage (fetched from upstream again when asked for)', narInfo.url);
}

/** Times of a record, in milliseconds, with fallbacks for the NULLs older releases left. */
export interface RecordTimes {
  createdAt: number;
  lastAccessedAt: number;
}

export function recordTimes(createdAt: GoTime | undefined, lastAccessedAt: GoTime | undefined, now: number): RecordTimes {
  const created = goTimeToMs(createdAt) ?? now;
  return { createdAt: created, lastAccessedAt: goTimeToMs(lastAccessedAt) ?? created };
}

/**
 * Our records for a narinfo whose bytes are `backing` (a whole file; chunks are reassembled into
 * one first). The narinfo is pointed at that file: when it differs from what the narinfo said
 * (an uncompressed NAR the Go ncps keeps as .nar.zst, a reassembled one), URL, Compression,
 * FileHash and FileSize follow the file. Signatures do not cover those fields, so they still hold.
 */
export function importedNarInfo(
  hash: string,
  narInfo: NarInfo,
  backing: Extract<Backing, { kind: 'file' }> & { fileHash?: NixHash },
  times: { narInfo: RecordTimes; narFile: RecordTimes; storedAt: number },
): ImportedNarInfo {
  const same = backing.compression === narInfo.compression && narNameFromUrl(narInfo.url)?.hash === backing.name.replace(/\.nar.*$/, '');
  const served: NarInfo = {
    ...narInfo,
    url: `nar/${backing.name}`,
    compression: backing.compression,
    compressionGiven: narInfo.compressionGiven || backing.compression !== narInfo.compression,
    fileSize: backing.size,
  };
  const fileHash = backing.fileHash ?? (same ? narInfo.fileHash : undefined);
  if (fileHash) served.fileHash = fileHash;
  else delete served.fileHash;
  if (!same && !backing.fileHash && backing.compression === 'none') {
    // Uncompressed: the file is the NAR, so its hash is the NarHash.
    served.fileHash = narInfo.narHash;
  }
  const narFile: NarFileRecord = {
    name: backing.name,
    compression: backing.compression,
    fileSize: backing.size,
    narHash: narInfo.narHash.toNix32(),
    narSize: narInfo.narSize,
    storedAt: times.storedAt,
    ...(served.fileHash ? { fileHash: served.fileHash.toNix32() } : {}),
  };
  return {
    hash,
    narInfo: served,
    narFile,
    createdAt: times.narInfo.createdAt,
    lastAccessedAt: times.narInfo.lastAccessedAt,
    narFileCreatedAt: times.narFile.createdAt,
    narFileLastAccessedAt: times.narFile.lastAccessedAt,
  };
}

/** A build trace entry as the file this ncps serves (`build-trace-v2/<drv>/<output>.doi`). */
export function buildTraceFile(row: GoBuildTraceRow, signingKey?: SecretKey): { name: string; text: string } {
  const base = (p: string) => p.replace(/^\/nix\/store\//, '');
  const drvPath = base(row.drvPath);
  const outPath = base(row.outPath);
  if (!isDerivationBaseName(drvPath) || !isOutputName(row.outputName) || !isStorePathBaseName(outPath)) {
    throw new Skip('not a valid build trace entry', `${row.drvPath} ${row.outputName}`);
  }
  const key = { drvPath, outputName: row.outputName };
  const signatures = [...new Set(row.signatures.map(([name, sig]) => `${name}:${sig}`))];
  const value = { outPath, signatures };
  // Kept as they are; ours joins them when none of them verifies with our key, so clients that
  // trust it accept the entry (the Go ncps and Nix do not fingerprint entries alike).
  const fingerprint = buildTraceFingerprint(key, value);
  if (signingKey && !signatures.some((sig) => verifySignature(sig, fingerprint, [signingKey.publicKey]))) {
    value.signatures = [...signatures, signFingerprint(signingKey, fingerprint)];
  }
  return { name: `${drvPath}/${row.outputName}.doi`, text: formatBuildTraceValue(value) };
}
