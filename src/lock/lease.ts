// A live server renews a lease row in the database every few seconds. Tools that must not run
// beside a server without Redis coordination (migrate-narinfo) look for fresh leases first.

import { randomUUID } from 'node:crypto';
import os from 'node:os';
import type { Database, ServerLease } from '../db/database';
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

/**
 * Servers other than this one that renewed a lease on the database recently. A lease of this host
 * whose process is gone (a crash just before this start) is not one, nor one with our own pid (a
 * container restarted: its pid 1 is ours now).
 */
export async function otherLiveServers(db: Database): Promise<ServerLease[]> {
  const here = os.hostname();
  const leases = await db.liveLeases(Date.now() - LEASE_STALE_MS);
  return leases.filter((lease) => !(lease.hostname === here && (lease.pid === process.pid || !processAlive(lease.pid))));
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
