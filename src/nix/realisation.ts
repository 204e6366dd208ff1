// Realisations (`realisations/<drv hash>!<output>.doi`): which store path a content-addressed
// derivation output resolved to. Nix signs the JSON without its `signatures` field, serialised
// with sorted keys and no spaces (checked against a realisation that Nix 2.8 signed; see
// test/unit/realisation.test.ts).

import { signFingerprint, verifySignature, type PublicKey, type SecretKey } from './signing';

export interface Realisation {
  id: string;
  outPath: string;
  signatures: string[];
  dependentRealisations: Record<string, string>;
  /** Anything else Nix may add later, kept as it came. */
  extra: Record<string, unknown>;
}

export class RealisationError extends Error {}

/** `sha256:<64 hex>!<output name>` */
export const REALISATION_ID = /^sha256:[0-9a-f]{64}![A-Za-z0-9+\-._?=]{1,211}$/;

/** `text` as a JSON object; anything else is thrown as a `Failure` saying what it is instead. */
export function parseJsonObject(text: string, Failure: new (message: string) => Error): Record<string, unknown> {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new Failure(`not JSON: ${(error as Error).message}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) throw new Failure('not a JSON object');
  return data as Record<string, unknown>;
}

export function parseRealisation(text: string): Realisation {
  const { id, outPath, signatures = [], dependentRealisations = {}, ...extra } = parseJsonObject(text, RealisationError);
  if (typeof id !== 'string' || !REALISATION_ID.test(id)) throw new RealisationError('missing or malformed id');
  if (typeof outPath !== 'string' || outPath === '') throw new RealisationError('missing outPath');
  if (!Array.isArray(signatures) || signatures.some((s) => typeof s !== 'string')) throw new RealisationError('malformed signatures');
  if (dependentRealisations === null || typeof dependentRealisations !== 'object' || Array.isArray(dependentRealisations)) {
    throw new RealisationError('malformed dependentRealisations');
  }
  return { id, outPath, signatures: signatures as string[], dependentRealisations: dependentRealisations as Record<string, string>, extra };
}

/** JSON with object keys sorted at every level, as nlohmann::json (std::map) writes it. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.keys(value as object)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonicalJson((value as Record<string, unknown>)[key])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value);
}

function asObject(r: Realisation, withSignatures: boolean): Record<string, unknown> {
  return {
    ...r.extra,
    id: r.id,
    outPath: r.outPath,
    dependentRealisations: r.dependentRealisations,
    ...(withSignatures ? { signatures: r.signatures } : {}),
  };
}

export function realisationFingerprint(r: Realisation): string {
  return canonicalJson(asObject(r, false));
}

export function formatRealisation(r: Realisation): string {
  return canonicalJson(asObject(r, true));
}

export function realisationVerifies(r: Realisation, keys: readonly PublicKey[]): boolean {
  const fingerprint = realisationFingerprint(r);
  return r.signatures.some((sig) => verifySignature(sig, fingerprint, keys));
}

/** A copy with our signature added (replacing an older one of the same key name). */
export function signRealisation(r: Realisation, key: SecretKey): Realisation {
  const sig = signFingerprint(key, realisationFingerprint(r));
  return { ...r, signatures: [...r.signatures.filter((s) => !s.startsWith(`${key.name}:`)), sig] };
}
