#!/usr/bin/env node
// ncps vs nginx proxy_cache, in one run on this machine. See docs/benchmarks.md.
//
//   node bench/run.mjs [--quick] [--rounds=N] [--only=narinfo,nar-hit,scale,cold,herd,rss]
//                      [--scale-workers=1,2]
//                      [--server-cpus=LIST|none] [--client-cpus=LIST] [--wrk-threads=N]
//                      [--no-client-check] [--cpu-prof[=DIR]] [--keep] [--strict] [--out=DIR]
//                      [--ncps=FILE]
//
// Needs dist/ncps.cjs (npm run build), nginx, wrk and curl on PATH. Everything listens on
// 127.0.0.1, lives in one temp directory and is stopped and removed at the end, also on error or
// Ctrl-C. Results: a table on stdout and JSON in bench/results/ (or --out).

import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateUpstream } from './lib/data.mjs';
import { agent, curl, get, getNarInfos } from './lib/http.mjs';
import { generateKey } from './lib/nix.mjs';
import {
  capture,
  cpuList,
  cpuMs,
  freePort,
  ncpsServeArgs,
  killAllSync,
  pinTree,
  processTree,
  proxyNginxConfig,
  sleep,
  start,
  startNginx,
  stop,
  stopAll,
  upstreamNginxConfig,
  waitForHttp,
} from './lib/procs.mjs';
import { environment, fmt, formatTable, median } from './lib/report.mjs';
import { NARINFOS_LUA, wrkSummary } from './lib/wrk.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DEFAULT_NCPS = path.join(ROOT, 'dist', 'ncps.cjs');
const MiB = 1 << 20;
const PHASES = ['narinfo', 'nar-hit', 'scale', 'cold', 'herd', 'rss'];
/** The whole run is abandoned (and cleaned up) after this long. */
const RUN_LIMIT_MS = 15 * 60_000;

// ---------------------------------------------------------------------------------------------
// Options

class UsageError extends Error {}

function parseArgs(argv) {
  const cpus = os.availableParallelism();
  const opts = {
    quick: false, rounds: undefined, only: PHASES, cpuProf: undefined, keep: false, strict: false, out: path.join(ROOT, 'bench', 'results'), ncps: DEFAULT_NCPS,
    // One core for the server under test, the others for the load generator (see docs/benchmarks.md).
    serverCpus: cpus >= 2 ? '0' : undefined,
    clientCpus: cpus >= 2 ? (cpus === 2 ? '1' : `1-${cpus - 1}`) : undefined,
    wrkThreads: undefined,
    clientCheck: true,
    // Worker counts the scaling phase compares: 1 and every core.
    scaleWorkers: [...new Set([1, cpus])],
  };
  for (const arg of argv) {
    const [name, value] = arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    if (name === '--quick') opts.quick = true;
    else if (name === '--rounds') opts.rounds = Number(value);
    else if (name === '--only') opts.only = value.split(',').map((s) => s.trim());
    else if (name === '--cpu-prof') opts.cpuProf = path.resolve(value ?? path.join(ROOT, 'bench', 'results'));
    else if (name === '--keep') opts.keep = true;
    else if (name === '--strict') opts.strict = true;
    else if (name === '--out') opts.out = path.resolve(value);
    else if (name === '--ncps') opts.ncps = path.resolve(value);
    else if (name === '--server-cpus') opts.serverCpus = value === 'none' ? undefined : value;
    else if (name === '--client-cpus') opts.clientCpus = value;
    else if (name === '--wrk-threads') opts.wrkThreads = Number(value);
    else if (name === '--no-client-check') opts.clientCheck = false;
    else if (name === '--scale-workers') opts.scaleWorkers = value.split(',').map(Number);
    else if (name === '--help' || name === '-h') {
      const lines = readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1);
      const header = lines.slice(0, lines.findIndex((l) => !l.startsWith('//')));
      process.stdout.write(`${header.map((l) => l.replace(/^\/\/ ?/, '')).join('\n')}\n`);
      process.exit(0);
    } else throw new UsageError(`unknown option ${arg}`);
  }
  for (const p of opts.only) if (!PHASES.includes(p)) throw new UsageError(`unknown phase ${p}; phases: ${PHASES.join(', ')}`);
  if (opts.rounds !== undefined && !(Number.isInteger(opts.rounds) && opts.rounds >= 1 && opts.rounds <= 20)) throw new UsageError('--rounds must be 1..20');
  for (const [flag, v] of [['--server-cpus', opts.serverCpus], ['--client-cpus', opts.clientCpus]]) {
    if (v !== undefined && !/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(v)) throw new UsageError(`${flag} takes a CPU list like 0 or 1-3`);
  }
  if (!opts.serverCpus) opts.clientCpus = undefined;
  if (!opts.scaleWorkers.every((w) => Number.isInteger(w) && w >= 1 && w <= 64)) throw new UsageError('--scale-workers takes worker counts like 1,2,4');
  if (opts.wrkThreads !== undefined && !(Number.isInteger(opts.wrkThreads) && opts.wrkThreads >= 1 && opts.wrkThreads <= 64)) throw new UsageError('--wrk-threads must be 1..64');
  return opts;
}

function config(opts) {
  const full = {
    narinfoCount: 1000,
    smallNarSize: 4096,
    wrkThreads: opts.wrkThreads ?? (opts.clientCpus ? cpuList(opts.clientCpus).length : 1),
    wrkConnections: 32,
    serverCpus: opts.serverCpus,
    clientCpus: opts.clientCpus,
    clientCheck: opts.clientCheck,
    scaleWorkers: opts.scaleWorkers,
    wrkSeconds: 3,
    narinfoRounds: 5,
    hitNarSize: 200 * MiB,
    hitDownloadsPerRound: 4,
    coldNarSize: 128 * MiB,
    herdClients: 50,
    herdNarSize: 64 * MiB,
    rssNarSize: 1024 * MiB,
    rssSampleMs: 50,
    rounds: 3,
    nginxWorkers: 1,
  };
  const quick = { narinfoCount: 200, wrkSeconds: 2, narinfoRounds: 2, hitNarSize: 32 * MiB, coldNarSize: 16 * MiB, herdNarSize: 8 * MiB, rssNarSize: 64 * MiB, rounds: 2 };
  const c = { ...full, ...(opts.quick ? quick : {}) };
  if (opts.rounds) c.rounds = c.narinfoRounds = opts.rounds;
  return c;
}

// ---------------------------------------------------------------------------------------------
// Set-up and tear-down

const state = { tmp: undefined, keep: false, cleanup: undefined, removed: false, interrupted: false };

