// The chart's rendered pods, run: the ConfigMap's config file, the Secrets and the containers' argv
// (`/bin/ncps --config /etc/ncps/config.yaml …`) start our real bundle, the init containers and
// hook Jobs migrate, the probes answer, the real Nix client substitutes through the server,
// SIGTERM drains it within the grace period, and the fsck CronJob's pod finds the cache
// consistent. With one SQLite pod, with the Go chart's default values, on a Go ncps volume taken
// over in place, and with the HA set-up on PostgreSQL, S3 (s3rver) and Redis. Pods run as local
// processes (test/helpers/chart-pod.ts).
import assert from 'node:assert/strict';
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { materialisePod, runToCompletion, startContainer, waitForProbe, type Claims } from '../helpers/chart-pod';
import { signedUpstream, substituteAndVerify, teardown, type SignedUpstream } from '../helpers/fixture';
import { buildGoFixture, makeGoMaterial } from '../helpers/go-fixture';
import { chartToolsMissing, render, type K8sObject } from '../helpers/helm';
import { request } from '../helpers/http';
import { freePort } from '../helpers/ncps';
import { generateKeyPair, makeTempDir, nixAvailable, type Closure, type KeyPair } from '../helpers/nix';
import { postgresAvailable, startPostgres, type PostgresServer } from '../helpers/postgres';
import { redisAvailable, startRedis, type RedisServer } from '../helpers/redis';
import { s3rverAvailable, startS3rver, type S3rverInstance } from '../helpers/s3';

const toolsMissing = chartToolsMissing();
const skip = toolsMissing || (!nixAvailable() && 'the Nix client is not installed');

async function renderWith(values: Record<string, unknown>): Promise<K8sObject[]> {
  const file = path.join(await makeTempDir('chart-values'), 'values.yaml');
  writeFileSync(file, stringify(values));
  return render({ values: [file], release: 'cache' });
}

function find(objects: K8sObject[], kind: string, test: (o: K8sObject) => boolean = () => true): K8sObject {
  const found = objects.find((o) => o.kind === kind && test(o));
  assert.ok(found, `no ${kind} rendered`);
  return found;
}

/** What a started pod must serve: every closure, signed by the key clients trust. */
interface Serves {
  closures: Closure[];
  publicKey: string;
}

/** Starts the server container of `workload` after its init containers, waits for every probe,
 * substitutes the closures through it with the real Nix client, and returns a stopper that sends
 * SIGTERM and checks the drain. */
async function servePod(objects: K8sObject[], workload: K8sObject, claims: Claims, serves: Serves) {
  const pod = await materialisePod(objects, workload, claims);
  for (const init of pod.initContainers) {
    const r = await runToCompletion(init);
    assert.equal(r.code, 0, `init container ${init.name} (${init.argv.slice(2).join(' ')}) failed:\n${r.stdout}${r.stderr}`);
  }
  const server = pod.containers.find((c) => c.name === 'ncps')!;
  assert.deepEqual(server.argv.slice(2).filter((a) => !a.startsWith('/')), ['--config', 'serve']);
  const running = startContainer(server);
  const spec = server.spec;
  for (const probe of [spec.startupProbe, spec.livenessProbe, spec.readinessProbe]) await waitForProbe(spec, probe, running);
  const port = spec.ports[0].containerPort as number;
  const url = `http://127.0.0.1:${port}`;
  const pubkey = await request(url, '/pubkey', { timeoutMs: 10_000 });
  assert.equal(pubkey.text.trim(), serves.publicKey, 'ncps signs with the key clients trust');
  for (const closure of serves.closures) await substituteAndVerify(closure, { substituter: url, trustedPublicKey: serves.publicKey });
  return {
    url,
    logs: running.logs,
    async stop(): Promise<void> {
      const grace = workload.spec.template.spec.terminationGracePeriodSeconds as number;
      const preStop = spec.lifecycle.preStop.sleep.seconds as number;
      const started = Date.now();
      running.proc.kill('SIGTERM');
      const code = await running.exited;
      assert.equal(code, 0, `ncps exit status after SIGTERM\n${running.logs().slice(-3000)}`);
      assert.ok(Date.now() - started < (grace - preStop) * 1000, 'drained within the grace period left after preStop');
    },
  };
}

