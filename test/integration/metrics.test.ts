// Metrics that tell the truth: each response counts its own bytes (also when a client pipelines
// requests on one connection), the first read of a NAR that the background prefetch stored is a
// miss (the cache saved nothing yet), the Go ncps's metric names and labels are there, and every
// narinfo and NAR answer says HIT or MISS (X-Cache) and is logged with the client's address.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { encodeNix32, generateSecretKey, narInfoFingerprint, parseNarInfo, signFingerprint } from '../../src/nix';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir, sleep } from '../helpers/proc';
import { startStaticCache, type StaticCache } from '../helpers/static-cache';

const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz';
const key = generateSecretKey('metrics-upstream-1');

interface Item {
  hash: string;
  narName: string;
  url: string;
}

function addPath(dir: string, nar: Buffer): Item {
  const hash = Array.from(randomBytes(32), (b) => NIX32[b % 32]).join('');
  const digest = encodeNix32(createHash('sha256').update(nar).digest());
  mkdirSync(path.join(dir, 'nar'), { recursive: true });
  writeFileSync(path.join(dir, 'nar', `${digest}.nar`), nar);
  const text = `StorePath: /nix/store/${hash}-metrics\nURL: nar/${digest}.nar\nCompression: none\nFileHash: sha256:${digest}\nFileSize: ${nar.length}\nNarHash: sha256:${digest}\nNarSize: ${nar.length}\nReferences: \n`;
  writeFileSync(path.join(dir, `${hash}.narinfo`), `${text}Sig: ${signFingerprint(key, narInfoFingerprint(parseNarInfo(text)))}\n`);
  return { hash, narName: `${digest}.nar`, url: `/nar/${digest}.nar` };
}

/** Sums every sample of `name` whose labels include `labels`; 0 when there is none. */
function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const pair of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) have.set(pair[1]!, pair[2]!);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) total += Number(m[4]);
  }
  return total;
}

interface LogLine {
  msg: string;
  url?: string;
  bytes?: number;
  cache?: string;
  client?: string;
  status?: number;
}

function requestLines(ncps: NcpsProcess): LogLine[] {
  return ncps
    .logs()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine)
    .filter((l) => l.msg === 'request');
}

/** Waits for `count` request log lines for `url` (they are written once each response ended). */
async function loggedRequests(ncps: NcpsProcess, url: string, count: number): Promise<LogLine[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const lines = requestLines(ncps).filter((l) => l.url === url);
    if (lines.length >= count) return lines;
    if (Date.now() > deadline) {
      const dropped = /^ncps_log_lines_dropped_total .*$/m.exec((await request(ncps.url, '/metrics')).text)?.[0];
      assert.fail(`${count} log lines for ${url} expected, got ${lines.length} (${dropped}):\n${ncps.logs()}`);
    }
    await sleep(50);
  }
}

function storedNarPath(dataDir: string, name: string): string {
  return path.join(dataDir, 'store', 'nar', name.slice(0, 1), name.slice(0, 2), name);
}

async function waitForFile(file: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!existsSync(file)) {
    if (Date.now() > deadline) assert.fail(`${file} never appeared`);
    await sleep(50);
  }
}

