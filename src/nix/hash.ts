// Content hashes as Nix writes them: `<algo>:<digest>` with the digest in
// nix32, base16 or base64 (told apart by length), or SRI `<algo>-<base64>`.

import { createHash } from 'node:crypto';
import { decodeNix32, encodeNix32, nix32Length } from './nix32.js';

export type HashAlgorithm = 'md5' | 'sha1' | 'sha256' | 'sha512';

const DIGEST_SIZE: Readonly<Record<HashAlgorithm, number>> = {
  md5: 16,
  sha1: 20,
  sha256: 32,
  sha512: 64,
};

export function isHashAlgorithm(s: string): s is HashAlgorithm {
  return Object.prototype.hasOwnProperty.call(DIGEST_SIZE, s);
}

export function digestSize(algorithm: HashAlgorithm): number {
  return DIGEST_SIZE[algorithm];
}

const BASE16_RE = /^[0-9a-fA-F]*$/;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

// Buffer.from(..., 'base64') silently skips junk, so insist on the canonical
// padded form by re-encoding.
function decodeBase64Strict(s: string): Buffer | undefined {
  if (s.length % 4 !== 0 || !BASE64_RE.test(s)) return undefined;
  const bytes = Buffer.from(s, 'base64');
  return bytes.toString('base64') === s ? bytes : undefined;
}

export class NixHash {
  readonly algorithm: HashAlgorithm;
  readonly digest: Buffer;

  constructor(algorithm: HashAlgorithm, digest: Uint8Array) {
    if (!isHashAlgorithm(algorithm)) throw new Error(`unknown hash algorithm '${String(algorithm)}'`);
    if (digest.length !== DIGEST_SIZE[algorithm]) {
      throw new Error(`${algorithm} digest must be ${DIGEST_SIZE[algorithm]} bytes, got ${digest.length}`);
    }
    this.algorithm = algorithm;
    this.digest = Buffer.from(digest); // own copy: the hash is a value
  }

  /** Hash `data` with `algorithm`. */
  static of(algorithm: HashAlgorithm, data: Uint8Array | string): NixHash {
    return new NixHash(algorithm, createHash(algorithm).update(data).digest());
  }

  /**
   * Parse `algo:<nix32|base16|base64>` or SRI `algo-<base64>`. A bare digest
   * (no prefix) is accepted only when `defaultAlgorithm` is given, e.g. the
   * nix32 file hash in a NAR URL.
   */
  static parse(s: string, defaultAlgorithm?: HashAlgorithm): NixHash {
    const colon = s.indexOf(':');
    const dash = s.indexOf('-');
    if (colon > 0) {
      return NixHash.fromDigestString(algorithmOf(s.slice(0, colon), s), s.slice(colon + 1), s);
    }
    if (dash > 0 && isHashAlgorithm(s.slice(0, dash))) {
      const algorithm = s.slice(0, dash) as HashAlgorithm;
      const bytes = decodeBase64Strict(s.slice(dash + 1));
      if (!bytes || bytes.length !== DIGEST_SIZE[algorithm]) {
        throw new Error(`invalid SRI hash '${s}': expected base64 of ${DIGEST_SIZE[algorithm]} bytes`);
      }
      return new NixHash(algorithm, bytes);
    }
    if (defaultAlgorithm !== undefined) return NixHash.fromDigestString(defaultAlgorithm, s, s);
    throw new Error(`invalid hash '${s}': expected '<algorithm>:<digest>' or SRI '<algorithm>-<base64>'`);
  }

  private static fromDigestString(algorithm: HashAlgorithm, d: string, whole: string): NixHash {
    const size = DIGEST_SIZE[algorithm];
    try {
      if (d.length === size * 2 && BASE16_RE.test(d)) return new NixHash(algorithm, Buffer.from(d, 'hex'));
      if (d.length === nix32Length(size)) return new NixHash(algorithm, decodeNix32(d));
      const b64 = decodeBase64Strict(d);
      if (b64 && b64.length === size) return new NixHash(algorithm, b64);
    } catch (e) {
      throw new Error(`invalid ${algorithm} hash '${whole}': ${(e as Error).message}`);
    }
    throw new Error(
      `invalid ${algorithm} hash '${whole}': digest is not base16, nix32 or base64 of ${size} bytes`,
    );
  }

  /** `algo:<nix32>`, the form Nix writes in narinfo files and fingerprints. */
  toNix32(): string {
    return `${this.algorithm}:${this.nix32Digest()}`;
  }

  /** The nix32 digest alone, as used in NAR file names. */
  nix32Digest(): string {
    return encodeNix32(this.digest);
  }

  toSRI(): string {
    return `${this.algorithm}-${this.digest.toString('base64')}`;
  }

  /** Lower-case hex digest without an algorithm prefix. */
  toBase16(): string {
    return this.digest.toString('hex');
  }

  equals(other: NixHash): boolean {
    return this.algorithm === other.algorithm && this.digest.equals(other.digest);
  }

  toString(): string {
    return this.toNix32();
  }
}

function algorithmOf(name: string, whole: string): HashAlgorithm {
  if (!isHashAlgorithm(name)) throw new Error(`invalid hash '${whole}': unknown algorithm '${name}'`);
  return name;
}
