// `ncps serve --server-workers=N` (N > 1): this process does what is done once per instance
// (migrations, the server lease, the signing key; `prepare`), then forks N workers that serve on
// the one port (node:cluster hands them the connections in turn), coordinates them (Coordinator),
// restarts a worker that crashes, tells systemd READY once all listen, and on SIGTERM drains them
// all before it stops. It serves nothing itself.

import cluster, { type Worker } from 'node:cluster';
import type { Logger } from '../telemetry/logger';
import { SystemdNotifier } from '../telemetry/systemd';
import { Coordinator } from './coordinator';
import { WORKER_INDEX_ENV } from './worker-link';

export interface SupervisorOptions {
  workers: number;
  logger: Logger;
  /** What the log and systemd's status say the instance listens on. */
  address: string;
  /** The once-per-instance work before any worker starts; resolves with its undoing. */
  prepare: () => Promise<{ stop(): Promise<void> }>;
  /** How long workers get to drain on SIGTERM before they are killed. */
  drainTimeoutMs: number;
}

/** A crashed worker is restarted after this long, doubling up to the maximum while it keeps crashing. */
const RESTART_DELAY_MS = 500;
const MAX_RESTART_DELAY_MS = 30_000;
/** A worker that ran this long is healthy again: the next crash restarts it at once. */
const HEALTHY_AFTER_MS = 60_000;

interface Slot {
  index: number;
  worker: Worker | undefined;
  startedAt: number;
  ready: boolean;
  restartDelayMs: number;
  restartTimer?: NodeJS.Timeout;
}

export async function superviseWorkers(options: SupervisorOptions): Promise<number> {
  const { logger, workers } = options;
  const systemd = new SystemdNotifier(logger);
  const coordinator = new Coordinator(logger);
  let stopping = false;
  let signalled: (() => void) | undefined;
  const stopRequested = new Promise<void>((resolve) => (signalled = resolve));
  const onSignal = () => {
    stopping = true;
    signalled?.();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  const prepared = await options.prepare();
  const slots: Slot[] = Array.from({ length: workers }, (_, index) => ({ index, worker: undefined, startedAt: 0, ready: false, restartDelayMs: RESTART_DELAY_MS }));
  let startupFailed: ((reason: string) => void) | undefined;
  let allReady: (() => void) | undefined;
  const started = new Promise<void>((resolve, reject) => {
    allReady = resolve;
    startupFailed = (reason) => reject(new Error(reason));
  });
  let everyoneListened = false;

  const fork = (slot: Slot) => {
    // Only the supervisor speaks to systemd.
    const worker = cluster.fork({ [WORKER_INDEX_ENV]: String(slot.index), NOTIFY_SOCKET: '' });
    slot.worker = worker;
    slot.startedAt = Date.now();
    slot.ready = false;
    coordinator.attach(worker, () => {
      slot.ready = true;
      if (everyoneListened) logger.info({ worker: slot.index, pid: worker.process.pid }, 'worker restarted and serving');
      else if (slots.every((s) => s.ready)) allReady?.();
    });
    worker.once('exit', (code, signal) => {
      coordinator.detach(worker);
      slot.worker = undefined;
      if (stopping) return;
      if (!everyoneListened) {
        startupFailed?.(`worker ${slot.index} exited during start-up (${signal ?? `code ${code}`})`);
        return;
      }
      if (Date.now() - slot.startedAt > HEALTHY_AFTER_MS) slot.restartDelayMs = RESTART_DELAY_MS;
      logger.error({ worker: slot.index, pid: worker.process.pid, code, signal, restartInMs: slot.restartDelayMs }, 'worker exited; restarting it');
      slot.restartTimer = setTimeout(() => {
        slot.restartTimer = undefined;
        if (!stopping) fork(slot);
      }, slot.restartDelayMs);
      slot.restartDelayMs = Math.min(MAX_RESTART_DELAY_MS, slot.restartDelayMs * 2);
    });
  };

  let exitCode = 0;
  for (const slot of slots) fork(slot);
  const outcome = await Promise.race([started.then(() => 'started' as const), stopRequested.then(() => 'signal' as const)]).catch((error: Error) => error);
  if (outcome === 'started') {
    everyoneListened = true;
    logger.info({ addr: options.address, workers, pids: slots.map((s) => s.worker?.process.pid) }, `ncps is serving with ${workers} workers`);
    await systemd.ready(`serving on ${options.address} with ${workers} workers`);
    await stopRequested;
    logger.info('shutting down: draining every worker');
    await systemd.stopping();
  } else if (outcome instanceof Error) {
    logger.error({ err: outcome.message }, 'could not start the workers; stopping');
    exitCode = 1;
  }

  stopping = true;
  for (const slot of slots) if (slot.restartTimer) clearTimeout(slot.restartTimer);
  await stopWorkers(slots, options.drainTimeoutMs, logger);
  await prepared.stop().catch((error: Error) => logger.warn({ err: error.message }, 'error during shutdown'));
  await coordinator.close();
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  logger.info('stopped');
  return exitCode;
}

/** SIGTERM to every worker (each drains its requests and downloads), SIGKILL to any still there after the drain time. */
async function stopWorkers(slots: Slot[], drainTimeoutMs: number, logger: Logger): Promise<void> {
  const running = slots.map((s) => s.worker).filter((w): w is Worker => w !== undefined && !w.isDead());
  const exits = running.map((worker) => new Promise<void>((resolve) => worker.once('exit', () => resolve())));
  for (const worker of running) worker.process.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), drainTimeoutMs + 10_000)));
  const result = await Promise.race([Promise.all(exits), timedOut]);
  clearTimeout(timer);
  if (result === 'timeout') {
    logger.error('workers did not stop in time; killing them');
    for (const worker of running) if (!worker.isDead()) worker.process.kill('SIGKILL');
    await Promise.all(exits);
  }
}
