// The upstreams ncps meets in the wild, served by a hand-made upstream so that every odd case can
// be produced: nix-serve style NAR URLs, narinfos without FileHash/FileSize, opaque URLs with a
// query string, NARs that do not match their narinfo, several upstreams with priorities, and
// upstreams behind HTTP Basic auth (netrc).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { encodeNix32, generateSecretKey, narInfoFingerprint, parseNarInfo, signFingerprint, type SecretKey } from '../../src/nix';
import { request } from '../helpers/http';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir } from '../helpers/proc';

interface Route {
  status?: number;
  body: Buffer | string;
  delayMs?: number;
}

interface FakeUpstream {
  url: string;
  routes: Map<string, Route>;
  hits: string[];
  requireAuth?: string;
  close(): Promise<void>;
}

async function startFakeUpstream(priority?: number): Promise<FakeUpstream> {
  const upstream: FakeUpstream = { url: '', routes: new Map(), hits: [], close: async () => undefined };
  upstream.routes.set('/nix-cache-info', { body: 'StoreDir: /nix/store\nWantMassQuery: 1\n' });
  const server = http.createServer((req, res) => {
    upstream.hits.push(req.url ?? '');
    if (upstream.requireAuth && req.headers.authorization !== upstream.requireAuth) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="cache"' }).end();
      return;
    }
    const route = upstream.routes.get(req.url ?? '');
    if (!route) {
      res.writeHead(404).end();
      return;
    }
    setTimeout(() => {
      res.writeHead(route.status ?? 200, { 'content-length': Buffer.byteLength(route.body) }).end(route.body);
    }, route.delayMs ?? 0);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  upstream.url = `http://127.0.0.1:${port}${priority === undefined ? '' : `?priority=${priority}`}`;
  upstream.close = () =>
    new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return upstream;
}

const NIX32_CHARS = '0123456789abcdfghijklmnpqrsvwxyz';
const randomStoreHash = () => Array.from(randomBytes(32), (b) => NIX32_CHARS[b % 32]).join('');
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest();

/** A signed narinfo for fake NAR contents, with the given URL and fields. */
function makeNarInfo(
  key: SecretKey,
  opts: { hash: string; nar: Buffer; url: string; compression?: string; file?: Buffer; extra?: string },
): string {
  const lines = [`StorePath: /nix/store/${opts.hash}-variant`, `URL: ${opts.url}`];
  if (opts.compression) lines.push(`Compression: ${opts.compression}`);
  if (opts.file) lines.push(`FileHash: sha256:${encodeNix32(sha256(opts.file))}`, `FileSize: ${opts.file.length}`);
  lines.push(`NarHash: sha256:${encodeNix32(sha256(opts.nar))}`, `NarSize: ${opts.nar.length}`, 'References: ');
  if (opts.extra) lines.push(opts.extra);
  const unsigned = lines.join('\n') + '\n';
  const sig = signFingerprint(key, narInfoFingerprint(parseNarInfo(unsigned)));
  return `${unsigned}Sig: ${sig}\n`;
}

function xz(data: Buffer): Buffer {
  const out = spawnSync('xz', ['-c', '-T1'], { input: data, maxBuffer: 64 << 20 });
  assert.equal(out.status, 0, 'xz must be installed for these tests');
  return out.stdout;
}

function servedUrl(narinfoText: string): string {
  return /^URL: (.*)$/m.exec(narinfoText)![1]!;
}

function storedNarPath(ncps: NcpsProcess, url: string): string {
  const name = url.slice('nar/'.length);
  return path.join(ncps.dataDir, 'store', 'nar', name[0]!, name.slice(0, 2), name);
}

describe('upstream variants', { timeout: 120_000 }, () => {
  const key = generateSecretKey('upstream-variants-1');
  let primary: FakeUpstream;
  let secondary: FakeUpstream;
  let ncps: NcpsProcess;

  before(async () => {
    primary = await startFakeUpstream(1);
    secondary = await startFakeUpstream(2);
    ncps = await startNcps({ upstreams: [secondary.url, primary.url], publicKeys: [key.publicKey.text] });
  });

  after(async () => {
    await ncps?.stop();
    await primary?.close();
    await secondary?.close();
    await cleanupTempDirs();
  });

  it('serves nix-serve style NAR URLs and narinfos without FileHash/FileSize', async () => {
    const hash = randomStoreHash();
    const nar = randomBytes(50_000);
    const narHash32 = encodeNix32(sha256(nar));
    primary.routes.set(`/${hash}.narinfo`, { body: makeNarInfo(key, { hash, nar, url: `nar/${hash}-${narHash32}.nar`, compression: 'none' }) });
    primary.routes.set(`/nar/${hash}-${narHash32}.nar`, { body: nar });

    const narinfo = await request(ncps.url, `/${hash}.narinfo`);
    assert.equal(narinfo.status, 200);
    assert.equal(servedUrl(narinfo.text), `nar/${narHash32}.nar`, 'the NAR URL is normalised to our layout');
    const body = await request(ncps.url, `/${servedUrl(narinfo.text)}`);
    assert.equal(body.status, 200);
    assert.ok(body.body.equals(nar));
  });

  it('verifies compressed NARs without FileHash by their NarHash before storing them', async () => {
    const hash = randomStoreHash();
    const nar = randomBytes(80_000);
    const file = xz(nar);
    primary.routes.set(`/${hash}.narinfo`, { body: makeNarInfo(key, { hash, nar, url: `nar/odd-name.nar.xz`, compression: 'xz' }) });
    primary.routes.set('/nar/odd-name.nar.xz', { body: file });

    const narinfo = await request(ncps.url, `/${hash}.narinfo`);
    assert.equal(narinfo.status, 200);
    const url = servedUrl(narinfo.text);
    assert.match(url, /^nar\/[0-9a-z]{52}\.nar\.xz$/);
    const body = await request(ncps.url, `/${url}`);
    assert.equal(body.status, 200);
    assert.ok(body.body.equals(file));
    await waitFor(() => existsSync(storedNarPath(ncps, url)));
  });

  it('never stores a NAR that does not match its narinfo', async () => {
    const hash = randomStoreHash();
    const nar = randomBytes(40_000);
    const file = xz(nar);
    const tampered = Buffer.from(file);
    tampered[tampered.length >> 1]! ^= 0xff;
    primary.routes.set(`/${hash}.narinfo`, { body: makeNarInfo(key, { hash, nar, url: `nar/${hash}.nar.xz`, compression: 'xz', file }) });
    primary.routes.set(`/nar/${hash}.nar.xz`, { body: tampered });

    const narinfo = await request(ncps.url, `/${hash}.narinfo`);
    assert.equal(narinfo.status, 200);
    const url = servedUrl(narinfo.text);
    const body = await request(ncps.url, `/${url}`).catch((error: Error) => error);
    // The bytes may have been streamed, but the response must not complete as a good one.
    if (!(body instanceof Error)) assert.ok(body.status !== 200 || !body.body.equals(file));
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(existsSync(storedNarPath(ncps, url)), false, 'a NAR failing verification is not committed');
    const health = await request(ncps.url, '/healthz');
    assert.equal(health.status, 200);
  });

  it('rewrites opaque upstream NAR URLs with a query string', async () => {
    const hash = randomStoreHash();
    const nar = randomBytes(30_000);
    const file = xz(nar);
    primary.routes.set(`/${hash}.narinfo`, { body: makeNarInfo(key, { hash, nar, url: `download?id=${hash}&fmt=xz`, compression: 'xz', file }) });
    primary.routes.set(`/download?id=${hash}&fmt=xz`, { body: file });

    const narinfo = await request(ncps.url, `/${hash}.narinfo`);
    assert.equal(narinfo.status, 200);
    assert.equal(servedUrl(narinfo.text), `nar/${encodeNix32(sha256(file))}.nar.xz`);
    const body = await request(ncps.url, `/${servedUrl(narinfo.text)}`);
    assert.equal(body.status, 200);
    assert.ok(body.body.equals(file));
  });

  it('prefers the best-priority upstream that has the path, even when it answers later', async () => {
    const hash = randomStoreHash();
    const nar = randomBytes(1000);
    primary.routes.set(`/${hash}.narinfo`, { delayMs: 400, body: makeNarInfo(key, { hash, nar, url: `nar/${hash}.nar`, compression: 'none', extra: 'Origin: primary' }) });
    secondary.routes.set(`/${hash}.narinfo`, { body: makeNarInfo(key, { hash, nar, url: `nar/${hash}.nar`, compression: 'none', extra: 'Origin: secondary' }) });
    const narinfo = await request(ncps.url, `/${hash}.narinfo`);
    assert.equal(narinfo.status, 200);
    assert.match(narinfo.text, /^Origin: primary$/m, 'unknown keys are kept, and priority 1 wins');
  });

  it('falls back to a lower-priority upstream when the preferred one lacks the path', async () => {
    const hash = randomStoreHash();
    const nar = randomBytes(1000);
    secondary.routes.set(`/${hash}.narinfo`, { body: makeNarInfo(key, { hash, nar, url: `nar/${hash}.nar`, compression: 'none', extra: 'Origin: secondary' }) });
    secondary.routes.set(`/nar/${hash}.nar`, { body: nar });
    const narinfo = await request(ncps.url, `/${hash}.narinfo`);
    assert.equal(narinfo.status, 200);
    assert.match(narinfo.text, /^Origin: secondary$/m);
    const body = await request(ncps.url, `/${servedUrl(narinfo.text)}`);
    assert.ok(body.body.equals(nar));
  });

  it('refuses a narinfo whose StorePath is not the one asked for', async () => {
    const asked = randomStoreHash();
    const other = randomStoreHash();
    primary.routes.set(`/${asked}.narinfo`, { body: makeNarInfo(key, { hash: other, nar: randomBytes(10), url: `nar/${other}.nar`, compression: 'none' }) });
    const narinfo = await request(ncps.url, `/${asked}.narinfo`);
    assert.equal(narinfo.status, 404);
  });
});

describe('upstream credentials and signing options', { timeout: 120_000 }, () => {
  const key = generateSecretKey('upstream-auth-1');
  let upstream: FakeUpstream;

  before(async () => {
    upstream = await startFakeUpstream();
    upstream.requireAuth = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;
  });

  after(async () => {
    await upstream?.close();
    await cleanupTempDirs();
  });

  it('sends netrc credentials as HTTP Basic auth', async () => {
    const hash = randomStoreHash();
    const nar = randomBytes(1000);
    upstream.routes.set(`/${hash}.narinfo`, { body: makeNarInfo(key, { hash, nar, url: `nar/${hash}.nar`, compression: 'none' }) });
    upstream.routes.set(`/nar/${hash}.nar`, { body: nar });

    const without = await startNcps({ upstreams: [upstream.url], publicKeys: [key.publicKey.text] });
    try {
      assert.equal((await request(without.url, `/${hash}.narinfo`)).status, 404, 'no credentials, no narinfo');
    } finally {
      await without.stop();
    }

    const dir = await makeTempDir('ncps-netrc-');
    const netrc = path.join(dir, 'netrc');
    writeFileSync(netrc, `machine 127.0.0.1\n  login alice\n  password s3cret\n`);
    const withCreds = await startNcps({ upstreams: [upstream.url], publicKeys: [key.publicKey.text], extraArgs: [`--netrc-file=${netrc}`] });
    try {
      const narinfo = await request(withCreds.url, `/${hash}.narinfo`);
      assert.equal(narinfo.status, 200);
      const body = await request(withCreds.url, `/${servedUrl(narinfo.text)}`);
      assert.ok(body.body.equals(nar));
      assert.doesNotMatch(withCreds.logs(), /s3cret/, 'credentials never reach the logs');
    } finally {
      await withCreds.stop();
    }
  });

  it('serves narinfos without its own signature when --cache-sign-narinfo=false', async () => {
    const hash = randomStoreHash();
    const nar = randomBytes(1000);
    upstream.routes.set(`/${hash}.narinfo`, { body: makeNarInfo(key, { hash, nar, url: `nar/${hash}.nar`, compression: 'none' }) });
    const dir = await makeTempDir('ncps-netrc-');
    const netrc = path.join(dir, 'netrc');
    writeFileSync(netrc, `default login alice password s3cret\n`);
    const ncps = await startNcps({
      upstreams: [upstream.url],
      publicKeys: [key.publicKey.text],
      extraArgs: ['--cache-sign-narinfo=false', `--netrc-file=${netrc}`],
    });
    try {
      const narinfo = await request(ncps.url, `/${hash}.narinfo`);
      assert.equal(narinfo.status, 200);
      const sigs = narinfo.text.match(/^Sig: .*$/gm) ?? [];
      assert.deepEqual(sigs.map((s) => s.split(':')[1]!.trim()), ['upstream-auth-1']);
      // As the Go ncps: /pubkey still names the cache's key (the one it would sign with).
      const pubkey = await request(ncps.url, '/pubkey');
      assert.equal(pubkey.status, 200);
      assert.match(pubkey.text.trim(), /^ncps-test:[A-Za-z0-9+/]{43}=$/);
    } finally {
      await ncps.stop();
    }
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
