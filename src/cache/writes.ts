// The paths that change the cache: uploads (`nix copy --to http://…/upload`), deletes and pins.
// Uploads follow Nix's order: the NAR first, checked against its own file name (nix copy names NAR
// files by the sha256 of their bytes), then the narinfo, checked against the stored NAR.

import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isReadOnlyDatabase, type Database, type PinRecord } from '../db/database';
import {
  encodeNix32,
  formatMismatch,
  MAGIC_BYTES,
  type Compression,
  narFileExtension,
  narInfoVerifies,
  parseNarInfo,
  signNarInfo,
  storePathHash,
  NarInfoError,
  RealisationError,
  BuildTraceError,
  buildTraceVerifies,
  formatBuildTraceValue,
  parseBuildTraceValue,
  signBuildTrace,
  type BuildTraceKey,
  type BuildTraceValue,
  formatRealisation,
  parseRealisation,
  realisationVerifies,
  signRealisation,
  type NarInfo,
  type Realisation,
  type PublicKey,
  type SecretKey,
} from '../nix';
import type { AuxKind, Storage } from '../storage/storage';
import type { Logger } from '../telemetry/logger';
import { buildTraceFileName, realisationFileName, type Cache } from './cache';
import { withLock, type Locker } from '../lock/locker';
import { checkNarFileName, HASH_NAMED_NAR } from '../nix/file-names';
import { DecompressorUnavailable, hashStoredNar, NarHasher } from './nar-hash';
import { narFileLockKey } from './orphans';
import { isNoSpace } from './download';
import type { StorageSpace } from './storage-space';
import { holdTempFile } from '../storage/temp-files';

/** A build trace entry as kept in storage; one that no longer parses is simply replaced. */
function parseKeptBuildTrace(data: Buffer): BuildTraceValue | undefined {
  try {
    return parseBuildTraceValue(data.toString('utf8'));
  } catch {
    return undefined;
  }
}

/** A request the cache refuses; the status tells the client why. */
export class RejectedWrite extends Error {
  constructor(
    readonly statusCode: 400 | 403 | 404 | 409 | 413 | 503 | 507,
    message: string,
  ) {
    super(message);
  }
}

export interface CacheWritesOptions {
  db: Database;
  storage: Storage;
  cache: Cache;
  logger: Logger;
  signingKey: SecretKey | undefined;
  /** When set, uploaded narinfos must verify against one of these keys. */
  requiredUploadKeys: readonly PublicKey[] | undefined;
  maxNarInfoBytes?: number;
  locker: Locker;
  lockTtlMs: number;
  /** Told when a write fails for lack of space (storage is then "full"). */
  space?: StorageSpace;
}

/**
 * What an upload answers when it cannot be kept: 507 when storage has no room, 503 when the
 * database takes no writes; nothing is kept either way. Other errors pass through.
 */
function insufficientStorage(error: unknown, space: StorageSpace | undefined): never {
  if (isReadOnlyDatabase(error)) throw new RejectedWrite(503, 'the database refuses writes (read-only?): uploads cannot be recorded right now');
  if (!isNoSpace(error)) throw error;
  space?.markFull((error as Error).message);
  throw new RejectedWrite(507, 'insufficient storage: ncps cannot keep uploads right now');
}

/** Uploaded NARs whose decompressed hash is remembered for their narinfo (oldest dropped first). */
const MAX_REMEMBERED_UPLOADS = 10_000;

export class CacheWrites {
  private readonly uploadedContents = new Map<string, { digest: Buffer; size: number }>();

  constructor(private readonly options: CacheWritesOptions) {}

