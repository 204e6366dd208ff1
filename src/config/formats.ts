// Value formats shared by flags, environment variables and config files. Flags and environment
// variables always arrive as strings; config files may carry typed values. Each format therefore
// coerces strings and validates the result, so that all three sources end in the same shape.

const DURATION_UNITS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** Parses a Go-style duration ("3s", "1m30s", "250ms") into milliseconds. */
export function parseDuration(text: string): number {
  const input = text.trim();
  if (input === '0') return 0;
  const part = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/y;
  let total = 0;
  let consumed = 0;
  while (consumed < input.length) {
    part.lastIndex = consumed;
    const match = part.exec(input);
    if (!match) throw new Error(`"${text}" is not a duration (use e.g. 500ms, 3s, 5m, 1h30m)`);
    total += Number(match[1]) * DURATION_UNITS[match[2]!]!;
    consumed = part.lastIndex;
  }
  if (input.length === 0) throw new Error('empty duration');
  return Math.round(total);
}

const SIZE_UNITS: Record<string, number> = { B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** Parses a size such as "10G", "512M" or "1024" (bytes) into bytes; units are powers of 1024. */
export function parseSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([BKMGT])?(?:i?B)?\s*$/i.exec(text);
  if (!match) throw new Error(`"${text}" is not a size (use e.g. 500M, 10G, 1T)`);
  const unit = (match[2] ?? 'B').toUpperCase();
  return Math.floor(Number(match[1]) * SIZE_UNITS[unit]!);
}

export function parseBoolean(text: string): boolean {
  switch (text.trim().toLowerCase()) {
    case '1':
    case 't':
    case 'true':
    case 'yes':
      return true;
    case '0':
    case 'f':
    case 'false':
    case 'no':
      return false;
    default:
      throw new Error(`"${text}" is not a boolean (use true or false)`);
  }
}

/** Repeatable values: a string from the environment is comma separated, as urfave/cli does it. */
export function toStringList(value: unknown): string[] {
  if (Array.isArray(value)) return value.map((v) => String(v).trim()).filter((v) => v !== '');
  if (typeof value === 'string') {
    return value
      .split(',')
      .map((v) => v.trim())
      .filter((v) => v !== '');
  }
  throw new Error('expected a list of strings');
}

/** zerolog's level names (what the Go ncps accepts), in any case, plus `disabled`. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'panic', 'disabled'] as const;

export const convictFormats = {
  'log-level': {
    validate(value: unknown) {
      if (typeof value !== 'string' || !(LOG_LEVELS as readonly string[]).includes(value)) {
        throw new Error(`must be one of ${LOG_LEVELS.join(', ')}`);
      }
    },
    coerce(value: unknown) {
      return typeof value === 'string' ? value.trim().toLowerCase() : value;
    },
  },
  'go-duration': {
    validate(value: unknown) {
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
        throw new Error('must be a duration such as 3s or 5m');
      }
    },
    coerce(value: unknown) {
      return typeof value === 'string' ? parseDuration(value) : value;
    },
  },
  size: {
    validate(value: unknown) {
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
        throw new Error('must be a size such as 500M or 10G');
      }
    },
    coerce(value: unknown) {
      return typeof value === 'string' ? (value.trim() === '' ? 0 : parseSize(value)) : value;
    },
  },
  'string-list': {
    validate(value: unknown) {
      if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) {
        throw new Error('must be a list of strings');
      }
    },
    coerce: toStringList,
  },
  bool: {
    validate(value: unknown) {
      if (typeof value !== 'boolean') throw new Error('must be true or false');
    },
    coerce(value: unknown) {
      return typeof value === 'string' ? parseBoolean(value) : value;
    },
  },
  'non-negative-int': {
    validate(value: unknown) {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
        throw new Error('must be a whole number (0 or more)');
      }
    },
    coerce(value: unknown) {
      if (typeof value !== 'string') return value;
      if (!/^\s*\d+\s*$/.test(value)) throw new Error(`"${value}" is not a whole number`);
      return Number(value);
    },
  },
};
