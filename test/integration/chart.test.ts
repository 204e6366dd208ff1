// charts/ncps with the real helm: lint, then `helm template` over a matrix of values, every object
// checked against the Kubernetes API schemas and against what keeps a release safe: the config
// file only holds keys ncps knows and no secret, every reference (Secret key, ConfigMap, claim,
// port) resolves, rolling updates and drains keep serving, migrations run before new pods serve.
// No cluster runs any of it (docs/kubernetes.md says what that leaves open).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../../src/config/load';
import { OPTIONS } from '../../src/config/options';
import { CHART_DIR, chartToolsMissing, helm, render, renderFails, schemaProblems, unknownFields, type K8sObject } from '../helpers/helm';

const skip = chartToolsMissing();
const RELEASE = 'cache';
const FULLNAME = 'cache-ncps';

const MATRIX: Record<string, string[]> = {
  defaults: [],
  'Go chart defaults': ['go-defaults'],
  'single SQLite': ['single-sqlite'],
  'HA: PostgreSQL, S3, Redis': ['ha'],
  'HA with existing secrets': ['existing-secrets'],
  'ingress, ServiceMonitor, shared volume': ['ingress-monitor'],
};

const WORKLOADS = new Set(['StatefulSet', 'Deployment']);

function byKind(objects: K8sObject[], kind: string): K8sObject[] {
  return objects.filter((o) => o.kind === kind);
}

function one(objects: K8sObject[], kind: string, name?: string): K8sObject {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  assert.equal(found.length, 1, `expected one ${kind}${name ? ` ${name}` : ''}, found ${found.map((o) => o.metadata.name).join(', ') || 'none'}`);
  return found[0]!;
}

function workload(objects: K8sObject[]): K8sObject {
  const found = objects.filter((o) => WORKLOADS.has(o.kind));
  assert.equal(found.length, 1, 'exactly one StatefulSet or Deployment');
  return found[0]!;
}

/** Every pod template in the objects, with where it comes from. */
function podSpecs(objects: K8sObject[]): Array<{ owner: K8sObject; template: any }> {
  const out: Array<{ owner: K8sObject; template: any }> = [];
  for (const o of objects) {
    if (WORKLOADS.has(o.kind) || o.kind === 'Job') out.push({ owner: o, template: o.spec.template });
    if (o.kind === 'CronJob') out.push({ owner: o, template: o.spec.jobTemplate.spec.template });
    if (o.kind === 'Pod') out.push({ owner: o, template: { metadata: o.metadata, spec: o.spec } });
  }
  return out;
}

function allContainers(spec: any): any[] {
  return [...(spec.initContainers ?? []), ...(spec.containers ?? [])];
}

function decodedSecrets(objects: K8sObject[]): Map<string, Map<string, string>> {
  const secrets = new Map<string, Map<string, string>>();
  for (const s of byKind(objects, 'Secret')) {
    const data = new Map<string, string>();
    for (const [k, v] of Object.entries((s.data ?? {}) as Record<string, string>)) data.set(k, Buffer.from(v, 'base64').toString('utf8'));
    for (const [k, v] of Object.entries((s.stringData ?? {}) as Record<string, string>)) data.set(k, v);
    secrets.set(s.metadata.name, data);
  }
  return secrets;
}

/** Names of Secrets the values say the operator made (existingSecret and friends). */
function existingSecretNames(values: string[]): Set<string> {
  const names = new Set<string>();
  const walk = (v: unknown, key = ''): void => {
    if (v && typeof v === 'object') for (const [k, c] of Object.entries(v)) walk(c, k);
    else if (typeof v === 'string' && v && /existing.*secret/i.test(key)) names.add(v);
  };
  for (const file of values) walk(parseYaml(helmValuesText(file)));
  return names;
}

function helmValuesText(file: string): string {
  return require('node:fs').readFileSync(path.join(CHART_DIR, '..', '..', 'test', 'chart', 'values', `${file}.yaml`), 'utf8');
}

