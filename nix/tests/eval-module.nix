# Evaluates nix/module.nix with nixpkgs' `lib` alone (no nixpkgs package set, no NixOS, no build),
# using the stand-ins of module-stand-ins.nix, for SQLite, Redis, S3 and HA configurations and for
# configurations its assertions must refuse; checks the generated units, start scripts and config
# file (no secrets in it, only keys ncps knows).
#
#   nix-instantiate --eval --strict --json nix/tests/eval-module.nix --argstr libPath /path/to/nixpkgs/lib
#
# (scripts/check-nix.sh does that and prints the verdict). The result lists every check by name,
# `failed` the ones that did not hold, and per configuration the generated config keys and flags
# (test/integration/nix-files.test.ts compares those with ncps's option table).
{
  # nixpkgs' lib/ directory (from nixpkgs or nixpkgs.lib), or `lib` itself.
  libPath ? null,
  lib ? import (/. + libPath),
}:

let

  standIns = import ./module-stand-ins.nix { inherit lib; };
  inherit (standIns) fakeHash evalConfig;

  base = {
    services.ncps = {
      enable = true;
      cache.hostName = "cache.example.org";
      cache.upstream.urls = [ "https://cache.nixos.org" ];
      cache.upstream.publicKeys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
    };
  };

  s3 = {
    bucket = "ncps";
    endpoint = "http://s3.internal:9000";
    region = "us-east-1";
    forcePathStyle = true;
    accessKeyIdPath = "/run/secrets/s3-access-key-id";
    secretAccessKeyPath = "/run/secrets/s3-secret-access-key";
  };

  cases = {
    sqlite = [ base ];
    secrets = [
      base
      {
        services.ncps.cache.secretKeyPath = "/run/secrets/ncps-signing-key";
        services.ncps.netrcFile = "/run/secrets/netrc";
        services.ncps.cache.getTokenFile = "/run/secrets/get-token";
        services.ncps.cache.putTokenFile = "/run/secrets/put-token";
      }
    ];
    redis = [
      base
      {
        services.ncps.cache.redis = {
          addresses = [ "127.0.0.1:6379" ];
          passwordFile = "/run/secrets/redis-password";
        };
      }
    ];
    redisPlainPassword = [
      base
      {
        services.ncps.cache.redis = {
          addresses = [ "127.0.0.1:6379" ];
          password = "hunter2-redis";
        };
      }
    ];
    s3 = [
      base
      { services.ncps.cache.storage.s3 = s3; }
    ];
    ha = [
      base
      {
        services.ncps.highAvailability.enable = true;
        services.ncps.cache.databaseURLFile = "/run/secrets/database-url";
        services.ncps.cache.storage.s3 = s3;
        services.ncps.cache.redis = {
          addresses = [
            "redis-1:6379"
            "redis-2:6379"
          ];
          passwordFile = "/run/secrets/redis-password";
          username = "ncps";
        };
        services.ncps.cache.secretKeyPath = "/run/secrets/ncps-signing-key";
      }
    ];
    customDirs = [
      base
      {
        services.ncps.cache.storage.local = "/srv/ncps";
        services.ncps.cache.tempPath = "/var/lib/ncps-tmp";
        services.ncps.server.addr = "0.0.0.0:8080";
        services.ncps.openFirewall = true;
      }
    ];
    privilegedPort = [
      base
      {
        services.ncps.server.addr = "[::]:80";
        services.ncps.openFirewall = true;
      }
    ];
    workers = [
      base
      { services.ncps.server.workers = 0; }
    ];
    renamed = [
      {
        services.ncps = {
          enable = true;
          cache.hostName = "old.example.org";
          cache.dataPath = "/data/ncps";
          upstream.caches = [ "https://cache.nixos.org" ];
          upstream.publicKeys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
        };
      }
    ];
    migrateDisabled = [
      base
      { services.ncps.migrateNarinfo.mode = "disabled"; }
    ];
    everything = [
      base
      {
        services.ncps = {
          logLevel = "debug";
          prometheus.enable = true;
          openTelemetry.enable = true;
          openTelemetry.grpcURL = "http://otel:4317";
          watchdogSec = null;
          extraArgs = [ "--cache-upstream-response-header-timeout=10s" ];
          cache = {
            databaseURL = "postgresql:///ncps?host=/run/postgresql";
            database.pool.maxOpenConns = 20;
            allowPutVerb = true;
            allowDeleteVerb = true;
            requireTrustedSignature = true;
            trustedUploadKeys = [ "ci-1:AAAA" ];
            negativeTTL = "1m";
            maxSize = "100G";
            lru.schedule = "0 2 * * *";
            lru.scheduleTimeZone = "Europe/Berlin";
            upstream.dialerTimeout = "5s";
            upstream.responseHeaderTimeout = "10s";
            lock.downloadTTL = "5m0s";
            signNarinfo = false;
          };
        };
      }
    ];
    fsck = [
      base
      {
        services.ncps.fsck = {
          enable = true;
          schedule = "daily";
          verifyContent = true;
          verifiedSince = "720h";
        };
      }
    ];
    fsckRepair = [
      base
      {
        services.ncps.cache.secretKeyPath = "/run/secrets/ncps-signing-key";
        services.ncps.cache.getTokenFile = "/run/secrets/get-token";
        services.ncps.cache.redis = {
          addresses = [ "127.0.0.1:6379" ];
          passwordFile = "/run/secrets/redis-password";
        };
        services.ncps.fsck = {
          enable = true;
          repair = true;
        };
      }
    ];
    literalSecretPath = [
      base
      { services.ncps.cache.secretKeyPath = ./eval-module.nix; }
    ];
    # nixpkgs' default tempPath written out, and a directory below it.
    tmpTemp = [
      base
      { services.ncps.cache.tempPath = "/tmp"; }
    ];
    tmpSubdir = [
      base
      { services.ncps.cache.tempPath = "/tmp/ncps"; }
    ];
    # Values nixpkgs' option types take (and the Go ncps reads) that this module used to refuse.
    nixpkgsValues = [
      base
      {
        services.ncps.cache = {
          maxSize = "100g";
          lru.schedule = "@every 6h";
          upstream.dialerTimeout = "0";
          upstream.responseHeaderTimeout = "0";
          lock.downloadTTL = "5m0s";
          lock.lruTTL = "30m0s";
          database.pool.maxOpenConns = -1;
          lock.retry.maxAttempts = 5;
        };
      }
    ];
    # The module imported without the flake: `package` is nixpkgs' (the Go ncps).
    goPackage = [
      base
      { services.ncps.package = standIns.pkgs.ncps; }
    ];
    badDuration = [
      base
      { services.ncps.cache.lock.downloadTTL = "five minutes"; }
    ];
    badSize = [
      base
      { services.ncps.cache.maxSize = "lots"; }
    ];

    # Configurations the module must refuse, each with the words its assertion has to contain.
    badS3 = [
      base
      { services.ncps.cache.storage.s3 = removeAttrs s3 [ "secretAccessKeyPath" ]; }
    ];
    badHaSqlite = [
      base
      {
        services.ncps.highAvailability.enable = true;
        services.ncps.cache.redis.addresses = [ "redis:6379" ];
        services.ncps.cache.storage.s3 = s3;
      }
    ];
    badHaNoRedis = [
      base
      {
        services.ncps.highAvailability.enable = true;
        services.ncps.cache.databaseURL = "postgresql://db.internal/ncps";
        services.ncps.cache.storage.s3 = s3;
      }
    ];
    badHaOffline = [
      base
      {
        services.ncps.highAvailability.enable = true;
        services.ncps.migrateNarinfo.mode = "offline";
        services.ncps.cache.databaseURLFile = "/run/secrets/database-url";
        services.ncps.cache.redis.addresses = [ "redis:6379" ];
        services.ncps.cache.storage.s3 = s3;
      }
    ];
    badOnlineNoRedis = [
      base
      { services.ncps.migrateNarinfo.mode = "online"; }
    ];
    badLockBackend = [
      base
      { services.ncps.cache.lock.backend = "redis"; }
    ];
    badRedisLocalLocks = [
      base
      {
        services.ncps.cache.redis.addresses = [ "redis:6379" ];
        services.ncps.cache.lock.backend = "local";
      }
    ];
    badRedisPasswords = [
      base
      {
        services.ncps.cache.redis = {
          addresses = [ "redis:6379" ];
          password = "x";
          passwordFile = "/run/secrets/redis-password";
        };
      }
    ];
    badTwoDatabaseURLs = [
      base
      {
        services.ncps.cache.databaseURL = "sqlite:/var/lib/ncps/db/db.sqlite";
        services.ncps.cache.databaseURLFile = "/run/secrets/database-url";
      }
    ];
    badLru = [
      base
      { services.ncps.cache.lru.schedule = "0 2 * * *"; }
    ];
    badNoUpstream = [
      base
      { services.ncps.cache.upstream.urls = lib.mkForce [ ]; }
    ];
    badFsckRepairNoRedis = [
      base
      {
        services.ncps.fsck = {
          enable = true;
          repair = true;
        };
      }
    ];
  };

  configs = lib.mapAttrs (_: evalConfig) cases;

  # Helpers over one evaluated configuration.
  unit = c: name: c.systemd.services.${name};
  svc = c: (unit c "ncps").serviceConfig;
  hasMigrateUnit = c: c.systemd.services ? ncps-migrate-narinfo;
  migrate = c: unit c "ncps-migrate-narinfo";
  configText = c: c.services.ncps.configFile.text;
  settings = c: builtins.fromJSON (configText c);
  serveText = c: c.services.ncps.generatedScripts.serve.text;
  migrateText = c: c.services.ncps.generatedScripts.migrateNarinfo.text;
  hasFsck = c: c.systemd.services ? ncps-fsck;
  fsckUnit = c: unit c "ncps-fsck";
  fsckText = c: c.services.ncps.generatedScripts.fsck.text;
  failedAssertions = c: map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  contains = needle: haystack: lib.hasInfix needle haystack;
  get = path: attrs: lib.attrByPath (lib.splitString "." path) null attrs;

  flatten =
    prefix: value:
    if builtins.isAttrs value then
      lib.concatLists (lib.mapAttrsToList (k: v: flatten (if prefix == "" then k else "${prefix}.${k}") v) value)
    else
      [ prefix ];
  configKeys = c: flatten "" (settings c);
  flagsIn =
    text:
    lib.unique (
      map (m: builtins.head m) (
        builtins.filter (m: m != null) (
          map (w: builtins.match "'?--([a-z0-9-]+).*" w) (lib.splitString " " (builtins.replaceStrings [ "\n" ] [ " " ] text))
        )
      )
    );

  # Keys ncps's loader accepts for `serve` (reference §3 / src/config/options.ts); the module may
  # generate nothing else. The TypeScript test re-checks against the live option table.
  knownKeys = [
    "log.level"
    "opentelemetry.enabled"
    "opentelemetry.grpc-url"
    "prometheus.enabled"
    "server.addr"
    "server.workers"
    "cache.hostname"
    "cache.secret-key-path"
    "cache.sign-narinfo"
    "cache.temp-path"
    "cache.database-url"
    "cache.database.pool.max-open-conns"
    "cache.database.pool.max-idle-conns"
    "cache.storage.local"
    "cache.storage.s3.bucket"
    "cache.storage.s3.endpoint"
    "cache.storage.s3.region"
    "cache.storage.s3.access-key-id"
    "cache.storage.s3.secret-access-key"
    "cache.storage.s3.force-path-style"
    "cache.upstream.urls"
    "cache.upstream.public-keys"
    "cache.upstream.dialer-timeout"
    "cache.upstream.response-header-timeout"
    "cache.netrc-file"
    "cache.allow-put-verb"
    "cache.allow-delete-verb"
    "cache.require-trusted-signature"
    "cache.trusted-upload-keys"
    "cache.get-token"
    "cache.put-token"
    "cache.negative-ttl"
    "cache.max-size"
    "cache.lru.schedule"
    "cache.lru.timezone"
    "cache.redis.addrs"
    "cache.redis.username"
    "cache.redis.password"
    "cache.redis.db"
    "cache.redis.use-tls"
    "cache.redis.pool-size"
    "cache.lock.backend"
    "cache.lock.redis.key-prefix"
    "cache.lock.download-lock-ttl"
    "cache.lock.download-lock-wait"
    "cache.lock.lru-lock-ttl"
    "cache.lock.retry.max-attempts"
    "cache.lock.retry.initial-delay"
    "cache.lock.retry.max-delay"
    "cache.lock.retry.jitter"
    "cache.lock.allow-degraded-mode"
  ];
  # Keys that carry secrets (or paths to them): never in the world-readable config file.
  secretKeys = [
    "cache.secret-key-path"
    "cache.netrc-file"
    "cache.storage.s3.access-key-id"
    "cache.storage.s3.secret-access-key"
    "cache.redis.password"
    "cache.get-token"
    "cache.put-token"
    "go-database-url"
  ];
  noSecretKeys = c: builtins.all (k: !(builtins.elem k (configKeys c))) secretKeys;
  onlyKnownKeys = c: builtins.all (k: builtins.elem k knownKeys) (configKeys c);
  noSecretText =
    c: needles: builtins.all (n: !(contains n (configText c))) needles;

  credential = name: file: c: builtins.elem "${name}:${file}" ((svc c).LoadCredential or [ ]);
  migrateCredential = name: file: c: builtins.elem "${name}:${file}" ((migrate c).serviceConfig.LoadCredential or [ ]);
  exports =
    var: name: text:
    contains ''export ${var}="$(< "$CREDENTIALS_DIRECTORY/${name}")"'' text;

  assertionFires =
    caseName: words:
    let
      messages = failedAssertions configs.${caseName};
    in
    builtins.length messages == 1 && builtins.all (w: contains w (builtins.head messages)) words;

  checks =
    let
      c = configs;
    in
    {
      # Every valid configuration: no assertion fires, config keys known, nothing secret in it.
      valid-configs-pass-assertions = builtins.all (n: failedAssertions c.${n} == [ ]) [
        "sqlite"
        "secrets"
        "redis"
        "redisPlainPassword"
        "s3"
        "ha"
        "customDirs"
        "privilegedPort"
        "renamed"
        "migrateDisabled"
        "everything"
        "literalSecretPath"
        "fsck"
        "fsckRepair"
      ];
      config-keys-known = builtins.all (n: onlyKnownKeys c.${n}) (builtins.attrNames (lib.filterAttrs (n: _: !(lib.hasPrefix "bad" n)) cases));
      config-has-no-secret-keys = builtins.all (n: noSecretKeys c.${n}) (builtins.attrNames cases);

      # SQLite, local storage, no Redis (the default): explicit storage and database, offline migration.
      sqlite-storage-and-database-explicit =
        get "cache.storage.local" (settings c.sqlite) == "/var/lib/ncps"
        && get "cache.database-url" (settings c.sqlite) == "sqlite:/var/lib/ncps/db/db.sqlite"
        && get "cache.hostname" (settings c.sqlite) == "cache.example.org"
        && get "server.addr" (settings c.sqlite) == ":8501"
        && get "cache.lock.backend" (settings c.sqlite) == "local"
        && get "cache.redis" (settings c.sqlite) == null
        && get "server.workers" (settings c.sqlite) == null
        && !((svc c.sqlite) ? KillMode);
      # Several workers: the setting reaches the config file, SIGTERM the supervisor alone.
      workers-in-config-and-unit =
        get "server.workers" (settings c.workers) == 0
        && (svc c.workers).KillMode == "mixed"
        && (svc c.workers).Type == "notify";
      sqlite-exec-start = (svc c.sqlite).ExecStart == "${c.sqlite.services.ncps.generatedScripts.serve}";
      sqlite-serve-script =
        contains "exec /nix/store/" (serveText c.sqlite)
        && contains "-ncps-stub/bin/ncps serve --config=${c.sqlite.services.ncps.configFile}" (serveText c.sqlite)
        && !(contains "CREDENTIALS_DIRECTORY" (serveText c.sqlite));
      sqlite-notify-unit =
        (svc c.sqlite).Type == "notify"
        && (svc c.sqlite).NotifyAccess == "all"
        && (svc c.sqlite).Restart == "on-failure"
        && (svc c.sqlite).WatchdogSec == "60s"
        && builtins.elem "/nix/store/${fakeHash "systemd"}-systemd-stub" (map toString (unit c.sqlite "ncps").path);
      sqlite-hardening =
        (svc c.sqlite).User == "ncps"
        && (svc c.sqlite).ProtectSystem == "strict"
        && (svc c.sqlite).ProtectHome
        && (svc c.sqlite).NoNewPrivileges
        && (svc c.sqlite).PrivateTmp
        && (svc c.sqlite).PrivateUsers
        && (svc c.sqlite).CapabilityBoundingSet == [ "" ]
        && (svc c.sqlite).MemoryDenyWriteExecute == false
        && (svc c.sqlite).StateDirectory == [
          "ncps"
          "ncps/db"
        ]
        && (svc c.sqlite).ReadWritePaths == [ ]
        && c.sqlite.users.users.ncps.isSystemUser
        && c.sqlite.users.groups ? ncps;
      sqlite-no-credentials = (svc c.sqlite).LoadCredential == [ ];
      sqlite-no-firewall = c.sqlite.networking.firewall.allowedTCPPorts == [ ];
      sqlite-migrate-offline-before-server =
        hasMigrateUnit c.sqlite
        && (migrate c.sqlite).before == [ "ncps.service" ]
        && !(builtins.elem "ncps.service" (migrate c.sqlite).after)
        && (migrate c.sqlite).wantedBy == [ "ncps.service" ]
        && (migrate c.sqlite).serviceConfig.Type == "oneshot"
        && (migrate c.sqlite).serviceConfig.User == "ncps";
      sqlite-migrate-commands =
        contains "/bin/ncps migrate up '--log-level=info' '--cache-database-url=sqlite:/var/lib/ncps/db/db.sqlite'\nexec " (migrateText c.sqlite)
        && contains "exec /nix/store/${fakeHash "ncps"}-ncps-stub/bin/ncps migrate-narinfo '--log-level=info' '--cache-database-url=sqlite:/var/lib/ncps/db/db.sqlite' '--cache-storage-local=/var/lib/ncps' '--concurrency=10'\n" (migrateText c.sqlite)
        && !(contains "--config" (migrateText c.sqlite));

      # Secrets as credentials: file-path flags for the key and netrc, environment for tokens.
      secrets-credentials =
        credential "secretKey" "/run/secrets/ncps-signing-key" c.secrets
        && credential "netrc" "/run/secrets/netrc" c.secrets
        && credential "getToken" "/run/secrets/get-token" c.secrets
        && credential "putToken" "/run/secrets/put-token" c.secrets;
      secrets-flags-and-env =
        contains ''--cache-secret-key-path="$CREDENTIALS_DIRECTORY/secretKey"'' (serveText c.secrets)
        && contains ''--netrc-file="$CREDENTIALS_DIRECTORY/netrc"'' (serveText c.secrets)
        && exports "CACHE_GET_TOKEN" "getToken" (serveText c.secrets)
        && exports "CACHE_PUT_TOKEN" "putToken" (serveText c.secrets);
      secrets-not-in-config = noSecretText c.secrets [
        "/run/secrets"
        "secret-key"
        "netrc"
        "token"
      ];
      secrets-not-given-to-migration =
        !(contains "secretKey" (migrateText c.secrets))
        && !(contains "Token" (migrateText c.secrets))
        && (migrate c.secrets).serviceConfig.LoadCredential == [ ];

      # Redis on one host: lock backend follows, online migration after the server.
      redis-config =
        get "cache.lock.backend" (settings c.redis) == "redis"
        && get "cache.redis.addrs" (settings c.redis) == [ "127.0.0.1:6379" ]
        && get "cache.redis.pool-size" (settings c.redis) == 10;
      redis-password-credential =
        credential "redisPassword" "/run/secrets/redis-password" c.redis
        && exports "CACHE_REDIS_PASSWORD" "redisPassword" (serveText c.redis)
        && noSecretText c.redis [
          "password"
          "/run/secrets"
        ];
      redis-migrate-online-after-server =
        hasMigrateUnit c.redis
        && builtins.elem "ncps.service" (migrate c.redis).after
        && (migrate c.redis).before == [ ]
        && (migrate c.redis).wantedBy == [ "ncps.service" ]
        && (migrate c.redis).serviceConfig.Type == "oneshot"
        && migrateCredential "redisPassword" "/run/secrets/redis-password" c.redis
        && exports "CACHE_REDIS_PASSWORD" "redisPassword" (migrateText c.redis)
        && contains "--cache-redis-addrs=127.0.0.1:6379" (migrateText c.redis)
        && contains "--cache-lock-backend=redis" (migrateText c.redis)
        && !(contains "migrate up" (migrateText c.redis));
      redis-plain-password-kept-out-of-config =
        noSecretText c.redisPlainPassword [ "hunter2-redis" ]
        && contains "export CACHE_REDIS_PASSWORD=hunter2-redis" (serveText c.redisPlainPassword)
        && builtins.any (w: contains "redis.password puts the Redis password" w) c.redisPlainPassword.warnings;

      # S3 storage: bucket settings in the config, keys through credentials only.
      s3-config =
        get "cache.storage.s3.bucket" (settings c.s3) == "ncps"
        && get "cache.storage.s3.endpoint" (settings c.s3) == "http://s3.internal:9000"
        && get "cache.storage.s3.force-path-style" (settings c.s3) == true
        && get "cache.storage.local" (settings c.s3) == null
        && get "cache.database-url" (settings c.s3) == "sqlite:/var/lib/ncps/db/db.sqlite";
      s3-credentials =
        credential "s3AccessKeyId" "/run/secrets/s3-access-key-id" c.s3
        && credential "s3SecretAccessKey" "/run/secrets/s3-secret-access-key" c.s3
        && exports "CACHE_STORAGE_S3_ACCESS_KEY_ID" "s3AccessKeyId" (serveText c.s3)
        && exports "CACHE_STORAGE_S3_SECRET_ACCESS_KEY" "s3SecretAccessKey" (serveText c.s3)
        && noSecretText c.s3 [
          "/run/secrets"
          "access-key"
        ];
      s3-migration-flags =
        contains "--cache-storage-s3-bucket=ncps" (migrateText c.s3)
        && contains "--cache-storage-s3-endpoint=http://s3.internal:9000" (migrateText c.s3)
        && contains "--cache-storage-s3-force-path-style=true" (migrateText c.s3)
        && !(contains "--cache-storage-local" (migrateText c.s3))
        && migrateCredential "s3SecretAccessKey" "/run/secrets/s3-secret-access-key" c.s3;
      s3-sqlite-state-directory = (svc c.s3).StateDirectory == [
        "ncps"
        "ncps/db"
      ];

      # High availability: PostgreSQL URL from a credential, Redis, S3; online migration.
      ha-database-url-from-credential =
        get "cache.database-url" (settings c.ha) == null
        && credential "databaseURL" "/run/secrets/database-url" c.ha
        && exports "CACHE_DATABASE_URL" "databaseURL" (serveText c.ha)
        && exports "CACHE_DATABASE_URL" "databaseURL" (migrateText c.ha)
        && migrateCredential "databaseURL" "/run/secrets/database-url" c.ha
        && !(contains "--cache-database-url" (migrateText c.ha));
      ha-redis-and-s3 =
        get "cache.redis.addrs" (settings c.ha) == [
          "redis-1:6379"
          "redis-2:6379"
        ]
        && get "cache.redis.username" (settings c.ha) == "ncps"
        && contains "'--cache-redis-addrs=redis-1:6379' '--cache-redis-addrs=redis-2:6379'" (migrateText c.ha)
        && contains "--cache-redis-username=ncps" (migrateText c.ha)
        && get "cache.storage.s3.bucket" (settings c.ha) == "ncps";
      ha-migration-online = builtins.elem "ncps.service" (migrate c.ha).after && (migrate c.ha).before == [ ];
      ha-no-secret-in-config = noSecretText c.ha [
        "/run/secrets"
        "postgres"
      ];
      ha-only-state-directory = (svc c.ha).StateDirectory == [ "ncps" ] && (svc c.ha).ReadWritePaths == [ ];

      # Directories outside /var/lib, firewall, privileged ports.
      custom-dirs =
        (svc c.customDirs).StateDirectory == [
          "ncps"
          "ncps-tmp"
        ]
        && (svc c.customDirs).ReadWritePaths == [
          "/srv/ncps"
          "/srv/ncps/db"
        ]
        && builtins.elem "d /srv/ncps 0700 ncps ncps - -" c.customDirs.systemd.tmpfiles.rules
        && builtins.elem "d /srv/ncps/db 0700 ncps ncps - -" c.customDirs.systemd.tmpfiles.rules
        && (unit c.customDirs "ncps").unitConfig.RequiresMountsFor == [
          "/srv/ncps"
          "/srv/ncps/db"
          "/var/lib/ncps-tmp"
        ]
        && get "cache.temp-path" (settings c.customDirs) == "/var/lib/ncps-tmp"
        && get "cache.database-url" (settings c.customDirs) == "sqlite:/srv/ncps/db/db.sqlite";
      firewall-port = c.customDirs.networking.firewall.allowedTCPPorts == [ 8080 ];
      privileged-port =
        c.privilegedPort.networking.firewall.allowedTCPPorts == [ 80 ]
        && (svc c.privilegedPort).AmbientCapabilities == [ "CAP_NET_BIND_SERVICE" ]
        && (svc c.privilegedPort).CapabilityBoundingSet == [ "CAP_NET_BIND_SERVICE" ]
        && (svc c.privilegedPort).PrivateUsers == false;

      # nixpkgs' old option names still work (with the rename warning).
      renamed-options =
        c.renamed.services.ncps.cache.storage.local == "/data/ncps"
        && get "cache.storage.local" (settings c.renamed) == "/data/ncps"
        && get "cache.upstream.urls" (settings c.renamed) == [ "https://cache.nixos.org" ]
        && builtins.length (get "cache.upstream.public-keys" (settings c.renamed)) == 1;

      migrate-disabled = !(hasMigrateUnit c.migrateDisabled);

      # fsck: a timer and a oneshot unit beside the server, with its config and credentials.
      fsck-off-by-default = !(hasFsck c.sqlite) && !(c.sqlite.systemd.timers ? ncps-fsck);
      fsck-timer =
        c.fsck.systemd.timers.ncps-fsck.timerConfig.OnCalendar == "daily"
        && c.fsck.systemd.timers.ncps-fsck.timerConfig.Persistent
        && c.fsck.systemd.timers.ncps-fsck.wantedBy == [ "timers.target" ];
      fsck-unit =
        (fsckUnit c.fsck).serviceConfig.Type == "oneshot"
        && (fsckUnit c.fsck).serviceConfig.User == "ncps"
        && (fsckUnit c.fsck).serviceConfig.ExecStart == "${c.fsck.services.ncps.generatedScripts.fsck}"
        && builtins.elem "ncps.service" (fsckUnit c.fsck).after
        && (fsckUnit c.fsck).wantedBy == [ ]
        && (fsckUnit c.fsck).unitConfig.RequiresMountsFor == [
          "/var/lib/ncps"
          "/var/lib/ncps/db"
        ]
        && (fsckUnit c.fsck).serviceConfig.LoadCredential == [ ];
      fsck-check-command =
        contains "exec /nix/store/${fakeHash "ncps"}-ncps-stub/bin/ncps fsck --config=${c.fsck.services.ncps.configFile} --verify-content --verified-since=720h\n" (fsckText c.fsck)
        && !(contains "--repair" (fsckText c.fsck));
      fsck-repair-with-credentials =
        contains "--repair" (fsckText c.fsckRepair)
        && contains ''--cache-secret-key-path="$CREDENTIALS_DIRECTORY/secretKey"'' (fsckText c.fsckRepair)
        && exports "CACHE_REDIS_PASSWORD" "redisPassword" (fsckText c.fsckRepair)
        && builtins.elem "secretKey:/run/secrets/ncps-signing-key" (fsckUnit c.fsckRepair).serviceConfig.LoadCredential
        && builtins.elem "redisPassword:/run/secrets/redis-password" (fsckUnit c.fsckRepair).serviceConfig.LoadCredential
        && !(builtins.elem "getToken:/run/secrets/get-token" (fsckUnit c.fsckRepair).serviceConfig.LoadCredential)
        && !(contains "CACHE_GET_TOKEN" (fsckText c.fsckRepair));

      everything-config =
        let
          s = settings c.everything;
        in
        get "log.level" s == "debug"
        && get "prometheus.enabled" s == true
        && get "opentelemetry.grpc-url" s == "http://otel:4317"
        && get "cache.database-url" s == "postgresql:///ncps?host=/run/postgresql"
        && get "cache.database.pool.max-open-conns" s == 20
        && get "cache.allow-put-verb" s == true
        && get "cache.trusted-upload-keys" s == [ "ci-1:AAAA" ]
        && get "cache.negative-ttl" s == "1m"
        && get "cache.max-size" s == "100G"
        && get "cache.lru.timezone" s == "Europe/Berlin"
        && get "cache.sign-narinfo" s == false
        && get "cache.lock.download-lock-ttl" s == "5m0s"
        && get "cache.upstream.response-header-timeout" s == "10s"
        && !((svc c.everything) ? WatchdogSec)
        && contains "'--cache-upstream-response-header-timeout=10s'" (serveText c.everything);
      everything-postgres-socket-no-sqlite-dir = (svc c.everything).StateDirectory == [ "ncps" ];

      # nixpkgs' services.ncps is present (under modulesPath, as NixOS imports it) and disabled:
      # otherwise the options would be declared twice and nothing here would evaluate.
      nixpkgs-module-replaced = c.sqlite.services.ncps ? highAvailability && c.sqlite.services.ncps ? fsck;

      tmp-temp-path-no-host-rule =
        !(builtins.any (r: lib.hasPrefix "d /tmp" r) c.tmpTemp.systemd.tmpfiles.rules)
        && !(builtins.any (r: lib.hasPrefix "d /tmp" r) c.tmpSubdir.systemd.tmpfiles.rules)
        && !(builtins.elem "/tmp" (svc c.tmpTemp).ReadWritePaths)
        && (svc c.tmpTemp).PrivateTmp
        && get "cache.temp-path" (settings c.tmpTemp) == "/tmp";
      nixpkgs-values-accepted =
        let
          s = settings c.nixpkgsValues;
        in
        c.nixpkgsValues.warnings == [ "services.ncps.cache.database.pool.maxOpenConns = -1: ncps takes 0 and more; it is used as 0 (the default)." ]
        && get "cache.max-size" s == "100g"
        && get "cache.lru.schedule" s == "@every 6h"
        && get "cache.upstream.dialer-timeout" s == "0"
        && get "cache.lock.download-lock-ttl" s == "5m0s"
        && get "cache.database.pool.max-open-conns" s == 0 # -1 → 0, the default
        && get "cache.lock.retry.max-attempts" s == 5;
      # A package that does not notify systemd (the Go ncps) never runs under Type=notify.
      go-package-not-notify =
        (svc c.goPackage).Type == "simple"
        && !((svc c.goPackage) ? WatchdogSec)
        && !((svc c.goPackage) ? NotifyAccess)
        && (svc c.goPackage).ExecStartPre == toString c.goPackage.services.ncps.generatedScripts.dbmateUp
        && contains "export DATABASE_URL=sqlite:/var/lib/ncps/db/db.sqlite\nexec /nix/store/" c.goPackage.services.ncps.generatedScripts.dbmateUp.text
        && contains "-ncps-go-stub/bin/dbmate-ncps up" c.goPackage.services.ncps.generatedScripts.dbmateUp.text
        && builtins.any (w: contains "is not this ncps" w) c.goPackage.warnings
        && (svc c.sqlite).Type == "notify"
        && !((svc c.sqlite) ? ExecStartPre);
      assert-duration = assertionFires "badDuration" [
        "not a duration"
        "cache.lock.downloadTTL = \"five minutes\""
      ];
      assert-size = assertionFires "badSize" [
        "maxSize"
        "is not a size"
      ];

      literal-secret-path-warns = builtins.any (w: contains "cache.secretKeyPath is a Nix path literal" w) c.literalSecretPath.warnings;
      no-spurious-warnings = c.sqlite.warnings == [ ] && c.ha.warnings == [ ] && c.s3.warnings == [ ];

      # Assertions for configurations that cannot work.
      assert-s3-needs-credentials = assertionFires "badS3" [
        "s3 needs credentials"
        "secretAccessKeyPath"
      ];
      assert-ha-needs-database-server = assertionFires "badHaSqlite" [
        "highAvailability"
        "shared database server"
      ];
      assert-ha-needs-redis = assertionFires "badHaNoRedis" [
        "highAvailability"
        "Redis"
      ];
      assert-ha-not-offline = assertionFires "badHaOffline" [ "offline" ];
      assert-online-needs-redis = assertionFires "badOnlineNoRedis" [
        "online"
        "Redis"
      ];
      assert-redis-lock-needs-redis = assertionFires "badLockBackend" [ "lock.backend = \"redis\" needs" ];
      assert-redis-needs-redis-locks = assertionFires "badRedisLocalLocks" [ "backend is \"local\"" ];
      assert-redis-one-password = assertionFires "badRedisPasswords" [ "not both" ];
      assert-one-database-url = assertionFires "badTwoDatabaseURLs" [ "exactly one" ];
      assert-lru-needs-max-size = assertionFires "badLru" [ "maxSize" ];
      assert-needs-upstream = assertionFires "badNoUpstream" [ "upstream.urls" ];
      assert-fsck-repair-needs-redis = assertionFires "badFsckRepairNoRedis" [
        "fsck.repair needs Redis"
        "repair by hand"
      ];
    };

  failed = builtins.attrNames (lib.filterAttrs (_: ok: ok != true) checks);
in
{
  inherit failed;
  passed = builtins.length (builtins.attrNames checks) - builtins.length failed;
  total = builtins.length (builtins.attrNames checks);
  checks = lib.mapAttrs (_: ok: ok == true) checks;
  # For the TypeScript test: what each valid configuration generates.
  generated = lib.mapAttrs (_: c: {
    configText = configText c;
    configKeys = configKeys c;
    migrateNarinfoArgs = if hasMigrateUnit c then c.services.ncps.generatedScripts.migrateNarinfoArgs else [ ];
    migrateUpArgs = if hasMigrateUnit c then c.services.ncps.generatedScripts.migrateUpArgs else [ ];
    serveFlags = flagsIn (serveText c);
    migrateNarinfoFlags = if hasMigrateUnit c then flagsIn (migrateText c) else [ ];
    fsckFlags = if hasFsck c then flagsIn (fsckText c) else [ ];
  }) (lib.filterAttrs (n: _: !(lib.hasPrefix "bad" n)) configs);
  inherit knownKeys secretKeys;
  # Failed assertion messages of the refused configurations, for reading.
  refusals = lib.mapAttrs (_: failedAssertions) (lib.filterAttrs (n: _: lib.hasPrefix "bad" n) configs);
}
