/**
 * Graphile Worker, connected as the worker role. One task per file in
 * jobs/tasks/ (the file name is the task name); scheduled work in
 * jobs/crontab. Every task body is idempotent: a job may run again after a
 * crash or a retry.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, type Runner } from 'graphile-worker';
import type pg from 'pg';
import { graphileLogger } from '../db/migrate.ts';
import type { Logger } from '../lib/logger.ts';
import { fromRoot } from '../lib/paths.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

export interface WorkerOptions {
  pool: pg.Pool;
  logger: Logger;
  concurrency: number;
}

export async function startWorker({ pool, logger, concurrency }: WorkerOptions): Promise<Runner> {
  const runner = await run({
    pgPool: pool,
    concurrency,
    noHandleSignals: true,
    pollInterval: 2000,
    taskDirectory: path.join(here, 'tasks'),
    crontabFile: fromRoot('jobs', 'crontab'),
    logger: graphileLogger(logger.child({ component: 'worker' })) as never,
  });
  // Beat at once rather than at the next minute, so /readyz is green right after start.
  try {
    await runner.addJob('heartbeat', {}, { jobKey: 'heartbeat', maxAttempts: 1 });
  } catch (error) {
    await runner.stop();
    throw error;
  }
  return runner;
}
