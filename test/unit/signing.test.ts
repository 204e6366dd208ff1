import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import {
  type NarInfo,
  NixHash,
  formatNarInfo,
  generateSecretKey,
  narInfoFingerprint,
  narInfoVerifies,
  parseNarInfo,
  parsePublicKey,
  parseSecretKey,
  signFingerprint,
  signNarInfo,
  verifySignature,
} from '../../src/nix/index.js';

// Tests run from build/test/unit; fixtures stay in the source tree.
const FIXTURES = path.join(__dirname, '../../../test/unit/fixtures');
const fixture = (name: string): string => readFileSync(path.join(FIXTURES, name), 'utf8');

// Key pair from `nix-store --generate-binary-cache-key test-1 sk pk`, and the
// narinfo files `nix copy` signed with it (Nix 2.8, see fixtures/README.md).
const SECRET_TEXT = fixture('test-1.secret');
const PUBLIC_TEXT = fixture('test-1.public');
const R_TEXT = fixture('0mgi72qgwd2kp1sfg5zdlii6xwcxlskw.narinfo');
const X_TEXT = fixture('m5zd3qj7c4bs4g5d8hqvs5pc5xicclfg.narinfo');

const nixSecret = parseSecretKey(SECRET_TEXT);
const nixPublic = parsePublicKey(PUBLIC_TEXT);

describe('keys', () => {
  it('parses the Nix-generated key pair', () => {
    assert.equal(nixSecret.name, 'test-1');
    assert.equal(nixSecret.text, SECRET_TEXT.trim());
    assert.equal(nixPublic.name, 'test-1');
    assert.equal(nixPublic.text, PUBLIC_TEXT.trim());
    // the public half stored in the secret key is the Nix public key
    assert.equal(nixSecret.publicKey.text, nixPublic.text);
  });

  it('trims surrounding whitespace', () => {
    assert.equal(parseSecretKey(`  ${SECRET_TEXT}\n`).text, nixSecret.text);
    assert.equal(parsePublicKey(`${PUBLIC_TEXT}\n\n`).text, nixPublic.text);
  });

  it('rejects malformed keys', () => {
    const b64 = SECRET_TEXT.trim().slice('test-1:'.length);
    const pub = PUBLIC_TEXT.trim().slice('test-1:'.length);
    for (const bad of ['', 'test-1', `:${b64}`, `test-1:${b64.slice(4)}`, `test-1:${b64}x`, `test-1:${pub}`, `a b:${b64}`]) {
      assert.throws(() => parseSecretKey(bad), /invalid secret key|invalid key name/, bad);
    }
    for (const bad of ['', 'test-1', `:${pub}`, `test-1:${b64}`, `test-1:${pub.slice(0, -2)}`, `test-1:!${pub.slice(1)}`]) {
      assert.throws(() => parsePublicKey(bad), /invalid public key|invalid key name/, bad);
    }
  });

  it('rejects a secret key whose public half does not match its seed', () => {
    const raw = Buffer.from(SECRET_TEXT.trim().slice('test-1:'.length), 'base64');
    raw[40] = raw[40]! ^ 1;
    assert.throws(() => parseSecretKey(`test-1:${raw.toString('base64')}`), /does not match/);
  });

  it('generates keys that round-trip through the text format', () => {
    const k = generateSecretKey('cache.example.org-1');
    assert.equal(k.name, 'cache.example.org-1');
    assert.match(k.text, /^cache\.example\.org-1:[A-Za-z0-9+/]{86}==$/);
    assert.match(k.publicKey.text, /^cache\.example\.org-1:[A-Za-z0-9+/]{43}=$/);
    const again = parseSecretKey(k.text);
    assert.equal(again.text, k.text);
    assert.equal(again.publicKey.text, k.publicKey.text);
    assert.equal(parsePublicKey(k.publicKey.text).text, k.publicKey.text);
    const sig = signFingerprint(k, 'hello');
    assert.ok(verifySignature(sig, 'hello', [parsePublicKey(k.publicKey.text)]));
    assert.notEqual(generateSecretKey('cache.example.org-1').text, k.text);
    assert.throws(() => generateSecretKey(''), /invalid key name/);
    assert.throws(() => generateSecretKey('a:b'), /invalid key name/);
  });
});

