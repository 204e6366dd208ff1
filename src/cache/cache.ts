// The cache core: what a narinfo or NAR request means, independent of HTTP and of where things are
// stored. Routes call getNarInfo and getNar; the seams (Database, Storage, Locker, UpstreamPool)
// are passed in, so a cluster swaps implementations without touching this file.

import type { Readable } from 'node:stream';
import { isReadOnlyDatabase, type Database, type NarFileRecord } from '../db/database';
import type { Locker } from '../lock/locker';
import { acquireWithin, withLock } from '../lock/locker';
import { rm } from 'node:fs/promises';
import {
  decodeNix32,
  formatNarInfo,
  formatRealisation,
  parseRealisation,
  realisationVerifies,
  signRealisation,
  BUILD_TRACE_DIR,
  buildTraceVerifies,
  formatBuildTraceValue,
  parseBuildTraceValue,
  signBuildTrace,
  type BuildTraceKey,
  narFileExtension,
  narInfoTrust,
  signNarInfo,
  storePathHash,
  type Compression,
  type NarInfo,
  type PublicKey,
  type SecretKey,
} from '../nix';
import type { AuxKind, Storage } from '../storage/storage';
import type { Logger } from '../telemetry/logger';
import { SpanStatusCode } from '@opentelemetry/api';
import type { Metrics } from '../telemetry/metrics';
import { tracer } from '../telemetry/tracing';
import type { Upstream, UpstreamPool } from '../upstream/pool';
import { InvalidLegacyNarInfo, type LegacyNarInfoMigrator } from '../migrate/narinfo';
import { dropAuxFile, keepAuxFile } from './aux-files';
import { NarInfoMemo } from './narinfo-memo';
import { NegativeCache } from './negative-cache';
import type { Coordination } from './coordination';
import { AlreadyStored, isNoSpace, NarDownload, NotFoundUpstream, StorageFull, type DownloadProgress, type ExpectedFile } from './download';
import { verifiedPassThrough } from './pass-through';
import type { StorageSpace } from './storage-space';
import { HASH_NAMED_NAR } from '../nix/file-names';
import { zstdDecompressed, zstdNameOf } from './nar-alias';
import { resolveRange, type RangeSpec, type ResolvedRange } from './range';

export interface CacheOptions {
  db: Database;
  storage: Storage;
  locker: Locker;
  upstreams: UpstreamPool;
  logger: Logger;
  /** Keys trusted to sign upstream narinfos. */
  trustedKeys: readonly PublicKey[];
  /** Our key; undefined when narinfos are served without our signature. */
  signingKey: SecretKey | undefined;
  downloadLockTtlMs: number;
  /** How long a NAR download waits for another instance's before streaming from upstream itself. */
  downloadLockWaitMs?: number;
  /** How long "no upstream has this path" is remembered (0 disables). */
  negativeTtlMs: number;
  metrics: Metrics;
  /** Set while storage may still hold narinfo files from before the database (migrated on access). */
  legacy?: LegacyNarInfoMigrator;
  /** Set in a worker of several (src/workers/): downloads and forgetting shared with the others. */
  coordination?: Coordination;
  /** Whether storage can take new files; without it, storage is assumed to have room. */
  space?: StorageSpace;
}

export type CacheSource = 'hit' | 'miss';

export interface NarInfoResult {
  /** The narinfo as served (UTF-8 text). */
  body: Buffer;
  source: CacheSource;
  /** Where a hit came from: the database, or a narinfo file an older ncps left in storage. */
  from?: 'database' | 'storage';
  /** Host name of the upstream a miss was fetched from. */
  upstream?: string;
}

interface FetchedNarInfo {
  narInfo: NarInfo;
  upstream: string;
}

export interface NarResult {
  /**
   * 'miss' also for the first read of a NAR the background prefetch stored for a narinfo miss:
   * those bytes came from upstream for this client, the cache saved nothing yet.
   */
  source: CacheSource;
  /** Host name of the upstream a miss streams from. */
  upstream?: string;
  /** Total size, when known. */
  size: number | undefined;
  /** Absent for HEAD requests. */
  stream?: Readable;
  /** The part of the file the stream carries, when a range was asked for and honoured. */
  range?: ResolvedRange | 'unsatisfiable';
}

/** Storage name of a realisation: the id without its `sha256:` (so the fan-out spreads). */
export function realisationFileName(id: string): string {
  return `${id.replace(/^sha256:/, '')}.doi`;
}

/** Storage name of a build trace entry: its cache path under `build-trace-v2/`. */
export function buildTraceFileName(key: BuildTraceKey): string {
  return `${key.drvPath}/${key.outputName}.doi`;
}

/** The lock held while a narinfo is fetched from upstream and stored (fsck holds it to repair one). */
export function narInfoLockKey(hash: string): string {
  return `narinfo:${hash}`;
}

