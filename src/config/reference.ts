// The configuration reference (docs/configuration.md), generated from the option table so the
// documentation cannot drift from the code: a test fails when the committed file differs.

import { COMMAND_SCOPES, OPTIONS, UNSUPPORTED_FEATURES, type OptionSpec } from './options';

function formatDefault(option: OptionSpec): string {
  const value = option.default;
  if (Array.isArray(value)) return value.length === 0 ? '' : value.map((v) => `\`${String(v)}\``).join(', ');
  if (value === '' || value === undefined) return '';
  return `\`${String(value)}\``;
}

function formatType(option: OptionSpec): string {
  if (Array.isArray(option.format)) return (option.format as readonly string[]).join(' \\| ');
  switch (option.format) {
    case 'bool':
      return 'boolean';
    case 'go-duration':
      return 'duration';
    case 'string-list':
      return 'list';
    case 'non-negative-int':
      return 'integer';
    case 'log-level':
      return 'log level';
    default:
      return String(option.format);
  }
}

const SECTIONS: Array<[string, OptionSpec['scope']]> = [
  ['Global (every command)', 'global'],
  ['Server (`serve`)', 'serve'],
  ['Signing (`serve`, `fsck`)', 'signing'],
  ['Storage', 'storage'],
  ['Database', 'database'],
  ['Redis and locks', 'redis'],
  ['Dry runs (`migrate up`, `migrate from-go`, `migrate-narinfo`, `sweep-orphans`, `fsck`)', 'migration'],
  ['Narinfo migration (`migrate-narinfo`)', 'narinfo-migration'],
  ['Beside a running server (`migrate from-go`, `migrate-narinfo`, `sweep-orphans`, `fsck`)', 'offline'],
  ['Checking the cache (`fsck`)', 'fsck'],
  ['Listing the cache (`list`)', 'list'],
  ['Taking over a Go ncps (`serve`, `migrate up`, `migrate from-go`, `migrate-narinfo`)', 'go-takeover'],
  ['Removing what a takeover kept for the Go ncps (`migrate from-go`)', 'go-cleanup'],
];

export function configurationReference(): string {
  const out: string[] = [
    '# Configuration reference',
    '',
    '<!-- Generated from src/config/options.ts by `npm run docs:config`; do not edit by hand. -->',
    '',
    'Every setting can be given as a command-line flag, an environment variable or a key in the config',
    'file (`--config FILE`, YAML, TOML or JSON; keys are the dotted names below, or the same names nested;',
    'without `--config` or `NCPS_CONFIG_FILE`, `$XDG_CONFIG_HOME/ncps/config.yaml` is read when it exists).',
    'When a setting is given in several places, the flag wins over the config file, and the config file',
    'over the environment. Lists take repeated flags or comma-separated values. Durations are written',
    'like `500ms`, `3s`, `5m`, `1h30m` (`0` for none); sizes like `500M`, `10G` or `100g` (powers of 1024).',
    'Older names of the Go ncps (marked deprecated) still work, with a warning; when both an old and',
    'the current name are given, the current one wins.',
    '',
    'Which commands accept which sections:',
    '',
  ];
  for (const [command, scopes] of Object.entries(COMMAND_SCOPES)) {
    out.push(`- \`ncps ${command}\`: ${scopes.map((scope) => SECTIONS.find(([, s]) => s === scope)?.[0] ?? scope).join(', ')}`);
  }
  const row = (option: OptionSpec, notes: string[]) => {
    const flags = [
      `\`--${option.flag}\``,
      ...(option.synonyms?.flags ?? []).map((a) => `\`--${a}\``),
      ...(option.aliases ?? []).map((a) => `\`--${a}\` (deprecated)`),
    ].join('<br>');
    const envs = [
      ...(option.env ? [`\`${option.env}\``] : []),
      ...(option.synonyms?.env ?? []).map((e) => `\`${e}\``),
      ...(option.deprecated?.env ?? []).map((e) => `\`${e}\` (deprecated)`),
    ].join('<br>');
    const keys = [
      `\`${option.key}\``,
      ...(option.synonyms?.keys ?? []).map((k) => `\`${k}\``),
      ...(option.deprecated?.keys ?? []).map((k) => `\`${k}\` (deprecated)`),
    ].join('<br>');
    return `| ${flags} | ${envs} | ${keys} | ${formatType(option)} | ${formatDefault(option)} | ${notes.join(' ')} |`;
  };
  const header = ['| flag | environment | config key | type | default | description |', '|---|---|---|---|---|---|'];
  for (const [title, scope] of SECTIONS) {
    const options = OPTIONS.filter((o) => o.scope === scope && !o.unsupported);
    if (options.length === 0) continue;
    out.push('', `## ${title}`, '', ...header);
    for (const option of options) {
      const notes = [option.doc.replace(/\|/g, '\\|')];
      if (option.sensitive) notes.push('Secret: never logged.');
      if (option.notImplemented) notes.push(`**Accepted but not implemented yet** (${option.notImplemented}).`);
      out.push(row(option, notes));
    }
  }
  out.push(
    '',
    '## Settings of the Go ncps for features this ncps does not have',
    '',
    'These are accepted under the Go ncps\'s names, so its config files, environment and command lines',
    'work unchanged, and have no effect. When one of them turns its feature on, `ncps` logs one',
    'warning line at start naming the feature and what happens instead:',
    '',
  );
  for (const { name, instead } of Object.values(UNSUPPORTED_FEATURES)) out.push(`- ${name}: ${instead}.`);
  out.push('', ...header);
  for (const option of OPTIONS.filter((o) => o.unsupported)) {
    const feature = UNSUPPORTED_FEATURES[option.unsupported!.feature].name;
    out.push(row(option, [`${feature}${option.unsupported!.active ? ' (warns when turned on)' : ''}`]));
  }
  return out.join('\n') + '\n';
}
