// Compression methods a binary cache may use for NAR files, with the file
// extension Nix appends to `.nar` for each (e.g. `nar/<hash>.nar.xz`).

export type Compression = 'none' | 'xz' | 'zstd' | 'bzip2' | 'br' | 'lz4' | 'lzip';

const EXTENSIONS: Readonly<Record<Compression, string>> = {
  none: '',
  xz: '.xz',
  zstd: '.zst',
  bzip2: '.bz2',
  br: '.br',
  lz4: '.lz4',
  lzip: '.lzip',
};

export const COMPRESSIONS: readonly Compression[] = Object.keys(EXTENSIONS) as Compression[];

export function isKnownCompression(s: string): s is Compression {
  return Object.prototype.hasOwnProperty.call(EXTENSIONS, s);
}

/** Extension after `.nar`: '' for none, otherwise with the leading dot. */
export function narFileExtension(c: Compression): string {
  return EXTENSIONS[c];
}

/** Inverse of narFileExtension; undefined for extensions no method uses. */
export function compressionFromExtension(ext: string): Compression | undefined {
  return COMPRESSIONS.find((c) => EXTENSIONS[c] === ext);
}

/**
 * Interpret a narinfo `Compression:` value. Nix treats a missing (or empty)
 * value as bzip2, the historical default of binary caches.
 */
export function parseCompression(value: string | undefined): Compression {
  if (value === undefined || value === '') return 'bzip2';
  if (!isKnownCompression(value)) throw new Error(`unknown compression '${value}'`);
  return value;
}

/**
 * How each compressed format's files begin (brotli has no signature). An uncompressed NAR is not
 * checked here: its NarHash is its file hash, which is checked anyway.
 */
const MAGIC: Partial<Record<Compression, Buffer>> = {
  xz: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]),
  zstd: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]),
  bzip2: Buffer.from('BZh'),
  lz4: Buffer.from([0x04, 0x22, 0x4d, 0x18]),
  lzip: Buffer.from('LZIP'),
};

/** Bytes needed to check any format's signature. */
export const MAGIC_BYTES = 6;

/**
 * Whether the first bytes of a file are what `compression` promises (`.nar.zst` must hold zstd,
 * not xz). `head` may be shorter than MAGIC_BYTES only when the file is. Returns why not, or
 * undefined when they match (or the format has no signature).
 */
export function formatMismatch(compression: Compression, head: Buffer): string | undefined {
  const magic = MAGIC[compression];
  if (!magic) return undefined;
  if (head.length >= magic.length && head.subarray(0, magic.length).equals(magic)) return undefined;
  const found = (Object.keys(MAGIC) as Compression[]).find((c) => {
    const m = MAGIC[c]!;
    return head.length >= m.length && head.subarray(0, m.length).equals(m);
  });
  return `bytes are not ${compression} data${found ? ` (they are ${found})` : ''}`;
}
