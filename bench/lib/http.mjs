// A measuring HTTP/1.1 client: bodies are counted and discarded, never buffered, and every
// request has a deadline.

import http from 'node:http';
import { performance } from 'node:perf_hooks';

export function agent(maxSockets = 1) {
  return new http.Agent({ keepAlive: true, maxSockets });
}

/**
 * GET `url`. Resolves with { status, headers, bytes, t0, tHeaders, tFirstByte, tEnd } (ms from
 * performance.now()); tFirstByte is undefined for an empty body. Rejects on network errors or
 * when the whole exchange takes longer than `timeoutMs`.
 */
export function get(url, { agent: httpAgent, timeoutMs = 120_000 } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let settled = false;
    const fail = (error) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      req.destroy();
      reject(error);
    };
    const deadline = setTimeout(() => fail(new Error(`GET ${url}: no complete answer within ${timeoutMs} ms`)), timeoutMs);
    const req = http.get(url, { agent: httpAgent ?? false }, (res) => {
      const tHeaders = performance.now();
      let bytes = 0;
      let tFirstByte;
      res.on('data', (chunk) => {
        if (tFirstByte === undefined) tFirstByte = performance.now();
        bytes += chunk.length;
      });
      res.once('end', () => {
        if (settled) return;
        settled = true;
        clearTimeout(deadline);
        resolve({ status: res.statusCode, headers: res.headers, bytes, t0, tHeaders, tFirstByte, tEnd: performance.now() });
      });
      res.once('error', fail);
      res.once('aborted', () => fail(new Error(`GET ${url}: response aborted after ${bytes} bytes`)));
    });
    req.once('error', fail);
  });
}

/** Runs `fn` over `items` with at most `limit` at a time; rejects on the first failure. */
export async function mapLimit(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/**
 * GETs the narinfo of every entry (bench/lib/data.mjs) from `base`, 8 at a time, each of which
 * must answer 200: how both caches are filled before their hits are measured. `what` names the
 * cache in an error.
 */
export async function getNarInfos(base, entries, what) {
  const a = agent(8);
  try {
    await mapLimit(entries, 8, async (e) => {
      const res = await get(base + e.narInfoPath, { agent: a, timeoutMs: 30_000 });
      if (res.status !== 200) throw new Error(`${what} ${e.narInfoPath}: HTTP ${res.status}`);
    });
  } finally {
    a.destroy();
  }
}

/**
 * Fetches `urls` in order with curl (libcurl is what Nix downloads with), on one connection,
 * discarding bodies. Resolves with one { status, bytes, ttfbMs, totalMs, connects } per URL, where
 * ttfbMs is curl's time_starttransfer (first response byte) and both are from that transfer's start.
 * The array also carries `clientCpuMs`: the CPU time curl itself used (user + system), read from
 * the shell that waited for it. `cpus` (a taskset CPU list) confines curl to those CPUs.
 */
export async function curl(urls, { timeoutMs = 600_000, capture, cpus }) {
  const args = ['--silent', '--show-error', '--max-time', String(Math.ceil(timeoutMs / 1000)), '--write-out', '%{json}\\n'];
  for (const url of urls) args.push(url, '--output', '/dev/null');
  const script = 'curl "$@"; rc=$?; echo "CLIENTCPU $(cut -d" " -f16,17 /proc/$$/stat)"; exit $rc';
  const shell = ['-c', script, 'sh', ...args];
  const out = cpus ? await capture('curl', 'taskset', ['-c', cpus, 'sh', ...shell], timeoutMs + 5_000) : await capture('curl', 'sh', shell, timeoutMs + 5_000);
  const lines = out.split('\n').filter((l) => l.startsWith('{'));
  if (lines.length !== urls.length) throw new Error(`curl reported ${lines.length} transfers for ${urls.length} URLs`);
  const results = lines.map((line) => {
    const j = JSON.parse(line);
    return {
      url: j.url_effective,
      status: j.response_code ?? j.http_code,
      bytes: j.size_download,
      ttfbMs: j.time_starttransfer * 1000,
      totalMs: j.time_total * 1000,
      connects: j.num_connects,
    };
  });
  const ticks = /^CLIENTCPU (\d+) (\d+)$/m.exec(out);
  results.clientCpuMs = ticks ? (Number(ticks[1]) + Number(ticks[2])) * 10 : NaN;
  return results;
}
