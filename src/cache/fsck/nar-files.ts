// fsck of the NARs: every NAR record against storage (there, with the recorded size, counted as
// stored, used by a narinfo), every NAR file in storage against the records (the orphan sweep's
// rule), and with --verify-content every stored NAR's bytes against its FileHash and, decompressed,
// its NarHash. Verified NARs get a verified time, so --verified-since can skip them next time.

import type { NarFileEntry } from '../../db/database';
import { narFileLockKey, orphanAges, unrecordedFileAge } from '../orphans';
import { downloadLockKey } from '../cache';
import { NAR_FILE_NAME } from '../../nix/file-names';
import { DecompressorUnavailable, hashStoredNar } from '../nar-hash';
import { NixHash, isKnownCompression } from '../../nix';
import type { StoredFileInfo } from '../../storage/storage';
import { PAGE, quarantineNar, removeNarRecords, type FsckContext } from './context';

export interface NarCheckOptions {
  verifyContent: boolean;
  /** Skip the content check of NARs verified less than this long ago (0: check all). */
  verifiedSinceMs: number;
  /** Storage still holds narinfo files of an older ncps: their NARs have no record yet. */
  legacyNarInfos: boolean;
}

/** NARs hashed at once: each also runs a decompressor, and the machine may be serving. */
const VERIFY_CONCURRENCY = 2;

/** The size a NAR file must have, when the record says. */
function expectedSize(record: NarFileEntry): number | undefined {
  return record.fileSize ?? (record.compression === 'none' ? record.narSize : undefined);
}

export async function checkNarFiles(ctx: FsckContext, options: NarCheckOptions): Promise<void> {
  const inStorage = await walkStorage(ctx);
  const toVerify = await checkRecords(ctx, inStorage, options);
  await checkUnrecorded(ctx, inStorage, options);
  if (options.verifyContent) await verifyContents(ctx, toVerify);
}

async function walkStorage(ctx: FsckContext): Promise<Map<string, StoredFileInfo>> {
  const files = new Map<string, StoredFileInfo>();
  const progress = ctx.progress.phase('looking at NAR files in storage', undefined);
  try {
    for await (const file of ctx.storage.listNars()) {
      files.set(file.name, file);
      progress.tick();
    }
  } finally {
    progress.end();
  }
  ctx.counts.narFilesInStorage = files.size;
  return files;
}

