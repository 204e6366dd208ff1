// A real S3-protocol server for integration tests: s3rver (devDependency) run as a child process
// on 127.0.0.1, so its own memory use does not show up in the test process's measurements.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { killOnExit, makeTempDir } from './proc';

export interface S3rverInstance {
  /** `http://127.0.0.1:PORT` */
  endpoint: string;
  port: number;
  /** The bucket created at start. */
  bucket: string;
  /** s3rver's data directory (objects are files under `<dir>/<bucket>/…`). */
  dir: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  logs(): string;
  stop(): Promise<void>;
}

export interface S3rverOptions {
  /** Bucket to create at start. Default `ncps-test`. */
  bucket?: string;
  /** How long to wait for the server. Default 15 s. */
  readyTimeoutMs?: number;
}

function s3rverBin(): string {
  return path.join(path.dirname(require.resolve('s3rver/package.json')), 'bin', 's3rver.js');
}

/** Whether the s3rver package is installed (it is a devDependency). */
export function s3rverAvailable(): boolean {
  try {
    s3rverBin();
    return true;
  } catch {
    return false;
  }
}

export async function startS3rver(options: S3rverOptions = {}): Promise<S3rverInstance> {
  const bucket = options.bucket ?? 'ncps-test';
  const dir = await makeTempDir('s3rver');
  // Port 0: the kernel picks a free port and s3rver prints it. s3rver encrypts ListObjectsV2
  // continuation tokens with DES, which OpenSSL 3 offers only through its legacy provider.
  const args = ['--openssl-legacy-provider', s3rverBin(), '--directory', dir, '--address', '127.0.0.1', '--port', '0', '--silent', '--configure-bucket', bucket];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  killOnExit(child);
  let output = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let onEarlyExit: ((code: number | null) => void) | undefined;

  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`s3rver did not start within ${options.readyTimeoutMs ?? 15_000} ms:\n${output}`)), options.readyTimeoutMs ?? 15_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString('utf8');
      const match = /S3rver listening on [^\s:]+:(\d+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    };
    onEarlyExit = (code) => fail(new Error(`s3rver exited (${code}) before listening:\n${output}`));
    function fail(error: Error) {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(error);
    }
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.once('exit', onEarlyExit);
    child.once('error', (e) => fail(e));
  });
  child.off('exit', onEarlyExit!);

  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    bucket,
    dir,
    region: 'us-east-1',
    // s3rver checks signatures against these fixed credentials.
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    logs: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(killer);
    },
  };
}

/** The flags that point ncps's storage at this s3rver: its bucket, path-style, its credentials. */
export function ncpsS3Args(s3: S3rverInstance): string[] {
  return [
    `--cache-storage-s3-bucket=${s3.bucket}`,
    `--cache-storage-s3-endpoint=${s3.endpoint}`,
    `--cache-storage-s3-region=${s3.region}`,
    `--cache-storage-s3-access-key-id=${s3.accessKeyId}`,
    `--cache-storage-s3-secret-access-key=${s3.secretAccessKey}`,
    '--cache-storage-s3-force-path-style',
  ];
}
