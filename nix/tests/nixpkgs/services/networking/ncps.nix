# A stand-in for nixpkgs' own `services.ncps` module (nixos/modules/services/networking/ncps.nix),
# written for these tests from what that module declares and generates, so that they can run
# without nixpkgs: the same option names, types and defaults; the same JSON config file (keys,
# and nulls / empty values left out); the same start-up: a wrapper exporting the secrets from
# systemd credentials and running `ncps --config FILE "$@"`, `ExecStart = "<wrapper> serve"`, and a
# preStart running `DATABASE_URL=… ${package}/bin/dbmate-ncps up`. It sits where NixOS keeps that
# module (modulesPath + /services/networking/ncps.nix), so nix/module.nix's disabledModules is
# tested as in NixOS, and it is evaluated on its own with this project's package swapped in.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;
  cfg = config.services.ncps;
  s3 = cfg.cache.storage.s3;
  redis = cfg.cache.redis;

  credential = name: ''"$(cat "$CREDENTIALS_DIRECTORY/${name}")"'';
  wrapper = pkgs.writeShellScript "ncps-wrapper" (
    lib.concatStringsSep "\n" (
      lib.optional (cfg.cache.secretKeyPath != null) ''export CACHE_SECRET_KEY_PATH="$CREDENTIALS_DIRECTORY/secretKey"''
      ++ lib.optionals (s3 != null) [
        "export CACHE_STORAGE_S3_ACCESS_KEY_ID=${credential "s3AccessKeyId"}"
        "export CACHE_STORAGE_S3_SECRET_ACCESS_KEY=${credential "s3SecretAccessKey"}"
      ]
      ++ lib.optional (redis != null && redis.passwordFile != null) "export CACHE_REDIS_PASSWORD=${credential "redisPassword"}"
      ++ lib.optional (redis != null && redis.passwordFile == null && redis.password != null) ''export CACHE_REDIS_PASSWORD="${redis.password}"''
      ++ lib.optional (cfg.cache.databaseURLFile != null) "export CACHE_DATABASE_URL=${credential "databaseURL"}"
      ++ [ ''exec ${lib.getExe cfg.package} --config "${configFile}" "$@"'' ]
    )
  );

  settings = {
    log.level = cfg.logLevel;
    opentelemetry = lib.optionalAttrs cfg.openTelemetry.enable {
      enabled = true;
      grpc-url = cfg.openTelemetry.grpcURL;
    };
    prometheus = lib.optionalAttrs cfg.prometheus.enable { enabled = true; };
    analytics.reporting = {
      enabled = cfg.analytics.reporting.enable;
      inherit (cfg.analytics.reporting) samples;
    };
    server.addr = cfg.server.addr;
    cache = {
      hostname = cfg.cache.hostName;
      allow-put-verb = cfg.cache.allowPutVerb;
      allow-delete-verb = cfg.cache.allowDeleteVerb;
      database-url = cfg.cache.databaseURL;
      database.pool = {
        max-open-conns = cfg.cache.database.pool.maxOpenConns;
        max-idle-conns = cfg.cache.database.pool.maxIdleConns;
      };
      cdc = { inherit (cfg.cache.cdc) enabled min avg max; };
      max-size = cfg.cache.maxSize;
      lru = {
        inherit (cfg.cache.lru) schedule;
        timezone = cfg.cache.lru.scheduleTimeZone;
      };
      sign-narinfo = cfg.cache.signNarinfo;
      storage =
        if s3 != null then
          {
            s3 = {
              inherit (s3) bucket endpoint region;
              force-path-style = s3.forcePathStyle;
            };
          }
        else
          { inherit (cfg.cache.storage) local; };
      temp-path = cfg.cache.tempPath;
      netrc-file = cfg.netrcFile;
      upstream = {
        inherit (cfg.cache.upstream) urls;
        public-keys = cfg.cache.upstream.publicKeys;
        dialer-timeout = cfg.cache.upstream.dialerTimeout;
        response-header-timeout = cfg.cache.upstream.responseHeaderTimeout;
      };
      lock = {
        inherit (cfg.cache.lock) backend;
        redis.key-prefix = cfg.cache.lock.redisKeyPrefix;
        download-lock-ttl = cfg.cache.lock.downloadTTL;
        lru-lock-ttl = cfg.cache.lock.lruTTL;
        retry = {
          max-attempts = cfg.cache.lock.retry.maxAttempts;
          initial-delay = cfg.cache.lock.retry.initialDelay;
          max-delay = cfg.cache.lock.retry.maxDelay;
          inherit (cfg.cache.lock.retry) jitter;
        };
        allow-degraded-mode = cfg.cache.lock.allowDegradedMode;
      };
      redis = lib.optionalAttrs (redis != null) {
        addrs = redis.addresses;
        db = redis.database;
        inherit (redis) username;
        use-tls = redis.useTLS;
        pool-size = redis.poolSize;
      };
    };
  };
  configFile = pkgs.writeText "ncps-config.json" (
    builtins.toJSON (lib.filterAttrsRecursive (_: v: v != null && v != { } && v != "" && v != [ ]) settings)
  );

  isSqlite = cfg.cache.databaseURL != null && lib.hasPrefix "sqlite:" cfg.cache.databaseURL;
  dbDir = if isSqlite then dirOf (lib.removePrefix "sqlite:" cfg.cache.databaseURL) else null;

  str = default: mkOption {
    type = types.str;
    inherit default;
  };
  nullStr = mkOption {
    type = types.nullOr types.str;
    default = null;
  };
  int = default: mkOption {
    type = types.int;
    inherit default;
  };
  bool = default: mkOption {
    type = types.bool;
    inherit default;
  };
