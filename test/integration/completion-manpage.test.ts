// Shell completion (bash, zsh, fish) and the manual page, generated from the option table: run in
// the real shells and rendered by man, they offer the commands, every flag of a command (and no
// flag of another one), the values of enumerated flags, and document every option.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { OPTIONS, optionsFor } from '../../src/config/options';
import { REPO_ROOT, runNcps } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir, run } from '../helpers/proc';

after(() => cleanupTempDirs());

const which = (program: string) => ['/usr/bin', '/bin', '/usr/local/bin'].map((d) => path.join(d, program)).find((p) => existsSync(p));

async function script(shell: string): Promise<string> {
  const r = await runNcps(['completion', shell]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

describe('bash completion', () => {
  /** COMPREPLY for a command line (the last word is the one being completed). */
  async function complete(words: string[]): Promise<string[]> {
    const file = path.join(await makeTempDir('bash-completion'), 'ncps.bash');
    await writeFile(file, await script('bash'));
    const quoted = words.map((w) => `'${w}'`).join(' ');
    const r = await run('bash', ['-c', `source '${file}'; COMP_WORDS=(${quoted}); COMP_CWORD=${words.length - 1}; _ncps 2>/dev/null; printf '%s\\n' "\${COMPREPLY[@]}"`]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.split('\n').filter(Boolean);
  }

  it('completes commands, subcommands and positional words', async () => {
    assert.deepEqual(await complete(['ncps', 'mig']), ['migrate', 'migrate-narinfo']);
    assert.deepEqual((await complete(['ncps', 'migrate', ''])).sort(), ['from-go', 'status', 'up']);
    assert.deepEqual(await complete(['ncps', 'completion', '']), ['bash', 'zsh', 'fish']);
  });

  it("offers every flag of a command, and only that command's", async () => {
    const offered = new Set((await complete(['ncps', 'serve', '--'])).map((f) => f.replace(/=$/, '')));
    for (const option of optionsFor('serve').filter((o) => !o.unsupported)) assert.ok(offered.has(`--${option.flag}`), `--${option.flag}`);
    assert.equal(offered.has('--dry-run'), false, 'serve has no --dry-run');
    assert.deepEqual(await complete(['ncps', 'migrate', 'up', '--dr']), ['--dry-run']);
    assert.deepEqual(await complete(['ncps', 's', '--cache-lru-schedule-t']), ['--cache-lru-schedule-timezone=']);
  });

  it('completes values, also after a global flag with a space-separated value before the command', async () => {
    assert.deepEqual(await complete(['ncps', 'serve', '--log-level', 'd']), ['debug', 'disabled']);
    assert.deepEqual(await complete(['ncps', 'serve', '--log-level', '=', 'w']), ['warn']);
    assert.deepEqual(await complete(['ncps', '--config', '/etc/ncps.yaml', 'serve', '--cache-ho']), ['--cache-hostname=']);
    assert.deepEqual(await complete(['ncps', 'list', '--sort', '']), ['accessed', 'size', 'path']);
    assert.deepEqual(await complete(['ncps', 'list', '--pin']), ['--pinned']);
  });
});

describe('fish completion', { skip: which('fish') ? false : 'fish not installed' }, () => {
  async function complete(line: string): Promise<string[]> {
    const file = path.join(await makeTempDir('fish-completion'), 'ncps.fish');
    await writeFile(file, await script('fish'));
    const r = await run('fish', ['--no-config', '-c', `source '${file}'; complete -C '${line}'`]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.split('\n').filter(Boolean).map((l) => l.split('\t')[0]!);
  }

  it('completes commands, flags with their descriptions, and values', async () => {
    assert.ok((await complete('ncps se')).includes('serve'));
    assert.deepEqual(await complete('ncps serve --cache-hostn'), ['--cache-hostname']);
    assert.ok((await complete('ncps serve --log-level=')).includes('--log-level=debug'));
    assert.deepEqual((await complete('ncps migrate ')).sort(), ['from-go', 'status', 'up']);
    assert.deepEqual(await complete('ncps migrate up --dr'), ['--dry-run']);
  });
});

describe('zsh completion', { skip: which('zsh') ? false : 'zsh not installed' }, () => {
  it('parses, and completes in an interactive zsh (driven through zpty)', async () => {
    const dir = await makeTempDir('zsh-completion');
    await mkdir(path.join(dir, 'functions'));
    await writeFile(path.join(dir, 'functions', '_ncps'), await script('zsh'));
    assert.equal((await run('zsh', ['-n', path.join(dir, 'functions', '_ncps')])).code, 0);
    // Type a line and TAB into a real interactive zsh (a fresh one per line); read until the
    // completed word shows (zle highlights the "=" it adds, so the patterns stop before it).
    const completes = async (typed: string, pattern: string) => {
      const driver = [
        'zmodload zsh/zpty',
        "zpty z 'zsh -f -i'",
        `zpty -w z 'fpath=(${dir}/functions $fpath); autoload -U compinit; compinit -u -D; ncps() { :; }'`,
        `zpty -w -n z $'${typed}\\t'`,
        `zpty -r z out '*${pattern}*' && print COMPLETED`,
        'zpty -d z',
      ].join('\n');
      const r = await run('zsh', ['-f', '-c', driver], { timeoutMs: 60_000 });
      assert.match(r.stdout, /COMPLETED/, `${typed} did not complete to ${pattern}:\n${r.stdout}\n${r.stderr}`);
    };
    await completes('ncps serve --cache-hostn', '--cache-hostname');
    await completes('ncps migrate u', 'migrate up');
    await completes('ncps serve --log-level=de', 'log-level=debug');
  });
});

describe('manual page', () => {
  it('documents every command and every option, and renders without warnings', async () => {
    const r = await runNcps(['manpage']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^\.TH NCPS 1 /m);
    const file = path.join(await makeTempDir('manpage'), 'ncps.1');
    await writeFile(file, r.stdout);
    const man = which('man');
    const rendered = man
      ? await run(man, ['--warnings', '-l', file], { env: { ...process.env, MANWIDTH: '200', MAN_KEEP_FORMATTING: '0', PAGER: 'cat' } })
      : await run('groff', ['-man', '-Tutf8', '-ww', file]);
    assert.equal(rendered.code, 0, rendered.stderr);
    assert.equal(rendered.stderr.trim(), '', 'no roff warnings');
    const text = rendered.stdout.replace(/.\x08/g, '').replace(/‐\n\s*/g, '');
    for (const command of ['serve', 'migrate', 'migrate-narinfo', 'sweep-orphans', 'fsck', 'list', 'completion']) assert.match(text, new RegExp(`^\\s+${command}\\b`, 'm'), command);
    for (const option of OPTIONS) assert.ok(text.includes(`--${option.flag}`), `--${option.flag} is documented`);
    assert.match(text, /MIGRATE UP FLAGS/);
    assert.match(text, /LIST FLAGS/);
    assert.match(text, /EXIT STATUS/);
  });

  it('is the one the build writes for npm and the Nix package (dist/man, dist/completions)', async () => {
    const r = await runNcps(['manpage']);
    assert.equal(readFileSync(path.join(REPO_ROOT, 'dist', 'man', 'ncps.1'), 'utf8'), r.stdout);
    assert.equal(readFileSync(path.join(REPO_ROOT, 'dist', 'completions', 'ncps.bash'), 'utf8'), await script('bash'));
  });
});
