// "Same command as before": a Go ncps deployment's own files and command lines start this ncps,
// which serves the real Nix client.
// - A config file with every key of the Go ncps's config.example.yaml (written here from its list of
//   keys, with the same shape: an empty `database.pool:` section, an `s3:` block and a lock
//   `backend` commented out), as YAML and as TOML, run as `ncps --config FILE serve` (the Go Helm
//   chart's and nixpkgs' argv), with a real redis-server for its `redis.addrs`.
// - The environment of a Go Docker deployment, deprecated names included (UPSTREAM_CACHES,
//   UPSTREAM_PUBLIC_KEYS, CACHE_DATA_PATH), with the argv `docker run IMAGE /bin/ncps serve` hands
//   the image's entrypoint; `docker stop` (SIGTERM) drains and exits 0.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type * as SmolToml from 'smol-toml' with { 'resolution-mode': 'import' };
import YAML from 'yaml';
import { signedUpstream, substituteAndVerify, teardown, type SignedUpstream } from '../helpers/fixture';
import { request } from '../helpers/http';
import { NCPS_BUNDLE, startNcps, type NcpsProcess } from '../helpers/ncps';
import { nixAvailable } from '../helpers/nix';
import { freePort, makeTempDir } from '../helpers/proc';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis';

const { stringify: toToml } = require('smol-toml') as typeof SmolToml;
const skip = !nixAvailable() ? 'nix not installed' : !redisAvailable() ? 'redis-server not installed' : false;

/** config.example.yaml's keys and layout, with this machine's paths and servers. */
function goConfigYaml(v: { data: string; tmp: string; netrc: string; upstream: string; key: string; redis: string; otel: string }): string {
  return `log:
  # trace, debug, info, warn, error, fatal or panic
  level: "info"
analytics:
  reporting:
    enabled: true
opentelemetry:
  enabled: true
  grpc-url: "${v.otel}"
prometheus:
  enabled: true
cache:
  allow-delete-verb: true
  allow-put-verb: true
  get-token: ""
  hostname: "ncps.mycompany.tld"
  download:
    poll-timeout: 30s
  database-url: "sqlite:${v.data}/db/db.sqlite"
  database:
    pool:
    # max-open-conns: 25
    # max-idle-conns: 5
  cdc:
    enabled: false
    min: 16384
    avg: 65536
    max: 262144
    chunk-wait-timeout: 30s
  inflight-staging:
    enabled: false
    retention: 5m
    part-size: 8388608
  max-size: 100G
  lru:
    schedule: "0 0 * * *"
    timezone: America/Los_Angeles
  secret-key-path: ""
  sign-narinfo: true
  require-trusted-signature: false
  trusted-upload-keys: []
  storage:
    local: "${v.data}"
    # s3:
    #   bucket: "ncps-cache"
    #   endpoint: "https://s3.amazonaws.com"
    #   force-path-style: false
  temp-path: "${v.tmp}"
  netrc-file: "${v.netrc}"
  upstream:
    urls:
      - ${v.upstream}
    public-keys:
      - ${v.key}
    dialer-timeout: 3s
    response-header-timeout: 3s
  redis:
    addrs:
      - "${v.redis}"
    username: ""
    password: ""
    db: 0
    use-tls: false
    pool-size: 10
  lock:
    # backend: "local"
    redis:
      key-prefix: "ncps:lock:"
    download-lock-ttl: 5m
    lru-lock-ttl: 30m
    retry:
      max-attempts: 3
      initial-delay: 100ms
      max-delay: 2s
      jitter: true
    allow-degraded-mode: false
server:
  addr: ":8501"
`;
}

