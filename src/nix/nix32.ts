// Nix's own base-32 encoding ("nix32"), used for store path hashes and for
// hashes in narinfo files. It is not RFC 4648: the alphabet omits e, o, t, u
// (to avoid accidental words) and characters are emitted starting from the
// most significant bits of the byte string read as a little-endian number.

export const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';

// Reverse lookup: char code -> digit, or -1 when the char is not in the alphabet.
const DIGIT_OF: Int8Array = (() => {
  const table = new Int8Array(128).fill(-1);
  for (let d = 0; d < NIX32_ALPHABET.length; d++) table[NIX32_ALPHABET.charCodeAt(d)] = d;
  return table;
})();

/** Whether `text` holds only nix32 characters from `start` to `end` (exclusive). */
export function isNix32Span(text: string, start: number, end: number): boolean {
  for (let i = start; i < end; i++) {
    const code = text.charCodeAt(i);
    if (code >= 128 || DIGIT_OF[code]! < 0) return false;
  }
  return true;
}

/** Number of nix32 characters needed for `byteLength` bytes. */
export function nix32Length(byteLength: number): number {
  return Math.ceil((byteLength * 8) / 5);
}

/** Number of bytes a nix32 string of `charLength` characters decodes to. */
function byteLengthOf(charLength: number): number {
  return Math.floor((charLength * 5) / 8);
}

export function encodeNix32(bytes: Uint8Array): string {
  const size = bytes.length;
  const len = nix32Length(size);
  let out = '';
  // Character n covers bits [5n, 5n+5) of the little-endian number; the
  // highest n is written first.
  for (let n = len - 1; n >= 0; n--) {
    const b = n * 5;
    const i = (b / 8) | 0;
    const j = b % 8;
    const c = (bytes[i]! >> j) | (i + 1 < size ? bytes[i + 1]! << (8 - j) : 0);
    out += NIX32_ALPHABET[c & 0x1f];
  }
  return out;
}

/**
 * Decode a nix32 string. The byte length is implied by the string length;
 * lengths that no byte string encodes to, invalid characters and set bits
 * beyond the last byte are all rejected (as Nix does), so every accepted
 * string is the canonical encoding of its result.
 */
export function decodeNix32(s: string): Buffer {
  const size = byteLengthOf(s.length);
  if (nix32Length(size) !== s.length) {
    throw new Error(`invalid nix32 string: length ${s.length} is not the encoding of a whole number of bytes`);
  }
  const out = Buffer.alloc(size);
  for (let n = 0; n < s.length; n++) {
    const code = s.charCodeAt(s.length - 1 - n);
    const digit = code < 128 ? DIGIT_OF[code]! : -1;
    if (digit < 0) {
      throw new Error(`invalid nix32 string: bad character ${JSON.stringify(s[s.length - 1 - n])}`);
    }
    const b = n * 5;
    const i = (b / 8) | 0;
    const j = b % 8;
    out[i] = out[i]! | ((digit << j) & 0xff);
    const carry = digit >> (8 - j);
    if (i + 1 < size) {
      out[i + 1] = out[i + 1]! | carry;
    } else if (carry !== 0) {
      throw new Error('invalid nix32 string: non-zero bits beyond the encoded bytes');
    }
  }
  return out;
}

/** True if `s` decodes as nix32 (and, if given, has exactly `length` characters). */
export function isNix32(s: string, length?: number): boolean {
  if (length !== undefined && s.length !== length) return false;
  try {
    decodeNix32(s);
    return true;
  } catch {
    return false;
  }
}
