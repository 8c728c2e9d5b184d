/**
 * Starts the real API process in-process against a test database (the same
 * code path as `npm start` with DATABASE_URL set), on a free port.
 */
import '../../lib/graphile-env.ts';
import { parseConfig } from '../../lib/config.ts';
import { createLogger, type Logger } from '../../lib/logger.ts';
import { startAbonement, type RunningAbonement } from '../../server/index.ts';
import type { TestDatabase } from './database.ts';
import { TEST_ENV } from './env.ts';

export function testConfig(db: TestDatabase, env: Record<string, string> = {}) {
  return parseConfig({
    NODE_ENV: 'test',
    DATABASE_URL: db.superuserUrl,
    DB_ROLE_PREFIX: process.env[TEST_ENV.rolePrefix],
    DB_ROLE_SECRET: process.env[TEST_ENV.roleSecret],
    PORT: '0',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    MIGRATE_ON_START: 'false',
    ADMIN_EMAIL: 'admin@example.test',
    ADMIN_PASSWORD: 'correct horse battery staple',
    SESSION_SECRET: 'test-session-secret-test-session-secret',
    // Tests set up the tenants they need; test/api/cli.test.ts covers the demo seed.
    SEED_DEMO: 'false',
    // Webhook receivers in tests listen on 127.0.0.1; test/outbox/private-addresses.test.ts turns this off.
    WEBHOOKS_ALLOW_PRIVATE: 'true',
    // Several test files run at once, each with a server of seven pools: keep their sum
    // well under a stock PostgreSQL's max_connections = 100 (the payments lane keeps the
    // room its charge batcher needs, jobs/worker.ts lanePoolSize).
    DB_POOL_SIZE: '4',
    ...env,
  });
}

export async function startTestServer(db: TestDatabase, env: Record<string, string> = {}, logger?: Logger): Promise<RunningAbonement> {
  const config = testConfig(db, env);
  return startAbonement(config, logger ?? createLogger(config));
}

/** Re-checks `condition` until it holds or `timeoutMs` passes (for effects of background work, e.g. a job). */
export async function waitFor<T>(what: string, condition: () => Promise<T | undefined | null | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await condition();
    if (result) return result;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
