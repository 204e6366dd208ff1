import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { NarInfoError, NixHash, formatNarInfo, narInfoFingerprint, narInfoHash, parseNarInfo } from '../../src/nix/index.js';

// Tests run from build/test/unit; fixtures stay in the source tree.
const FIXTURES = path.join(__dirname, '../../../test/unit/fixtures');
const fixture = (name: string): string => readFileSync(path.join(FIXTURES, name), 'utf8');

// Written by `nix copy --to file://…?compression=xz` (Nix 2.8), see fixtures/README.md.
const R_TEXT = fixture('0mgi72qgwd2kp1sfg5zdlii6xwcxlskw.narinfo'); // has a reference and a deriver
const X_TEXT = fixture('m5zd3qj7c4bs4g5d8hqvs5pc5xicclfg.narinfo'); // no references, CA

const MINIMAL = [
  'StorePath: /nix/store/m5zd3qj7c4bs4g5d8hqvs5pc5xicclfg-x',
  'URL: nar/17gd6zzlkx90irc6qawagdkgh1d7qvlnq46yjf7xiqw9ycz7zq4a.nar.xz',
  'NarHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw',
  'NarSize: 120',
];
const text = (lines: string[]): string => lines.map((l) => `${l}\n`).join('');
const without = (key: string): string[] => MINIMAL.filter((l) => !l.startsWith(`${key}:`));
const replacing = (key: string, value: string): string[] =>
  MINIMAL.map((l) => (l.startsWith(`${key}:`) ? `${key}: ${value}` : l));

