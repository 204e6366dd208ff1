// S3Storage against a real S3-protocol server (s3rver, run as a child process): layout, streaming
// with bounded memory, ranges, absence, paging, and a clear error for a missing bucket.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { access, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { S3Storage, type S3StorageOptions } from '../../src/storage/s3';
import { OrphanSweeper } from '../../src/cache/orphans';
import { SqliteDatabase } from '../../src/db/sqlite';
import { LocalLocker } from '../../src/lock/local';
import { generateSecretKey, parseNarInfo } from '../../src/nix';
import { createLogger } from '../../src/telemetry/logger';
import { Metrics } from '../../src/telemetry/metrics';
import { randomStoreHash, syntheticNarInfo } from '../helpers/legacy';
import { cleanupTempDirs, makeTempDir } from '../helpers/proc';
import { s3rverAvailable, startS3rver, type S3rverInstance } from '../helpers/s3';

const MiB = 1024 * 1024;
const execFileAsync = promisify(execFile);
const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz';
const skip = s3rverAvailable() ? false : 's3rver (devDependency) not installed';

function nix32Name(length = 52): string {
  const bytes = randomBytes(length);
  let out = '';
  for (const b of bytes) out += NIX32[b % 32];
  return out;
}

function narName(ext = '.nar.xz'): string {
  return `${nix32Name()}${ext}`;
}

async function drain(stream: Readable): Promise<{ bytes: number; sha256: string; buffer?: Buffer }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { bytes, sha256: hash.digest('hex') };
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Writes `size` random bytes in 1 MiB pieces (never the whole file in memory); returns its sha256. */
async function writeRandomFile(file: string, size: number): Promise<string> {
  const hash = createHash('sha256');
  const out = createWriteStream(file);
  for (let written = 0; written < size; ) {
    const piece = randomBytes(Math.min(MiB, size - written));
    hash.update(piece);
    written += piece.length;
    if (!out.write(piece)) await new Promise<void>((resolve) => out.once('drain', () => resolve()));
  }
  await new Promise<void>((resolve, reject) => out.end((error?: Error | null) => (error ? reject(error) : resolve())));
  return hash.digest('hex');
}

interface MemoryGrowth {
  /** Peak growth of the resident set size. */
  rss: number;
  /** Peak growth of memory held by Buffers/ArrayBuffers (outside the JS heap). */
  buffers: number;
}

interface TransferReport {
  up: MemoryGrowth;
  down: MemoryGrowth;
  bytes: number;
  sha256: string;
}

// Runs in a fresh `node --expose-gc` so nothing else this test process did (s3rver clients, other
// tests, allocator leftovers) blurs the numbers. It warms up, then puts a file through S3Storage
// and reads it back, sampling memory every 20 ms after a full garbage collection: that measures
// memory *held* (V8 frees Buffers lazily, and a stream's discarded chunks are not a leak).
const TRANSFER_SCRIPT = `
const { createHash } = require('node:crypto');
const fs = require('node:fs/promises');
const job = JSON.parse(process.env.NCPS_TEST_JOB);
const { S3Storage } = require(job.module);
async function drain(stream) {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream) { hash.update(chunk); bytes += chunk.length; }
  return { bytes, sha256: hash.digest('hex') };
}
async function measure(work) {
  gc();
  const start = process.memoryUsage();
  let rss = start.rss, buffers = start.arrayBuffers;
  const sample = () => {
    gc();
    const now = process.memoryUsage();
    rss = Math.max(rss, now.rss);
    buffers = Math.max(buffers, now.arrayBuffers);
  };
  const timer = setInterval(sample, 20);
  try {
    const result = await work();
    sample();
    return { result, growth: { rss: rss - start.rss, buffers: buffers - start.arrayBuffers } };
  } finally {
    clearInterval(timer);
  }
}
(async () => {
  const storage = new S3Storage(job.options);
  // Warm up twice (modules, JIT, sockets, allocator pages), then a few small requests so the
  // last transfer's leftovers are gone before the baseline is taken.
  for (let round = 0; round < 2; round++) {
    await fs.copyFile(job.warmFile, job.warmFile + '.copy');
    await storage.putNarFromFile(job.warmName, job.warmFile + '.copy');
    await drain((await storage.getNar(job.warmName)).stream);
  }
  await storage.deleteNar(job.warmName);
  await storage.statNar(job.warmName);
  await storage.statNar(job.warmName);
  const up = await measure(() => storage.putNarFromFile(job.name, job.file));
  const down = await measure(async () => {
    const got = await storage.getNar(job.name);
    if (!got || got.size !== job.size) throw new Error('wrong size: ' + (got && got.size));
    return drain(got.stream);
  });
  storage.close();
  process.stdout.write(JSON.stringify({ up: up.growth, down: down.growth, ...down.result }));
})().catch((error) => { console.error(error); process.exit(1); });
`;

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

