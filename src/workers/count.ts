// How many workers `--server-workers` asks for: a number, or 0 for one per CPU core this process
// may use. Node counts the cores of the machine that the scheduler lets the process run on;
// a container's CPU quota (cgroup v2 cpu.max) can be lower still, and then it is what counts.

import { readFileSync } from 'node:fs';
import os from 'node:os';

export function workerCount(setting: number, readFile: (file: string) => string = (f) => readFileSync(f, 'utf8')): number {
  if (setting > 0) return setting;
  const cores = os.availableParallelism();
  const quota = cgroupCpuQuota(readFile);
  return Math.max(1, quota === undefined ? cores : Math.min(cores, quota));
}

/** Whole CPUs the cgroup may use (`cpu.max` "quota period", rounded up), when it is limited. */
export function cgroupCpuQuota(readFile: (file: string) => string): number | undefined {
  let text: string;
  try {
    text = readFile('/sys/fs/cgroup/cpu.max');
  } catch {
    return undefined;
  }
  const [quota, period] = text.trim().split(/\s+/);
  const q = Number(quota);
  const p = Number(period);
  if (quota === 'max' || !(q > 0) || !(p > 0)) return undefined;
  return Math.max(1, Math.ceil(q / p));
}
