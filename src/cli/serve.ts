// `ncps serve`: assemble the seams from configuration, migrate the database, listen, and shut
// down cleanly on SIGTERM/SIGINT.

import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Cache } from '../cache/cache';
import { DEFAULT_LRU_SCHEDULE, LruCleaner } from '../cache/lru';
import { parseSchedule } from '../cache/schedule';
import { OrphanSweeper } from '../cache/orphans';
import { CacheWrites } from '../cache/writes';
import { StorageSpace } from '../cache/storage-space';
import { LocalStorage } from '../storage/local';
import { checkDatabaseWritable } from '../db/open';
import { loadSigningKey, readSecretKeyFile } from '../cache/signing-key';
import { ConfigError, type LoadedConfig } from '../config/load';
import type { Database } from '../db/database';
import { LEASE_STALE_MS, LeaseKeeper, otherLiveServers } from '../lock/lease';
import { hasLegacyNarInfos, LegacyNarInfoMigrator } from '../migrate/narinfo';
import { legacyFilesKeptForGo } from '../migrate/go/state';
import { takeOverConfiguredGoDatabase } from './go-takeover';
import { instrumentLocker } from '../lock/instrumented';
import { LocalLocker } from '../lock/local';
import { checkedCommandConfig, commandLogger, databaseUrl, sqliteFile, createLocker, startConfiguredOpenTelemetry, describeDatabase, openConfiguredDatabase, openConfiguredStorage, type ConfiguredStorage } from './common';
import { parsePublicKey, type PublicKey, type SecretKey } from '../nix';
import { buildApp } from '../server/app';
import { ConnectionGuard } from '../server/connection-guard';
import { TempFileSweeper } from '../storage/temp-files';
import type { Logger } from '../telemetry/logger';
import { Metrics } from '../telemetry/metrics';
import { Readiness } from '../server/readiness';
import { VERSION } from './version';
import { StatusBoard } from '../telemetry/status';
import { SystemdNotifier } from '../telemetry/systemd';
import { parseNetrc, type Netrc } from '../upstream/netrc';
import { parseAllowedHost } from '../upstream/destinations';
import { parseUpstreamUrl, UpstreamPool } from '../upstream/pool';
import { upstreamTrustWarnings } from '../upstream/trust';
import { workerCount } from '../workers/count';
import { superviseWorkers } from '../workers/supervisor';
import { WORKER_INDEX_ENV, WorkerLink } from '../workers/worker-link';


const SUMMARY = 'Serve the Nix binary cache proxy.';
/** How long shutdown waits for responses and downloads in flight. */
const DRAIN_TIMEOUT_MS = 30_000;

export const serveCommand = {
  summary: SUMMARY,
  run: serve,
};

export function parseListenAddress(addr: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(addr.trim());
  const port = Number(match?.[3]);
  if (!match || port > 65535) throw new ConfigError(`invalid --server-addr "${addr}": expected host:port, e.g. :8501 or 127.0.0.1:8501`);
  return { host: match[1] ?? match[2] ?? '', port };
}

/** Characters of a host name; it also names a generated signing key (`name:base64`). */
const HOST_NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/;

export function checkedHostname(hostname: string, given: boolean): string {
  if (HOST_NAME.test(hostname) && hostname.length <= 253) return hostname;
  const origin = given ? `--cache-hostname "${hostname}"` : `the machine's host name "${hostname}" (the default of --cache-hostname)`;
  throw new ConfigError(
    `${origin} is not a host name: use the name clients reach the cache under, such as cache.example.org ` +
      '(letters, digits, dots, dashes; it also names the signing key, so no spaces or colons)',
  );
}

export function checkedTimezone(timezone: string): string {
  if (timezone === '' || timezone === 'Local') return timezone;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
    return timezone;
  } catch {
    throw new ConfigError(
      `invalid --cache-lru-schedule-timezone "${timezone}": not a time zone name; use an IANA name such as Europe/Berlin or UTC, or Local for the server's own`,
    );
  }
}

