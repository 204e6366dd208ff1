// Starting and stopping the processes under test (upstream nginx, ncps, nginx proxy_cache, wrk).
// Every child is tracked so that a failure or Ctrl-C still stops all of them.

import { spawn, spawnSync } from 'node:child_process';
import { openSync, closeSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { get } from './http.mjs';

const children = new Set();

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Spawns a tracked child whose stdout/stderr go to `logFile`. */
export function start(name, command, args, { logFile, env, cwd } = {}) {
  const fd = logFile ? openSync(logFile, 'a') : 'ignore';
  const child = spawn(command, args, { stdio: ['ignore', fd, fd], env: env ?? process.env, cwd });
  if (typeof fd === 'number') closeSync(fd);
  child.benchName = name;
  child.logFile = logFile;
  child.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      children.delete(child);
      child.exitInfo = { code, signal };
      resolve(child.exitInfo);
    });
    child.once('error', (error) => {
      children.delete(child);
      child.exitInfo = { code: null, signal: null, error };
      resolve(child.exitInfo);
    });
  });
  children.add(child);
  return child;
}

/** Runs a tracked command to completion (SIGKILL after `timeoutMs`); resolves with its stdout. */
export async function capture(name, command, args, timeoutMs) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.benchName = name;
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code, signal] = await new Promise((resolve) => {
    child.once('error', (error) => resolve([null, error.message]));
    child.once('close', (c, s) => resolve([c, s]));
  });
  clearTimeout(timer);
  children.delete(child);
  child.exitInfo = { code, signal };
  if (code !== 0) throw new Error(`${name} failed (exit ${code}, ${signal ?? 'no signal'}): ${stderr.trim().slice(-300)}`);
  return stdout;
}

