// Loads a command's configuration from its three sources with ncps's precedence:
// flag > config file > environment > default. Convict holds the schema and validates the result;
// the layering is done here because convict's own order (env over file) differs from ncps's.

import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import convict from 'convict';
import type * as SmolToml from 'smol-toml' with { 'resolution-mode': 'import' };
import YAML from 'yaml';
import { convictFormats } from './formats';
import { OPTIONS, optionsFor, UNSUPPORTED_FEATURES, type OptionSpec, type UnsupportedFeature } from './options';

/** A configuration mistake: the CLI prints it and exits with status 2. */
export class ConfigError extends Error {}

convict.addFormats(convictFormats);

// smol-toml ships ES module typings beside its CommonJS build; this CommonJS file loads the latter.
const { parse: parseToml } = require('smol-toml') as typeof SmolToml;

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
  /** The config file read, if any (given, or the default path found). */
  configFile?: string;
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

/** Every flag name of `options`, with the option it sets and whether the name is a deprecated one. */
function flagNames(options: readonly OptionSpec[]): Map<string, { option: OptionSpec; deprecated: boolean }> {
  const byFlag = new Map<string, { option: OptionSpec; deprecated: boolean }>();
  for (const option of options) {
    byFlag.set(option.flag, { option, deprecated: false });
    for (const alias of option.aliases ?? []) byFlag.set(alias, { option, deprecated: true });
    for (const synonym of option.synonyms?.flags ?? []) byFlag.set(synonym, { option, deprecated: false });
  }
  return byFlag;
}

/** Whether `--name` (of any command) takes a value: false for booleans, undefined when unknown. */
export function flagTakesValue(name: string): boolean | undefined {
  const known = flagNames(OPTIONS).get(name);
  return known ? known.option.format !== 'bool' : undefined;
}

/**
 * Splits argv into flags and positionals against the known flag names. Accepts `--name=value`,
 * `--name value` and, for booleans, a bare `--name`. Anything unknown is a ConfigError.
 */