/** A listen address whose host cannot be resolved fails at listen time, after the migrations: check it first. */
async function checkedListenHost(listen: { host: string; port: number }, addr: string): Promise<void> {
  if (listen.host === '' || isIP(listen.host) !== 0) return;
  try {
    await lookup(listen.host);
  } catch (error) {
    throw new ConfigError(`invalid --server-addr "${addr}": cannot resolve the host name ${listen.host} (${(error as Error).message}); use an address such as :8501 or 127.0.0.1:8501`);
  }
}

/** Everything in the configuration that can be checked before opening storage or the database. */
async function checkedSettings(config: LoadedConfig) {
  const settings = checkedStaticSettings(config);
  await checkedListenHost(settings.listen, config.get<string>('server.addr'));
  return settings;
}

function checkedStaticSettings(config: LoadedConfig) {

  const upstreamUrls = config.get<string[]>('cache.upstream.urls');
  if (upstreamUrls.length === 0) throw new ConfigError('at least one --cache-upstream-url is required');
  for (const url of upstreamUrls) {
    try {
      parseUpstreamUrl(url);
    } catch (error) {
      throw new ConfigError(`--cache-upstream-url: ${(error as Error).message}`);
    }
  }
  const publicKeyTexts = config.get<string[]>('cache.upstream.public-keys');
  if (publicKeyTexts.length === 0) {
    throw new ConfigError('at least one --cache-upstream-public-key is required: ncps only serves narinfos signed by a trusted key');
  }
  const trustedKeys: PublicKey[] = publicKeyTexts.map((text) => {
    try {
      return parsePublicKey(text);
    } catch (error) {
      throw new ConfigError(`--cache-upstream-public-key "${text}": ${(error as Error).message}`);
    }
  });

  const uploadKeys: PublicKey[] = config.get<string[]>('cache.trusted-upload-keys').map((text) => {
    try {
      return parsePublicKey(text);
    } catch (error) {
      throw new ConfigError(`--cache-trusted-upload-key "${text}": ${(error as Error).message}`);
    }
  });
  const lruSchedule = config.get<string>('cache.lru.schedule');
  if (lruSchedule) {
    try {
      parseSchedule(lruSchedule);
    } catch (error) {
      throw new ConfigError(`invalid --cache-lru-schedule "${lruSchedule}": ${(error as Error).message}`);
    }
  }

  const allowedHosts = config.get<string[]>('cache.upstream.allowed-hosts');
  for (const entry of allowedHosts) {
    try {
      parseAllowedHost(entry);
    } catch (error) {
      throw new ConfigError(`--cache-upstream-allowed-host: ${(error as Error).message}`);
    }
  }

  // As in the Go ncps: ~/.netrc unless told otherwise, and a file that cannot be used is a warning
  // (upstreams are then asked without credentials), not a reason to stay down.
  let netrc: Netrc | undefined;
  let netrcWarning: string | undefined;
  const netrcFile = config.get<string>('cache.netrc-file') || path.join(os.homedir(), '.netrc');
  try {
    netrc = parseNetrc(readFileSync(netrcFile, 'utf8'));
  } catch (error) {
    const missingDefault = !config.get<string>('cache.netrc-file') && (error as NodeJS.ErrnoException).code === 'ENOENT';
    if (!missingDefault) netrcWarning = `cannot read netrc file ${netrcFile} (${(error as Error).message}): upstreams are asked without its credentials`;
  }

  return {
    listen: parseListenAddress(config.get<string>('server.addr')),
    sendTimeoutMs: config.get<number>('server.send-timeout'),
    uploadBodyTimeoutMs: config.get<number>('server.upload-body-timeout'),
    maxConnections: config.get<number>('server.max-connections'),
    hostname: checkedHostname(config.get<string>('cache.hostname') || os.hostname(), Boolean(config.get<string>('cache.hostname'))),
    upstreamUrls,
    allowedHosts,
    trustedKeys,
    netrc,
    netrcWarning,
    signNarInfo: config.get<boolean>('cache.sign-narinfo'),
    fileKey: secretKeyFromFile(config.get<string>('cache.secret-key-path')),
    dialerTimeoutMs: config.get<number>('cache.upstream.dialer-timeout'),
    responseHeaderTimeoutMs: config.get<number>('cache.upstream.response-header-timeout'),
    downloadLockTtlMs: config.get<number>('cache.lock.download-lock-ttl'),
    downloadLockWaitMs: config.get<number>('cache.lock.download-lock-wait'),
    lruLockTtlMs: config.get<number>('cache.lock.lru-lock-ttl'),
    negativeTtlMs: config.get<number>('cache.negative-ttl'),
    getToken: config.get<string>('cache.get-token'),
    putToken: config.get<string>('cache.put-token'),
    allowPut: config.get<boolean>('cache.allow-put-verb'),
    allowDelete: config.get<boolean>('cache.allow-delete-verb'),
    requiredUploadKeys: config.get<boolean>('cache.require-trusted-signature') ? uploadKeys : undefined,
    maxSizeBytes: config.get<number>('cache.max-size'),
    lruSchedule: config.get<string>('cache.lru.schedule'),
    lruTimezone: checkedTimezone(config.get<string>('cache.lru.timezone')),
    prometheus: config.get<boolean>('prometheus.enabled'),
  };
}

