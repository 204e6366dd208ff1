// The size limit counts the small files kept beside the NARs (here: build logs) and LRU evicts
// them and store paths alike, least recently used first: a log that is read again stays, a store
// path or a log nobody asked for goes.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from '../helpers/http';
import { narPath, randomStoreHash } from '../helpers/legacy';
import { startNcps, type NcpsProcess } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir, sleep } from '../helpers/proc';
import { put, uploadNar } from '../helpers/upload';

const MiB = 1024 * 1024;
/** Access times are written in batches every 5 s. */
const FLUSH_WAIT_MS = 6_000;

function logFile(dataDir: string, name: string): string {
  return path.join(dataDir, 'store', 'log', name.slice(0, 1), name.slice(0, 2), name);
}

/** Uploads a 1 MiB log under a fresh derivation name; returns the name. */
async function uploadLog(ncps: NcpsProcess): Promise<string> {
  const name = `${randomStoreHash()}-build.drv`;
  await put(ncps, `/upload/log/${name}`, randomBytes(MiB).toString('base64').slice(0, MiB));
  return name;
}

/** Uploads a store path with an uncompressed 1 MiB NAR; returns its hash and NAR file. */
async function uploadPath(ncps: NcpsProcess): Promise<{ hash: string; narFile: string }> {
  const hash = randomStoreHash();
  const { narName, narinfo } = await uploadNar(ncps, MiB);
  await put(ncps, `/upload/${hash}.narinfo`, narinfo(hash));
  return { hash, narFile: narPath(ncps.dataDir, narName) };
}

function metric(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

async function waitFor(what: string, ncps: NcpsProcess, done: () => boolean): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!done()) {
    assert.ok(Date.now() < deadline, `${what}\n${ncps.logs().slice(-3000)}`);
    await sleep(200);
  }
}

describe('LRU with small files', { timeout: 180_000 }, () => {
  let dataDir: string;
  let ncps: NcpsProcess | undefined;
  const args = ['--cache-allow-put-verb', '--prometheus-enabled'];

  before(async () => {
    dataDir = await makeTempDir('lru-small');
  });

  after(async () => {
    await ncps?.stop();
    await cleanupTempDirs();
  });

  it('counts logs against --cache-max-size and evicts whatever was used least recently', async () => {
    ncps = await startNcps({ upstreams: [], publicKeys: [], dataDir, extraArgs: args });
    const logB = await uploadLog(ncps);
    await sleep(20);
    const p = await uploadPath(ncps);
    await sleep(20);
    const logA = await uploadLog(ncps);
    // Reading log B makes it the most recently used of the three.
    assert.equal((await request(ncps.url, `/log/${logB}`)).status, 200);
    await sleep(FLUSH_WAIT_MS);
    const before = metric((await request(ncps.url, '/metrics')).text, 'ncps_store_total_size_bytes');
    assert.equal(before, 3 * MiB, 'the store size counts the NAR and both logs');
    await ncps.stop();

    // 2.5 MiB: one of the three must go, and it is the store path (used before log A and log B).
    ncps = await startNcps({
      upstreams: [],
      publicKeys: [],
      dataDir,
      extraArgs: [...args, '--cache-max-size=2560K', '--cache-lru-schedule=*/1 * * * * *'],
    });
    await waitFor('the store path was not evicted', ncps, () => !existsSync(p.narFile));
    assert.equal((await request(ncps.url, `/${p.hash}.narinfo`)).status, 404);
    assert.ok(existsSync(logFile(dataDir, logA)) && existsSync(logFile(dataDir, logB)), 'both logs kept');

    // A new log pushes the store over again: now log A is the least recently used, not log B.
    const logC = await uploadLog(ncps);
    await waitFor('log A was not evicted', ncps, () => !existsSync(logFile(dataDir, logA)));
    assert.equal((await request(ncps.url, `/log/${logA}`)).status, 404);
    for (const name of [logB, logC]) assert.equal((await request(ncps.url, `/log/${name}`)).status, 200, name);
    const metrics = (await request(ncps.url, '/metrics')).text;
    assert.equal(metric(metrics, 'ncps_store_total_size_bytes'), 2 * MiB);
    assert.ok((metric(metrics, 'ncps_lru_bytes_freed_total') ?? 0) >= 2 * MiB);
  });
});