in
{
  imports = [
    (lib.mkRenamedOptionModule [ "services" "ncps" "cache" "dataPath" ] [ "services" "ncps" "cache" "storage" "local" ])
    (lib.mkRenamedOptionModule [ "services" "ncps" "upstream" "caches" ] [ "services" "ncps" "cache" "upstream" "urls" ])
    (lib.mkRenamedOptionModule [ "services" "ncps" "upstream" "publicKeys" ] [ "services" "ncps" "cache" "upstream" "publicKeys" ])
    (lib.mkRemovedOptionModule [ "services" "ncps" "dbmatePackage" ] "removed")
    (lib.mkRemovedOptionModule [ "services" "ncps" "cache" "lock" "postgresKeyPrefix" ] "removed")
  ];

  options.services.ncps = {
    # Not in nixpkgs: what the tests read back (the stub writers keep the text of what they write).
    standIn = mkOption {
      internal = true;
      readOnly = true;
      default = { inherit wrapper configFile; };
    };
    enable = lib.mkEnableOption "ncps";
    package = lib.mkPackageOption pkgs "ncps" { };
    analytics.reporting = {
      # nixpkgs names it `enable` and writes it as `enabled`.
      enable = bool true;
      samples = bool false;
    };
    openTelemetry = {
      enable = bool false;
      grpcURL = nullStr;
    };
    prometheus.enable = bool false;
    logLevel = mkOption {
      type = types.enum [ "trace" "debug" "info" "warn" "error" "fatal" "panic" ];
      default = "info";
    };
    server.addr = str ":8501";
    netrcFile = mkOption {
      type = types.nullOr types.path;
      default = null;
    };
    cache = {
      hostName = mkOption { type = types.str; };
      allowDeleteVerb = bool false;
      allowPutVerb = bool false;
      signNarinfo = bool true;
      databaseURL = mkOption {
        type = types.nullOr types.str;
        default = "sqlite:${cfg.cache.storage.local}/db/db.sqlite";
      };
      databaseURLFile = mkOption {
        type = types.nullOr types.path;
        default = null;
      };
      database.pool = {
        maxOpenConns = int 0;
        maxIdleConns = int 0;
      };
      cdc = {
        enabled = bool false;
        min = mkOption { type = types.ints.u32; default = 16384; };
        avg = mkOption { type = types.ints.u32; default = 65536; };
        max = mkOption { type = types.ints.u32; default = 262144; };
      };
      maxSize = nullStr;
      lru = {
        schedule = nullStr;
        scheduleTimeZone = str "Local";
      };
      lock = {
        backend = mkOption {
          type = types.enum [ "local" "redis" ];
          default = "local";
        };
        redisKeyPrefix = str "ncps:lock:";
        downloadTTL = str "5m0s";
        lruTTL = str "30m0s";
        retry = {
          maxAttempts = int 3;
          initialDelay = str "100ms";
          maxDelay = str "2s";
          jitter = bool true;
        };
        allowDegradedMode = bool false;
      };
      redis = mkOption {
        default = null;
        type = types.nullOr (
          types.submodule {
            options = {
              addresses = mkOption { type = types.listOf types.str; };
              database = int 0;
              username = nullStr;
              password = nullStr;
              passwordFile = mkOption {
                type = types.nullOr types.path;
                default = null;
              };
              poolSize = int 10;
              useTLS = bool false;
            };
          }
        );
      };
      secretKeyPath = mkOption {
        type = types.nullOr types.path;
        default = null;
      };
      storage = {
        local = mkOption {
          type = types.path;
          default = "/var/lib/ncps";
        };
        s3 = mkOption {
          default = null;
          type = types.nullOr (
            types.submodule {
              options = {
                bucket = mkOption { type = types.str; };
                endpoint = mkOption { type = types.str; };
                forcePathStyle = bool false;
                region = nullStr;
                accessKeyIdPath = mkOption { type = types.path; };
                secretAccessKeyPath = mkOption { type = types.path; };
              };
            }
          );
        };
      };
      tempPath = mkOption {
        type = types.path;
        default = "/tmp";
      };
      upstream = {
        urls = mkOption { type = types.listOf types.str; };
        publicKeys = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        dialerTimeout = nullStr;
        responseHeaderTimeout = nullStr;
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = lib.xor (cfg.cache.databaseURL != null) (cfg.cache.databaseURLFile != null);
        message = "exactly one of databaseURL and databaseURLFile";
      }
      {
        assertion = cfg.cache.lru.schedule == null || cfg.cache.maxSize != null;
        message = "lru.schedule needs maxSize";
      }
      {
        assertion = redis == null || redis.password == null || redis.passwordFile == null;
        message = "redis: password or passwordFile";
      }
      {
        assertion = cfg.cache.lock.backend == "redis" -> redis != null;
        message = "lock.backend redis needs redis";
      }
      {
        assertion = redis != null -> cfg.cache.lock.backend == "redis";
        message = "redis needs lock.backend redis";
      }
    ];

    users.users.ncps = {
      isSystemUser = true;
      group = "ncps";
    };
    users.groups.ncps = { };

    systemd.tmpfiles.rules =
      lib.optional (s3 == null && cfg.cache.storage.local != "/var/lib/ncps") "d ${cfg.cache.storage.local} 0700 ncps ncps - -"
      ++ lib.optional isSqlite "d ${dbDir} 0700 ncps ncps - -"
      ++ lib.optional (cfg.cache.tempPath != "/tmp") "d ${cfg.cache.tempPath} 0700 ncps ncps - -";

    systemd.services.ncps = {
      description = "ncps binary cache proxy service";
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
      wantedBy = [ "multi-user.target" ];
      preStart = lib.concatStringsSep "\n" (
        lib.optional (cfg.cache.databaseURLFile != null) "export DATABASE_URL=${credential "databaseURL"}"
        ++ lib.optional (cfg.cache.databaseURL != null) ''export DATABASE_URL="${cfg.cache.databaseURL}"''
        ++ [ "${cfg.package}/bin/dbmate-ncps up" ]
      );
      serviceConfig = {
        ExecStart = "${wrapper} serve";
        User = "ncps";
        Group = "ncps";
        Restart = "on-failure";
        RuntimeDirectory = "ncps";
        LoadCredential =
          lib.optional (cfg.cache.secretKeyPath != null) "secretKey:${cfg.cache.secretKeyPath}"
          ++ lib.optionals (s3 != null) [
            "s3AccessKeyId:${s3.accessKeyIdPath}"
            "s3SecretAccessKey:${s3.secretAccessKeyPath}"
          ]
          ++ lib.optional (redis != null && redis.passwordFile != null) "redisPassword:${redis.passwordFile}"
          ++ lib.optional (cfg.cache.databaseURLFile != null) "databaseURL:${cfg.cache.databaseURLFile}";
        # nixpkgs' hardening, of which only this matters to a Node.js program: V8 needs memory that
        # is written and then executed, which this forbids.
        MemoryDenyWriteExecute = true;
        PrivateTmp = true;
        ProtectSystem = "strict";
      };
    };
  };
}
