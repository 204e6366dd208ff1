// Running under systemd (Type=notify): READY=1 once serving, WATCHDOG=1 pings, STOPPING=1 on
// SIGTERM, and a graceful drain that lets a download in flight finish before exiting 0.
// A python3 datagram listener stands in for systemd's NOTIFY_SOCKET (see helpers/notify.ts).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signedUpstream, teardown, type SignedUpstream } from '../helpers/fixture';
import { request } from '../helpers/http';
import { narUrlPath, nix32Encode, normaliseHash, parseNarinfo } from '../helpers/narinfo';
import { freePort, startNcps, type NcpsProcess } from '../helpers/ncps';
import { generateKeyPair, hashPart, makeTempDir, nixAvailable, type KeyPair } from '../helpers/nix';
import { notifyToolsAvailable, startNotifyListener, type NotifyListener, type NotifyMessage } from '../helpers/notify';

const skip = !nixAvailable()
  ? 'nix-bin not installed'
  : !notifyToolsAvailable()
    ? 'python3 or systemd-notify (Debian package systemd) not installed'
    : false;
const TIMEOUT = 180_000;
const MiB = 1024 * 1024;

const has = (name: string, value?: string) => (m: NotifyMessage): boolean =>
  m.assignments.has(name) && (value === undefined || m.assignments.get(name) === value);

/** Resolves with the exit code once `proc` exits (null: killed by a signal). */
function exitOf(ncps: NcpsProcess): Promise<number | null> {
  if (ncps.proc.exitCode !== null || ncps.proc.signalCode !== null) return Promise.resolve(ncps.proc.exitCode);
  return new Promise((resolve) => ncps.proc.once('exit', (code) => resolve(code)));
}

interface ProgressDownload {
  /** Bytes received so far. */
  received(): number;
  done: Promise<{ status: number; bytes: number; sha256: string; complete: boolean }>;
}