const startedAt = performance.now();
function log(message) {
  const t = ((performance.now() - startedAt) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[bench ${t}s] ${message}\n`);
}

function removeTmp() {
  if (!state.tmp || state.keep || state.removed) return;
  rmSync(state.tmp, { recursive: true, force: true });
  state.removed = true;
}

/** Stops every child and removes the temp directory; every caller waits for the same run of it. */
function cleanup() {
  state.cleanup ??= (async () => {
    await stopAll();
    removeTmp();
    if (state.tmp && state.keep) log(`kept ${state.tmp}`);
  })();
  return state.cleanup;
}

process.on('exit', () => {
  killAllSync();
  removeTmp();
});
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]]) {
  process.on(signal, () => {
    if (state.interrupted) return;
    state.interrupted = true;
    log(`${signal}: stopping everything`);
    cleanup().finally(() => process.exit(code));
  });
}

function checkTools(ncps) {
  const missing = [];
  if (!existsSync(ncps)) missing.push(`${ncps} (run npm run build)`);
  for (const tool of ['nginx', 'wrk', 'curl']) {
    const found = (process.env.PATH ?? '').split(':').some((dir) => dir && existsSync(path.join(dir, tool)));
    if (!found) missing.push(`${tool} (Debian: apt-get install -y nginx-light wrk curl)`);
  }
  if (missing.length) throw new Error(`missing: ${missing.join('; ')}`);
}

// ---------------------------------------------------------------------------------------------
// The run

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const cfg = config(opts);
  state.keep = opts.keep;
  checkTools(opts.ncps);
  const watchdog = setTimeout(() => {
    log(`run exceeded ${RUN_LIMIT_MS / 60_000} minutes; aborting`);
    cleanup().finally(() => process.exit(2));
  }, RUN_LIMIT_MS);
  watchdog.unref();

  const env = environment(ROOT);
  env.loadAverageStart = os.loadavg().map((x) => Math.round(x * 100) / 100);
  log(`${env.cpuModel}, ${env.nproc} CPUs, ${env.memoryGiB} GiB, node ${env.node}, nginx ${env.nginx}`);
  const tmp = (state.tmp = mkdtempSync(path.join(os.tmpdir(), 'ncps-bench-')));
  const dirs = { data: path.join(tmp, 'upstream-data'), upstream: path.join(tmp, 'upstream'), proxy: path.join(tmp, 'nginx'), ncps: path.join(tmp, 'ncps') };
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });

  // The upstream cache: fresh NARs for every measurement that needs an uncached one.
  const large = [];
  const want = (p) => opts.only.includes(p);
  if (want('nar-hit') || want('scale')) large.push({ label: 'hit', size: cfg.hitNarSize });
  if (want('cold')) {
    for (const t of ['ncps', 'nginx', 'direct']) large.push({ label: `cold-warmup-${t}`, size: MiB });
    for (let r = 0; r < cfg.rounds; r++) for (const t of ['ncps', 'nginx', 'direct']) large.push({ label: `cold-${t}-${r}`, size: cfg.coldNarSize });
  }
  if (want('herd')) for (const t of ['ncps', 'nginx']) large.push({ label: `herd-${t}`, size: cfg.herdNarSize });
  if (want('rss')) large.push({ label: 'rss', size: cfg.rssNarSize });
  const totalMiB = large.reduce((s, l) => s + l.size, 0) / MiB;
  log(`generating upstream: ${cfg.narinfoCount} narinfos + ${large.length} NARs (${totalMiB.toFixed(0)} MiB) in ${tmp}`);
  // Named after the upstream's host, as a cache's key usually is (ncps warns of an upstream none of its keys is named after).
  const key = generateKey('127.0.0.1-1');
  const data = await generateUpstream(dirs.data, key, { count: cfg.narinfoCount, smallSize: cfg.smallNarSize, large });

  // Processes.
  const [upPort, ncpsPort, nginxPort] = [await freePort(), await freePort(), await freePort()];
  const upstreamUrl = `http://127.0.0.1:${upPort}`;
  const upstream = startNginx('upstream nginx', dirs.upstream, upstreamNginxConfig(dirs.upstream, upPort, dirs.data, cfg.nginxWorkers));
  await waitForHttp(`${upstreamUrl}/nix-cache-info`, upstream);

  const ncpsArgs = ncpsServeArgs(opts.ncps, { port: ncpsPort, storage: dirs.ncps, upstreamUrl, publicKey: key.publicText });
  if (opts.cpuProf) {
    mkdirSync(opts.cpuProf, { recursive: true });
    ncpsArgs.unshift('--cpu-prof', `--cpu-prof-dir=${opts.cpuProf}`);
  }
  const ncpsLog = path.join(tmp, 'ncps.log');
  const startNcps = (extra = []) => start('ncps', process.execPath, [...ncpsArgs, ...extra], { logFile: ncpsLog, env: { ...process.env, NODE_ENV: 'production' } });
  let ncps = startNcps();
  const proxy = startNginx('nginx proxy_cache', dirs.proxy, proxyNginxConfig(dirs.proxy, nginxPort, upPort, cfg.nginxWorkers));
  const targets = {
    ncps: { key: 'ncps', url: `http://127.0.0.1:${ncpsPort}`, cpu: () => cpuMs(ctx.ncps.pid) },
    nginx: { key: 'nginx', url: `http://127.0.0.1:${nginxPort}`, cpu: () => cpuMs(proxy.pid), pid: () => proxy.pid },
    direct: { key: 'direct', url: upstreamUrl, cpu: () => cpuMs(upstream.pid) },
  };
  await waitForHttp(`${targets.ncps.url}/nix-cache-info`, ncps);
  await waitForHttp(`${targets.nginx.url}/nix-cache-info`, proxy);
  log(`upstream ${upstreamUrl}, ncps ${targets.ncps.url} (pid ${ncps.pid}), nginx ${targets.nginx.url}`);

  const ctx = {
    cfg, tmp, dirs, data, targets, ncps, upstreamLog: path.join(dirs.upstream, 'access.log'),
    /** Stops ncps and starts a fresh process on the same storage and port (with `extra` flags). */
    restartNcps: async (extra = []) => {
      await stop(ctx.ncps, 'SIGTERM', 40_000);
      ctx.ncps = ncps = startNcps(extra);
      await waitForHttp(`${targets.ncps.url}/nix-cache-info`, ncps);
      return ncps;
    },
    /** Reloads the nginx proxy with `workers` worker processes (its cache zone survives a reload). */
    reloadNginx: async (workers) => {
      proxyNginxConfig(dirs.proxy, nginxPort, upPort, workers);
      // Done when the new workers run (old ones may linger, shutting down, until their idle
      // connections close; they take no new ones).
      const old = new Set(processTree(proxy.pid));
      process.kill(proxy.pid, 'SIGHUP');
      const deadline = Date.now() + 60_000;
      const serving = () => processTree(proxy.pid).filter((p) => processTitle(p) === 'nginx: worker process').length;
      while (serving() !== workers || processTree(proxy.pid).filter((p) => !old.has(p) && processTitle(p) === 'nginx: worker process').length !== workers) {
        if (Date.now() > deadline) {
          const titles = processTree(proxy.pid).map((p) => `${p}${old.has(p) ? ' (old)' : ''}: ${processTitle(p)}`);
          throw new Error(`nginx did not come back with ${workers} workers: ${titles.join('; ')}`);
        }
        await sleep(50);
      }
      await waitForHttp(`${targets.nginx.url}/nix-cache-info`, proxy);
    },
  };
  const results = {};
  if (want('narinfo')) results.narinfoHits = await phaseNarInfoHits(ctx);
  if (want('nar-hit')) results.narHit = await phaseNarHit(ctx);
  if (want('scale')) results.scale = await phaseScale(ctx);
  if (want('cold')) results.coldMiss = await phaseColdMiss(ctx);
  if (want('herd')) results.herd = await phaseHerd(ctx);
  if (want('rss')) results.rss = await phaseRss(ctx);

  const ncpsWarnings = readFileSync(ncpsLog, 'utf8').split('\n').filter((l) => /"level":"(warn|error|fatal)"/.test(l));
  log('stopping processes');
  const ncpsExit = await stop(ctx.ncps, 'SIGTERM', 40_000);
  env.loadAverageEnd = os.loadavg().map((x) => Math.round(x * 100) / 100);
  await cleanup();
  clearTimeout(watchdog);

  const rows = tableRows(results, cfg);
  const table = formatTable(rows);
  const summary = {
    environment: env,
    config: { ...cfg, nginxConfig: 'proxy_cache_path … keys_zone=nix:16m; proxy_cache_valid 200 1d; proxy_cache_lock on; proxy_buffering on; upstream keepalive 16' },
    results,
    table: rows,
    ncpsBinary: opts.ncps,
    ncpsWarnings: ncpsWarnings.slice(0, 20),
    ncpsExit,
    ...(opts.cpuProf ? { cpuProfileDir: opts.cpuProf } : {}),
  };
  mkdirSync(opts.out, { recursive: true });
  const stamp = env.date.replace(/[:.]/g, '-');
  const json = `${JSON.stringify(summary, null, 2)}\n`;
  writeFileSync(path.join(opts.out, 'latest.json'), json);
  writeFileSync(path.join(opts.out, `run-${stamp}.json`), json);

  process.stdout.write(`\nncps benchmark: ${env.cpuModel}, ${env.nproc} CPUs, ${env.memoryGiB} GiB RAM, node ${env.node}, nginx ${env.nginx}, ncps ${opts.ncps === DEFAULT_NCPS ? env.ncpsCommit : `${opts.ncps} (checkout at ${env.ncpsCommit})`}\n`);
  process.stdout.write(`load average at start ${env.loadAverageStart.join(' ')}, at end ${env.loadAverageEnd.join(' ')}\n\n`);
  process.stdout.write(`${table}\n\n`);
  if (ncpsWarnings.length) process.stdout.write(`ncps logged ${ncpsWarnings.length} warnings/errors (first: ${ncpsWarnings[0]})\n`);
  process.stdout.write(`results: ${path.join(opts.out, 'latest.json')}\n`);
  if (opts.cpuProf) process.stdout.write(`CPU profile of ncps in ${opts.cpuProf} (summarise: node bench/profile-summary.mjs <file>)\n`);
  const failed = rows.filter((r) => r.pass.startsWith('FAIL'));
  if (failed.length) process.stdout.write(`missed targets: ${failed.map((r) => r.metric).join('; ')}\n`);
  if (opts.strict && failed.length) process.exitCode = 1;
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the phases

/** GET requests the upstream served for `uriPath` so far (from its access log). */
function upstreamFetches(ctx, uriPath) {
  let text;
  try {
    text = readFileSync(ctx.upstreamLog, 'utf8');
  } catch {
    return 0;
  }
  let n = 0;
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f[1] === 'GET' && f[2] === uriPath) n++;
  }
  return n;
}

