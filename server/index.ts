/**
 * Starts and stops the whole API process: database (embedded or given),
 * migrations, first operator, HTTP server with GraphQL, console, health and
 * metrics, payments (webhook intake, checkout, the sandbox gateway under
 * /sandbox), and (unless WORKER=off) Graphile Worker in-process.
 *
 * The provider adapters are built once, after the server listens: with
 * PORT=0 (tests) only then is the public URL known, which the sandbox adapter
 * and the sandbox's webhook sender need. Their routes are mounted before and
 * answer 503 in that instant.
 *
 * Shutdown order matters: stop accepting requests → let in-flight requests
 * and running jobs finish (bounded by SHUTDOWN_TIMEOUT_MS) → close pools →
 * stop the embedded PostgreSQL last.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type pg from 'pg';
import { ensureFirstAdmin, mountConsole, type MountedConsole } from '../admin/index.ts';
import { registerBillingMetrics } from '../lib/billing-metrics.ts';
import { seedDemo, type DemoTenant } from '../db/demo.ts';
import { migrateDatabase } from '../db/migrate.ts';
import { ConfigError, publicUrl, trustProxySetting, type Config } from '../lib/config.ts';
import { createPool, resolveDatabase, sessionSettings, type ResolvedDatabase } from '../lib/database.ts';
import type { Logger } from '../lib/logger.ts';
import { outboxSettings } from '../jobs/context.ts';
import { lanePoolSize, startWorker, type Worker, workerConcurrency } from '../jobs/worker.ts';
import { SANDBOX_MOUNT_PATH } from '../lib/sandbox-settings.ts';
import { buildProviderRegistry, type ProviderRegistry } from '../providers/registry.ts';
import { createConfiguredSandboxGateway, type SandboxGateway } from '../sandbox/gateway.ts';
import { checkoutRoutes, type CheckoutDeps } from './checkout.ts';
import { webhookRoutes } from './webhooks.ts';
import { createApp, finishApp } from './app.ts';
import { createPostGraphile, mountGraphql } from './graphql.ts';
import { Authenticator, callerOf, type AuthErrorResponder } from './auth.ts';
import { healthRoutes } from './health.ts';
import { idempotencyHeader, type IdempotencyErrorResponder } from './idempotency.ts';
import { createMetrics } from './metrics.ts';
import { corsFor, graphqlBody, graphqlError, graphqlLimits, rateLimit, type ProtectionOptions } from './protection.ts';
import { restRouter } from './rest/router.ts';
import { sessionKey as makeSessionKey } from './sessions.ts';

export interface RunningAbonement {
  url: string;
  urls: { graphql: string; graphiql: string | null; rest: string; openapi: string; console: string; metrics: string; health: string };
  database: ResolvedDatabase;
  /** Generated on first start when ADMIN_PASSWORD is unset; shown once. */
  firstAdmin: { email: string; generatedPassword?: string } | null;
  /** The payment adapters of this process (built once from the configuration). */
  providers: ProviderRegistry;
  /** The sandbox gateway mounted at /sandbox, or null when it is off. */
  sandbox: SandboxGateway | null;
  /** What createCheckoutLink needs in this process. */
  checkout: CheckoutDeps;
  /** The demo tenant seeded on this start (an empty database and SEED_DEMO on); its API key is shown once. */
  demo: DemoTenant | null;
  stop(reason?: string): Promise<void>;
}