/** A GET that reports progress while it streams, hashing the body. */
function progressDownload(baseUrl: string, rawPath: string, timeoutMs: number): ProgressDownload {
  const u = new URL(baseUrl);
  let received = 0;
  const done = new Promise<{ status: number; bytes: number; sha256: string; complete: boolean }>((resolve, reject) => {
    const req = http.request({ hostname: u.hostname, port: Number(u.port), path: rawPath, method: 'GET', agent: false }, (res) => {
      const hash = createHash('sha256');
      res.on('data', (c: Buffer) => {
        hash.update(c);
        received += c.length;
      });
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, bytes: received, sha256: hash.digest('hex'), complete: res.complete });
      });
      res.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      res.on('close', () => {
        clearTimeout(timer);
        if (!res.complete) reject(new Error(`${rawPath}: connection closed after ${received} bytes`));
      });
    });
    const timer = setTimeout(() => req.destroy(new Error(`GET ${rawPath}: not finished within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.end();
  });
  return { received: () => received, done };
}

describe('systemd integration', { skip }, () => {
  let key: KeyPair;
  const listeners: NotifyListener[] = [];
  const processes: NcpsProcess[] = [];
  let upstream: SignedUpstream | undefined;

  before(
    async () => {
      key = await generateKeyPair('test-upstream-1', await makeTempDir('keys'));
    },
    { timeout: TIMEOUT },
  );

  after(
    async () => {
      for (const p of processes) await p.stop('SIGKILL');
      await teardown(...listeners, upstream);
    },
    { timeout: TIMEOUT },
  );

  it('sends READY=1 once serving, WATCHDOG=1 repeatedly, STOPPING=1 on SIGTERM, and exits 0', { timeout: TIMEOUT }, async () => {
    const notify = await startNotifyListener();
    listeners.push(notify);
    const ncps = await startNcps({
      upstreams: [`http://127.0.0.1:${await freePort()}`],
      publicKeys: [key.publicKey],
      env: { NOTIFY_SOCKET: notify.socketPath, WATCHDOG_USEC: '300000' },
    });
    processes.push(ncps);
    const logs = (): string => `\n--- ncps logs\n${ncps.logs().slice(-3000)}\n--- listener stderr\n${notify.stderr()}`;

    // startNcps has seen /healthz answer 200.
    const ready = await notify.waitFor(has('READY', '1'), 15_000, 'READY=1').catch((e: Error) => assert.fail(e.message + logs()));
    assert.equal((await request(ncps.url, '/healthz')).status, 200);
    const readyIndex = notify.messages().indexOf(notify.messages().find(has('READY', '1'))!);
    assert.equal(
      notify.messages().slice(0, readyIndex).some(has('WATCHDOG')),
      false,
      'no watchdog ping before READY=1',
    );
    if (process.getuid?.() === 0) {
      // Type=notify accepts messages from the main PID by default (NotifyAccess=main).
      assert.equal(ready.pid, ncps.proc.pid, `READY=1 should be credited to ncps (pid ${ncps.proc.pid}), not pid ${ready.pid}`);
    }

    // WATCHDOG_USEC=300000: pings well within 300 ms each; ask only for several of them.
    const deadline = Date.now() + 15_000;
    while (notify.messages().filter(has('WATCHDOG', '1')).length < 4) {
      assert.ok(Date.now() < deadline, `fewer than 4 WATCHDOG=1 pings within 15 s: ${JSON.stringify(notify.messages().map((m) => m.data))}${logs()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const pings = notify.messages().filter(has('WATCHDOG', '1'));
    if (process.getuid?.() === 0) for (const p of pings) assert.equal(p.pid, ncps.proc.pid, 'watchdog pings credited to ncps');

    const code = await ncps.stop('SIGTERM');
    assert.equal(code, 0, `exit code on SIGTERM${logs()}`);
    const stopping = await notify.waitFor(has('STOPPING', '1'), 5_000, 'STOPPING=1').catch((e: Error) => assert.fail(e.message + logs()));
    const all = notify.messages();
    assert.ok(all.indexOf(stopping) > readyIndex, 'STOPPING=1 comes after READY=1');
    if (process.getuid?.() === 0) assert.equal(stopping.pid, ncps.proc.pid);
  });

  it('on SIGTERM, finishes a download in flight with the full, correct bytes, then exits 0', { timeout: TIMEOUT }, async () => {
    upstream = await signedUpstream({ label: 'drain', leafBytes: 20 * MiB, key, compression: 'none', bytesPerSecond: 2_000_000 });
    const closure = upstream.closure;
    const notify = await startNotifyListener();
    listeners.push(notify);
    const ncps = await startNcps({ upstreams: [upstream.url], publicKeys: [key.publicKey], env: { NOTIFY_SOCKET: notify.socketPath } });
    processes.push(ncps);
    const logs = (): string => `\n--- ncps logs\n${ncps.logs().slice(-4000)}`;

    const up = parseNarinfo(await readFile(path.join(upstream.dir, `${hashPart(closure.leaf)}.narinfo`), 'utf8'));
    const r = await request(ncps.url, `/${hashPart(closure.leaf)}.narinfo`, { timeoutMs: 20_000 });
    assert.equal(r.status, 200, `GET narinfo: ${r.status} ${r.text}${logs()}`);
    const ni = parseNarinfo(r.text);
    assert.equal(ni.compression, 'none');
    assert.ok(ni.narSize >= 20 * MiB);

    const download = progressDownload(ncps.url, narUrlPath(ni.url), 150_000);
    const failed = download.done.then(
      () => undefined,
      (e: Error) => e,
    );
    const deadline = Date.now() + 60_000;
    while (download.received() < 2 * MiB) {
      const early = await Promise.race([failed, new Promise((res) => setTimeout(() => res('pending'), 50))]);
      if (early instanceof Error) assert.fail(`download failed before SIGTERM: ${early.message}${logs()}`);
      assert.ok(Date.now() < deadline, `download did not start within 60 s${logs()}`);
    }
    const atSignal = download.received();
    assert.ok(atSignal < ni.narSize, 'the signal must arrive mid-download');

    const exited = exitOf(ncps);
    ncps.proc.kill('SIGTERM');
    await notify.waitFor(has('STOPPING', '1'), 10_000, 'STOPPING=1');
    // Nothing new is accepted while draining, but the download continues.
    const result = await download.done.catch((e: Error) => assert.fail(`download in flight was cut off by SIGTERM: ${e.message}${logs()}`));
    assert.equal(result.status, 200);
    assert.equal(result.complete, true);
    assert.ok(result.bytes > atSignal, 'bytes kept arriving after SIGTERM');
    assert.equal(result.bytes, ni.narSize, `body length after SIGTERM at ${atSignal} bytes${logs()}`);
    assert.equal(`sha256:${nix32Encode(Buffer.from(result.sha256, 'hex'))}`, normaliseHash(ni.narHash), 'body must hash to NarHash');
    assert.equal(normaliseHash(ni.narHash), normaliseHash(up.narHash));

    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise<string>((res) => (timer = setTimeout(() => res('timeout'), 60_000)))]);
    clearTimeout(timer);
    assert.equal(code, 0, `ncps exit code after draining${logs()}`);

    // The shared upstream download was drained too: the NAR is complete in storage.
    const name = ni.url.replace(/^nar\//, '');
    const stored = await stat(path.join(ncps.dataDir, 'store', 'nar', name.slice(0, 1), name.slice(0, 2), name)).catch(() => undefined);
    assert.equal(stored?.size, ni.narSize, 'the NAR downloaded during the drain should be stored');
  });
});