  /**
   * Stores an uploaded NAR once its bytes hash to the name it was uploaded under, are the format
   * its extension promises and decompress. What they decompress to (the NarHash and NarSize an
   * uploaded narinfo must state) is remembered for the narinfo that follows.
   */
  async putNar(name: string, body: Readable): Promise<void> {
    const match = HASH_NAMED_NAR.exec(name);
    const check = checkNarFileName(name);
    if (!match || !check.ok) throw new RejectedWrite(400, 'uploaded NARs must be named <sha256 of the file, nix32>.nar[.ext]');
    const { storage } = this.options;
    const tempFile = path.join(storage.tempDir, `upload-${name}.${randomBytes(6).toString('hex')}.part`);
    const hasher = new NarHasher(check.compression);
    let head = Buffer.alloc(0);
    const releaseTempFile = holdTempFile(tempFile);
    try {
      await pipeline(
        body,
        new Transform({
          transform(chunk: Buffer, _encoding, callback) {
            if (head.length < MAGIC_BYTES) head = Buffer.concat([head, chunk.subarray(0, MAGIC_BYTES - head.length)]);
            hasher.update(chunk).then(() => callback(null, chunk), callback);
          },
        }),
        createWriteStream(tempFile, { flags: 'wx' }),
      );
      if (hasher.size === 0) throw new RejectedWrite(400, 'empty request body: nothing to store');
      const mismatch = formatMismatch(check.compression, head);
      if (mismatch) throw new RejectedWrite(400, `NAR ${name}: ${mismatch}`);
      const hashes = await hasher.finish();
      const actual = encodeNix32(hashes.file.digest);
      if (actual !== match[1]) {
        throw new RejectedWrite(400, `NAR content hashes to ${actual}, not to its file name`);
      }
      if (hashes.decodeError) throw new RejectedWrite(400, `NAR ${name} does not decompress as ${check.compression}: ${hashes.decodeError}`);
      await storage.putNarFromFile(name, tempFile);
      if (hashes.nar) this.rememberContents(name, hashes.nar);
    } catch (error) {
      hasher.abort();
      insufficientStorage(error, this.options.space);
    } finally {
      await rm(tempFile, { force: true });
      releaseTempFile();
    }
  }

  private rememberContents(name: string, contents: { digest: Buffer; size: number }): void {
    this.uploadedContents.delete(name);
    this.uploadedContents.set(name, contents);
    if (this.uploadedContents.size > MAX_REMEMBERED_UPLOADS) this.uploadedContents.delete(this.uploadedContents.keys().next().value!);
  }

  /**
   * What a stored NAR decompresses to (sha256): remembered from its upload, else read back from
   * storage (another instance took the upload, or this one restarted since).
   */
  private async contentsOf(name: string, compression: Compression): Promise<{ digest: Buffer; size: number }> {
    const remembered = this.uploadedContents.get(name);
    if (remembered) return remembered;
    const stored = await this.options.storage.getNar(name);
    if (!stored) throw new RejectedWrite(400, `upload nar/${name} before its narinfo`);
    let hashes;
    try {
      hashes = await hashStoredNar(stored.stream, compression, { file: 'sha256', nar: 'sha256' });
    } catch (error) {
      if (error instanceof DecompressorUnavailable) throw new Error(`cannot check the uploaded NAR ${name}: ${error.message}`);
      throw error;
    }
    if (!hashes.nar) throw new RejectedWrite(400, `NAR ${name} does not decompress as ${compression}: ${hashes.decodeError ?? 'unknown error'}`);
    return hashes.nar;
  }