/** The lock held while a NAR is downloaded and committed (fsck holds it to repair one). */
export function downloadLockKey(name: string): string {
  return `download:${name}`;
}

/** Used when no wait is configured: see --cache-lock-download-wait. */
export const DEFAULT_DOWNLOAD_LOCK_WAIT_MS = 30_000;

/** Listings and logs are read whole into memory: bounded. */
export const MAX_AUX_BYTES = 64 << 20;

/** How often accumulated "was served" marks are written, rather than one write per request. */
const TOUCH_FLUSH_MS = 5_000;

/** Prefetched NARs remembered until a client reads them (the oldest are forgotten beyond this). */
const MAX_PREFETCHED_UNREAD = 10_000;

export interface ReadOptions {
  /** False for the /upload routes: answer from what is stored, never from upstream. */
  upstream: boolean;
}

export interface NarInfoReadOptions extends ReadOptions {
  /** The caller found nothing with storedNarInfo a moment ago (the hot path did): not looked up again. */
  notStored?: boolean;
}

export class Cache {
  private readonly options: CacheOptions;
  private readonly narInfoFetches = new Map<string, Promise<FetchedNarInfo | undefined>>();
  /** Upstreams already warned about for serving narinfos no configured key signed. */
  private readonly untrustedUpstreams = new Set<string>();
  private readonly downloads = new Map<string, NarDownload>();
  private readonly touched = new Set<string>();
  private readonly touchedNars = new Set<string>();
  /** Small files served since the last flush, by `<kind>/<name>`. */
  private readonly touchedAux = new Map<string, { kind: AuxKind; name: string }>();
  private readonly touchTimer: NodeJS.Timeout;
  private readonly absent: NegativeCache;
  private readonly memo = new NarInfoMemo();
  /** NARs a prefetch stored that no client has read yet (name → when), so that read is no "hit". */
  private readonly prefetchedUnread = new Map<string, number>();
  /** Host name of the upstream each download streams from. */
  private readonly downloadHosts = new WeakMap<NarDownload, string>();
  /** Claims on downloads being asked of the other workers, so this process asks once per NAR. */
  private readonly claims = new Map<string, Promise<NarDownload>>();

  constructor(options: CacheOptions) {
    this.options = options;
    this.absent = new NegativeCache(options.negativeTtlMs);
    this.touchTimer = setInterval(() => void this.flushTouches(), TOUCH_FLUSH_MS);
    this.touchTimer.unref();
    options.coordination?.onForget((hash) => this.forgetHere(hash));
  }

  /**
   * The narinfo for a store path hash if it was served a moment ago (see narinfo-memo.ts), without
   * waiting for anything: the hot path of a busy cache (server/hot-path.ts). Counts as a use.
   * `now` is performance.now(), passed by a caller that has read it already.
   */
  peekNarInfo(hash: string, now?: number): Buffer | undefined {
    const body = this.memo.get(hash, now);
    if (body !== undefined) this.touched.add(hash);
    return body;
  }

  /** A narinfo this cache holds (memoised, in the database, or in a legacy file), never asking upstream. */
  async storedNarInfo(hash: string): Promise<{ body: Buffer; from: 'database' | 'storage' } | undefined> {
    const memo = this.peekNarInfo(hash);
    if (memo !== undefined) return { body: memo, from: 'database' };
    const stored = await this.options.db.getNarInfo(hash);
    if (stored) {
      this.touched.add(hash);
      const body = Buffer.from(formatNarInfo(this.withOurSignature(stored)));
      this.memo.set(hash, body);
      return { body, from: 'database' };
    }
    const legacy = await this.fromLegacyFile(hash);
    if (legacy) {
      this.touched.add(hash);
      return { body: Buffer.from(formatNarInfo(this.withOurSignature(legacy))), from: 'storage' };
    }
    return undefined;
  }

  /** The narinfo for a store path hash (already validated by the caller), or undefined. */
  async getNarInfo(hash: string, read: NarInfoReadOptions = { upstream: true }): Promise<NarInfoResult | undefined> {
    const stored = read.notStored ? undefined : await this.storedNarInfo(hash);
    if (stored) return { ...stored, source: 'hit' };
    if (!read.upstream || this.absent.has(hash)) return undefined;
    let fetch = this.narInfoFetches.get(hash);
    if (!fetch) {
      fetch = this.fetchNarInfo(hash).finally(() => this.narInfoFetches.delete(hash));
      this.narInfoFetches.set(hash, fetch);
    }
    const fetched = await fetch;
    if (!fetched) return undefined;
    return { body: Buffer.from(formatNarInfo(fetched.narInfo)), source: 'miss', ...(fetched.upstream ? { upstream: fetched.upstream } : {}) };
  }