/** Waits until the upstream log has not grown for `quietMs` (bounded by `timeoutMs`). */
async function waitUpstreamQuiet(ctx, quietMs, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let size = -1;
  let since = Date.now();
  while (Date.now() < deadline) {
    const now = existsSync(ctx.upstreamLog) ? statSync(ctx.upstreamLog).size : 0;
    if (now !== size) {
      size = now;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return;
    await sleep(100);
  }
  throw new Error(`upstream still busy after ${timeoutMs} ms`);
}

/** Waits until ncps has committed the NAR to its storage (its download is over). */
async function waitStored(ctx, entry, timeoutMs = 120_000) {
  const name = entry.narPath.slice('/nar/'.length);
  const file = path.join(ctx.dirs.ncps, 'store', 'nar', name.slice(0, 1), name.slice(0, 2), name);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (existsSync(file) && statSync(file).size === entry.size) return;
    await sleep(20);
  }
  throw new Error(`ncps did not store ${name} within ${timeoutMs} ms`);
}

function expectOk(res, what, size) {
  if (res.status !== 200) throw new Error(`${what}: HTTP ${res.status}`);
  if (size !== undefined && res.bytes !== size) throw new Error(`${what}: got ${res.bytes} bytes, expected ${size}`);
  return res;
}

/** Round r's order of the targets: rotated, so neither is always first after a quiet period. */
function order(list, r) {
  return list.map((_, i) => list[(i + r) % list.length]);
}

const mibps = (bytes, ms) => bytes / MiB / (ms / 1000);

/**
 * A client fetching a store path as Nix does: the narinfo, then its NAR on the same connection,
 * with curl. Times are per transfer (see curl() in lib/http.mjs).
 */
async function fetchStorePath(base, entry, timeoutMs = 600_000) {
  const [narInfo, nar] = await curl([base + entry.narInfoPath, base + entry.narPath], { timeoutMs, capture });
  expectOk(narInfo, `${base}${entry.narInfoPath}`);
  expectOk(nar, `${base}${entry.narPath}`, entry.size);
  return { narInfo, nar };
}