/** Checks each record against storage; returns the NARs whose bytes are due for verification. */
async function checkRecords(ctx: FsckContext, inStorage: Map<string, StoredFileInfo>, options: NarCheckOptions): Promise<NarFileEntry[]> {
  const { db, storage } = ctx;
  const toVerify: NarFileEntry[] = [];
  const progress = ctx.progress.phase('checking NAR records', (await db.recordCounts()).narFiles);
  try {
    for (let after = 0; ; ) {
      const page = await db.narFilePage(after, PAGE);
      if (page.length === 0) break;
      after = page.at(-1)!.id;
      for (const record of page) {
        progress.tick();
        ctx.counts.narRecords++;
        const file = inStorage.get(record.name);
        inStorage.delete(record.name); // what is left afterwards has no record
        const { name } = record;
        const locks = [downloadLockKey(name), narFileLockKey(name)];

        if (record.narInfoCount === 0) {
          ctx.found({
            kind: 'nar-record-unused',
            subject: name,
            bytes: file?.size ?? 0,
            locks: [narFileLockKey(name)],
            recheck: async () => (await db.narFilePage(record.id - 1, 1)).some((r) => r.id === record.id && r.narInfoCount === 0),
            repair: async () => {
              const removed = await db.deleteNarFileIfUnused(name);
              if (removed) await storage.deleteNar(name);
              return { removed: Boolean(removed) };
            },
          });
          continue;
        }

        if (!NAR_FILE_NAME.test(name)) {
          // Never written by ncps (which serves no such name): storage is not touched for it.
          ctx.found({
            kind: 'nar-missing',
            subject: name,
            bytes: 0,
            detail: 'not a NAR file name ncps serves',
            locks,
            recheck: async () => (await db.getNarFile(name)) !== undefined,
            repair: () => removeNarRecords(ctx, name),
          });
          continue;
        }

        if (!file) {
          // Not stored yet and fetchable from upstream is normal: the NAR is downloaded on demand.
          if (record.storedAt === undefined && record.upstreamUrl) continue;
          ctx.found({
            kind: 'nar-missing',
            subject: name,
            bytes: record.fileSize ?? 0,
            ...(record.storedAt === undefined ? { detail: 'never stored, and no upstream to fetch it from' } : {}),
            locks,
            recheck: async () => {
              const now = await db.getNarFile(name);
              if (!now || (now.storedAt === undefined && now.upstreamUrl)) return false;
              return (await storage.statNar(name)) === undefined;
            },
            repair: () => removeNarRecords(ctx, name),
          });
          continue;
        }

        const expected = expectedSize(record);
        if (expected !== undefined && file.size !== expected) {
          ctx.found({
            kind: 'nar-size',
            subject: name,
            bytes: file.size,
            detail: `${file.size} bytes, recorded ${expected}`,
            locks,
            recheck: async () => (await storage.statNar(name)) === file.size && (await db.getNarFile(name)) !== undefined,
            repair: () => quarantineNar(ctx, name),
          });
          continue;
        }

        if (record.storedAt === undefined) {
          // Committed to storage, but the crash (or the older ncps) never recorded it: the size
          // limit does not count it.
          ctx.found({
            kind: 'nar-unmarked',
            subject: name,
            bytes: file.size,
            locks,
            recheck: async () => (await db.getNarFile(name))?.storedAt === undefined && (await storage.statNar(name)) === file.size,
            repair: async () => ({ counted: await db.markNarFileStored(name, file.size) }),
          });
        }

        if (options.verifyContent) {
          const fresh = options.verifiedSinceMs > 0 && record.verifiedAt !== undefined && record.verifiedAt > ctx.now - options.verifiedSinceMs;
          if (fresh) ctx.counts.narsRecentlyVerified++;
          else toVerify.push({ ...record, fileSize: file.size });
        }
      }
    }
  } finally {
    progress.end();
  }
  return toVerify;
}

/** NAR files no record needs, judged by the orphan sweep's rule (old enough, younger than the database). */
async function checkUnrecorded(ctx: FsckContext, inStorage: Map<string, StoredFileInfo>, options: NarCheckOptions): Promise<void> {
  const { db, storage } = ctx;
  if (inStorage.size === 0) return;
  if (options.legacyNarInfos) {
    ctx.notes.push(
      `${inStorage.size} NAR files without a record were not judged: storage still holds narinfo files of an older ncps (run ncps migrate-narinfo)`,
    );
    return;
  }
  const ages = await orphanAges(db, ctx.now);
  const files = [...inStorage.values()];
  for (let i = 0; i < files.length; i += PAGE) {
    const batch = files.slice(i, i + PAGE);
    // A record may have appeared since the walk (a download committed meanwhile).
    const known = await db.knownNarFiles(batch.map((f) => f.name));
    for (const file of batch) {
      if (known.has(file.name)) continue;
      const age = unrecordedFileAge(file.modifiedAt, ages);
      if (age === 'young') {
        ctx.counts.unrecordedYoung++;
        continue;
      }
      if (age === 'older-than-database') {
        ctx.counts.unrecordedOlderThanDatabase++;
        continue;
      }
      ctx.found({
        kind: 'nar-unrecorded',
        subject: file.name,
        bytes: file.size,
        // The lock a narinfo upload holds while it checks and records its NAR (as the sweep does).
        locks: [narFileLockKey(file.name)],
        recheck: async () => (await db.knownNarFiles([file.name])).size === 0 && (await storage.statNar(file.name)) !== undefined,
        repair: async () => {
          await storage.deleteNar(file.name);
          return {};
        },
      });
    }
  }
}

