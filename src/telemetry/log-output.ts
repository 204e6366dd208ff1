// Where log lines go: standard output, written so that a broken or stalled reader can never stop
// the process. For a pipe or socket (`ncps serve | head`, journald, a log shipper) writes go
// through the event loop on a non-blocking descriptor with a bounded buffer: what does not fit,
// or what the reader will never take (EPIPE), is dropped and counted, never waited for. Files and
// terminals are written directly (they do not stall); a failing write is counted the same way.
//
// Offline commands use the blocking mode: their output is their result, and a full pipe should
// hold them back, not lose lines; a reader that went away still only costs the lost lines.

import { fstatSync, writeSync } from 'node:fs';
import net from 'node:net';

/** What the event loop may hold for a slow reader before lines are dropped. */
export const DEFAULT_MAX_BUFFERED_BYTES = 1 << 20;

export interface LogOutputOptions {
  /** 'nonblocking' for the server; 'blocking' for commands that end. */
  mode: 'nonblocking' | 'blocking';
  maxBufferedBytes?: number;
  /** Turns each JSON line into what is written (pino-pretty's formatter on a terminal). */
  format?: (line: string) => string;
}

export class LogOutput {
  /** Lines that were not written: buffer full, reader gone, write failed. */
  dropped = 0;
  private readonly socket: net.Socket | undefined;
  private broken = false;
  private readonly maxBufferedBytes: number;
  private readonly format: ((line: string) => string) | undefined;
  /** One callback for every socket write (no allocation per line). */
  private readonly onWritten = (error?: Error | null) => {
    if (error) this.dropped++;
  };

  constructor(
    private readonly fd: number,
    options: LogOutputOptions,
  ) {
    this.maxBufferedBytes = options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
    this.format = options.format;
    if (options.mode === 'nonblocking' && isPipeOrSocket(fd)) {
      // libuv switches the descriptor to non-blocking mode and writes when the reader is ready.
      this.socket = new net.Socket({ fd, readable: false, writable: true });
      this.socket.on('error', () => {
        this.broken = true;
      });
      this.socket.unref();
    }
  }

  /** pino's destination interface. */
  write(line: string): void {
    if (this.broken) {
      this.dropped++;
      return;
    }
    const text = this.format ? this.format(line) : line;
    const socket = this.socket;
    if (socket) {
      if (socket.destroyed || socket.writableLength + text.length > this.maxBufferedBytes) {
        this.dropped++;
        return;
      }
      socket.write(text, this.onWritten);
      return;
    }
    try {
      writeSync(this.fd, text);
    } catch (error) {
      this.dropped++;
      // A closed descriptor or a reader that is gone will not come back; a full disk may.
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EBADF' || code === 'EPIPE') this.broken = true;
    }
  }

  /** Waits (at most `timeoutMs`) until buffered lines are written; for a clean exit. */
  async flush(timeoutMs: number): Promise<void> {
    const socket = this.socket;
    if (!socket || this.broken || socket.destroyed || socket.writableLength === 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      function done() {
        clearTimeout(timer);
        socket!.off('drain', done);
        socket!.off('error', done);
        resolve();
      }
      socket.once('drain', done);
      socket.once('error', done);
    });
  }
}

function isPipeOrSocket(fd: number): boolean {
  try {
    const stat = fstatSync(fd);
    return stat.isFIFO() || stat.isSocket();
  } catch {
    return false;
  }
}