  /**
   * Narinfos are stored signed, so this is a no-op on the hot path. It matters for rows that
   * arrived without our signature (migrated from files an older ncps signed with another key, or
   * written before the key changed): clients trusting our published key must still accept them.
   */
  private withOurSignature(narInfo: NarInfo): NarInfo {
    const key = this.options.signingKey;
    if (!key || narInfo.sigs.some((sig) => sig.startsWith(`${key.name}:`))) return narInfo;
    return signNarInfo(narInfo, key);
  }

  /** Background migration: a narinfo file an older ncps left in storage moves into the database. */
  private async fromLegacyFile(hash: string): Promise<NarInfo | undefined> {
    const { legacy, metrics, logger } = this.options;
    if (!legacy) return undefined;
    const labels = { migration_type: 'narinfo-to-db', operation: 'migrate' };
    const timer = metrics.backgroundMigrationDuration.startTimer(labels);
    try {
      const { outcome, narInfo } = await legacy.migrate(hash);
      if (outcome === 'migrated') {
        timer();
        metrics.backgroundMigrations.labels({ ...labels, result: 'success' }).inc();
        logger.info({ hash }, 'migrated a legacy narinfo file into the database');
      }
      return narInfo;
    } catch (error) {
      timer();
      metrics.backgroundMigrations.labels({ ...labels, result: 'failure' }).inc();
      const level = error instanceof InvalidLegacyNarInfo ? 'warn' : 'error';
      logger[level]({ hash, err: (error as Error).message }, 'could not migrate a legacy narinfo file');
      return undefined;
    }
  }

  private async fetchNarInfo(hash: string): Promise<FetchedNarInfo | undefined> {
    const { db, locker, upstreams, logger } = this.options;
    const narInfo = await withLock(locker, narInfoLockKey(hash), this.options.downloadLockTtlMs, async () => {
      const already = await db.getNarInfo(hash); // another node may have fetched it meanwhile
      if (already) return { narInfo: already, upstream: '' };
      const timer = this.options.metrics.upstreamNarInfoDuration.startTimer();
      const span = tracer().startSpan('upstream narinfo', { attributes: { 'ncps.hash': hash } });
      const lookup = await upstreams
        .fetchNarInfo(hash, (candidate, upstream) => this.acceptUpstreamNarInfo(hash, candidate, upstream))
        .finally(() => span.end());
      const found = lookup.found;
      span.setAttribute('ncps.found', Boolean(found));
      timer({ result: found ? 'found' : lookup.absent ? 'absent' : 'failed' });
      if (!found) {
        // Only a real "not here" is remembered; after a failure the next request asks again.
        if (lookup.absent) this.absent.add(hash);
        return undefined;
      }
      const { narInfo: served, narFile } = this.prepareForServing(found.narInfo, found.narUrl);
      let orphans;
      try {
        orphans = await db.putNarInfo(hash, served, narFile);
      } catch (error) {
        // Unrecorded, its NAR could not be served: the path is "not here" until writes work again.
        if (!isReadOnlyDatabase(error)) throw error;
        this.databaseRefusesWrites(error as Error);
        return undefined;
      }
      for (const orphan of orphans) await this.options.storage.deleteNar(orphan.name);
      logger.debug({ hash, upstream: found.upstream.baseUrl.href }, 'narinfo fetched from upstream');
      return { narInfo: served, upstream: found.upstream.baseUrl.hostname };
    });
    if (narInfo) this.prefetchNar(narInfo.narInfo);
    return narInfo;
  }

  private lastReadOnlyWarning = 0;

  /** Said once a minute, not once a request: misses are answered 404 meanwhile, hits still served. */
  private databaseRefusesWrites(error: Error): void {
    const now = Date.now();
    if (now - this.lastReadOnlyWarning < 60_000) return;
    this.lastReadOnlyWarning = now;
    this.options.logger.error(
      { err: error.message },
      'the database refuses writes (read-only?): paths not cached yet are answered 404, uploads 503, until it takes writes again; /readyz says so',
    );
  }

