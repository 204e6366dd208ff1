// The messages between the supervisor and its workers, over node:cluster's IPC channel. Each
// carries CHANNEL so that node's own cluster messages (and prom-client's) are never mistaken for
// ours. Requests get exactly one reply with the same id; notices get none.

import type { DownloadProgress } from '../cache/download';

export const CHANNEL = 'ncps-workers';

export type Request =
  | { op: 'lock.acquire'; key: string; ttlMs: number }
  | { op: 'lock.try'; key: string; ttlMs: number }
  | { op: 'lock.release'; lockId: number }
  | { op: 'download.claim'; name: string }
  | { op: 'metrics.gather' };

export type Notice =
  /** Worker → supervisor after listening; supervisor → nobody. */
  | { op: 'ready' }
  /** Owner → supervisor → the workers following that download. */
  | { op: 'download.progress'; name: string; progress: DownloadProgress }
  /** Worker → supervisor → every other worker. */
  | { op: 'forget'; hash: string }
  /** Supervisor → worker: send your metrics (as prom-client JSON) for a scrape another worker got. */
  | { op: 'metrics.collect'; gatherId: number }
  | { op: 'metrics.collected'; gatherId: number; metrics: unknown[] };

export type Envelope =
  | ({ channel: typeof CHANNEL; kind: 'request'; id: number } & Request)
  | { channel: typeof CHANNEL; kind: 'reply'; id: number; value?: unknown; error?: string }
  | ({ channel: typeof CHANNEL; kind: 'notice' } & Notice);

export function isEnvelope(message: unknown): message is Envelope {
  return typeof message === 'object' && message !== null && (message as { channel?: unknown }).channel === CHANNEL;
}

/** Replies to lock requests: a lock id, or null when tryAcquire found it taken. */
export type LockReply = { lockId: number | null };