  /** Stores an uploaded narinfo whose NAR is already stored and matches it. */
  async putNarInfo(hash: string, text: string): Promise<void> {
    const { db, storage, signingKey, requiredUploadKeys, cache, locker, lockTtlMs } = this.options;
    let narInfo: NarInfo;
    try {
      narInfo = parseNarInfo(text);
    } catch (error) {
      if (error instanceof NarInfoError) throw new RejectedWrite(400, `invalid narinfo: ${error.message}`);
      throw error;
    }
    if (storePathHash(narInfo.storePath) !== hash) {
      throw new RejectedWrite(400, `narinfo is for ${narInfo.storePath}, not for ${hash}`);
    }
    if (requiredUploadKeys && !narInfoVerifies(narInfo, requiredUploadKeys)) {
      throw new RejectedWrite(403, 'narinfo is not signed by a trusted upload key');
    }
    const name = /^nar\/([^/]+)$/.exec(narInfo.url)?.[1];
    const match = name ? HASH_NAMED_NAR.exec(name) : null;
    if (!name || !match || (match[2] ?? '') !== narFileExtension(narInfo.compression)) {
      throw new RejectedWrite(400, `narinfo URL must be nar/<file hash>.nar${narFileExtension(narInfo.compression)}`);
    }
    const nameHash = match[1]!;
    const fileHash = narInfo.fileHash ?? (narInfo.compression === 'none' ? narInfo.narHash : undefined);
    if (!fileHash || fileHash.algorithm !== 'sha256' || fileHash.nix32Digest() !== nameHash) {
      throw new RejectedWrite(400, 'narinfo FileHash does not match its NAR file name');
    }
    // Held while the NAR is checked and recorded: the orphan sweep takes the same lock before it
    // removes an unrecorded NAR, so it cannot remove this one between the check and the record.
    const orphaned = await withLock(locker, narFileLockKey(name), lockTtlMs, async () => {
      const size = await storage.statNar(name);
      if (size === undefined) throw new RejectedWrite(400, `upload ${narInfo.url} before its narinfo`);
      const expectedSize = narInfo.fileSize ?? (narInfo.compression === 'none' ? narInfo.narSize : undefined);
      if (expectedSize !== undefined && expectedSize !== size) {
        throw new RejectedWrite(400, `narinfo FileSize ${expectedSize} does not match the uploaded NAR (${size} bytes)`);
      }
      // What ncps signs must be true of the bytes it serves: NarHash and NarSize are checked
      // against the NAR decompressed, as Nix itself will check them.
      if (narInfo.narHash.algorithm !== 'sha256') throw new RejectedWrite(400, 'narinfo NarHash must be a sha256 hash');
      const contents = await this.contentsOf(name, narInfo.compression);
      if (contents.size !== narInfo.narSize || !contents.digest.equals(narInfo.narHash.digest)) {
        throw new RejectedWrite(
          400,
          `narinfo NarHash/NarSize (${narInfo.narHash.toNix32()}, ${narInfo.narSize}) do not match the uploaded NAR, which decompresses to sha256:${encodeNix32(contents.digest)}, ${contents.size} bytes`,
        );
      }
      const served = signingKey ? signNarInfo(narInfo, signingKey) : narInfo;
      try {
        const replaced = await db.putNarInfo(hash, served, {
          name,
          compression: served.compression,
          fileHash: fileHash.toNix32(),
          fileSize: size,
          narHash: served.narHash.toNix32(),
          narSize: served.narSize,
        });
        await db.markNarFileStored(name, size);
        return replaced;
      } catch (error) {
        return insufficientStorage(error, this.options.space);
      }
    });
    // A re-upload in another compression replaces the narinfo; its old NAR must not linger.
    for (const orphan of orphaned) await storage.deleteNar(orphan.name);
    cache.forget(hash);
    this.options.logger.info({ hash, storePath: narInfo.storePath }, 'narinfo uploaded');
  }

  /** Stores an uploaded NAR listing or build log. */
  async putAuxFile(kind: AuxKind, name: string, data: Buffer): Promise<void> {
    await this.options.cache.keepAuxFile(kind, name, data).catch((error: unknown) => insufficientStorage(error, this.options.space));
  }

