// fsck of the small files kept beside the NARs (listings, build logs, realisations, build
// traces): each record against its file (there, of the recorded size; with --verify-content the
// JSON ones must parse), and the listings in storage against the records and the narinfos (a
// listing of a path that is not there is an orphan, by the sweep's rule).

import type { AuxFileRecord } from '../../db/database';
import type { AuxKind } from '../../storage/storage';
import { dropAuxFile } from '../aux-files';
import { LISTING_FILE_NAME } from '../../nix/file-names';
import { orphanAges, unrecordedFileAge } from '../orphans';
import { PAGE, type FsckContext } from './context';

export interface SmallFileCheckOptions {
  verifyContent: boolean;
  /** Storage still holds narinfo files of an older ncps: a listing's path may not be in the database yet. */
  legacyNarInfos: boolean;
}

/** Kinds kept as JSON documents. Build logs are text, stored as they came. */
const JSON_KINDS: ReadonlySet<string> = new Set(['ls', 'realisations', 'build-trace-v2']);

const KINDS: ReadonlySet<string> = new Set(['ls', 'log', 'realisations', 'build-trace-v2']);
const SEGMENT = /^[A-Za-z0-9+\-._?=!]+$/;

/** A name ncps could have stored (one or two plain segments): anything else is never looked up in storage. */
function storableName(kind: string, name: string): boolean {
  const segments = name.split('/');
  return KINDS.has(kind) && segments.length <= 2 && segments.every((s) => SEGMENT.test(s) && s !== '.' && s !== '..');
}

function parses(data: Buffer): boolean {
  try {
    JSON.parse(data.toString('utf8'));
    return true;
  } catch {
    return false;
  }
}

export async function checkSmallFiles(ctx: FsckContext, options: SmallFileCheckOptions): Promise<void> {
  const recordedListings = await checkRecords(ctx, options);
  await checkListings(ctx, recordedListings, options);
}

/** Checks each record; returns the names of the recorded listings. */
async function checkRecords(ctx: FsckContext, options: SmallFileCheckOptions): Promise<Set<string>> {
  const { db, storage } = ctx;
  const listings = new Set<string>();
  const progress = ctx.progress.phase('checking small files', (await db.recordCounts()).auxFiles);
  try {
    for (let after: AuxFileRecord | undefined; ; ) {
      const page = await db.auxFilePage(after, PAGE);
      if (page.length === 0) break;
      after = page.at(-1);
      for (const record of page) {
        progress.tick();
        ctx.counts.smallFileRecords++;
        const kind = record.kind as AuxKind;
        const { name } = record;
        const subject = `${kind}/${name}`;
        if (kind === 'ls') listings.add(name);
        if (!storableName(kind, name)) {
          ctx.found({
            kind: 'small-file-missing',
            subject,
            bytes: record.size,
            detail: 'not a name ncps stores',
            locks: [],
            recheck: async () => true,
            repair: async () => {
              await db.deleteAuxFile({ kind, name });
              return {};
            },
          });
          continue;
        }
        const size = await storage.statAuxFile(kind, name);
        if (size === undefined) {
          ctx.found({
            kind: 'small-file-missing',
            subject,
            bytes: record.size,
            locks: [],
            recheck: async () => (await storage.statAuxFile(kind, name)) === undefined,
            repair: async () => {
              await db.deleteAuxFile({ kind, name });
              return {};
            },
          });
          continue;
        }
        if (options.verifyContent && JSON_KINDS.has(kind)) {
          const data = await storage.getAuxFile(kind, name);
          if (data && !parses(data)) {
            ctx.found({
              kind: 'small-file-unreadable',
              subject,
              bytes: data.length,
              locks: [],
              recheck: async () => {
                const now = await storage.getAuxFile(kind, name);
                return now !== undefined && !parses(now);
              },
              repair: async () => {
                await dropAuxFile(db, storage, kind, name);
                return {};
              },
            });
            continue;
          }
        }
        if (size !== record.size) {
          ctx.found({
            kind: 'small-file-size',
            subject,
            bytes: size,
            detail: `${size} bytes, recorded ${record.size}`,
            locks: [],
            recheck: async () => (await storage.statAuxFile(kind, name)) === size,
            repair: async () => {
              await db.putAuxFile({ kind, name, size });
              return { size };
            },
          });
        }
      }
    }
  } finally {
    progress.end();
  }
  return listings;
}

/** Listings in storage: recorded when their path is there, orphans (by the sweep's rule) when not. */
async function checkListings(ctx: FsckContext, recorded: Set<string>, options: SmallFileCheckOptions): Promise<void> {
  const { db, storage } = ctx;
  const ages = await orphanAges(db, ctx.now);
  const progress = ctx.progress.phase('looking at listings in storage', undefined);
  let batch: Array<{ name: string; size: number; modifiedAt: number; hash: string }> = [];
  const flush = async () => {
    const known = await db.knownNarInfos(batch.map((f) => f.hash));
    for (const file of batch) {
      const { name, size, hash } = file;
      const subject = `ls/${name}`;
      if (known.has(hash)) {
        if (recorded.has(name)) continue;
        ctx.found({
          kind: 'small-file-unrecorded',
          subject,
          bytes: size,
          locks: [],
          recheck: async () => (await storage.statAuxFile('ls', name)) !== undefined,
          repair: async () => {
            const now = await storage.statAuxFile('ls', name);
            if (now !== undefined) await db.putAuxFile({ kind: 'ls', name, size: now });
            return { size: now ?? null };
          },
        });
        continue;
      }
      if (options.legacyNarInfos) continue;
      const age = unrecordedFileAge(file.modifiedAt, ages);
      if (age === 'young') ctx.counts.unrecordedYoung++;
      else if (age === 'older-than-database') ctx.counts.unrecordedOlderThanDatabase++;
      else {
        ctx.found({
          kind: 'listing-orphaned',
          subject,
          bytes: size,
          locks: [],
          recheck: async () => (await db.knownNarInfos([hash])).size === 0 && (await storage.statAuxFile('ls', name)) !== undefined,
          repair: async () => {
            await dropAuxFile(db, storage, 'ls', name);
            return {};
          },
        });
      }
    }
    batch = [];
  };
  try {
    for await (const file of storage.listAuxFiles('ls')) {
      progress.tick();
      ctx.counts.listingsInStorage++;
      const hash = LISTING_FILE_NAME.exec(file.name)?.[1];
      if (!hash) continue;
      batch.push({ ...file, hash });
      if (batch.length >= PAGE) await flush();
    }
    if (batch.length > 0) await flush();
  } finally {
    progress.end();
  }
  if (options.legacyNarInfos) ctx.notes.push('listings of paths not in the database were not judged: storage still holds narinfo files of an older ncps');
}