export function parseArgs(argv: readonly string[], options: readonly OptionSpec[]): ParsedArgs {
  const byFlag = flagNames(options);
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
    const known = byFlag.get(name);
    if (!known) {
      const elsewhere = flagTakesValue(name) !== undefined ? ' (not a flag of this command)' : '';
      throw new ConfigError(`unknown flag: --${name}${elsewhere} (see --help)`);
    }
    let value: string;
    if (eq !== -1) {
      value = body.slice(eq + 1);
    } else if (known.option.format === 'bool') {
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

/**
 * Flattens a nested config file object into dotted keys, leaving arrays as values. A key without a
 * value (`pool:` whose children are all commented out, TOML has no null) is no setting at all.
 */
function flatten(value: unknown, prefix: string, out: Map<string, unknown>): void {
  if (value === null || value === undefined) return;
  if (typeof value === 'object' && !Array.isArray(value) && !(value instanceof Date)) {
    for (const [key, child] of Object.entries(value)) {
      flatten(child, prefix ? `${prefix}.${key}` : key, out);
    }
  } else {
    out.set(prefix, value instanceof Date ? value.toISOString() : value);
  }
}

/** The file's format, as the Go ncps reads it: by extension, else TOML first, then YAML (which reads JSON too). */
function parseConfigText(file: string, text: string): unknown {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.json') return JSON.parse(text);
  if (ext === '.toml') return parseToml(text);
  if (ext === '.yaml' || ext === '.yml') return YAML.parse(text);
  try {
    return parseToml(text);
  } catch {
    return YAML.parse(text);
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
    data = parseConfigText(file, text);
  } catch (error) {
    throw new ConfigError(`cannot parse config file ${file}: ${(error as Error).message}`);
  }
  const flat = new Map<string, unknown>();
  if (data !== null && typeof data === 'object' && !Array.isArray(data)) flatten(data, '', flat);
  else if (data !== null && data !== undefined && text.trim() !== '') {
    throw new ConfigError(`config file ${file} holds no settings (expected keys such as cache.hostname)`);
  }
  return flat;
}

/** Where the Go ncps looks for its config file when --config is not given: os.UserConfigDir()/ncps/config.yaml. */
export function defaultConfigFile(env: NodeJS.ProcessEnv): string | undefined {
  const base = env.XDG_CONFIG_HOME || (env.HOME ? path.join(env.HOME, '.config') : '');
  return base ? path.join(base, 'ncps', 'config.yaml') : undefined;
}

/** The closest known key, for "did you mean". */
function closestKey(key: string, keys: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of keys) {
    const d = editDistance(key, candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(key.length / 5)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** One value for an option, from where it came: the layering below applies them in rank order. */
interface Given {
  value: unknown;
  /** What to call it in a message: `--flag`, `environment variable X`, `config key k (file)`. */
  where: string;
  /** 0: deprecated name, 1: environment, 2: config file, 3: flag; a synonym ranks just below its source. */
  rank: number;
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
  const given = new Map<string, Given[]>();
  const add = (option: OptionSpec, value: unknown, where: string, rank: number) => {
    const list = given.get(option.key) ?? [];
    list.push({ value, where, rank });
    given.set(option.key, list);
  };

  // Environment: current names, then synonyms; deprecated names rank below every current one.
  for (const option of options) {
    const read = (name: string, rank: number) => {
      const raw = env[name];
      if (raw !== undefined && raw !== '') add(option, raw, `environment variable ${name}`, rank);
      return raw !== undefined && raw !== '';
    };
    for (const name of option.deprecated?.env ?? []) {
      if (read(name, 0)) warnings.push(`environment variable ${name} is deprecated; use ${option.env ?? `--${option.flag}`}`);
    }
    for (const name of option.synonyms?.env ?? []) read(name, 0.5);
    if (option.env) read(option.env, 1);
  }

  // The config file: --config, else NCPS_CONFIG_FILE, else the Go default path when it exists.
  const explicitFile = args.flags.get('config')?.at(-1) ?? (env.NCPS_CONFIG_FILE || undefined);
  const fallbackFile = defaultConfigFile(env);
  const configFile = explicitFile ?? (fallbackFile && existsSync(fallbackFile) ? fallbackFile : undefined);
  if (configFile) {
    const byKey = new Map<string, { option: OptionSpec; rank: number; deprecated: boolean }>();
    for (const option of options) {
      for (const key of option.deprecated?.keys ?? []) byKey.set(key, { option, rank: 0, deprecated: true });
      for (const key of option.synonyms?.keys ?? []) byKey.set(key, { option, rank: 1.5, deprecated: false });
      byKey.set(option.key, { option, rank: 2, deprecated: false });
    }
    const everyKey = new Set(
      OPTIONS.flatMap((o) => [o.key, ...(o.deprecated?.keys ?? []), ...(o.synonyms?.keys ?? [])]),
    );
    for (const [key, value] of readConfigFile(configFile)) {
      const known = byKey.get(key);
      if (known) {
        add(known.option, value, `config key ${key} (${configFile})`, known.rank);
        if (known.deprecated) warnings.push(`config key ${key} is deprecated; use ${known.option.key}`);
      } else if (!everyKey.has(key)) {
        // One file serves every command: keys of other commands (server.addr for migrate) are fine.
        const hint = closestKey(key, everyKey);
        throw new ConfigError(`unknown key "${key}" in config file ${configFile}${hint ? ` (did you mean ${hint}?)` : ''}`);
      }
    }
  }

  for (const option of options) {
    const isList = option.format === 'string-list';
    const collect = (names: readonly string[]) => names.flatMap((name) => args.flags.get(name) ?? []);
    const asValue = (values: string[]) => (isList ? values.flatMap((v) => v.split(',')) : values.at(-1));
    const old = collect(option.aliases ?? []);
    if (old.length > 0) {
      for (const alias of option.aliases ?? []) {
        if (args.flags.has(alias)) warnings.push(`--${alias} is deprecated; use --${option.flag}`);
      }
      add(option, asValue(old), `--${option.aliases!.find((a) => args.flags.has(a))}`, 0);
    }
    const current = collect([...(option.synonyms?.flags ?? []), option.flag]);
    if (current.length > 0) {
      const name = [option.flag, ...(option.synonyms?.flags ?? [])].find((n) => args.flags.has(n));
      add(option, asValue(current), `--${name}`, 3);
    }
  }

  // Apply in rank order (stable within a rank: synonyms before the current name): the last wins.
  const set = new Set<string>();
  for (const option of options) {
    const values = (given.get(option.key) ?? []).map((g, i) => ({ ...g, i })).sort((a, b) => a.rank - b.rank || a.i - b.i);
    for (const { value, where } of values) {
      try {
        conf.set(option.key, value);
        // Validate each value as it lands so the error names the place it came from.
        conf.validate({ allowed: 'strict' });
      } catch (error) {
        const message = (error as Error).message.replace(/^[\w.-]+: /, '');
        throw new ConfigError(`invalid value for ${where}: ${message}`);
      }
      set.add(option.key);
    }
    const deprecated = values.filter((v) => v.rank === 0);
    if (deprecated.length > 0 && values.some((v) => v.rank >= 1)) {
      warnings.push(`${deprecated.map((d) => d.where).join(', ')} and ${option.key} are both set; the deprecated one is ignored`);
    }
  }

  for (const option of options) {
    if (option.notImplemented && set.has(option.key)) {
      const value = conf.get(option.key);
      if (JSON.stringify(value) !== JSON.stringify(conf.default(option.key))) {
        warnings.push(`--${option.flag} is accepted but not implemented yet (${option.notImplemented}); it has no effect`);
      }
    }
  }

  // One line per Go feature this ncps lacks that the configuration turns on.
  const active = new Map<UnsupportedFeature, string[]>();
  for (const option of options) {
    const rule = option.unsupported;
    if (!rule?.active || !set.has(option.key) || !rule.active(conf.get(option.key))) continue;
    const list = active.get(rule.feature) ?? [];
    list.push(`${option.key}=${JSON.stringify(conf.get(option.key))}`);
    active.set(rule.feature, list);
  }
  for (const [feature, settings] of active) {
    const { name, instead } = UNSUPPORTED_FEATURES[feature];
    warnings.push(`${settings.join(', ')}: ${name} is not part of this ncps; ${instead}`);
  }

  const config: LoadedConfig = {
    get: <T>(key: string) => conf.get(key) as T,
    warnings,
    redacted: () => JSON.parse(conf.toString()) as ConfigValues,
    isSet: (key: string) => set.has(key),
    ...(configFile ? { configFile } : {}),
  };
  return { config, args };
}

/** The text of `ncps <command> --help`, generated from the option table; `usage` follows the command name. */
export function helpText(command: string, summary: string, usage = '[flags]'): string {
  const lines = [`Usage: ncps ${command} ${usage}`, '', summary, '', 'Flags:'];
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
