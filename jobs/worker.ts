/**
 * Graphile Worker, connected as the worker role. One task per file in
 * jobs/tasks/ (the file name is the task name); scheduled work in
 * jobs/crontab. Every task body is idempotent: a job may run again after a
 * crash or a retry.
 *
 * Tasks are loaded here (rather than by Graphile Worker's taskDirectory) so
 * each receives this process's JobContext — the provider adapters, built once
 * per process — as a third argument.
 */
import { EventEmitter } from 'node:events';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { run, type Runner, type Task, type TaskList, type WorkerEvents } from 'graphile-worker';
import type pg from 'pg';
import { graphileLogger } from '../db/migrate.ts';
import type { Config } from '../lib/config.ts';
import type { Logger } from '../lib/logger.ts';
import { CHARGE_BATCHER_CONNECTIONS, ChargeBatcher } from './charge-batcher.ts';
import type { BillingTask, JobContext } from './context.ts';
import { CRONTAB_PATH } from '../lib/crontab-schedule.ts';
import { startOutboxPoller } from './outbox-poller.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * The lanes of a worker process (docs/operations.md, "Processes"): each is a
 * Graphile Worker pool of its own, with its own jobs, concurrency and
 * database connections, so that calls that leave the process — a provider
 * that takes 30 s to answer, a tenant's slow webhook endpoint, an SMTP server
 * — can hold only their own lane. Heartbeats, the crons, renewals and the
 * outbox dispatch run in `main` and never wait behind them.
 */
export const WORKER_LANES = {
  /** Everything not named below: heartbeat, crons, renewals, dispatch, rollups. */
  main: [] as readonly string[],
  /** Tasks that wait on a payment provider. */
  payments: ['invoices__collect', 'refunds__execute', 'payments__reconcile', 'provider_events__process', 'subscriptions__expire_incomplete'],
  /** Tasks that wait on a tenant's webhook endpoint or the SMTP server. */
  outbound: ['webhooks__deliver', 'emails__send'],
} as const;
export type WorkerLane = keyof typeof WORKER_LANES;

/** Each lane's concurrency from the configuration. */
export function workerConcurrency(config: Pick<Config, 'WORKER_CONCURRENCY' | 'WORKER_PAYMENTS_CONCURRENCY' | 'WORKER_OUTBOUND_CONCURRENCY'>): Record<WorkerLane, number> {
  return { main: config.WORKER_CONCURRENCY, payments: config.WORKER_PAYMENTS_CONCURRENCY, outbound: config.WORKER_OUTBOUND_CONCURRENCY };
}

/**
 * The connections of a lane's pool: DB_POOL_SIZE, except that the payments
 * lane always has room for every batch the charge batcher may hold at once
 * plus two for Graphile Worker itself (fetching and completing jobs), so that
 * batches waiting on a slow provider can never starve the lane of connections.
 */
export function lanePoolSize(lane: WorkerLane, configured: number): number {
  return lane === 'payments' ? Math.max(configured, CHARGE_BATCHER_CONNECTIONS + 2) : configured;
}

/** The lane of a task: the one that names it, or `main`. */
export function laneOf(task: string): WorkerLane {
  if ((WORKER_LANES.payments as readonly string[]).includes(task)) return 'payments';
  if ((WORKER_LANES.outbound as readonly string[]).includes(task)) return 'outbound';
  return 'main';
}

export interface WorkerOptions {
  /** The database pool of each lane (connected as the worker role); called once per lane. */
  pool: (lane: WorkerLane) => pg.Pool;
  logger: Logger;
  /** Jobs run at once in each lane. */
  concurrency: Record<WorkerLane, number>;
  context: Omit<JobContext, 'logger' | 'charges'>;
  /**
   * Graphile Worker's batching (https://worker.graphile.org/docs/performance#batching):
   * jobs fetched per query into a lane's local queue (≤ 1: one query per job), and
   * completions written together.
   */
  localQueueSize?: number;
  /**
   * This process's beats (one per lane's Graphile Worker pool id, the jobs' locked_by)
   * and how old a beat may be before that pool counts as dead and its locks
   * are released (app_private.release_dead_worker_locks).
   */
  liveness?: { beatMs: number; staleSeconds: number };
}

/** The worker of one process: its lanes' runners, stopped together. */
export interface Worker {
  addJob: Runner['addJob'];
  stop(): Promise<void>;
}

