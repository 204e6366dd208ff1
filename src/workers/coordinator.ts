// The supervisor's side of the Coordination seam: it decides what must be decided once for the
// workers of an instance. Locks (held in one LocalLocker for all of them), which worker downloads
// which NAR (the others follow its progress), forgetting a store path everywhere, and collecting
// every worker's metrics for a scrape. It keeps no cache state of its own.

import type { Worker } from 'node:cluster';
import type { DownloadProgress } from '../cache/download';
import { LocalLocker } from '../lock/local';
import type { Lock } from '../lock/locker';
import type { Logger } from '../telemetry/logger';
import { CHANNEL, isEnvelope, type Envelope, type Notice, type Request } from './protocol';

/** How long a scrape waits for the other workers' metrics. */
const GATHER_TIMEOUT_MS = 2_000;

interface ClaimedDownload {
  owner: number;
  progress?: DownloadProgress;
  followers: Set<number>;
  /** Claims that came before the owner's first report: answered with it. */
  waiting: Array<{ worker: number; answer: (value: unknown) => void }>;
}

interface Gather {
  pending: Set<number>;
  results: unknown[][];
  finish: () => void;
}

export class Coordinator {
  private readonly locker = new LocalLocker();
  private readonly locks = new Map<number, { lock: Lock; worker: number }>();
  private nextLockId = 1;
  private readonly downloads = new Map<string, ClaimedDownload>();
  private readonly workers = new Map<number, Worker>();
  private readonly gathers = new Map<number, Gather>();
  private nextGatherId = 1;

  constructor(private readonly logger: Logger) {}

  /** Starts serving a worker's requests (call right after forking it). */
  attach(worker: Worker, onReady: () => void): void {
    this.workers.set(worker.id, worker);
    worker.on('message', (message: unknown) => {
      if (!isEnvelope(message)) return;
      if (message.kind === 'request') {
        this.handle(worker.id, message).then(
          (value) => this.send(worker.id, { channel: CHANNEL, kind: 'reply', id: message.id, value }),
          (error: Error) => this.send(worker.id, { channel: CHANNEL, kind: 'reply', id: message.id, error: error.message }),
        );
      } else if (message.kind === 'notice') {
        if (message.op === 'ready') onReady();
        else this.notice(worker.id, message);
      }
    });
  }

  /** A worker is gone: its locks are released, its downloads fail for their followers. */
  detach(worker: Worker): void {
    const id = worker.id;
    this.workers.delete(id);
    for (const [lockId, held] of this.locks) {
      if (held.worker !== id) continue;
      this.locks.delete(lockId);
      void held.lock.release();
    }
    for (const [name, claim] of this.downloads) {
      claim.followers.delete(id);
      claim.waiting = claim.waiting.filter((w) => w.worker !== id);
      if (claim.owner !== id) continue;
      const next = claim.waiting.shift();
      if (!claim.progress && next) {
        // It never started: the next worker asking runs it instead.
        claim.owner = next.worker;
        next.answer({ owner: true });
        continue;
      }
      this.downloads.delete(name);
      const failed: DownloadProgress = {
        ...(claim.progress ?? { tempFile: '', bytesWritten: 0, expectedSize: undefined, verified: false }),
        state: 'failed',
        error: { kind: 'failed', message: 'the worker running this download stopped' },
      };
      for (const follower of claim.followers) this.send(follower, { channel: CHANNEL, kind: 'notice', op: 'download.progress', name, progress: failed });
    }
    for (const gather of this.gathers.values()) {
      if (gather.pending.delete(id) && gather.pending.size === 0) gather.finish();
    }
  }

  async close(): Promise<void> {
    await this.locker.close();
  }

  private async handle(worker: number, request: Request): Promise<unknown> {
    switch (request.op) {
      case 'lock.acquire':
        return { lockId: this.hold(worker, await this.locker.acquire(request.key, request.ttlMs)) };
      case 'lock.try': {
        const lock = await this.locker.tryAcquire(request.key, request.ttlMs);
        return { lockId: lock ? this.hold(worker, lock) : null };
      }
      case 'lock.release': {
        const held = this.locks.get(request.lockId);
        this.locks.delete(request.lockId);
        await held?.lock.release();
        return {};
      }
      case 'download.claim':
        return this.claim(worker, request.name);
      case 'metrics.gather':
        return this.gather(worker);
    }
  }

  /** Keeps a granted lock under an id; a lock granted to a worker that is gone is let go at once. */
  private hold(worker: number, lock: Lock): number | null {
    if (!this.workers.has(worker)) {
      void lock.release();
      return null;
    }
    const lockId = this.nextLockId++;
    this.locks.set(lockId, { lock, worker });
    return lockId;
  }

  private claim(worker: number, name: string): Promise<unknown> | unknown {
    const claim = this.downloads.get(name);
    if (!claim) {
      this.downloads.set(name, { owner: worker, followers: new Set(), waiting: [] });
      return { owner: true };
    }
    if (claim.owner === worker) return { owner: true };
    if (!claim.progress) return new Promise((answer) => claim.waiting.push({ worker, answer }));
    claim.followers.add(worker);
    return { owner: false, progress: claim.progress };
  }

  private notice(worker: number, notice: Notice): void {
    switch (notice.op) {
      case 'download.progress': {
        const claim = this.downloads.get(notice.name);
        if (!claim || claim.owner !== worker) return;
        claim.progress = notice.progress;
        for (const w of claim.waiting.splice(0)) {
          claim.followers.add(w.worker);
          w.answer({ owner: false, progress: notice.progress });
        }
        for (const follower of claim.followers) this.send(follower, { channel: CHANNEL, kind: 'notice', ...notice });
        if (notice.progress.state === 'done' || notice.progress.state === 'failed') this.downloads.delete(notice.name);
        return;
      }
      case 'forget':
        for (const id of this.workers.keys()) if (id !== worker) this.send(id, { channel: CHANNEL, kind: 'notice', ...notice });
        return;
      case 'metrics.collected': {
        const gather = this.gathers.get(notice.gatherId);
        if (!gather || !gather.pending.delete(worker)) return;
        gather.results.push(notice.metrics);
        if (gather.pending.size === 0) gather.finish();
        return;
      }
      default:
        return;
    }
  }

  /** Every other worker's metrics (prom-client JSON), for a scrape `asking` answers. */
  private gather(asking: number): Promise<unknown[][]> {
    const gatherId = this.nextGatherId++;
    return new Promise((resolve) => {
      const others = [...this.workers.keys()].filter((id) => id !== asking && this.workers.get(id)?.isConnected());
      const gather: Gather = {
        pending: new Set(others),
        results: [],
        finish: () => {
          clearTimeout(timer);
          this.gathers.delete(gatherId);
          if (gather.pending.size > 0) this.logger.warn({ missing: gather.pending.size }, 'metrics: some workers did not answer in time; their figures are left out');
          resolve(gather.results);
        },
      };
      const timer = setTimeout(() => gather.finish(), GATHER_TIMEOUT_MS);
      timer.unref();
      this.gathers.set(gatherId, gather);
      if (others.length === 0) return gather.finish();
      for (const id of others) this.send(id, { channel: CHANNEL, kind: 'notice', op: 'metrics.collect', gatherId });
    });
  }

  private send(worker: number, message: Envelope): void {
    const target = this.workers.get(worker);
    if (!target?.isConnected()) return;
    target.send(message, (error: Error | null) => {
      if (error) this.logger.debug({ worker, err: error.message }, 'could not reach a worker');
    });
  }
}
