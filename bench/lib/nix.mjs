// The few pieces of the Nix binary cache format the benchmark needs to build its own upstream:
// nix32, Ed25519 keys in Nix's text form, and signed narinfo text. Kept independent of src/ so the
// benchmark needs no compile step and cannot be skewed by the code it measures.

import { createHash, createPublicKey, generateKeyPairSync, randomBytes, sign } from 'node:crypto';

const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';

/** Nix's base-32: least significant 5-bit group last, alphabet without e, o, t, u. */
export function nix32(bytes) {
  const len = Math.ceil((bytes.length * 8) / 5);
  let out = '';
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5;
    const i = b >> 3;
    const j = b & 7;
    const c = (bytes[i] >> j) | (i + 1 < bytes.length ? bytes[i + 1] << (8 - j) : 0);
    out += NIX32_ALPHABET[c & 0x1f];
  }
  return out;
}

/** A fresh signing key; `publicText` is what `--cache-upstream-public-key` takes. */
export function generateKey(name) {
  const { privateKey } = generateKeyPairSync('ed25519');
  const { x } = createPublicKey(privateKey).export({ format: 'jwk' });
  return { name, privateKey, publicText: `${name}:${Buffer.from(x, 'base64url').toString('base64')}` };
}

/** A random store path `/nix/store/<32 nix32 chars>-<name>`. */
export function randomStorePath(name) {
  return { hash: nix32(randomBytes(20)), name };
}

/**
 * Narinfo text for an uncompressed NAR whose bytes have the given sha256 digest and size, signed
 * over Nix's fingerprint `1;<path>;sha256:<nix32>;<size>;<refs>` (no references here).
 */
export function narInfoText(key, storePath, digest, size) {
  const path = `/nix/store/${storePath.hash}-${storePath.name}`;
  const hash = `sha256:${nix32(digest)}`;
  const fingerprint = `1;${path};${hash};${size};`;
  const sig = sign(null, Buffer.from(fingerprint), key.privateKey).toString('base64');
  return [
    `StorePath: ${path}`,
    `URL: nar/${nix32(digest)}.nar`,
    'Compression: none',
    `FileHash: ${hash}`,
    `FileSize: ${size}`,
    `NarHash: ${hash}`,
    `NarSize: ${size}`,
    'References: ',
    `Sig: ${key.name}:${sig}`,
    '',
  ].join('\n');
}

export function sha256(bytes) {
  return createHash('sha256').update(bytes).digest();
}
