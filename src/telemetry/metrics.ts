// Prometheus metrics under the names ncps users already dashboard on, plus HTTP latency and the
// bytes the cache saved. Counters are created with their common label sets at zero, so a fresh
// instance already exposes every series.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { StoreStats } from '../db/database';
import { droppedLogLines } from './logger';

export class Metrics {
  readonly registry = new Registry();

  readonly narServed = new Counter({
    name: 'ncps_nar_served_total',
    help: 'NAR requests answered, by result and source.',
    labelNames: ['result', 'source'] as const,
    registers: [this.registry],
  });
  readonly narInfoServed = new Counter({
    name: 'ncps_narinfo_served_total',
    help: 'narinfo requests answered, by result, HTTP status, source and upstream host.',
    labelNames: ['result', 'status', 'source', 'upstream_hostname'] as const,
    registers: [this.registry],
  });
  readonly bytesServed = new Counter({
    name: 'ncps_bytes_served_total',
    help: 'NAR bytes sent to clients, by source: cache (saved an upstream fetch) or upstream.',
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
  readonly backgroundMigrations = new Counter({
    name: 'ncps_background_migration_objects_total',
    help: 'Legacy narinfo files migrated into the database on access.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly migrationObjects = new Counter({
    name: 'ncps_migration_objects_total',
    help: 'Objects handled by migrate-narinfo.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly migrationDuration = new Histogram({
    name: 'ncps_migration_duration_seconds',
    help: 'Time to migrate one legacy narinfo.',
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
    registers: [this.registry],
  });
  readonly lockAcquisitions = new Counter({
    name: 'ncps_lock_acquisitions_total',
    help: 'Locks taken, by kind.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly lockFailures = new Counter({
    name: 'ncps_lock_failures_total',
    help: 'Locks that could not be taken, by kind.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly httpDuration = new Histogram({
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

  constructor(options: { maxSizeBytes: number; defaultMetrics?: boolean }) {
    this.maxSizeBytes = options.maxSizeBytes;
    for (const result of ['hit', 'miss']) {
      this.narServed.labels(result, result === 'hit' ? 'cache' : 'upstream').inc(0);
      this.narInfoServed.labels(result, '200', result === 'hit' ? 'cache' : 'upstream', '').inc(0);
    }
    this.narInfoServed.labels('miss', '404', 'upstream', '').inc(0);
    for (const source of ['cache', 'upstream']) this.bytesServed.labels(source).inc(0);
    for (const result of ['success', 'failure']) {
      this.backgroundMigrations.labels(result).inc(0);
      this.migrationObjects.labels(result).inc(0);
    }
    for (const kind of ['download', 'narinfo', 'lru']) {
      this.lockAcquisitions.labels(kind).inc(0);
      this.lockFailures.labels(kind).inc(0);
    }
    this.maxSize.set(options.maxSizeBytes);

    if (options.defaultMetrics) collectDefaultMetrics({ register: this.registry });
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