export async function startAbonement(config: Config, logger: Logger): Promise<RunningAbonement> {
  const cleanups: Array<() => Promise<void>> = [];
  const cleanup = async () => {
    for (const fn of cleanups.splice(0).reverse()) {
      await fn().catch((error) => logger.error({ err: error }, 'error while shutting down'));
    }
  };
  try {
    const database = await resolveDatabase(config, logger);
    if (database.embedded) cleanups.push(() => database.embedded!.stop());

    if (config.MIGRATE_ON_START) {
      await migrateDatabase({ urls: database.urls, roles: database.roles, logger, includeCurrent: config.NODE_ENV !== 'production' });
    }

    const pools: pg.Pool[] = [];
    const pool = (url: string, name: string, size = config.DB_POOL_SIZE) => {
      const p = createPool(url, logger, name, size, sessionSettings(config));
      pools.push(p);
      return p;
    };
    cleanups.push(async () => {
      await Promise.all(pools.map((p) => p.end()));
    });

    const owner = pool(database.urls.owner, 'owner');
    const firstAdmin = await ensureFirstAdmin(owner, config, logger);
    let demo: DemoTenant | null = null;
    if (config.SEED_DEMO ?? config.NODE_ENV !== 'production') {
      const client = await owner.connect();
      try {
        demo = await seedDemo(client, logger, { onlyIfEmpty: true });
      } finally {
        client.release();
      }
    }
    await owner.end();
    pools.splice(pools.indexOf(owner), 1);

    const authenticatorPool = pool(database.urls.authenticator, 'authenticator');
    const operatorPool = pool(database.urls.operator, 'operator');
    const metrics = createMetrics();
    const app = createApp(logger, metrics);
    // Which proxies may say who the client is (X-Forwarded-For): none unless TRUST_PROXY says so.
    app.set('trust proxy', trustProxySetting(config));
    const server = http.createServer(app);
    server.keepAliveTimeout = 65_000;

    healthRoutes(app, { pool: operatorPool, heartbeatMaxAgeSeconds: config.READY_HEARTBEAT_MAX_AGE_S });
    // Payments: worker-role pool (inbox, checkout functions, the sandbox's ledger); adapters bound after listen.
    const paymentsPool = pool(database.urls.worker, 'payments');
    registerBillingMetrics(metrics.registry, paymentsPool, { onError: (error) => logger.warn({ err: error }, 'billing metrics query failed') });
    let providers: ProviderRegistry | null = null;
    let sandbox: SandboxGateway | null = null;
    let checkoutDeps: CheckoutDeps | null = null;
    cleanups.push(async () => {
      await sandbox?.close();
    });
    app.use(SANDBOX_MOUNT_PATH, (req, res, next) => (sandbox ? sandbox.router(req, res, next) : next()));
    app.use(webhookRoutes({ pool: paymentsPool, providers: () => providers, metrics, bodyLimitBytes: config.BODY_LIMIT_BYTES, logger }));
    // The return page; the checkout link itself is served by /v1 and /graphql, behind the API's authentication.
    app.use(checkoutRoutes({ pool: paymentsPool }));
    const mountedConsole: MountedConsole = await mountConsole(app, { config, logger, roles: database.roles, operatorPool });
    cleanups.push(() => mountedConsole.close());
    const graphiql = config.GRAPHIQL ?? config.NODE_ENV !== 'production';
    const sessionKey = makeSessionKey(config.JWT_SECRET, logger);

    const pgl = createPostGraphile({
      authenticatorPool,
      anonymousRole: database.roles.anonymous,
      logger,
      graphiql,
      maxRequestLength: config.BODY_LIMIT_BYTES,
      sessionKey,
      checkout: () => checkoutDeps,
    });
    cleanups.push(async () => {
      await pgl.release();
    });
    const protection: ProtectionOptions = {
      corsOrigins: config.CORS_ORIGINS,
      bodyLimitBytes: config.BODY_LIMIT_BYTES,
      graphqlMaxDepth: config.GRAPHQL_MAX_DEPTH,
      graphqlMaxCost: config.GRAPHQL_MAX_COST,
      rateLimitPerSecond: config.RATE_LIMIT_PER_SECOND,
      rateLimitBurst: config.RATE_LIMIT_BURST,
    };
    const graphqlSchema = await pgl.getSchema();
    // One budget per credential across /graphql and /v1, and one per address for refused credentials.
    const rateLimiter = rateLimit(protection, callerOf);
    const authenticator = new Authenticator({
      pool: authenticatorPool,
      roles: database.roles,
      sessionKey,
      cacheTtlMs: config.API_KEY_CACHE_TTL_MS,
      logger: logger.child({ component: 'auth' }),
      failures: rateLimiter,
    });
    const graphqlAuthError: AuthErrorResponder = (_req, res, error) => graphqlError(res, error.status, error.code, error.message);
    const graphqlIdempotencyError: IdempotencyErrorResponder = (_req, res, status, code, message) => graphqlError(res, status, code, message);
    app.use(
      '/graphql',
      corsFor(protection),
      authenticator.middleware(graphqlAuthError),
      rateLimiter,
      graphqlBody(protection),
      idempotencyHeader(graphqlIdempotencyError),
      graphqlLimits(protection, graphqlSchema, rateLimiter),
    );
    app.use(
      '/v1',
      restRouter({
        pool: authenticatorPool,
        anonymousRole: database.roles.anonymous,
        sessionKey,
        authenticator,
        protection,
        rateLimiter,
        logger: logger.child({ component: 'rest' }),
        checkout: () => checkoutDeps,
      }),
    );
    await mountGraphql(app, server, pgl);
    finishApp(app);

    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.PORT, config.HOST, () => {
        server.off('error', reject);
        resolve();
      });
    });
    let runner: Worker | undefined;
    // Stop accepting requests and jobs at once; both drain in parallel before pools close.
    cleanups.push(async () => {
      await Promise.all([closeServer(server, config.SHUTDOWN_TIMEOUT_MS, logger), runner?.stop()]);
    });

    const port = (server.address() as AddressInfo).port;
    const base = config.PORT === 0 ? `http://127.0.0.1:${port}` : publicUrl(config);
    const url = base;
    const bound: Config = config.PORT === 0 && !config.PUBLIC_URL ? { ...config, PUBLIC_URL: base } : config;
    providers = buildProviderRegistry(bound, logger);
    sandbox = createConfiguredSandboxGateway(bound, logger, paymentsPool);
    checkoutDeps = { pool: paymentsPool, providers, publicUrl: publicUrl(bound), logger: logger.child({ component: 'checkout' }) };
    logger.info({ providers: providers.all().map((p) => p.name), sandbox: sandbox !== null }, 'payment providers ready');

    if (config.WORKER === 'on') {
      runner = await startWorker({
        pool: (lane) => pool(database.urls.worker, `worker-${lane}`, lanePoolSize(lane, config.DB_POOL_SIZE)),
        logger,
        concurrency: workerConcurrency(config),
        localQueueSize: config.WORKER_LOCAL_QUEUE_SIZE,
        context: {
          providers,
          batchSize: config.BILLING_BATCH_SIZE,
          reconcileAfterMinutes: config.RECONCILE_AFTER_MINUTES,
          outbox: outboxSettings(config, logger),
        },
      });
    }
    return {
      url,
      urls: {
        graphql: `${url}/graphql`,
        graphiql: graphiql ? `${url}/` : null,
        rest: `${url}/v1`,
        openapi: `${url}/v1/openapi.json`,
        console: `${url}${mountedConsole.rootPath}`,
        metrics: `${url}/metrics`,
        health: `${url}/healthz`,
      },
      database,
      firstAdmin,
      providers,
      sandbox,
      checkout: checkoutDeps,
      demo,
      stop: async (reason = 'stop requested') => {
        logger.info({ reason }, 'shutting down');
        await cleanup();
        logger.info('stopped');
      },
    };
  } catch (error) {
    // A ConfigError is the operator's to fix, said in one line by the entry point (lib/config.ts, exitOnConfigError).
    if (!(error instanceof ConfigError)) logger.error({ err: error }, 'start failed; undoing what was started');
    await cleanup();
    throw error;
  }
}

/**
 * Stops accepting connections, lets in-flight requests finish, and after
 * `timeoutMs` cuts whatever is left.
 */
async function closeServer(server: http.Server, timeoutMs: number, logger: Logger): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const timer = setTimeout(() => {
    logger.warn({ timeoutMs }, 'in-flight requests did not finish in time; closing their connections');
    server.closeAllConnections();
  }, timeoutMs);
  timer.unref();
  // Keep-alive connections that become idle after their last response are closed too.
  const idle = setInterval(() => server.closeIdleConnections(), 100);
  idle.unref();
  await closed;
  clearTimeout(timer);
  clearInterval(idle);
}
