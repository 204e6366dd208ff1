import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  formatRealisation,
  generateSecretKey,
  parsePublicKey,
  parseRealisation,
  RealisationError,
  realisationVerifies,
  signRealisation,
} from '../../src/nix';

// Written by Nix 2.8: a content-addressed derivation built with `secret-key-files` set (so Nix
// signed the realisation), then `nix copy`'d to a file:// binary cache; the key made by
// `nix-store --generate-binary-cache-key up-1`.
const fixtures = path.join(__dirname, '../../../test/unit/fixtures');
const text = readFileSync(path.join(fixtures, 'realisation-ca-test.doi'), 'utf8').trim();
const nixKey = parsePublicKey(readFileSync(path.join(fixtures, 'realisation-up-1.public'), 'utf8'));

describe('realisations', () => {
  it('verifies the signature Nix made, and formats byte for byte as Nix wrote it', () => {
    const r = parseRealisation(text);
    assert.equal(realisationVerifies(r, [nixKey]), true);
    assert.equal(formatRealisation(r), text);
  });

  it('fails verification when anything signed changes, or with another key', () => {
    const r = parseRealisation(text);
    assert.equal(realisationVerifies({ ...r, outPath: r.outPath.replace(/^./, '0') }, [nixKey]), false);
    assert.equal(realisationVerifies(r, [generateSecretKey('up-1').publicKey]), false);
  });

  it('adds our signature and keeps the others', () => {
    const ours = generateSecretKey('ncps-1');
    const signed = signRealisation(parseRealisation(text), ours);
    assert.equal(signed.signatures.length, 2);
    assert.equal(realisationVerifies(signed, [ours.publicKey]), true);
    assert.equal(realisationVerifies(signed, [nixKey]), true);
    assert.equal(realisationVerifies(parseRealisation(formatRealisation(signed)), [ours.publicKey]), true);
  });

  it('rejects malformed realisations', () => {
    for (const bad of ['', 'null', '[]', '{"id":"x","outPath":"a"}', '{"id":"sha256:00!out"}', '{"id":"sha256:' + '0'.repeat(64) + '!out","outPath":"a","signatures":[1]}']) {
      assert.throws(() => parseRealisation(bad), RealisationError, bad);
    }
  });
});