  /**
   * An upstream answer counts only if it is for the path asked and carries a trusted signature,
   * or, from an upstream with `?allow-unsigned=true`, no signature under a trusted key's name that
   * fails (see src/upstream/trust.ts).
   */
  private acceptUpstreamNarInfo(hash: string, narInfo: NarInfo, source: Upstream): boolean {
    const { logger, trustedKeys } = this.options;
    const upstream = source.baseUrl.href;
    let pathHash: string;
    try {
      pathHash = storePathHash(narInfo.storePath);
    } catch {
      pathHash = '';
    }
    if (pathHash !== hash) {
      logger.warn({ hash, upstream, storePath: narInfo.storePath }, 'upstream narinfo is for another store path; ignored');
      return false;
    }
    const trust = narInfoTrust(narInfo, trustedKeys);
    if (trust === 'trusted') return true;
    if (trust === 'unsigned' && source.allowUnsigned) {
      logger.debug({ hash, upstream }, 'unsigned upstream narinfo accepted (allow-unsigned)');
      return true;
    }
    const signers = narInfo.sigs.map((sig) => sig.slice(0, Math.max(0, sig.indexOf(':'))));
    logger.warn({ hash, upstream, signedBy: signers }, trust === 'forged'
      ? 'upstream narinfo has a signature under a trusted key name that does not verify; ignored'
      : 'upstream narinfo has no signature from a trusted key; ignored');
    // Once per upstream, the evidence the start-up warning could only guess at, with the way out.
    if (trust === 'unsigned' && !this.untrustedUpstreams.has(upstream)) {
      this.untrustedUpstreams.add(upstream);
      logger.warn(
        { upstream, signedBy: signers },
        signers.length === 0
          ? `upstream ${upstream} serves unsigned narinfos: they are answered 404. Append ?allow-unsigned=true to its URL to accept them`
          : `upstream ${upstream} serves narinfos signed by ${signers.join(', ')}, none of them a configured --cache-upstream-public-key: they are answered 404. Add its public key`,
      );
    }
    return false;
  }

  /**
   * Our copy of an upstream narinfo: the NAR URL normalised to `nar/<hash>.nar<ext>` (so our route
   * can serve it whatever the upstream's URL scheme) and our signature added.
   */
  private prepareForServing(upstream: NarInfo, narUrl: URL): { narInfo: NarInfo; narFile: NarFileRecord } {
    const name = servedNarName(upstream);
    let narInfo: NarInfo = { ...upstream, url: `nar/${name}` };
    if (this.options.signingKey) narInfo = signNarInfo(narInfo, this.options.signingKey);
    const narFile: NarFileRecord = {
      name,
      compression: narInfo.compression,
      narHash: narInfo.narHash.toNix32(),
      narSize: narInfo.narSize,
      upstreamUrl: narUrl.href,
      ...(narInfo.fileHash ? { fileHash: narInfo.fileHash.toNix32() } : {}),
      ...(narInfo.fileSize !== undefined ? { fileSize: narInfo.fileSize } : {}),
    };
    return { narInfo, narFile };
  }

  private prefetchNar(narInfo: NarInfo): void {
    const name = narInfo.url.slice('nar/'.length);
    void (async () => {
      if (this.downloads.has(name) || (await this.options.storage.statNar(name)) !== undefined) return;
      const record = await this.options.db.getNarFile(name);
      if (!record || this.downloads.has(name)) return;
      // Nothing to keep it in: a client asking for it gets it streamed from upstream instead.
      if (this.options.space && !(await this.options.space.allowsStoring(record.fileSize))) return;
      // Marked before any client can read it from storage (a client joining the download itself
      // clears the mark: it is served as a miss, and the next read is a hit).
      const download = await this.downloadFor(record);
      // Another worker runs it (and counts it as its prefetch).
      if (download.followed) return;
      this.rememberPrefetched(name);
      await download.done.catch((error: Error) => {
        this.prefetchedUnread.delete(name);
        throw error;
      });
    })().catch((error: Error) => {
      if (error instanceof AlreadyStored || error instanceof NotFoundUpstream) return;
      this.options.logger.warn({ nar: name, err: error.message }, 'NAR prefetch failed');
    });
  }

  private rememberPrefetched(name: string): void {
    this.prefetchedUnread.set(name, Date.now());
    if (this.prefetchedUnread.size > MAX_PREFETCHED_UNREAD) {
      const oldest = this.prefetchedUnread.keys().next().value;
      if (oldest !== undefined) this.prefetchedUnread.delete(oldest);
    }
  }

  /** A read from storage: a hit, unless it is the first read of what a prefetch stored. */
  private storedSource(name: string): CacheSource {
    return this.prefetchedUnread.size > 0 && this.prefetchedUnread.delete(name) ? 'miss' : 'hit';
  }

