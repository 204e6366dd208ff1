// Readiness: can this instance do its job right now? Unlike liveness (/healthz: the process
// answers), it asks the seams: the database must take a write, storage must take a new file, and
// at least one upstream must have passed its last health check. Each check names what failed and
// why, so the answer of /readyz is also the first thing to read when something is wrong.

import type { Database } from '../db/database';
import type { StorageSpace } from '../cache/storage-space';
import type { Storage } from '../storage/storage';
import type { UpstreamPool } from '../upstream/pool';

export type CheckName = 'database' | 'storage' | 'upstreams';

export interface CheckResult {
  ok: boolean;
  /** Why it failed. */
  error?: string;
  /** How long the check took. */
  ms: number;
  [detail: string]: unknown;
}

export interface ReadinessReport {
  ready: boolean;
  checks: Record<CheckName, CheckResult>;
}

export interface ReadinessOptions {
  db: Pick<Database, 'checkWritable'>;
  storage: Pick<Storage, 'checkWritable'>;
  upstreams: Pick<UpstreamPool, 'upstreams'>;
  /** Whether storage is full (NAR downloads then pass through unstored): reported with storage. */
  space?: Pick<StorageSpace, 'status'>;
  /** A check that takes longer fails (a hung database must not hang the probe). Default 3 s. */
  timeoutMs?: number;
  /** Answers this recent are reused, so a burst of probes costs one round of checks. Default 1 s. */
  reuseMs?: number;
}

export class Readiness {
  private last?: { at: number; report: Promise<ReadinessReport> };

  constructor(private readonly options: ReadinessOptions) {}

  report(): Promise<ReadinessReport> {
    const now = Date.now();
    if (this.last && now - this.last.at < (this.options.reuseMs ?? 1_000)) return this.last.report;
    const report = this.evaluate();
    this.last = { at: now, report };
    return report;
  }

  private async evaluate(): Promise<ReadinessReport> {
    const { db, storage } = this.options;
    const [database, store] = await Promise.all([this.timed(() => db.checkWritable()), this.timed(() => storage.checkWritable())]);
    const full = this.options.space?.status();
    if (full?.full) {
      const why = `storage is full since ${full.since} (${full.reason ?? 'no space left'}): NAR downloads are streamed to clients without being kept, uploads are refused`;
      Object.assign(store, { ok: false, error: store.error ? `${why}; ${store.error}` : why });
    }
    const checks = { database, storage: store, upstreams: this.upstreamCheck() };
    return { ready: database.ok && store.ok && checks.upstreams.ok, checks };
  }

  private async timed(check: () => Promise<void>): Promise<CheckResult> {
    const started = performance.now();
    const timeoutMs = this.options.timeoutMs ?? 3_000;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        check(),
        new Promise((_resolve, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
      return { ok: true, ms: elapsed(started) };
    } catch (error) {
      return { ok: false, error: (error as Error).message || String(error), ms: elapsed(started) };
    } finally {
      clearTimeout(timer);
    }
  }

  /** The verdict of the background health checks: no request to an upstream is made here. */
  private upstreamCheck(): CheckResult {
    const { upstreams } = this.options.upstreams;
    const healthy = upstreams.filter((u) => u.healthy).length;
    const detail = { ms: 0, healthy, total: upstreams.length };
    if (healthy > 0) return { ok: true, ...detail };
    const reasons = upstreams.map((u) => `${u.baseUrl.href}: ${u.lastCheck?.error ?? 'unhealthy'}`);
    return { ok: false, error: `no upstream is healthy (${reasons.join('; ')})`, ...detail };
  }
}

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}
