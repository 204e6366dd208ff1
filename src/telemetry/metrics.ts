// Prometheus metrics. Where the Go ncps measures the same thing, the name, the label names and the
// label values are the Go ncps's (so its dashboards keep working); labels of ours that say more
// are added beside them, never instead. What only this implementation measures has its own names
// (docs/operations.md › Metrics lists both). Counters are created with their common label sets at
// zero, so a fresh instance already exposes every series. What every request counts uses the
// fast variants (fast-metrics.ts).

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { StoreStats } from '../db/database';
import { FastCounter, FastHistogram } from './fast-metrics';
import { droppedLogLines } from './logger';

/** What the status page and the gauges need to know about an upstream. */
export interface UpstreamState {
  baseUrl: URL;
  healthy: boolean;
  lastCheck?: { latencyMs: number };
}

/** `database` for narinfos in the database; `storage` for narinfo files an older ncps left. */
export type NarInfoSource = 'database' | 'storage';

export class Metrics {
  readonly registry = new Registry();

  readonly narServed = new FastCounter({
    name: 'ncps_nar_served_total',
    help: 'NAR GET requests answered: result hit (from storage) or miss (from upstream), status success or error, upstream_hostname on misses.',
    labelNames: ['result', 'status', 'upstream_hostname'] as const,
    registers: [this.registry],
  });
  readonly narInfoServed = new FastCounter({
    name: 'ncps_narinfo_served_total',
    help: 'narinfo requests answered (GET and HEAD): result hit or miss, status success or error, source database or storage on hits, upstream_hostname on misses.',
    labelNames: ['result', 'status', 'source', 'upstream_hostname'] as const,
    registers: [this.registry],
  });
  readonly bytesServed = new FastCounter({
    name: 'ncps_bytes_served_total',
    help: 'Bytes of NAR GET responses (headers included), by source: cache (saved an upstream fetch) or upstream (fetched for this request, or prefetched for it and not served before).',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly upstreamBytes = new Counter({
    name: 'ncps_upstream_bytes_fetched_total',
    help: 'NAR bytes downloaded from upstream caches.',
    registers: [this.registry],
  });
  readonly narInfoCount = new Gauge({ name: 'ncps_narinfo_count', help: 'narinfos in the database.', registers: [this.registry] });
  readonly narFileCount = new Gauge({ name: 'ncps_nar_file_count', help: 'NAR files in storage.', registers: [this.registry] });
  readonly storeSize = new Gauge({ name: 'ncps_store_total_size_bytes', help: 'Total size that --cache-max-size counts: NAR files and the listings, logs, realisations and build traces beside them.', registers: [this.registry] });
  readonly maxSize = new Gauge({ name: 'ncps_cache_max_size_bytes', help: 'Configured maximum store size (0: unlimited).', registers: [this.registry] });
  readonly utilization = new Gauge({ name: 'ncps_cache_utilization_ratio', help: 'Store size divided by the maximum size.', registers: [this.registry] });
  readonly lruRuns = new Counter({ name: 'ncps_lru_cleanup_runs_total', help: 'LRU clean-up runs.', registers: [this.registry] });
  readonly lruBytesFreed = new Counter({ name: 'ncps_lru_bytes_freed_total', help: 'Bytes freed by LRU clean-up.', registers: [this.registry] });
  readonly lruNarInfosEvicted = new Counter({ name: 'ncps_lru_narinfos_evicted_total', help: 'narinfos evicted by LRU clean-up.', registers: [this.registry] });
  readonly lruNarFilesEvicted = new Counter({ name: 'ncps_lru_nar_files_evicted_total', help: 'NAR files evicted by LRU clean-up.', registers: [this.registry] });
  readonly lruChunksEvicted = new Counter({
    name: 'ncps_lru_chunks_evicted_total',
    help: 'CDC chunks evicted by LRU clean-up: always 0 here (NARs are stored whole), kept for dashboards of the Go ncps.',
    registers: [this.registry],
  });
  readonly lruAuxFilesEvicted = new Counter({
    name: 'ncps_lru_small_files_evicted_total',
    help: 'Listings, build logs, realisations and build traces evicted by LRU clean-up.',
    registers: [this.registry],
  });
  readonly lruDuration = new Histogram({
    name: 'ncps_lru_cleanup_duration_seconds',
    help: 'Time an LRU clean-up run took.',
    buckets: [0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900],
    registers: [this.registry],
  });
  readonly orphanFilesRemoved = new Counter({
    name: 'ncps_orphan_files_removed_total',
    help: 'Files in storage that no database record needed, removed by the orphan sweep.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly orphanBytesRemoved = new Counter({ name: 'ncps_orphan_bytes_removed_total', help: 'Bytes removed by the orphan sweep.', registers: [this.registry] });
  readonly upstreamNarInfoDuration = new Histogram({
    name: 'ncps_upstream_narinfo_fetch_duration_seconds',
    help: 'Time to look a narinfo up across the upstreams.',
    labelNames: ['result'] as const,
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly upstreamNarDuration = new Histogram({
    name: 'ncps_upstream_nar_fetch_duration_seconds',
    help: 'Time to download a NAR from upstream, verified and stored.',
    labelNames: ['result'] as const,
    buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
    registers: [this.registry],
  });
  readonly downloadCoordinationFallback = new Counter({
    name: 'ncps_download_coordination_fallback_total',
    help: 'NAR downloads that found another instance holding their lock, by outcome: served_by_peer (it stored the NAR meanwhile), take_over (the lock came free, this instance downloaded), pass_through (still held after --cache-lock-download-wait: streamed from upstream without waiting).',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly storageFull = new Gauge({
    name: 'ncps_storage_full',
    help: '1 while storage cannot take new files (the file system is full): NAR downloads are then streamed to clients without being kept.',
    registers: [this.registry],
  });
  readonly narsStreamedUnstored = new Counter({
    name: 'ncps_nar_streamed_unstored_total',
    help: 'NAR requests streamed from upstream to the client without keeping the NAR, because storage was full.',
    registers: [this.registry],
  });
  readonly backgroundMigrations = new Counter({
    name: 'ncps_background_migration_objects_total',
    help: 'Legacy narinfo files migrated into the database as clients asked for them.',
    labelNames: ['migration_type', 'operation', 'result'] as const,
    registers: [this.registry],
  });
  readonly backgroundMigrationDuration = new Histogram({
    name: 'ncps_background_migration_duration_seconds',
    help: 'Time to migrate one legacy narinfo file on access.',
    labelNames: ['migration_type', 'operation'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
    registers: [this.registry],
  });
  readonly migrationObjects = new Counter({
    name: 'ncps_migration_objects_total',
    help: 'Objects handled by migrate-narinfo.',
    labelNames: ['migration_type', 'operation', 'result'] as const,
    registers: [this.registry],
  });
  readonly migrationDuration = new Histogram({
    name: 'ncps_migration_duration_seconds',
    help: 'Time to migrate one legacy narinfo (migrate-narinfo).',
    labelNames: ['migration_type', 'operation'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
    registers: [this.registry],
  });
  readonly lockAcquisitions = new Counter({
    name: 'ncps_lock_acquisitions_total',
    help: 'Lock attempts: type exclusive, mode local or distributed, result success or contention (taken by someone else); kind is what the lock guards.',
    labelNames: ['type', 'mode', 'result', 'kind'] as const,
    registers: [this.registry],
  });
  readonly lockFailures = new Counter({
    name: 'ncps_lock_failures_total',
    help: 'Locks that could not be taken because the lock service failed: reason max_retries (Redis unreachable through every retry) or redis_error.',
    labelNames: ['type', 'mode', 'reason', 'kind'] as const,
    registers: [this.registry],
  });
  readonly lockHoldDuration = new Histogram({
    name: 'ncps_lock_hold_duration_seconds',
    help: 'How long locks were held.',
    labelNames: ['type', 'mode', 'kind'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly upstreamCountTotal: Gauge = new Gauge({
    name: 'ncps_upstream_count_total',
    help: 'Configured upstream caches.',
    registers: [this.registry],
    collect: () => {
      this.upstreamCountTotal.set(this.upstreamStates().length);
    },
  });
  readonly upstreamCountHealthy: Gauge = new Gauge({
    name: 'ncps_upstream_count_healthy',
    help: 'Upstream caches whose last health check passed.',
    registers: [this.registry],
    collect: () => {
      this.upstreamCountHealthy.set(this.upstreamStates().filter((u) => u.healthy).length);
    },
  });
  readonly upstreamHealthy: Gauge<'upstream'> = new Gauge({
    name: 'ncps_upstream_healthy',
    help: 'Whether an upstream passed its last health check (1) or not (0).',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
    collect: () => {
      for (const u of this.upstreamStates()) this.upstreamHealthy.labels(u.baseUrl.href).set(u.healthy ? 1 : 0);
    },
  });
  readonly upstreamHealthCheckDuration: Gauge<'upstream'> = new Gauge({
    name: 'ncps_upstream_health_check_duration_seconds',
    help: "How long an upstream's last health check (GET nix-cache-info) took.",
    labelNames: ['upstream'] as const,
    registers: [this.registry],
    collect: () => {
      for (const u of this.upstreamStates()) {
        if (u.lastCheck) this.upstreamHealthCheckDuration.labels(u.baseUrl.href).set(u.lastCheck.latencyMs / 1000);
      }
    },
  });
  readonly httpDuration = new FastHistogram({
    name: 'ncps_http_request_duration_seconds',
    help: 'HTTP request latency, by method, route and status.',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });

  private logLinesDroppedSeen = 0;
  readonly logLinesDropped: Counter = new Counter({
    name: 'ncps_log_lines_dropped_total',
    help: 'Log lines not written because stdout was too slow or gone (they are dropped, never waited for).',
    registers: [this.registry],
    // Read at each scrape from the log outputs, which know nothing about metrics.
    collect: () => {
      const now = droppedLogLines();
      if (now > this.logLinesDroppedSeen) this.logLinesDropped.inc(now - this.logLinesDroppedSeen);
      this.logLinesDroppedSeen = now;
    },
  });

  private readonly maxSizeBytes: number;
  private upstreamStates: () => readonly UpstreamState[] = () => [];

  constructor(options: { maxSizeBytes: number; defaultMetrics?: boolean; lockMode?: 'local' | 'distributed' }) {
    this.maxSizeBytes = options.maxSizeBytes;
    // The series the Go ncps primes, with its label values.
    this.narServed.labels({ result: 'hit', status: 'success' }).inc(0);
    this.narServed.labels({ result: 'miss', status: 'success' }).inc(0);
    this.narInfoServed.labels({ result: 'hit', status: 'success', source: 'database' }).inc(0);
    this.narInfoServed.labels({ result: 'miss', status: 'success' }).inc(0);
    this.narInfoServed.labels({ result: 'miss', status: 'error' }).inc(0);
    for (const source of ['cache', 'upstream']) this.bytesServed.labels(source).inc(0);
    for (const result of ['success', 'failure']) {
      this.backgroundMigrations.labels({ migration_type: 'narinfo-to-db', operation: 'migrate', result }).inc(0);
      this.migrationObjects.labels({ migration_type: 'narinfo-to-db', operation: 'migrate', result }).inc(0);
    }
    const mode = options.lockMode ?? 'local';
    for (const kind of ['download', 'narinfo', 'lru']) {
      this.lockAcquisitions.labels({ type: 'exclusive', mode, result: 'success', kind }).inc(0);
      this.lockAcquisitions.labels({ type: 'exclusive', mode, result: 'contention', kind }).inc(0);
      this.lockFailures.labels({ type: 'exclusive', mode, reason: 'max_retries', kind }).inc(0);
    }
    for (const outcome of ['served_by_peer', 'take_over', 'pass_through']) this.downloadCoordinationFallback.labels(outcome).inc(0);
    this.maxSize.set(options.maxSizeBytes);

    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  /** The upstream gauges are read from the pool at each scrape. */
  watchUpstreams(states: () => readonly UpstreamState[]): void {
    this.upstreamStates = states;
  }

  recordStoreStats(stats: StoreStats): void {
    this.narInfoCount.set(stats.narInfoCount);
    this.narFileCount.set(stats.narFileCount);
    // What --cache-max-size counts: the NAR files and the small files beside them.
    const total = stats.storedBytes + stats.auxBytes;
    this.storeSize.set(total);
    this.utilization.set(this.maxSizeBytes > 0 ? total / this.maxSizeBytes : 0);
  }
}
