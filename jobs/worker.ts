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
import type { Logger } from '../lib/logger.ts';
import { fromRoot } from '../lib/paths.ts';
import { ChargeBatcher } from './charge-batcher.ts';
import type { BillingTask, JobContext } from './context.ts';
import { startOutboxPoller } from './outbox-poller.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

export interface WorkerOptions {
  pool: pg.Pool;
  logger: Logger;
  concurrency: number;
  context: Omit<JobContext, 'logger' | 'charges'>;
  /**
   * Graphile Worker's batching (https://worker.graphile.org/docs/performance#batching):
   * jobs fetched per query into a local queue (≤ 1: one query per job), and
   * completions written together.
   */
  localQueueSize?: number;
  /**
   * This process's beat (for its Graphile Worker pool id, the jobs' locked_by)
   * and how old a beat may be before that pool counts as dead and its locks
   * are released (app_private.release_dead_worker_locks).
   */
  liveness?: { beatMs: number; staleSeconds: number };
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

export async function startWorker({ pool, logger, concurrency, context, localQueueSize = 0, liveness = { beatMs: 10_000, staleSeconds: 60 } }: WorkerOptions): Promise<Runner> {
  const jobsLogger = logger.child({ component: 'jobs' });
  const livenessLogger = logger.child({ component: 'worker-liveness' });
  const charges = new ChargeBatcher({ pool, providers: context.providers, logger: jobsLogger });
  // Jobs a killed worker held are released before this one starts taking jobs (docs/operations.md, "Processes").
  const releaseDead = async () => {
    const { rows } = await pool.query<{ dead: string[] }>('select app_private.release_dead_worker_locks($1) as dead', [liveness.staleSeconds]);
    const dead = rows[0]?.dead ?? [];
    if (dead.length > 0) livenessLogger.warn({ workers: dead }, 'released the jobs locked by workers that stopped beating');
  };
  await releaseDead();
  let poolId: string | undefined;
  const beat = async () => {
    if (poolId) await pool.query('select app_private.record_worker_pool_beat($1)', [poolId]);
    await releaseDead();
  };
  const beatInBackground = () => {
    beat().catch((error: Error) => livenessLogger.warn({ err: error }, 'worker beat failed'));
  };
  const events = new EventEmitter() as WorkerEvents;
  // The pool (and its id, the locked_by of its jobs) is created once run() is under way.
  events.on('pool:create', ({ workerPool }) => {
    poolId = workerPool.id;
    beatInBackground();
  });
  const runner = await run({
    pgPool: pool,
    events,
    concurrency,
    noHandleSignals: true,
    pollInterval: 2000,
    preset: {
      worker: {
        ...(localQueueSize > 1 ? { localQueue: { size: localQueueSize } } : {}),
        completeJobBatchDelay: 0,
        failJobBatchDelay: 0,
      },
    },
    taskList: await loadTasks({ ...context, charges, logger: jobsLogger }),
    crontabFile: fromRoot('jobs', 'crontab'),
    logger: graphileLogger(logger.child({ component: 'worker' })) as never,
  });
  const beats = setInterval(beatInBackground, liveness.beatMs);
  beats.unref();
  // Beat at once rather than at the next minute, so /readyz is green right after start.
  try {
    await runner.addJob('heartbeat', {}, { jobKey: 'heartbeat', maxAttempts: 1 });
  } catch (error) {
    clearInterval(beats);
    await runner.stop();
    throw error;
  }
  // Outbox events leave within OUTBOX_POLL_MS, not at the next cron minute.
  const poller = startOutboxPoller({
    pool,
    logger: logger.child({ component: 'outbox' }),
    intervalMs: context.outbox.pollMs,
    dispatch: async () => {
      await runner.addJob('events__dispatch', {}, { jobKey: 'events__dispatch' });
    },
  });
  const stopRunner = runner.stop.bind(runner);
  runner.stop = async () => {
    clearInterval(beats);
    await poller.stop();
    await stopRunner();
  };
  return runner;
}
