// The pure parts of taking over a Go ncps database: telling generations apart from tables and
// columns, reading its time values, and turning its rows into our records.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { detectGoSchema } from '../../src/migrate/go/detect';
import {
  buildTraceFile,
  goTimeToMs,
  importedNarInfo,
  narInfoFromGoRow,
  narNameFromUrl,
  resolveBacking,
  Skip,
} from '../../src/migrate/go/map';
import { mysqlConnectionOptions } from '../../src/migrate/go/mysql-reader';
import { emptyReport, formatReport, noteSkipped } from '../../src/migrate/go/report';
import type { GoNarFileRow, GoNarInfoRow } from '../../src/migrate/go/source';
import {
  buildTraceFingerprint,
  encodeNix32,
  generateSecretKey,
  narInfoFingerprint,
  NixHash,
  parseBuildTraceValue,
  signFingerprint,
  verifySignature,
} from '../../src/nix';

const cols = (...names: string[]) => new Set(names);
const T = 'id created_at updated_at';

function tables(spec: Record<string, string>): Map<string, Set<string>> {
  return new Map(Object.entries(spec).map(([t, c]) => [t, cols(...c.split(' '))]));
}

// Table shapes per release line, as go-ncps-parity.md §3.1 lists them.
const V05 = tables({ schema_migrations: 'version', narinfos: `${T} hash last_accessed_at`, nars: `${T} narinfo_id hash compression file_size query last_accessed_at` });
const V07 = tables({
  schema_migrations: 'version',
  narinfos: `${T} hash last_accessed_at`,
  nar_files: `${T} hash compression file_size query last_accessed_at`,
  narinfo_nar_files: 'narinfo_id nar_file_id',
  config: `${T} key value`,
});
const NARINFO_META = 'store_path url compression file_hash file_size nar_hash nar_size deriver system ca';
const V08 = tables({
  schema_migrations: 'version',
  narinfos: `${T} hash last_accessed_at ${NARINFO_META}`,
  nar_files: `${T} hash compression file_size query last_accessed_at`,
  narinfo_nar_files: 'narinfo_id nar_file_id',
  config: `${T} key value`,
  narinfo_references: 'narinfo_id reference',
  narinfo_signatures: 'narinfo_id signature',
});

function v09(): Map<string, Set<string>> {
  const t = new Map(V08);
  t.set('nar_files', cols(...`${T} hash compression file_size query last_accessed_at total_chunks chunking_started_at`.split(' ')));
  t.set('chunks', cols('id', 'hash', 'size', 'compressed_size', 'created_at', 'updated_at'));
  t.set('nar_file_chunks', cols('nar_file_id', 'chunk_id', 'chunk_index'));
  return t;
}

function v010(): Map<string, Set<string>> {
  const t = v09();
  t.set('schema_migrations', cols('id', 'version_id', 'is_applied', 'tstamp'));
  t.set('narinfos', cols(...`${T} hash last_accessed_at ${NARINFO_META} upstream_url`.split(' ')));
  t.set('narinfo_signatures', cols('id', 'narinfo_id', 'signature'));
  t.set('pinned_closures', cols('id', 'hash', 'created_at', 'updated_at'));
  t.set('build_trace_entries', cols('id', 'created_at', 'updated_at', 'drv_path', 'output_name', 'out_path', 'raw_json'));
  t.set('build_trace_signatures', cols('id', 'key_name', 'signature', 'build_trace_entry_id'));
  t.set('nar_files', cols(...[...t.get('nar_files')!, 'bytes_stored_at', 'verified_at']));
  return t;
}