/** Sends every request in one write on one connection and returns each raw response (head and body). */
async function pipelined(url: string, paths: string[]): Promise<Buffer[]> {
  const { hostname, port } = new URL(url);
  const socket = net.connect(Number(port), hostname);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.write(paths.map((p) => `GET ${p} HTTP/1.1\r\nHost: ${hostname}\r\n\r\n`).join(''));
  let buffer = Buffer.alloc(0);
  const responses: Buffer[] = [];
  const timer = setTimeout(() => socket.destroy(new Error('pipelined responses did not arrive in time')), 30_000);
  try {
    for await (const chunk of socket) {
      buffer = Buffer.concat([buffer, chunk as Buffer]);
      for (;;) {
        const end = buffer.indexOf('\r\n\r\n');
        if (end === -1) break;
        const head = buffer.subarray(0, end).toString('latin1');
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        const total = end + 4 + length;
        if (buffer.length < total) break;
        responses.push(buffer.subarray(0, total));
        buffer = buffer.subarray(total);
      }
      if (responses.length === paths.length) break;
    }
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
  return responses;
}

describe('metrics, X-Cache and the access log', { timeout: 180_000 }, () => {
  let dir: string;
  let upstream: StaticCache;
  let ncps: NcpsProcess;
  const scrape = async () => (await request(ncps.url, '/metrics')).text;

  before(async () => {
    dir = await makeTempDir('metrics-upstream');
    writeFileSync(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\nPriority: 40\n');
    upstream = await startStaticCache(dir);
    ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [key.publicKey.text], extraArgs: ['--prometheus-enabled'] });
  });

  after(async () => {
    await ncps?.stop();
    await upstream?.stop();
    await cleanupTempDirs();
  });

  it('exposes the Go ncps metric names with its labels', async () => {
    let text = await scrape();
    const deadline = Date.now() + 10_000;
    // Until the first health check is done (its duration is there from then on).
    while (!/^ncps_upstream_health_check_duration_seconds\{/m.test(text) && Date.now() < deadline) {
      await sleep(100);
      text = await scrape();
    }
    assert.equal(metricValue(text, 'ncps_upstream_count_total'), 1);
    assert.equal(metricValue(text, 'ncps_upstream_count_healthy'), 1);
    assert.equal(metricValue(text, 'ncps_upstream_healthy', { upstream: `${upstream.url}/` }), 1);
    assert.match(text, /^ncps_upstream_health_check_duration_seconds\{upstream="http:\/\/127\.0\.0\.1:\d+\/"\} [\d.e-]+$/m);
    for (const name of [
      'ncps_lru_narinfos_evicted_total',
      'ncps_lru_nar_files_evicted_total',
      'ncps_lru_chunks_evicted_total',
      'ncps_lru_cleanup_duration_seconds',
      'ncps_lock_hold_duration_seconds',
      'ncps_background_migration_duration_seconds',
      'ncps_download_coordination_fallback_total',
      'ncps_upstream_count_total',
      'ncps_upstream_count_healthy',
    ]) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), `${name} is missing`);
    }
    // Primed at zero with the Go ncps's label values.
    assert.match(text, /^ncps_narinfo_served_total\{result="hit",status="success",source="database"\} 0$/m);
    assert.match(text, /^ncps_narinfo_served_total\{result="miss",status="error"\} 0$/m);
    assert.match(text, /^ncps_nar_served_total\{result="hit",status="success"\} 0$/m);
    assert.match(text, /^ncps_lock_acquisitions_total\{type="exclusive",mode="local",result="success",kind="download"\} 0$/m);
    assert.match(text, /^ncps_background_migration_objects_total\{migration_type="narinfo-to-db",operation="migrate",result="success"\} 0$/m);
  });

  it('counts narinfo hits and misses with the Go labels and says so in X-Cache', async () => {
    const item = addPath(dir, randomBytes(2_000));
    const absent = Array.from(randomBytes(32), (b) => NIX32[b % 32]).join('');
    const before = await scrape();
    const miss = await request(ncps.url, `/${item.hash}.narinfo`);
    assert.equal(miss.status, 200);
    assert.equal(miss.headers['x-cache'], 'MISS');
    const hit = await request(ncps.url, `/${item.hash}.narinfo`);
    assert.equal(hit.headers['x-cache'], 'HIT');
    const notThere = await request(ncps.url, `/${absent}.narinfo`);
    assert.equal(notThere.status, 404);
    assert.equal(notThere.headers['x-cache'], 'MISS');
    await loggedRequests(ncps, `/${absent}.narinfo`, 1);
    const after = await scrape();
    const delta = (labels: Record<string, string>) => metricValue(after, 'ncps_narinfo_served_total', labels) - metricValue(before, 'ncps_narinfo_served_total', labels);
    assert.equal(delta({ result: 'miss', status: 'success', upstream_hostname: '127.0.0.1' }), 1);
    assert.equal(delta({ result: 'hit', status: 'success', source: 'database' }), 1);
    assert.equal(delta({ result: 'miss', status: 'error' }), 1);
    const [line] = await loggedRequests(ncps, `/${item.hash}.narinfo`, 2);
    assert.equal(line!.client, '127.0.0.1');
    assert.equal(line!.cache, 'miss');
  });

  it('counts the first read of a prefetched NAR as a miss, from upstream, and the next one as a hit', async () => {
    const nar = randomBytes(300_000);
    const item = addPath(dir, nar);
    assert.equal((await request(ncps.url, `/${item.hash}.narinfo`)).status, 200);
    // The narinfo miss prefetched the NAR: wait until it is stored, so the read below comes from storage.
    await waitForFile(storedNarPath(ncps.dataDir, item.narName));
    const before = await scrape();
    const first = await request(ncps.url, item.url);
    assert.equal(first.status, 200);
    assert.ok(first.body.equals(nar));
    assert.equal(first.headers['x-cache'], 'MISS', 'these bytes came from upstream for this client');
    const second = await request(ncps.url, item.url);
    assert.equal(second.headers['x-cache'], 'HIT');
    const [firstLine, secondLine] = await loggedRequests(ncps, item.url, 2);
    assert.equal(firstLine!.cache, 'miss');
    assert.equal(secondLine!.cache, 'hit');
    const after = await scrape();
    const delta = (name: string, labels: Record<string, string>) => metricValue(after, name, labels) - metricValue(before, name, labels);
    assert.equal(delta('ncps_nar_served_total', { result: 'miss', status: 'success' }), 1);
    assert.equal(delta('ncps_nar_served_total', { result: 'hit', status: 'success' }), 1);
    assert.equal(delta('ncps_bytes_served_total', { source: 'upstream' }), firstLine!.bytes);
    assert.equal(delta('ncps_bytes_served_total', { source: 'cache' }), secondLine!.bytes);
    assert.ok(firstLine!.bytes! > nar.length && secondLine!.bytes! > nar.length, 'headers included');
  });

  it('logs and counts responses whose client hangs up as soon as it has the body', async () => {
    const item = addPath(dir, randomBytes(1_000));
    assert.equal((await request(ncps.url, `/${item.hash}.narinfo`)).status, 200);
    await waitForFile(storedNarPath(ncps.dataDir, item.narName));
    assert.equal((await request(ncps.url, item.url)).status, 200); // the prefetch's first read
    const before = await scrape();
    // Each request on its own connection, closed by the client once the small body is in: the
    // server's last write may not have completed by then.
    for (let i = 0; i < 20; i++) assert.equal((await request(ncps.url, item.url, { headers: { connection: 'close' } })).status, 200);
    await loggedRequests(ncps, item.url, 21);
    const after = await scrape();
    const hits = (text: string) => metricValue(text, 'ncps_nar_served_total', { result: 'hit', status: 'success' });
    assert.equal(hits(after) - hits(before), 20);
  });

  it('counts each pipelined response its own bytes', async () => {
    const big = addPath(dir, randomBytes(6 * 1024 * 1024));
    const small = addPath(dir, randomBytes(1_000));
    for (const item of [big, small]) {
      assert.equal((await request(ncps.url, `/${item.hash}.narinfo`)).status, 200);
      await waitForFile(storedNarPath(ncps.dataDir, item.narName));
      assert.equal((await request(ncps.url, item.url)).status, 200); // the prefetch's first read
    }
    const before = await scrape();
    const responses = await pipelined(ncps.url, [big.url, small.url, big.url]);
    assert.equal(responses.length, 3);
    const bigLines = await loggedRequests(ncps, big.url, 3);
    const smallLines = await loggedRequests(ncps, small.url, 2);
    assert.equal(bigLines.at(-2)!.bytes, responses[0]!.length, 'first response');
    assert.equal(smallLines.at(-1)!.bytes, responses[1]!.length, 'second response, written after the first');
    assert.equal(bigLines.at(-1)!.bytes, responses[2]!.length, 'third response');
    const after = await scrape();
    const served = metricValue(after, 'ncps_bytes_served_total', { source: 'cache' }) - metricValue(before, 'ncps_bytes_served_total', { source: 'cache' });
    assert.equal(served, responses[0]!.length + responses[1]!.length + responses[2]!.length);
  });
});
