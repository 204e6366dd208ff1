import assert from 'node:assert/strict';
import os from 'node:os';
import { it } from 'node:test';
import { cgroupCpuQuota, workerCount } from '../../src/workers/count';

const file = (text: string | undefined) => (name: string) => {
  assert.equal(name, '/sys/fs/cgroup/cpu.max');
  if (text === undefined) throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
  return text;
};

it('--server-workers=N means N; 0 means one per usable core, capped by the cgroup CPU quota', () => {
  assert.equal(workerCount(3, file('max 100000\n')), 3);
  const cores = os.availableParallelism();
  assert.equal(workerCount(0, file(undefined)), cores, 'no cgroup: the cores');
  assert.equal(workerCount(0, file('max 100000\n')), cores, 'unlimited quota');
  assert.equal(workerCount(0, file('50000 100000\n')), 1, 'half a CPU: one worker');
  assert.equal(workerCount(0, file(`${150000 * cores} 100000\n`)), cores, 'a quota above the cores: the cores');
});

it('reads cgroup v2 cpu.max', () => {
  assert.equal(cgroupCpuQuota(file('250000 100000')), 3);
  assert.equal(cgroupCpuQuota(file('max 100000')), undefined);
  assert.equal(cgroupCpuQuota(file('garbage')), undefined);
  assert.equal(cgroupCpuQuota(file(undefined)), undefined);
});
