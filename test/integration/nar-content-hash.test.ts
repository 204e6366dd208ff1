// hashStoredNar, which fsck --verify-content uses: one pass over a stored NAR gives the hash of
// its bytes (FileHash) and of what the real decompressor makes of them (NarHash). Damaged bytes
// either hash differently or do not decompress; either way the stored bytes are hashed whole.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { brotliCompressSync } from 'node:zlib';
import { hashStoredNar } from '../../src/cache/nar-hash';
import type { Compression } from '../../src/nix';

const TOOLS: Array<[Compression, string, string[]]> = [
  ['xz', 'xz', ['-c']],
  ['zstd', 'zstd', ['-c', '-q']],
  ['bzip2', 'bzip2', ['-c']],
  ['lz4', 'lz4', ['-c']],
  ['lzip', 'lzip', ['-c']],
];

function compress(command: string, args: string[], data: Buffer): Buffer | undefined {
  const r = spawnSync(command, args, { input: data, maxBuffer: 64 << 20 });
  return r.status === 0 ? r.stdout : undefined;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest();

/** The bytes in small chunks, as storage streams them. */
function stream(data: Buffer): Readable {
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += 16 * 1024) chunks.push(data.subarray(i, i + 16 * 1024));
  return Readable.from(chunks);
}

// Compressible but not trivial: a NAR is mostly file contents.
const nar = Buffer.concat([randomBytes(300 * 1024), Buffer.alloc(700 * 1024, 'nix ')]);

describe('hashStoredNar', () => {
  it('none: both hashes are of the bytes as stored', async () => {
    const h = await hashStoredNar(stream(nar), 'none', { file: 'sha256', nar: 'sha256' });
    assert.ok(h.file.digest.equals(sha256(nar)));
    assert.ok(h.nar?.digest.equals(sha256(nar)));
    assert.equal(h.nar?.size, nar.length);
  });

  it('br (built into Node): FileHash of the compressed bytes, NarHash of the NAR', async () => {
    const file = brotliCompressSync(nar);
    const h = await hashStoredNar(stream(file), 'br', { file: 'sha256', nar: 'sha256' });
    assert.ok(h.file.digest.equals(sha256(file)));
    assert.equal(h.file.size, file.length);
    assert.ok(h.nar?.digest.equals(sha256(nar)));
    assert.equal(h.nar?.size, nar.length);
  });

  for (const [compression, command, args] of TOOLS) {
    const file = compress(command, args, nar);
    describe(compression, { skip: file ? false : `${command} is not installed` }, () => {
      it('hashes the stored bytes and, through the decompressor, the NAR', async () => {
        const h = await hashStoredNar(stream(file!), compression, { file: 'sha256', nar: 'sha256' });
        assert.ok(h.file.digest.equals(sha256(file!)));
        assert.equal(h.file.size, file!.length);
        assert.equal(h.decodeError, undefined);
        assert.ok(h.nar?.digest.equals(sha256(nar)), 'NarHash of the decompressed bytes');
        assert.equal(h.nar?.size, nar.length);
      });

      it('a flipped byte changes FileHash and breaks the NAR (a different hash, or no decompression at all)', async () => {
        const damaged = Buffer.from(file!);
        damaged[Math.floor(damaged.length / 2)] ^= 0x10;
        const h = await hashStoredNar(stream(damaged), compression, { file: 'sha256', nar: 'sha256' });
        assert.ok(h.file.digest.equals(sha256(damaged)), 'the stored bytes are hashed whole even when the decompressor gives up');
        assert.equal(h.file.size, damaged.length);
        assert.ok(h.decodeError !== undefined || !h.nar!.digest.equals(sha256(nar)), JSON.stringify(h));
      });

      it('truncated bytes do not decompress', async () => {
        const cut = file!.subarray(0, Math.floor(file!.length / 2));
        const h = await hashStoredNar(stream(cut), compression, { file: 'sha256', nar: 'sha256' });
        assert.equal(h.file.size, cut.length);
        assert.ok(h.decodeError !== undefined || !h.nar!.digest.equals(sha256(nar)), JSON.stringify(h));
      });
    });
  }
});
