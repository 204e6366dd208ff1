// When a periodic job (the LRU clean-up) runs: the schedule forms the Go ncps accepts (robfig/cron's
// standard parser), so its configuration means the same here. A cron spec of 5 fields (6 with
// seconds also work), the descriptors @yearly … @hourly, `@every <duration>`, and an optional
// `CRON_TZ=<zone> ` (or `TZ=<zone> `) prefix that overrides the configured time zone.

import { Cron } from 'croner';
import { parseDuration } from '../config/formats';

export type Schedule =
  | { kind: 'cron'; pattern: string; timezone?: string }
  /** Every `intervalMs`, counted from start (as robfig/cron counts @every). */
  | { kind: 'every'; intervalMs: number };

export interface RunningSchedule {
  next(): Date | undefined;
  stop(): void;
}

/** Parses a schedule; throws with a message fit for the user on anything else. */
export function parseSchedule(text: string): Schedule {
  let spec = text.trim();
  let timezone: string | undefined;
  const tz = /^(?:CRON_TZ|TZ)=(\S+)\s+/.exec(spec);
  if (tz) {
    timezone = tz[1]!;
    spec = spec.slice(tz[0].length).trim();
    checkTimezone(timezone);
  }
  if (spec.startsWith('@every')) {
    const duration = spec.slice('@every'.length).trim();
    // robfig rounds down to whole seconds and refuses less than one.
    const intervalMs = Math.floor(parseDuration(duration) / 1000) * 1000;
    if (intervalMs < 1000) throw new Error(`"@every ${duration}": the interval must be at least 1s`);
    return { kind: 'every', intervalMs };
  }
  // @midnight is robfig's name for @daily.
  const pattern = spec === '@midnight' ? '@daily' : spec;
  new Cron(pattern, { paused: true }).stop(); // throws on a bad pattern
  return { kind: 'cron', pattern, ...(timezone ? { timezone } : {}) };
}

function checkTimezone(zone: string): void {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
  } catch {
    throw new Error(`unknown time zone "${zone}"`);
  }
}

/**
 * Runs `job` on the schedule. `timezone` is an IANA name or "Local" (the machine's); a CRON_TZ
 * prefix wins over it. Runs never overlap (a run still going when the next is due skips it).
 */
export function startSchedule(schedule: Schedule, timezone: string, job: () => void): RunningSchedule {
  if (schedule.kind === 'every') {
    let due = Date.now() + schedule.intervalMs;
    const timer = setInterval(() => {
      due = Date.now() + schedule.intervalMs;
      job();
    }, schedule.intervalMs);
    timer.unref();
    return { next: () => new Date(due), stop: () => clearInterval(timer) };
  }
  const zone = schedule.timezone ?? (timezone && timezone !== 'Local' ? timezone : undefined);
  const cron = new Cron(schedule.pattern, { ...(zone ? { timezone: zone } : {}), protect: true }, job);
  return { next: () => cron.nextRun() ?? undefined, stop: () => cron.stop() };
}
