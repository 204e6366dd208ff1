#!/usr/bin/env node
// Instructions per narinfo hit, counted by valgrind's callgrind: ncps, a bare node HTTP server
// answering the same bytes, and nginx proxy_cache. Rates and CPU seconds on a shared 2-core VM
// move by 10-20 % from run to run (docs/benchmarks.md); an instruction count does not, so this is
// the measure to trim the hot path by, one change at a time. It counts user-space instructions
// only: the kernel's share of a request (accept, read, writev) is left out, and is about the same
// for all three, since each reads one request and writes one response per hit.
//
//   node bench/instructions.mjs [--ncps=FILE] [--seconds=N] [--warm-seconds=N] [--stretches=N]
//                               [--paths=N] [--only=ncps,node,nginx]
//                               [--keep-profiles=DIR]
//
// Needs valgrind (callgrind_control), nginx and wrk. Everything listens on 127.0.0.1 and lives in
// one temp directory, removed at the end.

import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, copyFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateUpstream } from './lib/data.mjs';
import { getNarInfos } from './lib/http.mjs';
import { generateKey } from './lib/nix.mjs';
import { NARINFOS_LUA, wrkSummary } from './lib/wrk.mjs';
import { capture, freePort, killAllSync, ncpsServeArgs, proxyNginxConfig, sleep, start, stop, stopAll, upstreamNginxConfig, startNginx, waitForHttp } from './lib/procs.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function parseArgs(argv) {
  // Under callgrind a server answers some 50 times slower; with 40 paths each memoised narinfo is
  // asked for about as often within its 2 s lifetime as with 1000 paths at full speed
  // (bench/run.mjs), so the share of hits that go to the database is alike.
  const opts = { ncps: path.join(ROOT, 'dist', 'ncps.cjs'), seconds: 15, warmSeconds: 45, stretches: 3, paths: 40, only: ['ncps', 'node', 'nginx'], keepProfiles: undefined };
  for (const arg of argv) {
    const [name, value] = arg.split('=', 2);
    if (name === '--ncps') opts.ncps = path.resolve(value);
    else if (name === '--seconds') opts.seconds = Number(value);
    else if (name === '--warm-seconds') opts.warmSeconds = Number(value);
    else if (name === '--stretches') opts.stretches = Number(value);
    else if (name === '--paths') opts.paths = Number(value);
    else if (name === '--only') opts.only = value.split(',');
    else if (name === '--keep-profiles') opts.keepProfiles = path.resolve(value);
    else throw new Error(`unknown option ${arg}`);
  }
  return opts;
}

