// A live server renews a lease row in the database every few seconds. Tools that must not run
// beside a server without Redis coordination (migrate-narinfo) look for fresh leases first.

import { randomUUID } from 'node:crypto';
import os from 'node:os';
import type { Database } from '../db/database';
import type { Logger } from '../telemetry/logger';

export const LEASE_RENEW_MS = 10_000;
/** A lease not renewed for this long belongs to a server that is gone (crashed or stopped). */
export const LEASE_STALE_MS = 3 * LEASE_RENEW_MS;

export class LeaseKeeper {
  readonly instanceId = randomUUID();
  private readonly startedAt = Date.now();
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly db: Database,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    await this.renew();
    this.timer = setInterval(() => void this.renew(), LEASE_RENEW_MS);
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    try {
      await this.db.renewLease({
        instanceId: this.instanceId,
        hostname: os.hostname(),
        pid: process.pid,
        startedAt: this.startedAt,
        heartbeatAt: Date.now(),
      });
    } catch (error) {
      this.logger.warn({ err: (error as Error).message }, 'could not renew the server lease');
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.db.removeLease(this.instanceId).catch(() => undefined);
  }
}
