// S3 (or S3-compatible) storage in ncps's layout: the bucket holds the same keys the local
// storage keeps under its root (`store/nar/<h0>/<h0h1>/<name>`, `store/narinfo/…`,
// `config/cache.key`), so several ncps nodes can share one bucket.
//
// Atomicity: S3 makes an object visible only when PutObject or CompleteMultipartUpload succeeds;
// parts of an unfinished multipart upload are never readable under the key. A reader therefore
// sees either the previous state (nothing) or the whole NAR, like the local rename.

import { createReadStream, mkdirSync } from 'node:fs';
import { stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { checkDirectoryWritable } from './writable';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type GetObjectCommandOutput,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { QUARANTINE_PREFIX, auxKey, chunkKey, fanOut, inFanOut, quarantineKey, type AuxKind, type ByteRange, type ListableAuxKind, type Storage, type StoredFileInfo, type StoredNar } from './storage';

const MiB = 1024 * 1024;
/** The largest object a single CopyObject may copy. */
const MAX_COPY_BYTES = 5 * 1024 * MiB;
const NARINFO_PREFIX = 'store/narinfo/';

export interface S3StorageOptions {
  bucket: string;
  /** e.g. `http://minio:9000`; omit for AWS itself. */
  endpoint?: string;
  region: string;
  /** Static credentials. When both are empty the SDK's default chain (env, IAM role…) is used. */
  accessKeyId: string;
  secretAccessKey: string;
  /** `http://host/bucket/key` instead of `http://bucket.host/key` (MinIO, Ceph, s3rver). */
  forcePathStyle: boolean;
  /** Local directory for downloads in progress; created if missing. */
  tempDir: string;
  /**
   * Multipart part size (bytes, >= 5 MiB). lib-storage buffers each part in memory, so one
   * upload holds at most about (queueSize + 1) × partSize bytes. Default 16 MiB.
   */
  partSize?: number;
  /** Parts uploaded in parallel per NAR. Default 2. */
  queueSize?: number;
  /** Keys per ListObjectsV2 page (S3 caps it at 1000). Only tests need a smaller one. */
  listPageSize?: number;
}

export class S3Storage implements Storage {
  readonly bucket: string;
  readonly tempDir: string;
  readonly client: S3Client;
  private readonly endpointLabel: string;
  private readonly partSize: number;
  private readonly queueSize: number;
  private readonly listPageSize: number;

  constructor(options: S3StorageOptions) {
    if (!options.bucket) throw new Error('S3 storage needs a bucket name');
    this.bucket = options.bucket;
    this.tempDir = path.resolve(options.tempDir);
    mkdirSync(this.tempDir, { recursive: true });
    this.partSize = Math.max(5 * MiB, options.partSize ?? 16 * MiB); // 5 MiB: S3's minimum part
    this.queueSize = Math.max(1, options.queueSize ?? 2);
    this.listPageSize = Math.min(1000, Math.max(1, options.listPageSize ?? 1000));
    this.endpointLabel = options.endpoint || `AWS S3 (${options.region})`;
    this.client = new S3Client(S3Storage.clientConfig(options));
  }

  /** What is handed to the S3Client constructor (exposed for tests). */
  static clientConfig(options: S3StorageOptions): S3ClientConfig {
    const config: S3ClientConfig = {
      region: options.region,
      forcePathStyle: options.forcePathStyle,
      // Only compute/validate checksums when an operation requires them. The default
      // (WHEN_SUPPORTED) sends streamed bodies with aws-chunked trailing checksums, which many
      // S3-compatible servers (and s3rver) mishandle; TLS and the NAR hash protect integrity.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    };
    if (options.endpoint) config.endpoint = options.endpoint;
    if (options.accessKeyId || options.secretAccessKey) {
      config.credentials = { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey };
    }
    return config;
  }

  narKey(name: string): string {
    return ['store', 'nar', ...fanOut(name)].join('/');
  }

  narInfoKey(hash: string): string {
    return ['store', 'narinfo', ...fanOut(`${hash}.narinfo`)].join('/');
  }

  /** Downloads land in the local temp directory first; the bucket must answer. */
  async checkWritable(): Promise<void> {
    await checkDirectoryWritable(this.tempDir, 'temp directory');
    await this.check();
  }

  /** Fails with a clear message when the bucket is missing or unreachable; call at start-up. */
  async check(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (error) {
      const status = httpStatus(error);
      const where = `bucket "${this.bucket}" at ${this.endpointLabel}`;
      if (status === 404 || errorName(error) === 'NoSuchBucket' || errorName(error) === 'NotFound') {
        throw new Error(`S3 ${where} does not exist; create it first`, { cause: error });
      }
      if (status === 403 || status === 401) {
        throw new Error(`S3 ${where}: access denied (check the access key, secret key and region)`, { cause: error });
      }
      throw new Error(`S3 ${where} cannot be reached: ${describe(error)}`, { cause: error });
    }
  }

  async getNar(name: string, range?: ByteRange): Promise<StoredNar | undefined> {
    const Key = this.narKey(name);
    let response: GetObjectCommandOutput;
    try {
      response = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key, Range: range ? `bytes=${range.start}-${range.end}` : undefined }),
      );
    } catch (error) {
      if (isNotFound(error)) return undefined;
      if (range && httpStatus(error) === 416) {
        // Past the end: like a local read stream, give an empty body and the real size.
        const size = await this.statNar(name);
        return size === undefined ? undefined : { stream: Readable.from([]), size };
      }
      throw error;
    }
    let stream = toReadable(response.Body);
    const returned = response.ContentRange ? parseContentRange(response.ContentRange) : undefined;
    let size = returned?.total ?? (response.ContentRange ? undefined : response.ContentLength);
    if (size === undefined) {
      // Content-Range without a total (`bytes 0-9/*`): ask for the size separately.
      size = await this.statNar(name).catch(() => undefined);
      if (size === undefined) {
        stream.destroy();
        return undefined;
      }
    }
    if (range) {
      // Servers may ignore Range (200 with the whole body) or send more than asked (s3rver turns
      // `bytes=0-0` into the whole object): cut the body down to exactly the requested bytes.
      const first = returned?.start ?? 0;
      const last = returned?.end ?? size - 1;
      const wantedEnd = Math.min(range.end, size - 1);
      if (first > range.start) {
        stream.destroy();
        throw new Error(`S3 answered range ${range.start}-${range.end} of ${Key} with bytes ${first}-${last}`);
      }
      if (first !== range.start || last !== wantedEnd) stream = slice(stream, range.start - first, Math.max(0, wantedEnd - range.start + 1));
    }
    return { stream, size };
  }

  async statNar(name: string): Promise<number | undefined> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.narKey(name) }));
      return head.ContentLength ?? 0;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async putNarFromFile(name: string, tempFile: string): Promise<void> {
    const { size } = await stat(tempFile);
    const body = createReadStream(tempFile);
    try {
      // Streams the file part by part (multipart above one part size, a single PutObject below);
      // the object appears under the key only when the upload completes (see the header).
      const upload = new Upload({
        client: this.client,
        params: {
          Bucket: this.bucket,
          Key: this.narKey(name),
          Body: body,
          ContentLength: size,
          ContentType: 'application/x-nix-nar',
        },
        partSize: this.partSize,
        queueSize: this.queueSize,
        // A failed upload is aborted so its parts do not linger (and cost) in the bucket.
        leavePartsOnError: false,
      });
      await upload.done();
    } finally {
      body.destroy();
    }
    await unlink(tempFile).catch(() => undefined);
  }

  async deleteNar(name: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.narKey(name) }));
  }

  /** Copied to the quarantine key, then deleted: S3 has no rename. */
  async quarantineNar(name: string, at: number): Promise<string | undefined> {
    const source = this.narKey(name);
    const target = quarantineKey(name, at);
    const size = await this.statNar(name);
    if (size === undefined) return undefined;
    if (size <= MAX_COPY_BYTES) {
      await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: target, CopySource: `${this.bucket}/${source}` }));
    } else {
      // One CopyObject takes at most 5 GiB: stream bigger ones through this process instead.
      const stored = await this.getNar(name);
      if (!stored) return undefined;
      const upload = new Upload({
        client: this.client,
        params: { Bucket: this.bucket, Key: target, Body: stored.stream, ContentLength: stored.size },
        partSize: this.partSize,
        queueSize: this.queueSize,
        leavePartsOnError: false,
      });
      await upload.done();
    }
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: source }));
    return target;
  }

  async getLegacyNarInfo(hash: string): Promise<string | undefined> {
    return this.readText(this.narInfoKey(hash));
  }

  async getLegacySecretKey(): Promise<string | undefined> {
    return this.readText('config/cache.key');
  }

  /** Hashes of the legacy narinfo files in the bucket (`store/narinfo/<h0>/<h0h1>/<hash>.narinfo`). */
  async *listLegacyNarInfos(): AsyncIterable<string> {
    for await (const { name } of this.walk(NARINFO_PREFIX)) {
      const hash = /^([0-9a-df-np-sv-z]{32})\.narinfo$/.exec(name)?.[1];
      if (hash) yield hash;
    }
  }

  listNars(): AsyncIterable<StoredFileInfo> {
    return this.walk('store/nar/');
  }

  listAuxFiles(kind: ListableAuxKind): AsyncIterable<StoredFileInfo> {
    return this.walk(`store/${kind}/`);
  }

  /**
   * The objects of a fan-out tree (`<prefix><a>/<ab>/<name>`), page by page. Keys that are not
   * where the layout puts them are skipped: they could not be read or deleted by name anyway.
   */
  private async *walk(prefix: string): AsyncIterable<StoredFileInfo> {
    let ContinuationToken: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, MaxKeys: this.listPageSize, ContinuationToken }));
      for (const object of page.Contents ?? []) {
        const parts = object.Key?.slice(prefix.length).split('/');
        if (!parts || parts.length !== 3 || !inFanOut(parts[0]!, parts[1]!, parts[2]!)) continue;
        yield { name: parts[2]!, size: object.Size ?? 0, modifiedAt: object.LastModified?.getTime() ?? Date.now() };
      }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
  }

  async deleteLegacyNarInfo(hash: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.narInfoKey(hash) }));
  }

  async getChunk(hash: string): Promise<Readable | undefined> {
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: chunkKey(hash) }));
      return toReadable(response.Body);
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async deleteChunk(hash: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: chunkKey(hash) }));
  }

  async quarantineLegacyNarInfo(hash: string): Promise<string> {
    const key = `${QUARANTINE_PREFIX}/${hash}.narinfo`;
    const text = await this.readText(this.narInfoKey(hash));
    if (text === undefined) return key;
    await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: text }));
    await this.deleteLegacyNarInfo(hash);
    return `s3://${this.bucket}/${key}`;
  }

  async getAuxFile(kind: AuxKind, name: string): Promise<Buffer | undefined> {
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: auxKey(kind, name) }));
      return response.Body ? Buffer.from(await response.Body.transformToByteArray()) : Buffer.alloc(0);
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** A single PutObject: the object appears whole or not at all. */
  async putAuxFile(kind: AuxKind, name: string, data: Buffer): Promise<void> {
    await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: auxKey(kind, name), Body: data }));
  }

  async deleteAuxFile(kind: AuxKind, name: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: auxKey(kind, name) }));
  }

  async statAuxFile(kind: AuxKind, name: string): Promise<number | undefined> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: auxKey(kind, name) }));
      return head.ContentLength ?? 0;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  close(): void {
    this.client.destroy();
  }

  private async readText(Key: string): Promise<string | undefined> {
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key }));
      if (!response.Body) return '';
      return await response.Body.transformToString('utf8');
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }
}

