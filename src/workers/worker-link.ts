// A worker's side of the Coordination seam: requests to the supervisor (locks, download claims,
// metrics of the other workers) and the notices it passes on (download progress, forgetting).

import { AggregatorRegistry, type Registry, type RegistryContentType } from 'prom-client';
import type { Coordination, DownloadClaim } from '../cache/coordination';
import type { DownloadProgress } from '../cache/download';
import type { Lock, Locker } from '../lock/locker';
import { CHANNEL, isEnvelope, type Envelope, type LockReply, type Notice, type Request } from './protocol';

/** Set by the supervisor in each worker's environment: which worker it is (0 runs LRU). */
export const WORKER_INDEX_ENV = 'NCPS_WORKER_INDEX';

type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

export class WorkerLink implements Coordination {
  /** Locks held for all workers by the supervisor. */
  readonly locker: Locker;
  /** Resolves when the supervisor is gone (the IPC channel closed). */
  readonly disconnected: Promise<void>;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  private readonly followers = new Map<string, Set<(progress: DownloadProgress) => void>>();
  private readonly forgetHandlers: Array<(hash: string) => void> = [];
  private metricsSource: (() => Promise<MetricsJson>) | undefined;
  private connected = true;

  constructor(readonly index: number) {
    this.locker = new SupervisorLocker(this);
    process.on('message', (message: unknown) => this.onMessage(message));
    this.disconnected = new Promise<void>((resolve) =>
      process.once('disconnect', () => {
        this.connected = false;
        for (const { reject } of this.pending.values()) reject(new Error('the supervisor is gone'));
        this.pending.clear();
        resolve();
      }),
    );
  }

  /** Only the first worker runs the periodic work there must be one of (LRU, the orphan sweep). */
  get runsPeriodicWork(): boolean {
    return this.index === 0;
  }

  request<T>(body: Request): Promise<T> {
    if (!this.connected || !process.send) return Promise.reject(new Error('the supervisor is gone'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
      this.post({ channel: CHANNEL, kind: 'request', id, ...body });
    });
  }

  private notify(notice: Notice): void {
    this.post({ channel: CHANNEL, kind: 'notice', ...notice });
  }

  private post(message: Envelope): void {
    if (!this.connected || !process.send) return;
    try {
      process.send(message);
    } catch {
      // The channel closed under us: 'disconnect' follows.
    }
  }

  /** Tells the supervisor this worker is listening. */
  ready(): void {
    this.notify({ op: 'ready' });
  }

  claimDownload(name: string): Promise<DownloadClaim> {
    return this.request<DownloadClaim>({ op: 'download.claim', name });
  }

  publishDownload(name: string, progress: DownloadProgress): void {
    this.notify({ op: 'download.progress', name, progress });
  }

  followDownload(name: string, onProgress: (progress: DownloadProgress) => void): () => void {
    let listeners = this.followers.get(name);
    if (!listeners) this.followers.set(name, (listeners = new Set()));
    listeners.add(onProgress);
    return () => {
      listeners.delete(onProgress);
      if (listeners.size === 0 && this.followers.get(name) === listeners) this.followers.delete(name);
    };
  }

  forgetEverywhere(hash: string): void {
    this.notify({ op: 'forget', hash });
  }

  onForget(handler: (hash: string) => void): void {
    this.forgetHandlers.push(handler);
  }

  /** What this worker answers when another one collects metrics for a scrape. */
  serveMetrics(source: () => Promise<MetricsJson>): void {
    this.metricsSource = source;
  }

  /**
   * The instance's metrics: this worker's and every other one's, added up. Gauges of ncps (store
   * size, upstream health, …) describe the instance, not a worker: this worker's own fresh value
   * is shown, not a sum.
   */
  async clusterMetrics(registry: Registry): Promise<string> {
    return (await this.clusterRegistry(registry)).metrics();
  }

  /** The same, as a registry (the status page reads its figures from it). */
  async clusterRegistry(registry: Registry): Promise<Registry<RegistryContentType>> {
    const own = await registry.getMetricsAsJSON();
    const others = await this.request<MetricsJson[]>({ op: 'metrics.gather' }).catch(() => [] as MetricsJson[]);
    const instanceGauges = (list: MetricsJson) =>
      list.map((m) => (String(m.type) === 'gauge' && m.name.startsWith('ncps_') ? { ...m, aggregator: 'first' as const } : m));
    const merged = AggregatorRegistry.aggregate([own, ...others].map(instanceGauges));
    merged.setContentType(registry.contentType);
    return merged;
  }

  private onMessage(message: unknown): void {
    if (!isEnvelope(message)) return;
    if (message.kind === 'reply') {
      const waiter = this.pending.get(message.id);
      if (!waiter) return;
      this.pending.delete(message.id);
      if (message.error !== undefined) waiter.reject(new Error(message.error));
      else waiter.resolve(message.value);
      return;
    }
    if (message.kind !== 'notice') return;
    switch (message.op) {
      case 'download.progress':
        for (const listener of this.followers.get(message.name) ?? []) listener(message.progress);
        return;
      case 'forget':
        for (const handler of this.forgetHandlers) handler(message.hash);
        return;
      case 'metrics.collect': {
        const { gatherId } = message;
        void (this.metricsSource?.() ?? Promise.resolve([] as MetricsJson)).then(
          (metrics) => this.notify({ op: 'metrics.collected', gatherId, metrics }),
          () => this.notify({ op: 'metrics.collected', gatherId, metrics: [] }),
        );
        return;
      }
      default:
        return;
    }
  }
}

/** Locks held by the supervisor's one LocalLocker, so that they exclude across workers. */
class SupervisorLocker implements Locker {
  constructor(private readonly link: WorkerLink) {}

  async acquire(key: string, ttlMs: number): Promise<Lock> {
    const { lockId } = await this.link.request<LockReply>({ op: 'lock.acquire', key, ttlMs });
    if (lockId === null) throw new Error(`lock ${key}: the supervisor refused it`);
    return this.held(lockId);
  }

  async tryAcquire(key: string, ttlMs: number): Promise<Lock | undefined> {
    const { lockId } = await this.link.request<LockReply>({ op: 'lock.try', key, ttlMs });
    return lockId === null ? undefined : this.held(lockId);
  }

  private held(lockId: number): Lock {
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        // Gone with the supervisor: nothing is held any more.
        await this.link.request({ op: 'lock.release', lockId }).catch(() => undefined);
      },
    };
  }

  async close(): Promise<void> {}
}
