// The figures of the status page: read from the same Prometheus metrics /metrics exposes (so the
// two never disagree), plus what a page needs and a scrape does not: a small ring of samples for
// the plots of the last hours, and the most recent misses. Everything is in memory and bounded.

import type { Registry, RegistryContentType } from 'prom-client';
import type { Metrics, UpstreamState } from './metrics';

/** Cumulative figures at one moment (counters since start, gauges as they were). */
export interface StatusSample {
  at: number;
  narInfoHits: number;
  narInfoMisses: number;
  narHits: number;
  narMisses: number;
  bytesFromCache: number;
  bytesFromUpstream: number;
  upstreamBytesFetched: number;
  storeBytes: number;
}

export interface RecentMiss {
  at: number;
  /** What was asked: the request path. */
  path: string;
  kind: 'narinfo' | 'nar';
  /** 200 when an upstream had it, 404 when none had. */
  status: number;
  upstream?: string;
  ms: number;
}

export interface UpstreamStatus {
  url: string;
  healthy: boolean;
  /** The last health check's duration, in milliseconds. */
  latencyMs?: number;
  error?: string;
}

export interface StatusSnapshot extends StatusSample {
  startedAt: number;
  maxSizeBytes: number;
  narInfoCount: number;
  narFileCount: number;
  upstreams: UpstreamStatus[];
  /** Oldest first, one per sampling interval. */
  history: StatusSample[];
  sampleIntervalMs: number;
  /** Newest first. */
  recentMisses: RecentMiss[];
}

export interface StatusBoardOptions {
  metrics: Metrics;
  /** Re-reads the figures that come from the database (store size, counts) into the gauges. */
  refreshStoreFigures: () => Promise<void>;
  upstreams: () => readonly (UpstreamState & { lastCheck?: { latencyMs: number; error?: string } })[];
  /**
   * Where the figures are read: this process's registry by default; with several workers, the
   * merged registry of all of them (so the page shows the instance, not one worker).
   */
  registry?: () => Promise<Registry<RegistryContentType>>;
  sampleIntervalMs?: number;
  /** Samples kept: the plots show this many intervals. Default 6 h of minutes. */
  keepSamples?: number;
  keepMisses?: number;
}

export class StatusBoard {
  readonly startedAt = Date.now();
  private readonly samples: StatusSample[] = [];
  private readonly misses: RecentMiss[] = [];
  private timer?: NodeJS.Timeout;
  private readonly intervalMs: number;

  constructor(private readonly options: StatusBoardOptions) {
    this.intervalMs = options.sampleIntervalMs ?? 60_000;
  }

  start(): void {
    void this.sample();
    this.timer = setInterval(() => void this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Called for every miss (cheap: misses are the rare, slow requests). */
  recordMiss(miss: RecentMiss): void {
    this.misses.unshift(miss);
    if (this.misses.length > (this.options.keepMisses ?? 20)) this.misses.pop();
  }

  async snapshot(): Promise<StatusSnapshot> {
    await this.refresh();
    const registry = await this.registry();
    const now = await this.read(Date.now(), registry);
    return {
      ...now,
      startedAt: this.startedAt,
      maxSizeBytes: await gaugeValue(registry, 'ncps_cache_max_size_bytes'),
      narInfoCount: await gaugeValue(registry, 'ncps_narinfo_count'),
      narFileCount: await gaugeValue(registry, 'ncps_nar_file_count'),
      upstreams: this.options.upstreams().map((u) => ({
        url: u.baseUrl.href,
        healthy: u.healthy,
        ...(u.lastCheck ? { latencyMs: u.lastCheck.latencyMs } : {}),
        ...(u.lastCheck?.error ? { error: u.lastCheck.error } : {}),
      })),
      history: [...this.samples, now],
      sampleIntervalMs: this.intervalMs,
      recentMisses: [...this.misses],
    };
  }

  private async sample(): Promise<void> {
    await this.refresh();
    this.samples.push(await this.read(Date.now(), await this.registry()));
    if (this.samples.length > (this.options.keepSamples ?? 360)) this.samples.shift();
  }

  /** The database may be down: then the store figures stay as they were (like /metrics). */
  private async refresh(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.options.refreshStoreFigures(),
      new Promise((resolve) => {
        timer = setTimeout(resolve, 2_000);
      }),
    ])
      .catch(() => undefined)
      .finally(() => clearTimeout(timer));
  }

  private registry(): Promise<Registry<RegistryContentType>> {
    const own = this.options.metrics.registry;
    return this.options.registry ? this.options.registry().catch(() => own) : Promise.resolve(own);
  }

  private async read(at: number, registry: Registry<RegistryContentType>): Promise<StatusSample> {
    return {
      at,
      narInfoHits: await counterSum(registry, 'ncps_narinfo_served_total', { result: 'hit' }),
      narInfoMisses: await counterSum(registry, 'ncps_narinfo_served_total', { result: 'miss' }),
      narHits: await counterSum(registry, 'ncps_nar_served_total', { result: 'hit' }),
      narMisses: await counterSum(registry, 'ncps_nar_served_total', { result: 'miss' }),
      bytesFromCache: await counterSum(registry, 'ncps_bytes_served_total', { source: 'cache' }),
      bytesFromUpstream: await counterSum(registry, 'ncps_bytes_served_total', { source: 'upstream' }),
      upstreamBytesFetched: await counterSum(registry, 'ncps_upstream_bytes_fetched_total', {}),
      storeBytes: await gaugeValue(registry, 'ncps_store_total_size_bytes'),
    };
  }
}

async function values(registry: Registry<RegistryContentType>, name: string) {
  const metric = registry.getSingleMetric(name);
  return metric ? (await metric.get()).values : [];
}

async function counterSum(registry: Registry<RegistryContentType>, name: string, labels: Record<string, string>): Promise<number> {
  let total = 0;
  for (const { value, labels: have } of await values(registry, name)) {
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += value;
  }
  return total;
}

async function gaugeValue(registry: Registry<RegistryContentType>, name: string): Promise<number> {
  return (await values(registry, name))[0]?.value ?? 0;
}
