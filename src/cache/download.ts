// One upstream download of one NAR, shared by every client that asks for it meanwhile.
//
// The bytes go to a temp file; readers tail that file with positional reads on a descriptor the
// download keeps open, so a reader can attach at any moment (even while the file is being renamed
// into storage) and reads at its own pace: a slow client never slows the download, a client that
// goes away stops only its own reader, and memory stays flat whatever the NAR size.
//
// The bytes are verified as they arrive: the format the extension promises, the file hash and
// size (FileHash/FileSize, which the upstream chose), and the decompressed NAR's hash and size
// (NarHash/NarSize, which its signature covers), decompressed on the way. Nothing unverified is
// committed, and no reader is sent the last byte of what it asked for before the verdict: a client
// (or an HTTP cache in front) of a download that fails sees a broken transfer, never a clean end.

import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { close, fsync, openSync, read, unlink, write } from 'node:fs';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { formatMismatch, MAGIC_BYTES, type Compression } from '../nix';
import type { UpstreamBody } from '../upstream/pool';
import { NarHasher } from './nar-hash';
import { holdTempFile } from '../storage/temp-files';

const writeAsync = promisify(write);
const readAsync = promisify(read);
const fsyncAsync = promisify(fsync);
const closeAsync = promisify(close);

export interface ExpectedFile {
  compression: Compression;
  size?: number;
  /** sha256 digest of the file's bytes (FileHash). */
  sha256?: Buffer;
  /** What the decompressed NAR must be (NarHash, NarSize). */
  contents?: { sha256: Buffer; size: number };
}

export class NotFoundUpstream extends Error {}

export class VerificationError extends Error {}

/**
 * What a reader of a failed download errors with. The status is for a response whose headers are
 * not out yet (none was cacheable as good); once they are, the connection is simply cut.
 */
export class DownloadFailed extends Error {
  readonly statusCode = 502;
}

/** The temp file could not take the bytes: the file system is full (or over quota). */
export class StorageFull extends Error {}

/** A write failed for lack of space: the file system, SQLite or PostgreSQL (53100 disk_full). */
export function isNoSpace(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL' || code === '53100';
}

/** The file was committed by another instance while this one waited for the download lock. */
export class AlreadyStored extends Error {}

