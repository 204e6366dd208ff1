# NixOS module for ncps (the TypeScript implementation).
#
# It speaks the option names of nixpkgs' `services.ncps`, so an existing configuration keeps working
# when this module replaces that one, and adds what this implementation offers on top. The shape:
# options -> one JSON config file without secrets -> systemd units; secrets reach the process
# through systemd credentials (LoadCredential) and are exported as environment variables or passed
# as file-path flags by a small start script, so they never enter the Nix store.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    concatStringsSep
    escapeShellArg
    escapeShellArgs
    hasPrefix
    literalExpression
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    optional
    optionalAttrs
    optionals
    optionalString
    types
    ;

  cfg = config.services.ncps;
  ncps = lib.getExe' cfg.package "ncps";

  logLevels = [
    "trace"
    "debug"
    "info"
    "warn"
    "error"
    "fatal"
    "panic"
  ];

  useS3 = cfg.cache.storage.s3 != null;
  useRedis = cfg.cache.redis != null;

  databaseURLIsSqlite =
    cfg.cache.databaseURL != null
    && (hasPrefix "sqlite:" cfg.cache.databaseURL || hasPrefix "sqlite3:" cfg.cache.databaseURL);
  sqlitePath =
    if databaseURLIsSqlite then
      lib.removePrefix "//" (lib.removePrefix "sqlite:" (lib.removePrefix "sqlite3:" cfg.cache.databaseURL))
    else
      null;
  sqliteDir = if sqlitePath != null then dirOf sqlitePath else null;

  # "host:port", ":port" or "[v6]:port" -> port (null when it cannot be read).
  listenPort =
    let
      m = builtins.match ".*:([0-9]+)" cfg.server.addr;
    in
    if m == null then null else lib.toInt (builtins.head m);
  privilegedPort = listenPort != null && listenPort < 1024;

  migrateMode =
    if cfg.migrateNarinfo.mode == "auto" then
      (if useRedis then "online" else "offline")
    else
      cfg.migrateNarinfo.mode;

  # ---------------------------------------------------------------------------------------------
  # Credentials: name inside $CREDENTIALS_DIRECTORY -> file on the host (read by systemd as root).
  credentials = lib.filterAttrs (_: v: v != null) {
    secretKey = cfg.cache.secretKeyPath;
    netrc = cfg.netrcFile;
    databaseURL = cfg.cache.databaseURLFile;
    s3AccessKeyId = if useS3 then cfg.cache.storage.s3.accessKeyIdPath else null;
    s3SecretAccessKey = if useS3 then cfg.cache.storage.s3.secretAccessKeyPath else null;
    redisPassword = if useRedis then cfg.cache.redis.passwordFile else null;
    getToken = cfg.cache.getTokenFile;
    putToken = cfg.cache.putTokenFile;
  };
  # The ones the narinfo migration needs (no signing key, netrc or tokens).
  migrateCredentialNames = [
    "databaseURL"
    "s3AccessKeyId"
    "s3SecretAccessKey"
    "redisPassword"
  ];
  loadCredential = names: lib.mapAttrsToList (name: file: "${name}:${toString file}") (lib.filterAttrs (name: _: builtins.elem name names) credentials);

  # Environment variables filled from credentials. ncps reads flag > config file > environment, so
  # none of these keys may appear in the config file (they do not: see `settings`).
  credentialEnv = {
    databaseURL = "CACHE_DATABASE_URL";
    s3AccessKeyId = "CACHE_STORAGE_S3_ACCESS_KEY_ID";
    s3SecretAccessKey = "CACHE_STORAGE_S3_SECRET_ACCESS_KEY";
    redisPassword = "CACHE_REDIS_PASSWORD";
    getToken = "CACHE_GET_TOKEN";
    putToken = "CACHE_PUT_TOKEN";
  };
  exportCredentials =
    names:
    concatStringsSep "\n" (
      lib.mapAttrsToList (name: var: ''export ${var}="$(< "$CREDENTIALS_DIRECTORY/${name}")"'') (
        lib.filterAttrs (name: _: builtins.elem name names && credentials ? ${name}) credentialEnv
      )
    );

  # A Redis password given in clear text (nixpkgs compatibility) is in the store anyway.
  exportPlainRedisPassword = optionalString (
    useRedis && cfg.cache.redis.password != null && cfg.cache.redis.passwordFile == null
  ) "export CACHE_REDIS_PASSWORD=${escapeShellArg cfg.cache.redis.password}";

  # ---------------------------------------------------------------------------------------------
  # The config file. Keys are ncps's dotted names written as nested objects; the loader rejects
  # unknown keys, so only keys ncps knows are generated, and nothing secret.
  notEmpty = v: v != null && v != "" && v != [ ] && v != { };
  prune =
    attrs:
    lib.filterAttrs (_: notEmpty) (
      lib.mapAttrs (_: v: if builtins.isAttrs v then prune v else v) attrs
    );

  settings = prune {
    log.level = cfg.logLevel;
    prometheus = optionalAttrs cfg.prometheus.enable { enabled = true; };
    opentelemetry = optionalAttrs cfg.openTelemetry.enable {
      enabled = true;
      grpc-url = cfg.openTelemetry.grpcURL;
    };
    server.addr = cfg.server.addr;
    # Written only when set otherwise: the default needs no line.
    server.workers = if cfg.server.workers == 1 then null else cfg.server.workers;
    cache = {
      hostname = cfg.cache.hostName;
      database-url = cfg.cache.databaseURL;
      database.pool = {
        max-open-conns = nonNegative cfg.cache.database.pool.maxOpenConns;
        max-idle-conns = nonNegative cfg.cache.database.pool.maxIdleConns;
      };
      storage =
        if useS3 then
          {
            s3 = {
              inherit (cfg.cache.storage.s3) bucket endpoint region;
              force-path-style = cfg.cache.storage.s3.forcePathStyle;
            };
          }
        else
          { local = toString cfg.cache.storage.local; };
      temp-path = if cfg.cache.tempPath == null then null else toString cfg.cache.tempPath;
      upstream = {
        inherit (cfg.cache.upstream) urls;
        public-keys = cfg.cache.upstream.publicKeys;
        dialer-timeout = cfg.cache.upstream.dialerTimeout;
        response-header-timeout = cfg.cache.upstream.responseHeaderTimeout;
      };
      sign-narinfo = cfg.cache.signNarinfo;
      allow-put-verb = cfg.cache.allowPutVerb;
      allow-delete-verb = cfg.cache.allowDeleteVerb;
      require-trusted-signature = cfg.cache.requireTrustedSignature;
      trusted-upload-keys = cfg.cache.trustedUploadKeys;
      negative-ttl = cfg.cache.negativeTTL;
      max-size = cfg.cache.maxSize;
      lru = {
        inherit (cfg.cache.lru) schedule;
        timezone = cfg.cache.lru.scheduleTimeZone;
      };
      lock = {
        inherit (cfg.cache.lock) backend;
        redis.key-prefix = cfg.cache.lock.redisKeyPrefix;
        download-lock-ttl = cfg.cache.lock.downloadTTL;
        download-lock-wait = cfg.cache.lock.downloadWait;
        lru-lock-ttl = cfg.cache.lock.lruTTL;
        retry = {
          max-attempts = nonNegative cfg.cache.lock.retry.maxAttempts;
          initial-delay = cfg.cache.lock.retry.initialDelay;
          max-delay = cfg.cache.lock.retry.maxDelay;
          inherit (cfg.cache.lock.retry) jitter;
        };
        allow-degraded-mode = cfg.cache.lock.allowDegradedMode;
      };
      redis = optionalAttrs useRedis {
        addrs = cfg.cache.redis.addresses;
        db = nonNegative cfg.cache.redis.database;
        inherit (cfg.cache.redis) username;
        use-tls = cfg.cache.redis.useTLS;
        pool-size = nonNegative cfg.cache.redis.poolSize;
      };
    };
  };

  configFile = pkgs.writeText "ncps-config.json" (builtins.toJSON settings);

  # ---------------------------------------------------------------------------------------------
  # Start scripts.
  serveFlags =
    [ "--config=${configFile}" ]
    ++ optional (cfg.cache.secretKeyPath != null) ''--cache-secret-key-path="$CREDENTIALS_DIRECTORY/secretKey"''
    ++ optional (cfg.netrcFile != null) ''--netrc-file="$CREDENTIALS_DIRECTORY/netrc"'';

  # A script of the non-empty lines given.
  script =
    name: lines:
    pkgs.writeShellScript name (concatStringsSep "\n" (builtins.filter (l: l != "") lines) + "\n");

  serveScript = script "ncps-serve" [
    "set -euo pipefail"
    (exportCredentials (builtins.attrNames credentialEnv))
    exportPlainRedisPassword
    "exec ${ncps} serve ${concatStringsSep " " (serveFlags ++ map escapeShellArg cfg.extraArgs)}"
  ];

  # migrate-narinfo and migrate get what they need as flags (storage, database, Redis); the config
  # file would serve them too, as one file serves every command.
  databaseFlags = optional (cfg.cache.databaseURL != null) "--cache-database-url=${cfg.cache.databaseURL}";
  storageFlags =
    if useS3 then
      [
        "--cache-storage-s3-bucket=${cfg.cache.storage.s3.bucket}"
        "--cache-storage-s3-endpoint=${cfg.cache.storage.s3.endpoint}"
        "--cache-storage-s3-force-path-style=${lib.boolToString cfg.cache.storage.s3.forcePathStyle}"
      ]
      ++ optional (cfg.cache.storage.s3.region != null) "--cache-storage-s3-region=${cfg.cache.storage.s3.region}"
    else
      [ "--cache-storage-local=${toString cfg.cache.storage.local}" ];
  redisFlags = optionals useRedis (
    map (a: "--cache-redis-addrs=${a}") cfg.cache.redis.addresses
    ++ [
      "--cache-redis-db=${toString (nonNegative cfg.cache.redis.database)}"
      "--cache-redis-use-tls=${lib.boolToString cfg.cache.redis.useTLS}"
      "--cache-redis-pool-size=${toString (nonNegative cfg.cache.redis.poolSize)}"
      "--cache-lock-backend=redis"
      "--cache-lock-redis-key-prefix=${cfg.cache.lock.redisKeyPrefix}"
    ]
    ++ optional (cfg.cache.redis.username != null) "--cache-redis-username=${cfg.cache.redis.username}"
  );
  migrateNarinfoFlags =
    [ "--log-level=${cfg.logLevel}" ]
    ++ databaseFlags
    ++ storageFlags
    ++ redisFlags
    ++ [ "--concurrency=${toString cfg.migrateNarinfo.concurrency}" ]
    ++ cfg.migrateNarinfo.extraArgs;

  migrateUpFlags = [ "--log-level=${cfg.logLevel}" ] ++ databaseFlags;

  migrateScript = script "ncps-migrate-narinfo" [
    "set -euo pipefail"
    (exportCredentials migrateCredentialNames)
    exportPlainRedisPassword
    # Offline, the server is stopped (this unit runs before it): bring the schema up to date
    # first, so that the migration finds its tables on a fresh database too.
    (optionalString (migrateMode == "offline") "${ncps} migrate up ${escapeShellArgs migrateUpFlags}")
    "exec ${ncps} migrate-narinfo ${escapeShellArgs migrateNarinfoFlags}"
  ];

  # fsck reads the server's config file (keys of other commands are accepted) and needs the same
  # signing key, database and storage credentials, but no netrc or tokens.
  fsckCredentialNames = [
    "secretKey"
    "databaseURL"
    "s3AccessKeyId"
    "s3SecretAccessKey"
    "redisPassword"
  ];
  fsckFlags =
    [ "--config=${configFile}" ]
    ++ optional (cfg.cache.secretKeyPath != null) ''--cache-secret-key-path="$CREDENTIALS_DIRECTORY/secretKey"''
    ++ optional cfg.fsck.repair "--repair"
    ++ optional cfg.fsck.verifyContent "--verify-content"
    ++ optional (cfg.fsck.verifiedSince != null) "--verified-since=${cfg.fsck.verifiedSince}"
    ++ map escapeShellArg cfg.fsck.extraArgs;

  fsckScript = script "ncps-fsck" [
    "set -euo pipefail"
    (exportCredentials fsckCredentialNames)
    exportPlainRedisPassword
    "exec ${ncps} fsck ${concatStringsSep " " fsckFlags}"
  ];

  # ---------------------------------------------------------------------------------------------
  # Directories: below /var/lib they are StateDirectory entries (systemd creates them with the
  # right owner); elsewhere a tmpfiles rule creates them and ReadWritePaths opens them.
  writableDirs = lib.unique (
    optional (!useS3) (toString cfg.cache.storage.local)
    ++ optional (sqliteDir != null) sqliteDir
    ++ optional (cfg.cache.tempPath != null) (toString cfg.cache.tempPath)
  );
  underVarLib = d: hasPrefix "/var/lib/" d && d != "/var/lib/";
  # PrivateTmp gives the service /tmp and /var/tmp of its own, writable, where ncps creates what it
  # needs: no tmpfiles rule (it would change the host's /tmp, e.g. to 0700 ncps) and no ReadWritePaths.
  inPrivateTmp = d: builtins.any (t: d == t || hasPrefix "${t}/" d) [ "/tmp" "/var/tmp" ];
  stateDirectories = lib.unique (
    [ "ncps" ] ++ map (d: lib.removeSuffix "/" (lib.removePrefix "/var/lib/" d)) (builtins.filter underVarLib writableDirs)
  );
  otherDirs = builtins.filter (d: !(underVarLib d) && !(inPrivateTmp d)) writableDirs;

  hardening = {
    User = "ncps";
    Group = "ncps";
    StateDirectory = stateDirectories;
    StateDirectoryMode = "0700";
    ReadWritePaths = otherDirs;
    UMask = "0077";
    LimitNOFILE = 65536;

    CapabilityBoundingSet = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
    AmbientCapabilities = optionals privilegedPort [ "CAP_NET_BIND_SERVICE" ];
    # A user namespace would drop the capability to bind a port below 1024.
    PrivateUsers = !privilegedPort;
    NoNewPrivileges = true;
    DevicePolicy = "closed";
    DeviceAllow = [ "" ];
    PrivateDevices = true;
    PrivateTmp = true;
    PrivateMounts = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    ProtectKernelModules = true;
    ProtectKernelTunables = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectHostname = true;
    ProtectClock = true;
    ProtectProc = "invisible";
    # Not ProcSubset=pid: Node and V8 read /proc/cpuinfo and /proc/meminfo.
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
    ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    # V8 compiles JavaScript to machine code at run time: it needs writable and executable memory.
    MemoryDenyWriteExecute = false;
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
    SystemCallErrorNumber = "EPERM";
  };

  # Only this ncps tells systemd when it is ready (READY=1, WATCHDOG=1). The Go ncps, the default of
  # `package` when this module is imported without the flake, never does: under Type=notify it would
  # never count as started. So a package that does not say it notifies runs as Type=simple, without
  # the watchdog, and with the migration step nixpkgs' module gives it (dbmate-ncps up).
  notifies = cfg.package.passthru.systemdNotify or false;
  dbmateUpScript = script "ncps-dbmate-up" [
    (
      if cfg.cache.databaseURL != null then
        "export DATABASE_URL=${escapeShellArg cfg.cache.databaseURL}"
      else
        ''export DATABASE_URL="$(< "$CREDENTIALS_DIRECTORY/databaseURL")"''
    )
    "exec ${lib.getExe' cfg.package "dbmate-ncps"} up"
  ];

  isStorePathLiteral = v: v != null && builtins.isPath v;
  secretOptions = {
    "cache.secretKeyPath" = cfg.cache.secretKeyPath;
    "cache.databaseURLFile" = cfg.cache.databaseURLFile;
    "cache.getTokenFile" = cfg.cache.getTokenFile;
    "cache.putTokenFile" = cfg.cache.putTokenFile;
    netrcFile = cfg.netrcFile;
    "cache.storage.s3.accessKeyIdPath" = if useS3 then cfg.cache.storage.s3.accessKeyIdPath else null;
    "cache.storage.s3.secretAccessKeyPath" = if useS3 then cfg.cache.storage.s3.secretAccessKeyPath else null;
    "cache.redis.passwordFile" = if useRedis then cfg.cache.redis.passwordFile else null;
  };

  databaseURLHasPassword =
    cfg.cache.databaseURL != null && builtins.match "[a-z0-9+]+://[^/@]*:[^/@]*@.*" cfg.cache.databaseURL != null;
  databaseIsShared =
    cfg.cache.databaseURL == null # given through databaseURLFile: assumed to be a server
    || builtins.any (p: hasPrefix p cfg.cache.databaseURL) [
      "postgres://"
      "postgresql://"
      "mysql://"
    ];

  # Durations and sizes are strings, as in nixpkgs' module (which takes any), checked by assertions
  # against what ncps itself parses (`0`, `5m0s`, `100g`, …), so a typo fails at evaluation and a
  # value nixpkgs' module takes is never refused by type.
  durationType = types.str;
  durationPattern = "0|([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+";
  sizePattern = "[[:space:]]*[0-9]+(\\.[0-9]+)?[[:space:]]*([BKMGTbkmgt]([iI]?[bB])?)?[[:space:]]*";
  durations = lib.filterAttrs (_: v: v != null) {
    "cache.upstream.dialerTimeout" = cfg.cache.upstream.dialerTimeout;
    "cache.upstream.responseHeaderTimeout" = cfg.cache.upstream.responseHeaderTimeout;
    "cache.negativeTTL" = cfg.cache.negativeTTL;
    "cache.lock.downloadTTL" = cfg.cache.lock.downloadTTL;
    "cache.lock.downloadWait" = cfg.cache.lock.downloadWait;
    "cache.lock.lruTTL" = cfg.cache.lock.lruTTL;
    "cache.lock.retry.initialDelay" = cfg.cache.lock.retry.initialDelay;
    "cache.lock.retry.maxDelay" = cfg.cache.lock.retry.maxDelay;
    "fsck.verifiedSince" = cfg.fsck.verifiedSince;
  };
  badDurations = lib.filterAttrs (_: v: builtins.match durationPattern v == null) durations;
  # nixpkgs' module takes any integer; ncps takes 0 and more (0: the default), as the Go ncps treats them.
  nonNegative = v: if v < 0 then 0 else v;
  negativeInts = lib.filterAttrs (_: v: v < 0) (
    {
      "cache.database.pool.maxOpenConns" = cfg.cache.database.pool.maxOpenConns;
      "cache.database.pool.maxIdleConns" = cfg.cache.database.pool.maxIdleConns;
      "cache.lock.retry.maxAttempts" = cfg.cache.lock.retry.maxAttempts;
    }
    // optionalAttrs useRedis {
      "cache.redis.database" = cfg.cache.redis.database;
      "cache.redis.poolSize" = cfg.cache.redis.poolSize;
    }
  );
  credentialPath = types.nullOr (types.either types.path types.str);
