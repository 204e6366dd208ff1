// What the HTTP layer itself refuses (before any route runs) is answered like everything else:
// a status and a one-line plain-text body. Fastify and Node would answer JSON here.

import type { Socket } from 'node:net';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';

/** Fastify's `frameworkErrors`: malformed URLs, over-long path segments. */
export function answerFrameworkError(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  const status = error.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 414 : (error.statusCode ?? 400);
  const message = error.code === 'FST_ERR_BAD_URL' ? 'malformed URL' : error.code === 'FST_ERR_MAX_PARAM_LENGTH' ? 'URL path segment too long' : error.message;
  void reply.code(status < 400 || status >= 600 ? 400 : status).type('text/plain; charset=utf-8').send(`${message}\n`);
}

/** The server's `clientError`: requests Node cannot parse (bad framing, oversized headers, timeouts). */
export function answerClientError(error: NodeJS.ErrnoException, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, reason, text] =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'Request Timeout', 'request not received in time']
      : error.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request Header Fields Too Large', 'request headers too large']
        : [400, 'Bad Request', 'malformed HTTP request'];
  if (socket.writable) {
    const body = `${text}\n`;
    socket.write(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(error);
}
