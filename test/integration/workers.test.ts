// Several worker processes on one port (--server-workers): real processes of the bundle. Clients
// spread over the workers still cause one upstream download per NAR; /metrics adds up every
// worker; the LRU runs in one worker only; a worker that crashes is restarted; SIGTERM to the
// supervisor drains every worker (a download in flight completes) and leaves no process behind.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { encodeNix32, generateSecretKey, narInfoFingerprint, parseNarInfo, signFingerprint } from '../../src/nix';
import { downloadHashed, request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir, sleep } from '../helpers/proc';
import { startStaticCache, type StaticCache } from '../helpers/static-cache';

const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz';
const key = generateSecretKey('workers-upstream-1');
const MiB = 1024 * 1024;

interface Published {
  hash: string;
  narPath: string;
  sha256: string;
  size: number;
}

function publish(dir: string, size: number): Published {
  const nar = randomBytes(size);
  const hash = Array.from(randomBytes(32), (b) => NIX32[b % 32]).join('');
  const digest = createHash('sha256').update(nar).digest();
  const nix32 = encodeNix32(digest);
  mkdirSync(path.join(dir, 'nar'), { recursive: true });
  writeFileSync(path.join(dir, 'nar', `${nix32}.nar`), nar);
  const text = `StorePath: /nix/store/${hash}-workers\nURL: nar/${nix32}.nar\nCompression: none\nFileHash: sha256:${nix32}\nFileSize: ${size}\nNarHash: sha256:${nix32}\nNarSize: ${size}\nReferences: \n`;
  writeFileSync(path.join(dir, `${hash}.narinfo`), `${text}Sig: ${signFingerprint(key, narInfoFingerprint(parseNarInfo(text)))}\n`);
  return { hash, narPath: `/nar/${nix32}.nar`, sha256: digest.toString('hex'), size };
}