/**
 * Two servers on one SQLite file without shared locks download the same NARs, clean up under each
 * other and wait on each other's writes: refused. With Redis locks, or on PostgreSQL, several
 * servers are possible; without Redis they do not coordinate, which is worth a warning.
 */
async function checkNoOtherServer(db: Database, options: { sqlite: string | undefined; lockMode: 'local' | 'distributed'; logger: Logger }): Promise<void> {
  let others;
  try {
    others = await otherLiveServers(db);
  } catch {
    return; // a new database: no lease table yet, so no other server either
  }
  if (others.length === 0) return;
  const who = others.map((l) => `${l.hostname} (pid ${l.pid}, last seen ${Math.round((Date.now() - l.heartbeatAt) / 1000)} s ago)`).join(', ');
  if (options.sqlite && options.lockMode === 'local') {
    throw new Error(
      `another ncps server is using the SQLite database ${options.sqlite}: ${who}. Two servers on one SQLite file ` +
        'would download the same NARs, clean up under each other and block each other\'s writes: stop the other one, or give ' +
        'this one its own --cache-storage-local and --cache-database-url (several servers: PostgreSQL and Redis, docs/deployment.md). ' +
        `A server that crashed loses its claim ${LEASE_STALE_MS / 1000} s after its last sign of life.`,
    );
  }
  if (options.lockMode === 'local') {
    options.logger.warn({ servers: who }, 'another ncps server uses this database without shared locks: downloads and clean-ups are not coordinated (set --cache-redis-addrs on every server)');
  } else if (options.sqlite) {
    options.logger.warn({ servers: who }, 'another ncps server uses this SQLite database: that works only on one host; several servers should share PostgreSQL');
  }
}