const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 19)}]`, ...a);

/** The total instruction count of a callgrind dump. */
function totalOf(file) {
  const text = readFileSync(file, 'utf8');
  const m = /^totals:\s+(\d+)/m.exec(text) ?? /^summary:\s+(\d+)/m.exec(text);
  if (!m) throw new Error(`no totals in ${file}`);
  return Number(m[1]);
}

/**
 * The instructions spent in the event loop's I/O: the inclusive count of `loopFunction`. For node
 * that is libuv's uv__io_poll (reading requests, answering them, and what that calls); left out
 * are timers (periodic work that a server slowed 50 times by callgrind would charge to 50 times
 * fewer hits) and other threads (the optimising compiler, GC helpers). nginx's epoll handler is
 * not an exported symbol, so for nginx it is its whole loop, ngx_process_events_and_timers: it has
 * no other threads, and its timers do next to nothing here.
 */
async function loopInstructionsOf(file, loopFunction) {
  const text = await capture('callgrind_annotate', 'callgrind_annotate', ['--inclusive=yes', '--threshold=100', file], 120_000);
  const pattern = new RegExp(`[:\\s]${loopFunction}[\\s[]`);
  const line = text.split('\n').find((l) => pattern.test(l));
  if (!line) throw new Error(`no ${loopFunction} in ${file}`);
  return Number(line.trim().split(/\s+/)[0].replace(/,/g, ''));
}

/** wrk for `seconds` with the request list of bench/run.mjs; resolves with its request count. */
async function wrk(base, pathsFile, seconds, logFile) {
  const child = start('wrk', 'wrk', ['-t1', '-c16', `-d${seconds}s`, '--timeout', '10s', '-s', NARINFOS_LUA, base, '--', pathsFile], { logFile });
  const exit = await child.exited;
  return wrkSummary(readFileSync(logFile, 'utf8'), exit, base).requests;
}

/**
 * Starts `command args` under callgrind with instrumentation off, warms it up, counts
 * `opts.stretches` stretches of `opts.seconds` of load each, and stops it.
 */
async function countUnderCallgrind(name, tmp, command, args, url, pathsFile, opts, { env, loopFunction = 'uv__io_poll' } = {}) {
  const out = path.join(tmp, `callgrind.${name}`);
  mkdirSync(out, { recursive: true });
  const child = start(name, 'valgrind', ['--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${out}/callgrind.out.%p`, command, ...args], {
    logFile: path.join(tmp, `${name}.log`),
    env: env ?? process.env,
  });
  await waitForHttp(`${url}/nix-cache-info`, child, 180_000);
  // Long enough for the optimising compiler to be done: its work is not a cost per request.
  log(`${name}: up under callgrind, warming up for ${opts.warmSeconds} s`);
  await wrk(url, pathsFile, opts.warmSeconds, path.join(tmp, `${name}-warm.log`));
  await capture('callgrind_control', 'callgrind_control', ['-i', 'on', String(child.pid)], 60_000);
  // Each stretch ends with a dump, which also zeroes the counts: stretches that agree show the
  // count is settled.
  const stretches = [];
  for (let i = 0; i < opts.stretches; i++) {
    const requests = await wrk(url, pathsFile, opts.seconds, path.join(tmp, `${name}-count-${i}.log`));
    await capture('callgrind_control', 'callgrind_control', ['-d', String(child.pid)], 60_000);
    stretches.push({ requests });
  }
  await capture('callgrind_control', 'callgrind_control', ['-i', 'off', String(child.pid)], 60_000);
  await stop(child, 'SIGTERM', 120_000);
  // Dumps are numbered in order (callgrind.out.<pid>.<n>); the file written at exit holds nothing.
  const dumps = readdirSync(out)
    .filter((f) => /\.\d+\.\d+$/.test(f))
    .sort((a, b) => Number(a.split('.').pop()) - Number(b.split('.').pop()))
    .map((f) => path.join(out, f));
  if (dumps.length !== stretches.length) throw new Error(`${name}: expected ${stretches.length} dumps, found ${dumps.length}`);
  // Kept before they are read, so that a dump that cannot be read can still be looked at.
  if (opts.keepProfiles) {
    mkdirSync(opts.keepProfiles, { recursive: true });
    for (const f of dumps) copyFileSync(f, path.join(opts.keepProfiles, `${name}.${path.basename(f)}`));
  }
  for (const [i, f] of dumps.entries()) {
    stretches[i].perRequest = (await loopInstructionsOf(f, loopFunction)) / stretches[i].requests;
    stretches[i].allPerRequest = totalOf(f) / stretches[i].requests;
  }
  const perRequest = Math.min(...stretches.map((s) => s.perRequest));
  const requests = stretches.reduce((a, s) => a + s.requests, 0);
  log(`${name}: ${stretches.map((x) => `${Math.round(x.perRequest)} in the loop, ${Math.round(x.allPerRequest)} in all (${x.requests} hits)`).join('; ')} instructions per hit`);
  return { requests, perRequest, stretches };
}