describe('detecting a Go ncps database from its tables', () => {
  it('tells every release line apart, and dbmate from goose tracking', () => {
    const v05 = detectGoSchema(V05)!;
    assert.equal(v05.generation, 'v0.4–v0.5');
    assert.equal(v05.tracking, 'dbmate');
    assert.equal(v05.narFiles, 'nars');
    assert.equal(v05.narInfoColumns, false);
    const v07 = detectGoSchema(V07)!;
    assert.equal(v07.generation, 'v0.6–v0.7');
    assert.equal(v07.config, true);
    assert.equal(v07.narFiles, 'nar_files');
    const v08 = detectGoSchema(V08)!;
    assert.equal(v08.generation, 'v0.8');
    assert.equal(v08.narInfoColumns, true);
    assert.equal(v08.joinIds, false);
    assert.equal(detectGoSchema(v09())!.generation, 'v0.9');
    assert.equal(detectGoSchema(v09())!.chunks, true);
    const latest = detectGoSchema(v010())!;
    assert.equal(latest.generation, 'v0.10');
    assert.equal(latest.tracking, 'goose');
    assert.ok(latest.pins && latest.buildTraces && latest.upstreamUrl && latest.bytesStoredAt && latest.joinIds);
    const rc5 = v010();
    rc5.delete('build_trace_entries');
    rc5.delete('build_trace_signatures');
    rc5.set('narinfos', cols(...`${T} hash last_accessed_at ${NARINFO_META}`.split(' ')));
    assert.equal(detectGoSchema(rc5)!.generation, 'v0.10 (before rc10)');
  });

  it('is not fooled by our own schema, or by an empty database', () => {
    const ours = tables({
      schema_migrations: 'version name compat_floor applied_at',
      settings: 'key value',
      narinfos: 'id hash store_path url nar_file_id created_at last_accessed_at',
      nar_files: 'id name',
    });
    assert.equal(detectGoSchema(ours), undefined);
    assert.equal(detectGoSchema(new Map()), undefined);
  });
});

describe('Go time values', () => {
  it('reads what Go SQLite drivers and CURRENT_TIMESTAMP write, and Dates', () => {
    assert.equal(goTimeToMs('2026-12-01 20:21:03.896142699+00:00'), Date.UTC(2026, 11, 1, 20, 21, 3, 896));
    assert.equal(goTimeToMs('2026-12-01 20:21:03'), Date.UTC(2026, 11, 1, 20, 21, 3));
    assert.equal(goTimeToMs('2026-12-01T22:21:03.5+02:00'), Date.UTC(2026, 11, 1, 20, 21, 3, 500));
    assert.equal(goTimeToMs('2026-12-01 20:21:03.123 +0000 UTC'), Date.UTC(2026, 11, 1, 20, 21, 3, 123));
    assert.equal(goTimeToMs(new Date(5000)), 5000);
    assert.equal(goTimeToMs(null), undefined);
    assert.equal(goTimeToMs('yesterday'), undefined);
  });
});

// ---- rows ----------------------------------------------------------------------------------

const nix32 = (seed: string, bytes = 32) => encodeNix32(NixHash.of('sha256', seed).digest.subarray(0, bytes));
const HASH = nix32('path', 20);
const REF = `${nix32('ref', 20)}-ref`;
const NAR_HASH = NixHash.of('sha256', 'nar');
const FILE = nix32('file');
const KEY = generateSecretKey('go-node-1');

function row(over: Partial<GoNarInfoRow> = {}): GoNarInfoRow {
  const base: GoNarInfoRow = {
    id: 1,
    hash: HASH,
    storePath: `/nix/store/${HASH}-hello`,
    url: `nar/${FILE}.nar.xz`,
    compression: 'xz',
    fileHash: `sha256:${FILE}`,
    fileSize: 120,
    narHash: NAR_HASH.toNix32(),
    narSize: 400,
    deriver: `${nix32('drv', 20)}-hello.drv`,
    system: null,
    ca: null,
    upstreamUrl: null,
    createdAt: '2026-01-01 00:00:00',
    lastAccessedAt: '2026-02-01 00:00:00',
    references: [`${HASH}-hello`, REF],
    signatures: [],
    narFiles: [],
  };
  const r = { ...base, ...over };
  const narInfo = narInfoFromGoRow({ ...r, signatures: [] });
  if (!over.signatures) r.signatures = [signFingerprint(KEY, narInfoFingerprint(narInfo))];
  return r;
}

function narFile(over: Partial<GoNarFileRow> = {}): GoNarFileRow {
  return { id: 7, hash: FILE, compression: 'xz', fileSize: 120, totalChunks: 0, createdAt: null, lastAccessedAt: null, bytesStoredAt: null, ...over };
}