/** The same with the in-process client, for many concurrent clients (no process per client). */
async function fetchStorePathNode(base, entry, timeoutMs = 600_000) {
  const a = agent(1);
  try {
    const narInfo = expectOk(await get(base + entry.narInfoPath, { agent: a, timeoutMs: 30_000 }), `${base}${entry.narInfoPath}`);
    const nar = expectOk(await get(base + entry.narPath, { agent: a, timeoutMs }), `${base}${entry.narPath}`, entry.size);
    return { narInfo, nar };
  } finally {
    a.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// 1. narinfo hits per second

/** Runs `args` on the client CPUs (when the run pins), or anywhere. */
function onClientCpus(cfg, command, args) {
  return cfg.clientCpus ? ['taskset', ['-c', cfg.clientCpus, command, ...args]] : [command, args];
}

/**
 * One wrk run against `base`. Resolves with wrk's summary, the rate, and the CPU time wrk itself
 * used (user + system of all its threads, read from the shell that waited for it), so the report
 * can show whether the load generator had headroom.
 */
async function runWrk(ctx, base, seconds, n, { threads = ctx.cfg.wrkThreads, connections = ctx.cfg.wrkConnections, anywhere = false } = {}) {
  const { cfg, tmp } = ctx;
  const logFile = path.join(tmp, `wrk-${n}.log`);
  const wrkArgs = [
    `-t${threads}`,
    `-c${connections}`,
    `-d${seconds}s`,
    '--timeout', '5s',
    '-s', NARINFOS_LUA,
    base,
    '--',
    ctx.pathsFile,
  ];
  // The shell's cutime/cstime (fields 16, 17 of /proc/<sh>/stat) are the CPU of the wrk it reaped.
  const script = 'wrk "$@"; rc=$?; echo "WRKCPU $(cut -d" " -f16,17 /proc/$$/stat)"; exit $rc';
  const [command, args] = anywhere ? ['sh', ['-c', script, 'sh', ...wrkArgs]] : onClientCpus(cfg, 'sh', ['-c', script, 'sh', ...wrkArgs]);
  const child = start('wrk', command, args, { logFile });
  const timer = setTimeout(() => child.kill('SIGKILL'), (seconds + 20) * 1000);
  const exit = await child.exited;
  clearTimeout(timer);
  const out = readFileSync(logFile, 'utf8');
  const r = wrkSummary(out, exit, base);
  const ticks = /^WRKCPU (\d+) (\d+)$/m.exec(out);
  const clientCpuMs = ticks ? (Number(ticks[1]) + Number(ticks[2])) * 10 : NaN;
  const wallMs = r.duration_us / 1000;
  // Busy share of the CPUs wrk could use: at most its thread count, at most the client CPUs.
  const usable = Math.min(threads, cfg.clientCpus && !anywhere ? cpuList(cfg.clientCpus).length : os.availableParallelism());
  return { rps: r.requests / (r.duration_us / 1e6), threads, connections, clientCpuMs, clientBusy: clientCpuMs / (wallMs * usable), ...r };
}

/** Pins the servers under test to the server CPUs for a phase; returns the undo. */
function pinServers(ctx) {
  const { cfg, targets } = ctx;
  if (!cfg.serverCpus) return () => undefined;
  const pids = [ctx.ncps.pid, targets.nginx.pid()];
  for (const pid of pids) if (!pinTree(pid, cfg.serverCpus)) throw new Error(`could not pin ${pid} to CPUs ${cfg.serverCpus} (is taskset installed?)`);
  const all = `0-${os.availableParallelism() - 1}`;
  return () => {
    for (const pid of pids) pinTree(pid, all);
  };
}

/** One measured wrk run: the server's CPU around it, per request and as a share of the wall time. */
async function measuredWrk(ctx, t, seconds, n, shape) {
  const cpu0 = t.cpu();
  const res = await runWrk(ctx, t.url, seconds, n, shape);
  const serverCpuMs = t.cpu() - cpu0;
  res.cpuUsPerRequest = (serverCpuMs * 1000) / res.requests;
  res.serverBusy = serverCpuMs / (res.duration_us / 1000);
  return res;
}

/** Both caches get every narinfo (and ncps their NARs); once per run. */
async function warmNarInfos(ctx) {
  const { data, targets } = ctx;
  if (ctx.pathsFile) return;
  log(`narinfo hits: warming both caches with ${data.small.length} narinfos`);
  ctx.pathsFile = path.join(ctx.tmp, 'narinfo-paths.txt');
  writeFileSync(ctx.pathsFile, `${data.small.map((e) => e.narInfoPath).join('\n')}\n`);
  for (const t of [targets.ncps, targets.nginx]) await getNarInfos(t.url, data.small, t.key);
  // ncps prefetches each NAR after a narinfo miss; let that finish before measuring.
  await waitUpstreamQuiet(ctx, 1000, 120_000);
  const check = await get(targets.nginx.url + data.small[0].narInfoPath);
  if (check.headers['x-cache-status'] !== 'HIT') throw new Error(`nginx narinfo not cached (X-Cache-Status ${check.headers['x-cache-status']})`);
}

async function phaseNarInfoHits(ctx) {
  const { cfg, targets } = ctx;
  await warmNarInfos(ctx);
  const before = upstreamNarInfoCount(ctx);

  const unpin = pinServers(ctx);
  try {
    let n = 0;
    for (const t of [targets.ncps, targets.nginx]) await runWrk(ctx, t.url, 1, n++); // warm-up (JIT, connections)
    const measure = async (rounds, shape, label) => {
      const out = [];
      for (let r = 0; r < rounds; r++) {
        const round = {};
        for (const t of order([targets.ncps, targets.nginx], r)) {
          const res = await measuredWrk(ctx, t, cfg.wrkSeconds, n++, shape);
          round[t.key] = res;
          log(
            `narinfo hits ${label}round ${r + 1}/${rounds} ${t.key}: ${fmt.int(res.rps)} req/s, ${fmt.f1(res.cpuUsPerRequest)} us CPU/req ` +
              `(server busy ${pct(res.serverBusy)}, wrk -t${res.threads} -c${res.connections} busy ${pct(res.clientBusy)}, p99 ${(res.latency_p99_us / 1000).toFixed(2)} ms)`,
          );
        }
        out.push(round);
      }
      return out;
    };
    const rounds = await measure(cfg.narinfoRounds, undefined, '');
    // The same with twice the client threads and connections: if the client were what limits
    // nginx, nginx would gain and the ratio would drop.
    const checkShape = { threads: cfg.wrkThreads * 2, connections: cfg.wrkConnections * 2 };
    const check = cfg.clientCheck ? await measure(Math.max(2, Math.ceil(cfg.narinfoRounds / 2)), checkShape, 'client check ') : undefined;
    const upstreamDuring = upstreamNarInfoCount(ctx) - before;
    return {
      unit: 'req/s',
      ...summarizeRounds(rounds, 'rps', 'cpuUsPerRequest'),
      ...(check ? { clientCheck: { ...checkShape, ...summarizeRounds(check, 'rps', 'cpuUsPerRequest'), rounds: check } } : {}),
      upstreamRequestsDuring: upstreamDuring,
      rounds,
    };
  } finally {
    unpin();
  }
}

const pct = (x) => (Number.isFinite(x) ? `${Math.round(x * 100)}%` : 'n/a');

/**
 * Medians, spreads and per-round ratios of rounds of `{ ncps, nginx }` measurements, each with
 * a rate field and a CPU field. Each round runs both back to back, so a per-round ratio cancels
 * slow drifts in machine load; the ratio reported is the median of those.
 */
function summarizeRounds(rounds, rateField, cpuField) {
  const pick = (k, f) => rounds.map((r) => r[k][f]);
  const spread = (values) => ({ min: Math.min(...values), max: Math.max(...values), cv: cv(values) });
  return {
    ncps: median(pick('ncps', rateField)),
    nginx: median(pick('nginx', rateField)),
    ratio: median(rounds.map((r) => r.ncps[rateField] / r.nginx[rateField])),
    cpu: { ncps: median(pick('ncps', cpuField)), nginx: median(pick('nginx', cpuField)) },
    cpuRatio: median(rounds.map((r) => r.ncps[cpuField] / r.nginx[cpuField])),
    spread: {
      ncps: spread(pick('ncps', rateField)), nginx: spread(pick('nginx', rateField)),
      ncpsCpu: spread(pick('ncps', cpuField)), nginxCpu: spread(pick('nginx', cpuField)),
      ratio: spread(rounds.map((r) => r.ncps[rateField] / r.nginx[rateField])),
      cpuRatio: spread(rounds.map((r) => r.ncps[cpuField] / r.nginx[cpuField])),
    },
    busy: {
      ncps: { server: median(pick('ncps', 'serverBusy')), client: median(pick('ncps', 'clientBusy')) },
      nginx: { server: median(pick('nginx', 'serverBusy')), client: median(pick('nginx', 'clientBusy')) },
    },
  };
}

/** Coefficient of variation (standard deviation / mean). */
function cv(values) {
  const v = values.filter(Number.isFinite);
  if (v.length < 2) return NaN;
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const sd = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (v.length - 1));
  return sd / mean;
}

function upstreamNarInfoCount(ctx) {
  try {
    return readFileSync(ctx.upstreamLog, 'utf8').split('\n').filter((l) => l.includes('.narinfo ')).length;
  } catch {
    return 0;
  }
}

// ---------------------------------------------------------------------------------------------
// 2. NAR hit throughput

/** Both caches hold the NAR of `data.large.hit`; once per run. */
async function warmNarHit(ctx) {
  const { data, targets } = ctx;
  const e = data.large.hit;
  if (ctx.narHitWarm) return e;
  ctx.narHitWarm = true;
  log(`NAR hits: warming both caches with a ${e.size / MiB} MiB NAR`);
  await fetchStorePath(targets.ncps.url, e);
  await waitStored(ctx, e);
  await fetchStorePath(targets.nginx.url, e);
  for (const t of [targets.ncps, targets.nginx]) expectOk((await curl([t.url + e.narPath], { capture }))[0], `${t.key} warm`, e.size);
  const hit = await get(targets.nginx.url + e.narPath);
  if (hit.headers['x-cache-status'] !== 'HIT') throw new Error(`nginx NAR not cached (X-Cache-Status ${hit.headers['x-cache-status']})`);
  return e;
}

async function phaseNarHit(ctx) {
  const { cfg, targets } = ctx;
  const e = await warmNarHit(ctx);
  const before = upstreamFetches(ctx, e.narPath);

  // Each sample is one curl fetching the NAR several times on one connection: enough bytes that
  // the 10 ms resolution of the CPU counters is small against the CPU a sample takes.
  const unpin = pinServers(ctx);
  const rounds = [];
  try {
    for (let r = 0; r < cfg.rounds; r++) {
      const round = {};
      for (const t of order([targets.ncps, targets.nginx], r)) {
        const urls = Array.from({ length: cfg.hitDownloadsPerRound }, () => t.url + e.narPath);
        const cpu0 = t.cpu();
        const res = await curl(urls, { timeoutMs: 300_000, capture, cpus: cfg.clientCpus });
        const serverCpuMs = t.cpu() - cpu0;
        for (const x of res) expectOk(x, `${t.key} NAR hit`, e.size);
        const totalMs = res.reduce((sum, x) => sum + x.totalMs, 0);
        const mib = (e.size * res.length) / MiB;
        round[t.key] = {
          mibps: mib / (totalMs / 1000),
          perDownloadMiBps: res.map((x) => mibps(x.bytes, x.totalMs)),
          ttfbMs: median(res.map((x) => x.ttfbMs)),
          ms: totalMs,
          cpuMsPerMiB: serverCpuMs / mib,
          serverBusy: serverCpuMs / totalMs,
          clientBusy: res.clientCpuMs / totalMs,
          clientCpuMsPerMiB: res.clientCpuMs / mib,
        };
      }
      const d = (k) => `${fmt.int(round[k].mibps)} MiB/s, ${fmt.f2(round[k].cpuMsPerMiB)} ms CPU/MiB (server busy ${pct(round[k].serverBusy)}, curl ${pct(round[k].clientBusy)})`;
      log(`NAR hits round ${r + 1}/${cfg.rounds}: ncps ${d('ncps')}; nginx ${d('nginx')}`);
      rounds.push(round);
    }
  } finally {
    unpin();
  }
  const upstreamDuring = upstreamFetches(ctx, e.narPath) - before;
  if (upstreamDuring !== 0) throw new Error(`NAR hits went upstream ${upstreamDuring} times`);
  return { unit: 'MiB/s', sizeMiB: e.size / MiB, downloadsPerSample: cfg.hitDownloadsPerRound, ...summarizeRounds(rounds, 'mibps', 'cpuMsPerMiB'), rounds };
}

// ---------------------------------------------------------------------------------------------
// 2e. Scaling with workers: ncps --server-workers=W against nginx worker_processes W, unpinned

function processTitle(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0+$/, '').trim();
  } catch {
    return '';
  }
}

