// sd_notify for Type=notify units. Node cannot send unix datagrams, so the messages go through the
// `systemd-notify` binary that ships with systemd, with --pid naming this process as the sender
// (the unit needs NotifyAccess=all). The npm wrapper of that binary only knows --ready and
// --status, not WATCHDOG=1 or STOPPING=1, hence this small module.

import { spawn } from 'node:child_process';
import type { Logger } from './logger';

export class SystemdNotifier {
  private watchdog?: NodeJS.Timeout;

  constructor(
    private readonly logger: Logger,
    private readonly env: NodeJS.ProcessEnv = process.env,
  ) {}

  get enabled(): boolean {
    return Boolean(this.env.NOTIFY_SOCKET);
  }

  /** Sends `VAR=value` assignments; resolves when delivered (or failed: never fatal). */
  notify(...assignments: string[]): Promise<void> {
    if (!this.enabled) return Promise.resolve();
    return new Promise((resolve) => {
      const child = spawn('systemd-notify', [`--pid=${process.pid}`, ...assignments], {
        env: this.env,
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.once('error', (error) => {
        this.logger.warn({ err: error.message }, 'cannot run systemd-notify');
        resolve();
      });
      child.once('close', (code) => {
        if (code !== 0) this.logger.warn({ code, stderr: stderr.trim() }, 'systemd-notify failed');
        resolve();
      });
    });
  }

  async ready(status: string): Promise<void> {
    await this.notify('READY=1', `STATUS=${status}`);
    this.startWatchdog();
  }

  async stopping(): Promise<void> {
    this.stopWatchdog();
    await this.notify('STOPPING=1', 'STATUS=draining requests');
  }

  /** Pings at half the interval systemd asked for, when it asked (WatchdogSec=). */
  private startWatchdog(): void {
    const usec = Number(this.env.WATCHDOG_USEC);
    const pid = this.env.WATCHDOG_PID;
    if (!usec || (pid && Number(pid) !== process.pid)) return;
    const interval = Math.max(100, Math.floor(usec / 1000 / 2));
    this.watchdog = setInterval(() => void this.notify('WATCHDOG=1'), interval);
    this.watchdog.unref();
  }

  stopWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = undefined;
  }
}