type Verdict = { status: 'ok' } | { status: 'gone' } | { status: 'mismatch'; detail: string } | { status: 'unverifiable'; detail: string };

/** Reads a stored NAR and compares its bytes with the record. */
export async function verifyNarContent(ctx: FsckContext, record: NarFileEntry): Promise<Verdict> {
  let fileHash: NixHash | undefined;
  let narHash: NixHash;
  try {
    fileHash = record.fileHash ? NixHash.parse(record.fileHash) : undefined;
    narHash = NixHash.parse(record.narHash);
  } catch (error) {
    return { status: 'unverifiable', detail: `recorded hash unreadable: ${(error as Error).message}` };
  }
  if (!isKnownCompression(record.compression)) return { status: 'unverifiable', detail: `unknown compression ${record.compression}` };
  const stored = await ctx.storage.getNar(record.name);
  if (!stored) return { status: 'gone' };
  let hashes;
  try {
    hashes = await hashStoredNar(stored.stream, record.compression, { file: fileHash?.algorithm ?? 'sha256', nar: narHash.algorithm });
  } catch (error) {
    stored.stream.destroy();
    if (error instanceof DecompressorUnavailable) return { status: 'unverifiable', detail: error.message };
    throw error;
  }
  const wrong: string[] = [];
  const size = expectedSize(record);
  if (size !== undefined && hashes.file.size !== size) wrong.push(`FileSize (${hashes.file.size} bytes, recorded ${size})`);
  if (fileHash && !hashes.file.digest.equals(fileHash.digest)) wrong.push('FileHash');
  if (!hashes.nar) wrong.push(`does not decompress (${hashes.decodeError})`);
  else {
    if (!hashes.nar.digest.equals(narHash.digest)) wrong.push('NarHash');
    if (hashes.nar.size !== record.narSize) wrong.push(`NarSize (${hashes.nar.size}, recorded ${record.narSize})`);
  }
  return wrong.length === 0 ? { status: 'ok' } : { status: 'mismatch', detail: wrong.join(', ') };
}

async function verifyContents(ctx: FsckContext, records: NarFileEntry[]): Promise<void> {
  const { db, storage, logger } = ctx;
  const progress = ctx.progress.phase('verifying NAR contents', records.length);
  let next = 0;
  const worker = async () => {
    while (next < records.length) {
      const record = records[next++]!;
      const { name } = record;
      const verdict = await verifyNarContent(ctx, record).catch((error: Error): Verdict => ({ status: 'unverifiable', detail: error.message }));
      progress.tick();
      if (verdict.status === 'gone') continue; // removed meanwhile (evicted, deleted)
      if (verdict.status === 'ok') {
        ctx.counts.narsVerified++;
        await db.markNarFileVerified(name, Date.now());
        continue;
      }
      if (verdict.status === 'unverifiable') {
        logger.warn({ nar: name, err: verdict.detail }, 'fsck: could not verify a NAR');
        ctx.found({ kind: 'nar-unverifiable', subject: name, bytes: record.fileSize ?? 0, detail: verdict.detail, locks: [], recheck: async () => true });
        continue;
      }
      ctx.counts.narsVerified++;
      ctx.found({
        kind: 'nar-content',
        subject: name,
        bytes: record.fileSize ?? 0,
        detail: verdict.detail,
        locks: [downloadLockKey(name), narFileLockKey(name)],
        // Hashed once more: a NAR replaced meanwhile (deleted and fetched again) is fine now.
        recheck: async () => (await verifyNarContent(ctx, record)).status === 'mismatch',
        repair: async () => {
          if ((await storage.statNar(name)) === undefined) return { quarantinedAs: null, narinfos: (await removeNarRecords(ctx, name)).narinfos };
          return quarantineNar(ctx, name);
        },
      });
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(VERIFY_CONCURRENCY, records.length) }, worker));
  } finally {
    progress.end();
  }
}