/**
 * Memory of `pid` and its descendants, process by process: VmRSS, and PSS (from smaps_rollup),
 * which divides pages shared between processes (the node binary, mostly) among them, so the PSS
 * of all processes adds up to what they take together while the RSS counts shared pages in each.
 */
function memoryTree(pid) {
  const processes = [];
  for (const p of processTree(pid)) {
    try {
      const rollup = readFileSync(`/proc/${p}/smaps_rollup`, 'utf8');
      const pss = Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1]);
      processes.push({ pid: p, role: p === pid ? 'main' : 'child', rssMiB: procStatusKiB(p, 'VmRSS') / 1024, pssMiB: pss / 1024, anonMiB: procStatusKiB(p, 'RssAnon') / 1024 });
    } catch {
      // gone
    }
  }
  const sum = (f) => processes.reduce((total, x) => total + x[f], 0);
  return { rssMiB: sum('rssMiB'), pssMiB: sum('pssMiB'), processes };
}

/** "supervisor; worker, worker" in PSS MiB (one process: just its figure). */
function describeMemory(m) {
  const main = m.processes.find((x) => x.role === 'main');
  const children = m.processes.filter((x) => x.role === 'child');
  if (!children.length) return main ? fmt.int(main.pssMiB) : 'n/a';
  return `${main ? fmt.int(main.pssMiB) : 'n/a'}; ${children.map((x) => fmt.int(x.pssMiB)).join(', ')}`;
}