describe('S3 storage (s3rver)', { skip, timeout: 300_000 }, () => {
  let server: S3rverInstance;
  let raw: S3Client;
  let options: S3StorageOptions;
  let storage: S3Storage;

  before(async () => {
    server = await startS3rver({ bucket: 'ncps-test' });
    options = {
      bucket: server.bucket,
      endpoint: server.endpoint,
      region: server.region,
      accessKeyId: server.accessKeyId,
      secretAccessKey: server.secretAccessKey,
      forcePathStyle: true,
      tempDir: path.join(await makeTempDir('s3-temp'), 'nested', 'tmp'),
    };
    storage = new S3Storage(options);
    raw = new S3Client(S3Storage.clientConfig(options));
  });

  after(async () => {
    storage?.close();
    raw?.destroy();
    await server?.stop();
    await cleanupTempDirs();
  });

  async function listKeys(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await raw.send(new ListObjectsV2Command({ Bucket: server.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of page.Contents ?? []) keys.push(o.Key!);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys;
  }

  async function putTemp(content: Buffer | string): Promise<string> {
    const file = path.join(storage.tempDir, `${nix32Name(8)}.part`);
    await writeFile(file, content);
    return file;
  }

  it('creates the temp directory and always asks for checksums only when required', async () => {
    assert.ok(await exists(options.tempDir), 'tempDir is created');
    const config = S3Storage.clientConfig({ ...options, forcePathStyle: false });
    assert.equal(config.requestChecksumCalculation, 'WHEN_REQUIRED');
    assert.equal(config.responseChecksumValidation, 'WHEN_REQUIRED');
    assert.equal(config.forcePathStyle, false);
    assert.equal(S3Storage.clientConfig(options).forcePathStyle, true);
    assert.equal(await storage.client.config.requestChecksumCalculation(), 'WHEN_REQUIRED');
    assert.equal(await storage.client.config.responseChecksumValidation(), 'WHEN_REQUIRED');
  });

  it('check() passes for an existing bucket and names a missing one clearly', async () => {
    await storage.check();
    const missing = new S3Storage({ ...options, bucket: 'no-such-bucket' });
    try {
      await assert.rejects(missing.check(), (error: Error) => {
        assert.match(error.message, /bucket "no-such-bucket".*does not exist/);
        return true;
      });
    } finally {
      missing.close();
    }
  });

  it('stores NARs under store/nar/<h0>/<h0h1>/<name> and consumes the temp file', async () => {
    const name = narName('.nar.zst');
    const content = randomBytes(4096);
    const temp = await putTemp(content);
    await storage.putNarFromFile(name, temp);
    assert.equal(await exists(temp), false, 'temp file is consumed');
    const keys = await listKeys(`store/nar/${name[0]}/`);
    assert.deepEqual(keys, [`store/nar/${name[0]}/${name.slice(0, 2)}/${name}`]);
    const got = await storage.getNar(name);
    assert.ok(got);
    assert.equal(got.size, content.length);
    assert.deepEqual(await readAll(got.stream), content);
  });

  it('keeps listings and build trace entries under store/<kind>/<h0>/<h0h1>/<name>', async () => {
    const listing = `${nix32Name(32)}.ls`;
    const trace = `${nix32Name(32)}-producer.drv/out.doi`;
    await storage.putAuxFile('ls', listing, Buffer.from('{"version":1}'));
    await storage.putAuxFile('build-trace-v2', trace, Buffer.from('{"outPath":"x"}'));
    assert.deepEqual(await listKeys(`store/ls/${listing[0]}/`), [`store/ls/${listing[0]}/${listing.slice(0, 2)}/${listing}`]);
    assert.deepEqual(await listKeys(`store/build-trace-v2/${trace[0]}/`), [`store/build-trace-v2/${trace[0]}/${trace.slice(0, 2)}/${trace}`]);
    assert.equal((await storage.getAuxFile('build-trace-v2', trace))?.toString(), '{"outPath":"x"}');
    assert.equal(await storage.getAuxFile('build-trace-v2', `${nix32Name(32)}-producer.drv/out.doi`), undefined);
  });

  it('the orphan sweep removes unrecorded NARs and listings from the bucket, and keeps recorded ones', async () => {
    const db = new SqliteDatabase(path.join(await makeTempDir('s3-sweep-db'), 'db.sqlite'));
    await db.migrate();
    const hash = randomStoreHash();
    const narInfo = parseNarInfo(syntheticNarInfo(hash, generateSecretKey('up-1')));
    const recorded = narInfo.url.slice('nar/'.length);
    await db.putNarInfo(hash, narInfo, { name: recorded, compression: 'xz', narHash: narInfo.narHash.toNix32(), narSize: narInfo.narSize });
    const orphan = narName('.nar.xz');
    for (const name of [recorded, orphan]) await storage.putNarFromFile(name, await putTemp(randomBytes(1024)));
    const orphanListing = `${nix32Name(32)}.ls`;
    await storage.putAuxFile('ls', `${hash}.ls`, Buffer.from('{}'));
    await storage.putAuxFile('ls', orphanListing, Buffer.from('{}'));
    const sweeper = (dryRun: boolean) =>
      new OrphanSweeper({ db, storage, locker: new LocalLocker(), logger: createLogger('error'), metrics: new Metrics({ maxSizeBytes: 0 }), lockTtlMs: 10_000, dryRun });
    // Everything in the bucket was just uploaded: too young to be an orphan. (Earlier tests left
    // unrecorded NARs here too, so later counts are at least, not exactly, ours.)
    assert.deepEqual((await sweeper(false).run()).nars, { files: 0, bytes: 0 });
    const later = Date.now() + 2 * 60 * 60 * 1000;
    assert.ok((await sweeper(true).run(later)).nars.files >= 1);
    assert.equal(await storage.statNar(orphan), 1024, 'a dry run removes nothing');
    const result = await sweeper(false).run(later);
    assert.ok(result.nars.files >= 1 && result.listings.files >= 1, JSON.stringify(result));
    assert.equal(await storage.statNar(orphan), undefined);
    assert.equal(await storage.getAuxFile('ls', orphanListing), undefined);
    assert.equal(await storage.statNar(recorded), 1024);
    assert.ok(await storage.getAuxFile('ls', `${hash}.ls`));
    await db.close();
  });

  it('returns undefined for absent NARs, narinfos and keys', async () => {
    const name = narName();
    assert.equal(await storage.getNar(name), undefined);
    assert.equal(await storage.getNar(name, { start: 0, end: 9 }), undefined);
    assert.equal(await storage.statNar(name), undefined);
    assert.equal(await storage.getLegacyNarInfo(nix32Name(32)), undefined);
    assert.equal(await storage.getLegacySecretKey(), undefined);
    await storage.deleteNar(name); // deleting what is not there is fine
    await storage.deleteLegacyNarInfo(nix32Name(32));
  });

  it('stats, range-reads and deletes a NAR', async () => {
    const name = narName();
    const content = randomBytes(100_000);
    await storage.putNarFromFile(name, await putTemp(content));
    assert.equal(await storage.statNar(name), content.length);

    const middle = await storage.getNar(name, { start: 10, end: 99 });
    assert.ok(middle);
    assert.equal(middle.size, content.length, 'size is the whole object, whatever the range');
    assert.deepEqual(await readAll(middle.stream), content.subarray(10, 100));

    const one = await storage.getNar(name, { start: 0, end: 0 });
    assert.ok(one);
    assert.deepEqual(await readAll(one.stream), content.subarray(0, 1));

    const tail = await storage.getNar(name, { start: content.length - 5, end: content.length - 1 });
    assert.ok(tail);
    assert.equal(tail.size, content.length);
    assert.deepEqual(await readAll(tail.stream), content.subarray(content.length - 5));

    const past = await storage.getNar(name, { start: content.length + 10, end: content.length + 20 });
    assert.ok(past, 'a range past the end is not "absent"');
    assert.equal(past.size, content.length);
    assert.equal((await readAll(past.stream)).length, 0);

    await storage.deleteNar(name);
    assert.equal(await storage.statNar(name), undefined);
    assert.equal(await storage.getNar(name), undefined);
    assert.deepEqual(await listKeys(`store/nar/${name[0]}/${name.slice(0, 2)}/${name}`), []);
  });

  it('reads the legacy narinfo and signing key from their keys', async () => {
    const hash = nix32Name(32);
    const body = `StorePath: /nix/store/${hash}-hello\nURL: nar/x.nar.xz\n`;
    await raw.send(new PutObjectCommand({ Bucket: server.bucket, Key: `store/narinfo/${hash[0]}/${hash.slice(0, 2)}/${hash}.narinfo`, Body: body }));
    await raw.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'config/cache.key', Body: 'cache.example:c2VjcmV0' }));
    assert.equal(await storage.getLegacyNarInfo(hash), body);
    assert.equal(await storage.getLegacySecretKey(), 'cache.example:c2VjcmV0');
    await storage.deleteLegacyNarInfo(hash);
    assert.equal(await storage.getLegacyNarInfo(hash), undefined);
  });

  it('streams a 40 MiB NAR in and out with bounded memory', async (t) => {
    const name = narName();
    const warmName = narName();
    const file = path.join(storage.tempDir, `${name}.part`);
    const warmFile = path.join(storage.tempDir, `${warmName}.part`);
    const size = 40 * MiB;
    const sha256 = await writeRandomFile(file, size);
    await writeRandomFile(warmFile, 11 * MiB);
    // 5 MiB parts, one at a time: lib-storage holds about (queueSize + 1) parts in memory.
    const job = {
      module: path.resolve(__dirname, '../../src/storage/s3.js'),
      options: { ...options, partSize: 5 * MiB, queueSize: 1 },
      name,
      file,
      size,
      warmName,
      warmFile,
    };
    const { stdout } = await execFileAsync(process.execPath, ['--expose-gc', '-e', TRANSFER_SCRIPT], {
      env: { ...process.env, NCPS_TEST_JOB: JSON.stringify(job) },
      timeout: 120_000,
    });
    const report = JSON.parse(stdout) as TransferReport;
    // (That the object appears only when complete is S3's guarantee for PutObject and
    // CompleteMultipartUpload; s3rver writes objects in place, so it cannot be observed here.)
    assert.equal(await exists(file), false, 'temp file is consumed');
    assert.equal(await storage.statNar(name), size);
    assert.equal(report.bytes, size);
    assert.equal(report.sha256, sha256, 'bytes read back equal the bytes written');

    const show = (g: MemoryGrowth) => `RSS +${(g.rss / MiB).toFixed(1)} MiB, buffers +${(g.buffers / MiB).toFixed(1)} MiB`;
    t.diagnostic(`upload: ${show(report.up)}; download: ${show(report.down)}`);
    const limit = 30 * MiB;
    for (const [what, g] of [['upload', report.up], ['download', report.down]] as const) {
      assert.ok(g.rss < limit, `${what}: ${show(g)} (limit 30 MiB, file 40 MiB)`);
      assert.ok(g.buffers < limit, `${what}: ${show(g)} (limit 30 MiB, file 40 MiB)`);
    }
    await storage.deleteNar(name);
  });

  it('uploads a multipart NAR with the default part size intact', async () => {
    const name = narName('.nar');
    const file = path.join(storage.tempDir, `${name}.part`);
    const size = 33 * MiB + 12345; // three 16 MiB parts, the last one short
    const sha256 = await writeRandomFile(file, size);
    await storage.putNarFromFile(name, file);
    const got = await storage.getNar(name);
    assert.ok(got);
    assert.equal(got.size, size);
    const read = await drain(got.stream);
    assert.equal(read.bytes, size);
    assert.equal(read.sha256, sha256);
    await storage.deleteNar(name);
  });

  it('lists legacy narinfos page by page (more than 1000 keys)', async () => {
    const hashes = new Set<string>();
    while (hashes.size < 1010) hashes.add(nix32Name(32));
    const all = [...hashes];
    for (let i = 0; i < all.length; i += 32) {
      await Promise.all(
        all.slice(i, i + 32).map((h) =>
          raw.send(new PutObjectCommand({ Bucket: server.bucket, Key: `store/narinfo/${h[0]}/${h.slice(0, 2)}/${h}.narinfo`, Body: `StorePath: /nix/store/${h}-x\n` })),
        ),
      );
    }
    // Not where the layout puts them, or not narinfos: skipped.
    await raw.send(new PutObjectCommand({ Bucket: server.bucket, Key: 'store/narinfo/z/misplaced.narinfo', Body: 'x' }));
    await raw.send(new PutObjectCommand({ Bucket: server.bucket, Key: `store/narinfo/${all[0]![0]}/${all[0]!.slice(0, 2)}/notes.txt`, Body: 'x' }));

    for (const pageSize of [97, undefined]) {
      const lister = new S3Storage({ ...options, listPageSize: pageSize });
      let listCalls = 0;
      lister.client.middlewareStack.add(
        (next, context) => async (args) => {
          if (context.commandName === 'ListObjectsV2Command') listCalls++;
          return next(args);
        },
        { step: 'initialize', name: 'countListCalls' },
      );
      try {
        const listed: string[] = [];
        for await (const hash of lister.listLegacyNarInfos()) listed.push(hash);
        assert.equal(listed.length, all.length, `page size ${pageSize ?? 'default'}`);
        assert.deepEqual(new Set(listed), hashes);
        const expectedCalls = Math.ceil((all.length + 2) / (pageSize ?? 1000));
        assert.ok(listCalls >= expectedCalls, `expected at least ${expectedCalls} pages, saw ${listCalls}`);
      } finally {
        lister.close();
      }
    }

    const [gone] = all;
    await storage.deleteLegacyNarInfo(gone!);
    const after: string[] = [];
    for await (const hash of storage.listLegacyNarInfos()) after.push(hash);
    assert.equal(after.length, all.length - 1);
    assert.ok(!after.includes(gone!));
  });
});