function secretKeyFromFile(file: string): SecretKey | undefined {
  if (!file) return undefined;
  try {
    return readSecretKeyFile(file);
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
}

async function serve(argv: string[]): Promise<number> {
  // Every mistake in the configuration ends here, with exit status 2, before anything is opened.
  const checked = await checkedCommandConfig('serve', SUMMARY, argv, checkedSettings);
  if (!checked) return 0;
  const { config, settings } = checked;
  let logger = commandLogger(config, 'nonblocking');
  if (settings.netrcWarning) logger.warn(settings.netrcWarning);
  if (process.execArgv.includes('--jitless')) {
    logger.warn(
      'running without the JavaScript JIT: the service forbids memory that is written and then executed (MemoryDenyWriteExecute=, as nixpkgs\' services.ncps sets it); ncps works, more slowly. Allow it (MemoryDenyWriteExecute=false) for full speed',
    );
  }
  if (config.configFile) logger.info({ file: config.configFile }, 'configuration file read');

  // Several workers: this process only supervises them (src/workers/); each worker runs the rest.
  const workers = workerCount(config.get<number>('server.workers'));
  if (workers > 1 && cluster.isPrimary) {
    return superviseWorkers({
      workers,
      logger,
      address: `${settings.listen.host}:${settings.listen.port}`,
      drainTimeoutMs: DRAIN_TIMEOUT_MS,
      prepare: () => prepareInstanceOnce(config, settings, logger),
    });
  }
  const link = cluster.isWorker ? new WorkerLink(Number(process.env[WORKER_INDEX_ENV] ?? 0)) : undefined;
  if (link) logger = logger.child({ worker: link.index });

  const createdLocker = createLocker(config, logger);
  const lockMode = createdLocker instanceof LocalLocker ? 'local' : 'distributed';
  // In a worker, in-process locks would exclude nothing: the supervisor holds them for all.
  const baseLocker = link && createdLocker instanceof LocalLocker ? link.locker : createdLocker;
  const metrics = new Metrics({ maxSizeBytes: settings.maxSizeBytes, defaultMetrics: settings.prometheus, lockMode });
  const storage = openConfiguredStorage(config);
  await storage.check?.();

  const locker = instrumentLocker(baseLocker, metrics, lockMode);
  await locker.check?.();
  // The supervisor prepared the store for its workers.
  const { db, lease } = link ? { db: openConfiguredDatabase(config), lease: undefined } : await prepareStore(config, storage, logger, lockMode);

  const signingKey = await loadSigningKey({
    fileKey: settings.fileKey,
    hostname: settings.hostname,
    db,
    storage,
    logger,
  });

  const upstreams = new UpstreamPool({
    urls: settings.upstreamUrls,
    dialerTimeoutMs: settings.dialerTimeoutMs,
    responseHeaderTimeoutMs: settings.responseHeaderTimeoutMs,
    logger,
    ...(settings.netrc ? { netrc: settings.netrc } : {}),
    allowedHosts: settings.allowedHosts,
    ownPorts: [settings.listen.port],
  });
  // Health is checked in the background: an upstream that is down at start must not delay serving.
  void upstreams.start();
  metrics.watchUpstreams(() => upstreams.upstreams);
  for (const { upstream, message } of upstreamTrustWarnings(upstreams.upstreams, settings.trustedKeys)) logger.warn({ upstream }, message);


  // Narinfo files a takeover found are the Go ncps's (it reads them) and are in our database already.
  const keptForGo = await legacyFilesKeptForGo(db);
  const legacy = !keptForGo && (await hasLegacyNarInfos(storage))
    ? new LegacyNarInfoMigrator({
        db,
        storage,
        locker,
        lockTtlMs: settings.downloadLockTtlMs,
        signingKey: settings.signNarInfo ? signingKey : undefined,
      })
    : undefined;
  if (legacy) logger.info('storage holds narinfo files from an older ncps: they move into the database as clients ask for them (or run ncps migrate-narinfo)');
  // Where new files are written: the temp directory, and local storage's own file system.
  const space = new StorageSpace([storage.tempDir, ...(storage instanceof LocalStorage ? [storage.root] : [])], logger, metrics);
  const cache = new Cache({
    space,
    db,
    storage,
    locker,
    upstreams,
    logger,
    metrics,
    trustedKeys: settings.trustedKeys,
    signingKey: settings.signNarInfo ? signingKey : undefined,
    downloadLockTtlMs: settings.downloadLockTtlMs,
    downloadLockWaitMs: settings.downloadLockWaitMs,
    negativeTtlMs: settings.negativeTtlMs,
    ...(legacy ? { legacy } : {}),
    ...(link ? { coordination: link } : {}),
  });
  const writes = new CacheWrites({
    space,
    db,
    storage,
    cache,
    logger,
    signingKey: settings.signNarInfo ? signingKey : undefined,
    requiredUploadKeys: settings.requiredUploadKeys,
    locker,
    lockTtlMs: settings.downloadLockTtlMs,
  });
  if (settings.requiredUploadKeys?.length === 0) {
    logger.warn('--cache-require-trusted-signature is set without any --cache-trusted-upload-key: every upload will be refused');
  }
  const refreshStoreFigures = async () => metrics.recordStoreStats(await db.storeStats());
  // The status page's plots: one sample a minute, six hours kept.
  const statusBoard = new StatusBoard({
    metrics,
    refreshStoreFigures,
    upstreams: () => upstreams.upstreams,
    ...(link ? { registry: () => link.clusterRegistry(metrics.registry) } : {}),
  });
  statusBoard.start();
  const app = buildApp({
    cache,
    writes,
    logger,
    metrics,
    hostname: settings.hostname,
    // The cache's key even when it does not sign (as the Go ncps answers): it is what it would sign with.
    publicKey: signingKey.publicKey.text,
    getToken: settings.getToken,
    putToken: settings.putToken,
    allowPut: settings.allowPut,
    allowDelete: settings.allowDelete,
    prometheus: settings.prometheus,
    beforeScrape: refreshStoreFigures,
    ...(link ? { metricsText: () => link.clusterMetrics(metrics.registry) } : {}),
    readiness: new Readiness({ db, storage, upstreams, space }),
    statusBoard,
    version: VERSION,
  });

  link?.serveMetrics(() => metrics.registry.getMetricsAsJSON());

  // Leftovers of a crash went at start-up (prepareStore); later ones periodically, once per
  // instance (other workers' files are protected by their age: a live download writes).
  const tempSweeper = new TempFileSweeper(storage.tempDir, config.get<number>('cache.temp-max-age'), logger);
  if (!link || link.runsPeriodicWork) tempSweeper.start();

  let lru: LruCleaner | undefined;
  // One LRU per instance: with several workers, the first runs it.
  if (settings.maxSizeBytes > 0 && (!link || link.runsPeriodicWork)) {
    lru = new LruCleaner({
      db,
      storage,
      locker,
      logger,
      metrics,
      maxSizeBytes: settings.maxSizeBytes,
      lockTtlMs: settings.lruLockTtlMs,
      onEvicted: (hash) => cache.forget(hash),
      sweeper: new OrphanSweeper({ db, storage, locker, logger, metrics, lockTtlMs: settings.lruLockTtlMs }),
    });
    lru.start(settings.lruSchedule || DEFAULT_LRU_SCHEDULE, settings.lruTimezone);
  } else if (settings.lruSchedule && settings.maxSizeBytes <= 0) {
    logger.warn('--cache-lru-schedule has no effect without --cache-max-size');
  }

  const guard = new ConnectionGuard(app.server, {
    sendTimeoutMs: settings.sendTimeoutMs,
    uploadBodyTimeoutMs: settings.uploadBodyTimeoutMs,
    maxConnections: settings.maxConnections,
    logger,
  });
  const { host, port } = settings.listen;
  await app.listen({ host: host === '' ? '::' : host, port, ipv6Only: false });
  link?.ready();
  logger.info(
    {
      addr: `${host}:${port}`,
      storage: storage.describe,
      database: describeDatabase(config),
      upstreams: upstreams.upstreams.map((u) => u.baseUrl.href),
      ...(guard.maxConnections !== undefined ? { maxConnections: guard.maxConnections } : {}),
      publicKey: signingKey.publicKey.text,
    },
    'ncps is serving',
  );
  // The standard OpenTelemetry variable for the push interval.
  const interval = Number(process.env.OTEL_METRIC_EXPORT_INTERVAL);
  const otel = await startConfiguredOpenTelemetry(config, metrics, logger, interval > 0 ? interval : undefined, link ? `${os.hostname()}-worker-${link.index}` : undefined);
  const systemd = new SystemdNotifier(logger);
  await systemd.ready(`serving on ${host}:${port}`);

  // A worker also stops when its supervisor is gone (killed outright): nobody would restart it.
  await Promise.race([waitForSignal(Boolean(link)), ...(link ? [link.disconnected] : [])]);
  logger.info('shutting down: draining requests and downloads in flight');
  await systemd.stopping();
  lru?.stop();
  statusBoard.stop();
  await shutdown(logger, [
    () => app.close(),
    async () => guard.close(),
    async () => tempSweeper.stop(),
    () => cache.close(DRAIN_TIMEOUT_MS),
    () => upstreams.close(),
    () => locker.close(),
    async () => lease?.stop(),
    () => db.close(),
    async () => otel?.shutdown(),
  ]);
  logger.info('stopped');
  return 0;
}

/**
 * What only one process of an instance does as it starts: clean out stale partial downloads, take
 * over a Go database, check that no other server uses it, migrate, and hold the server lease.
 */
async function prepareStore(config: LoadedConfig, storage: ConfiguredStorage, logger: Logger, lockMode: 'local' | 'distributed'): Promise<{ db: Database; lease: LeaseKeeper }> {
  await new TempFileSweeper(storage.tempDir, config.get<number>('cache.temp-max-age'), logger).sweep();
  checkDatabaseWritable(databaseUrl(config));
  // A Go ncps database is taken over (or, taken over already, checked for news) before anything
  // is served from ours: a takeover killed half-way is finished here first.
  await takeOverConfiguredGoDatabase(config, storage, logger);
  const db = openConfiguredDatabase(config);
  const sqlite = sqliteFile(config);
  await checkNoOtherServer(db, { sqlite, lockMode, logger });
  const applied = await db.migrate();
  if (applied.length > 0) {
    logger.info({ versions: applied, ...(db.lastBackup ? { backup: db.lastBackup } : {}) }, 'database migrated');
  }
  const lease = new LeaseKeeper(db, logger);
  await lease.start();
  // Started at the very same moment, another server may have got past the check above as well.
  const alongside = await otherLiveServers(db).catch(() => []);
  if (alongside.length > 0 && sqlite && lockMode === 'local') {
    logger.error(
      { servers: alongside.map((l) => `${l.hostname} (pid ${l.pid})`).join(', ') },
      'another ncps server started on this SQLite database at the same moment: run one server per SQLite database',
    );
  }
  return { db, lease };
}

/** The supervisor's share of the start: the store prepared and the signing key made, once, before any worker starts. */
async function prepareInstanceOnce(config: LoadedConfig, settings: Awaited<ReturnType<typeof checkedSettings>>, logger: Logger): Promise<{ stop(): Promise<void> }> {
  const locker = createLocker(config, logger);
  const lockMode = locker instanceof LocalLocker ? 'local' : 'distributed';
  await locker.check?.();
  await locker.close();
  const storage = openConfiguredStorage(config);
  await storage.check?.();
  const { db, lease } = await prepareStore(config, storage, logger, lockMode);
  await loadSigningKey({ fileKey: settings.fileKey, hostname: settings.hostname, db, storage, logger });
  return {
    async stop() {
      await lease.stop();
      await db.close();
    },
  };
}

/**
 * The first SIGTERM or SIGINT. A second one stops a lone server at once; a worker ignores it, as it
 * gets one from its supervisor and maybe one from systemd too (the supervisor kills it if it drains
 * too long).
 */
function waitForSignal(ignoreRepeats = false): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      if (ignoreRepeats) {
        process.on('SIGTERM', () => undefined);
        process.on('SIGINT', () => undefined);
      }
      resolve(signal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

async function shutdown(logger: Logger, steps: Array<() => Promise<unknown>>): Promise<void> {
  const deadline = setTimeout(() => {
    logger.error('shutdown took too long; exiting');
    process.exit(1);
  }, DRAIN_TIMEOUT_MS + 10_000);
  deadline.unref();
  for (const step of steps) {
    await step().catch((error: Error) => logger.warn({ err: error.message }, 'error during shutdown'));
  }
  clearTimeout(deadline);
}
