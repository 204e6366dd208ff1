// `ncps serve`: assemble the seams from configuration, migrate the database, listen, and shut
// down cleanly on SIGTERM/SIGINT.

import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Cache } from '../cache/cache';
import { DEFAULT_LRU_SCHEDULE, LruCleaner } from '../cache/lru';
import { parseSchedule } from '../cache/schedule';
import { OrphanSweeper } from '../cache/orphans';
import { CacheWrites } from '../cache/writes';
import { loadSigningKey } from '../cache/signing-key';
import { ConfigError, type LoadedConfig } from '../config/load';
import { LeaseKeeper } from '../lock/lease';
import { hasLegacyNarInfos, LegacyNarInfoMigrator } from '../migrate/narinfo';
import { legacyFilesKeptForGo } from '../migrate/go/state';
import { takeOverConfiguredGoDatabase } from './go-takeover';
import { instrumentLocker } from '../lock/instrumented';
import { LocalLocker } from '../lock/local';
import { commandConfig, commandLogger, createLocker, startConfiguredOpenTelemetry, describeDatabase, openConfiguredDatabase, openConfiguredStorage } from './common';
import { parsePublicKey, type PublicKey } from '../nix';
import { buildApp } from '../server/app';
import type { Logger } from '../telemetry/logger';
import { Metrics } from '../telemetry/metrics';
import { Readiness } from '../telemetry/readiness';
import { SystemdNotifier } from '../telemetry/systemd';
import { parseNetrc, type Netrc } from '../upstream/netrc';
import { parseAllowedHost } from '../upstream/destinations';
import { parseUpstreamUrl, UpstreamPool } from '../upstream/pool';
import { upstreamTrustWarnings } from '../upstream/trust';

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

/** Everything in the configuration that can be checked before touching disk or network. */
function checkedSettings(config: LoadedConfig) {

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
    hostname: config.get<string>('cache.hostname') || os.hostname(),
    upstreamUrls,
    allowedHosts,
    trustedKeys,
    netrc,
    netrcWarning,
    signNarInfo: config.get<boolean>('cache.sign-narinfo'),
    secretKeyPath: config.get<string>('cache.secret-key-path'),
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
    lruTimezone: config.get<string>('cache.lru.timezone'),
    prometheus: config.get<boolean>('prometheus.enabled'),
  };
}

async function serve(argv: string[]): Promise<number> {
  const config = commandConfig('serve', SUMMARY, argv);
  if (!config) return 0;
  const settings = checkedSettings(config);
  const logger = commandLogger(config, 'nonblocking');
  if (settings.netrcWarning) logger.warn(settings.netrcWarning);
  if (config.configFile) logger.info({ file: config.configFile }, 'configuration file read');

  const baseLocker = createLocker(config, logger);
  const lockMode = baseLocker instanceof LocalLocker ? 'local' : 'distributed';
  const metrics = new Metrics({ maxSizeBytes: settings.maxSizeBytes, defaultMetrics: settings.prometheus, lockMode });
  const storage = openConfiguredStorage(config);
  await storage.check?.();
  const removed = (await storage.cleanTempDir?.(60 * 60 * 1000)) ?? 0;
  if (removed > 0) logger.info({ removed }, 'removed stale partial downloads');

  const locker = instrumentLocker(baseLocker, metrics, lockMode);
  await locker.check?.();
  // A Go ncps database is taken over (or, taken over already, checked for news) before anything
  // is served from ours: a takeover killed half-way is finished here first.
  await takeOverConfiguredGoDatabase(config, storage, logger);
  const db = openConfiguredDatabase(config);
  const applied = await db.migrate();
  if (applied.length > 0) {
    logger.info({ versions: applied, ...(db.lastBackup ? { backup: db.lastBackup } : {}) }, 'database migrated');
  }
  const lease = new LeaseKeeper(db, logger);
  await lease.start();

  const signingKey = await loadSigningKey({
    secretKeyPath: settings.secretKeyPath,
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
  const cache = new Cache({
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
  });
  const writes = new CacheWrites({
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
    beforeScrape: async () => metrics.recordStoreStats(await db.storeStats()),
    readiness: new Readiness({ db, storage, upstreams }),
  });

  let lru: LruCleaner | undefined;
  if (settings.maxSizeBytes > 0) {
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
  } else if (settings.lruSchedule) {
    logger.warn('--cache-lru-schedule has no effect without --cache-max-size');
  }

  const { host, port } = settings.listen;
  await app.listen({ host: host === '' ? '::' : host, port, ipv6Only: false });
  logger.info(
    {
      addr: `${host}:${port}`,
      storage: storage.describe,
      database: describeDatabase(config),
      upstreams: upstreams.upstreams.map((u) => u.baseUrl.href),
      publicKey: signingKey.publicKey.text,
    },
    'ncps is serving',
  );
  // The standard OpenTelemetry variable for the push interval.
  const interval = Number(process.env.OTEL_METRIC_EXPORT_INTERVAL);
  const otel = await startConfiguredOpenTelemetry(config, metrics, logger, interval > 0 ? interval : undefined);
  const systemd = new SystemdNotifier(logger);
  await systemd.ready(`serving on ${host}:${port}`);

  await waitForSignal();
  logger.info('shutting down: draining requests and downloads in flight');
  await systemd.stopping();
  lru?.stop();
  await shutdown(logger, [
    () => app.close(),
    () => cache.close(DRAIN_TIMEOUT_MS),
    () => upstreams.close(),
    () => locker.close(),
    () => lease.stop(),
    () => db.close(),
    async () => otel?.shutdown(),
  ]);
  logger.info('stopped');
  return 0;
}

function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
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