describe('a Go ncps config file: ncps --config FILE serve', { skip, timeout: 600_000 }, () => {
  let upstream: SignedUpstream;
  let redis: RedisServer;
  const running: NcpsProcess[] = [];

  before(async () => {
    upstream = await signedUpstream({ label: 'go-compat-config' });
    redis = await startRedis();
  });

  after(async () => {
    await teardown(...running, redis, upstream);
  });

  for (const format of ['yaml', 'toml'] as const) {
    it(`every key of config.example.yaml, as ${format.toUpperCase()}, serves the real Nix client`, { timeout: 240_000 }, async () => {
      const dir = await makeTempDir(`go-config-${format}`);
      const netrc = path.join(dir, 'netrc');
      writeFileSync(netrc, 'machine upstream.invalid login x password y\n');
      const port = await freePort();
      const yaml = goConfigYaml({
        data: path.join(dir, 'storage'),
        tmp: path.join(dir, 'tmp'),
        netrc,
        upstream: upstream.url,
        key: upstream.key.publicKey,
        redis: redis.addr,
        otel: `http://127.0.0.1:${await freePort()}`,
      }).replace('addr: ":8501"', `addr: "127.0.0.1:${port}"`);
      const file = path.join(dir, `config.${format}`);
      writeFileSync(file, format === 'yaml' ? yaml : toToml(YAML.parse(yaml) as Record<string, unknown>));
      const ncps = await startNcps({
        upstreams: [],
        publicKeys: [],
        bare: true,
        command: [process.execPath, NCPS_BUNDLE, '--config', file],
        port,
        readyTimeoutMs: 30_000,
      });
      running.push(ncps);
      const logs = ncps.logs();
      assert.match(logs, /configuration file read/);
      // The Go-only feature that is on says so, once; the ones that are off say nothing.
      assert.equal(logs.split('\n').filter((l) => /analytics reporting is not part of this ncps/.test(l)).length, 1, logs);
      assert.doesNotMatch(logs, /content-defined chunking|in-flight NAR staging/);
      assert.doesNotMatch(logs, /unknown key|"level":"error"/, logs);
      await substituteAndVerify(upstream.closure, { substituter: ncps.url, trustedPublicKey: await ncps.publicKey(), ncps });
      // Uploads are on (allow-put-verb), no token; /metrics answers (prometheus.enabled).
      assert.equal((await request(ncps.url, '/metrics')).status, 200);
      assert.match((await request(ncps.url, '/')).text, /"hostname":"ncps\.mycompany\.tld"/);
      assert.equal(await ncps.stop(), 0);
    });
  }
});

describe('a Go Docker deployment: its environment and `docker run IMAGE /bin/ncps serve`', { skip, timeout: 300_000 }, () => {
  let upstream: SignedUpstream;
  let ncps: NcpsProcess | undefined;

  before(async () => {
    upstream = await signedUpstream({ label: 'go-compat-docker' });
  });

  after(async () => {
    await teardown(ncps, upstream);
  });

  it('reads the Go variables (deprecated ones too), serves the real Nix client, and drains on docker stop', { timeout: 240_000 }, async () => {
    const storage = await makeTempDir('go-docker-storage');
    ncps = await startNcps({
      upstreams: [],
      publicKeys: [],
      bare: true,
      // The image's entrypoint is /bin/ncps; the Go documentation's command is `/bin/ncps serve …`.
      command: [process.execPath, NCPS_BUNDLE, '/bin/ncps'],
      extraArgs: [`--cache-database-url=sqlite:${storage}/db/db.sqlite`],
      env: {
        CACHE_HOSTNAME: 'ncps.docker.example',
        // Older Go releases' names, which the Go ncps still reads (and a user may still have).
        CACHE_DATA_PATH: storage,
        UPSTREAM_CACHES: upstream.url,
        UPSTREAM_PUBLIC_KEYS: upstream.key.publicKey,
        LOG_LEVEL: 'info',
        PROMETHEUS_ENABLED: 'true',
        CACHE_MAX_SIZE: '10g',
        CACHE_LRU_SCHEDULE: '@every 1h',
        CACHE_LRU_SCHEDULE_TZ: 'UTC',
        CACHE_UPSTREAM_DIALER_TIMEOUT: '0',
        CACHE_CDC_ENABLED: 'false',
        ANALYTICS_REPORTING_ENABLED: 'false',
      },
    });
    const logs = ncps.logs();
    assert.match(logs, /UPSTREAM_CACHES is deprecated; use CACHE_UPSTREAM_URLS/);
    assert.match(logs, /CACHE_DATA_PATH is deprecated; use CACHE_STORAGE_LOCAL/);
    assert.match(logs, new RegExp(`"upstreams":\\["${upstream.url.replace(/[.]/g, '\\.')}/"\\]`), 'UPSTREAM_CACHES is the upstream, not cache.nixos.org');
    assert.match(logs, new RegExp(`"storage":"${storage.replace(/[.]/g, '\\.')}"`));
    await substituteAndVerify(upstream.closure, { substituter: ncps.url, trustedPublicKey: await ncps.publicKey(), ncps });
    assert.equal(await ncps.stop('SIGTERM'), 0, 'docker stop: SIGTERM, drained, exit 0');
    assert.match(ncps.logs(), /shutting down: draining/);
  });
});
