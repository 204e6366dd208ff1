// Loads a command's configuration from its three sources with ncps's precedence:
// flag > config file > environment > default. Convict holds the schema and validates the result;
// the layering is done here because convict's own order (env over file) differs from ncps's.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import convict from 'convict';
import YAML from 'yaml';
import { convictFormats } from './formats';
import { OPTIONS, optionsFor, type OptionSpec } from './options';

/** A configuration mistake: the CLI prints it and exits with status 2. */
export class ConfigError extends Error {}

convict.addFormats(convictFormats);

export interface ParsedArgs {
  /** flag name → raw values in order (booleans given bare are "true"). */
  flags: Map<string, string[]>;
  positionals: string[];
  help: boolean;
}

export type ConfigValues = Record<string, unknown>;

export interface LoadedConfig {
  get<T = unknown>(key: string): T;
  /** Human-readable notes for the log: deprecated aliases used, flags set but not implemented. */
  warnings: string[];
  /** Every value with sensitive ones masked, for debugging output. */
  redacted(): ConfigValues;
  /** Whether a flag, variable or config key set this option (rather than its default). */
  isSet(key: string): boolean;
}

/** Defaults are written as a user would type them ("3s", "10G"); the schema holds parsed values. */
function coerceDefault(option: OptionSpec): unknown {
  const format = typeof option.format === 'string' ? convictFormats[option.format as keyof typeof convictFormats] : undefined;
  return format ? format.coerce(option.default) : option.default;
}

function buildSchema(options: readonly OptionSpec[]): convict.Schema<ConfigValues> {
  const schema: Record<string, unknown> = {};
  for (const option of options) {
    const parts = option.key.split('.');
    let node = schema;
    for (const part of parts.slice(0, -1)) {
      node = (node[part] ??= {}) as Record<string, unknown>;
    }
    node[parts[parts.length - 1]!] = {
      doc: option.doc,
      format: option.format === 'string' ? String : option.format,
      default: coerceDefault(option),
      sensitive: option.sensitive ?? false,
    };
  }
  return schema as convict.Schema<ConfigValues>;
}

/**
 * Splits argv into flags and positionals against the known flag names. Accepts `--name=value`,
 * `--name value` and, for booleans, a bare `--name`. Anything unknown is a ConfigError.
 */
export function parseArgs(argv: readonly string[], options: readonly OptionSpec[]): ParsedArgs {
  const byFlag = new Map<string, OptionSpec>();
  for (const option of options) {
    byFlag.set(option.flag, option);
    for (const alias of option.aliases ?? []) byFlag.set(alias, option);
  }
  const flags = new Map<string, string[]>();
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq === -1 ? body : body.slice(0, eq);
    const option = byFlag.get(name);
    if (!option) throw new ConfigError(`unknown flag: --${name} (see --help)`);
    let value: string;
    if (eq !== -1) {
      value = body.slice(eq + 1);
    } else if (option.format === 'bool') {
      value = 'true';
    } else {
      const next = argv[i + 1];
      if (next === undefined) throw new ConfigError(`flag --${name} needs a value`);
      value = next;
      i++;
    }
    const list = flags.get(name) ?? [];
    list.push(value);
    flags.set(name, list);
  }
  return { flags, positionals, help };
}

/** Flattens a nested config file object into dotted keys, leaving arrays as values. */
function flatten(value: unknown, prefix: string, out: Map<string, unknown>): void {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [key, child] of Object.entries(value)) {
      flatten(child, prefix ? `${prefix}.${key}` : key, out);
    }
  } else {
    out.set(prefix, value);
  }
}

