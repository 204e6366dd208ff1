// The figures of the status page: read from the same Prometheus metrics /metrics exposes (so the
// two never disagree), plus what a page needs and a scrape does not: a small ring of samples for
// the plots of the last hours, and the most recent misses. Everything is in memory and bounded.

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
    const { metrics } = this.options;
    const now = await this.read(Date.now());
    return {
      ...now,
      startedAt: this.startedAt,
      maxSizeBytes: await gaugeValue(metrics.maxSize),
      narInfoCount: await gaugeValue(metrics.narInfoCount),
      narFileCount: await gaugeValue(metrics.narFileCount),
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
    this.samples.push(await this.read(Date.now()));
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

  private async read(at: number): Promise<StatusSample> {
    const { metrics } = this.options;
    return {
      at,
      narInfoHits: await counterSum(metrics.narInfoServed, { result: 'hit' }),
      narInfoMisses: await counterSum(metrics.narInfoServed, { result: 'miss' }),
      narHits: await counterSum(metrics.narServed, { result: 'hit' }),
      narMisses: await counterSum(metrics.narServed, { result: 'miss' }),
      bytesFromCache: await counterSum(metrics.bytesServed, { source: 'cache' }),
      bytesFromUpstream: await counterSum(metrics.bytesServed, { source: 'upstream' }),
      upstreamBytesFetched: await counterSum(metrics.upstreamBytes, {}),
      storeBytes: await gaugeValue(metrics.storeSize),
    };
  }
}

interface Readable {
  get(): Promise<{ values: Array<{ value: number; labels: Partial<Record<string, string | number>> }> }>;
}

async function counterSum(metric: Readable, labels: Record<string, string>): Promise<number> {
  let total = 0;
  for (const { value, labels: have } of (await metric.get()).values) {
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += value;
  }
  return total;
}

async function gaugeValue(metric: Readable): Promise<number> {
  return (await metric.get()).values[0]?.value ?? 0;
}
