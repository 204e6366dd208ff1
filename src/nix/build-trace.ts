// Build trace entries (Nix >= 2.35; the successor of realisations): which store path an output of
// a resolved content-addressed derivation produced. A binary cache keeps one file per entry at
// `build-trace-v2/<drv base name>/<output name>.doi`; the path is the entry's key and the file
// holds only its value, `{"outPath":"<base name>","signatures":[{"keyName":…,"sig":…}]}`.
//
// Signatures cover the whole entry without them: `{"key":{"drvPath":…,"outputName":…},
// "value":{"outPath":…}}`, keys sorted, no spaces (nlohmann::json's dump). Checked against the
// fingerprints and signatures of Nix's own test data in test/unit/build-trace.test.ts.

import { isStorePathBaseName, isStorePathName } from './store-path.js';
import { parseJsonObject } from './realisation.js';
import { signFingerprint, verifySignature, type PublicKey, type SecretKey } from './signing.js';

export interface BuildTraceKey {
  /** Base name of the derivation, `<hash>-<name>.drv`. */
  drvPath: string;
  outputName: string;
}

export interface BuildTraceValue {
  /** Base name of the output's store path. */
  outPath: string;
  /** `<key name>:<base64>`, the form the rest of ncps signs and verifies. */
  signatures: string[];
}

export class BuildTraceError extends Error {}

export const BUILD_TRACE_DIR = 'build-trace-v2';

export function isDerivationBaseName(name: string): boolean {
  return name.endsWith('.drv') && isStorePathBaseName(name);
}

export function isOutputName(name: string): boolean {
  return isStorePathName(name);
}

/** The key a cache path `<drv>/<output>.doi` names, or undefined when it names none. */
export function parseBuildTraceKey(drvPath: string, file: string): BuildTraceKey | undefined {
  if (!file.endsWith('.doi') || !isDerivationBaseName(drvPath)) return undefined;
  const outputName = file.slice(0, -'.doi'.length);
  return isOutputName(outputName) ? { drvPath, outputName } : undefined;
}

/** Nix writes signatures as objects; older writers used `name:base64` strings. Both are read. */
function parseSignature(raw: unknown): string {
  if (typeof raw === 'string' && /^[^:]+:[A-Za-z0-9+/=]+$/.test(raw)) return raw;
  if (raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
    const { keyName, sig } = raw as Record<string, unknown>;
    if (typeof keyName === 'string' && keyName !== '' && !keyName.includes(':') && typeof sig === 'string' && /^[A-Za-z0-9+/=]+$/.test(sig)) {
      return `${keyName}:${sig}`;
    }
  }
  throw new BuildTraceError('malformed signature: expected {"keyName": …, "sig": …}');
}

export function parseBuildTraceValue(text: string): BuildTraceValue {
  const { outPath, signatures = [] } = parseJsonObject(text, BuildTraceError);
  if (typeof outPath !== 'string' || !isStorePathBaseName(outPath)) {
    throw new BuildTraceError('outPath must be a store path base name such as <hash>-<name>');
  }
  if (!Array.isArray(signatures)) throw new BuildTraceError('signatures must be a list');
  return { outPath, signatures: [...new Set(signatures.map(parseSignature))] };
}

function signatureParts(sig: string): { keyName: string; sig: string } {
  const colon = sig.indexOf(':');
  return { keyName: sig.slice(0, colon), sig: sig.slice(colon + 1) };
}

/** Nix keeps signatures in a set ordered by key name, then by the raw signature bytes. */
function compareSignatures(a: string, b: string): number {
  const pa = signatureParts(a);
  const pb = signatureParts(b);
  if (pa.keyName !== pb.keyName) return Buffer.compare(Buffer.from(pa.keyName), Buffer.from(pb.keyName));
  return Buffer.compare(Buffer.from(pa.sig, 'base64'), Buffer.from(pb.sig, 'base64'));
}

/** The file a cache serves, as Nix itself writes it. Fields Nix does not know are not kept. */
export function formatBuildTraceValue(value: BuildTraceValue): string {
  const signatures = [...value.signatures].sort(compareSignatures).map(signatureParts);
  return JSON.stringify({ outPath: value.outPath, signatures });
}

export function buildTraceFingerprint(key: BuildTraceKey, value: BuildTraceValue): string {
  return JSON.stringify({ key: { drvPath: key.drvPath, outputName: key.outputName }, value: { outPath: value.outPath } });
}

export function buildTraceVerifies(key: BuildTraceKey, value: BuildTraceValue, keys: readonly PublicKey[]): boolean {
  const fingerprint = buildTraceFingerprint(key, value);
  return value.signatures.some((sig) => verifySignature(sig, fingerprint, keys));
}

/** A copy with our signature added (replacing an older one of the same key name). */
export function signBuildTrace(key: BuildTraceKey, value: BuildTraceValue, secret: SecretKey): BuildTraceValue {
  const sig = signFingerprint(secret, buildTraceFingerprint(key, value));
  return { ...value, signatures: [...value.signatures.filter((s) => !s.startsWith(`${secret.name}:`)), sig] };
}