  /** Stores an uploaded realisation: checked like an uploaded narinfo, then signed by us. */
  async putRealisation(id: string, text: string): Promise<void> {
    const { signingKey, requiredUploadKeys } = this.options;
    let realisation: Realisation;
    try {
      realisation = parseRealisation(text);
    } catch (error) {
      if (error instanceof RealisationError) throw new RejectedWrite(400, `invalid realisation: ${error.message}`);
      throw error;
    }
    if (realisation.id !== id) throw new RejectedWrite(400, `realisation is for ${realisation.id}, not for ${id}`);
    if (requiredUploadKeys && !realisationVerifies(realisation, requiredUploadKeys)) {
      throw new RejectedWrite(403, 'realisation is not signed by a trusted upload key');
    }
    const served = signingKey ? signRealisation(realisation, signingKey) : realisation;
    await this.options.cache
      .keepAuxFile('realisations', realisationFileName(id), Buffer.from(formatRealisation(served)))
      .catch((error: unknown) => insufficientStorage(error, this.options.space));
  }

  /**
   * Stores an uploaded build trace entry, checked and signed like a realisation. An entry already
   * kept for the same output path keeps its signatures; one for another output path is replaced
   * (the newest build wins, as with narinfos) and the replacement is logged.
   */
  async putBuildTrace(key: BuildTraceKey, text: string): Promise<void> {
    const { storage, signingKey, requiredUploadKeys, logger } = this.options;
    let value: BuildTraceValue;
    try {
      value = parseBuildTraceValue(text);
    } catch (error) {
      if (error instanceof BuildTraceError) throw new RejectedWrite(400, `invalid build trace entry: ${error.message}`);
      throw error;
    }
    if (requiredUploadKeys && !buildTraceVerifies(key, value, requiredUploadKeys)) {
      throw new RejectedWrite(403, 'build trace entry is not signed by a trusted upload key');
    }
    const name = buildTraceFileName(key);
    // Read, merge, write: one upload of an entry at a time, or concurrent signatures could be lost.
    await withLock(this.options.locker, `build-trace:${name}`, this.options.lockTtlMs, async () => {
      const previous = await storage.getAuxFile('build-trace-v2', name);
      const kept = previous && parseKeptBuildTrace(previous);
      if (kept) {
        if (kept.outPath === value.outPath) value = { ...value, signatures: [...new Set([...kept.signatures, ...value.signatures])] };
        else logger.warn({ drvPath: key.drvPath, output: key.outputName, was: kept.outPath, now: value.outPath }, 'build trace entry replaced by one for another output path');
      }
      const served = signingKey ? signBuildTrace(key, value, signingKey) : value;
      await this.options.cache
        .keepAuxFile('build-trace-v2', name, Buffer.from(formatBuildTraceValue(served)))
        .catch((error: unknown) => insufficientStorage(error, this.options.space));
    });
  }

  /** Deletes a narinfo, then (database first) any NAR file no narinfo needs any more. */
  async deleteNarInfo(hash: string): Promise<boolean> {
    const { deleted, orphanedNarFiles } = await this.options.db.deleteNarInfo(hash);
    this.options.cache.forget(hash);
    for (const file of orphanedNarFiles) await this.options.storage.deleteNar(file.name);
    await this.options.cache.dropAuxFile('ls', `${hash}.ls`);
    return deleted;
  }

  /** Deletes a NAR file and every narinfo that points at it, so none is left dangling. */
  async deleteNar(name: string): Promise<boolean> {
    const hashes = await this.options.db.deleteNarFile(name);
    for (const hash of hashes) {
      this.options.cache.forget(hash);
      await this.options.cache.dropAuxFile('ls', `${hash}.ls`);
    }
    const existed = (await this.options.storage.statNar(name)) !== undefined;
    await this.options.storage.deleteNar(name);
    return existed || hashes.length > 0;
  }

  /** Pins a path (fetching its narinfo from upstream when needed) so LRU keeps its closure. */
  async pin(hash: string): Promise<boolean> {
    const narInfo = await this.options.cache.getNarInfo(hash);
    if (!narInfo) return false;
    await this.options.db.addPin(hash, Date.now());
    return true;
  }

  unpin(hash: string): Promise<boolean> {
    return this.options.db.removePin(hash);
  }

  pins(): Promise<PinRecord[]> {
    return this.options.db.listPins();
  }
}