  /**
   * A NAR by file name (already validated by the caller). Served from storage when there, else
   * from the one shared upstream download. `head` asks for the size only and never downloads.
   */
  async getNar(name: string, options: { head: boolean; range?: RangeSpec } & ReadOptions): Promise<NarResult | undefined> {
    const { storage, db } = this.options;
    if (options.head) {
      const size = await storage.statNar(name);
      if (size !== undefined) return { source: 'hit', size };
      const alias = await this.fromZstdFile(name, true);
      if (alias) return alias;
      if (!options.upstream) return undefined;
      const inFlight = this.downloads.get(name);
      if (inFlight) return { source: 'miss', size: inFlight.expectedSize };
      const record = await db.getNarFile(name);
      return record?.upstreamUrl ? { source: 'miss', size: record.fileSize } : undefined;
    }

    if (options.range) {
      // Ranges need the size first (for suffix ranges and 416); the plain path skips that stat.
      const size = await storage.statNar(name);
      if (size !== undefined) {
        const range = resolveRange(options.range, size);
        if (range === 'unsatisfiable') return { source: 'hit', size, range };
        const part = await storage.getNar(name, range);
        if (part) {
          this.touchedNars.add(name);
          return { source: this.storedSource(name), size, stream: part.stream, range };
        }
      }
    } else if (!this.downloads.has(name)) {
      // (While a download is in flight the file cannot be in storage yet: skip the failing open.)
      const stored = await storage.getNar(name);
      if (stored) {
        this.touchedNars.add(name);
        return { source: this.storedSource(name), size: stored.size, stream: stored.stream };
      }
    }
    const alias = await this.fromZstdFile(name, false);
    if (alias) return alias;
    if (!options.upstream) return undefined;

    let download = this.downloads.get(name);
    let record: NarFileRecord | undefined;
    if (!download) {
      record = await db.getNarFile(name);
      if (!record?.upstreamUrl) return undefined;
      // Storage cannot take it (full, or this NAR alone does not fit): straight from upstream.
      if (this.options.space && !this.downloads.has(name) && !(await this.options.space.allowsStoring(record.fileSize))) {
        return this.passThrough(record, this.options.space.full ? 'storage is full' : 'the NAR does not fit in the space left');
      }
      // Re-check after the await: a concurrent request may have started it meanwhile.
      download = this.downloads.get(name) ?? (await this.downloadFor(record));
    }
    try {
      await download.ready;
    } catch (error) {
      if (error instanceof NotFoundUpstream) return undefined;
      if (error instanceof StorageFull) {
        record ??= await db.getNarFile(name);
        return record?.upstreamUrl ? this.passThrough(record, 'storage is full') : undefined;
      }
      // Stored by another instance meanwhile, or upstream trouble: storage may have it now.
      const landed = await storage.getNar(name);
      if (landed) return { source: 'hit', size: landed.size, stream: landed.stream };
      this.options.logger.warn({ nar: name, err: (error as Error).message }, 'NAR download failed');
      return undefined;
    }
    try {
      // A range on a download in flight is served from the bytes as they land, when the total
      // size is known up front (it is whenever the narinfo has FileSize).
      const size = download.expectedSize;
      const host = this.downloadHosts.get(download);
      const upstream = host ? { upstream: host } : {};
      const range = options.range && size !== undefined ? resolveRange(options.range, size) : undefined;
      if (range === 'unsatisfiable') return { source: 'miss', size, range, ...upstream };
      const stream = range ? download.createReader(range.start, range.end) : download.createReader();
      this.prefetchedUnread.delete(name);
      return { source: 'miss', size, stream, ...(range ? { range } : {}), ...upstream };
    } catch {
      // It finished between our checks: the file is in storage now (or the download failed).
      const landed = await storage.getNar(name);
      return landed ? { source: 'hit', size: landed.size, stream: landed.stream } : undefined;
    }
  }

  /**
   * An uncompressed NAR asked for by the name the Go ncps served it under (`<hash>.nar`), which
   * this ncps keeps as `<hash>.nar.zst` since it took the Go deployment over (see nar-alias.ts).
   * Whole (ranges are not honoured), decompressed as it is sent.
   */
  private async fromZstdFile(name: string, head: boolean): Promise<NarResult | undefined> {
    const zstdName = zstdNameOf(name);
    if (!zstdName || this.downloads.has(name)) return undefined;
    const record = await this.options.db.getNarFile(zstdName);
    if (record?.storedAt === undefined || record.compression !== 'zstd') return undefined;
    if (head) return (await this.options.storage.statNar(zstdName)) === undefined ? undefined : { source: 'hit', size: record.narSize };
    const stored = await this.options.storage.getNar(zstdName);
    if (!stored) return undefined;
    this.touchedNars.add(zstdName);
    return { source: 'hit', size: record.narSize, stream: zstdDecompressed(stored.stream) };
  }

  /**
   * The download of a NAR: this process's own, or, in a worker of several, the one another worker
   * already runs (its temp file is tailed), so that one instance fetches each NAR once.
   */
  private downloadFor(record: NarFileRecord): Promise<NarDownload> | NarDownload {
    const { coordination } = this.options;
    const running = this.downloads.get(record.name);
    if (running) return running;
    if (!coordination) return this.startDownload(record);
    let claim = this.claims.get(record.name);
    if (!claim) {
      claim = coordination
        .claimDownload(record.name)
        .then((granted) => (granted.owner ? this.startDownload(record) : this.followDownload(record.name, granted.progress, coordination)))
        .finally(() => this.claims.delete(record.name));
      this.claims.set(record.name, claim);
    }
    return claim;
  }