const KNOWN_KEYS = new Set(OPTIONS.map((o) => o.key));

function flatKeys(value: unknown, prefix = '', out: string[] = []): string[] {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatKeys(v, prefix ? `${prefix}.${k}` : k, out);
  } else out.push(prefix);
  return out;
}

function configFileOf(objects: K8sObject[], name = FULLNAME): string {
  const cm = one(objects, 'ConfigMap', name);
  return cm.data['config.yaml'] as string;
}

function hookOf(o: K8sObject): string[] {
  return (o.metadata.annotations?.['helm.sh/hook'] ?? '').split(',').filter(Boolean);
}

function matches(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

describe('Helm chart charts/ncps', { skip }, () => {
  it('helm lint passes, also with every values file of the matrix', () => {
    const plain = helm(['lint', CHART_DIR, '--strict']);
    assert.equal(plain.code, 0, plain.stdout + plain.stderr);
    for (const files of Object.values(MATRIX)) {
      const args = ['lint', CHART_DIR, '--strict'];
      for (const f of files) args.push('-f', path.join(CHART_DIR, '..', '..', 'test', 'chart', 'values', `${f}.yaml`));
      const r = helm(args);
      assert.equal(r.code, 0, `${files.join(',')}: ${r.stdout}${r.stderr}`);
    }
  });

  it('Chart.yaml carries the version of package.json', () => {
    const chart = parseYaml(require('node:fs').readFileSync(path.join(CHART_DIR, 'Chart.yaml'), 'utf8')) as { version: string; appVersion: string };
    const pkg = require(path.join(CHART_DIR, '..', '..', 'package.json')) as { version: string };
    assert.equal(chart.appVersion, pkg.version);
    assert.equal(chart.version, pkg.version);
  });

  for (const [label, values] of Object.entries(MATRIX)) {
    describe(label, () => {
      const objects = render({ values, release: RELEASE });

      it('every object is valid against the Kubernetes API schemas, with no field the API does not know', async () => {
        assert.deepEqual(await schemaProblems(objects), []);
        assert.deepEqual(unknownFields(objects), []);
        for (const o of objects) assert.match(o.metadata.name, /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, `${o.kind} name`);
      });

      it('the config file holds only keys ncps knows, and ncps accepts it', () => {
        const text = configFileOf(objects);
        const keys = flatKeys(parseYaml(text));
        assert.deepEqual(keys.filter((k) => !KNOWN_KEYS.has(k)), [], 'keys ncps does not know');
        const dir = mkdtempSync(path.join(os.tmpdir(), 'ncps-chart-'));
        try {
          const file = path.join(dir, 'config.yaml');
          writeFileSync(file, text);
          for (const command of ['serve', 'migrate up', 'migrate-narinfo', 'fsck']) {
            assert.doesNotThrow(() => loadConfig(command, ['--config', file], {}), `ncps ${command} refuses the config file`);
          }
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      });

      it('no secret value appears outside a Secret', () => {
        const secrets = decodedSecrets(objects);
        const nonSecret = JSON.stringify(objects.filter((o) => o.kind !== 'Secret'));
        for (const [name, data] of secrets) {
          for (const [key, value] of data) {
            if (key === 'netrc' || value.length < 6) continue;
            assert.ok(!nonSecret.includes(value), `${name}/${key} leaks outside the Secret`);
          }
        }
        for (const v of ['VALUE', 'SECRET', 'PASSWORD']) {
          for (const cm of byKind(objects, 'ConfigMap')) assert.ok(!JSON.stringify(cm.data).includes(v), `ConfigMap ${cm.metadata.name} holds "${v}"`);
        }
        for (const { owner, template } of podSpecs(objects)) {
          for (const c of allContainers(template.spec)) {
            for (const e of c.env ?? []) {
              if (/TOKEN|PASSWORD|SECRET|DATABASE_URL|ACCESS_KEY/.test(e.name)) assert.ok(e.valueFrom?.secretKeyRef, `${owner.kind}/${owner.metadata.name} ${c.name}: ${e.name} not from a Secret`);
            }
          }
        }
      });

      it('every Secret key, ConfigMap, claim and port a pod refers to exists', () => {
        const secrets = decodedSecrets(objects);
        const existing = existingSecretNames(values);
        const configMaps = new Set(byKind(objects, 'ConfigMap').map((o) => o.metadata.name));
        const claims = new Set(byKind(objects, 'PersistentVolumeClaim').map((o) => o.metadata.name));
        for (const w of objects.filter((o) => o.kind === 'StatefulSet')) {
          for (const t of w.spec.volumeClaimTemplates ?? []) {
            for (let i = 0; i < w.spec.replicas; i++) claims.add(`${t.metadata.name}-${w.metadata.name}-${i}`);
          }
        }
        const existingClaims = new Set<string>();
        for (const f of values) {
          const v = parseYaml(helmValuesText(f)) as any;
          for (const c of [v?.config?.storage?.local?.persistence?.existingClaim, v?.config?.cache?.tempVolume?.pvc?.existingClaim]) if (c) existingClaims.add(c);
        }
        for (const { owner, template } of podSpecs(objects)) {
          const where = `${owner.kind}/${owner.metadata.name}`;
          const spec = template.spec;
          const volumes = new Map<string, any>((spec.volumes ?? []).map((v: any) => [v.name, v]));
          const vctNames = new Set((owner.spec?.volumeClaimTemplates ?? []).map((t: any) => t.metadata.name));
          for (const c of allContainers(spec)) {
            for (const m of c.volumeMounts ?? []) assert.ok(volumes.has(m.name) || vctNames.has(m.name), `${where} ${c.name}: no volume ${m.name}`);
            for (const e of c.env ?? []) {
              const ref = e.valueFrom?.secretKeyRef;
              if (!ref) continue;
              if (existing.has(ref.name)) continue;
              assert.ok(secrets.get(ref.name)?.has(ref.key), `${where} ${c.name}: ${e.name} refers to ${ref.name}/${ref.key}, which is not rendered`);
            }
          }
          for (const v of volumes.values()) {
            if (v.configMap) assert.ok(configMaps.has(v.configMap.name), `${where}: ConfigMap ${v.configMap.name}`);
            if (v.secret && !existing.has(v.secret.secretName)) assert.ok(secrets.has(v.secret.secretName), `${where}: Secret ${v.secret.secretName}`);
            if (v.persistentVolumeClaim) {
              const claim = v.persistentVolumeClaim.claimName;
              assert.ok(claims.has(claim) || existingClaims.has(claim), `${where}: claim ${claim}`);
            }
          }
        }
        const service = one(objects, 'Service');
        const w = workload(objects);
        const server = w.spec.template.spec.containers.find((c: any) => c.name === 'ncps');
        assert.ok(server.ports.some((p: any) => p.name === service.spec.ports[0].targetPort), 'Service targetPort names a container port');
        assert.ok(matches(service.spec.selector, w.spec.template.metadata.labels), 'Service selects the ncps pods');
      });

      it('every ncps container runs /bin/ncps --config /etc/ncps/config.yaml <command>', () => {
        for (const { owner, template } of podSpecs(objects)) {
          if (owner.kind === 'Pod') continue;
          for (const c of allContainers(template.spec)) {
            if (c.image !== workload(objects).spec.template.spec.containers[0].image) continue;
            assert.deepEqual(c.command, ['/bin/ncps'], `${owner.kind}/${owner.metadata.name} ${c.name}`);
            assert.deepEqual(c.args.slice(0, 2), ['--config', '/etc/ncps/config.yaml']);
            assert.ok(c.volumeMounts.some((m: any) => m.mountPath === '/etc/ncps/config.yaml'), 'config file mounted');
          }
        }
        const w = workload(objects);
        assert.deepEqual(w.spec.template.spec.containers[0].args, ['--config', '/etc/ncps/config.yaml', 'serve']);
      });

      it('probes, preStop and the grace period let a pod drain without failing requests', () => {
        const spec = workload(objects).spec.template.spec;
        const c = spec.containers.find((x: any) => x.name === 'ncps');
        // A values file that spells out the Go chart's probe (on /healthz) keeps it.
        const goProbe = values.includes('go-defaults');
        assert.equal(c.readinessProbe.httpGet.path, goProbe ? '/healthz' : '/readyz');
        assert.equal(c.livenessProbe.httpGet.path, '/healthz');
        assert.equal(c.startupProbe.httpGet.path, '/healthz');
        const preStop = c.lifecycle.preStop.sleep.seconds as number;
        assert.ok(preStop >= 5, 'preStop pause lets endpoints drop the pod first');
        // ncps drains for 30 s and exits at most 40 s after SIGTERM (src/cli/serve.ts).
        assert.ok(spec.terminationGracePeriodSeconds > preStop + 40, `grace ${spec.terminationGracePeriodSeconds} s`);
      });

      it('pods of Jobs and CronJobs are never selected as ncps pods', () => {
        const w = workload(objects);
        const selector = w.spec.selector.matchLabels as Record<string, string>;
        for (const { owner, template } of podSpecs(objects)) {
          if (owner === w) continue;
          assert.ok(!matches(selector, template.metadata?.labels), `${owner.kind}/${owner.metadata.name} pods match the Service selector`);
        }
      });

      it('migrations run before the new server does', () => {
        const w = workload(objects);
        const init = (w.spec.template.spec.initContainers ?? []).map((c: any) => c.args.slice(2).join(' '));
        const jobs = byKind(objects, 'Job');
        const migrationJob = jobs.find((j) => j.spec.template.spec.containers[0].args.slice(2).join(' ') === 'migrate up');
        if (migrationJob) {
          const argo = migrationJob.metadata.annotations?.['argocd.argoproj.io/hook'];
          if (argo) assert.equal(argo, 'PreSync');
          else assert.deepEqual(hookOf(migrationJob), ['pre-install', 'pre-upgrade']);
          assert.ok(!init.includes('migrate up'), 'not twice');
          // Its ConfigMap, Secret and ServiceAccount are hooks too, created first (a pre-install hook
          // runs before the release's own objects exist).
          const spec = migrationJob.spec.template.spec;
          const weight = (o: K8sObject) => Number(o.metadata.annotations?.['helm.sh/hook-weight'] ?? o.metadata.annotations?.['argocd.argoproj.io/sync-wave']);
          const needed = [
            ...spec.volumes.filter((v: any) => v.configMap).map((v: any) => ['ConfigMap', v.configMap.name]),
            ...spec.containers[0].env?.map((e: any) => e.valueFrom?.secretKeyRef?.name).filter((n: string | undefined) => n && decodedSecrets(objects).has(n)).map((n: string) => ['Secret', n]) ?? [],
          ];
          if (spec.serviceAccountName !== 'default' && byKind(objects, 'ServiceAccount').length > 0) needed.push(['ServiceAccount', spec.serviceAccountName]);
          for (const [kind, name] of needed) {
            const dep = one(objects, kind, name);
            assert.ok(hookOf(dep).length > 0 || dep.metadata.annotations?.['argocd.argoproj.io/hook'], `${kind}/${name} used by the migration hook must be a hook itself`);
            assert.ok(weight(dep) < weight(migrationJob), `${kind}/${name} is created before the Job`);
          }
          // The hook sees no volume the running pods hold.
          for (const v of spec.volumes) {
            if (v.persistentVolumeClaim) assert.ok(!v.persistentVolumeClaim.claimName.startsWith('storage-'), 'a StatefulSet claim is held by its pod');
          }
        } else {
          assert.equal(init[0], 'migrate up', 'without a hook Job the pod migrates first, in an init container');
        }
        const narinfoJob = jobs.find((j) => j.spec.template.spec.containers[0].args[2] === 'migrate-narinfo');
        const narinfoInit = init.find((a: string) => a.startsWith('migrate-narinfo'));
        assert.ok(Boolean(narinfoJob) !== Boolean(narinfoInit), 'the narinfo migration runs exactly once, as a Job or in the pod');
        if (narinfoJob) {
          const argo = narinfoJob.metadata.annotations?.['argocd.argoproj.io/hook'];
          if (argo) assert.equal(argo, 'PostSync');
          else assert.deepEqual(hookOf(narinfoJob), ['post-install', 'post-upgrade']);
          assert.match(configFileOf(objects), /backend: redis/, 'online narinfo migration needs Redis locks');
        } else {
          assert.equal(init.at(-1), narinfoInit, 'narinfo migration last, right before the server');
        }
      });
    });
  }

  it('a single pod with its own volume: StatefulSet, the Go chart\'s claim template, no PDB', () => {
    const objects = render({ values: ['single-sqlite'], release: RELEASE });
    const sts = one(objects, 'StatefulSet');
    assert.equal(sts.spec.replicas, 1);
    assert.equal(sts.spec.serviceName, FULLNAME);
    assert.deepEqual(sts.spec.selector.matchLabels, { 'app.kubernetes.io/name': 'ncps', 'app.kubernetes.io/instance': RELEASE });
    assert.deepEqual(sts.spec.volumeClaimTemplates, [
      { metadata: { name: 'storage' }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '100Gi' } }, storageClassName: 'fast' } },
    ]);
    assert.deepEqual(byKind(objects, 'PodDisruptionBudget'), []);
    assert.deepEqual(byKind(objects, 'Job'), [], 'SQLite on the pod\'s volume: no hook Job can open it');
    const config = parseYaml(configFileOf(objects)) as any;
    assert.equal(config.cache['database-url'], 'sqlite:/storage/db/ncps.db');
    assert.equal(config.cache['temp-path'], '/storage/tmp');
    const server = sts.spec.template.spec.containers[0];
    assert.ok(!server.volumeMounts.some((m: any) => m.mountPath === '/storage/tmp'), 'temp inside the storage volume: no extra mount');
    // fsck mounts the pod's ReadWriteOnce claim, so it must run on the pod's node.
    const fsck = one(objects, 'CronJob');
    const fsckPod = fsck.spec.jobTemplate.spec.template.spec;
    assert.equal(fsck.spec.timeZone, 'Europe/Berlin');
    assert.deepEqual(fsckPod.containers[0].args, ['--config', '/etc/ncps/config.yaml', 'fsck']);
    // Without Redis, fsck refuses to repair beside the live server: the chart leaves --repair out.
    const repairing = one(render({ values: ['single-sqlite'], release: RELEASE, set: { 'fsck.repair': true, 'fsck.verifyContent': true } }), 'CronJob');
    assert.deepEqual(repairing.spec.jobTemplate.spec.template.spec.containers[0].args, ['--config', '/etc/ncps/config.yaml', 'fsck', '--verify-content']);
    assert.equal(fsckPod.volumes.find((v: any) => v.name === 'storage').persistentVolumeClaim.claimName, `storage-${FULLNAME}-0`);
    const term = fsckPod.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0];
    assert.equal(term.topologyKey, 'kubernetes.io/hostname');
    assert.deepEqual(term.labelSelector.matchLabels, sts.spec.selector.matchLabels);
  });

  it('HA: a RollingUpdate Deployment one pod at a time, a PDB, hooks instead of init containers', () => {
    const objects = render({ values: ['ha'], release: RELEASE });
    const d = one(objects, 'Deployment');
    assert.equal(d.spec.replicas, 3);
    assert.deepEqual(d.spec.strategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } });
    assert.equal(d.spec.template.spec.initContainers, undefined);
    const pdb = one(objects, 'PodDisruptionBudget');
    assert.equal(pdb.spec.minAvailable, 1);
    assert.deepEqual(pdb.spec.selector.matchLabels, d.spec.selector.matchLabels);
    assert.deepEqual(byKind(objects, 'PersistentVolumeClaim'), [], 'S3 and PostgreSQL: no volume');
    const config = parseYaml(configFileOf(objects)) as any;
    assert.equal(config.cache.lock.backend, 'redis');
    assert.equal(config.cache['database-url'], undefined, 'the PostgreSQL URL holds a password: only in the Secret');
    const secret = decodedSecrets(objects).get(FULLNAME)!;
    assert.equal(secret.get('database-url'), 'postgresql://ncps:PG-PASSWORD-VALUE%2Fwith%3Aspecials@postgres.db:5432/ncps?sslmode=require&connect_timeout=10');
    // No CDC and no in-flight staging needed (the Go chart refuses HA without one of them).
    assert.equal(JSON.stringify(config).includes('cdc'), false);
    const fsck = one(objects, 'CronJob').spec.jobTemplate.spec.template.spec;
    assert.deepEqual(fsck.containers[0].args.slice(2), ['fsck', '--repair', '--verified-since=24h', '--verify-content']);
    assert.equal(fsck.affinity, undefined, 'nothing to co-locate with on S3');
  });

  it('existing secrets: the chart renders no Secret and refers to the operator\'s ones by their Go key names', () => {
    const objects = render({ values: ['existing-secrets'], release: RELEASE });
    assert.deepEqual(byKind(objects, 'Secret'), []);
    const env = Object.fromEntries(one(objects, 'Deployment').spec.template.spec.containers[0].env.map((e: any) => [e.name, e.valueFrom.secretKeyRef]));
    assert.deepEqual(env.CACHE_DATABASE_URL, { name: 'ncps-database', key: 'database-url' });
    assert.deepEqual(env.CACHE_STORAGE_S3_ACCESS_KEY_ID, { name: 'ncps-s3', key: 'access-key-id' });
    assert.deepEqual(env.CACHE_STORAGE_S3_SECRET_ACCESS_KEY, { name: 'ncps-s3', key: 'secret-access-key' });
    assert.deepEqual(env.CACHE_REDIS_PASSWORD, { name: 'ncps-redis', key: 'password' });
    assert.deepEqual(env.CACHE_REDIS_USERNAME, { name: 'ncps-redis', key: 'username', optional: true });
    assert.deepEqual(env.CACHE_GET_TOKEN, { name: 'ncps-tokens', key: 'get-token' });
    assert.deepEqual(env.CACHE_PUT_TOKEN, { name: 'ncps-tokens', key: 'put-token' });
    const volumes = one(objects, 'Deployment').spec.template.spec.volumes;
    assert.equal(volumes.find((v: any) => v.name === 'signing-key').secret.secretName, 'ncps-signing-key');
    assert.equal(volumes.find((v: any) => v.name === 'netrc').secret.secretName, 'ncps-netrc');
    // The hook ServiceAccount carries the role annotation too (S3 access during a takeover).
    const sa = one(objects, 'ServiceAccount', `${FULLNAME}-migration`);
    assert.equal(sa.metadata.annotations?.['eks.amazonaws.com/role-arn'], 'arn:aws:iam::123456789012:role/ncps');
  });

  it('ingress and ServiceMonitor point at the Service port', () => {
    const objects = render({ values: ['ingress-monitor'], release: RELEASE, namespace: 'ncps' });
    const service = one(objects, 'Service');
    const ingress = one(objects, 'Ingress');
    const backend = ingress.spec.rules[0].http.paths[0].backend.service;
    assert.deepEqual(backend, { name: service.metadata.name, port: { name: service.spec.ports[0].name } });
    assert.deepEqual(ingress.spec.tls, [{ hosts: ['cache.example.org'], secretName: 'cache-example-org-tls' }]);
    const monitor = one(objects, 'ServiceMonitor');
    assert.equal(monitor.metadata.namespace, 'monitoring');
    assert.deepEqual(monitor.spec.namespaceSelector, { matchNames: ['ncps'] });
    assert.equal(monitor.spec.endpoints[0].port, service.spec.ports[0].name);
    assert.equal(monitor.spec.endpoints[0].path, '/metrics');
    // ncps answers /metrics without the read token (as the Go ncps does): scrapers carry none.
    assert.equal(monitor.spec.endpoints[0].authorization, undefined);
    assert.equal(one(objects, 'PodDisruptionBudget').spec.maxUnavailable, 1);
    const test = one(objects, 'Pod');
    assert.deepEqual(hookOf(test), ['test']);
    assert.equal(test.spec.containers[0].env.find((e: any) => e.name === 'TOKEN').valueFrom.secretKeyRef.key, 'get-token');
  });

  it('a Deployment with one pod on SQLite or a ReadWriteOnce volume is replaced, not rolled', () => {
    const sets: Array<Record<string, string>> = [{ mode: 'deployment' }, { mode: 'deployment', 'strategy.type': 'RollingUpdate' }];
    for (const set of sets) {
      const objects = render({ set });
      assert.deepEqual(one(objects, 'Deployment').spec.strategy, { type: 'Recreate' }, JSON.stringify(set));
      assert.equal(one(objects, 'PersistentVolumeClaim').metadata.annotations?.['helm.sh/resource-policy'], 'keep');
    }
  });

  it('the workers setting reaches the config file as server.workers', () => {
    const config = parseYaml(configFileOf(render({ set: { 'config.server.workers': 4 } }))) as any;
    assert.equal(config.server.workers, 4);
    assert.equal((parseYaml(configFileOf(render())) as any).server.workers, undefined, 'unset: ncps decides');
  });

  it('the Go chart\'s keys for features this ncps lacks are accepted and leave no trace', () => {
    const objects = render({
      values: ['go-defaults'],
      set: { 'config.cdc.enabled': true, 'config.inflightStaging.enabled': true, 'config.observability.pprof.enabled': true, 'migrateChunksToNar.enabled': true, replicaCount: 1 },
    });
    const text = configFileOf(objects);
    for (const word of ['cdc', 'inflight', 'pprof', 'analytics', 'poll-timeout']) assert.ok(!text.includes(word), word);
    assert.deepEqual(byKind(objects, 'Job'), []);
  });

  it('refuses what cannot work, saying why', () => {
    const cases: Array<[Record<string, string | number | boolean>, RegExp]> = [
      [{ 'config.database.type': 'mysql' }, /MySQL is not supported/],
      [{ replicaCount: 2 }, /needs Redis/],
      [{ replicaCount: 2, 'config.redis.enabled': true }, /SQLite/],
      [{ replicaCount: 2, 'config.redis.enabled': true, 'config.database.type': 'postgresql', 'config.database.postgresql.host': 'pg' }, /storage they all share/],
      [{ 'config.storage.type': 's3' }, /needs a bucket/],
      [{ 'config.database.type': 'postgresql' }, /needs a host/],
      [{ 'config.storage.local.persistence.enabled': false, 'fsck.enabled': true }, /persistent storage/],
      [{ mode: 'daemonset' }, /mode/],
      [{ 'config.logLevel': 'loud' }, /logLevel/],
    ];
    for (const [set, message] of cases) assert.match(renderFails({ set }), message, JSON.stringify(set));
    const dir = mkdtempSync(path.join(os.tmpdir(), 'ncps-chart-'));
    try {
      const unsigned = path.join(dir, 'unsigned.yaml');
      writeFileSync(unsigned, 'config:\n  upstream:\n    caches:\n      - url: https://unsigned.example.org\n');
      assert.match(renderFails({ values: [unsigned] }), /publicKey/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