async function phaseScale(ctx) {
  const { cfg, targets } = ctx;
  await warmNarInfos(ctx);
  const e = await warmNarHit(ctx);
  const threads = os.availableParallelism();
  const shape = { threads, connections: cfg.wrkConnections * 2, anywhere: true };
  const out = { workers: cfg.scaleWorkers, byWorkers: {} };
  let n = 1000;
  try {
    for (const w of cfg.scaleWorkers) {
      log(`scaling: ncps --server-workers=${w}, nginx worker_processes ${w}; client on every CPU`);
      await ctx.restartNcps([`--server-workers=${w}`]);
      await ctx.reloadNginx(w);
      for (const t of [targets.ncps, targets.nginx]) await runWrk(ctx, t.url, 1, n++, shape); // warm-up
      const rounds = [];
      for (let r = 0; r < cfg.rounds; r++) {
        const round = {};
        for (const t of order([targets.ncps, targets.nginx], r)) round[t.key] = await measuredWrk(ctx, t, cfg.wrkSeconds, n++, shape);
        rounds.push(round);
      }
      // NAR hits: one curl per worker at once, each fetching the NAR twice.
      const nar = {};
      for (const t of [targets.ncps, targets.nginx]) {
        const cpu0 = t.cpu();
        const started = performance.now();
        const res = await Promise.all(Array.from({ length: w }, () => curl([t.url + e.narPath, t.url + e.narPath], { timeoutMs: 300_000, capture })));
        const wallMs = performance.now() - started;
        for (const x of res.flat()) expectOk(x, `${t.key} NAR hit (scaling)`, e.size);
        const mib = (e.size * 2 * w) / MiB;
        nar[t.key] = { mibps: mib / (wallMs / 1000), cpuMsPerMiB: (t.cpu() - cpu0) / mib };
      }
      const summary = summarizeRounds(rounds, 'rps', 'cpuUsPerRequest');
      out.byWorkers[w] = { narinfo: { ...summary, rounds }, nar, ncpsMemory: memoryTree(ctx.ncps.pid), nginxMemory: memoryTree(targets.nginx.pid()) };
      log(
        `scaling ${w} worker(s): narinfo ncps ${fmt.int(summary.ncps)} req/s (${fmt.f1(summary.cpu.ncps)} us CPU/req), nginx ${fmt.int(summary.nginx)} req/s; ` +
          `NAR ncps ${fmt.int(nar.ncps.mibps)} MiB/s, nginx ${fmt.int(nar.nginx.mibps)} MiB/s; ncps RSS ${fmt.f1(out.byWorkers[w].ncpsMemory.rssMiB)} MiB (PSS ${fmt.f1(out.byWorkers[w].ncpsMemory.pssMiB)}; per process ${describeMemory(out.byWorkers[w].ncpsMemory)})`,
      );
    }
  } finally {
    await ctx.restartNcps();
    await ctx.reloadNginx(cfg.nginxWorkers);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// 3. Cold miss: time to first byte and throughput, against fetching straight from upstream

async function phaseColdMiss(ctx) {
  const { cfg, data, targets } = ctx;
  log(`cold misses: ${cfg.rounds} rounds of a fresh ${cfg.coldNarSize / MiB} MiB NAR via ncps, nginx and direct`);
  // One unmeasured miss each first, so no measured round pays for first-use costs (JIT, connections).
  for (const t of [targets.ncps, targets.nginx, targets.direct]) {
    const e = data.large[`cold-warmup-${t.key}`];
    await fetchStorePath(t.url, e);
    if (t.key === 'ncps') await waitStored(ctx, e);
  }
  const rounds = [];
  for (let r = 0; r < cfg.rounds; r++) {
    const round = {};
    for (const t of order([targets.ncps, targets.nginx, targets.direct], r)) {
      const e = data.large[`cold-${t.key}-${r}`];
      const cpu0 = t.cpu();
      const { narInfo, nar } = await fetchStorePath(t.url, e);
      round[t.key] = {
        // What a Nix client waits for: narinfo request sent -> first NAR byte.
        ttfbMs: narInfo.totalMs + nar.ttfbMs,
        narInfoMs: narInfo.totalMs,
        narTtfbMs: nar.ttfbMs,
        mibps: mibps(nar.bytes, nar.totalMs),
        totalMs: narInfo.totalMs + nar.totalMs,
      };
      // Let ncps finish its commit (fsync, rename, database) before the next measurement starts.
      if (t.key === 'ncps') await waitStored(ctx, e);
      await waitUpstreamQuiet(ctx, 200, 60_000);
      // CPU of the proxy (for "direct": of the upstream server), committing included.
      round[t.key].cpuMsPerMiB = (t.cpu() - cpu0) / (e.size / MiB);
      round[t.key].upstreamNarFetches = upstreamFetches(ctx, e.narPath);
    }
    log(
      `cold round ${r + 1}/${cfg.rounds}: ` +
        ['ncps', 'nginx', 'direct'].map((k) => `${k} ttfb ${fmt.f1(round[k].ttfbMs)} ms, ${fmt.int(round[k].mibps)} MiB/s`).join('; '),
    );
    rounds.push(round);
  }
  const m = (k, f) => median(rounds.map((r) => r[k][f]));
  const out = { sizeMiB: cfg.coldNarSize / MiB, rounds };
  for (const k of ['ncps', 'nginx', 'direct']) {
    out[k] = {
      ttfbMs: m(k, 'ttfbMs'), narInfoMs: m(k, 'narInfoMs'), narTtfbMs: m(k, 'narTtfbMs'), mibps: m(k, 'mibps'), totalMs: m(k, 'totalMs'), cpuMsPerMiB: m(k, 'cpuMsPerMiB'),
    };
  }
  // Ratios are "fraction of direct performance" (direct time / proxy time, proxy MiB/s / direct
  // MiB/s), per round (all three run back to back), then the median over rounds.
  const ratio = (f) => median(rounds.map(f));
  out.ttfbRatio = ratio((r) => r.direct.ttfbMs / r.ncps.ttfbMs);
  out.throughputRatio = ratio((r) => r.ncps.mibps / r.direct.mibps);
  out.nginxTtfbRatio = ratio((r) => r.direct.ttfbMs / r.nginx.ttfbMs);
  out.nginxThroughputRatio = ratio((r) => r.nginx.mibps / r.direct.mibps);
  return out;
}

// ---------------------------------------------------------------------------------------------
// 4. Thundering herd: upstream fetches for concurrent clients asking for one uncached NAR

async function phaseHerd(ctx) {
  const { cfg, data, targets } = ctx;
  const out = { clients: cfg.herdClients, sizeMiB: cfg.herdNarSize / MiB };
  for (const t of [targets.ncps, targets.nginx]) {
    const e = data.large[`herd-${t.key}`];
    log(`herd: ${cfg.herdClients} concurrent clients fetch one uncached ${e.size / MiB} MiB store path via ${t.key}`);
    const cpu0 = t.cpu();
    const started = performance.now();
    const clients = await Promise.all(
      Array.from({ length: cfg.herdClients }, async () => {
        const { narInfo, nar } = await fetchStorePathNode(t.url, e);
        return { ttfbMs: nar.tFirstByte - narInfo.t0, totalMs: nar.tEnd - narInfo.t0, cache: nar.headers['x-cache-status'] };
      }),
    );
    const wallMs = performance.now() - started;
    if (t.key === 'ncps') await waitStored(ctx, e);
    await waitUpstreamQuiet(ctx, 500, 60_000);
    const totals = clients.map((c) => c.totalMs);
    out[t.key] = {
      upstreamNarFetches: upstreamFetches(ctx, e.narPath),
      cpuMs: t.cpu() - cpu0,
      upstreamNarInfoFetches: upstreamFetches(ctx, e.narInfoPath),
      wallMs,
      clientTotalMsMedian: median(totals),
      clientTotalMsMax: Math.max(...totals),
      clientTtfbMsMedian: median(clients.map((c) => c.ttfbMs)),
      ...(t.key === 'nginx' ? { cacheStatuses: countBy(clients.map((c) => c.cache)) } : {}),
    };
    log(`herd ${t.key}: ${out[t.key].upstreamNarFetches} upstream NAR fetch(es), ${out[t.key].upstreamNarInfoFetches} narinfo fetch(es); client median ${fmt.int(out[t.key].clientTotalMsMedian)} ms, max ${fmt.int(out[t.key].clientTotalMsMax)} ms`);
  }
  return out;
}

function countBy(values) {
  const counts = {};
  for (const v of values) counts[v ?? 'none'] = (counts[v ?? 'none'] ?? 0) + 1;
  return counts;
}

// ---------------------------------------------------------------------------------------------
// 5. Peak RSS of ncps while streaming a large NAR on a cold miss

function procStatusKiB(pid, field) {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1]);
}

