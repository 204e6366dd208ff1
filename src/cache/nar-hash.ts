// Hashes NARs the way the narinfo describes them: the bytes as they are (FileHash) and what they
// decompress to (NarHash, which the signature covers), in one pass. Downloads and uploads are
// checked with it before anything is committed; fsck --verify-content checks stored files.
// Brotli is built into Node; the other formats go through the usual command-line tools.

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createBrotliDecompress } from 'node:zlib';
import type { Compression, HashAlgorithm } from '../nix';

const TOOLS: Partial<Record<Compression, [string, string[]]>> = {
  xz: ['xz', ['-dc']],
  zstd: ['zstd', ['-dcq']],
  bzip2: ['bzip2', ['-dc']],
  lz4: ['lz4', ['-dc']],
  lzip: ['lzip', ['-dc']],
};

/** What a stored NAR's bytes hash to: as stored (FileHash) and decompressed (NarHash). */
export interface StoredNarHashes {
  file: { digest: Buffer; size: number };
  /** Undefined when the bytes do not decompress (`decodeError` says why). */
  nar?: { digest: Buffer; size: number };
  decodeError?: string;
  /** Set (by NarHasher.finish) when the decompressor could not run at all: `nar` is unknown. */
  decoderUnavailable?: string;
}

/** The decompressor cannot run at all (not installed): the NAR cannot be checked here. */
export class DecompressorUnavailable extends Error {}

interface Decoder {
  input: Writable;
  output: Readable;
  /** Ends the decoder at once (a child process is killed). */
  stop: () => void;
  /** Settles once the decoder is done; rejects when the bytes did not decompress. */
  finished: Promise<void>;
}

function decoderFor(compression: Compression): Decoder | undefined {
  if (compression === 'none') return undefined;
  if (compression === 'br') {
    const zlib = createBrotliDecompress();
    const finished = new Promise<void>((resolve, reject) => {
      zlib.once('end', resolve);
      zlib.once('error', reject);
    });
    finished.catch(() => undefined);
    return { input: zlib, output: zlib, finished, stop: () => zlib.destroy() };
  }
  const tool = TOOLS[compression];
  if (!tool) throw new DecompressorUnavailable(`cannot decompress ${compression}`);
  const [command, args] = tool;
  // The tool reads the bytes on stdin: they come from storage (a file or an S3 object).
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString('utf8')).slice(-500)));
  const finished = new Promise<void>((resolve, reject) => {
    child.once('error', (error) => reject(new DecompressorUnavailable(`cannot run ${command}: ${error.message}`)));
    child.once('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${command} could not decompress it (exit ${code}${stderr.trim() ? `: ${stderr.trim().split('\n')[0]}` : ''})`));
    });
  });
  // Looked at once the input is fed; until then a failure must not count as unhandled.
  finished.catch(() => undefined);
  return { input: child.stdin, output: child.stdout, finished, stop: () => child.kill('SIGKILL') };
}

/**
 * Hashes a NAR as its bytes go by, in one pass: the bytes as they are with `fileAlgorithm`, and
 * what the decompressor makes of them with `narAlgorithm`. Downloads feed it chunk by chunk while
 * they write (so the NarHash is known the moment the last byte has landed); fsck feeds it a stored
 * file. Bytes that do not decompress are reported in `decodeError` (the bytes are still hashed to
 * the end); a decompressor that cannot run, in `decoderUnavailable`.
 */
export class NarHasher {
  private readonly fileHash;
  private readonly narHash;
  private fileSize = 0;
  private narSize = 0;
  private readonly decoder: Decoder | undefined;
  private readonly decoded: Promise<void> | undefined;
  private inputBroken = false;

  constructor(
    compression: Compression,
    private readonly algorithms: { file: HashAlgorithm; nar: HashAlgorithm } = { file: 'sha256', nar: 'sha256' },
  ) {
    this.fileHash = createHash(algorithms.file);
    this.narHash = createHash(algorithms.nar);
    this.decoder = decoderFor(compression);
    if (!this.decoder) return;
    // A decoder that gives up (corrupt bytes) closes its input: keep hashing the bytes anyway.
    this.decoder.input.on('error', () => (this.inputBroken = true));
    this.decoder.input.on('close', () => (this.inputBroken = true));
    this.decoded = pipeline(
      this.decoder.output,
      new Writable({
        write: (chunk: Buffer, _encoding, callback) => {
          this.narHash.update(chunk);
          this.narSize += chunk.length;
          callback();
        },
      }),
    );
    this.decoded.catch(() => undefined);
  }

  /** Bytes seen so far. */
  get size(): number {
    return this.fileSize;
  }

  /** Takes the next bytes; resolves once the decompressor has room for more. */
  update(chunk: Buffer): Promise<void> {
    this.fileHash.update(chunk);
    this.fileSize += chunk.length;
    const decoder = this.decoder;
    if (!decoder) {
      if (this.algorithms.nar !== this.algorithms.file) this.narHash.update(chunk);
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      if (this.inputBroken || decoder.input.write(chunk)) return resolve();
      const done = () => {
        decoder.input.off('drain', done);
        decoder.input.off('close', done);
        resolve();
      };
      decoder.input.on('drain', done);
      decoder.input.on('close', done);
    });
  }

  /** After the last byte: both hashes, or why the bytes did not decompress (or could not be). */
  async finish(): Promise<StoredNarHashes> {
    const file = { digest: this.fileHash.digest(), size: this.fileSize };
    const decoder = this.decoder;
    if (!decoder) {
      return { file, nar: { digest: this.algorithms.file === this.algorithms.nar ? file.digest : this.narHash.digest(), size: this.fileSize } };
    }
    if (!this.inputBroken) decoder.input.end();
    const [decodedResult, finishedResult] = await Promise.allSettled([this.decoded!, decoder.finished]);
    if (finishedResult.status === 'rejected') {
      const reason = finishedResult.reason as Error;
      if (reason instanceof DecompressorUnavailable) return { file, decoderUnavailable: reason.message };
      return { file, decodeError: reason.message };
    }
    if (decodedResult.status === 'rejected') return { file, decodeError: (decodedResult.reason as Error).message };
    return { file, nar: { digest: this.narHash.digest(), size: this.narSize } };
  }

  /** Stops the decompressor (the bytes will not come). */
  abort(): void {
    if (!this.decoder) return;
    this.decoder.input.destroy();
    this.decoder.output.destroy();
    this.decoder.stop();
  }
}

/**
 * Hashes a stored NAR in one pass (see NarHasher): what fsck --verify-content uses.
 */
export async function hashStoredNar(
  source: Readable,
  compression: Compression,
  algorithms: { file: HashAlgorithm; nar: HashAlgorithm },
): Promise<StoredNarHashes> {
  const hasher = new NarHasher(compression, algorithms);
  try {
    await pipeline(
      source,
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          hasher.update(chunk).then(() => callback(), callback);
        },
      }),
    );
  } catch (error) {
    hasher.abort();
    throw error;
  }
  const hashes = await hasher.finish();
  if (hashes.decoderUnavailable) throw new DecompressorUnavailable(hashes.decoderUnavailable);
  return hashes;
}
