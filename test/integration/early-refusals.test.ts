// Mistakes are refused before anything is opened, created or migrated: configuration mistakes with
// exit status 2, the option's name and a hint (also `serve --config=FILE --help`, the way to check
// a file); offline commands on a storage path or database that is not there; and a second server
// on one SQLite file.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { writeSyntheticLegacyNarInfos } from '../helpers/legacy';
import { runNcps, startNcps } from '../helpers/ncps';
import { cleanupTempDirs, makeTempDir } from '../helpers/proc';

after(() => cleanupTempDirs());

const KEY = 'test-1:Zz8UoMw3ADmHtIaF4dp1kXJj5xHCn2D8bnEJnqC0lKM=';

/** Serve flags for a cache at `dir` that does not exist yet (so anything created would show). */
function serveFlags(dir: string): string[] {
  return ['serve', `--cache-storage-local=${dir}`, '--server-addr=127.0.0.1:0', `--cache-upstream-public-key=${KEY}`];
}

describe('serve refuses configuration mistakes with exit status 2 before opening anything', () => {
  const cases: Array<{ what: string; flags: string[]; message: RegExp }> = [
    {
      what: 'a time zone that does not exist',
      flags: ['--cache-max-size=1G', '--cache-lru-schedule-timezone=Mars/Olympus_Mons'],
      message: /invalid --cache-lru-schedule-timezone "Mars\/Olympus_Mons": not a time zone name; use an IANA name such as Europe\/Berlin/,
    },
    {
      what: 'a host name with a space',
      flags: ['--cache-hostname=my cache'],
      message: /--cache-hostname "my cache" is not a host name: use the name clients reach the cache under/,
    },
    {
      what: 'a host name with a colon (it names the signing key)',
      flags: ['--cache-hostname=cache:8501'],
      message: /--cache-hostname "cache:8501" is not a host name/,
    },
    {
      what: 'a secret key file that is not there',
      flags: ['--cache-secret-key-path=/nonexistent/ncps/secret.key'],
      message: /cannot read --cache-secret-key-path \/nonexistent\/ncps\/secret.key: ENOENT.*\(the service user must be able to read it\)/,
    },
    {
      what: 'a listen address whose host cannot be resolved',
      flags: ['--server-addr=no-such-host.invalid:8501'],
      message: /invalid --server-addr "no-such-host.invalid:8501": cannot resolve the host name no-such-host.invalid/,
    },
  ];
  for (const { what, flags, message } of cases) {
    it(what, { timeout: 60_000 }, async () => {
      const dir = path.join(await makeTempDir('refuse'), 'cache');
      const r = await runNcps([...serveFlags(dir), ...flags]);
      assert.equal(r.code, 2, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(existsSync(dir), false, 'nothing was created: no storage directory, no database');
    });
  }

  it('a secret key file holding the public key', { timeout: 60_000 }, async () => {
    const base = await makeTempDir('refuse-key');
    const keyFile = path.join(base, 'public.key');
    await writeFile(keyFile, `${KEY}\n`);
    const dir = path.join(base, 'cache');
    const r = await runNcps([...serveFlags(dir), `--cache-secret-key-path=${keyFile}`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /is not a Nix secret key: .*\(give the secret half, as written by nix-store --generate-binary-cache-key/);
    assert.equal(existsSync(dir), false);
  });
});

describe('serve --config=FILE --help checks the file', () => {
  it('rejects a file with a mistake the flags would be refused for, and accepts a good one', { timeout: 60_000 }, async () => {
    const base = await makeTempDir('config-check');
    const bad = path.join(base, 'bad.yaml');
    await writeFile(bad, ['cache:', '  max-size: 10G', '  lru:', '    timezone: Europe/Atlantis', ''].join('\n'));
    const refused = await runNcps(['serve', `--config=${bad}`, '--help']);
    assert.equal(refused.code, 2, refused.stdout + refused.stderr);
    assert.match(refused.stderr, /--cache-lru-schedule-timezone "Europe\/Atlantis"/);
    assert.doesNotMatch(refused.stdout, /Usage:/, 'no help for a file with a mistake');

    const good = path.join(base, 'good.yaml');
    await writeFile(good, ['cache:', `  storage:`, `    local: ${path.join(base, 'never-created')}`, '  lru:', '    timezone: Europe/Berlin', ''].join('\n'));
    const accepted = await runNcps(['serve', `--config=${good}`, '--help']);
    assert.equal(accepted.code, 0, accepted.stderr);
    assert.match(accepted.stdout, /^Usage: ncps serve/m);
    assert.match(accepted.stderr, /config file .*good\.yaml: no mistakes found/);
    assert.equal(existsSync(path.join(base, 'never-created')), false, 'checking opens nothing');
  });
});

describe('offline commands refuse a cache that is not there', () => {
  it('migrate status, sweep-orphans and migrate-narinfo on a mistyped storage path: exit 2, nothing created', { timeout: 60_000 }, async () => {
    const typo = path.join(await makeTempDir('offline-typo'), 'var-lib-ncsp');
    for (const args of [['migrate', 'status'], ['sweep-orphans'], ['migrate-narinfo'], ['migrate-narinfo', '--dry-run']]) {
      const r = await runNcps([...args, `--cache-storage-local=${typo}`]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stdout}\n${r.stderr}`);
      if (args[0] === 'migrate') assert.match(r.stderr, /--cache-database-url: there is no SQLite database at .*var-lib-ncsp\/db\/db\.sqlite: check the path/);
      else assert.match(r.stderr, /--cache-storage-local .*var-lib-ncsp does not exist \(or is not a directory\): check the path/);
      assert.equal(existsSync(typo), false, `${args.join(' ')} created nothing`);
    }
  });

  it('migrate-narinfo into a database that is not there only with --create-database; a dry run creates nothing', { timeout: 120_000 }, async () => {
    const dataDir = await makeTempDir('offline-create');
    const { hashes } = await writeSyntheticLegacyNarInfos(dataDir, 2);
    const dbFile = path.join(dataDir, 'elsewhere', 'db.sqlite');
    const flags = [`--cache-storage-local=${dataDir}`, `--cache-database-url=sqlite:${dbFile}`];

    const refused = await runNcps(['migrate-narinfo', ...flags]);
    assert.equal(refused.code, 2, refused.stdout + refused.stderr);
    assert.match(refused.stderr, /there is no SQLite database at .*elsewhere\/db\.sqlite/);
    assert.equal(existsSync(path.dirname(dbFile)), false);

    const dry = await runNcps(['migrate-narinfo', ...flags, '--dry-run']);
    assert.equal(dry.code, 0, dry.stdout + dry.stderr);
    assert.match(dry.stdout, new RegExp(`dry run: ${hashes.length} legacy narinfo files: would migrate ${hashes.length}`));
    assert.equal(existsSync(path.dirname(dbFile)), false, 'a dry run creates no database');

    const created = await runNcps(['migrate-narinfo', ...flags, '--create-database']);
    assert.equal(created.code, 0, created.stdout + created.stderr);
    assert.match(created.stdout, new RegExp(`migrated ${hashes.length}`));
    assert.ok(existsSync(dbFile));

    // Now it exists: the status can be shown, and migrate up finds nothing to do.
    const status = await runNcps(['migrate', 'status', `--cache-database-url=sqlite:${dbFile}`]);
    assert.equal(status.code, 0, status.stderr);
  });

  it('migrate up says when it creates a database, and its dry run creates none', { timeout: 60_000 }, async () => {
    const base = await makeTempDir('migrate-up-new');
    const dbFile = path.join(base, 'new', 'db.sqlite');
    const dry = await runNcps(['migrate', 'up', '--dry-run', `--cache-database-url=sqlite:${dbFile}`]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /\(does not exist yet: it would be created\)/);
    assert.equal(existsSync(path.dirname(dbFile)), false);
    const up = await runNcps(['migrate', 'up', `--cache-database-url=sqlite:${dbFile}`]);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /\(new: created now\)/);
    assert.ok(existsSync(dbFile));
  });
});

describe('a second server on one SQLite database', () => {
  it('is refused while the first one runs, and starts once it is gone (also after kill -9)', { timeout: 120_000 }, async () => {
    const dataDir = await makeTempDir('second-server');
    const first = await startNcps({ upstreams: ['http://127.0.0.1:9'], publicKeys: [KEY], dataDir });
    try {
      const second = await runNcps([
        'serve',
        `--cache-storage-local=${dataDir}`,
        `--cache-database-url=sqlite:${path.join(dataDir, 'db.sqlite')}`,
        '--server-addr=127.0.0.1:0',
        `--cache-upstream-public-key=${KEY}`,
      ]);
      assert.equal(second.code, 1, second.stdout + second.stderr);
      assert.match(second.stderr, new RegExp(`another ncps server is using the SQLite database .*db\\.sqlite: .*\\(pid ${first.proc.pid}, last seen \\d+ s ago\\)`));
      assert.match(second.stderr, /give this one its own --cache-storage-local and --cache-database-url/);
    } finally {
      // Killed without a chance to give its lease back: a restart on this host must not wait for it.
      assert.equal(await first.stop('SIGKILL'), null);
    }
    const again = await startNcps({ upstreams: ['http://127.0.0.1:9'], publicKeys: [KEY], dataDir });
    assert.equal(await again.stop(), 0);
  });
});

describe('migrate-narinfo and sweep-orphans accept an existing cache', () => {
  it('sweep-orphans runs on a cache made by the server', { timeout: 60_000 }, async () => {
    const dataDir = await makeTempDir('offline-ok');
    const ncps = await startNcps({ upstreams: ['http://127.0.0.1:9'], publicKeys: [KEY], dataDir });
    await ncps.stop();
    await mkdir(path.join(dataDir, 'store', 'nar'), { recursive: true });
    const r = await runNcps(['sweep-orphans', `--cache-storage-local=${dataDir}`, `--cache-database-url=sqlite:${path.join(dataDir, 'db.sqlite')}`, '--dry-run']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });
});