async function phaseRss(ctx) {
  const { cfg, data, targets } = ctx;
  const e = data.large.rss;
  // The earlier phases leave a grown V8 heap behind; note it, then measure a fresh process so the
  // number is about streaming, not about what the heap happened to keep from the narinfo load.
  const earlier = { vmRssMiB: procStatusKiB(ctx.ncps.pid, 'VmRSS') / 1024, vmHwmMiB: procStatusKiB(ctx.ncps.pid, 'VmHWM') / 1024 };
  log(`RSS: ncps after the earlier phases: VmRSS ${fmt.f1(earlier.vmRssMiB)} MiB, VmHWM ${fmt.f1(earlier.vmHwmMiB)} MiB; restarting it`);
  const ncps = await ctx.restartNcps();
  await sleep(1000);
  const pid = ncps.pid;
  log(`RSS: streaming a fresh ${e.size / MiB} MiB NAR through ncps (cold miss), sampling /proc/${pid}/status every ${cfg.rssSampleMs} ms`);
  const baselineKiB = procStatusKiB(pid, 'VmRSS');
  let hwmReset = false;
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5'); // resets VmHWM to the current RSS
    hwmReset = true;
  } catch {
    // not permitted: rely on the samples alone
  }
  const samples = [];
  const sample = () => {
    try {
      samples.push(procStatusKiB(pid, 'VmRSS'));
    } catch {
      // process gone; the fetch will fail too
    }
  };
  const sampler = setInterval(sample, cfg.rssSampleMs);
  let fetched;
  try {
    fetched = await fetchStorePath(targets.ncps.url, e);
    await waitStored(ctx, e);
  } finally {
    clearInterval(sampler);
  }
  sample();
  const hwmKiB = procStatusKiB(pid, 'VmHWM');
  const sampledPeakKiB = Math.max(...samples);
  const peakKiB = hwmReset ? Math.max(hwmKiB, sampledPeakKiB) : sampledPeakKiB;
  const { narInfo, nar } = fetched;
  const out = {
    sizeMiB: e.size / MiB,
    earlierPhases: earlier,
    baselineMiB: baselineKiB / 1024,
    peakMiB: peakKiB / 1024,
    sampledPeakMiB: sampledPeakKiB / 1024,
    vmHwmMiB: hwmReset ? hwmKiB / 1024 : null,
    samples: samples.length,
    mibps: mibps(nar.bytes, nar.totalMs),
    ttfbMs: narInfo.totalMs + nar.ttfbMs,
  };
  log(`RSS: baseline ${fmt.f1(out.baselineMiB)} MiB, peak ${fmt.f1(out.peakMiB)} MiB (${samples.length} samples), ${fmt.int(out.mibps)} MiB/s`);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The table

