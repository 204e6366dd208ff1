// One upstream download of one NAR, shared by every client that asks for it meanwhile.
//
// The bytes go to a temp file; readers tail that file with positional reads on a descriptor the
// download keeps open, so a reader can attach at any moment (even while the file is being renamed
// into storage) and reads at its own pace: a slow client never slows the download, a client that
// goes away stops only its own reader, and memory stays flat whatever the NAR size. Size and hash
// are checked before the file is handed to storage, so nothing unverified is ever committed.

import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { close, fsync, openSync, read, unlink, write } from 'node:fs';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import type { Compression } from '../nix';
import type { UpstreamBody } from '../upstream/pool';
import { hashDecompressed } from './nar-hash';

const writeAsync = promisify(write);
const readAsync = promisify(read);
const fsyncAsync = promisify(fsync);
const closeAsync = promisify(close);

export interface ExpectedFile {
  size?: number;
  /** sha256 digest of the file's bytes. */
  sha256?: Buffer;
  /** When the file hash is unknown: what the decompressed NAR must be (NarHash, NarSize). */
  contents?: { compression: Compression; sha256: Buffer; size: number };
}

export class NotFoundUpstream extends Error {}

export class VerificationError extends Error {}

/** The file was committed by another instance while this one waited for the download lock. */
export class AlreadyStored extends Error {}

type State = 'starting' | 'running' | 'done' | 'failed';

export interface NarDownloadOptions {
  name: string;
  tempDir: string;
  expected: ExpectedFile;
  /** Opens the upstream body; undefined when the upstream does not have it. */
  open: () => Promise<UpstreamBody | undefined>;
  /** Hands the verified temp file to storage. */
  commit: (tempFile: string, size: number) => Promise<void>;
}

export class NarDownload extends EventEmitter {
  readonly name: string;
  readonly tempFile: string;
  /** Bytes on disk so far; readers may read up to here. */
  bytesWritten = 0;
  /** Total size when known up front (narinfo FileSize or Content-Length). */
  expectedSize: number | undefined;
  state: State = 'starting';
  error: Error | undefined;
  /** Resolves once the upstream has answered with a body (rejects if it has not got the file). */
  readonly ready: Promise<void>;
  /** Resolves once the file is verified and committed to storage. */
  readonly done: Promise<void>;

  private readonly fd: number;
  private readers = 0;
  private fdClosed = false;

  constructor(private readonly options: NarDownloadOptions) {
    super();
    this.setMaxListeners(0);
    this.name = options.name;
    this.expectedSize = options.expected.size;
    this.tempFile = path.join(options.tempDir, `${options.name}.${randomBytes(6).toString('hex')}.part`);
    // Opened for reading and writing now, so that readers attaching later never race the rename.
    this.fd = openSync(this.tempFile, 'wx+', 0o644);
    let markReady!: () => void;
    let failReady!: (error: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      failReady = reject;
    });
    this.ready.catch(() => undefined);
    this.done = this.run(markReady, failReady);
    this.done.catch(() => undefined);
  }

  private async run(markReady: () => void, failReady: (error: Error) => void): Promise<void> {
    try {
      const upstream = await this.options.open();
      if (!upstream) throw new NotFoundUpstream(`upstream does not have ${this.name}`);
      if (this.expectedSize === undefined && upstream.contentLength !== undefined) {
        this.expectedSize = upstream.contentLength;
      }
      this.state = 'running';
      markReady();
      const hash = createHash('sha256');
      await pipeline(upstream.body, this.sink(hash));
      this.verify(hash.digest());
      await this.verifyContents();
      await fsyncAsync(this.fd);
      await this.options.commit(this.tempFile, this.bytesWritten);
      this.state = 'done';
      this.emit('change');
    } catch (error) {
      this.error = error as Error;
      this.state = 'failed';
      failReady(this.error);
      this.emit('change');
      unlink(this.tempFile, () => undefined);
      throw error;
    } finally {
      this.maybeCloseFd();
    }
  }

  private sink(hash: ReturnType<typeof createHash>): Writable {
    // Chunks that queue up while a write is in flight go out together (writev): one trip to
    // the thread pool for many network chunks.
    const flush = (chunks: Buffer[], callback: (error?: Error | null) => void) => {
      const data = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      this.writeChunk(data).then(() => {
        hash.update(data);
        this.emit('change');
        callback();
      }, callback);
    };
    return new Writable({
      highWaterMark: 1 << 20,
      write: (chunk: Buffer, _encoding, callback) => flush([chunk], callback),
      writev: (chunks, callback) => flush(chunks.map((c) => c.chunk as Buffer), callback),
    });
  }

  private async writeChunk(chunk: Buffer): Promise<void> {
    let offset = 0;
    while (offset < chunk.length) {
      const { bytesWritten: written } = await writeAsync(this.fd, chunk, offset, chunk.length - offset, this.bytesWritten);
      offset += written;
      this.bytesWritten += written;
    }
    const limit = this.options.expected.size;
    if (limit !== undefined && this.bytesWritten > limit) {
      throw new VerificationError(`${this.name}: upstream sent more than the expected ${limit} bytes`);
    }
  }

  private verify(digest: Buffer): void {
    const { size, sha256 } = this.options.expected;
    if (size !== undefined && this.bytesWritten !== size) {
      throw new VerificationError(`${this.name}: expected ${size} bytes, got ${this.bytesWritten}`);
    }
    if (sha256 && !sha256.equals(digest)) {
      throw new VerificationError(`${this.name}: file hash does not match the narinfo`);
    }
  }

  private async verifyContents(): Promise<void> {
    const contents = this.options.expected.contents;
    if (!contents) return;
    const actual = await hashDecompressed(this.tempFile, contents.compression);
    if (actual.size !== contents.size || !actual.sha256.equals(contents.sha256)) {
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
              this.push(chunk);
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

  /** The next available bytes at `position`, waiting for the download when it has none yet. */
  private async nextChunk(position: number, end: number | undefined, size: number): Promise<Buffer | null> {
    for (;;) {
      const limit = end === undefined ? this.bytesWritten : Math.min(this.bytesWritten, end + 1);
      if (position < limit) {
        const length = Math.min(limit - position, Math.max(size, 1 << 20));
        const buffer = Buffer.allocUnsafe(length);
        const { bytesRead } = await readAsync(this.fd, buffer, 0, length, position);
        return bytesRead === length ? buffer : buffer.subarray(0, bytesRead);
      }
      if (this.state === 'failed') throw this.error ?? new Error('download failed');
      if (this.state === 'done' || (end !== undefined && position > end)) return null;
      await once(this, 'change');
    }
  }

  private maybeCloseFd(): void {
    if (this.fdClosed || this.readers > 0 || (this.state !== 'done' && this.state !== 'failed')) return;
    this.fdClosed = true;
    void closeAsync(this.fd).catch(() => undefined);
  }
}