  private followDownload(name: string, progress: DownloadProgress, coordination: Coordination): NarDownload {
    const download = NarDownload.follow(name, progress);
    const stop = coordination.followDownload(name, (update) => download.apply(update));
    this.downloads.set(name, download);
    if (progress.host) this.downloadHosts.set(download, progress.host);
    void download.done.catch(() => undefined).finally(() => {
      stop();
      if (this.downloads.get(name) === download) this.downloads.delete(name);
    });
    return download;
  }

  /** Tells the workers following this download where it stands: at most once per event-loop turn. */
  private publishProgress(download: NarDownload, host: string, coordination: Coordination): void {
    let scheduled = false;
    const publish = () => {
      scheduled = false;
      coordination.publishDownload(download.name, { ...download.progress(), host });
    };
    publish();
    download.on('change', () => {
      if (download.state === 'done' || download.state === 'failed') publish();
      else if (!scheduled) {
        scheduled = true;
        setImmediate(publish);
      }
    });
  }

  /** Streams a NAR from upstream to this one client without keeping it (see pass-through.ts). */
  private async passThrough(record: NarFileRecord, reason: string): Promise<NarResult | undefined> {
    const { upstreams, logger, metrics } = this.options;
    const url = new URL(record.upstreamUrl!);
    let body;
    try {
      body = await upstreams.fetchFile(url);
    } catch (error) {
      logger.warn({ nar: record.name, err: (error as Error).message }, 'NAR download failed');
      return undefined;
    }
    if (!body) return undefined;
    metrics.narsStreamedUnstored.inc();
    logger.info({ nar: record.name, reason }, 'NAR streamed from upstream without keeping it');
    const expected = expectedFile(record);
    const stream = verifiedPassThrough(record.name, body, expected);
    stream.once('error', (error: Error) => logger.warn({ nar: record.name, err: error.message }, 'NAR download failed; nothing stored'));
    return { source: 'miss', size: expected.size ?? body.contentLength, stream, upstream: url.hostname };
  }

  private startDownload(record: NarFileRecord): NarDownload {
    const { storage, db, upstreams, locker, logger } = this.options;
    const upstreamUrl = new URL(record.upstreamUrl!);
    const lockKey = downloadLockKey(record.name);
    const lockTtlMs = this.options.downloadLockTtlMs;
    let releaseLock: (() => Promise<void>) | undefined;
    let passThrough = false;
    const timer = this.options.metrics.upstreamNarDuration.startTimer();
    const span = tracer().startSpan('upstream nar', { attributes: { 'ncps.nar': record.name } });
    const download = new NarDownload({
      name: record.name,
      tempDir: storage.tempDir,
      expected: expectedFile(record),
      open: async () => {
        // Held by another instance (this one single-flights its own downloads): wait a while.
        const free = await locker.tryAcquire(lockKey, lockTtlMs);
        const lock = free ?? (await acquireWithin(locker, lockKey, lockTtlMs, this.options.downloadLockWaitMs ?? DEFAULT_DOWNLOAD_LOCK_WAIT_MS));
        if (lock) releaseLock = () => lock.release();
        const fallback = (outcome: 'served_by_peer' | 'take_over' | 'pass_through') => {
          if (!free) this.options.metrics.downloadCoordinationFallback.labels(outcome).inc();
        };
        // Another instance may have held the lock for this very download: then it is stored now.
        if ((await storage.statNar(record.name)) !== undefined) {
          fallback('served_by_peer');
          throw new AlreadyStored(record.name);
        }
        fallback(lock ? 'take_over' : 'pass_through');
        if (!lock) {
          // Another instance is still at it (a long download, or it died holding the lock): stream
          // from upstream rather than keep the client waiting; storing is decided at the end.
          passThrough = true;
          logger.info({ nar: record.name }, 'another instance holds the download lock; streaming from upstream meanwhile');
        }
        return upstreams.fetchFile(upstreamUrl);
      },
      commit: async (tempFile, size) => {
        if (passThrough) {
          // Stored only if the lock is free now and nobody stored it meanwhile; else dropped.
          const lock = await locker.tryAcquire(lockKey, lockTtlMs);
          if (lock) releaseLock = () => lock.release();
          if (!lock || (await storage.statNar(record.name)) !== undefined) {
            await rm(tempFile, { force: true });
            return;
          }
          passThrough = false;
        }
        await storage.putNarFromFile(record.name, tempFile);
        // Deleted or evicted while it downloaded: take the bytes back out, or they would sit in
        // storage uncounted and never evicted.
        if (!(await db.markNarFileStored(record.name, size))) {
          await storage.deleteNar(record.name);
          logger.info({ nar: record.name }, 'NAR was deleted while downloading; not kept');
        }
      },
    });
    this.downloads.set(record.name, download);
    this.downloadHosts.set(download, upstreamUrl.hostname);
    if (this.options.coordination) this.publishProgress(download, upstreamUrl.hostname, this.options.coordination);
    const started = Date.now();
    download.done.then(
      () => {
        timer({ result: passThrough ? 'passed-through' : 'success' });
        span.setAttribute('ncps.bytes', download.bytesWritten);
        span.end();
        this.options.metrics.upstreamBytes.inc(download.bytesWritten);
        const outcome = passThrough ? 'NAR streamed from upstream; not stored (another instance holds its lock)' : 'NAR downloaded and stored';
        logger.info({ nar: record.name, bytes: download.bytesWritten, ms: Date.now() - started }, outcome);
      },
      (error: Error) => {
        timer({ result: error instanceof AlreadyStored ? 'stored-elsewhere' : 'failure' });
        span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
        span.end();
        if (error instanceof StorageFull) this.options.space?.markFull(error.message);
        if (!(error instanceof NotFoundUpstream) && !(error instanceof AlreadyStored)) logger.warn({ nar: record.name, err: error.message }, 'NAR download failed; nothing stored');
      },
    ).finally(() => {
      this.downloads.delete(record.name);
      void releaseLock?.();
    });
    return download;
  }

