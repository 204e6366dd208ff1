// Uploads as `nix copy` makes them, without the Nix client: an uncompressed NAR of random bytes
// named by its hash, and the narinfo that points at it.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { encodeNix32 } from '../../src/nix';
import { request } from './http';
import type { NcpsProcess } from './ncps';

export async function put(ncps: NcpsProcess, url: string, body: string | Buffer): Promise<void> {
  const res = await request(ncps.url, url, { method: 'PUT', body });
  assert.equal(res.status, 204, `PUT ${url}: ${res.text}`);
}

/** PUTs `size` random bytes as an uncompressed NAR; returns its file name (`<sha256 nix32>.nar`). */
export async function uploadNar(ncps: NcpsProcess, size: number): Promise<{ narName: string; narinfo: (hash: string) => string }> {
  const bytes = randomBytes(size);
  const sha = `sha256:${encodeNix32(createHash('sha256').update(bytes).digest())}`;
  const narName = `${sha.slice('sha256:'.length)}.nar`;
  await put(ncps, `/upload/nar/${narName}`, bytes);
  const narinfo = (hash: string) =>
    [
      `StorePath: /nix/store/${hash}-uploaded`,
      `URL: nar/${narName}`,
      'Compression: none',
      `FileHash: ${sha}`,
      `FileSize: ${size}`,
      `NarHash: ${sha}`,
      `NarSize: ${size}`,
      'References: ',
      '',
    ].join('\n');
  return { narName, narinfo };
}
