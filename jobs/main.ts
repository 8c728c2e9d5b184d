/**
 * `npm run worker` / `npm run worker:prod`: Graphile Worker as its own process
 * (run the API with WORKER=off then). Needs a database URL: the embedded
 * PostgreSQL belongs to the API process.
 */
import '../lib/graphile-env.ts';
import type pg from 'pg';
import { loadConfig } from '../lib/config.ts';
import { createLogger } from '../lib/logger.ts';
import { createPool, resolveDatabase, sessionSettings } from '../lib/database.ts';
import { buildProviderRegistry } from '../providers/registry.ts';
import { handleShutdownSignals } from '../lib/signals.ts';
import { outboxSettings } from './context.ts';
import { startWorkerMetricsServer, type WorkerMetricsServer } from './metrics-server.ts';
import { lanePoolSize, startWorker, workerConcurrency } from './worker.ts';

const config = loadConfig();
const logger = createLogger(config);

if (!config.DATABASE_URL && !config.DATABASE_WORKER_URL) {
  process.stderr.write(
    'abonement worker: set DATABASE_URL (or the DATABASE_*_URL set); the embedded PostgreSQL runs inside `npm start`, which also runs the worker unless WORKER=off\n',
  );
  process.exit(78);
}

try {
  const database = await resolveDatabase(config, logger);
  const pools: pg.Pool[] = [];
  const runner = await startWorker({
    pool: (lane) => {
      const created = createPool(database.urls.worker, logger, `worker-${lane}`, lanePoolSize(lane, config.DB_POOL_SIZE), sessionSettings(config));
      pools.push(created);
      return created;
    },
    logger,
    concurrency: workerConcurrency(config),
    localQueueSize: config.WORKER_LOCAL_QUEUE_SIZE,
    context: {
      providers: buildProviderRegistry(config, logger),
      batchSize: config.BILLING_BATCH_SIZE,
      reconcileAfterMinutes: config.RECONCILE_AFTER_MINUTES,
      outbox: outboxSettings(config, logger),
    },
  });
  logger.info({ concurrency: workerConcurrency(config), localQueue: config.WORKER_LOCAL_QUEUE_SIZE, poolSize: config.DB_POOL_SIZE }, 'worker started');
  let metricsServer: WorkerMetricsServer | undefined;
  if (config.WORKER_METRICS_PORT !== undefined) {
    const metricsPool = createPool(database.urls.worker, logger, 'worker-metrics', 2, sessionSettings(config));
    pools.push(metricsPool);
    metricsServer = await startWorkerMetricsServer({ host: config.HOST, port: config.WORKER_METRICS_PORT, pool: metricsPool, logger });
    // A plain line whatever LOG_LEVEL says: scrapers (and tests with port 0) need to know where.
    process.stdout.write(`abonement worker metrics at ${metricsServer.url}/metrics\n`);
  }
  handleShutdownSignals(
    logger,
    async () => {
      await Promise.all([runner.stop(), metricsServer?.close()]);
      await Promise.all(pools.map((p) => p.end()));
      logger.info('worker stopped');
    },
    config.SHUTDOWN_TIMEOUT_MS,
  );
} catch (error) {
  logger.fatal({ err: error }, 'worker could not start');
  process.stderr.write(`abonement worker could not start: ${(error as Error).message}\n`);
  process.exit(1);
}
