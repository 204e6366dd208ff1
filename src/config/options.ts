// Every setting of ncps in one table: its config-file key, command-line flag, environment variable,
// format, default and documentation. The convict schema, the flag parser, `--help` and the
// configuration reference are all generated from this table, so they cannot drift apart.

export type OptionFormat =
  | 'string'
  | 'bool'
  | 'log-level'
  | 'go-duration'
  | 'size'
  | 'string-list'
  | 'non-negative-int'
  | readonly string[];

export interface OptionSpec {
  /** Dotted config-file key, as ncps spells it (`cache.upstream.urls`). */
  key: string;
  /** Flag name without dashes. */
  flag: string;
  env?: string;
  format: OptionFormat;
  default: unknown;
  doc: string;
  /** Which commands accept it; global options are accepted everywhere. */
  scope: 'global' | 'serve' | 'signing' | 'storage' | 'database' | 'redis' | 'migration' | 'narinfo-migration' | 'offline' | 'fsck' | 'list' | 'go-takeover' | 'go-cleanup';
  sensitive?: boolean;
  /** Older flag names that still work, with a warning. */
  aliases?: readonly string[];
  /** Older environment variables and config keys of the Go ncps that still work, with a warning.
   * As in the Go ncps, the current name wins when both are given (whatever their sources). */
  deprecated?: { env?: readonly string[]; keys?: readonly string[] };
  /** Other names read for this setting without a warning (the Go `migrate` command's config key
   * `cache.database.url`, the Go `CONCURRENCY` beside ours). They rank like the current name. */
  synonyms?: { flags?: readonly string[]; env?: readonly string[]; keys?: readonly string[] };
  /** Set while a flag is accepted for compatibility but its feature is not built yet. */
  notImplemented?: string;
  /**
   * A Go ncps setting of a feature this ncps does not have. It is accepted (flag, variable, key);
   * when a value turns the feature on (`active`), one warning line at start names the feature and
   * what happens instead. Settings without `active` are details that only matter once it is on.
   */
  unsupported?: { feature: UnsupportedFeature; active?: (value: unknown) => boolean };
}

/** Features of the Go ncps that this ncps does not have, and what it does instead. */
export const UNSUPPORTED_FEATURES = {
  cdc: {
    name: 'content-defined chunking (CDC)',
    instead: 'NARs are stored and served whole (each download verified before it is kept)',
  },
  staging: {
    name: 'in-flight NAR staging',
    instead:
      'an instance waits --cache-lock-download-wait for a download another instance is running, then streams the NAR from upstream itself',
  },
  analytics: { name: 'analytics reporting', instead: 'this ncps never sends usage reports anywhere' },
  pprof: { name: 'the pprof listener', instead: 'no profiling port is opened' },
  xz: { name: 'the xz implementation switch', instead: 'ncps always decompresses with the xz program found on PATH' },
  console: {
    name: 'the console log writer',
    instead: 'logs are JSON lines on stdout, prettified by ncps itself when stdout is a terminal',
  },
} as const;
export type UnsupportedFeature = keyof typeof UNSUPPORTED_FEATURES;

const isTrue = (value: unknown) => value === true;
const isFalse = (value: unknown) => value === false;
const nonEmpty = (value: unknown) => value !== '' && value !== undefined && value !== null;

/** A Go ncps setting of a feature this ncps lacks: same names, accepted and ignored (see `unsupported`). */
function unsupportedOption(
  feature: UnsupportedFeature,
  option: Omit<OptionSpec, 'unsupported' | 'doc'> & { doc?: string },
  active?: (value: unknown) => boolean,
): OptionSpec {
  const { name, instead } = UNSUPPORTED_FEATURES[feature];
  return {
    ...option,
    doc: `${option.doc ?? 'Go ncps setting'}: accepted and ignored, ${name} is not part of this ncps (${instead}).`,
    unsupported: { feature, ...(active ? { active } : {}) },
  };
}


