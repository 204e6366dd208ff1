// ncps where memory may not be written and then executed, as under nixpkgs' services.ncps
// (MemoryDenyWriteExecute=true): there V8 cannot compile to machine code and plain Node.js aborts.
// The package's bin/ncps (nix/ncps-launcher.sh) asks nix/jit-probe.c first and then runs Node.js
// --jitless, where upstreams are fetched with Node's own HTTP client (no WebAssembly for undici).
// Both are built and run here as the Nix package builds them, under the kernel's own form of that
// restriction (prctl PR_SET_MDWE, Linux ≥ 6.3, set by a small Python preamble before exec), and the
// real Nix client substitutes through it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { signedUpstream, substituteAndVerify, teardown, type SignedUpstream } from '../helpers/fixture';
import { NCPS_BUNDLE, REPO_ROOT, startNcps, type NcpsProcess } from '../helpers/ncps';
import { nixAvailable } from '../helpers/nix';
import { makeTempDir } from '../helpers/proc';

// Sets PR_SET_MDWE (refuse to make memory executable) and execs the rest of the command line.
const MDWE = `
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(77)
os.execvp(sys.argv[1], sys.argv[1:])
`;

const cc = ['cc', 'gcc'].find((c) => spawnSync(c, ['--version'], { stdio: 'ignore' }).status === 0);
const python = spawnSync('python3', ['-c', MDWE, 'true'], { stdio: 'ignore' });
const skip = !nixAvailable()
  ? 'nix not installed'
  : !cc
    ? 'no C compiler for nix/jit-probe.c'
    : python.status !== 0
      ? 'cannot set PR_SET_MDWE here (python3 missing, or Linux older than 6.3)'
      : false;

describe('ncps under MemoryDenyWriteExecute (no JIT)', { skip, timeout: 300_000 }, () => {
  let upstream: SignedUpstream;
  let ncps: NcpsProcess | undefined;
  let launcher: string;
  let mdwe: string;

  before(async () => {
    const dir = await makeTempDir('no-jit');
    const probe = path.join(dir, 'jit-probe');
    const built = spawnSync(cc!, ['-O2', '-o', probe, path.join(REPO_ROOT, 'nix', 'jit-probe.c')], { encoding: 'utf8' });
    assert.equal(built.status, 0, built.stderr);
    launcher = path.join(dir, 'ncps');
    // As nix/package.nix substitutes it.
    const text = readFileSync(path.join(REPO_ROOT, 'nix', 'ncps-launcher.sh'), 'utf8')
      .replaceAll('@shell@', '/bin/sh')
      .replaceAll('@path@', '/usr/bin:/bin')
      .replaceAll('@probe@', probe)
      .replaceAll('@node@', process.execPath)
      .replaceAll('@bundle@', NCPS_BUNDLE)
      .replaceAll('@args@', '');
    writeFileSync(launcher, text);
    chmodSync(launcher, 0o755);
    mdwe = path.join(dir, 'mdwe.py');
    writeFileSync(mdwe, MDWE);
    upstream = await signedUpstream({ label: 'no-jit' });
  });

  after(async () => {
    await teardown(ncps, upstream);
  });

  it('plain Node.js aborts there, the probe says so, and the launcher runs ncps --jitless', () => {
    const plain = spawnSync('python3', [mdwe, process.execPath, '--always-sparkplug', '-e', '0'], { encoding: 'utf8' });
    assert.notEqual(plain.status, 0, 'V8 with its JIT must fail under PR_SET_MDWE, or this test proves nothing');
    const probe = path.join(path.dirname(launcher), 'jit-probe');
    assert.equal(spawnSync(probe).status, 0, 'the probe allows the JIT normally');
    assert.equal(spawnSync('python3', [mdwe, probe]).status, 1, 'and refuses it under PR_SET_MDWE');
    const version = spawnSync('python3', [mdwe, launcher, '--version'], { encoding: 'utf8' });
    assert.equal(version.status, 0, version.stderr);
    assert.match(version.stdout, /^ncps version /);
  });

  it('serves the real Nix client, fetching from upstream without undici', async () => {
    ncps = await startNcps({
      upstreams: [upstream.url],
      publicKeys: [upstream.key.publicKey],
      command: ['python3', mdwe, launcher],
    });
    assert.match(ncps.logs(), /running without the JavaScript JIT/);
    await substituteAndVerify(upstream.closure, { substituter: ncps.url, trustedPublicKey: await ncps.publicKey(), ncps });
    assert.equal(await ncps.stop(), 0, 'SIGTERM drains and exits 0');
  });
});
