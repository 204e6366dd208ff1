import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  BuildTraceError,
  buildTraceFingerprint,
  buildTraceVerifies,
  formatBuildTraceValue,
  generateSecretKey,
  parseBuildTraceKey,
  parseBuildTraceValue,
  parseSecretKey,
  signBuildTrace,
  signFingerprint,
  type BuildTraceKey,
} from '../../src/nix';

// Fingerprints and signatures that Nix itself computes for two entries (see the fixture's "source").
interface Vector {
  key: BuildTraceKey;
  value: string;
  fingerprint: string;
  signature: { keyName: string; sig: string };
}
const fixtures = path.join(__dirname, '../../../test/unit/fixtures');
const vectors = JSON.parse(readFileSync(path.join(fixtures, 'build-trace-nix-vectors.json'), 'utf8')) as { secretKey: string; entries: Vector[] };
const nixTestKey = parseSecretKey(vectors.secretKey);

describe('build trace entries', () => {
  it('computes the fingerprint Nix computes, and Nix\'s signature verifies over it', () => {
    for (const v of vectors.entries) {
      const value = parseBuildTraceValue(v.value);
      assert.equal(buildTraceFingerprint(v.key, value), v.fingerprint);
      const nixSig = `${v.signature.keyName}:${v.signature.sig}`;
      assert.equal(signFingerprint(nixTestKey, v.fingerprint), nixSig, 'signing gives the very signature Nix made');
      assert.ok(buildTraceVerifies(v.key, { ...value, signatures: [nixSig] }, [nixTestKey.publicKey]));
    }
  });

  it('writes the value as Nix writes it, and reads both signature forms', () => {
    for (const v of vectors.entries) assert.equal(formatBuildTraceValue(parseBuildTraceValue(v.value)), v.value);
    const old = parseBuildTraceValue('{"outPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo","signatures":["a:AAAA",{"keyName":"a","sig":"AAAA"}]}');
    assert.deepEqual(old.signatures, ['a:AAAA'], 'one signature, given twice in two forms');
    assert.deepEqual(parseBuildTraceValue('{"outPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo"}').signatures, []);
  });

  it('orders signatures as Nix does (key name, then signature bytes) and drops unknown fields', () => {
    const text = formatBuildTraceValue({ outPath: 'g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo', signatures: ['b:AQ==', 'a:/w==', 'a:AA=='] });
    assert.equal(
      text,
      '{"outPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo","signatures":[{"keyName":"a","sig":"AA=="},{"keyName":"a","sig":"/w=="},{"keyName":"b","sig":"AQ=="}]}',
    );
    assert.equal(formatBuildTraceValue(parseBuildTraceValue('{"outPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo","dependentRealisations":{}}')).includes('dependent'), false);
  });

  it('fails verification for another key, output or out path; our signature verifies after a round trip', () => {
    const v = vectors.entries[0]!;
    const value = { ...parseBuildTraceValue(v.value), signatures: [`${v.signature.keyName}:${v.signature.sig}`] };
    assert.equal(buildTraceVerifies({ ...v.key, outputName: 'dev' }, value, [nixTestKey.publicKey]), false);
    assert.equal(buildTraceVerifies(v.key, { ...value, outPath: 'g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar' }, [nixTestKey.publicKey]), false);
    assert.equal(buildTraceVerifies(v.key, value, [generateSecretKey('test-key').publicKey]), false);
    const ours = generateSecretKey('ncps-1');
    const signed = parseBuildTraceValue(formatBuildTraceValue(signBuildTrace(v.key, value, ours)));
    assert.equal(signed.signatures.length, 2);
    assert.ok(buildTraceVerifies(v.key, signed, [ours.publicKey]));
    assert.ok(buildTraceVerifies(v.key, signed, [nixTestKey.publicKey]));
  });

  it('rejects malformed values and keys', () => {
    for (const bad of [
      '',
      'null',
      '[]',
      '{}',
      '{"outPath":"/nix/store/g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo"}',
      '{"outPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo","signatures":"a:AA=="}',
      '{"outPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo","signatures":[{"keyName":"a"}]}',
      '{"outPath":"g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-foo","signatures":["no-colon"]}',
    ]) {
      assert.throws(() => parseBuildTraceValue(bad), BuildTraceError, bad);
    }
    const drv = 'g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar.drv';
    assert.deepEqual(parseBuildTraceKey(drv, 'out.doi'), { drvPath: drv, outputName: 'out' });
    for (const [d, f] of [
      [drv, 'out'],
      [drv, '.doi'],
      [drv, '..doi'],
      [drv, '../x.doi'],
      ['g1w7hy3qg1w7hy3qg1w7hy3qg1w7hy3q-bar', 'out.doi'],
      ['..', 'out.doi'],
    ] as const) {
      assert.equal(parseBuildTraceKey(d, f), undefined, `${d}/${f}`);
    }
  });
});