function tableRows(results, cfg) {
  const rows = [];
  const verdict = (ok) => (ok ? 'PASS' : 'FAIL');
  // A rate compares the servers' capacities only when both kept their core busy; on a machine
  // busy with other work they do not, and the CPU figures (1b, 2b) are the ones to read.
  const saturated = (m) => (m.busy.ncps.server >= 0.85 && m.busy.nginx.server >= 0.85 ? '' : ' (noisy)');
  const pinned = cfg.serverCpus ? `CPU ${cfg.serverCpus} each` : 'unpinned';
  const range = (sp, f) => `${f(sp.min)}-${f(sp.max)}`;
  const busy = (b) => `${pct(b.server)} / ${pct(b.client)}`;
  const n = results.narinfoHits;
  if (n) {
    rows.push({
      metric: `1. narinfo hits/s (${pinned}; wrk -t${cfg.wrkThreads} -c${cfg.wrkConnections}, ${cfg.narinfoCount} paths)`,
      ncps: fmt.int(n.ncps), other: `${fmt.int(n.nginx)} (nginx)`, ratio: fmt.f2(n.ratio), target: '>= 0.8', pass: verdict(n.ratio >= 0.8) + saturated(n),
    });
    rows.push({
      metric: '1b. CPU us per narinfo hit (ratio: ncps / nginx)',
      ncps: fmt.f1(n.cpu.ncps), other: `${fmt.f1(n.cpu.nginx)} (nginx)`, ratio: fmt.f2(n.cpuRatio), target: '<= 1.25', pass: verdict(n.cpuRatio <= 1.25),
    });
    rows.push({
      metric: `1c. (info) spread over ${n.rounds.length} rounds: req/s; CPU us`,
      ncps: `${range(n.spread.ncps, fmt.int)}; ${range(n.spread.ncpsCpu, fmt.f1)}`,
      other: `${range(n.spread.nginx, fmt.int)}; ${range(n.spread.nginxCpu, fmt.f1)}`,
      ratio: `${range(n.spread.ratio, fmt.f2)}; ${range(n.spread.cpuRatio, fmt.f2)}`, target: 'info', pass: '',
    });
    rows.push({ metric: '1d. (info) CPU busy: server / wrk', ncps: busy(n.busy.ncps), other: busy(n.busy.nginx), ratio: '', target: 'info', pass: '' });
    rows.push({
      metric: '1f. (info) CPU us per narinfo hit, least of the rounds',
      ncps: fmt.f1(n.spread.ncpsCpu.min), other: `${fmt.f1(n.spread.nginxCpu.min)} (nginx)`, ratio: fmt.f2(n.spread.ncpsCpu.min / n.spread.nginxCpu.min), target: 'info', pass: '',
    });
    const k = n.clientCheck;
    if (k) {
      rows.push({
        metric: `1e. (info) client check: wrk -t${k.threads} -c${k.connections}, req/s (wrk busy)`,
        ncps: `${fmt.int(k.ncps)} (${pct(k.busy.ncps.client)})`, other: `${fmt.int(k.nginx)} (${pct(k.busy.nginx.client)})`, ratio: fmt.f2(k.ratio), target: 'info', pass: '',
      });
    }
  }
  const h = results.narHit;
  if (h) {
    rows.push({
      metric: `2. NAR hit MiB/s (${pinned}; ${h.sizeMiB} MiB, curl)`,
      ncps: fmt.int(h.ncps), other: `${fmt.int(h.nginx)} (nginx)`, ratio: fmt.f2(h.ratio), target: '>= 0.9', pass: verdict(h.ratio >= 0.9) + saturated(h),
    });
    rows.push({
      metric: '2b. CPU ms per MiB, NAR hit (ratio: ncps / nginx)',
      ncps: fmt.f2(h.cpu.ncps), other: `${fmt.f2(h.cpu.nginx)} (nginx)`, ratio: fmt.f2(h.cpuRatio), target: '<= 2.0', pass: verdict(h.cpuRatio <= 2),
    });
    rows.push({
      metric: `2c. (info) spread over ${h.rounds.length} rounds: MiB/s; CPU ms/MiB`,
      ncps: `${range(h.spread.ncps, fmt.int)}; ${range(h.spread.ncpsCpu, fmt.f2)}`,
      other: `${range(h.spread.nginx, fmt.int)}; ${range(h.spread.nginxCpu, fmt.f2)}`,
      ratio: `${range(h.spread.ratio, fmt.f2)}; ${range(h.spread.cpuRatio, fmt.f2)}`, target: 'info', pass: '',
    });
    rows.push({ metric: '2d. (info) CPU busy: server / curl', ncps: busy(h.busy.ncps), other: busy(h.busy.nginx), ratio: '', target: 'info', pass: '' });
    rows.push({
      metric: '2f. (info) CPU ms per MiB, NAR hit, least of the rounds',
      ncps: fmt.f2(h.spread.ncpsCpu.min), other: `${fmt.f2(h.spread.nginxCpu.min)} (nginx)`, ratio: fmt.f2(h.spread.ncpsCpu.min / h.spread.nginxCpu.min), target: 'info', pass: '',
    });
  }
  const sc = results.scale;
  if (sc) {
    const ws = sc.workers;
    const base = sc.byWorkers[ws[0]];
    const series = (f) => ws.map((w) => f(sc.byWorkers[w])).map(fmt.int).join(' / ');
    const gain = (f) => ws.length > 1 ? (f(sc.byWorkers[ws[ws.length - 1]]) / f(base)).toFixed(2) : 'n/a';
    const label = ws.join(' / ');
    rows.push({
      metric: `2e. (info) narinfo req/s with ${label} workers (unpinned; gain)`,
      ncps: `${series((b) => b.narinfo.ncps)} (x${gain((b) => b.narinfo.ncps)})`,
      other: `${series((b) => b.narinfo.nginx)} (x${gain((b) => b.narinfo.nginx)})`, ratio: '', target: 'info', pass: '',
    });
    rows.push({
      metric: `2f. (info) CPU us per narinfo hit with ${label} workers`,
      ncps: ws.map((w) => fmt.f1(sc.byWorkers[w].narinfo.cpu.ncps)).join(' / '), other: ws.map((w) => fmt.f1(sc.byWorkers[w].narinfo.cpu.nginx)).join(' / '), ratio: '', target: 'info', pass: '',
    });
    rows.push({
      metric: `2g. (info) NAR hit MiB/s, one client per worker, ${label} workers`,
      ncps: `${series((b) => b.nar.ncps.mibps)} (x${gain((b) => b.nar.ncps.mibps)})`,
      other: `${series((b) => b.nar.nginx.mibps)} (x${gain((b) => b.nar.nginx.mibps)})`, ratio: '', target: 'info', pass: '',
    });
    const memory = (m) => `${fmt.int(m.rssMiB)} (${fmt.int(m.pssMiB)})`;
    rows.push({
      metric: `2h. (info) RSS (PSS) MiB of all processes, ${label} workers`,
      ncps: ws.map((w) => memory(sc.byWorkers[w].ncpsMemory)).join(' / '), other: ws.map((w) => memory(sc.byWorkers[w].nginxMemory)).join(' / '), ratio: '', target: 'info', pass: '',
    });
    const most = sc.byWorkers[ws[ws.length - 1]].ncpsMemory;
    if (most.processes.length > 1) {
      rows.push({ metric: `2i. (info) ncps PSS MiB per process, ${ws[ws.length - 1]} workers: supervisor; workers`, ncps: describeMemory(most), other: '', ratio: '', target: 'info', pass: '' });
    }
  }
  const c = results.coldMiss;
  if (c) {
    rows.push({
      metric: `3a. cold miss TTFB ms, narinfo->1st NAR byte (${c.sizeMiB} MiB)`,
      ncps: fmt.f1(c.ncps.ttfbMs), other: `${fmt.f1(c.direct.ttfbMs)} (direct)`, ratio: fmt.f2(c.ttfbRatio), target: '>= 0.9', pass: verdict(c.ttfbRatio >= 0.9),
    });
    rows.push({
      metric: `3b. cold miss NAR MiB/s (${c.sizeMiB} MiB)`,
      ncps: fmt.int(c.ncps.mibps), other: `${fmt.int(c.direct.mibps)} (direct)`, ratio: fmt.f2(c.throughputRatio), target: '>= 0.9', pass: verdict(c.throughputRatio >= 0.9),
    });
    rows.push({
      metric: '3c. (info) nginx cold miss TTFB ms / MiB/s',
      ncps: '', other: `${fmt.f1(c.nginx.ttfbMs)} / ${fmt.int(c.nginx.mibps)}`, ratio: `${fmt.f2(c.nginxTtfbRatio)} / ${fmt.f2(c.nginxThroughputRatio)}`, target: 'info', pass: '',
    });
    rows.push({
      metric: '3d. (info) cold miss narinfo ms / NAR TTFB ms',
      ncps: `${fmt.f1(c.ncps.narInfoMs)} / ${fmt.f1(c.ncps.narTtfbMs)}`, other: `${fmt.f1(c.direct.narInfoMs)} / ${fmt.f1(c.direct.narTtfbMs)} (direct)`, ratio: '', target: 'info', pass: '',
    });
    rows.push({
      metric: '3e. (info) CPU ms per MiB, cold miss',
      ncps: fmt.f2(c.ncps.cpuMsPerMiB), other: `${fmt.f2(c.nginx.cpuMsPerMiB)} (nginx)`, ratio: '', target: 'info', pass: '',
    });
  }
  const herd = results.herd;
  if (herd) {
    rows.push({
      metric: `4. upstream NAR fetches, ${herd.clients} clients, 1 uncached NAR`,
      ncps: String(herd.ncps.upstreamNarFetches), other: `${herd.nginx.upstreamNarFetches} (nginx)`, ratio: '', target: 'ncps = 1', pass: verdict(herd.ncps.upstreamNarFetches === 1),
    });
    rows.push({
      metric: `4b. (info) herd client time median / max ms`,
      ncps: `${fmt.int(herd.ncps.clientTotalMsMedian)} / ${fmt.int(herd.ncps.clientTotalMsMax)}`,
      other: `${fmt.int(herd.nginx.clientTotalMsMedian)} / ${fmt.int(herd.nginx.clientTotalMsMax)}`, ratio: '', target: 'info', pass: '',
    });
  }
  const r = results.rss;
  if (r) {
    rows.push({
      metric: `5. ncps peak RSS MiB, cold ${r.sizeMiB} MiB NAR`,
      ncps: fmt.f1(r.peakMiB), other: '', ratio: '', target: '< 150', pass: verdict(r.peakMiB < 150),
    });
    rows.push({
      metric: '5b. (info) ncps RSS MiB: fresh idle / after phases 1-4 (VmHWM)',
      ncps: `${fmt.f1(r.baselineMiB)} / ${fmt.f1(r.earlierPhases.vmHwmMiB)}`, other: '', ratio: '', target: 'info', pass: '',
    });
    // The idle figure varies by tens of MiB from start to start (whether V8 has collected the
    // garbage of starting up yet); the growth while streaming does not depend on it.
    rows.push({ metric: '5c. (info) ncps RSS growth MiB while streaming (peak - idle)', ncps: fmt.f1(r.peakMiB - r.baselineMiB), other: '', ratio: '', target: 'info', pass: '' });
  }
  return rows;
}

main().catch(async (error) => {
  if (error instanceof UsageError) process.stderr.write(`bench: ${error.message} (see --help)\n`);
  else if (!state.interrupted) log(`failed: ${error.stack ?? error}`);
  await cleanup();
  process.exit(state.interrupted ? 130 : 1);
});