/** Opens another worker's temp file for reading; -1 when it is gone already. */
function openToFollow(file: string): number {
  try {
    return openSync(file, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return -1;
    throw error;
  }
}

type State = 'starting' | 'running' | 'done' | 'failed';

/** How many of the newest bytes of a download stay in memory for its readers. */
const RECENT_BYTES = 4 << 20;

/** Longest pause between two rounds of readers while the download runs. */
const MAX_READER_DELAY_MS = 100;

/** At most this many file reads for download readers at once, process-wide (libuv has 4 threads). */
class Limiter {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(private readonly max: number) {}
  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    try {
      return await work();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}
const fileReads = new Limiter(2);

/**
 * Where a download stands, as the worker running it tells the other workers of the instance
 * (cache/coordination.ts); they follow it with `NarDownload.follow`.
 */
export interface DownloadProgress {
  tempFile: string;
  bytesWritten: number;
  expectedSize: number | undefined;
  state: State;
  verified: boolean;
  /** The upstream's host name, for the metrics. */
  host?: string;
  error?: { kind: 'not-found' | 'already-stored' | 'failed'; message: string };
}

export interface NarDownloadOptions {
  name: string;
  tempDir: string;
  expected: ExpectedFile;
  /** Opens the upstream body; undefined when the upstream does not have it. */
  open: () => Promise<UpstreamBody | undefined>;
  /** Hands the verified temp file to storage. */
  commit: (tempFile: string, size: number) => Promise<void>;
  /** Set for a download another worker runs: its temp file is tailed, its state told by `apply`. */
  follow?: DownloadProgress;
}

export class NarDownload extends EventEmitter {
  readonly name: string;
  readonly tempFile: string;
  /** Bytes on disk so far; readers may read up to here. */
  bytesWritten = 0;
  /** Total size when known up front (narinfo FileSize or Content-Length). */
  expectedSize: number | undefined;
  state: State = 'starting';
  /** Set once every check passed (before the commit): readers may then send the end. */
  verified = false;
  /** Why the NarHash could not be checked (no decompressor), when FileHash alone vouched. */
  contentsUnchecked: string | undefined;
  error: Error | undefined;
  /** Resolves once the upstream has answered with a body (rejects if it has not got the file). */
  readonly ready: Promise<void>;
  /** Resolves once the file is verified and committed to storage. */
  readonly done: Promise<void>;

  private readonly fd: number;
  private readers = 0;
  private fdClosed = false;
  private readonly releaseTempFile: () => void;
  /** The newest bytes, kept while someone reads: readers that keep up never touch the disk. */
  private recent: Buffer[] = [];
  private recentStart = 0;
  private recentBytes = 0;
  private wake: Promise<void> | undefined;
  /** Time readers spent handing bytes to their sockets since the last round. */
  sendMs = 0;

  constructor(private readonly options: NarDownloadOptions) {
    super();
    this.setMaxListeners(0);
    this.name = options.name;
    this.expectedSize = options.expected.size;
    this.tempFile = options.follow?.tempFile ?? path.join(options.tempDir, `${options.name}.${randomBytes(6).toString('hex')}.part`);
    // Opened for reading and writing now, so that readers attaching later never race the rename.
    this.fd = options.follow ? openToFollow(this.tempFile) : openSync(this.tempFile, 'wx+', 0o644);
    // Gone already (renamed into storage, or removed after a failure): readers go to storage.
    if (this.fd < 0) this.fdClosed = true;
    // Held (not swept as a stale partial file) while this process has it open.
    this.releaseTempFile = holdTempFile(this.tempFile);
    let markReady!: () => void;
    let failReady!: (error: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      failReady = reject;
    });
    this.ready.catch(() => undefined);
    this.done = options.follow ? this.runFollowed(markReady, failReady, options.follow) : this.run(markReady, failReady);
    this.done.catch(() => undefined);
  }

  /** A download another worker runs, as its progress reports say (see `apply`). */
  static follow(name: string, progress: DownloadProgress): NarDownload {
    const unused = () => Promise.reject(new Error('a followed download is not run here'));
    return new NarDownload({ name, tempDir: '', expected: { compression: 'none' }, open: unused, commit: unused, follow: progress });
  }

  private settleFollowed?: (progress: DownloadProgress) => void;

  private runFollowed(markReady: () => void, failReady: (error: Error) => void, first: DownloadProgress): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.settleFollowed = (p) => {
        this.bytesWritten = Math.max(this.bytesWritten, p.bytesWritten);
        if (p.expectedSize !== undefined) this.expectedSize = p.expectedSize;
        if (p.verified) this.verified = true;
        if (p.state !== 'starting') markReady();
        if (p.state === 'failed' && this.state !== 'failed') {
          const message = p.error?.message ?? 'download failed in another worker';
          const kind = p.error?.kind;
          this.error = kind === 'not-found' ? new NotFoundUpstream(message) : kind === 'already-stored' ? new AlreadyStored(message) : new Error(message);
          this.state = 'failed';
          failReady(this.error);
          reject(this.error);
        } else if (p.state !== 'failed') {
          this.state = p.state;
          if (p.state === 'done') resolve();
        }
        this.emit('change');
        this.maybeCloseFd();
      };
      this.settleFollowed(first);
    });
  }

  /** Whether another worker runs this download (this process only tails it). */
  get followed(): boolean {
    return this.options.follow !== undefined;
  }

  /** The latest progress of a followed download (reports may repeat; bytes never go back). */
  apply(progress: DownloadProgress): void {
    this.settleFollowed?.(progress);
  }

  /** Where this download stands, for the workers following it. */
  progress(): DownloadProgress {
    const error = this.error;
    return {
      tempFile: this.tempFile,
      bytesWritten: this.bytesWritten,
      expectedSize: this.expectedSize,
      state: this.state,
      verified: this.verified,
      ...(error
        ? { error: { kind: error instanceof NotFoundUpstream ? 'not-found' : error instanceof AlreadyStored ? 'already-stored' : 'failed', message: error.message } }
        : {}),
    };
  }

  private async run(markReady: () => void, failReady: (error: Error) => void): Promise<void> {
    const hasher = new NarHasher(this.options.expected.compression);
    try {
      const upstream = await this.options.open();
      if (!upstream) throw new NotFoundUpstream(`upstream does not have ${this.name}`);
      if (this.expectedSize === undefined && upstream.contentLength !== undefined) {
        this.expectedSize = upstream.contentLength;
      }
      this.state = 'running';
      markReady();
      await pipeline(upstream.body, this.sink(hasher));
      await this.verify(hasher);
      this.verified = true;
      this.emit('change');
      await fsyncAsync(this.fd);
      await this.options.commit(this.tempFile, this.bytesWritten);
      this.state = 'done';
      this.emit('change');
    } catch (caught) {
      hasher.abort();
      const error = isNoSpace(caught) ? new StorageFull(`${this.name}: no space left for the download (${(caught as Error).message})`) : (caught as Error);
      this.error = error;
      this.state = 'failed';
      failReady(error);
      this.emit('change');
      unlink(this.tempFile, () => undefined);
      throw error;
    } finally {
      this.maybeCloseFd();
    }
  }

  private sink(hasher: NarHasher): Writable {
    // Chunks that queue up while a write is in flight go out together (writev): one trip to
    // the thread pool for many network chunks. The decompressor hashing the NAR gets them at the
    // same time.
    let head: Buffer | undefined = Buffer.alloc(0);
    const flush = (chunks: Buffer[], callback: (error?: Error | null) => void) => {
      const data = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      if (head) {
        head = Buffer.concat([head, data.subarray(0, MAGIC_BYTES - head.length)]);
        if (head.length >= MAGIC_BYTES) {
          const mismatch = formatMismatch(this.options.expected.compression, head);
          if (mismatch) return callback(new VerificationError(`${this.name}: ${mismatch}`));
          head = undefined;
        }
      }
      Promise.all([this.writeChunk(data), hasher.update(data)]).then(() => {
        this.remember(data);
        this.emit('change');
        callback();
      }, callback);
    };
    return new Writable({
      highWaterMark: 1 << 20,
      write: (chunk: Buffer, _encoding, callback) => flush([chunk], callback),
      writev: (chunks, callback) => flush(chunks.map((c) => c.chunk as Buffer), callback),
      final: (callback) => {
        // A file shorter than any signature is checked as it is.
        const mismatch = head ? formatMismatch(this.options.expected.compression, head) : undefined;
        callback(mismatch ? new VerificationError(`${this.name}: ${mismatch}`) : null);
      },
    });
  }

  /**
   * Resolves after the next change, in the event loop's check phase: all readers wake together,
   * after the upstream bytes that arrived in this turn were taken in. The download goes first;
   * however many readers there are, they cost it one turn each time, not one per reader.
   */
  private nextChange(): Promise<void> {
    this.wake ??= new Promise<void>((resolve) =>
      this.once('change', () => {
        const wake = () => {
          this.wake = undefined;
          resolve();
        };
        // While the download runs, readers get about as much of the event loop as it does: the
        // next round waits as long as the last one spent sending (bounded), so a herd of fast
        // readers cannot starve the upstream connection.
        const debt = this.state === 'running' ? Math.min(this.sendMs, MAX_READER_DELAY_MS) : 0;
        this.sendMs = 0;
        if (debt >= 1) setTimeout(wake, debt);
        else setImmediate(wake);
      }),
    );
    return this.wake;
  }

  /** Appends written bytes to the in-memory window (bounded; only while there are readers). */
  private remember(data: Buffer): void {
    if (this.readers === 0) {
      this.recent = [];
      this.recentBytes = 0;
      this.recentStart = this.bytesWritten;
      return;
    }
    this.recent.push(data);
    this.recentBytes += data.length;
    while (this.recentBytes - this.recent[0]!.length >= RECENT_BYTES) {
      const dropped = this.recent.shift()!;
      this.recentBytes -= dropped.length;
      this.recentStart += dropped.length;
    }
  }

  /** Bytes from `position` (before `limit`) if the window still has them. */
  private fromMemory(position: number, limit: number): Buffer | undefined {
    if (position < this.recentStart) return undefined;
    let offset = this.recentStart;
    for (const chunk of this.recent) {
      if (position < offset + chunk.length) return chunk.subarray(position - offset, Math.min(chunk.length, limit - offset));
      offset += chunk.length;
    }
    return undefined;
  }

  private async writeChunk(chunk: Buffer): Promise<void> {
    let offset = 0;
    while (offset < chunk.length) {
      const { bytesWritten: written } = await writeAsync(this.fd, chunk, offset, chunk.length - offset, this.bytesWritten);
      offset += written;
      this.bytesWritten += written;
    }
    const limit = this.options.expected.size ?? this.expectedSize;
    if (limit !== undefined && this.bytesWritten > limit) {
      throw new VerificationError(`${this.name}: upstream sent more than the expected ${limit} bytes`);
    }
  }

  private async verify(hasher: NarHasher): Promise<void> {
    const { size, sha256, contents, compression } = this.options.expected;
    const expectedSize = size ?? this.expectedSize;
    if (expectedSize !== undefined && this.bytesWritten !== expectedSize) {
      throw new VerificationError(`${this.name}: expected ${expectedSize} bytes, got ${this.bytesWritten}`);
    }
    const hashes = await hasher.finish();
    if (sha256 && !sha256.equals(hashes.file.digest)) throw new VerificationError(`${this.name}: file hash does not match the narinfo`);
    if (!contents) return;
    if (hashes.decoderUnavailable) {
      // No decompressor here: the file hash alone vouches for the bytes, if there is one.
      if (!sha256) throw new Error(`cannot verify a ${compression} NAR: ${hashes.decoderUnavailable}`);
      this.contentsUnchecked = hashes.decoderUnavailable;
      return;
    }
    if (hashes.decodeError) throw new VerificationError(`${this.name}: bytes do not decompress as ${compression}: ${hashes.decodeError}`);
    if (hashes.nar!.size !== contents.size || !hashes.nar!.digest.equals(contents.sha256)) {
      throw new VerificationError(`${this.name}: decompressed NAR does not match the narinfo's NarHash/NarSize`);
    }
  }

  /** A stream of the file from `start` (inclusive) to `end` (inclusive, default: the end). */
  createReader(start = 0, end?: number): Readable {
    // A closed descriptor number may already belong to another file: never read through it.
    if (this.fdClosed) throw this.error ?? new Error(`${this.name}: download already finished`);
    this.readers++;
    let position = start;
    const download = this;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      download.readers--;
      download.maybeCloseFd();
    };
    return new Readable({
      highWaterMark: 1 << 20,
      read(size) {
        download.nextChunk(position, end, size).then(
          (chunk) => {
            if (chunk === null) {
              this.push(null);
            } else {
              // Advance before pushing: push may ask for the next chunk straight away.
              position += chunk.length;
              const started = performance.now();
              this.push(chunk);
              download.sendMs += performance.now() - started;
            }
          },
          (error: Error) => this.destroy(error),
        );
      },
      destroy(error, callback) {
        release();
        callback(error);
      },
    }).once('end', release);
  }

  /**
   * The next available bytes at `position`, waiting for the download when it has none yet. Until
   * the bytes are verified, the last byte the reader asked for (the end of its range, or of the
   * file when its size is known) is held back, and a stream of unknown length is not ended: if
   * verification fails the reader errors instead, and the client's transfer breaks.
   */
  private async nextChunk(position: number, end: number | undefined, size: number): Promise<Buffer | null> {
    for (;;) {
      let limit = end === undefined ? this.bytesWritten : Math.min(this.bytesWritten, end + 1);
      if (!this.verified) {
        const last = end ?? (this.expectedSize !== undefined ? this.expectedSize - 1 : undefined);
        if (last !== undefined) limit = Math.min(limit, last);
      }
      if (position < limit) {
        const recent = this.fromMemory(position, limit);
        if (recent) return recent;
        // A reader behind the window reads the file; few at a time, so that the thread pool
        // always has room for the download's own writes (it must not wait behind 200 readers).
        const length = Math.min(limit - position, Math.max(size, 1 << 20));
        const buffer = Buffer.allocUnsafe(length);
        const { bytesRead } = await fileReads.run(() => readAsync(this.fd, buffer, 0, length, position));
        return bytesRead === length ? buffer : buffer.subarray(0, bytesRead);
      }
      // Verified (even if storing it failed afterwards): everything up to `limit` was good.
      if (this.verified) return null;
      if (this.state === 'failed') throw new DownloadFailed(`NAR download failed: ${this.error?.message ?? 'unknown error'}`);
      await this.nextChange();
    }
  }

  private maybeCloseFd(): void {
    if (this.fdClosed || this.readers > 0 || (this.state !== 'done' && this.state !== 'failed')) return;
    this.fdClosed = true;
    this.releaseTempFile();
    void closeAsync(this.fd).catch(() => undefined);
  }
}
