// Runs the containers of a pod that `helm template` rendered, as a kubelet would, but as local
// processes of our own bundle: each volume becomes a directory (ConfigMap and Secret items become
// files, a claim becomes a directory shared by every pod that names it), each mount path is mapped
// onto it, environment variables are resolved from the rendered Secrets, and `/bin/ncps` is
// `node dist/ncps.cjs`. Paths inside the config file are mapped the same way (the container would
// see them at their mount paths). What the pod does not say is not invented.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { K8sObject } from './helm';
import { request } from './http';
import { NCPS_BUNDLE, REPO_ROOT } from './ncps';
import { killOnExit, makeTempDir, run, sleep, type RunResult } from './proc';

/** Directories standing for claims, by claim name; shared by every pod of one test. */
export type Claims = Map<string, string>;

export interface PodContainer {
  name: string;
  argv: string[];
  env: Record<string, string>;
  /** The container's spec as rendered. */
  spec: any;
}

export interface MaterialisedPod {
  initContainers: PodContainer[];
  containers: PodContainer[];
  /** mount path → host path, for the main container. */
  mounts: Map<string, string>;
}

function secretData(objects: K8sObject[], name: string): Map<string, string> {
  const secret = objects.find((o) => o.kind === 'Secret' && o.metadata.name === name);
  assert.ok(secret, `the pod refers to Secret ${name}, which is not rendered`);
  return new Map(Object.entries((secret.data ?? {}) as Record<string, string>).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
}

function configMapData(objects: K8sObject[], name: string): Map<string, string> {
  const cm = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === name);
  assert.ok(cm, `the pod refers to ConfigMap ${name}, which is not rendered`);
  return new Map(Object.entries(cm.data as Record<string, string>));
}

async function volumeDirs(objects: K8sObject[], podSpec: any, claimTemplates: string[], ownerName: string, claims: Claims): Promise<Map<string, string>> {
  const dirs = new Map<string, string>();
  const claimDir = async (claim: string): Promise<string> => {
    let dir = claims.get(claim);
    if (!dir) {
      dir = await makeTempDir(`claim-${claim}`);
      claims.set(claim, dir);
    }
    return dir;
  };
  for (const t of claimTemplates) dirs.set(t, await claimDir(`${t}-${ownerName}-0`));
  for (const v of podSpec.volumes ?? []) {
    if (v.persistentVolumeClaim) dirs.set(v.name, await claimDir(v.persistentVolumeClaim.claimName));
    else if (v.emptyDir) dirs.set(v.name, await makeTempDir(`emptydir-${v.name}`));
    else if (v.configMap || v.secret) {
      const dir = await makeTempDir(`volume-${v.name}`);
      const items = v.configMap ? configMapData(objects, v.configMap.name) : secretData(objects, v.secret.secretName);
      for (const [key, value] of items) writeFileSync(path.join(dir, key), value, { mode: 0o600 });
      dirs.set(v.name, dir);
    } else {
      throw new Error(`volume ${v.name}: kind not emulated (${Object.keys(v).join(', ')})`);
    }
  }
  return dirs;
}

function mountsOf(container: any, dirs: Map<string, string>): Map<string, string> {
  const mounts = new Map<string, string>();
  for (const m of container.volumeMounts ?? []) {
    const dir = dirs.get(m.name);
    assert.ok(dir, `${container.name}: no volume ${m.name}`);
    mounts.set(m.mountPath, m.subPath ? path.join(dir, m.subPath) : dir);
  }
  return mounts;
}

/** Maps every container path in `text` that lies under a mount to its host path. */
export function mapPaths(text: string, mounts: Map<string, string>): string {
  const byLength = [...mounts.keys()].sort((a, b) => b.length - a.length);
  const escaped = byLength.map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  if (escaped.length === 0) return text;
  const pattern = new RegExp(`(^|[\\s"':=])(${escaped.join('|')})(?=$|[/\\s"'\\n])`, 'gm');
  return text.replace(pattern, (_, before: string, p: string) => before + mounts.get(p)!);
}

