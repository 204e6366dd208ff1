// Clients that hold resources without making progress are disconnected, and the number of
// connections stays below what the process can hold open:
//
// - a response the client has stopped reading (bytes queued, none taken for --server-send-timeout)
//   is cut: otherwise each such connection pins its buffers and an open file for good;
// - an upload whose body delivers less than MIN_UPLOAD_PROGRESS bytes in --server-upload-body-timeout
//   is cut (its temporary file is then removed by the upload path): a drip of bytes is no upload;
// - at most --server-max-connections at once (by default what the open-files limit allows, two
//   descriptors per connection — its socket and a NAR file — with room kept for the rest).
//
// Idle keep-alive connections and responses waiting on an upstream are not "stalled": nothing is
// queued for them. One sweep a second looks at every connection; no timer per connection.

import { readFileSync } from 'node:fs';
import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../telemetry/logger';

/** Bytes an upload body must deliver per --server-upload-body-timeout. */
export const MIN_UPLOAD_PROGRESS = 16 * 1024;

/** Descriptors kept for the database, temp files, upstream connections and the rest. */
const RESERVED_DESCRIPTORS = 64;

export interface ConnectionGuardOptions {
  /** 0 disables. */
  sendTimeoutMs: number;
  /** 0 disables. */
  uploadBodyTimeoutMs: number;
  /** 0: derived from the open-files limit. */
  maxConnections: number;
  logger: Logger;
  /** How often connections are looked at. Default 1 s. */
  sweepMs?: number;
}

interface Watched {
  socket: Socket;
  /** Send side: the last time queued bytes went out (or nothing was queued). */
  lastSendProgress: number;
  sentMark: number;
  queuedMark: number;
  /** Receive side, while a request body is being read. */
  upload?: { request: IncomingMessage; since: number; bytesMark: number };
}

/** The soft limit on open files of this process, if it can be read. */
export function openFilesLimit(): number | undefined {
  try {
    const line = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return line && line[1] !== 'unlimited' ? Number(line[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** The connection cap for a configured value (0: from the open-files limit; none when unknown). */
export function effectiveMaxConnections(configured: number, limit: number | undefined): number | undefined {
  if (configured > 0) return configured;
  if (limit === undefined) return undefined;
  return Math.max(16, Math.floor((limit - RESERVED_DESCRIPTORS) / 2));
}

export class ConnectionGuard {
  private readonly watched = new Map<Socket, Watched>();
  private readonly timer: NodeJS.Timeout;
  private lastLimitWarning = 0;
  readonly maxConnections: number | undefined;

  constructor(
    server: Server,
    private readonly options: ConnectionGuardOptions,
  ) {
    this.maxConnections = effectiveMaxConnections(options.maxConnections, openFilesLimit());
    if (this.maxConnections !== undefined) server.maxConnections = this.maxConnections;
    server.on('connection', (socket: Socket) => {
      this.watched.set(socket, { socket, lastSendProgress: Date.now(), sentMark: 0, queuedMark: 0 });
      socket.once('close', () => this.watched.delete(socket));
    });
    server.on('drop', () => {
      const now = Date.now();
      if (now - this.lastLimitWarning < 60_000) return;
      this.lastLimitWarning = now;
      options.logger.warn({ maxConnections: this.maxConnections }, 'connection limit reached: new connections are refused (see --server-max-connections)');
    });
    server.on('request', (request: IncomingMessage) => {
      const hasBody = request.headers['transfer-encoding'] !== undefined || Number(request.headers['content-length'] ?? 0) > 0;
      const entry = this.watched.get(request.socket);
      if (!hasBody || !entry) return;
      entry.upload = { request, since: Date.now(), bytesMark: request.socket.bytesRead };
      const done = () => {
        if (entry.upload?.request === request) delete entry.upload;
      };
      request.once('end', done);
      request.once('close', done);
    });
    this.timer = setInterval(() => this.sweep(), options.sweepMs ?? 1_000);
    this.timer.unref();
  }

  private sweep(): void {
    const now = Date.now();
    const { sendTimeoutMs, uploadBodyTimeoutMs, logger } = this.options;
    for (const entry of this.watched.values()) {
      const { socket } = entry;
      if (socket.destroyed) continue;
      if (sendTimeoutMs > 0) {
        const queued = socket.writableLength;
        const sent = socket.bytesWritten;
        if (queued === 0 || sent !== entry.sentMark || queued !== entry.queuedMark) {
          entry.lastSendProgress = now;
          entry.sentMark = sent;
          entry.queuedMark = queued;
        } else if (now - entry.lastSendProgress >= sendTimeoutMs) {
          logger.warn({ client: socket.remoteAddress, queuedBytes: queued, stalledMs: now - entry.lastSendProgress }, 'client stopped reading; connection closed');
          socket.destroy();
          continue;
        }
      }
      const upload = entry.upload;
      if (uploadBodyTimeoutMs > 0 && upload && now - upload.since >= uploadBodyTimeoutMs) {
        const received = socket.bytesRead - upload.bytesMark;
        if (received < MIN_UPLOAD_PROGRESS) {
          logger.warn(
            { client: socket.remoteAddress, url: upload.request.url, receivedBytes: received, windowMs: now - upload.since },
            'upload body too slow; connection closed',
          );
          socket.destroy();
          continue;
        }
        upload.since = now;
        upload.bytesMark = socket.bytesRead;
      }
    }
  }

  close(): void {
    clearInterval(this.timer);
  }
}
