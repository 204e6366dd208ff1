// The Coordination seam: what the worker processes of one instance decide together (see
// src/workers/). One process needs none of it: its own maps already single-flight everything.
// Across instances, the Locker (Redis) still decides; this only keeps the workers of one instance
// from competing with each other, and lets them share what one of them is downloading.

import type { DownloadProgress } from './download';

export type DownloadClaim = { owner: true } | { owner: false; progress: DownloadProgress };

export interface Coordination {
  /**
   * Asks to run the download of a NAR: granted unless another worker runs it, whose progress is
   * returned instead (and then told to `followDownload` listeners until it ends).
   */
  claimDownload(name: string): Promise<DownloadClaim>;
  /** The owner's progress (latest wins); the last report, done or failed, ends the claim. */
  publishDownload(name: string, progress: DownloadProgress): void;
  /** Calls `onProgress` with each report on a download claimed by another worker; returns the stop. */
  followDownload(name: string, onProgress: (progress: DownloadProgress) => void): () => void;
  /** Tells the other workers to forget what they remember about a store path (see Cache.forget). */
  forgetEverywhere(hash: string): void;
  /** Called when another worker asks to forget a store path. */
  onForget(handler: (hash: string) => void): void;
}
