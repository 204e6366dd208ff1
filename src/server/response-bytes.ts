// Bytes written for one response, headers included. A connection's byte count is shared by the
// responses on it, and with pipelining the next request arrives (and its hooks run) while the
// previous response is still being written: so the count is taken when the response gets the
// socket to itself (at once, or when the previous one finishes) and again when it finishes,
// before Node hands the socket to the next one. No closure is allocated per request.

import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

const AT_START = Symbol('ncps.bytesAtStart');
const AT_FINISH = Symbol('ncps.bytesAtFinish');
const SOCKET = Symbol('ncps.socket');

interface Tracked extends ServerResponse {
  [AT_START]?: number;
  [AT_FINISH]?: number;
  [SOCKET]?: Socket;
}

function onSocket(this: Tracked, socket: Socket): void {
  this[SOCKET] = socket;
  this[AT_START] = socket.bytesWritten;
}

function onFinish(this: Tracked): void {
  const socket = this[SOCKET];
  if (socket) this[AT_FINISH] = socket.bytesWritten;
}

/** Call when the request arrives, before anything of its response is written. */
export function trackResponseBytes(response: ServerResponse): void {
  const res = response as Tracked;
  if (res.socket) onSocket.call(res, res.socket);
  else res.once('socket', onSocket);
  // Before Node's own 'finish' listener, which passes the socket on to the next response.
  res.prependOnceListener('finish', onFinish);
}

/** The bytes written for the response so far (all of them, once it finished). */
export function responseBytes(response: ServerResponse): number {
  const res = response as Tracked;
  const socket = res[SOCKET];
  const start = res[AT_START];
  if (!socket || start === undefined) return 0;
  return (res[AT_FINISH] ?? socket.bytesWritten) - start;
}
