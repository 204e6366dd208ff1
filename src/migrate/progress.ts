// Progress of a long migration: a redrawn bar on a terminal, a log line every few seconds
// otherwise (systemd journal, CI logs). Both show done/total, failures, rate and time left.

import type { Logger } from '../telemetry/logger';

export interface ProgressCounts {
  done: number;
  failed: number;
  /** Undefined while the total is not known (work found while walking storage). */
  total: number | undefined;
}

export class Progress {
  private readonly started = Date.now();
  private timer?: NodeJS.Timeout;
  private readonly tty: boolean;

  private reported = false;

  constructor(
    private readonly label: string,
    private readonly counts: () => ProgressCounts,
    private readonly logger: Logger,
    private readonly stream: NodeJS.WriteStream = process.stderr,
    /** 'after-progress': a step over before its first report leaves no trace (commands with many short steps). */
    private readonly lastReport: 'always' | 'after-progress' = 'always',
  ) {
    this.tty = Boolean(stream.isTTY);
  }

  start(): void {
    this.timer = setInterval(() => this.report(), this.tty ? 200 : 5000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.lastReport === 'after-progress' && !this.reported) return;
    this.report();
    if (this.tty) this.stream.write('\n');
  }

  private report(): void {
    this.reported = true;
    const { done, failed, total } = this.counts();
    const seconds = (Date.now() - this.started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const eta = rate > 0 && total !== undefined ? Math.max(0, (total - done) / rate) : undefined;
    if (total === undefined) {
      if (this.tty) this.stream.write(`\r${this.label}: ${done} so far, failed ${failed}  ${rate.toFixed(1)}/s   `);
      else this.logger.info({ done, failed, ratePerSecond: Math.round(rate * 10) / 10 }, `${this.label}: progress`);
      return;
    }
    if (this.tty) {
      const width = 30;
      const filled = total > 0 ? Math.round((done / total) * width) : width;
      const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
      const etaText = eta === undefined ? '?' : formatSeconds(eta);
      this.stream.write(`\r${this.label} [${bar}] ${done}/${total} failed ${failed}  ${rate.toFixed(1)}/s  ETA ${etaText}   `);
    } else {
      this.logger.info(
        { done, total, failed, ratePerSecond: Math.round(rate * 10) / 10, etaSeconds: eta === undefined ? null : Math.round(eta) },
        `${this.label}: progress`,
      );
    }
  }
}

export function formatSeconds(total: number): string {
  const s = Math.round(total);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}
