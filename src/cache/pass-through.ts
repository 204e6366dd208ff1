// A NAR streamed from upstream straight to one client, without a temp file and without keeping it:
// what a request gets while storage cannot take the NAR (the disk is full, or this NAR alone does
// not fit). The bytes are verified on the way exactly as a stored download is (format, FileHash and
// FileSize, decompressed NarHash and NarSize), and the last byte is held back until they are: a
// client of a bad transfer sees it break, never end cleanly.

import { Transform } from 'node:stream';
import { formatMismatch, MAGIC_BYTES } from '../nix';
import type { UpstreamBody } from '../upstream/pool';
import { DownloadFailed, type ExpectedFile } from './download';
import { NarHasher } from './nar-hash';

/** The verified stream of `upstream`'s body; errors (DownloadFailed) when the bytes do not verify. */
export function verifiedPassThrough(name: string, upstream: UpstreamBody, expected: ExpectedFile): Transform {
  const hasher = new NarHasher(expected.compression);
  const size = expected.size ?? upstream.contentLength;
  let head = Buffer.alloc(0);
  let tail: Buffer | undefined;
  let seen = 0;
  const fail = (why: string) => new DownloadFailed(`NAR download failed: ${name}: ${why}`);
  const stream = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _encoding, callback) {
      seen += chunk.length;
      if (size !== undefined && seen > size) return callback(fail(`upstream sent more than the expected ${size} bytes`));
      if (head.length < MAGIC_BYTES) {
        head = Buffer.concat([head, chunk.subarray(0, MAGIC_BYTES - head.length)]);
        const mismatch = head.length >= MAGIC_BYTES ? formatMismatch(expected.compression, head) : undefined;
        if (mismatch) return callback(fail(mismatch));
      }
      hasher.update(chunk).then(() => {
        // Everything but the last byte seen so far goes on; that one waits for the verdict.
        const data = tail ? Buffer.concat([tail, chunk]) : chunk;
        tail = data.subarray(data.length - 1);
        callback(null, data.length > 1 ? data.subarray(0, data.length - 1) : undefined);
      }, callback);
    },
    flush(callback) {
      void (async () => {
        const mismatch = formatMismatch(expected.compression, head);
        if (mismatch) throw fail(mismatch);
        if (size !== undefined && seen !== size) throw fail(`expected ${size} bytes, got ${seen}`);
        const hashes = await hasher.finish();
        if (expected.sha256 && !expected.sha256.equals(hashes.file.digest)) throw fail('file hash does not match the narinfo');
        if (expected.contents && !hashes.decoderUnavailable) {
          if (hashes.decodeError) throw fail(`bytes do not decompress as ${expected.compression}: ${hashes.decodeError}`);
          if (hashes.nar!.size !== expected.contents.size || !hashes.nar!.digest.equals(expected.contents.sha256)) {
            throw fail("decompressed NAR does not match the narinfo's NarHash/NarSize");
          }
        } else if (expected.contents && !expected.sha256) {
          throw fail(`cannot verify a ${expected.compression} NAR: ${hashes.decoderUnavailable}`);
        }
      })().then(
        () => callback(null, tail),
        (error: Error) => callback(error),
      );
    },
    destroy(error, callback) {
      hasher.abort();
      upstream.body.destroy();
      callback(error);
    },
  });
  upstream.body.on('error', (error: Error) => stream.destroy(fail(error.message)));
  upstream.body.pipe(stream);
  return stream;
}