/** Sends `signal`, waits up to `timeoutMs`, then SIGKILLs. */
export async function stop(child, signal = 'SIGTERM', timeoutMs = 15_000) {
  if (!child || child.exitInfo) return child?.exitInfo;
  child.kill(signal);
  let timer;
  const timedOut = new Promise((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  const result = await Promise.race([child.exited, timedOut]);
  clearTimeout(timer);
  if (result === 'timeout') {
    child.kill('SIGKILL');
    await child.exited;
  }
  return child.exitInfo;
}

export async function stopAll() {
  await Promise.all([...children].map((child) => stop(child)));
}

/** Last resort from a synchronous 'exit' handler: nothing may outlive the benchmark. */
export function killAllSync() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** `ncps serve` as both benchmarks run it: local storage, one upstream, warnings only in the log. */
export function ncpsServeArgs(bundle, { port, storage, upstreamUrl, publicKey }) {
  return [
    bundle,
    'serve',
    `--server-addr=127.0.0.1:${port}`,
    `--cache-storage-local=${storage}`,
    '--cache-hostname=bench',
    `--cache-upstream-url=${upstreamUrl}`,
    `--cache-upstream-public-key=${publicKey}`,
    '--log-level=warn',
  ];
}

/** Polls `url` until it answers 200 (bounded), failing early if `child` exits. */
export async function waitForHttp(url, child, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (child?.exitInfo) throw new Error(`${child.benchName} exited early (${JSON.stringify(child.exitInfo)})${logTail(child)}`);
    try {
      const res = await get(url, { timeoutMs: 2_000 });
      if (res.status === 200) return;
      last = `HTTP ${res.status}`;
    } catch (error) {
      last = error.message;
    }
    await sleep(100);
  }
  throw new Error(`${url} did not come up within ${timeoutMs} ms (${last})`);
}

/**
 * CPU time (user + system, ms) used so far by `pid` and, recursively, its live children (nginx's
 * workers). Less sensitive to other load on the machine than wall-clock rates.
 */
export function cpuMs(pid) {
  const TICK_MS = 10; // USER_HZ is 100 on Linux
  let total = 0;
  for (const p of processTree(pid)) {
    let stat;
    try {
      stat = readFileSync(`/proc/${p}/stat`, 'utf8');
    } catch {
      continue; // exited
    }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    total += (Number(f[11]) + Number(f[12])) * TICK_MS;
  }
  return total;
}

/** The process ids of `pid` and its live descendants (nginx's workers), up to three levels. */
export function processTree(pid) {
  const out = [];
  const visit = (p, depth) => {
    out.push(p);
    if (depth > 2) return;
    let kids = '';
    try {
      kids = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8');
    } catch {
      return;
    }
    for (const k of kids.split(' ').filter(Boolean)) visit(Number(k), depth + 1);
  };
  visit(pid, 0);
  return out;
}

/**
 * Restricts every thread of `pid` and its descendants to the CPUs in `cpus` (taskset's list
 * form, e.g. "0" or "1-3"). Threads started later inherit the set. Returns false when taskset is
 * missing or refused.
 */
export function pinTree(pid, cpus) {
  let ok = true;
  for (const p of processTree(pid)) {
    const r = spawnSync('taskset', ['-apc', cpus, String(p)], { stdio: 'ignore', timeout: 5_000 });
    if (r.status !== 0) ok = false;
  }
  return ok;
}

/** Parses taskset's list form ("0", "1-3", "0,2") into CPU numbers. */
export function cpuList(spec) {
  const cpus = [];
  for (const part of spec.split(',').filter(Boolean)) {
    const [a, b] = part.split('-').map(Number);
    for (let c = a; c <= (b ?? a); c++) cpus.push(c);
  }
  return cpus;
}

function logTail(child) {
  try {
    const text = readFileSync(child.logFile, 'utf8').trim();
    return text ? `; its output ends with:\n${text.slice(-1500)}` : '';
  } catch {
    return '';
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const nginxCommon = (prefix, workers) => `
daemon off;
master_process on;
worker_processes ${workers};
${process.getuid?.() === 0 ? 'user root;' : ''}
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 4096; }
`;

const nginxHttpCommon = (prefix) => `
  client_body_temp_path ${prefix}/tmp/body;
  proxy_temp_path ${prefix}/tmp/proxy;
  fastcgi_temp_path ${prefix}/tmp/fastcgi;
  uwsgi_temp_path ${prefix}/tmp/uwsgi;
  scgi_temp_path ${prefix}/tmp/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  sendfile on;
  tcp_nopush on;
  types { text/x-nix-narinfo narinfo; application/x-nix-nar nar; text/plain txt; }
  default_type application/octet-stream;
`;

/** A static file server: the upstream binary cache. Every request is logged (that is how fetches are counted). */
export function upstreamNginxConfig(prefix, port, root, workers = 1) {
  mkdirSync(path.join(prefix, 'tmp'), { recursive: true });
  const conf = `${nginxCommon(prefix, workers)}
http {
${nginxHttpCommon(prefix)}
  log_format bench '$msec $request_method $uri $status $body_bytes_sent';
  access_log ${prefix}/access.log bench;
  server {
    listen 127.0.0.1:${port};
    root ${root};
    location / { try_files $uri =404; }
  }
}
`;
  const file = path.join(prefix, 'nginx.conf');
  writeFileSync(file, conf);
  return file;
}

/** The classic Nix cache in front of an upstream: proxy_cache with cache lock. */
export function proxyNginxConfig(prefix, port, upstreamPort, workers = 1) {
  mkdirSync(path.join(prefix, 'tmp'), { recursive: true });
  const conf = `${nginxCommon(prefix, workers)}
http {
${nginxHttpCommon(prefix)}
  access_log off;
  proxy_cache_path ${prefix}/cache levels=1:2 keys_zone=nix:16m max_size=20g inactive=1d use_temp_path=off;
  upstream nixcache {
    server 127.0.0.1:${upstreamPort};
    keepalive 16;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://nixcache;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache nix;
      proxy_cache_valid 200 1d;
      proxy_cache_lock on;
      proxy_buffering on;
      add_header X-Cache-Status $upstream_cache_status always;
    }
  }
}
`;
  const file = path.join(prefix, 'nginx.conf');
  writeFileSync(file, conf);
  return file;
}

export function startNginx(name, prefix, confFile) {
  return start(name, 'nginx', ['-p', prefix, '-e', path.join(prefix, 'error.log'), '-c', confFile], {
    logFile: path.join(prefix, 'stdout.log'),
  });
}