describe('Go rows to our records', () => {
  it('rebuilds the narinfo as Nix writes it: references sorted, the signature still verifying', () => {
    const r = row({ references: [REF, `${HASH}-hello`, REF] });
    r.signatures = [signFingerprint(KEY, narInfoFingerprint(narInfoFromGoRow({ ...r, signatures: [] })))];
    const narInfo = narInfoFromGoRow(r);
    assert.deepEqual(narInfo.references, [...new Set([REF, `${HASH}-hello`])].sort());
    assert.equal(narInfo.compression, 'xz');
    assert.ok(narInfo.compressionGiven);
    assert.equal(narInfo.deriver, r.deriver);
    assert.ok(verifySignature(narInfo.sigs[0]!, narInfoFingerprint(narInfo), [KEY.publicKey]));
  });

  it('a row without a Compression value means bzip2 and formats without the line', () => {
    const narInfo = narInfoFromGoRow(row({ compression: null, url: `nar/${FILE}.nar.bz2` }));
    assert.equal(narInfo.compression, 'bzip2');
    assert.equal(narInfo.compressionGiven, false);
  });

  it('skips rows that are stubs, for another path, or not valid', () => {
    assert.throws(() => narInfoFromGoRow(row({ url: null })), (e: unknown) => e instanceof Skip && /no narinfo metadata/.test(e.reason));
    assert.throws(() => narInfoFromGoRow(row({ hash: nix32('other', 20) })), (e: unknown) => e instanceof Skip && /another store path/.test(e.reason));
    assert.throws(() => narInfoFromGoRow(row({ narHash: 'sha256:nonsense' })), (e: unknown) => e instanceof Skip && /not a valid narinfo/.test(e.reason));
  });

  it('NAR URLs: ours, nix-serve style normalised, opaque ones not understood', () => {
    assert.deepEqual(narNameFromUrl(`nar/${FILE}.nar.xz`), { hash: FILE, compression: 'xz' });
    assert.deepEqual(narNameFromUrl(`nar/${HASH}-${FILE}.nar`), { hash: FILE, compression: 'none' });
    assert.deepEqual(narNameFromUrl(`nar/${FILE}.nar.zst?hash=x`), { hash: FILE, compression: 'zstd' });
    assert.equal(narNameFromUrl('nar/7a3f0c1e-uuid.nar.zst'), undefined);
  });

  it('finds the stored file the URL names, else a linked record, else the .nar.zst of an uncompressed NAR, else chunks', () => {
    const narInfo = narInfoFromGoRow(row());
    const only = (name: string, size = 99) => (n: string) => (n === name ? size : undefined);
    assert.deepEqual(resolveBacking(narInfo, [narFile()], only(`${FILE}.nar.xz`)), {
      kind: 'file',
      name: `${FILE}.nar.xz`,
      compression: 'xz',
      size: 99,
      narFile: narFile(),
    });
    const other = nix32('other-file');
    const linked = narFile({ hash: other, compression: 'zstd' });
    assert.equal((resolveBacking(narInfo, [linked], only(`${other}.nar.zst`)) as { name: string }).name, `${other}.nar.zst`);

    const none = narInfoFromGoRow(row({ url: `nar/${FILE}.nar`, compression: 'none', fileHash: null, fileSize: null }));
    const zst = resolveBacking(none, [narFile({ compression: 'none' })], only(`${FILE}.nar.zst`));
    assert.equal(zst.kind === 'file' && zst.compression, 'zstd');

    const chunked = narFile({ compression: 'none', totalChunks: 3 });
    assert.deepEqual(resolveBacking(none, [chunked], () => undefined), { kind: 'chunks', narFile: chunked });
    assert.throws(() => resolveBacking(none, [narFile({ compression: 'none' })], () => undefined), (e: unknown) => e instanceof Skip && /NAR not in storage/.test(e.reason));
  });

  it('records keep the times; a narinfo pointed at another file drops the FileHash it no longer matches', () => {
    const times = { narInfo: { createdAt: 1, lastAccessedAt: 2 }, narFile: { createdAt: 3, lastAccessedAt: 4 }, storedAt: 5 };
    const narInfo = narInfoFromGoRow(row());
    const same = importedNarInfo(HASH, narInfo, { kind: 'file', name: `${FILE}.nar.xz`, compression: 'xz', size: 120 }, times);
    assert.equal(same.narInfo.url, `nar/${FILE}.nar.xz`);
    assert.equal(same.narInfo.fileHash?.toNix32(), `sha256:${FILE}`);
    assert.deepEqual(
      { c: same.createdAt, l: same.lastAccessedAt, fc: same.narFileCreatedAt, fl: same.narFileLastAccessedAt, s: same.narFile.storedAt },
      { c: 1, l: 2, fc: 3, fl: 4, s: 5 },
    );
    assert.equal(same.narFile.fileSize, 120);

    const none = narInfoFromGoRow(row({ url: `nar/${FILE}.nar`, compression: 'none', fileHash: null, fileSize: null }));
    const moved = importedNarInfo(HASH, none, { kind: 'file', name: `${FILE}.nar.zst`, compression: 'zstd', size: 77 }, times);
    assert.equal(moved.narInfo.url, `nar/${FILE}.nar.zst`);
    assert.equal(moved.narInfo.compression, 'zstd');
    assert.equal(moved.narInfo.fileSize, 77);
    assert.equal(moved.narInfo.fileHash, undefined);
    // The signature covers neither URL nor compression: it still verifies.
    assert.ok(verifySignature(moved.narInfo.sigs[0]!, narInfoFingerprint(moved.narInfo), [KEY.publicKey]));
  });

  it('build trace entries: full paths become base names, signatures are kept, ours joins when none verifies', () => {
    const drv = `${nix32('d', 20)}-x.drv`;
    const out = `${nix32('o', 20)}-x`;
    const key = { drvPath: drv, outputName: 'out' };
    const good = signFingerprint(KEY, buildTraceFingerprint(key, { outPath: out, signatures: [] }));
    const kept = buildTraceFile({ drvPath: `/nix/store/${drv}`, outputName: 'out', outPath: `/nix/store/${out}`, signatures: [[KEY.name, good.split(':')[1]!]] }, KEY);
    assert.equal(kept.name, `${drv}/out.doi`);
    assert.deepEqual(parseBuildTraceValue(kept.text), { outPath: out, signatures: [good] });

    const foreign = 'other-1:' + Buffer.alloc(64, 1).toString('base64');
    const joined = parseBuildTraceValue(
      buildTraceFile({ drvPath: drv, outputName: 'out', outPath: out, signatures: [['other-1', foreign.split(':')[1]!]] }, KEY).text,
    );
    assert.equal(joined.signatures.length, 2);
    assert.ok(joined.signatures.includes(foreign));
    assert.ok(joined.signatures.some((s) => verifySignature(s, buildTraceFingerprint(key, joined), [KEY.publicKey])));

    assert.throws(() => buildTraceFile({ drvPath: 'nonsense', outputName: 'out', outPath: out, signatures: [] }), Skip);
  });
});