describe('signatures', () => {
  it('verifies the signatures Nix wrote with the Nix public key', () => {
    for (const t of [R_TEXT, X_TEXT]) {
      const n = parseNarInfo(t);
      assert.equal(n.sigs.length, 1);
      assert.ok(verifySignature(n.sigs[0]!, narInfoFingerprint(n), [nixPublic]));
      assert.ok(narInfoVerifies(n, [nixPublic]));
    }
  });

  it('produces exactly the Sig Nix produced with the same secret key', () => {
    for (const t of [R_TEXT, X_TEXT]) {
      const n = parseNarInfo(t);
      assert.equal(signFingerprint(nixSecret, narInfoFingerprint(n)), n.sigs[0]);
      const resigned = signNarInfo({ ...n, sigs: [] }, nixSecret);
      assert.equal(formatNarInfo(resigned), t);
    }
  });

  it('rejects a wrong key, a tampered fingerprint, a wrong name and garbage', () => {
    const n = parseNarInfo(R_TEXT);
    const fp = narInfoFingerprint(n);
    const sig = n.sigs[0]!;
    const other = generateSecretKey('test-1').publicKey; // same name, different key
    assert.equal(verifySignature(sig, fp, [other]), false);
    assert.equal(verifySignature(sig, fp, []), false);
    assert.equal(verifySignature(sig, fp.replace(';160;', ';161;'), [nixPublic]), false);
    assert.equal(verifySignature(sig.replace('test-1:', 'test-2:'), fp, [nixPublic]), false);
    const renamed = parsePublicKey(PUBLIC_TEXT.replace('test-1:', 'test-2:'));
    assert.equal(verifySignature(sig, fp, [renamed]), false);
    assert.equal(verifySignature(sig.replace('test-1:', 'test-2:'), fp, [renamed]), true);
    const flipped = Buffer.from(sig.slice(7), 'base64');
    flipped[10] = flipped[10]! ^ 0x80;
    assert.equal(verifySignature(`test-1:${flipped.toString('base64')}`, fp, [nixPublic]), false);
    for (const junk of ['', 'test-1', 'test-1:', 'test-1:AAAA', `test-1:${sig.slice(7, -4)}`, 'test-1:!!!!', `:${sig.slice(7)}`]) {
      assert.equal(verifySignature(junk, fp, [nixPublic]), false, junk);
    }
    // any matching key in the list is enough
    assert.equal(verifySignature(sig, fp, [other, renamed, nixPublic]), true);
  });

  it('narInfoVerifies fails when the narinfo was tampered with', () => {
    const n = parseNarInfo(R_TEXT);
    assert.equal(narInfoVerifies({ ...n, narSize: 161 }, [nixPublic]), false);
    assert.equal(narInfoVerifies({ ...n, references: [] }, [nixPublic]), false);
    assert.equal(narInfoVerifies({ ...n, storePath: n.storePath + 'x' }, [nixPublic]), false);
    assert.equal(narInfoVerifies({ ...n, sigs: [] }, [nixPublic]), false);
    // fields outside the fingerprint are not covered
    assert.equal(narInfoVerifies({ ...n, url: 'nar/other.nar' }, [nixPublic]), true);
  });

  it('signNarInfo adds our signature, replacing one with the same key name', () => {
    const n = parseNarInfo(R_TEXT);
    const ours = generateSecretKey('ours-1');
    const signed = signNarInfo(n, ours);
    assert.equal(signed.sigs.length, 2);
    assert.equal(signed.sigs[0], n.sigs[0]);
    assert.match(signed.sigs[1]!, /^ours-1:/);
    assert.ok(narInfoVerifies(signed, [ours.publicKey]));
    assert.equal(n.sigs.length, 1, 'input is not modified');

    const stale: NarInfo = { ...n, sigs: ['ours-1:AAAA', n.sigs[0]!, 'ours-1:BBBB', 'ours-10:CCCC'] };
    const resigned = signNarInfo(stale, ours);
    assert.deepEqual(resigned.sigs, [signed.sigs[1], n.sigs[0], 'ours-10:CCCC']);
    assert.equal(stale.sigs.length, 4, 'input is not modified');
  });

  it('does not verify a narinfo whose NarHash is not sha256', () => {
    const n = parseNarInfo(R_TEXT);
    assert.equal(narInfoVerifies({ ...n, narHash: NixHash.of('sha512', '') }, [nixPublic]), false);
  });
});
