// Clients that hold resources without making progress: readers that stop reading are disconnected
// after --server-send-timeout (their descriptors and buffers come back), while a slow reader that
// keeps reading is not; uploads that drip are disconnected after --server-upload-body-timeout and
// leave no temp file; connections beyond --server-max-connections are refused; and 200 readers of
// one download in flight do not slow the download down to their pace.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signedBinaryCache, teardown } from '../helpers/fixture';
import { pauseAfter, startFaultUpstream, type FaultUpstream } from '../helpers/fault-upstream';
import { downloadHashed, request } from '../helpers/http';
import { parseNarinfo } from '../helpers/narinfo';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { buildClosure, hashPart, makeBinaryCache, makeTempDir, nixAvailable, sleep, type Closure } from '../helpers/nix';

const skip = nixAvailable() ? false : 'nix-bin not installed';
const MiB = 1 << 20;
const STALLED = 100;
const READERS = 200;

const openFds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
async function peakRss(pid: number): Promise<number> {
  return Number(/^VmHWM:\s+(\d+) kB/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
}

async function until(what: string, ms: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** A raw connection that sends one request and then does not read. */
function stalledReader(port: number, p: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(`GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      socket.pause();
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

// Readers run in a process of their own: in the test process they would compete with the upstream.
const READERS_SCRIPT = `
const http = require('node:http');
const [port, p, n] = [Number(process.argv[2]), process.argv[3], Number(process.argv[4])];
let open = 0;
for (let i = 0; i < n; i++) {
  http.get({ host: '127.0.0.1', port, path: p, agent: false }, (res) => {
    if (++open === n) console.log('all connected');
    res.resume();
  }).on('error', () => {});
}
`;

describe('slow and stalled clients', { skip, timeout: 420_000 }, () => {
  let upstream: FaultUpstream;
  let ncps: NcpsProcess;
  let stalledCase: Closure;
  let paceBaseline: Closure;
  let paceHerd: Closure;
  let paceHerdAgain: Closure;
  let cacheDir: string;
  let key: string;

  const narOf = async (c: Closure) => parseNarinfo(await readFile(path.join(cacheDir, `${hashPart(c.leaf)}.narinfo`), 'utf8')).url;
  /** How long ncps's download of `nar` took, from its own log line (undefined until it is done). */
  const downloadMs = (nar: string): number | undefined => {
    const line = ncps.logs().split('\n').find((l) => l.includes(path.basename(nar)) && l.includes('NAR downloaded and stored'));
    return line ? Number(/"ms":(\d+)/.exec(line)?.[1]) : undefined;
  };

  before(async () => {
    const cache = await signedBinaryCache({ label: 'slow-clients', leafBytes: 32 * MiB, compression: 'zstd' });
    stalledCase = cache.closure;
    cacheDir = cache.cacheDir;
    key = cache.key.publicKey;
    paceBaseline = await buildClosure({ label: 'pace-one', leafBytes: 64 * MiB });
    paceHerd = await buildClosure({ label: 'pace-herd', leafBytes: 64 * MiB });
    paceHerdAgain = await buildClosure({ label: 'pace-herd-again', leafBytes: 64 * MiB });
    await makeBinaryCache(cacheDir, [...paceBaseline.paths, ...paceHerd.paths, ...paceHerdAgain.paths], { secretKeyFile: cache.key.secretKeyFile, compression: 'zstd' });
    upstream = await startFaultUpstream(cacheDir);
    ncps = await startNcps({
      upstreams: [upstream.url],
      publicKeys: [key],
      extraArgs: ['--server-send-timeout=3s', '--server-upload-body-timeout=3s', '--cache-allow-put-verb', '--log-level=info'],
    });
  });
  after(() => teardown(ncps, upstream));

  it('disconnects readers that stopped reading, and gives their descriptors back', async () => {
    const nar = `/${await narOf(stalledCase)}`;
    assert.equal((await request(ncps.url, `/${hashPart(stalledCase.leaf)}.narinfo`)).status, 200);
    const whole = await downloadHashed(ncps.url, nar, { timeoutMs: 120_000 });
    assert.equal(whole.status, 200);
    const pid = ncps.proc.pid!;
    const fdsBefore = openFds(pid);
    const rssBefore = await peakRss(pid);

    const sockets = await Promise.all(Array.from({ length: STALLED }, () => stalledReader(ncps.port, nar)));
    const closedByServer = new Set<net.Socket>();
    // Each holds its socket and the open NAR file while stalled.
    await until('the stalled readers to be served', 20_000, () => openFds(pid) >= fdsBefore + STALLED);
    // A reader that keeps reading slowly, through more than two send timeouts, is left alone.
    const slow = await stalledReader(ncps.port, nar);
    let slowBytes = 0;
    slow.on('data', (c: Buffer) => (slowBytes += c.length));
    const slowEnded = new Promise<void>((resolve) => slow.once('end', () => resolve()));
    const slowClosed = new Promise<void>((resolve) => slow.once('close', () => resolve()));
    const tick = setInterval(() => {
      slow.resume();
      setTimeout(() => slow.pause(), 20);
    }, 500);

    await until('the stalled readers to be disconnected', 30_000, () => openFds(pid) <= fdsBefore + 10);
    const growth = (await peakRss(pid)) - rssBefore;
    // Backpressure bounds what each stalled connection holds (a few MiB), far below the NAR.
    assert.ok(growth < STALLED * 8 * MiB, `peak RSS grew by ${Math.round(growth / MiB)} MiB for ${STALLED} stalled readers`);
    assert.match(ncps.logs(), /client stopped reading; connection closed/);

    // What the stalled clients got: a part of the body, then the end of the connection.
    for (const s of sockets) {
      let got = 0;
      s.on('data', (c: Buffer) => (got += c.length));
      s.on('close', () => closedByServer.add(s));
      s.resume();
      void got;
    }
    await until('the stalled clients to see their connection closed', 30_000, () => closedByServer.size === STALLED);

    clearInterval(tick);
    slow.resume();
    await Promise.race([slowEnded, slowClosed]);
    const expectedBytes = whole.bytes;
    // Headers and the whole body: more than the body alone.
    assert.ok(slowBytes > expectedBytes, `the slow reader was cut after ${slowBytes} bytes`);
    slow.destroy();
  });

  it('disconnects dripping uploads and leaves no temp file behind', async () => {
    const name = `${'0'.repeat(52)}.nar.xz`;
    const sockets: net.Socket[] = [];
    const closed = new Set<net.Socket>();
    for (let i = 0; i < 50; i++) {
      const socket = net.connect(ncps.port, '127.0.0.1');
      socket.on('error', () => undefined);
      socket.on('close', () => closed.add(socket));
      socket.write(`PUT /upload/nar/${name} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n`);
      sockets.push(socket);
    }
    const drip = setInterval(() => {
      for (const s of sockets) if (!s.destroyed) s.write('x');
    }, 300);
    try {
      await until('temp files of the uploads', 10_000, async () => (await readdir(path.join(ncps.dataDir, 'store', 'tmp'))).some((f) => f.startsWith('upload-')));
      await until('the dripping uploads to be disconnected', 30_000, () => closed.size === sockets.length);
    } finally {
      clearInterval(drip);
    }
    await until('the upload temp files to be removed', 10_000, async () => !(await readdir(path.join(ncps.dataDir, 'store', 'tmp'))).some((f) => f.startsWith('upload-')));
    assert.match(ncps.logs(), /upload body too slow; connection closed/);
    assert.equal((await request(ncps.url, '/nix-cache-info')).status, 200);
  });

  it('refuses connections beyond --server-max-connections', async () => {
    const capped = await startNcps({ upstreams: [upstream.url], publicKeys: [key], extraArgs: ['--server-max-connections=20'] });
    const sockets: net.Socket[] = [];
    try {
      const closed = new Set<net.Socket>();
      for (let i = 0; i < 30; i++) {
        const socket = net.connect(capped.port, '127.0.0.1');
        socket.on('error', () => undefined);
        socket.on('close', () => closed.add(socket));
        sockets.push(socket);
        await new Promise((resolve) => socket.once('connect', resolve));
      }
      await until('the connections over the limit to be closed', 10_000, () => closed.size >= 10);
      await sleep(300);
      // (One of the 20 may still be the start-up health check's connection on its way out.)
      assert.ok(closed.size >= 10 && closed.size <= 11, `${closed.size} of 30 connections were closed with a limit of 20`);
      assert.match(capped.logs(), /connection limit reached/);
      for (const s of sockets) s.destroy();
      await until('a request to work again', 10_000, async () => (await request(capped.url, '/healthz').catch(() => ({ status: 0 }))).status === 200);
    } finally {
      for (const s of sockets) s.destroy();
      await capped.stop();
    }
  });

  it('does not run a shared download at the pace of 200 readers', async () => {
    // The upstream sends the first MiB, waits until the readers are attached, then the rest as
    // fast as it can: what could slow the download down now is only its readers. Measured from
    // that moment to ncps's own "stored" log line; the baseline is the same with one reader.
    const timed = async (closure: Closure, readers: number): Promise<number> => {
      const nar = `/${await narOf(closure)}`;
      let resume!: () => void;
      upstream.on(nar, pauseAfter(MiB, { resume: new Promise<void>((r) => (resume = r)) }));
      assert.equal((await request(ncps.url, `/${hashPart(closure.leaf)}.narinfo`)).status, 200);
      const script = path.join(await makeTempDir('readers'), 'readers.js');
      writeFileSync(script, READERS_SCRIPT);
      const child = spawn(process.execPath, [script, String(ncps.port), nar, String(readers)], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      try {
        await until('the readers to be attached', 60_000, () => out.includes('all connected'));
        const started = Date.now();
        resume();
        await until('the download to finish', 120_000, () => downloadMs(nar) !== undefined);
        return Date.now() - started;
      } finally {
        child.kill('SIGKILL');
      }
    };
    const baseline = await timed(paceBaseline, 1);
    // The better of two herds: on a 2-core machine about one herd in ten took 15 times the
    // baseline (cause not found; 14 runs in a row later were 4-6 times). A download paced by its
    // readers is slow every time: 20 to 35 times the baseline.
    let withHerd = await timed(paceHerd, READERS);
    const bound = Math.max(8 * baseline, baseline + 6_000);
    if (withHerd > bound) withHerd = Math.min(withHerd, await timed(paceHerdAgain, READERS));
    assert.ok(withHerd <= bound, `the download took ${withHerd} ms with ${READERS} readers, ${baseline} ms with one (bound ${bound} ms)`);
  });
});
