// A stream of part of an open file whose read buffers are used again once the consumer is done
// with them (see `recycle`). Serving a NAR from disk otherwise allocates a fresh 1 MiB buffer per
// read: V8 counts those as external memory and answers a few hundred MiB of them with full
// garbage collections of the whole heap, which cost more CPU than the reads themselves (measured
// with bench/: about half of the CPU of a NAR hit). With recycling, a hit allocates nothing per MiB.

import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';

/** Size of one read. Big enough that the syscalls per MiB are few. */
export const READ_CHUNK = 1 << 20;
/** Idle buffers kept for the next reader; more are allocated (and collected) under concurrency. */
const POOL_LIMIT = 16;
const pool: Buffer[] = [];

function takeBuffer(): Buffer {
  return pool.pop() ?? Buffer.allocUnsafeSlow(READ_CHUNK);
}

/** A readable that can take its chunks back: the `recycle` capability `sendStream` looks for. */
export interface RecyclingReadable extends Readable {
  /** The consumer no longer needs `chunk` (it was written out): its memory may be read into again. */
  recycle(chunk: Buffer): void;
}

export function isRecycling(stream: Readable): stream is RecyclingReadable {
  return typeof (stream as Partial<RecyclingReadable>).recycle === 'function';
}

/**
 * Streams bytes `start`..`end` (inclusive) of `handle`, which it closes when it ends or is
 * destroyed. Chunks are views of pooled buffers; a consumer that never calls `recycle` is
 * still correct (the buffers are then simply collected).
 */
export class FileRangeReader extends Readable implements RecyclingReadable {
  private position: number;
  private readonly end: number;

  constructor(
    private readonly handle: FileHandle,
    start: number,
    end: number,
  ) {
    // One chunk ahead at most: the consumer holds the others while they are being written.
    super({ highWaterMark: READ_CHUNK });
    this.position = start;
    this.end = end;
  }

  override _read(): void {
    const left = this.end - this.position + 1;
    if (left <= 0) {
      this.push(null);
      return;
    }
    const buffer = takeBuffer();
    const length = Math.min(left, buffer.length);
    this.handle.read(buffer, 0, length, this.position).then(
      ({ bytesRead }) => {
        if (bytesRead === 0) {
          pool.push(buffer);
          this.destroy(new Error(`file ended ${left} bytes early`));
          return;
        }
        this.position += bytesRead;
        this.push(buffer.subarray(0, bytesRead));
      },
      (error: Error) => {
        pool.push(buffer);
        this.destroy(error);
      },
    );
  }

  recycle(chunk: Buffer): void {
    // Only whole buffers of our own size go back, and each only once: two readers sharing one
    // buffer would hand out each other's bytes.
    if (chunk.byteOffset !== 0 || chunk.buffer.byteLength !== READ_CHUNK || pool.length >= POOL_LIMIT) return;
    if (pool.some((b) => b.buffer === chunk.buffer)) return;
    pool.push(Buffer.from(chunk.buffer, 0, READ_CHUNK));
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.handle.close().then(
      () => callback(error),
      () => callback(error),
    );
  }
}