/** The parsed JSON log lines of `ncps` so far. */
function logLines(ncps: NcpsProcess): Array<Record<string, unknown>> {
  return ncps
    .logs()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function waitForLog(ncps: NcpsProcess, match: (line: Record<string, unknown>) => boolean, what: string, timeoutMs = 60_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = logLines(ncps).find(match);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no log line ${what} within ${timeoutMs} ms:\n${ncps.logs().slice(-3000)}`);
    await sleep(50);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Starts a GET and resolves `firstBytes` once some of the body arrived; `done` with its hash. */
function startDownload(url: string): { firstBytes: Promise<void>; done: Promise<{ status: number; bytes: number; sha256: string }> } {
  let markFirst!: () => void;
  const firstBytes = new Promise<void>((resolve) => (markFirst = resolve));
  const done = new Promise<{ status: number; bytes: number; sha256: string }>((resolve, reject) => {
    http
      .get(url, { agent: false }, (res) => {
        const hash = createHash('sha256');
        let bytes = 0;
        res.on('data', (chunk: Buffer) => {
          hash.update(chunk);
          bytes += chunk.length;
          markFirst();
        });
        res.on('end', () => (res.complete ? resolve({ status: res.statusCode ?? 0, bytes, sha256: hash.digest('hex') }) : reject(new Error(`cut after ${bytes} bytes`))));
        res.on('error', reject);
      })
      .on('error', reject);
  });
  return { firstBytes, done };
}

describe('several workers on one port', { timeout: 240_000 }, () => {
  let dir: string;
  let upstream: StaticCache;
  let ncps: NcpsProcess;
  let pids: number[];

  before(async () => {
    dir = await makeTempDir('workers-upstream');
    writeFileSync(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
    // Slow enough that every client below joins the download while it is in flight.
    upstream = await startStaticCache(dir, { bytesPerSecond: 4 * MiB });
    ncps = await startNcps({
      upstreams: [upstream.url],
      publicKeys: [key.publicKey.text],
      // A worker that waited for another's download lock would soon stream from upstream itself:
      // one upstream GET below means the workers followed the one download instead.
      extraArgs: ['--server-workers=3', '--prometheus-enabled', '--cache-lock-download-wait=100ms'],
      readyTimeoutMs: 60_000,
    });
    const serving = await waitForLog(ncps, (l) => typeof l.msg === 'string' && l.msg.startsWith('ncps is serving with 3 workers'), 'ncps is serving with 3 workers');
    pids = serving.pids as number[];
    assert.equal(pids.length, 3);
  });

  after(async () => {
    await ncps?.stop();
    await upstream?.stop();
    await cleanupTempDirs();
  });

  it('fetches a NAR once from upstream for clients spread over every worker, and counts them all', async () => {
    const item = publish(dir, 6 * MiB);
    const clients = 24;
    // Each client asks for the narinfo, then the NAR, on a connection of its own (connections go
    // to the workers in turn), as Nix does.
    const results = await Promise.all(
      Array.from({ length: clients }, async () => {
        const narInfo = await request(ncps.url, `/${item.hash}.narinfo`);
        assert.equal(narInfo.status, 200, narInfo.text);
        return downloadHashed(ncps.url, item.narPath, { timeoutMs: 120_000 });
      }),
    );
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.equal(r.bytes, item.size);
      assert.equal(r.sha256, item.sha256);
    }
    assert.equal(upstream.count('GET', item.narPath), 1, 'one upstream download for all workers');
    assert.equal(upstream.count('GET', `/${item.hash}.narinfo`), 1, 'one upstream narinfo fetch for all workers');
    const servedBy = new Set(logLines(ncps).filter((l) => l.msg === 'request' && l.url === item.narPath).map((l) => l.worker));
    assert.ok(servedBy.size >= 2, `clients were served by workers ${[...servedBy].join(', ')}`);

    // Every worker's requests are in the figures, whichever worker answers the scrape.
    for (let scrape = 0; scrape < 3; scrape++) {
      const text = (await request(ncps.url, '/metrics')).text;
      const served = text
        .split('\n')
        .filter((l) => l.startsWith('ncps_nar_served_total{') && l.includes('status="success"'))
        .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
      assert.equal(served, clients, `scrape ${scrape}: NARs served by all workers`);
      assert.match(text, /^ncps_upstream_count_total 1$/m, 'an instance gauge is not added up over workers');
    }
  });

  it('restarts a worker that crashes, and keeps serving meanwhile', async () => {
    const victim = pids[1]!;
    process.kill(victim, 'SIGKILL');
    await waitForLog(ncps, (l) => l.msg === 'worker exited; restarting it' && l.pid === victim, 'about the crash');
    const restarted = await waitForLog(ncps, (l) => l.msg === 'worker restarted and serving', 'about the restart');
    assert.ok(typeof restarted.pid === 'number' && restarted.pid !== victim && alive(restarted.pid));
    pids = [...pids.filter((p) => p !== victim), restarted.pid];
    const item = publish(dir, 64 * 1024);
    for (let i = 0; i < 6; i++) {
      const narInfo = await request(ncps.url, `/${item.hash}.narinfo`);
      assert.equal(narInfo.status, 200);
    }
  });

  it('drains every worker on SIGTERM: a download in flight completes, then nothing is left running', async () => {
    const item = publish(dir, 4 * MiB);
    assert.equal((await request(ncps.url, `/${item.hash}.narinfo`)).status, 200);
    const download = startDownload(`${ncps.url}${item.narPath}`);
    await download.firstBytes;
    const code = await ncps.stop('SIGTERM');
    const result = await download.done;
    assert.equal(result.status, 200);
    assert.equal(result.sha256, item.sha256, 'the whole NAR arrived');
    assert.equal(code, 0);
    for (const pid of pids) assert.equal(alive(pid), false, `worker ${pid} is gone`);
    assert.ok(logLines(ncps).some((l) => l.msg === 'stopped' && l.worker === undefined), 'the supervisor stopped last');
  });
});

describe('the LRU clean-up with several workers', { timeout: 180_000 }, () => {
  let dir: string;
  let upstream: StaticCache;
  let ncps: NcpsProcess;

  before(async () => {
    dir = await makeTempDir('workers-lru-upstream');
    writeFileSync(path.join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
    upstream = await startStaticCache(dir);
    ncps = await startNcps({
      upstreams: [upstream.url],
      publicKeys: [key.publicKey.text],
      extraArgs: ['--server-workers=3', '--cache-max-size=1M', '--cache-lru-schedule=@every 1s'],
      readyTimeoutMs: 60_000,
    });
    await waitForLog(ncps, (l) => typeof l.msg === 'string' && l.msg.startsWith('ncps is serving with 3 workers'), 'ncps is serving');
  });

  after(async () => {
    await ncps?.stop();
    await upstream?.stop();
    await cleanupTempDirs();
  });

  it('runs in one worker only', async () => {
    for (let i = 0; i < 3; i++) {
      const item = publish(dir, 700 * 1024);
      assert.equal((await request(ncps.url, `/${item.hash}.narinfo`)).status, 200);
      assert.equal((await downloadHashed(ncps.url, item.narPath)).sha256, item.sha256);
    }
    await waitForLog(ncps, (l) => l.msg === 'LRU clean-up evicted paths', 'about an eviction');
    await sleep(2_500); // a few more ticks: no other worker may run one
    const lru = logLines(ncps).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('LRU clean-up'));
    assert.equal(lru.filter((l) => l.msg === 'LRU clean-up scheduled').length, 1, 'scheduled once');
    assert.deepEqual([...new Set(lru.map((l) => l.worker))], [0], 'every LRU line is worker 0\'s');
  });
});