/** A node HTTP server and nothing else, answering a narinfo-sized body with ncps's headers. */
const BARE_NODE = `
const http = require('node:http');
const body = Buffer.from(require('node:fs').readFileSync(process.argv[2]));
const headers = { 'content-type': 'text/x-nix-narinfo', 'cache-control': 'public, max-age=300', 'content-length': body.length, 'x-cache': 'HIT' };
http.createServer((req, res) => { res.writeHead(200, headers); res.end(body); }).listen(Number(process.argv[3]), '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
`;

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'ncps-instructions-'));
  const cleanup = async () => {
    await stopAll();
    rmSync(tmp, { recursive: true, force: true });
  };
  process.on('SIGINT', () => {
    killAllSync();
    rmSync(tmp, { recursive: true, force: true });
    process.exit(130);
  });
  try {
    const dirs = Object.fromEntries(['data', 'upstream', 'proxy', 'ncps'].map((d) => [d, path.join(tmp, d)]));
    for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
    const key = generateKey('127.0.0.1-1');
    const data = await generateUpstream(dirs.data, key, { count: opts.paths, smallSize: 4096, large: [] });
    const pathsFile = path.join(tmp, 'paths.txt');
    writeFileSync(pathsFile, `${data.small.map((e) => e.narInfoPath).join('\n')}\n`);
    const upPort = await freePort();
    const upstreamUrl = `http://127.0.0.1:${upPort}`;
    const upstream = startNginx('upstream', dirs.upstream, upstreamNginxConfig(dirs.upstream, upPort, dirs.data));
    await waitForHttp(`${upstreamUrl}/nix-cache-info`, upstream);
    const results = {};

    if (opts.only.includes('ncps')) {
      const port = await freePort();
      const url = `http://127.0.0.1:${port}`;
      const args = ncpsServeArgs(opts.ncps, { port, storage: dirs.ncps, upstreamUrl, publicKey: key.publicText });
      const env = { ...process.env, NODE_ENV: 'production' };
      // Filled at full speed first (the misses and NAR prefetches are not what is counted).
      const first = start('ncps', process.execPath, args, { logFile: path.join(tmp, 'ncps-fill.log'), env });
      await waitForHttp(`${url}/nix-cache-info`, first);
      await getNarInfos(url, data.small, 'ncps');
      await sleep(3000);
      await stop(first, 'SIGTERM', 40_000);
      results.ncps = await countUnderCallgrind('ncps', tmp, process.execPath, args, url, pathsFile, opts, { env });
    }
    if (opts.only.includes('node')) {
      const port = await freePort();
      const script = path.join(tmp, 'bare.cjs');
      writeFileSync(script, BARE_NODE);
      const sample = path.join(dirs.data, `${data.small[0].hash}.narinfo`);
      // ncps adds its own signature; the body is about that much longer.
      writeFileSync(path.join(tmp, 'body'), `${readFileSync(sample, 'utf8')}Sig: bench:${'x'.repeat(88)}\n`);
      results.node = await countUnderCallgrind('node', tmp, process.execPath, [script, path.join(tmp, 'body'), String(port)], `http://127.0.0.1:${port}`, pathsFile, opts);
    }
    if (opts.only.includes('nginx')) {
      const port = await freePort();
      // One process (no master), so that callgrind sees the one that answers.
      const conf = proxyNginxConfig(dirs.proxy, port, upPort, 1);
      writeFileSync(conf, readFileSync(conf, 'utf8').replace('master_process on;', 'master_process off;'));
      const url = `http://127.0.0.1:${port}`;
      const filler = startNginx('nginx-fill', dirs.proxy, conf);
      await waitForHttp(`${url}/nix-cache-info`, filler);
      await getNarInfos(url, data.small, 'nginx');
      await stop(filler, 'SIGTERM', 20_000);
      results.nginx = await countUnderCallgrind('nginx', tmp, 'nginx', ['-p', dirs.proxy, '-e', path.join(dirs.proxy, 'error.log'), '-c', conf], url, pathsFile, opts, { loopFunction: 'ngx_process_events_and_timers' });
    }

    const rows = Object.entries(results).map(([k, r]) => `${k.padEnd(6)} ${String(Math.round(r.perRequest)).padStart(9)} instructions per hit  (least of ${r.stretches.length} stretches: ${r.stretches.map((x) => Math.round(x.perRequest)).join(', ')})`);
    console.log(rows.join('\n'));
    if (results.ncps && results.node) console.log(`ncps - bare node: ${Math.round(results.ncps.perRequest - results.node.perRequest)} instructions per hit`);
    if (results.ncps && results.nginx) console.log(`ncps / nginx: ${(results.ncps.perRequest / results.nginx.perRequest).toFixed(2)}`);
    const outDir = path.join(ROOT, 'bench', 'results');
    mkdirSync(outDir, { recursive: true });
    const file = path.join(outDir, `instructions-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, JSON.stringify({ ...opts, node: process.version, results }, null, 2));
    log(`results in ${path.relative(ROOT, file)}`);
  } finally {
    await cleanup();
  }
}

main().catch((error) => {
  console.error(error);
  killAllSync();
  process.exit(1);
});
