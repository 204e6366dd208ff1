// Small, independent narinfo / nix32 / signature helpers for assertions in tests.
import { createHash, createPublicKey, verify } from 'node:crypto';
import { run } from './proc';

const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';

/** Nix's base-32 encoding (least significant 5-bit group last, as Nix prints hashes). */
export function nix32Encode(bytes: Uint8Array): string {
  const len = Math.ceil((bytes.length * 8) / 5);
  let out = '';
  for (let n = len - 1; n >= 0; n--) {
    const bit = n * 5;
    const i = Math.floor(bit / 8);
    const j = bit % 8;
    const lo = bytes[i] ?? 0;
    const hi = i + 1 < bytes.length ? (bytes[i + 1] ?? 0) : 0;
    out += NIX32_ALPHABET[((lo >> j) | (hi << (8 - j))) & 0x1f];
  }
  return out;
}

/** `sha256:<nix32>` of a buffer, the form narinfo FileHash/NarHash use. */
export function sha256Nix32(data: Uint8Array): string {
  return `sha256:${nix32Encode(createHash('sha256').update(data).digest())}`;
}

/** Normalises a narinfo hash field (`sha256:<nix32>` or `sha256:<hex>`) to `sha256:<nix32>`. */
export function normaliseHash(h: string): string {
  const m = /^sha256:([0-9a-f]{64})$/i.exec(h.trim());
  if (m && m[1]) return `sha256:${nix32Encode(Buffer.from(m[1], 'hex'))}`;
  return h.trim();
}

export interface Narinfo {
  /** All fields, last one wins (except Sig). */
  fields: Map<string, string>;
  sigs: string[];
  storePath: string;
  url: string;
  compression: string;
  fileHash?: string;
  fileSize?: number;
  narHash: string;
  narSize: number;
  references: string[];
}

export function parseNarinfo(text: string): Narinfo {
  const fields = new Map<string, string>();
  const sigs: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (line === '') continue;
    const idx = line.indexOf(': ');
    if (idx <= 0) throw new Error(`malformed narinfo line ${JSON.stringify(line)}`);
    const key = line.slice(0, idx);
    const value = line.slice(idx + 2);
    if (key === 'Sig') sigs.push(value);
    else fields.set(key, value);
  }
  const need = (k: string): string => {
    const v = fields.get(k);
    if (v === undefined) throw new Error(`narinfo lacks ${k}:\n${text}`);
    return v;
  };
  const fileSize = fields.get('FileSize');
  const fileHash = fields.get('FileHash');
  const refs = fields.get('References') ?? '';
  return {
    fields,
    sigs,
    storePath: need('StorePath'),
    url: need('URL'),
    compression: fields.get('Compression') ?? 'bzip2',
    ...(fileHash !== undefined ? { fileHash } : {}),
    ...(fileSize !== undefined ? { fileSize: Number(fileSize) } : {}),
    narHash: need('NarHash'),
    narSize: Number(need('NarSize')),
    references: refs.split(' ').filter(Boolean),
  };
}

/** The string a narinfo signature signs. */
export function fingerprint(ni: Narinfo): string {
  const storeDir = ni.storePath.slice(0, ni.storePath.lastIndexOf('/'));
  const refs = ni.references.map((r) => `${storeDir}/${r}`).join(',');
  return `1;${ni.storePath};${normaliseHash(ni.narHash)};${ni.narSize};${refs}`;
}

/** True when one of the narinfo's `Sig:` lines is a valid signature by `publicKey` (`name:base64`). */
export function hasValidSignature(ni: Narinfo, publicKey: string): boolean {
  const sep = publicKey.indexOf(':');
  const name = publicKey.slice(0, sep);
  const raw = Buffer.from(publicKey.slice(sep + 1), 'base64');
  if (sep <= 0 || raw.length !== 32) throw new Error(`bad public key ${publicKey}`);
  const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
  const message = Buffer.from(fingerprint(ni));
  return ni.sigs.some((s) => {
    const i = s.indexOf(':');
    if (s.slice(0, i) !== name) return false;
    const sig = Buffer.from(s.slice(i + 1), 'base64');
    return sig.length === 64 && verify(null, message, key, sig);
  });
}

const DECOMPRESSORS: Record<string, string> = {
  none: 'cat',
  xz: 'xz -dc',
  zstd: 'zstd -dc',
  bzip2: 'bzip2 -dc',
  br: 'brotli -dc',
  lz4: 'lz4 -dc',
  lzip: 'lzip -dc',
};

/** `sha256:<nix32>` of the NAR inside `file` (a NAR compressed with narinfo `Compression`), using
 * the command-line decompressors; undefined when the tool for that compression is not installed. */
export async function narHashOfFile(file: string, compression: string): Promise<string | undefined> {
  const tool = DECOMPRESSORS[compression];
  if (tool === undefined) return undefined;
  const bin = tool.split(' ')[0] ?? tool;
  const probe = await run('sh', ['-c', `command -v ${bin}`], { timeoutMs: 10_000 });
  if (probe.code !== 0) return undefined;
  const script = `t=$(mktemp) && ${tool} < "$1" > "$t" && sha256sum "$t"; rc=$?; rm -f "$t"; exit $rc`;
  const r = await run('sh', ['-c', script, 'sh', file], { timeoutMs: 120_000 });
  const hex = /^([0-9a-f]{64})\b/.exec(r.stdout)?.[1];
  if (r.code !== 0 || hex === undefined) throw new Error(`decompressing ${file} (${compression}) failed: ${r.stderr}`);
  return `sha256:${nix32Encode(Buffer.from(hex, 'hex'))}`;
}

/** The request path for a narinfo `URL:` (relative like `nar/x.nar.xz`, or absolute). */
export function narUrlPath(url: string): string {
  if (/^https?:\/\//.test(url)) {
    const u = new URL(url);
    return u.pathname + u.search;
  }
  return url.startsWith('/') ? url : `/${url}`;
}