function errorName(error: unknown): string | undefined {
  return (error as { name?: string } | undefined)?.name;
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

/** The object (not the bucket) is absent. A missing bucket is a configuration error, not "absent". */
function isNotFound(error: unknown): boolean {
  const name = errorName(error);
  if (name === 'NoSuchBucket') return false;
  return name === 'NoSuchKey' || name === 'NotFound' || httpStatus(error) === 404;
}

function describe(error: unknown): string {
  const status = httpStatus(error);
  const message = (error as Error)?.message || errorName(error) || String(error);
  return status ? `${message} (HTTP ${status})` : message;
}

/** `bytes 0-99/1234` → {0, 99, 1234}; total undefined for `bytes 0-99/*`. */
function parseContentRange(value: string): { start: number; end: number; total: number | undefined } | undefined {
  const match = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(value);
  if (!match) return undefined;
  return { start: Number(match[1]), end: Number(match[2]), total: match[3] === '*' ? undefined : Number(match[3]) };
}

/** The `length` bytes of `source` that follow its first `skip` bytes. */
function slice(source: Readable, skip: number, length: number): Readable {
  let toSkip = skip;
  let left = length;
  const out = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      let piece = chunk;
      if (toSkip > 0) {
        const n = Math.min(toSkip, piece.length);
        toSkip -= n;
        piece = piece.subarray(n);
      }
      if (left > 0 && piece.length > 0) {
        const take = piece.subarray(0, left);
        left -= take.length;
        this.push(take);
        // Everything wanted has arrived: stop reading the rest of the body.
        if (left === 0) {
          source.unpipe(out);
          source.destroy();
          out.end();
        }
      }
      callback();
    },
  });
  source.on('error', (error) => out.destroy(error));
  out.on('close', () => source.destroy());
  if (length === 0) {
    source.destroy();
    out.end();
    return out;
  }
  return source.pipe(out);
}

function toReadable(body: unknown): Readable {
  if (body instanceof Readable) return body;
  if (body === undefined || body === null) return Readable.from([]);
  // Web streams appear only outside Node; handle them anyway.
  if (typeof (body as WebReadableStream).getReader === 'function') return Readable.fromWeb(body as WebReadableStream);
  throw new Error('S3 returned a body that is not a stream');
}