function readConfigFile(file: string): Map<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config file ${file}: ${(error as Error).message}`);
  }
  let data: unknown;
  try {
    const ext = path.extname(file).toLowerCase();
    data = ext === '.json' ? JSON.parse(text) : YAML.parse(text); // YAML is a superset of JSON
  } catch (error) {
    throw new ConfigError(`cannot parse config file ${file}: ${(error as Error).message}`);
  }
  const flat = new Map<string, unknown>();
  if (data !== null && data !== undefined) flatten(data, '', flat);
  return flat;
}

function describeSource(option: OptionSpec, source: string): string {
  switch (source) {
    case 'flag':
      return `--${option.flag}`;
    case 'env':
      return `environment variable ${option.env}`;
    default:
      return `config key ${option.key} (${source})`;
  }
}

/**
 * Builds the configuration of one command. `env` is usually process.env; `argv` the arguments
 * after the command name.
 */
export function loadConfig(
  command: string,
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): { config: LoadedConfig; args: ParsedArgs } {
  const options = optionsFor(command);
  const args = parseArgs(argv, options);
  const conf = convict(buildSchema(options), { env: {}, args: [] });
  const warnings: string[] = [];
  const given = new Set<string>();

  const apply = (option: OptionSpec, value: unknown, source: string) => {
    try {
      conf.set(option.key, value);
      // Validate each value as it lands so the error names the place it came from.
      conf.validate({ allowed: 'strict' });
      given.add(option.key);
    } catch (error) {
      const message = (error as Error).message.replace(/^[\w.-]+: /, '');
      throw new ConfigError(`invalid value for ${describeSource(option, source)}: ${message}`);
    }
  };

  for (const option of options) {
    const raw = option.env ? env[option.env] : undefined;
    if (raw !== undefined && raw !== '') apply(option, raw, 'env');
  }

  const configFile = args.flags.get('config')?.at(-1) ?? env.NCPS_CONFIG_FILE ?? '';
  if (configFile) {
    const byKey = new Map(options.map((o) => [o.key, o]));
    const everyKey = new Set(OPTIONS.map((o) => o.key));
    for (const [key, value] of readConfigFile(configFile)) {
      const option = byKey.get(key);
      if (option) apply(option, value, configFile);
      // One file serves every command: keys of other commands (server.addr for migrate) are fine.
      else if (!everyKey.has(key)) throw new ConfigError(`unknown key "${key}" in config file ${configFile}`);
    }
  }

  for (const option of options) {
    const names = [option.flag, ...(option.aliases ?? [])];
    const values = names.flatMap((name) => args.flags.get(name) ?? []);
    if (values.length === 0) continue;
    for (const alias of option.aliases ?? []) {
      if (args.flags.has(alias)) warnings.push(`--${alias} is deprecated; use --${option.flag}`);
    }
    const isList = option.format === 'string-list';
    apply(option, isList ? values.flatMap((v) => v.split(',')) : values.at(-1), 'flag');
  }

  for (const option of options) {
    if (option.notImplemented && given.has(option.key)) {
      const value = conf.get(option.key);
      if (JSON.stringify(value) !== JSON.stringify(conf.default(option.key))) {
        warnings.push(`--${option.flag} is accepted but not implemented yet (${option.notImplemented}); it has no effect`);
      }
    }
  }

  const config: LoadedConfig = {
    get: <T>(key: string) => conf.get(key) as T,
    warnings,
    redacted: () => JSON.parse(conf.toString()) as ConfigValues,
    isSet: (key: string) => given.has(key),
  };
  return { config, args };
}

/** The text of `ncps <command> --help`, generated from the option table. */
export function helpText(command: string, summary: string): string {
  const lines = [`Usage: ncps ${command} [flags]`, '', summary, '', 'Flags:'];
  for (const option of optionsFor(command)) {
    const value = option.format === 'bool' ? '' : '=VALUE';
    const def =
      option.default === '' || (Array.isArray(option.default) && option.default.length === 0)
        ? ''
        : ` (default: ${Array.isArray(option.default) ? option.default.join(', ') : String(option.default)})`;
    const env = option.env ? ` [$${option.env}]` : '';
    const later = option.notImplemented ? ' (not implemented yet)' : '';
    lines.push(`  --${option.flag}${value}${env}`, `      ${option.doc}${def}${later}`);
  }
  return lines.join('\n') + '\n';
}
