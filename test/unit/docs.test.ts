// The documentation says what the code does: every flag it mentions is one ncps (or the named
// tool) has, every internal link and anchor resolves, and the contradictions found once (docs
// against docs, docs and module against the code) stay fixed.

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { OPTIONS } from '../../src/config/options';

const ROOT = path.resolve(__dirname, '../../..');
const read = (file: string) => readFileSync(path.join(ROOT, file), 'utf8');

/** The hand-written documentation (docs/configuration.md is generated from the option table). */
const DOCS = [
  'README.md',
  'charts/ncps/README.md',
  ...readdirSync(path.join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md') && f !== 'configuration.md')
    .map((f) => `docs/${f}`),
].filter((f) => existsSync(path.join(ROOT, f)));

/** Flags of other programs that the docs show, by the program they belong to. */
const OTHER_TOOLS: Record<string, readonly string[]> = {
  nix: ['to', 'from', 'store', 'raw', 'flake', 'update-input', 'generate-binary-cache-key', 'parse', 'rollback'],
  docker: ['name', 'user', 'rm', 'stop-timeout'],
  'kubectl/helm': ['replicas', 'create-namespace', 'set', 'for', 'timeout', 'strict'],
  npm: ['offline', 'ignore-scripts'],
  node: ['jitless', 'max-semi-space-size'],
  systemctl: ['failed'],
  man: ['warnings'],
  pg_restore: ['clean'],
  'nix/update-npm-deps.sh': ['check'],
  // The placeholder of troubleshooting.md's "unknown flag: --foo".
  example: ['foo'],
};

/** Slug of a heading as GitHub makes it (the anchors the docs link to). */
function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/<[^>]+>/g, '')
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

function anchors(file: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let fenced = false;
  for (const line of read(file).split('\n')) {
    if (/^(```|~~~)/.test(line)) fenced = !fenced;
    const heading = fenced ? undefined : /^#{1,6}\s+(.*)$/.exec(line)?.[1];
    if (heading === undefined) continue;
    const base = slug(heading);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

describe('documentation', () => {
  it('mentions only flags that exist: ncps flags from the option table, the benchmark flags from bench/, the rest by tool', () => {
    const ncps = new Set([...OPTIONS.flatMap((o) => [o.flag, ...(o.aliases ?? [])]), 'help', 'version']);
    const others = new Set(Object.values(OTHER_TOOLS).flat());
    const bench = read('bench/run.mjs') + read('bench/profile-summary.mjs') + read('bench/instructions.mjs');
    const unknown: string[] = [];
    for (const file of DOCS) {
      for (const m of read(file).matchAll(/(?<![\w-])--([a-z][a-z0-9-]*[a-z0-9])(-\*)?/g)) {
        const flag = m[1]!;
        if (m[2]) {
          // `--cache-lock-retry-*`: some flags of that family.
          if (![...ncps].some((f) => f.startsWith(`${flag}-`))) unknown.push(`${file}: --${flag}-*`);
          continue;
        }
        if (ncps.has(flag) || others.has(flag)) continue;
        if (file === 'docs/benchmarks.md' && bench.includes(`--${flag}`)) continue;
        unknown.push(`${file}: --${flag}`);
      }
    }
    assert.deepEqual(unknown, [], 'flags ncps does not have (rename them, or list the tool they belong to here)');
  });

  it('has no internal link or anchor that leads nowhere', () => {
    const broken: string[] = [];
    for (const file of [...DOCS, 'docs/configuration.md']) {
      const text = read(file).replace(/```[\s\S]*?```/g, '');
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1]!;
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:
        const [rel, anchor] = target.split('#') as [string, string | undefined];
        const resolved = rel === '' ? file : path.normalize(path.join(path.dirname(file), rel));
        if (!existsSync(path.join(ROOT, resolved))) {
          broken.push(`${file}: ${target} (no ${resolved})`);
          continue;
        }
        if (anchor && resolved.endsWith('.md') && !anchors(resolved).has(anchor)) broken.push(`${file}: ${target} (no heading #${anchor} in ${resolved})`);
      }
    }
    assert.deepEqual(broken, []);
  });

  it('has no placeholder that cannot be pasted', () => {
    for (const file of DOCS) {
      assert.doesNotMatch(read(file), /github:OWNER\/|<this repository>|<owner>\//, `${file} points at a repository that does not exist`);
    }
  });

  it('keeps the contradictions fixed', () => {
    // The config loader takes keys of every command from one file (src/config/load.ts).
    assert.doesNotMatch(read('docs/upgrading.md'), /not the `serve` config file/);
    assert.match(read('docs/upgrading.md'), /one file\s+serves every command/);
    // The size limit counts listings, logs, realisations and build traces (operations.md, lru.ts).
    assert.doesNotMatch(read('docs/troubleshooting.md'), /[Ll]istings and logs are never evicted and do not count/);
    assert.match(read('docs/operations.md'), /counted\s+is the sum of the NAR files ncps stored and of the small files/);
    // migrate-narinfo exports its metrics over OTLP (src/cli/migrate-narinfo.ts; otel.test.ts).
    assert.doesNotMatch(read('docs/operations.md'), /`migrate-narinfo` accepts the flag but reports its progress in its logs/);
    // --cache-max-size alone turns on an hourly clean-up (src/cache/lru.ts DEFAULT_LRU_SCHEDULE).
    const lru = read('src/cache/lru.ts');
    assert.match(lru, /DEFAULT_LRU_SCHEDULE = '0 \* \* \* \*'/);
    const module = read('nix/module.nix');
    assert.doesNotMatch(module, /nothing will clean the store/);
    assert.doesNotMatch(module, /needs lru\.schedule/);
    assert.match(module, /every hour, at minute 0/);
  });
});
