// Writes a NAR stream to the response ourselves instead of through fastify's pipe, so that each
// chunk can go back to its reader once the socket has taken it (see storage/file-reader.ts):
// a NAR hit then reuses the same few buffers from the first byte to the last.

import type { FastifyReply } from 'fastify';
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { isRecycling, type RecyclingReadable } from '../storage/file-reader';

/** Chunks handed to the socket and not yet written out: one being sent while the next is read. */
const IN_FLIGHT = 2;

/**
 * Sends `stream` as the body of `reply` with the status and headers already set on it. The reply
 * is hijacked (fastify's onSend hooks do not run; onResponse hooks do, on the response's finish).
 * Streams that cannot recycle go through fastify as usual.
 */
export function sendStream(reply: FastifyReply, stream: Readable): FastifyReply {
  if (!isRecycling(stream)) return reply.send(stream);
  reply.hijack();
  const res = reply.raw;
  res.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders);
  pump(stream, res);
  return reply;
}

function pump(source: RecyclingReadable, res: ServerResponse): void {
  let inFlight = 0;
  let stopped = false;
  const stop = (error?: Error) => {
    if (stopped) return;
    stopped = true;
    source.destroy();
    // Headers are out: an error can only cut the connection, so the client sees a short body.
    if (error) res.destroy(error);
  };
  source.on('data', (chunk: Buffer) => {
    inFlight++;
    if (inFlight >= IN_FLIGHT) source.pause();
    res.write(chunk, (error) => {
      inFlight--;
      // After an error the socket may still reference the chunk: leave it to the collector.
      if (error) return stop(error);
      source.recycle(chunk);
      if (!stopped && inFlight < IN_FLIGHT) source.resume();
    });
  });
  source.once('end', () => {
    if (!stopped) res.end();
  });
  source.once('error', (error) => stop(error));
  // The client went away (or the response is complete): stop reading.
  res.once('close', () => stop());
}
