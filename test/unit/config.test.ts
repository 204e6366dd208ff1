import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { parseDuration, parseSize } from '../../src/config/formats';
import { ConfigError, helpText, loadConfig } from '../../src/config/load';
import { COMMAND_SCOPES, OPTIONS } from '../../src/config/options';

const dir = mkdtempSync(path.join(os.tmpdir(), 'ncps-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function writeFile(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

describe('config formats', () => {
  it('parses Go durations', () => {
    assert.equal(parseDuration('3s'), 3000);
    assert.equal(parseDuration('1m30s'), 90_000);
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('1h'), 3_600_000);
    assert.equal(parseDuration('0'), 0);
    assert.throws(() => parseDuration('3'), /not a duration/);
    assert.throws(() => parseDuration('banana'), /not a duration/);
    assert.throws(() => parseDuration('3s junk'), /not a duration/);
  });

  it('parses sizes in powers of 1024', () => {
    assert.equal(parseSize('1024'), 1024);
    assert.equal(parseSize('10K'), 10 * 1024);
    assert.equal(parseSize('2G'), 2 * 1024 ** 3);
    assert.equal(parseSize('1T'), 1024 ** 4);
    assert.equal(parseSize('5MB'), 5 * 1024 ** 2);
    assert.throws(() => parseSize('lots'), /not a size/);
  });
});

describe('loadConfig', () => {
  it('gives the documented defaults', () => {
    const { config } = loadConfig('serve', [], {});
    assert.equal(config.get('server.addr'), ':8501');
    assert.equal(config.get('cache.upstream.response-header-timeout'), 3000);
    assert.deepEqual(config.get('cache.upstream.urls'), ['https://cache.nixos.org']);
    assert.equal(config.get('cache.sign-narinfo'), true);
  });

  it('takes flags over the config file over the environment', () => {
    const file = writeFile('c.yaml', 'cache:\n  hostname: from-file\n  upstream:\n    dialer-timeout: 7s\nlog:\n  level: warn\n');
    const env = { CACHE_HOSTNAME: 'from-env', LOG_LEVEL: 'debug', SERVER_ADDR: '127.0.0.1:9000' };
    const { config } = loadConfig('serve', [`--config=${file}`, '--cache-hostname', 'from-flag'], env);
    assert.equal(config.get('cache.hostname'), 'from-flag');
    assert.equal(config.get('log.level'), 'warn', 'file beats environment');
    assert.equal(config.get('server.addr'), '127.0.0.1:9000', 'environment beats default');
    assert.equal(config.get('cache.upstream.dialer-timeout'), 7000);
  });

  it('reads JSON config files with dotted keys', () => {
    const file = writeFile('c.json', JSON.stringify({ 'cache.hostname': 'json-host', 'cache.upstream.urls': ['http://a', 'http://b'] }));
    const { config } = loadConfig('serve', [], { NCPS_CONFIG_FILE: file });
    assert.equal(config.get('cache.hostname'), 'json-host');
    assert.deepEqual(config.get('cache.upstream.urls'), ['http://a', 'http://b']);
  });

  it('collects repeatable flags and comma-separated environment lists', () => {
    const fromFlags = loadConfig('serve', ['--cache-upstream-url=http://a', '--cache-upstream-url', 'http://b?priority=3'], {}).config;
    assert.deepEqual(fromFlags.get('cache.upstream.urls'), ['http://a', 'http://b?priority=3']);
    const fromEnv = loadConfig('serve', [], { CACHE_UPSTREAM_URLS: 'http://x, http://y' }).config;
    assert.deepEqual(fromEnv.get('cache.upstream.urls'), ['http://x', 'http://y']);
  });

  it('accepts bare and explicit booleans', () => {
    assert.equal(loadConfig('serve', ['--cache-sign-narinfo=false'], {}).config.get('cache.sign-narinfo'), false);
    assert.equal(loadConfig('serve', ['--cache-sign-narinfo'], { CACHE_SIGN_NARINFO: 'false' }).config.get('cache.sign-narinfo'), true);
  });

  it('rejects unknown flags, bad values and unknown file keys with the name of the culprit', () => {
    assert.throws(() => loadConfig('serve', ['--no-such-flag'], {}), (e: unknown) => e instanceof ConfigError && /--no-such-flag/.test(e.message));
    assert.throws(() => loadConfig('serve', ['--cache-upstream-dialer-timeout=banana'], {}), /--cache-upstream-dialer-timeout/);
    assert.throws(() => loadConfig('serve', [], { CACHE_SIGN_NARINFO: 'perhaps' }), /CACHE_SIGN_NARINFO/);
    assert.throws(() => loadConfig('serve', ['--log-level=loud'], {}), /--log-level/);
    const bad = writeFile('bad.yaml', 'cache:\n  hostnmae: typo\n');
    assert.throws(() => loadConfig('serve', [`--config=${bad}`], {}), /cache\.hostnmae/);
    assert.throws(() => loadConfig('serve', ['--cache-hostname'], {}), /needs a value/);
  });

  it('accepts deprecated aliases with a warning', () => {
    const { config } = loadConfig('serve', ['--cache-data-path=/srv/ncps', '--upstream-cache=http://u'], {});
    assert.equal(config.get('cache.storage.local'), '/srv/ncps');
    assert.deepEqual(config.get('cache.upstream.urls'), ['http://u']);
    assert.ok(config.warnings.some((w) => w.includes('--cache-data-path is deprecated')));
  });

  const pending = OPTIONS.find((o) => o.notImplemented && o.format === 'bool' && o.scope !== 'global');
  it('says so when a flag that is not implemented yet is set', { skip: pending ? false : 'every flag is implemented' }, () => {
    const { config } = loadConfig('serve', [`--${pending!.flag}=true`], {});
    assert.ok(config.warnings.some((w) => w.includes(`--${pending!.flag}`) && w.includes('not implemented')));
    assert.equal(loadConfig('serve', [], {}).config.warnings.length, 0);
  });

  it('masks secrets when printing the configuration', () => {
    const { config } = loadConfig('serve', ['--cache-get-token=s3cret'], {});
    assert.doesNotMatch(JSON.stringify(config.redacted()), /s3cret/);
  });

  it('documents every option in the --help of each command that takes it', () => {
    for (const [command, scopes] of Object.entries(COMMAND_SCOPES)) {
      const help = helpText(command, 'x');
      for (const option of OPTIONS.filter((o) => scopes.includes(o.scope))) {
        assert.ok(help.includes(`--${option.flag}`), `${command}: --${option.flag}`);
      }
    }
    assert.doesNotMatch(helpText('serve', 'x'), /--dry-run/, 'serve does not offer migration flags');
  });
});

describe('the Go ncps configuration forms', () => {
  it('reads TOML config files (by extension, and by content when the name says nothing)', () => {
    const toml = 'log.level = "debug"\n[cache]\nhostname = "toml-host"\nmax-size = "100g"\n[cache.upstream]\nurls = ["http://a", "http://b"]\n';
    for (const name of ['c.toml', 'c.conf']) {
      const { config } = loadConfig('serve', [`--config=${writeFile(name, toml)}`], {});
      assert.equal(config.get('cache.hostname'), 'toml-host', name);
      assert.equal(config.get('log.level'), 'debug', name);
      assert.equal(config.get('cache.max-size'), 100 * 1024 ** 3, `${name}: lower-case size unit`);
      assert.deepEqual(config.get('cache.upstream.urls'), ['http://a', 'http://b'], name);
    }
    assert.throws(() => loadConfig('serve', [`--config=${writeFile('bad.toml', '[cache\n')}`], {}), /cannot parse config file/);
  });

  it('reads $XDG_CONFIG_HOME/ncps/config.yaml when no config file is named, as the Go ncps does', () => {
    const home = mkdtempSync(path.join(dir, 'xdg-'));
    const env = { XDG_CONFIG_HOME: home };
    assert.equal(loadConfig('serve', [], env).config.configFile, undefined, 'nothing there: nothing read');
    mkdirSync(path.join(home, 'ncps'));
    writeFileSync(path.join(home, 'ncps', 'config.yaml'), 'cache:\n  hostname: from-default-path\n');
    const { config } = loadConfig('serve', [], env);
    assert.equal(config.get('cache.hostname'), 'from-default-path');
    assert.equal(config.configFile, path.join(home, 'ncps', 'config.yaml'));
    const explicit = writeFile('explicit.yaml', 'cache:\n  hostname: explicit\n');
    assert.equal(loadConfig('serve', [`--config=${explicit}`], env).config.get('cache.hostname'), 'explicit');
    assert.equal(loadConfig('serve', [], { ...env, NCPS_CONFIG_FILE: explicit }).config.get('cache.hostname'), 'explicit');
    // HOME/.config when XDG_CONFIG_HOME is not set.
    assert.equal(loadConfig('serve', [], { HOME: path.dirname(home), XDG_CONFIG_HOME: '' }).config.configFile, undefined);
  });

  it('takes an empty section (children commented out) and empty values as nothing set', () => {
    const file = writeFile('empty.yaml', 'cache:\n  database:\n    pool:\n    # max-open-conns: 25\n  lock:\n    # backend: "local"\n    redis:\n      key-prefix: "ncps:lock:"\n');
    const { config } = loadConfig('serve', [`--config=${file}`], {});
    assert.equal(config.get('cache.database.pool.max-open-conns'), 0);
    assert.equal(config.isSet('cache.lock.backend'), false);
  });

  it('accepts the Go-only keys of features this ncps lacks, with one warning line per feature turned on', () => {
    const file = writeFile(
      'go-only.yaml',
      [
        'analytics:\n  reporting:\n    enabled: true',
        'cache:',
        '  download:\n    poll-timeout: 45s',
        '  cdc:\n    enabled: true\n    min: 16384\n    avg: 65536\n    max: 262144\n    chunk-wait-timeout: 30s',
        '  inflight-staging:\n    enabled: false\n    retention: 5m\n    part-size: 8388608',
        'pprof:\n  addr: ":6060"',
      ].join('\n') + '\n',
    );
    const { config } = loadConfig('serve', [`--config=${file}`], {});
    const lines = config.warnings;
    assert.equal(lines.filter((w) => /content-defined chunking/.test(w)).length, 1, lines.join('\n'));
    assert.ok(lines.some((w) => /cache\.cdc\.enabled=true.*stored and served whole/.test(w)), lines.join('\n'));
    assert.ok(lines.some((w) => /analytics.*never sends/.test(w)), lines.join('\n'));
    assert.ok(lines.some((w) => /pprof\.addr.*no profiling port/.test(w)), lines.join('\n'));
    assert.ok(!lines.some((w) => /staging/.test(w)), 'staging is off: nothing to say');
    // Where we do the same thing, it works the same: the Go poll timeout is our lock wait.
    assert.equal(config.get('cache.lock.download-lock-wait'), 45_000);
    // The same through flags and environment variables.
    const flags = loadConfig('serve', ['--cache-cdc-enabled', '--analytics-reporting-enabled=false', '--cache-download-poll-timeout=5s'], { CACHE_INFLIGHT_STAGING_ENABLED: 'true' }).config;
    assert.ok(flags.warnings.some((w) => /content-defined chunking/.test(w)));
    assert.ok(flags.warnings.some((w) => /in-flight NAR staging/.test(w)));
    assert.ok(!flags.warnings.some((w) => /analytics/.test(w)), 'analytics turned off: nothing to say');
    assert.equal(flags.get('cache.lock.download-lock-wait'), 5000);
    assert.deepEqual(loadConfig('serve', [], {}).config.warnings, []);
  });

  it('reads the deprecated environment variables and keys the Go ncps still reads; the current name wins', () => {
    const env = { UPSTREAM_CACHES: 'http://old-a,http://old-b', UPSTREAM_PUBLIC_KEYS: 'old-1:AAAA', CACHE_DATA_PATH: '/srv/old', UPSTREAM_DIALER_TIMEOUT: '9s' };
    const { config } = loadConfig('serve', [], env);
    assert.deepEqual(config.get('cache.upstream.urls'), ['http://old-a', 'http://old-b']);
    assert.deepEqual(config.get('cache.upstream.public-keys'), ['old-1:AAAA']);
    assert.equal(config.get('cache.storage.local'), '/srv/old');
    assert.equal(config.get('cache.upstream.dialer-timeout'), 9000);
    assert.ok(config.warnings.some((w) => /UPSTREAM_CACHES is deprecated; use CACHE_UPSTREAM_URLS/.test(w)), config.warnings.join('\n'));
    // The current name wins whatever its source, as in the Go ncps.
    const both = loadConfig('serve', ['--upstream-cache=http://old-flag'], { CACHE_UPSTREAM_URLS: 'http://new-env' }).config;
    assert.deepEqual(both.get('cache.upstream.urls'), ['http://new-env']);
    assert.ok(both.warnings.some((w) => /deprecated one is ignored/.test(w)), both.warnings.join('\n'));
    const file = writeFile('old-keys.yaml', 'cache:\n  data-path: /srv/file-old\n  upstream:\n    caches: [http://file-old]\n');
    const fromFile = loadConfig('serve', [`--config=${file}`], {}).config;
    assert.equal(fromFile.get('cache.storage.local'), '/srv/file-old');
    assert.deepEqual(fromFile.get('cache.upstream.urls'), ['http://file-old']);
    assert.equal(loadConfig('migrate-narinfo', [], { CONCURRENCY: '4' }).config.get('concurrency'), 4);
  });

  it("reads cache.database.url, the Go migrate command's key; cache.database-url wins", () => {
    const file = writeFile('migrate.yaml', 'cache:\n  database:\n    url: sqlite:/from/url-key.sqlite\n');
    assert.equal(loadConfig('migrate up', [`--config=${file}`], {}).config.get('cache.database-url'), 'sqlite:/from/url-key.sqlite');
    const both = writeFile('migrate-both.yaml', 'cache:\n  database-url: sqlite:/dash.sqlite\n  database:\n    url: sqlite:/dot.sqlite\n');
    assert.equal(loadConfig('serve', [`--config=${both}`], {}).config.get('cache.database-url'), 'sqlite:/dash.sqlite');
  });

  it('takes the log levels zerolog takes, in any case, and disabled', () => {
    assert.equal(loadConfig('serve', ['--log-level=disabled'], {}).config.get('log.level'), 'disabled');
    assert.equal(loadConfig('serve', [], { LOG_LEVEL: 'WARN' }).config.get('log.level'), 'warn');
    assert.throws(() => loadConfig('serve', ['--log-level=loud'], {}), /--log-level.*disabled/);
  });

  it('suggests the key meant when a file has a typo', () => {
    const bad = writeFile('typo.yaml', 'cache:\n  upstream:\n    url: [http://x]\n');
    assert.throws(() => loadConfig('serve', [`--config=${bad}`], {}), /cache\.upstream\.url".*did you mean cache\.upstream\.urls/);
  });
});