describe('MySQL URLs as the Go ncps accepts them', () => {
  it('TCP, socket parameters and mysql+unix', () => {
    assert.deepEqual(mysqlConnectionOptions('mysql://ncps:p%40ss@db.example:3307/ncps'), {
      user: 'ncps',
      password: 'p@ss',
      database: 'ncps',
      host: 'db.example',
      port: 3307,
    });
    assert.equal(mysqlConnectionOptions('mysql://ncps@localhost/ncps?socket=/run/mysqld/mysqld.sock').socketPath, '/run/mysqld/mysqld.sock');
    const unix = mysqlConnectionOptions('mysql+unix://ncps@/run/mysqld/mysqld.sock/ncps');
    assert.equal(unix.socketPath, '/run/mysqld/mysqld.sock');
    assert.equal(unix.database, 'ncps');
    assert.throws(() => mysqlConnectionOptions('mysql://ncps@db/'), /names no database/);
  });
});

describe('the takeover summary', () => {
  it('says what was taken over and what was skipped, why, with examples', () => {
    const report = emptyReport('sqlite:/var/lib/ncps/db/db.sqlite', 'v0.9', false);
    report.key = 'go-1:abc=, taken over from the Go database';
    report.narInfosFromDatabase = 10;
    report.reassembled = { nars: 2, bytes: 3 * 1024 * 1024 };
    report.pins = 1;
    noteSkipped(report, 'NAR not in storage', 'abc');
    noteSkipped(report, 'NAR not in storage', 'def');
    const text = formatReport(report);
    assert.match(text, /narinfos: took over 10 \(10 from the database, 0 from narinfo files in storage\)/);
    assert.match(text, /CDC-chunked NARs: reassembled 2 \(3\.0 MiB written\); the chunk files are kept/);
    assert.match(text, /skipped: 2\n {4}2 × NAR not in storage\n {8}e\.g\. abc\n {8}e\.g\. def/);
  });
});
