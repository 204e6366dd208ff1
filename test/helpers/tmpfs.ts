// A small tmpfs mounted for one test (storage that can run full). Mounting needs root (or
// CAP_SYS_ADMIN); where it is not allowed, mountTmpfs says why and the test skips.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from './proc';

export interface Tmpfs {
  dir: string;
  unmount(): Promise<void>;
}

/** Mounts a tmpfs of `sizeBytes`; returns it, or the reason it cannot be mounted here. */
export async function mountTmpfs(sizeBytes: number): Promise<Tmpfs | string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ncps-test-tmpfs-'));
  const r = await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0755`, 'tmpfs', dir], { timeoutMs: 10_000 }).catch((e: Error) => ({
    code: -1,
    stderr: e.message,
  }));
  if (r.code !== 0) {
    await rm(dir, { recursive: true, force: true });
    return `cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): ${r.stderr.trim()}`;
  }
  let unmounted = false;
  return {
    dir,
    async unmount() {
      if (unmounted) return;
      unmounted = true;
      await run('umount', ['-l', dir], { timeoutMs: 10_000 });
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Whether a tmpfs can be mounted here (tried once, synchronously, for a test's `skip`). */
export function tmpfsSkipReason(): string | false {
  const { mkdtempSync, rmSync } = require('node:fs') as typeof import('node:fs');
  const { spawnSync } = require('node:child_process') as typeof import('node:child_process');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ncps-test-tmpfs-probe-'));
  try {
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { encoding: 'utf8', timeout: 10_000 });
    if (r.status !== 0) return `cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): ${(r.stderr || r.error?.message || '').trim()}`;
    spawnSync('umount', [dir], { timeout: 10_000 });
    return false;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