describe('parseNarInfo', () => {
  it('parses a narinfo written by Nix, with references and deriver', () => {
    const n = parseNarInfo(R_TEXT);
    assert.equal(n.storePath, '/nix/store/0mgi72qgwd2kp1sfg5zdlii6xwcxlskw-r');
    assert.equal(n.url, 'nar/0i41n4m37q1gncp5gr0iaqhj0wci70afa3np2fjjv0f2nmc9hlbc.nar.xz');
    assert.equal(n.compression, 'xz');
    assert.equal(n.compressionGiven, true);
    // sha256sum of the .nar.xz file Nix wrote
    assert.equal(n.fileHash?.toBase16(), '6c519858b5c2812da513d70ee51438917120215611e4572eb32fe0332ab18144');
    assert.equal(n.fileSize, 168);
    // `nix-store --dump /nix/store/0mgi…-r | sha256sum`
    assert.equal(n.narHash.toBase16(), 'a006e4d6c74882f7a02eaa8547d28c18a04cc4af67a3ae8b831dbc1c3ee63d95');
    assert.equal(n.narSize, 160);
    assert.deepEqual(n.references, ['m5zd3qj7c4bs4g5d8hqvs5pc5xicclfg-x']);
    assert.equal(n.deriver, 'd4c2nk4phqnw819vcl9agzdnal8p1lv5-r.drv');
    assert.equal(n.system, undefined);
    assert.equal(n.ca, undefined);
    assert.deepEqual(n.sigs, [
      'test-1:AqAtEOlpZkk+QQDkPJupneAXkuYtenfse+IvebIz6AGTdGsxK9CFtKwU3AuM3Tu/bi3GYoAGmL1xfb6sLUAVCg==',
    ]);
    assert.deepEqual(n.extra, []);
    assert.equal(narInfoHash(n), '0mgi72qgwd2kp1sfg5zdlii6xwcxlskw');
  });

  it('parses a narinfo with empty References and a CA field', () => {
    const n = parseNarInfo(X_TEXT);
    assert.deepEqual(n.references, []);
    assert.equal(n.deriver, undefined);
    assert.equal(n.ca, 'fixed:r:sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw');
    // `nix-store --dump /nix/store/m5zd…-x | sha256sum`
    assert.equal(n.narHash.toBase16(), '1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13');
  });

  it('round-trips narinfo files written by Nix byte for byte', () => {
    assert.equal(formatNarInfo(parseNarInfo(R_TEXT)), R_TEXT);
    assert.equal(formatNarInfo(parseNarInfo(X_TEXT)), X_TEXT);
    assert.ok(X_TEXT.includes('References: \n'), 'fixture has an empty References line');
  });

  it('tolerates CRLF, a missing final newline and "Key:" with nothing after', () => {
    const crlf = R_TEXT.replace(/\n/g, '\r\n');
    assert.deepEqual(parseNarInfo(crlf), parseNarInfo(R_TEXT));
    assert.deepEqual(parseNarInfo(R_TEXT.trimEnd()), parseNarInfo(R_TEXT));
    assert.deepEqual(parseNarInfo(X_TEXT.replace('References: \n', 'References:\n')).references, []);
  });

  it('treats a missing References line as no references', () => {
    const n = parseNarInfo(text(MINIMAL));
    assert.deepEqual(n.references, []);
    assert.deepEqual(n.sigs, []);
    assert.equal(n.fileHash, undefined);
    assert.equal(n.fileSize, undefined);
  });

  it('defaults a missing Compression to bzip2 and does not invent one when formatting', () => {
    const n = parseNarInfo(text(MINIMAL));
    assert.equal(n.compression, 'bzip2');
    assert.equal(n.compressionGiven, false);
    const out = formatNarInfo(n);
    assert.ok(!out.includes('Compression:'));
    assert.equal(out, text([...MINIMAL, 'References: ']));
  });

  it('keeps unknown keys in order and writes them last', () => {
    const input = text([MINIMAL[0]!, 'Zeta: 1', ...MINIMAL.slice(1), 'Alpha: two words', 'Zeta: 3', 'System: x86_64-linux']);
    const n = parseNarInfo(input);
    assert.deepEqual(n.extra, [
      ['Zeta', '1'],
      ['Alpha', 'two words'],
      ['Zeta', '3'],
    ]);
    assert.equal(n.system, 'x86_64-linux');
    assert.equal(
      formatNarInfo(n),
      text([...MINIMAL, 'References: ', 'System: x86_64-linux', 'Zeta: 1', 'Alpha: two words', 'Zeta: 3']),
    );
  });

  it('keeps several signatures in order', () => {
    const n = parseNarInfo(text([...MINIMAL, 'Sig: a:AAAA', 'Sig: b:BBBB']));
    assert.deepEqual(n.sigs, ['a:AAAA', 'b:BBBB']);
  });

  it('writes hashes given in other forms as sha256:<nix32>', () => {
    const hex = '1c37d01af40be2e80691de3cc3df44377a699afbb17c68f080964b2fd071fc13';
    const n = parseNarInfo(text(replacing('NarHash', `sha256:${hex}`)));
    assert.ok(formatNarInfo(n).includes('NarHash: sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw\n'));
    const sri = parseNarInfo(text(replacing('NarHash', NixHash.parse(`sha256:${hex}`).toSRI())));
    assert.ok(sri.narHash.equals(n.narHash));
  });

  it('rejects missing required fields', () => {
    for (const key of ['StorePath', 'URL', 'NarHash', 'NarSize']) {
      assert.throws(() => parseNarInfo(text(without(key))), (e: unknown) => {
        assert.ok(e instanceof NarInfoError);
        assert.match(e.message, new RegExp(`missing ${key}`));
        return true;
      });
    }
    assert.throws(() => parseNarInfo(''), NarInfoError);
    assert.throws(() => parseNarInfo(text(replacing('URL', ''))), /missing URL/);
  });

  it('rejects bad sizes', () => {
    for (const bad of ['0', '-1', '1.5', '1e3', '0x10', ' 12', '12 ', '', '012', '99999999999999999999']) {
      assert.throws(() => parseNarInfo(text(replacing('NarSize', bad))), NarInfoError, `NarSize ${bad}`);
    }
    assert.throws(() => parseNarInfo(text([...MINIMAL, 'FileSize: abc'])), /FileSize/);
    assert.equal(parseNarInfo(text([...MINIMAL, 'FileSize: 0'])).fileSize, 0);
  });

  it('rejects bad hashes', () => {
    for (const bad of ['sha256:xyz', 'sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqe', 'foo:bar', '04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw']) {
      assert.throws(() => parseNarInfo(text(replacing('NarHash', bad))), (e: unknown) => {
        assert.ok(e instanceof NarInfoError);
        assert.match(e.message, /NarHash/);
        return true;
      }, bad);
    }
    assert.throws(() => parseNarInfo(text([...MINIMAL, 'FileHash: sha256:nope'])), /FileHash/);
  });

  it('rejects bad store paths, references and derivers', () => {
    assert.throws(() => parseNarInfo(text(replacing('StorePath', '/tmp/x'))), /StorePath/);
    assert.throws(() => parseNarInfo(text([...MINIMAL, 'References: /nix/store/m5zd3qj7c4bs4g5d8hqvs5pc5xicclfg-x'])), /References/);
    assert.throws(() => parseNarInfo(text([...MINIMAL, 'Deriver: foo.drv'])), /Deriver/);
    assert.equal(parseNarInfo(text([...MINIMAL, 'Deriver: unknown-deriver'])).deriver, undefined);
  });

  it('rejects duplicate single-valued keys, unknown compression and malformed lines', () => {
    assert.throws(() => parseNarInfo(text([...MINIMAL, 'NarSize: 120'])), /duplicate NarSize/);
    assert.throws(() => parseNarInfo(text([...MINIMAL, 'References: ', 'References: '])), /duplicate References/);
    assert.throws(() => parseNarInfo(text([...MINIMAL, 'Compression: gzip'])), /Compression.*gzip/);
    assert.throws(() => parseNarInfo(text([...MINIMAL, 'no colon here'])), /not 'Key: value'/);
    assert.throws(() => parseNarInfo(text([...MINIMAL, ': value'])), NarInfoError);
    assert.throws(() => parseNarInfo(text([...MINIMAL, 'Sig: '])), /empty Sig/);
  });
});