in
{
  # This module replaces nixpkgs' services.ncps (same option names).
  disabledModules = [ "services/networking/ncps.nix" ];

  imports = [
    (lib.mkRenamedOptionModule
      [ "services" "ncps" "cache" "dataPath" ]
      [ "services" "ncps" "cache" "storage" "local" ]
    )
    (lib.mkRenamedOptionModule
      [ "services" "ncps" "upstream" "caches" ]
      [ "services" "ncps" "cache" "upstream" "urls" ]
    )
    (lib.mkRenamedOptionModule
      [ "services" "ncps" "upstream" "publicKeys" ]
      [ "services" "ncps" "cache" "upstream" "publicKeys" ]
    )
    (lib.mkRemovedOptionModule [
      "services"
      "ncps"
      "dbmatePackage"
    ] "ncps applies its database migrations itself (`ncps migrate up`, and `ncps serve` at start-up).")
    (lib.mkRemovedOptionModule [
      "services"
      "ncps"
      "cache"
      "lock"
      "postgresKeyPrefix"
    ] "locks are kept in Redis (services.ncps.cache.lock.backend = \"redis\").")
  ];

  options.services.ncps = {
    enable = mkEnableOption "ncps, a Nix binary cache proxy";

    package = lib.mkPackageOption pkgs "ncps" { };

    logLevel = mkOption {
      type = types.enum logLevels;
      default = "info";
      description = "Log level.";
    };

    server.addr = mkOption {
      type = types.str;
      default = ":8501";
      example = "127.0.0.1:8501";
      description = "Address to listen on, `host:port`; an empty host listens on every interface.";
    };

    server.workers = mkOption {
      type = types.ints.unsigned;
      default = 1;
      example = 0;
      description = ''
        Worker processes serving on `server.addr` (`--server-workers`). `0` starts one per CPU
        core the service may use (its CPUAffinity and CPUQuota count). One worker already serves
        tens of thousands of narinfo hits and over a GiB/s of NAR hits per second; each further
        worker costs its own memory (about 100 MiB) and database connections. The workers share
        one download per NAR and run one LRU clean-up between them.
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the TCP port of `server.addr` in the firewall.";
    };

    netrcFile = mkOption {
      type = credentialPath;
      default = null;
      example = "/run/secrets/ncps-netrc";
      description = ''
        netrc file with credentials for upstream caches. Read by systemd as root and handed to
        ncps as a credential, so it may stay readable by root only.
      '';
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--cache-upstream-response-header-timeout=10s" ];
      description = "Extra command-line flags for `ncps serve` (flags win over the config file).";
    };

    watchdogSec = mkOption {
      type = types.nullOr types.str;
      default = "60s";
      description = ''
        systemd watchdog interval (`WatchdogSec=`): ncps pings at half of it and systemd restarts a
        server that stops pinging. `null` disables the watchdog.
      '';
    };

    configFile = mkOption {
      type = types.path;
      readOnly = true;
      default = configFile;
      defaultText = literalExpression "generated from the services.ncps options";
      description = ''
        The generated configuration file (JSON, no secrets), for running ncps commands by hand:
        `ncps serve --config=''${config.services.ncps.configFile}`.
      '';
    };

    generatedScripts = mkOption {
      type = types.attrsOf types.unspecified;
      readOnly = true;
      internal = true;
      default = {
        serve = serveScript;
        migrateNarinfo = migrateScript;
        migrateNarinfoArgs = migrateNarinfoFlags;
        migrateUpArgs = if migrateMode == "offline" then migrateUpFlags else [ ];
        fsck = fsckScript;
        dbmateUp = dbmateUpScript;
      };
      description = "The start scripts of the units (for tests and debugging).";
    };

    prometheus.enable = mkEnableOption "the Prometheus metrics endpoint at /metrics";

    openTelemetry = {
      enable = mkEnableOption "OpenTelemetry export";
      grpcURL = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "OTLP gRPC endpoint.";
      };
    };

    analytics.reporting = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Accepted for compatibility with nixpkgs' module. This implementation reports nothing,
          whatever the value.
        '';
      };
      samples = mkOption {
        type = types.bool;
        default = false;
        description = "Accepted for compatibility; has no effect.";
      };
    };

    highAvailability.enable = mkEnableOption ''
      running several ncps instances against the same database and storage. Requires a database
      server (PostgreSQL, through cache.databaseURL or cache.databaseURLFile), Redis for the locks
      (cache.redis) and storage every instance sees (cache.storage.s3, or a shared file system)
    '';

    migrateNarinfo = {
      mode = mkOption {
        type = types.enum [
          "auto"
          "offline"
          "online"
          "disabled"
        ];
        default = "auto";
        description = ''
          How narinfo files kept in storage by older ncps versions
          (`store/narinfo/<h0>/<h0h1>/<hash>.narinfo`) are moved into the database:

          - `offline`: the oneshot unit `ncps-migrate-narinfo.service` runs before the server
            starts, on every start of ncps.service (quick when there is nothing left to move).
          - `online`: the same unit runs beside the live server once it is ready, without holding
            it back; Redis locks keep the two from stepping on each other. Needs cache.redis.
          - `auto`: `online` with Redis, `offline` without.
          - `disabled`: no unit; the server still migrates a narinfo when a client asks for it.
        '';
      };
      concurrency = mkOption {
        type = types.ints.positive;
        default = 10;
        description = "Narinfos migrated in parallel.";
      };
      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Extra flags for `ncps migrate-narinfo`.";
      };
    };

    fsck = {
      enable = mkEnableOption ''
        a periodic `ncps fsck`: a systemd timer starts the oneshot unit `ncps-fsck.service`, which
        checks beside the running server that the database and storage agree, with the server's
        configuration and credentials. The unit fails when problems were found (or are left after
        a repair), so `systemctl --failed` and the journal show them
      '';
      schedule = mkOption {
        type = types.str;
        default = "weekly";
        example = "Sun *-*-* 03:00:00";
        description = "When it runs: a systemd calendar expression (`OnCalendar=`); a missed run is made up at boot.";
      };
      repair = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Repair what is found (`ncps fsck --repair`; every repair is logged). Repairs take the
          same locks as the running server, which only Redis shares between processes: this needs
          cache.redis (without it, fsck refuses to repair beside a live server).
        '';
      };
      verifyContent = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Also read every stored NAR and check its bytes against FileHash and, decompressed, NarHash
          (`--verify-content`). Reads the whole store; see verifiedSince.
        '';
      };
      verifiedSince = mkOption {
        type = types.nullOr durationType;
        default = null;
        example = "720h";
        description = ''
          With verifyContent: skip NARs whose bytes were verified less than this long ago
          (`--verified-since`), so that each run verifies the part of a large store not verified
          lately.
        '';
      };
      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Extra flags for `ncps fsck`.";
      };
    };

    cache = {
      hostName = mkOption {
        type = types.str;
        example = "cache.example.org";
        description = ''
          Host name of the cache; also the name of its signing key (`<hostName>:<base64>`).
        '';
      };

      databaseURL = mkOption {
        type = types.nullOr types.str;
        default =
          if cfg.cache.databaseURLFile == null then "sqlite:${toString cfg.cache.storage.local}/db/db.sqlite" else null;
        defaultText = literalExpression ''
          if databaseURLFile == null then "sqlite:''${cache.storage.local}/db/db.sqlite" else null
        '';
        example = "postgresql:///ncps?host=/run/postgresql";
        description = ''
          Database URL: `sqlite:/path/db.sqlite` or `postgresql://…`. It is written to the
          world-readable config file: a URL with a password belongs in `databaseURLFile`.
        '';
      };

      databaseURLFile = mkOption {
        type = credentialPath;
        default = null;
        example = "/run/secrets/ncps-database-url";
        description = ''
          File holding the database URL (e.g. with a password). Passed as a systemd credential and
          exported as CACHE_DATABASE_URL; never copied into the Nix store.
        '';
      };

      database.pool = {
        maxOpenConns = mkOption {
          type = types.int;
          default = 0;
          description = "Maximum open database connections (0: the driver default).";
        };
        maxIdleConns = mkOption {
          type = types.int;
          default = 0;
          description = "Maximum idle database connections (0: the driver default).";
        };
      };

      storage = {
        local = mkOption {
          type = types.path;
          default = "/var/lib/ncps";
          description = ''
            Directory of the local storage (NARs, and legacy narinfo files). Ignored when
            `storage.s3` is set.
          '';
        };

        s3 = mkOption {
          default = null;
          description = "Store NARs in an S3 bucket instead of `storage.local`.";
          type = types.nullOr (
            types.submodule {
              options = {
                bucket = mkOption {
                  type = types.str;
                  description = "Bucket name.";
                };
                endpoint = mkOption {
                  type = types.str;
                  example = "https://s3.eu-west-1.amazonaws.com";
                  description = "S3 endpoint URL, with scheme.";
                };
                region = mkOption {
                  type = types.nullOr types.str;
                  default = null;
                  description = "S3 region.";
                };
                forcePathStyle = mkOption {
                  type = types.bool;
                  default = false;
                  description = "Path-style addressing (MinIO and most self-hosted servers need it).";
                };
                accessKeyIdPath = mkOption {
                  type = credentialPath;
                  default = null;
                  description = "File holding only the access key id (a systemd credential).";
                };
                secretAccessKeyPath = mkOption {
                  type = credentialPath;
                  default = null;
                  description = "File holding only the secret access key (a systemd credential).";
                };
              };
            }
          );
        };
      };

      tempPath = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = ''
          Directory for downloads in progress. By default ncps uses `store/tmp` inside the local
          storage, on the same file system, so finished NARs are moved into place atomically.
        '';
      };

      upstream = {
        urls = mkOption {
          type = types.listOf types.str;
          default = [ "https://cache.nixos.org" ];
          example = [
            "https://cache.nixos.org"
            "https://nix-community.cachix.org?priority=50"
          ];
          description = "Upstream binary caches; append `?priority=N` to rank them (lower is preferred).";
        };
        publicKeys = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
          description = ''
            Keys trusted to sign upstream narinfos. Empty means ncps's built-in default, the key of
            cache.nixos.org only.
          '';
        };
        dialerTimeout = mkOption {
          type = types.nullOr durationType;
          default = null;
          example = "5s";
          description = "Timeout for connecting to an upstream (ncps default 3s).";
        };
        responseHeaderTimeout = mkOption {
          type = types.nullOr durationType;
          default = null;
          example = "5s";
          description = "Timeout for an upstream to start answering (ncps default 3s).";
        };
      };

      secretKeyPath = mkOption {
        type = credentialPath;
        default = null;
        example = "/run/secrets/ncps-signing-key";
        description = ''
          Nix secret key file (`name:base64`) to sign narinfos with, passed as a systemd credential.
          Without it ncps generates a key once and keeps it in the database.
        '';
      };

      signNarinfo = mkOption {
        type = types.bool;
        default = true;
        description = "Add this cache's signature to every narinfo it serves.";
      };

      allowPutVerb = mkEnableOption "uploads (`nix copy --to http://host/upload`)";
      allowDeleteVerb = mkEnableOption "DELETE of narinfos and NARs";

      requireTrustedSignature = mkEnableOption "refusing uploaded narinfos that no key in trustedUploadKeys signed";
      trustedUploadKeys = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Public keys trusted to sign uploads.";
      };

      getTokenFile = mkOption {
        type = credentialPath;
        default = null;
        description = "File holding the Bearer token required for reads (exported as CACHE_GET_TOKEN).";
      };
      putTokenFile = mkOption {
        type = credentialPath;
        default = null;
        description = "File holding the token required for uploads, deletes and pins (exported as CACHE_PUT_TOKEN).";
      };

      negativeTTL = mkOption {
        type = types.nullOr durationType;
        default = null;
        example = "1m";
        description = "How long \"no upstream has this path\" is remembered (ncps default 30s; 0s disables).";
      };

      maxSize = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "100G";
        description = "Maximum size of the store (units B, K, M, G, T). ncps keeps the store under it with a clean-up every hour, at minute 0, or on lru.schedule.";
      };

      lru = {
        schedule = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "0 2 * * *";
          description = "Cron schedule of the clean-up that keeps the store under maxSize; null: every hour, at minute 0.";
        };
        scheduleTimeZone = mkOption {
          type = types.str;
          default = "Local";
          example = "Europe/Berlin";
          description = "Time zone of the schedule.";
        };
      };

      cdc = {
        enabled = mkOption {
          type = types.bool;
          default = false;
          description = "Accepted for compatibility with nixpkgs' module; content-defined chunking is not implemented here (a warning says so when enabled).";
        };
        min = mkOption {
          type = types.ints.unsigned;
          default = 16384;
          description = "Accepted for compatibility; has no effect.";
        };
        avg = mkOption {
          type = types.ints.unsigned;
          default = 65536;
          description = "Accepted for compatibility; has no effect.";
        };
        max = mkOption {
          type = types.ints.unsigned;
          default = 262144;
          description = "Accepted for compatibility; has no effect.";
        };
      };

      lock = {
        backend = mkOption {
          type = types.enum [
            "local"
            "redis"
          ];
          default = if cfg.cache.redis != null then "redis" else "local";
          defaultText = literalExpression ''if cache.redis != null then "redis" else "local"'';
          description = "Where locks live: `local` (one instance) or `redis` (several instances).";
        };
        redisKeyPrefix = mkOption {
          type = types.str;
          default = "ncps:lock:";
          description = "Prefix of the lock keys in Redis.";
        };
        downloadTTL = mkOption {
          type = durationType;
          default = "5m";
          description = "Time to live of a download lock.";
        };
        downloadWait = mkOption {
          type = durationType;
          default = "30s";
          description = ''
            How long a NAR request waits while another instance downloads the same NAR, before it
            streams the NAR from upstream itself (kept only if that instance's lock is free by then).
          '';
        };
        lruTTL = mkOption {
          type = durationType;
          default = "30m";
          description = "Time to live of the LRU lock.";
        };
        retry = {
          maxAttempts = mkOption {
            type = types.int;
            default = 3;
            description = "Attempts to take a lock.";
          };
          initialDelay = mkOption {
            type = durationType;
            default = "100ms";
            description = "First delay between attempts.";
          };
          maxDelay = mkOption {
            type = durationType;
            default = "2s";
            description = "Longest delay between attempts.";
          };
          jitter = mkOption {
            type = types.bool;
            default = true;
            description = "Randomise the delays.";
          };
        };
        allowDegradedMode = mkOption {
          type = types.bool;
          default = false;
          description = "Fall back to local locks when Redis is unreachable (gives up the guarantees between instances).";
        };
      };

      redis = mkOption {
        default = null;
        description = "Redis, for locks shared between ncps instances and for online narinfo migration.";
        type = types.nullOr (
          types.submodule {
            options = {
              addresses = mkOption {
                type = types.listOf types.str;
                example = [ "redis.internal:6379" ];
                description = "Redis servers, `host:port`.";
              };
              database = mkOption {
                type = types.int;
                default = 0;
                description = "Redis database number.";
              };
              username = mkOption {
                type = types.nullOr types.str;
                default = null;
                description = "Redis user name (ACL).";
              };
              password = mkOption {
                type = types.nullOr types.str;
                default = null;
                description = "Redis password in clear text. It ends up in the Nix store: prefer passwordFile.";
              };
              passwordFile = mkOption {
                type = credentialPath;
                default = null;
                description = "File holding the Redis password (a systemd credential, exported as CACHE_REDIS_PASSWORD).";
              };
              poolSize = mkOption {
                type = types.int;
                default = 10;
                description = "Connection pool size.";
              };
              useTLS = mkOption {
                type = types.bool;
                default = false;
                description = "Connect over TLS.";
              };
            };
          }
        );
      };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = badDurations == { };
          message = "services.ncps: not a duration (use e.g. 500ms, 3s, 5m0s, 1h30m, or 0): ${lib.concatStringsSep ", " (lib.mapAttrsToList (n: v: "${n} = \"${v}\"") badDurations)}.";
        }
        {
          assertion = cfg.cache.maxSize == null || builtins.match sizePattern cfg.cache.maxSize != null;
          message = "services.ncps.cache.maxSize = \"${toString cfg.cache.maxSize}\" is not a size (use e.g. 500M, 100G or 100g; units B K M G T, powers of 1024).";
        }
        {
          assertion = cfg.cache.hostName != "" && builtins.match ".*[[:space:]:].*" cfg.cache.hostName == null;
          message = "services.ncps.cache.hostName must be a non-empty name without spaces or colons (it names the signing key).";
        }
        {
          assertion = cfg.cache.upstream.urls != [ ];
          message = "services.ncps.cache.upstream.urls must list at least one upstream cache.";
        }
        {
          assertion = lib.xor (cfg.cache.databaseURL != null) (cfg.cache.databaseURLFile != null);
          message = "services.ncps: set exactly one of cache.databaseURL and cache.databaseURLFile (databaseURL defaults to SQLite under cache.storage.local unless databaseURLFile is set).";
        }
        {
          assertion = !useS3 || (cfg.cache.storage.s3.accessKeyIdPath != null && cfg.cache.storage.s3.secretAccessKeyPath != null);
          message = "services.ncps.cache.storage.s3 needs credentials: set accessKeyIdPath and secretAccessKeyPath to files holding the access key id and the secret access key.";
        }
        {
          assertion = !useRedis || cfg.cache.redis.password == null || cfg.cache.redis.passwordFile == null;
          message = "services.ncps.cache.redis: set password or passwordFile, not both.";
        }
        {
          assertion = !useRedis || cfg.cache.redis.addresses != [ ];
          message = "services.ncps.cache.redis.addresses must list at least one Redis server.";
        }
        {
          assertion = cfg.cache.lock.backend == "redis" -> useRedis;
          message = "services.ncps.cache.lock.backend = \"redis\" needs services.ncps.cache.redis (the Redis servers to keep locks in).";
        }
        {
          assertion = useRedis -> cfg.cache.lock.backend == "redis";
          message = "services.ncps.cache.redis is set but cache.lock.backend is \"local\": Redis holds ncps's locks, so use backend = \"redis\" or remove cache.redis.";
        }
        {
          assertion = cfg.cache.lru.schedule != null -> cfg.cache.maxSize != null;
          message = "services.ncps.cache.lru.schedule needs services.ncps.cache.maxSize (the size the clean-up keeps the store under).";
        }
        {
          assertion = cfg.migrateNarinfo.mode == "online" -> useRedis;
          message = "services.ncps.migrateNarinfo.mode = \"online\" runs beside the live server and needs Redis locks (services.ncps.cache.redis); without Redis use \"offline\" or \"auto\".";
        }
        {
          assertion = cfg.highAvailability.enable -> databaseIsShared;
          message = "services.ncps.highAvailability: several instances need a shared database server: set cache.databaseURL to a postgresql:// URL or use cache.databaseURLFile (SQLite is a file on one machine).";
        }
        {
          assertion = cfg.highAvailability.enable -> useRedis;
          message = "services.ncps.highAvailability: several instances need Redis for their locks: set services.ncps.cache.redis.";
        }
        {
          assertion = cfg.highAvailability.enable -> cfg.migrateNarinfo.mode != "offline";
          message = "services.ncps.highAvailability: migrateNarinfo.mode = \"offline\" would run while the other instances keep serving; use \"online\" or \"auto\".";
        }
        {
          assertion = cfg.fsck.enable && cfg.fsck.repair -> useRedis;
          message = "services.ncps.fsck.repair needs Redis (services.ncps.cache.redis): repairs take the server's locks, which only Redis shares with it, and without them fsck refuses to repair beside the running server. Run the check alone (repair = false) and repair by hand with the server stopped.";
        }
        {
          assertion = cfg.openFirewall -> listenPort != null;
          message = "services.ncps.openFirewall: cannot read a port from server.addr \"${cfg.server.addr}\" (expected host:port).";
        }
      ];

      warnings =
        lib.mapAttrsToList
          (name: _: "services.ncps.${name} is a Nix path literal, so the secret is copied into the world-readable Nix store; give the path as a string (\"/run/secrets/…\") instead.")
          (lib.filterAttrs (_: isStorePathLiteral) secretOptions)
        ++ optional (useRedis && cfg.cache.redis.password != null) "services.ncps.cache.redis.password puts the Redis password into the world-readable Nix store; use cache.redis.passwordFile."
        ++ optional databaseURLHasPassword "services.ncps.cache.databaseURL contains a password and is written to the world-readable Nix store; use cache.databaseURLFile."
        ++ optional (cfg.cache.upstream.publicKeys == [ ] && builtins.any (u: !(hasPrefix "https://cache.nixos.org" u)) cfg.cache.upstream.urls) "services.ncps.cache.upstream.publicKeys is empty: ncps then trusts only cache.nixos.org's key and answers 404 for narinfos from the other upstreams."
        ++ optional (cfg.highAvailability.enable && !useS3) "services.ncps.highAvailability with local storage: ${toString cfg.cache.storage.local} must be a file system every instance shares (e.g. NFS)."
        ++ optional cfg.cache.cdc.enabled "services.ncps.cache.cdc.enabled has no effect: this ncps does not implement content-defined chunking."
        ++ optional (!notifies) "services.ncps.package (${cfg.package.name or "?"}) is not this ncps (the Go ncps from nixpkgs?): it runs as Type=simple without the watchdog, and this module's additions may not apply to it. Set services.ncps.package to this flake's package (nixosModules.default does)."
        ++ lib.mapAttrsToList (name: v: "services.ncps.${name} = ${toString v}: ncps takes 0 and more; it is used as 0 (the default).") negativeInts;

      users.users.ncps = {
        isSystemUser = true;
        group = "ncps";
        description = "ncps binary cache proxy";
      };
      users.groups.ncps = { };

      systemd.tmpfiles.rules = map (d: "d ${escapeShellArg d} 0700 ncps ncps - -") otherDirs;

      networking.firewall.allowedTCPPorts = optional (cfg.openFirewall && listenPort != null) listenPort;

      systemd.services.ncps = {
        description = "ncps Nix binary cache proxy";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        # ncps reports READY=1, WATCHDOG=1 and STOPPING=1 through the systemd-notify binary.
        path = [ config.systemd.package ];
        unitConfig.RequiresMountsFor = writableDirs;
        serviceConfig =
          hardening
          // {
            Type = if notifies then "notify" else "simple";
            ExecStart = "${serveScript}";
            Restart = "on-failure";
            RestartSec = "5s";
            # Pending schema migrations run before READY=1.
            TimeoutStartSec = "15min";
            TimeoutStopSec = "60s";
            LoadCredential = loadCredential (builtins.attrNames credentials);
          }
          # With several workers, SIGTERM goes to the supervisor alone, which drains every worker
          # (and the rest of the unit is killed only if that takes longer than TimeoutStopSec).
          // optionalAttrs (cfg.server.workers != 1) { KillMode = "mixed"; }
          // optionalAttrs notifies { NotifyAccess = "all"; }
          // optionalAttrs (notifies && cfg.watchdogSec != null) { WatchdogSec = cfg.watchdogSec; }
          // optionalAttrs (!notifies) {
            # The Go ncps's own migration step, as nixpkgs' module runs it.
            ExecStartPre = "${dbmateUpScript}";
          };
      };
    }

    (mkIf cfg.fsck.enable {
      systemd.services.ncps-fsck = {
        description = "ncps: check that the cache's database and storage agree";
        wants = [ "network-online.target" ];
        after = [
          "network-online.target"
          "ncps.service"
        ];
        unitConfig.RequiresMountsFor = writableDirs;
        serviceConfig = hardening // {
          Type = "oneshot";
          ExecStart = "${fsckScript}";
          LoadCredential = loadCredential fsckCredentialNames;
          # Reading the whole store must not slow the server down more than it has to.
          Nice = 10;
          IOSchedulingClass = "idle";
        };
      };
      systemd.timers.ncps-fsck = {
        description = "ncps: periodic consistency check";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.fsck.schedule;
          Persistent = true;
          RandomizedDelaySec = "10min";
        };
      };
    })

    (mkIf (migrateMode != "disabled") {
      systemd.services.ncps-migrate-narinfo = {
        description =
          if migrateMode == "offline" then
            "ncps: move legacy narinfo files into the database before the server starts"
          else
            "ncps: move legacy narinfo files into the database beside the running server";
        # Pulled in by every start of ncps.service; quick when there is nothing left to move.
        wantedBy = [ "ncps.service" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ] ++ optional (migrateMode == "online") "ncps.service";
        before = optional (migrateMode == "offline") "ncps.service";
        unitConfig.RequiresMountsFor = writableDirs;
        serviceConfig = hardening // {
          Type = "oneshot";
          ExecStart = "${migrateScript}";
          LoadCredential = loadCredential migrateCredentialNames;
        };
      };
    })
  ]);
}
