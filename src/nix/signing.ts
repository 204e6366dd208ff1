// Ed25519 keys and signatures in Nix's text formats:
//   secret key  `name:base64(32-byte seed ‖ 32-byte public key)` (libsodium layout)
//   public key  `name:base64(32-byte public key)`
//   signature   `name:base64(64-byte signature)` over the narinfo fingerprint

import { type KeyObject, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { type NarInfo, narInfoFingerprint } from './narinfo.js';

export interface PublicKey {
  name: string;
  key: KeyObject;
  /** 'name:base64(32 bytes)' */
  text: string;
}

export interface SecretKey {
  name: string;
  privateKey: KeyObject;
  publicKey: PublicKey;
  /** 'name:base64(64 bytes)' */
  text: string;
}

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** Split `name:base64` at the first colon and decode strictly; undefined if malformed. */
function splitNamed(text: string): { name: string; bytes: Buffer } | undefined {
  const colon = text.indexOf(':');
  if (colon <= 0) return undefined;
  const data = text.slice(colon + 1);
  if (data.length % 4 !== 0 || !BASE64_RE.test(data)) return undefined;
  const bytes = Buffer.from(data, 'base64');
  if (bytes.toString('base64') !== data) return undefined;
  return { name: text.slice(0, colon), bytes };
}

function checkKeyName(name: string): void {
  if (name === '' || /[:\s]/.test(name)) {
    throw new Error(`invalid key name '${name}': must be non-empty without ':' or whitespace`);
  }
}

function publicKeyFromRaw(name: string, raw: Buffer): PublicKey {
  const key = createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') },
    format: 'jwk',
  });
  return { name, key, text: `${name}:${raw.toString('base64')}` };
}

function rawPublicKey(key: KeyObject): Buffer {
  const { x } = createPublicKey(key).export({ format: 'jwk' });
  return Buffer.from(x!, 'base64url');
}

export function parsePublicKey(text: string): PublicKey {
  const parsed = splitNamed(text.trim());
  if (!parsed || parsed.bytes.length !== 32) {
    throw new Error("invalid public key: expected 'name:base64' of a 32-byte Ed25519 key");
  }
  checkKeyName(parsed.name);
  return publicKeyFromRaw(parsed.name, parsed.bytes);
}

export function parseSecretKey(text: string): SecretKey {
  const parsed = splitNamed(text.trim());
  if (!parsed || parsed.bytes.length !== 64) {
    throw new Error("invalid secret key: expected 'name:base64' of 64 bytes (Ed25519 seed and public key)");
  }
  checkKeyName(parsed.name);
  const seed = parsed.bytes.subarray(0, 32);
  const pub = parsed.bytes.subarray(32);
  const privateKey = createPrivateKey({
    key: { kty: 'OKP', crv: 'Ed25519', d: seed.toString('base64url'), x: pub.toString('base64url') },
    format: 'jwk',
  });
  // Node derives the public key from the seed and ignores `x`, whereas
  // libsodium (Nix) signs with the stored half; a mismatch means a corrupt key.
  if (!rawPublicKey(privateKey).equals(pub)) {
    throw new Error('invalid secret key: public half does not match the seed');
  }
  return {
    name: parsed.name,
    privateKey,
    publicKey: publicKeyFromRaw(parsed.name, Buffer.from(pub)),
    text: `${parsed.name}:${parsed.bytes.toString('base64')}`,
  };
}

export function generateSecretKey(name: string): SecretKey {
  checkKeyName(name);
  const { privateKey } = generateKeyPairSync('ed25519');
  const { d, x } = privateKey.export({ format: 'jwk' });
  const raw = Buffer.concat([Buffer.from(d!, 'base64url'), Buffer.from(x!, 'base64url')]);
  return parseSecretKey(`${name}:${raw.toString('base64')}`);
}

/** Sign a fingerprint; Ed25519 is deterministic, so this matches Nix byte for byte. */
export function signFingerprint(key: SecretKey, fingerprint: string): string {
  const sig = sign(null, Buffer.from(fingerprint, 'utf8'), key.privateKey);
  return `${key.name}:${sig.toString('base64')}`;
}

/** True iff `sig` is by a key in `keys` (matched by name) and verifies. Never throws. */
export function verifySignature(sig: string, fingerprint: string, keys: readonly PublicKey[]): boolean {
  const parsed = splitNamed(sig);
  if (!parsed || parsed.bytes.length !== 64) return false;
  const data = Buffer.from(fingerprint, 'utf8');
  return keys.some((k) => {
    if (k.name !== parsed.name) return false;
    try {
      return verify(null, data, k.key, parsed.bytes);
    } catch {
      return false;
    }
  });
}

/** Copy of `n` signed by `key`, replacing any earlier signature under the same key name. */
export function signNarInfo(n: NarInfo, key: SecretKey): NarInfo {
  const ours = signFingerprint(key, narInfoFingerprint(n));
  const sameName = (s: string): boolean => s.startsWith(`${key.name}:`);
  const sigs: string[] = [];
  let placed = false;
  for (const s of n.sigs) {
    if (!sameName(s)) sigs.push(s);
    else if (!placed) {
      sigs.push(ours);
      placed = true;
    }
  }
  if (!placed) sigs.push(ours);
  return { ...n, references: [...n.references], sigs, extra: n.extra.map(([k, v]) => [k, v]) };
}

/**
 * What the signatures of a narinfo say against `keys`: `trusted` when one verifies; `forged` when
 * one is under the name of a key in `keys` but does not verify (the text was changed after
 * signing, or the key is not the one trusted); else `unsigned` (no signature, or only signatures
 * by keys nobody configured).
 */
export function narInfoTrust(n: NarInfo, keys: readonly PublicKey[]): 'trusted' | 'forged' | 'unsigned' {
  let fingerprint: string;
  try {
    fingerprint = narInfoFingerprint(n);
  } catch {
    return 'unsigned';
  }
  if (n.sigs.some((s) => verifySignature(s, fingerprint, keys))) return 'trusted';
  const names = new Set(keys.map((k) => k.name));
  return n.sigs.some((s) => names.has(s.slice(0, Math.max(0, s.indexOf(':'))))) ? 'forged' : 'unsigned';
}

/** True if any of the narinfo's signatures verifies with one of `keys`. */
export function narInfoVerifies(n: NarInfo, keys: readonly PublicKey[]): boolean {
  let fingerprint: string;
  try {
    fingerprint = narInfoFingerprint(n);
  } catch {
    return false; // e.g. a non-sha256 NarHash cannot carry a valid signature
  }
  return n.sigs.some((s) => verifySignature(s, fingerprint, keys));
}
