import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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