export const OPTIONS: readonly OptionSpec[] = [
  // Global
  {
    key: 'config',
    flag: 'config',
    env: 'NCPS_CONFIG_FILE',
    format: 'string',
    default: '',
    doc: 'Path to a configuration file: YAML, TOML or JSON (by its extension; else TOML, then YAML), keys are the dotted option names. Defaults to $XDG_CONFIG_HOME/ncps/config.yaml (~/.config/ncps/config.yaml), read when it exists.',
    scope: 'global',
  },
  {
    key: 'log.level',
    flag: 'log-level',
    env: 'LOG_LEVEL',
    format: 'log-level',
    default: 'info',
    doc: 'Log level: trace, debug, info, warn, error, fatal, panic, or disabled (no log at all).',
    scope: 'global',
  },
  {
    key: 'opentelemetry.enabled',
    flag: 'otel-enabled',
    env: 'OTEL_ENABLED',
    format: 'bool',
    default: false,
    doc: 'Export traces and metrics over OTLP.',
    scope: 'global',
  },
  {
    key: 'opentelemetry.grpc-url',
    flag: 'otel-grpc-url',
    env: 'OTEL_GRPC_URL',
    format: 'string',
    default: '',
    doc: 'OTLP gRPC endpoint.',
    scope: 'global',
  },
  {
    key: 'prometheus.enabled',
    flag: 'prometheus-enabled',
    env: 'PROMETHEUS_ENABLED',
    format: 'bool',
    default: false,
    doc: 'Serve Prometheus metrics on /metrics (never behind the read token, as in the Go ncps: scrapers carry none).',
    scope: 'global',
  },
  unsupportedOption('analytics', {
    key: 'analytics.reporting.enabled',
    flag: 'analytics-reporting-enabled',
    env: 'ANALYTICS_REPORTING_ENABLED',
    format: 'bool',
    default: false,
    scope: 'global',
  }, isTrue),
  unsupportedOption('analytics', {
    key: 'analytics.reporting.samples',
    flag: 'analytics-reporting-samples',
    format: 'bool',
    default: false,
    scope: 'global',
  }, isTrue),
  unsupportedOption('console', {
    key: 'log.console-writer.enabled',
    flag: 'log-console-writer-enabled',
    format: 'bool',
    default: false,
    scope: 'global',
  }, () => true),
  unsupportedOption('console', {
    key: 'log.console-writer.prefix',
    flag: 'log-console-writer-prefix',
    format: 'string',
    default: '',
    scope: 'global',
  }, nonEmpty),
  unsupportedOption('xz', {
    key: 'xz-binary-path',
    flag: 'xz-binary-path',
    env: 'XZ_BINARY_PATH',
    format: 'string',
    default: '',
    scope: 'global',
  }, nonEmpty),
  unsupportedOption('xz', {
    key: 'use-xz-binary',
    flag: 'use-xz-binary',
    env: 'USE_XZ_BINARY',
    format: 'bool',
    default: true,
    scope: 'global',
  }, isFalse),

  // Server
  {
    key: 'server.addr',
    flag: 'server-addr',
    env: 'SERVER_ADDR',
    format: 'string',
    default: ':8501',
    doc: 'Address to listen on, host:port (an empty host listens on every interface).',
    scope: 'serve',
  },
  {
    key: 'server.send-timeout',
    flag: 'server-send-timeout',
    env: 'SERVER_SEND_TIMEOUT',
    format: 'go-duration',
    default: '2m',
    doc: 'A client that takes none of the bytes queued for it for this long is disconnected (0 never).',
    scope: 'serve',
  },
  {
    key: 'server.upload-body-timeout',
    flag: 'server-upload-body-timeout',
    env: 'SERVER_UPLOAD_BODY_TIMEOUT',
    format: 'go-duration',
    default: '30s',
    doc: 'An upload whose body delivers less than 16 KiB in this long is disconnected and its temporary file removed (0 never).',
    scope: 'serve',
  },
  {
    key: 'server.max-connections',
    flag: 'server-max-connections',
    env: 'SERVER_MAX_CONNECTIONS',
    format: 'non-negative-int',
    default: 0,
    doc: 'Most client connections at once; more are refused. 0: as many as the open-files limit allows (two descriptors per connection, 64 kept for the rest).',
    scope: 'serve',
  },
  {
    key: 'server.workers',
    flag: 'server-workers',
    env: 'SERVER_WORKERS',
    format: 'non-negative-int',
    default: 1,
    doc: 'Worker processes serving on the one address; 0 starts one per CPU core the process may use (its CPU affinity and cgroup quota). One worker serves tens of thousands of narinfo hits and over a GiB/s of NAR hits per second; each further worker costs its own memory (about 100 MiB) and database connections.',
    scope: 'serve',
  },

  // Cache identity and signing
  {
    key: 'cache.hostname',
    flag: 'cache-hostname',
    env: 'CACHE_HOSTNAME',
    format: 'string',
    default: '',
    doc: "Host name of this cache; also the name of its signing key. Defaults to the machine's host name.",
    scope: 'serve',
  },
  {
    key: 'cache.secret-key-path',
    flag: 'cache-secret-key-path',
    env: 'CACHE_SECRET_KEY_PATH',
    format: 'string',
    default: '',
    doc: 'Nix secret key file (name:base64) to sign narinfos with. Without it a key is generated once and kept in the database.',
    scope: 'signing',
    sensitive: true,
  },
  {
    key: 'cache.sign-narinfo',
    flag: 'cache-sign-narinfo',
    env: 'CACHE_SIGN_NARINFO',
    format: 'bool',
    default: true,
    doc: "Add this cache's signature to every narinfo it serves.",
    scope: 'signing',
  },
  {
    key: 'cache.temp-path',
    flag: 'cache-temp-path',
    env: 'CACHE_TEMP_PATH',
    format: 'string',
    default: '',
    doc: 'Directory for downloads in progress. Defaults to store/tmp inside the local storage (or the system temp directory with S3).',
    scope: 'storage',
  },
  {
    key: 'cache.temp-max-age',
    flag: 'cache-temp-max-age',
    env: 'CACHE_TEMP_MAX_AGE',
    format: 'go-duration',
    default: '1h',
    doc: 'Partial files (*.part) in the temp directory untouched for this long are removed, at start-up and then every quarter of it (at most every 15 minutes): what a crash left behind. Files in use are never removed.',
    scope: 'serve',
  },

  // Database
  {
    key: 'cache.database-url',
    flag: 'cache-database-url',
    env: 'CACHE_DATABASE_URL',
    format: 'string',
    default: '',
    doc: 'Database URL: sqlite:/path/db.sqlite, or postgres://user:password@host:5432/db (also postgresql://, and postgresql:///db?host=/run/postgresql for a unix socket). Defaults to sqlite:<local storage>/db/db.sqlite. The config key cache.database.url (what the Go ncps\'s migrate command reads) is read too.',
    scope: 'database',
    sensitive: true,
    synonyms: { keys: ['cache.database.url'] },
  },
  {
    key: 'cache.database.pool.max-open-conns',
    flag: 'cache-database-pool-max-open-conns',
    env: 'CACHE_DATABASE_POOL_MAX_OPEN_CONNS',
    format: 'non-negative-int',
    default: 0,
    doc: 'Maximum open database connections (0: the driver default).',
    scope: 'database',
  },
  {
    key: 'cache.database.pool.max-idle-conns',
    flag: 'cache-database-pool-max-idle-conns',
    env: 'CACHE_DATABASE_POOL_MAX_IDLE_CONNS',
    format: 'non-negative-int',
    default: 0,
    doc: 'Maximum idle database connections (0: the driver default).',
    scope: 'database',
  },

  // Storage
  {
    key: 'cache.storage.local',
    flag: 'cache-storage-local',
    env: 'CACHE_STORAGE_LOCAL',
    format: 'string',
    default: '',
    doc: 'Directory for local storage. Defaults to $XDG_DATA_HOME/ncps (~/.local/share/ncps).',
    scope: 'storage',
    aliases: ['cache-data-path'],
    deprecated: { env: ['CACHE_DATA_PATH'], keys: ['cache.data-path'] },
  },
  ...(['bucket', 'endpoint', 'region', 'access-key-id', 'secret-access-key'] as const).map(
    (name): OptionSpec => ({
      key: `cache.storage.s3.${name}`,
      flag: `cache-storage-s3-${name}`,
      env: `CACHE_STORAGE_S3_${name.toUpperCase().replace(/-/g, '_')}`,
      format: 'string',
      default: '',
      doc: `S3 ${name.replace(/-/g, ' ')}.`,
      scope: 'storage',
      sensitive: name === 'secret-access-key' || name === 'access-key-id',
    }),
  ),
  {
    key: 'cache.storage.s3.force-path-style',
    flag: 'cache-storage-s3-force-path-style',
    env: 'CACHE_STORAGE_S3_FORCE_PATH_STYLE',
    format: 'bool',
    default: false,
    doc: 'Address the S3 bucket in the path (http://host/bucket/key) for every endpoint. Without it ncps chooses as the Go ncps does: the host name (http://bucket.host/key) only for Amazon S3, Google Cloud Storage and Alibaba OSS endpoints, the path for any other (MinIO, Garage, Ceph…).',
    scope: 'storage',
  },

  // Upstreams
  {
    key: 'cache.upstream.urls',
    flag: 'cache-upstream-url',
    env: 'CACHE_UPSTREAM_URLS',
    format: 'string-list',
    default: ['https://cache.nixos.org'],
    doc: 'Upstream binary cache URL; repeatable. Append ?priority=N to rank it (lower is preferred).',
    scope: 'serve',
    aliases: ['upstream-cache'],
    deprecated: { env: ['UPSTREAM_CACHES'], keys: ['cache.upstream.caches'] },
  },
  {
    key: 'cache.upstream.public-keys',
    flag: 'cache-upstream-public-key',
    env: 'CACHE_UPSTREAM_PUBLIC_KEYS',
    format: 'string-list',
    default: ['cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY='],
    doc: 'Public key (name:base64) trusted to sign upstream narinfos; repeatable. A narinfo is accepted when any of its signatures verifies against any of these keys.',
    scope: 'serve',
    aliases: ['upstream-public-key'],
    deprecated: { env: ['UPSTREAM_PUBLIC_KEYS'] },
  },
  {
    key: 'cache.upstream.dialer-timeout',
    flag: 'cache-upstream-dialer-timeout',
    env: 'CACHE_UPSTREAM_DIALER_TIMEOUT',
    format: 'go-duration',
    default: '3s',
    doc: 'Timeout for connecting to an upstream.',
    scope: 'serve',
    aliases: ['upstream-dialer-timeout'],
    deprecated: { env: ['UPSTREAM_DIALER_TIMEOUT'] },
  },
  {
    key: 'cache.upstream.response-header-timeout',
    flag: 'cache-upstream-response-header-timeout',
    env: 'CACHE_UPSTREAM_RESPONSE_HEADER_TIMEOUT',
    format: 'go-duration',
    default: '3s',
    doc: 'Timeout for an upstream to start answering; a slower upstream counts as not having the path.',
    scope: 'serve',
    aliases: ['upstream-response-header-timeout'],
    deprecated: { env: ['UPSTREAM_RESPONSE_HEADER_TIMEOUT'] },
  },
  {
    key: 'cache.upstream.allowed-hosts',
    flag: 'cache-upstream-allowed-host',
    env: 'CACHE_UPSTREAM_ALLOWED_HOSTS',
    format: 'string-list',
    default: [],
    doc: 'A host (`name`, `name:port`, an address) or address range (`10.0.0.0/8`) that NAR URLs and redirects may lead to although it is loopback, link-local or private; repeatable. Without it ncps fetches only from the configured upstreams and from hosts with public addresses (checked after DNS resolution), never from its own port.',
    scope: 'serve',
  },
  {
    key: 'cache.netrc-file',
    flag: 'netrc-file',
    env: 'NETRC_FILE',
    format: 'string',
    default: '',
    doc: 'netrc file with credentials for upstreams (sent as HTTP Basic auth). Defaults to ~/.netrc, read when it exists. A file that cannot be read or parsed is skipped with a warning (as the Go ncps does).',
    scope: 'serve',
    sensitive: true,
  },

  // Write access, authentication, size limits (issue: operations)
  {
    key: 'cache.allow-put-verb',
    flag: 'cache-allow-put-verb',
    env: 'CACHE_ALLOW_PUT_VERB',
    format: 'bool',
    default: false,
    doc: 'Accept uploads (PUT under /upload).',
    scope: 'serve',
  },
  {
    key: 'cache.allow-delete-verb',
    flag: 'cache-allow-delete-verb',
    env: 'CACHE_ALLOW_DELETE_VERB',
    format: 'bool',
    default: false,
    doc: 'Accept DELETE of narinfos and NARs.',
    scope: 'serve',
  },
  {
    key: 'cache.require-trusted-signature',
    flag: 'cache-require-trusted-signature',
    env: 'CACHE_REQUIRE_TRUSTED_SIGNATURE',
    format: 'bool',
    default: false,
    doc: 'Refuse uploaded narinfos that no trusted upload key signed.',
    scope: 'serve',
  },
  {
    key: 'cache.trusted-upload-keys',
    flag: 'cache-trusted-upload-key',
    env: 'CACHE_TRUSTED_UPLOAD_KEYS',
    format: 'string-list',
    default: [],
    doc: 'Public key trusted to sign uploads; repeatable.',
    scope: 'serve',
  },
  {
    key: 'cache.get-token',
    flag: 'cache-get-token',
    env: 'CACHE_GET_TOKEN',
    format: 'string',
    default: '',
    doc: 'Bearer token required for reads.',
    scope: 'serve',
    sensitive: true,
  },
  {
    key: 'cache.put-token',
    flag: 'cache-put-token',
    env: 'CACHE_PUT_TOKEN',
    format: 'string',
    default: '',
    doc: 'Token required for uploads, deletes and pins (an ncps-ts addition). Without it, writes need the --cache-get-token when that is set; pins always need one of the two.',
    scope: 'serve',
    sensitive: true,
  },
  {
    key: 'cache.negative-ttl',
    flag: 'cache-negative-ttl',
    env: 'CACHE_NEGATIVE_TTL',
    format: 'go-duration',
    default: '30s',
    doc: 'How long "no upstream has this path" is remembered before upstreams are asked again; 0 disables (an ncps-ts addition).',
    scope: 'serve',
  },
  {
    key: 'cache.max-size',
    flag: 'cache-max-size',
    env: 'CACHE_MAX_SIZE',
    format: 'size',
    default: '0',
    doc: 'Maximum size of the store (units B, K, M, G, T); 0 means unlimited.',
    scope: 'serve',
  },
  {
    key: 'cache.lru.schedule',
    flag: 'cache-lru-schedule',
    env: 'CACHE_LRU_SCHEDULE',
    format: 'string',
    default: '',
    doc: 'Schedule of the LRU clean-up: cron (5 fields, or 6 with seconds), @hourly/@daily/@weekly/@monthly/@yearly, or @every DURATION; a CRON_TZ=Zone prefix sets its time zone. Defaults to hourly when --cache-max-size is set.',
    scope: 'serve',
  },
  {
    key: 'cache.lru.timezone',
    flag: 'cache-lru-schedule-timezone',
    env: 'CACHE_LRU_SCHEDULE_TZ',
    format: 'string',
    default: 'Local',
    doc: 'Time zone of the LRU schedule.',
    scope: 'serve',
  },

  // Redis and locks (issue: scale-out)
  {
    key: 'cache.redis.addrs',
    flag: 'cache-redis-addrs',
    env: 'CACHE_REDIS_ADDRS',
    format: 'string-list',
    default: [],
    doc: 'Redis addresses (host:port); repeatable or comma separated. One address: that Redis. Several: independent Redis servers, a lock is held when a majority of them granted it (Redlock, as in the Go ncps), or, when the addresses belong to one Redis Cluster (detected at start), that cluster.',
    scope: 'redis',
  },
  {
    key: 'cache.redis.username',
    flag: 'cache-redis-username',
    env: 'CACHE_REDIS_USERNAME',
    format: 'string',
    default: '',
    doc: 'Redis user name.',
    scope: 'redis',
  },
  {
    key: 'cache.redis.password',
    flag: 'cache-redis-password',
    env: 'CACHE_REDIS_PASSWORD',
    format: 'string',
    default: '',
    doc: 'Redis password.',
    scope: 'redis',
    sensitive: true,
  },
  {
    key: 'cache.redis.db',
    flag: 'cache-redis-db',
    env: 'CACHE_REDIS_DB',
    format: 'non-negative-int',
    default: 0,
    doc: 'Redis database number.',
    scope: 'redis',
  },
  {
    key: 'cache.redis.use-tls',
    flag: 'cache-redis-use-tls',
    env: 'CACHE_REDIS_USE_TLS',
    format: 'bool',
    default: false,
    doc: 'Connect to Redis over TLS.',
    scope: 'redis',
  },
  {
    key: 'cache.redis.pool-size',
    flag: 'cache-redis-pool-size',
    env: 'CACHE_REDIS_POOL_SIZE',
    format: 'non-negative-int',
    default: 10,
    doc: 'Redis connection pool size. Accepted for compatibility: ncps-ts multiplexes its lock commands over one connection per Redis server.',
    scope: 'redis',
  },
  {
    key: 'cache.lock.backend',
    flag: 'cache-lock-backend',
    env: 'CACHE_LOCK_BACKEND',
    format: ['local', 'redis'],
    default: 'local',
    doc: 'Lock backend: local (one instance) or redis (several instances).',
    scope: 'redis',
  },
  {
    key: 'cache.lock.redis.key-prefix',
    flag: 'cache-lock-redis-key-prefix',
    env: 'CACHE_LOCK_REDIS_KEY_PREFIX',
    format: 'string',
    default: 'ncps:lock:',
    doc: 'Prefix of the lock keys in Redis.',
    scope: 'redis',
  },
  {
    key: 'cache.lock.download-lock-ttl',
    flag: 'cache-lock-download-ttl',
    env: 'CACHE_LOCK_DOWNLOAD_TTL',
    format: 'go-duration',
    default: '5m',
    doc: 'Time to live of a download lock.',
    scope: 'redis',
  },
  {
    key: 'cache.lock.download-lock-wait',
    flag: 'cache-lock-download-wait',
    env: 'CACHE_LOCK_DOWNLOAD_WAIT',
    format: 'go-duration',
    default: '30s',
    doc:
      "How long a NAR request waits while another instance downloads the same NAR. After that it streams the NAR from upstream itself, so a client is never kept waiting on a long download or on the lock of an instance that died; that copy is stored only if the other instance's lock is free by the end. The Go ncps's --cache-download-poll-timeout (CACHE_DOWNLOAD_POLL_TIMEOUT, cache.download.poll-timeout), how long its instances wait for each other's downloads, sets the same.",
    scope: 'redis',
    synonyms: { flags: ['cache-download-poll-timeout'], env: ['CACHE_DOWNLOAD_POLL_TIMEOUT'], keys: ['cache.download.poll-timeout'] },
  },
  {
    key: 'cache.lock.lru-lock-ttl',
    flag: 'cache-lock-lru-ttl',
    env: 'CACHE_LOCK_LRU_TTL',
    format: 'go-duration',
    default: '30m',
    doc: 'Time to live of the LRU lock.',
    scope: 'redis',
  },
  {
    key: 'cache.lock.retry.max-attempts',
    flag: 'cache-lock-retry-max-attempts',
    env: 'CACHE_LOCK_RETRY_MAX_ATTEMPTS',
    format: 'non-negative-int',
    default: 3,
    doc: 'Attempts to take a lock before giving up.',
    scope: 'redis',
  },
  {
    key: 'cache.lock.retry.initial-delay',
    flag: 'cache-lock-retry-initial-delay',
    env: 'CACHE_LOCK_RETRY_INITIAL_DELAY',
    format: 'go-duration',
    default: '100ms',
    doc: 'First delay between lock attempts.',
    scope: 'redis',
  },
  {
    key: 'cache.lock.retry.max-delay',
    flag: 'cache-lock-retry-max-delay',
    env: 'CACHE_LOCK_RETRY_MAX_DELAY',
    format: 'go-duration',
    default: '2s',
    doc: 'Longest delay between lock attempts.',
    scope: 'redis',
  },
  {
    key: 'cache.lock.retry.jitter',
    flag: 'cache-lock-retry-jitter',
    env: 'CACHE_LOCK_RETRY_JITTER',
    format: 'bool',
    default: true,
    doc: 'Randomise the delay between lock attempts.',
    scope: 'redis',
  },
  {
    key: 'cache.lock.allow-degraded-mode',
    flag: 'cache-lock-allow-degraded-mode',
    env: 'CACHE_LOCK_ALLOW_DEGRADED_MODE',
    format: 'bool',
    default: false,
    doc: 'Fall back to local locks when Redis is unreachable.',
    scope: 'redis',
  },

  // Go ncps settings of features this ncps does not have (accepted; a warning when turned on).
  ...(
    [
      ['enabled', 'bool', false, isTrue],
      ['min', 'non-negative-int', 16384],
      ['avg', 'non-negative-int', 65536],
      ['max', 'non-negative-int', 262144],
      ['lazy-chunking-enabled', 'bool', false, isTrue],
      ['background-workers', 'non-negative-int', 0],
      ['delete-delay', 'go-duration', '24h'],
      ['lazy-recovery-schedule', 'string', '@every 5m'],
      ['lazy-recovery-batch-size', 'non-negative-int', 100],
      ['lazy-cleanup-schedule', 'string', '@every 1h'],
      ['chunk-wait-timeout', 'go-duration', '30s'],
    ] as const
  ).map(([name, format, def, active]: readonly [string, OptionFormat, unknown, ((v: unknown) => boolean)?]) =>
    unsupportedOption('cdc', {
      key: `cache.cdc.${name}`,
      flag: `cache-cdc-${name}`,
      env: `CACHE_CDC_${name.toUpperCase().replace(/-/g, '_')}`,
      format,
      default: def,
      scope: 'serve',
    }, active),
  ),
  ...(
    [
      ['enabled', 'bool', false, isTrue],
      ['retention', 'go-duration', '5m'],
      ['part-size', 'non-negative-int', 8 * 1024 * 1024],
    ] as const
  ).map(([name, format, def, active]: readonly [string, OptionFormat, unknown, ((v: unknown) => boolean)?]) =>
    unsupportedOption('staging', {
      key: `cache.inflight-staging.${name}`,
      flag: `cache-inflight-staging-${name}`,
      env: `CACHE_INFLIGHT_STAGING_${name.toUpperCase().replace(/-/g, '_')}`,
      format,
      default: def,
      scope: 'serve',
    }, active),
  ),
  unsupportedOption('pprof', {
    key: 'pprof.addr',
    flag: 'pprof-addr',
    env: 'PPROF_ADDR',
    format: 'string',
    default: '',
    scope: 'serve',
  }, nonEmpty),

  // Migration commands
  {
    key: 'dry-run',
    flag: 'dry-run',
    format: 'bool',
    default: false,
    doc: 'Report what would be done without changing anything.',
    scope: 'migration',
  },
  {
    key: 'concurrency',
    flag: 'concurrency',
    env: 'CONCURRENCY',
    synonyms: { env: ['NCPS_MIGRATION_CONCURRENCY'] },
    format: 'non-negative-int',
    default: 10,
    doc: 'Legacy narinfo files migrated in parallel.',
    scope: 'narinfo-migration',
  },
  // fsck
  {
    key: 'repair',
    flag: 'repair',
    format: 'bool',
    default: false,
    doc: 'Repair what fsck finds (every repair is logged); without it, fsck only reports.',
    scope: 'fsck',
  },
  {
    key: 'verify-content',
    flag: 'verify-content',
    format: 'bool',
    default: false,
    doc: "Read every stored NAR and check its bytes against FileHash and, decompressed, NarHash (reads the whole store; see --verified-since).",
    scope: 'fsck',
  },
  {
    key: 'verified-since',
    flag: 'verified-since',
    format: 'go-duration',
    default: '0s',
    doc: 'With --verify-content, skip NARs whose bytes were verified less than this long ago (0: verify all), so a large store can be verified in slices.',
    scope: 'fsck',
  },
  {
    key: 'cache.fsck.dechunk-residue-grace',
    flag: 'dechunk-residue-grace',
    env: 'CACHE_FSCK_DECHUNK_RESIDUE_GRACE',
    format: 'go-duration',
    default: '24h',
    doc: 'Go ncps: grace period before CDC chunk residue is reclaimed.',
    scope: 'fsck',
    notImplemented: 'this ncps stores whole NARs, without content-defined chunks, so there is no residue',
  },
  // ncps list
  {
    key: 'list.sort',
    flag: 'sort',
    format: ['accessed', 'size', 'path'],
    default: 'accessed',
    doc: 'Order of the listing: accessed (most recently used first), size (largest NAR first) or path (by name, the part after the hash).',
    scope: 'list',
  },
  {
    key: 'list.limit',
    flag: 'limit',
    format: 'non-negative-int',
    default: 0,
    doc: 'Show at most this many paths (0: all).',
    scope: 'list',
  },
  {
    key: 'list.pinned',
    flag: 'pinned',
    format: 'bool',
    default: false,
    doc: 'Only the paths a pin keeps: pinned paths and the paths in their closures (what LRU never evicts).',
    scope: 'list',
  },
  {
    key: 'list.match',
    flag: 'match',
    format: 'string',
    default: '',
    doc: 'Only store paths containing this text (case-sensitive); also given as the argument: ncps list hello.',
    scope: 'list',
  },
  {
    key: 'list.json',
    flag: 'json',
    format: 'bool',
    default: false,
    doc: 'One JSON object per line (NDJSON) with every field, and no summary line: for scripts.',
    scope: 'list',
  },
  {
    key: 'create-database',
    flag: 'create-database',
    format: 'bool',
    default: false,
    doc: 'Create the SQLite database (and its schema) when there is none yet, instead of refusing: for a first migration of an old store into a new database.',
    scope: 'narinfo-migration',
  },
  {
    key: 'force',
    flag: 'force',
    format: 'bool',
    default: false,
    doc:
      'Run even though another program was seen using the database: an ncps server, without Redis; for migrate from-go, ' +
      'clients of the Go database that may be a Go ncps (only when you know it is stopped).',
    scope: 'offline',
  },

  // Taking over a Go ncps deployment
  {
    key: 'go-database-url',
    flag: 'go-database-url',
    env: 'NCPS_GO_DATABASE_URL',
    format: 'string',
    default: '',
    doc:
      'The Go ncps database to take over when it is not the one --cache-database-url names: sqlite:…, postgresql://… or ' +
      'mysql://… (this ncps does not serve from MySQL, it copies). Empty: a Go database at --cache-database-url is taken over in place.',
    scope: 'go-takeover',
    sensitive: true,
  },
  {
    key: 'remove-go-files',
    flag: 'remove-go-files',
    format: 'bool',
    default: false,
    doc:
      "Once taken over, remove the Go ncps's CDC chunk files (of NARs now whole in storage) and its narinfo files (now in the " +
      'database). Only when you will not go back to the Go ncps.',
    scope: 'go-cleanup',
  },
];

export const COMMAND_SCOPES: Record<string, ReadonlyArray<OptionSpec['scope']>> = {
  serve: ['global', 'serve', 'signing', 'storage', 'database', 'redis', 'go-takeover'],
  'migrate up': ['global', 'storage', 'database', 'migration', 'go-takeover'],
  'migrate from-go': ['global', 'signing', 'storage', 'database', 'migration', 'offline', 'go-takeover', 'go-cleanup'],
  'migrate status': ['global', 'storage', 'database'],
  'migrate-narinfo': ['global', 'storage', 'database', 'redis', 'migration', 'narinfo-migration', 'offline', 'go-takeover'],
  'sweep-orphans': ['global', 'storage', 'database', 'redis', 'migration', 'offline'],
  fsck: ['global', 'signing', 'storage', 'database', 'redis', 'migration', 'offline', 'fsck'],
  list: ['global', 'storage', 'database', 'list'],
};

export function optionsFor(command: string): OptionSpec[] {
  const scopes = COMMAND_SCOPES[command] ?? ['global'];
  return OPTIONS.filter((o) => scopes.includes(o.scope));
}