describe('narInfoFingerprint', () => {
  it('builds the string Nix signs', () => {
    assert.equal(
      narInfoFingerprint(parseNarInfo(R_TEXT)),
      '1;/nix/store/0mgi72qgwd2kp1sfg5zdlii6xwcxlskw-r;sha256:159xwqz1rg0xhf5sx8v7mz24r80qik94g1da5shgg0j8qzbf81m0;160;' +
        '/nix/store/m5zd3qj7c4bs4g5d8hqvs5pc5xicclfg-x',
    );
    assert.equal(
      narInfoFingerprint(parseNarInfo(X_TEXT)),
      '1;/nix/store/m5zd3qj7c4bs4g5d8hqvs5pc5xicclfg-x;sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw;120;',
    );
  });

  it('sorts and de-duplicates references like Nix’s StorePathSet', () => {
    const a = 'm5zd3qj7c4bs4g5d8hqvs5pc5xicclfg-x';
    const b = '0mgi72qgwd2kp1sfg5zdlii6xwcxlskw-r';
    const n = parseNarInfo(text([...MINIMAL, `References: ${a} ${b} ${a}`]));
    assert.deepEqual(n.references, [a, b, a]); // kept as written
    assert.match(narInfoFingerprint(n), new RegExp(`;120;/nix/store/${b},/nix/store/${a}$`));
    assert.match(narInfoFingerprint(n, '/gnu/store'), new RegExp(`;120;/gnu/store/${b},/gnu/store/${a}$`));
  });

  it('refuses a non-sha256 NarHash', () => {
    const n = parseNarInfo(text(replacing('NarHash', NixHash.of('sha512', '').toNix32())));
    assert.throws(() => narInfoFingerprint(n), /sha256/);
  });
});