describe('the chart\'s pods run the real server', { skip }, () => {
  let upstream: SignedUpstream;
  let signingKey: KeyPair;

  before(async () => {
    upstream = await signedUpstream({ label: 'chart' });
    signingKey = await generateKeyPair('cache.example.org-1', await makeTempDir('chart-key'));
  });
  after(() => teardown(upstream));
  /** The upstream's closure, signed with the key given to the chart (config.signing.secretKey). */
  const chartKeyServes = (): Serves => ({ closures: [upstream.closure], publicKey: signingKey.publicKey });

  it('one SQLite pod: init containers migrate, then the StatefulSet\'s server serves the Nix client', async () => {
    const port = await freePort();
    const objects = await renderWith({
      config: {
        hostname: 'cache.example.org',
        server: { addr: `127.0.0.1:${port}` },
        signing: { secretKey: signingKey.secretKey },
        permissions: { allowPut: true },
        cache: { maxSize: '10G' },
        upstream: { caches: [{ url: upstream.url, publicKey: upstream.key.publicKey }] },
      },
      fsck: { enabled: true, verifyContent: true },
    });
    const sts = find(objects, 'StatefulSet');
    const claims: Claims = new Map();
    const pod = await servePod(objects, sts, claims, chartKeyServes());
    // The database is where the Go chart keeps it, on the pod's claim.
    const storage = claims.get('storage-cache-ncps-0')!;
    assert.ok(storage, 'the claim template became the pod\'s volume');
    assert.match(pod.logs(), /ncps is serving/);
    // The fsck CronJob's pod, beside the live server on the same volume: the cache it filled is consistent.
    const fsck = await materialisePod(objects, find(objects, 'CronJob'), claims);
    assert.deepEqual(fsck.containers[0]!.argv.slice(4), ['fsck', '--verify-content']);
    const checked = await runToCompletion(fsck.containers[0]!);
    assert.equal(checked.code, 0, `fsck beside the live pod:\n${checked.stdout}${checked.stderr}`);
    const n = upstream.closure.paths.length;
    assert.match(checked.stdout, new RegExp(`ncps fsck: ${n} narinfos?, ${n} NAR records?`), 'fsck looked at what the Nix client fetched');
    assert.match(checked.stdout, new RegExp(`NAR contents: ${n} verified`));
    assert.match(checked.stdout, /checked against the serving key cache\.example\.org-1/, 'with the key from the chart\'s Secret');
    await pod.stop();
    assert.ok(existsSync(path.join(storage, 'db', 'ncps.db')), 'SQLite at /storage/db/ncps.db');
    // An upgrade: the next pod's init containers find the database migrated and the volume in place.
    const again = await servePod(objects, sts, claims, chartKeyServes());
    await again.stop();
  });

  it('a values file with every Go chart default (plus its own upstream and address) runs as well', async () => {
    const port = await freePort();
    const file = path.join(await makeTempDir('chart-values'), 'local.yaml');
    writeFileSync(
      file,
      stringify({
        config: {
          hostname: 'cache.example.org',
          server: { addr: `127.0.0.1:${port}` },
          signing: { secretKey: signingKey.secretKey },
          upstream: { caches: [{ url: upstream.url, publicKey: upstream.key.publicKey }] },
        },
      }),
    );
    const objects = render({ values: ['go-defaults', file], release: 'cache' });
    const sts = find(objects, 'StatefulSet');
    // The Go chart's temp path, outside the volume, on its own emptyDir.
    const mounts = sts.spec.template.spec.containers[0].volumeMounts.map((m: any) => m.mountPath);
    assert.ok(mounts.includes('/tmp/ncps') && mounts.includes('/storage'), mounts.join(' '));
    const pod = await servePod(objects, sts, new Map(), chartKeyServes());
    await pod.stop();
  });

  it('a Go chart release upgraded in place: the init container takes over the Go database on the same claim', async () => {
    // The Go ncps v0.10 left its SQLite database where its chart keeps it (/storage/db/ncps.db on
    // the claim storage-<fullname>-0), with chunked (CDC) and uploaded closures and its key in
    // the database; the Go pod is gone, as a StatefulSet update leaves it.
    const material = await makeGoMaterial('chart');
    const go = await buildGoFixture(material, 'v0.10', { kind: 'sqlite' });
    for (const suffix of ['', '-wal', '-shm']) {
      const from = path.join(go.dataDir, 'db', `db.sqlite${suffix}`);
      if (existsSync(from)) renameSync(from, path.join(go.dataDir, 'db', `ncps.db${suffix}`));
    }
    const port = await freePort();
    const file = path.join(await makeTempDir('chart-values'), 'local.yaml');
    writeFileSync(
      file,
      stringify({
        config: {
          hostname: 'cache.example.org',
          server: { addr: `127.0.0.1:${port}` },
          upstream: { caches: [{ url: upstream.url, publicKey: material.upstreamKey.publicKey }] },
        },
      }),
    );
    const objects = render({ values: ['go-defaults', file], release: 'cache' });
    const claims: Claims = new Map([['storage-cache-ncps-0', go.dataDir]]);
    // Clients keep trusting the Go ncps's key, and everything it held is substituted from the volume.
    const pod = await servePod(objects, find(objects, 'StatefulSet'), claims, { closures: go.closures, publicKey: go.publicKey });
    await pod.stop();
  });

  const haSkip = !postgresAvailable() ? 'PostgreSQL is not installed' : !redisAvailable() ? 'redis-server is not installed' : !s3rverAvailable() ? 's3rver is not installed' : false;
  describe('HA: PostgreSQL, S3 and Redis', { skip: haSkip }, () => {
    let pg: PostgresServer;
    let redis: RedisServer;
    let s3: S3rverInstance;
    before(async () => {
      pg = await startPostgres();
      redis = await startRedis({ password: 'redis-secret-pw' });
      s3 = await startS3rver({ bucket: 'ncps-chart' });
    });
    after(async () => {
      await s3?.stop();
      await redis?.stop();
      await pg?.stop();
    });

    it('the migration hook Job, then a Deployment pod, then the online narinfo Job', async () => {
      const port = await freePort();
      const dbUrl = new URL(await pg.createDatabase('chart'));
      const objects = await renderWith({
        mode: 'deployment',
        replicaCount: 2,
        config: {
          hostname: 'cache.example.org',
          // Two worker processes per pod (--server-workers): the HA pod serves through both.
          server: { addr: `127.0.0.1:${port}`, workers: 2 },
          signing: { secretKey: signingKey.secretKey },
          upstream: { caches: [{ url: upstream.url, publicKey: upstream.key.publicKey }] },
          storage: {
            type: 's3',
            s3: { bucket: s3.bucket, endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
          },
          database: {
            type: 'postgresql',
            postgresql: { host: dbUrl.hostname, port: Number(dbUrl.port), database: dbUrl.pathname.slice(1), username: 'postgres', password: 'unused:pw/with@specials', sslMode: 'disable' },
          },
          redis: { enabled: true, addresses: [redis.addr], password: 'redis-secret-pw' },
        },
      });
      const claims: Claims = new Map();
      const hook = find(objects, 'Job', (o) => o.metadata.annotations?.['helm.sh/hook'] === 'pre-install,pre-upgrade');
      const migrate = await materialisePod(objects, hook, claims);
      const r = await runToCompletion(migrate.containers[0]!);
      assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
      const versions = await pg.query(dbUrl.pathname.slice(1), 'SELECT max(version) AS v FROM schema_migrations');
      assert.ok(Number(versions[0]!.v) >= 1, 'the hook Job migrated PostgreSQL before any pod started');

      const pod = await servePod(objects, find(objects, 'Deployment'), claims, chartKeyServes());
      const post = find(objects, 'Job', (o) => o.metadata.annotations?.['helm.sh/hook'] === 'post-install,post-upgrade');
      const narinfo = await runToCompletion((await materialisePod(objects, post, claims)).containers[0]!);
      assert.equal(narinfo.code, 0, `online narinfo migration beside the live pod:\n${narinfo.stdout}${narinfo.stderr}`);
      await pod.stop();
    });
  });
});