/** Every task of jobs/tasks/, bound to the context. */
export async function loadTasks(context: JobContext): Promise<TaskList> {
  const dir = path.join(here, 'tasks');
  const files = readdirSync(dir).filter((f) => /\.(ts|js)$/.test(f) && !f.endsWith('.d.ts'));
  const tasks: TaskList = {};
  for (const file of files.sort()) {
    const name = file.replace(/\.(ts|js)$/, '');
    const module = (await import(pathToFileURL(path.join(dir, file)).href)) as { default?: BillingTask };
    const task = module.default;
    if (typeof task !== 'function') throw new Error(`jobs/tasks/${file} has no default export task`);
    tasks[name] = ((payload, helpers) => task(payload, helpers, context)) satisfies Task;
  }
  return tasks;
}

export async function startWorker({ pool, logger, concurrency, context, localQueueSize = 0, liveness = { beatMs: 10_000, staleSeconds: 60 } }: WorkerOptions): Promise<Worker> {
  const jobsLogger = logger.child({ component: 'jobs' });
  const livenessLogger = logger.child({ component: 'worker-liveness' });
  const pools = { main: pool('main'), payments: pool('payments'), outbound: pool('outbound') } satisfies Record<WorkerLane, pg.Pool>;
  const charges = new ChargeBatcher({ pool: pools.payments, providers: context.providers, logger: jobsLogger });
  // Jobs a killed worker held are released before this one starts taking jobs (docs/operations.md, "Processes").
  const releaseDead = async () => {
    const { rows } = await pools.main.query<{ dead: string[] }>('select app_private.release_dead_worker_locks($1) as dead', [liveness.staleSeconds]);
    const dead = rows[0]?.dead ?? [];
    if (dead.length > 0) livenessLogger.warn({ workers: dead }, 'released the jobs locked by workers that stopped beating');
  };
  await releaseDead();
  const poolIds = new Set<string>();
  const beat = async () => {
    for (const id of poolIds) await pools.main.query('select app_private.record_worker_pool_beat($1)', [id]);
    await releaseDead();
  };
  const beatInBackground = () => {
    beat().catch((error: Error) => livenessLogger.warn({ err: error }, 'worker beat failed'));
  };
  const tasks = await loadTasks({ ...context, charges, logger: jobsLogger });
  const runners: Runner[] = [];
  const stopAll = async () => {
    await Promise.all(runners.map((r) => r.stop()));
  };
  try {
    for (const lane of Object.keys(pools) as WorkerLane[]) {
      const events = new EventEmitter() as WorkerEvents;
      // A lane's pool (and its id, the locked_by of its jobs) is created once run() is under way.
      events.on('pool:create', ({ workerPool }) => {
        poolIds.add(workerPool.id);
        beatInBackground();
      });
      const taskList = Object.fromEntries(Object.entries(tasks).filter(([name]) => laneOf(name) === lane));
      runners.push(
        await run({
          pgPool: pools[lane],
          events,
          concurrency: concurrency[lane],
          noHandleSignals: true,
          pollInterval: 2000,
          preset: {
            worker: {
              ...(localQueueSize > 1 ? { localQueue: { size: localQueueSize } } : {}),
              completeJobBatchDelay: 0,
              failJobBatchDelay: 0,
            },
          },
          taskList,
          // Cron jobs are queued once, by the main lane; whichever lane runs a task takes its jobs.
          ...(lane === 'main' ? { crontabFile: CRONTAB_PATH } : {}),
          logger: graphileLogger(logger.child({ component: 'worker', lane })) as never,
        }),
      );
    }
  } catch (error) {
    await stopAll();
    throw error;
  }
  const main = runners[0]!;
  const beats = setInterval(beatInBackground, liveness.beatMs);
  beats.unref();
  // Beat at once rather than at the next minute, so /readyz is green right after start.
  try {
    await main.addJob('heartbeat', {}, { jobKey: 'heartbeat', maxAttempts: 1 });
  } catch (error) {
    clearInterval(beats);
    await stopAll();
    throw error;
  }
  // Outbox events leave within OUTBOX_POLL_MS, not at the next cron minute.
  const poller = startOutboxPoller({
    pool: pools.main,
    logger: logger.child({ component: 'outbox' }),
    intervalMs: context.outbox.pollMs,
    dispatch: async () => {
      await main.addJob('events__dispatch', {}, { jobKey: 'events__dispatch' });
    },
  });
  return {
    addJob: main.addJob.bind(main),
    stop: async () => {
      clearInterval(beats);
      await poller.stop();
      await stopAll();
    },
  };
}
