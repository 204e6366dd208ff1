// The configuration reference (docs/configuration.md), generated from the option table so the
// documentation cannot drift from the code: a test fails when the committed file differs.

import { COMMAND_SCOPES, OPTIONS, type OptionSpec } from './options';

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
  ['Dry runs (`migrate up`, `migrate-narinfo`, `sweep-orphans`, `fsck`)', 'migration'],
  ['Narinfo migration (`migrate-narinfo`)', 'narinfo-migration'],
  ['Beside a running server (`migrate-narinfo`, `sweep-orphans`, `fsck`)', 'offline'],
  ['Checking the cache (`fsck`)', 'fsck'],
];

export function configurationReference(): string {
  const out: string[] = [
    '# Configuration reference',
    '',
    '<!-- Generated from src/config/options.ts by `npm run docs:config`; do not edit by hand. -->',
    '',
    'Every setting can be given as a command-line flag, an environment variable or a key in the config',
    'file (`--config FILE`, YAML or JSON; keys are the dotted names below, or the same names nested).',
    'When a setting is given in several places, the flag wins over the config file, and the config file',
    'over the environment. Lists take repeated flags or comma-separated values. Durations are written',
    'like `500ms`, `3s`, `5m`, `1h30m`; sizes like `500M`, `10G` (powers of 1024).',
    '',
    'Which commands accept which sections:',
    '',
  ];
  for (const [command, scopes] of Object.entries(COMMAND_SCOPES)) {
    out.push(`- \`ncps ${command}\`: ${scopes.map((scope) => SECTIONS.find(([, s]) => s === scope)?.[0] ?? scope).join(', ')}`);
  }
  for (const [title, scope] of SECTIONS) {
    const options = OPTIONS.filter((o) => o.scope === scope);
    if (options.length === 0) continue;
    out.push('', `## ${title}`, '', '| flag | environment | config key | type | default | description |', '|---|---|---|---|---|---|');
    for (const option of options) {
      const flags = [`\`--${option.flag}\``, ...(option.aliases ?? []).map((a) => `\`--${a}\` (deprecated)`)].join('<br>');
      const notes = [option.doc.replace(/\|/g, '\\|')];
      if (option.sensitive) notes.push('Secret: never logged.');
      if (option.notImplemented) notes.push(`**Accepted but not implemented yet** (${option.notImplemented}).`);
      out.push(
        `| ${flags} | ${option.env ? `\`${option.env}\`` : ''} | \`${option.key}\` | ${formatType(option)} | ${formatDefault(option)} | ${notes.join(' ')} |`,
      );
    }
  }
  return out.join('\n') + '\n';
}