  /** Waits for downloads in flight (bounded), then stops background work. */
  async close(timeoutMs: number): Promise<void> {
    clearInterval(this.touchTimer);
    const pending = [...this.downloads.values()].map((d) => d.done.catch(() => undefined));
    if (pending.length > 0) {
      await Promise.race([Promise.all(pending), new Promise((resolve) => setTimeout(resolve, timeoutMs).unref())]);
    }
    await this.flushTouches();
  }

  private async flushTouches(): Promise<void> {
    const hashes = [...this.touched];
    const nars = [...this.touchedNars];
    const aux = [...this.touchedAux.values()];
    this.touched.clear();
    this.touchedNars.clear();
    this.touchedAux.clear();
    const now = Date.now();
    try {
      if (hashes.length > 0) await this.options.db.touchNarInfos(hashes, now);
      if (nars.length > 0) await this.options.db.touchNarFiles(nars, now);
      if (aux.length > 0) await this.options.db.touchAuxFiles(aux, now);
    } catch (error) {
      this.options.logger.warn({ err: (error as Error).message }, 'could not record access times');
    }
  }

  /**
   * A NAR listing (`<hash>.ls`) or a build log (`log/<drv>`): from storage, else from the
   * upstreams, then kept. A listing is only served for a path whose narinfo we would serve.
   */
  async getAuxFile(kind: AuxKind, name: string, read: ReadOptions): Promise<Buffer | undefined> {
    const { storage, upstreams } = this.options;
    const stored = await storage.getAuxFile(kind, name);
    if (stored) this.touchedAux.set(`${kind}/${name}`, { kind, name });
    if (stored || !read.upstream) return stored;
    const negativeKey = `${kind}:${name}`;
    if (this.absent.has(negativeKey)) return undefined;
    if (kind === 'ls' && !(await this.getNarInfo(name.slice(0, 32)))) return undefined;
    const lookup = await upstreams.fetchSmallFile(kind === 'ls' ? name : `log/${name}`, MAX_AUX_BYTES);
    const data = lookup.found;
    if (!data) {
      if (lookup.absent) this.absent.add(negativeKey);
      return undefined;
    }
    await this.keepFetchedAuxFile(kind, name, data);
    return data;
  }

  /**
   * A realisation (`sha256:<hex>!<output>`): from storage, else from the upstreams, accepted only
   * with a signature from a trusted key (like narinfos), then signed by us and kept.
   */
  async getRealisation(id: string, read: ReadOptions): Promise<string | undefined> {
    const { trustedKeys, signingKey } = this.options;
    return this.getSignedEntry('realisations', realisationFileName(id), `realisations/${id}.doi`, read, (text) => {
      const realisation = parseRealisation(text);
      if (realisation.id !== id) throw new Error(`it is for ${realisation.id}`);
      if (!realisationVerifies(realisation, trustedKeys)) return undefined;
      return formatRealisation(signingKey ? signRealisation(realisation, signingKey) : realisation);
    });
  }

  /** A build trace entry (Nix >= 2.35), under the same rules as realisations. */
  async getBuildTrace(key: BuildTraceKey, read: ReadOptions): Promise<string | undefined> {
    const { trustedKeys, signingKey } = this.options;
    const name = buildTraceFileName(key);
    return this.getSignedEntry('build-trace-v2', name, `${BUILD_TRACE_DIR}/${name}`, read, (text) => {
      const value = parseBuildTraceValue(text);
      if (!buildTraceVerifies(key, value, trustedKeys)) return undefined;
      return formatBuildTraceValue(signingKey ? signBuildTrace(key, value, signingKey) : value);
    });
  }