async function materialiseContainer(objects: K8sObject[], container: any, dirs: Map<string, string>): Promise<PodContainer> {
  const mounts = mountsOf(container, dirs);
  // The config file as the container would read it, its paths mapped to the emulated mounts.
  const configMount = mounts.get('/etc/ncps/config.yaml');
  let configFile = configMount;
  if (configMount) {
    configFile = path.join(await makeTempDir(`config-${container.name}`), 'config.yaml');
    writeFileSync(configFile, mapPaths(readFileSync(configMount, 'utf8'), mounts));
  }
  const env: Record<string, string> = {};
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = String(e.value);
    else if (e.valueFrom?.secretKeyRef) {
      const ref = e.valueFrom.secretKeyRef;
      const value = secretData(objects, ref.name).get(ref.key);
      if (value === undefined && ref.optional) continue;
      assert.ok(value !== undefined, `${container.name}: ${e.name} refers to missing ${ref.name}/${ref.key}`);
      env[e.name] = value;
    } else throw new Error(`${container.name}: env ${e.name} not emulated`);
  }
  assert.deepEqual(container.command, ['/bin/ncps'], `${container.name} runs /bin/ncps`);
  const args = (container.args as string[]).map((a) => (a === '/etc/ncps/config.yaml' && configFile ? configFile : mapPaths(a, mounts)));
  return { name: container.name, argv: [process.execPath, NCPS_BUNDLE, ...args], env, spec: container };
}

/** Prepares the containers of the pod template of `owner` (StatefulSet, Deployment, Job, CronJob). */
export async function materialisePod(objects: K8sObject[], owner: K8sObject, claims: Claims): Promise<MaterialisedPod> {
  const template = owner.kind === 'CronJob' ? owner.spec.jobTemplate.spec.template : owner.spec.template;
  const claimTemplates: string[] = (owner.spec.volumeClaimTemplates ?? []).map((t: any) => t.metadata.name);
  const dirs = await volumeDirs(objects, template.spec, claimTemplates, owner.metadata.name, claims);
  const initContainers: PodContainer[] = [];
  for (const c of template.spec.initContainers ?? []) initContainers.push(await materialiseContainer(objects, c, dirs));
  const containers: PodContainer[] = [];
  for (const c of template.spec.containers) containers.push(await materialiseContainer(objects, c, dirs));
  return { initContainers, containers, mounts: mountsOf(template.spec.containers[0], dirs) };
}

/** Only what the test environment must pass on (PATH for xz/zstd, HOME), never ncps settings. */
function baseEnv(): NodeJS.ProcessEnv {
  const keep = ['PATH', 'HOME', 'LANG', 'TMPDIR'];
  return Object.fromEntries(keep.filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]]));
}

/** Runs a container to completion (an init container or a Job's). */
export function runToCompletion(container: PodContainer, timeoutMs = 120_000): Promise<RunResult> {
  const [cmd, ...args] = container.argv;
  return run(cmd!, args, { cwd: REPO_ROOT, env: { ...baseEnv(), ...container.env }, timeoutMs });
}

export interface RunningContainer {
  proc: ChildProcess;
  logs(): string;
  exited: Promise<number | null>;
}

export function startContainer(container: PodContainer): RunningContainer {
  const [cmd, ...args] = container.argv;
  const proc = spawn(cmd!, args, { cwd: REPO_ROOT, env: { ...baseEnv(), ...container.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  killOnExit(proc);
  const chunks: string[] = [];
  proc.stdout!.on('data', (b: Buffer) => chunks.push(b.toString('utf8')));
  proc.stderr!.on('data', (b: Buffer) => chunks.push(b.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  return { proc, logs: () => chunks.join(''), exited };
}

/** The port a probe's httpGet names (a number or a container port's name). */
export function probePort(container: any, probe: any): number {
  const port = probe.httpGet.port;
  if (typeof port === 'number') return port;
  const named = (container.ports ?? []).find((p: any) => p.name === port);
  assert.ok(named, `probe port ${port} is not a port of ${container.name}`);
  return named.containerPort;
}

/** Polls a probe as the kubelet does until it answers 2xx/3xx or `timeoutMs` passes. */
export async function waitForProbe(container: any, probe: any, running: RunningContainer, timeoutMs = 30_000): Promise<number> {
  const url = `http://127.0.0.1:${probePort(container, probe)}`;
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  for (;;) {
    if (running.proc.exitCode !== null) throw new Error(`ncps exited (${running.proc.exitCode}) before ${probe.httpGet.path} answered:\n${running.logs()}`);
    try {
      const r = await request(url, probe.httpGet.path, { timeoutMs: (probe.timeoutSeconds ?? 1) * 1000 });
      if (r.status >= 200 && r.status < 400) return r.status;
      last = `${r.status} ${r.text.slice(0, 500)}`;
    } catch (error) {
      last = (error as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`${probe.httpGet.path} did not succeed within ${timeoutMs} ms (last: ${last}):\n${running.logs()}`);
    await sleep(200);
  }
}
