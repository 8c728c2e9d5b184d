/**
 * /healthz: the process is alive (no dependencies checked, so an orchestrator
 * does not restart a healthy process during a database outage).
 * /readyz: the database answers, its schema is at the newest committed
 * migration, and a worker has beaten recently; 503 with the failing checks
 * otherwise.
 */
import type express from 'express';
import type pg from 'pg';
import { latestCommittedMigration } from '../db/migrate.ts';

export interface ReadinessOptions {
  pool: pg.Pool;
  heartbeatMaxAgeSeconds: number;
  /** Answer within this many milliseconds even if the database hangs. */
  timeoutMs?: number;
}

export interface ReadinessReport {
  ready: boolean;
  checks: {
    database: { ok: boolean; error?: string };
    migrations: { ok: boolean; expected: string | null; applied: string | null };
    worker: { ok: boolean; lastHeartbeat: string | null; maxAgeSeconds: number };
  };
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export async function checkReadiness(options: ReadinessOptions): Promise<ReadinessReport> {
  const expected = latestCommittedMigration();
  const report: ReadinessReport = {
    ready: false,
    checks: {
      database: { ok: false },
      migrations: { ok: false, expected, applied: null },
      worker: { ok: false, lastHeartbeat: null, maxAgeSeconds: options.heartbeatMaxAgeSeconds },
    },
  };
  try {
    const { rows } = await withTimeout(
      options.pool.query<{ last_migration: string | null; heartbeat_at: Date | null; age_s: number | null }>(
        `select last_migration, heartbeat_at, extract(epoch from clock_timestamp() - heartbeat_at)::float8 as age_s
         from app_private.readiness()`,
      ),
      options.timeoutMs ?? 2000,
    );
    const row = rows[0]!;
    report.checks.database.ok = true;
    report.checks.migrations.applied = row.last_migration;
    report.checks.migrations.ok = row.last_migration === expected;
    report.checks.worker.lastHeartbeat = row.heartbeat_at?.toISOString() ?? null;
    report.checks.worker.ok = row.age_s !== null && row.age_s <= options.heartbeatMaxAgeSeconds;
  } catch (error) {
    report.checks.database.error = (error as Error).message;
  }
  report.ready = report.checks.database.ok && report.checks.migrations.ok && report.checks.worker.ok;
  return report;
}

export function healthRoutes(app: express.Express, options: ReadinessOptions): void {
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (req, res) => {
    const report = await checkReadiness(options);
    if (!report.ready) req.log?.warn({ checks: report.checks }, 'not ready');
    res.status(report.ready ? 200 : 503).json({ status: report.ready ? 'ready' : 'not_ready', ...(report.checks && { checks: report.checks }) });
  });
}