  /**
   * A small signed JSON file: from storage, else fetched from the upstreams and passed to
   * `accept`, which returns what to keep and serve, or undefined when no trusted key signed it.
   */
  private async getSignedEntry(
    kind: AuxKind,
    name: string,
    upstreamPath: string,
    read: ReadOptions,
    accept: (text: string) => string | undefined,
  ): Promise<string | undefined> {
    const { storage, upstreams, logger } = this.options;
    const stored = await storage.getAuxFile(kind, name);
    if (stored) this.touchedAux.set(`${kind}/${name}`, { kind, name });
    if (stored || !read.upstream) return stored?.toString('utf8');
    const negativeKey = `${kind}:${name}`;
    if (this.absent.has(negativeKey)) return undefined;
    const lookup = await upstreams.fetchSmallFile(upstreamPath, MAX_AUX_BYTES);
    const data = lookup.found;
    let accepted: string | undefined;
    if (data) {
      try {
        accepted = accept(data.toString('utf8'));
        if (accepted === undefined) logger.warn({ path: upstreamPath }, 'upstream entry has no signature from a trusted key; ignored');
      } catch (error) {
        logger.warn({ path: upstreamPath, err: (error as Error).message }, 'upstream sent an invalid entry; ignored');
      }
    }
    if (accepted === undefined) {
      if (data || lookup.absent) this.absent.add(negativeKey);
      return undefined;
    }
    await this.keepFetchedAuxFile(kind, name, Buffer.from(accepted));
    return accepted;
  }

  /** Keeps a small file fetched from upstream; with storage full it is served without being kept. */
  private async keepFetchedAuxFile(kind: AuxKind, name: string, data: Buffer): Promise<void> {
    try {
      await this.keepAuxFile(kind, name, data);
    } catch (error) {
      if (isReadOnlyDatabase(error)) {
        // Stored but not recorded: the orphan sweep removes it later; served now all the same.
        this.databaseRefusesWrites(error as Error);
        return;
      }
      if (!isNoSpace(error)) throw error;
      this.options.space?.markFull((error as Error).message);
      this.options.logger.warn({ kind, name }, 'storage is full: served without keeping it');
    }
  }

  /** Stores a small file and records it, so the size limit counts it and LRU may evict it. */
  keepAuxFile(kind: AuxKind, name: string, data: Buffer): Promise<void> {
    return keepAuxFile(this.options.db, this.options.storage, kind, name, data);
  }

  /** Removes a small file and its record. */
  dropAuxFile(kind: AuxKind, name: string): Promise<void> {
    return dropAuxFile(this.options.db, this.options.storage, kind, name);
  }

  /** Forgets what this instance remembers about a path (it was uploaded, deleted or evicted). */
  forget(hash: string): void {
    this.forgetHere(hash);
    this.options.coordination?.forgetEverywhere(hash);
  }

  private forgetHere(hash: string): void {
    this.absent.delete(hash);
    this.memo.delete(hash);
  }
}

/**
 * What the downloaded bytes must match: FileHash/FileSize when the upstream gave them (or NarHash
 * and NarSize for an uncompressed NAR), and always the decompressed NarHash/NarSize, which the
 * upstream's signature covers (FileHash and FileSize are the upstream's word only).
 */
function expectedFile(record: NarFileRecord): ExpectedFile {
  const expected: ExpectedFile = { compression: record.compression as Compression };
  const size = record.fileSize ?? (record.compression === 'none' ? record.narSize : undefined);
  if (size !== undefined) expected.size = size;
  const hash = record.fileHash ?? (record.compression === 'none' ? record.narHash : undefined);
  if (hash?.startsWith('sha256:')) expected.sha256 = decodeNix32(hash.slice('sha256:'.length));
  if (record.narHash.startsWith('sha256:')) {
    expected.contents = { sha256: decodeNix32(record.narHash.slice('sha256:'.length)), size: record.narSize };
  }
  return expected;
}

/**
 * The NAR file name we serve: the upstream's own when it already is `nar/<nix32>.nar<ext>`,
 * otherwise one derived from the file hash (or NAR hash) so odd upstream URLs still fit our route.
 */
export function servedNarName(narInfo: NarInfo): string {
  const ext = narFileExtension(narInfo.compression);
  const own = /^nar\/([^/?#]+)$/.exec(narInfo.url)?.[1];
  const match = own ? HASH_NAMED_NAR.exec(own) : null;
  if (own && match && (match[2] ?? '') === ext) return own;
  const hash = narInfo.fileHash ?? narInfo.narHash;
  return `${hash.nix32Digest()}.nar${ext}`;
}
