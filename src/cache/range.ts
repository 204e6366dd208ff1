// HTTP byte ranges (RFC 9110 §14) for NAR downloads: the Nix client resumes an interrupted
// download with `Range: bytes=N-`. One range per request; a multi-range request gets the whole
// file (allowed by the RFC), which is what every client here needs anyway.

export type RangeSpec = { start: number; end?: number } | { suffix: number };

export interface ResolvedRange {
  start: number;
  /** Inclusive. */
  end: number;
}

/** Parses a Range header; undefined when absent, not in bytes, malformed or multi-range. */
export function parseRange(header: string | undefined): RangeSpec | undefined {
  if (!header) return undefined;
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!match) return undefined;
  const [, first = '', last = ''] = match;
  if (first === '' && last === '') return undefined;
  if (first === '') return { suffix: Number(last) };
  const start = Number(first);
  if (last === '') return { start };
  const end = Number(last);
  return end < start ? undefined : { start, end };
}

/** The bytes a range selects in a file of `size` bytes, or 'unsatisfiable' (answer 416). */
export function resolveRange(spec: RangeSpec, size: number): ResolvedRange | 'unsatisfiable' {
  if ('suffix' in spec) {
    if (spec.suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - spec.suffix), end: size - 1 };
  }
  if (spec.start >= size) return 'unsatisfiable';
  return { start: spec.start, end: Math.min(spec.end ?? size - 1, size - 1) };
}
