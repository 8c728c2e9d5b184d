/**
 * The Crontab page (docs/console.md, "Jobs, the crontab and replays"): each
 * task of jobs/crontab with its schedule, the comment above it, when Graphile
 * Worker last scheduled it (graphile_worker._private_known_crontabs, read
 * through app_private.console_crontab_runs(): the table has row level
 * security without policies) and when it runs next.
 *
 * The schedule is the file the worker runs (the same path as jobs/worker.ts),
 * parsed by Graphile Worker's own parser, whose matcher also gives the next
 * run: the first minute from now that it matches, in UTC as Graphile Worker's
 * cron does. Every operator may read it (nothing here is a secret or a
 * tenant's).
 */
import { readFile } from 'node:fs/promises';
import type { AdminPage, PageHandler } from 'adminjs';
import { parseCrontab } from 'graphile-worker';
import type pg from 'pg';
import type { Logger } from '../../lib/logger.ts';
import { CRONTAB_PATH, crontabLines, nextRun } from '../../lib/crontab-schedule.ts';
import { Components } from '../components.ts';

export interface CrontabTask {
  identifier: string;
  task: string;
  /** The five schedule fields as written, e.g. `17 * * * *`. */
  schedule: string;
  /** The options as written (`max=1&jobKey=…`), or ''. */
  options: string;
  /** The comment lines just above the task's line. */
  description: string;
  /** ISO 8601 UTC, or null: Graphile Worker has not seen or not yet run it. */
  knownSince: string | null;
  lastRun: string | null;
  nextRun: string | null;
}

export interface CrontabPageData {
  /** The server's time (ISO UTC) the relative times are counted from. */
  now: string;
  tasks: CrontabTask[];
}

export async function crontabData(pool: pg.Pool, now = new Date()): Promise<CrontabPageData> {
  const text = await readFile(CRONTAB_PATH, 'utf8');
  const parsed = parseCrontab(text);
  const written = crontabLines(text);
  const { rows } = await pool.query<{ identifier: string; known_since: Date | null; last_execution: Date | null }>('select * from app_private.console_crontab_runs()');
  const runs = new Map(rows.map((r) => [r.identifier, r]));
  return {
    now: now.toISOString(),
    tasks: parsed.map((item, i) => {
      const line = written[i]!;
      const run = runs.get(item.identifier);
      return {
        identifier: item.identifier,
        task: item.task,
        schedule: line.schedule,
        options: line.options,
        description: line.description,
        knownSince: run?.known_since?.toISOString() ?? null,
        lastRun: run?.last_execution?.toISOString() ?? null,
        nextRun: nextRun(item.match, now)?.toISOString() ?? null,
      };
    }),
  };
}

function crontabHandler(pool: pg.Pool, logger: Logger): PageHandler {
  return async () => {
    try {
      return await crontabData(pool);
    } catch (error) {
      logger.error({ err: error, event: 'console_crontab_failed' }, 'crontab page failed');
      return { error: { code: 'INTERNAL_ERROR', message: 'the crontab could not be read; the server log has the details' } };
    }
  };
}

export function crontabPage(pool: pg.Pool, logger: Logger): AdminPage {
  return { component: Components.Crontab, icon: 'Clock', handler: crontabHandler(pool, logger) };
}
