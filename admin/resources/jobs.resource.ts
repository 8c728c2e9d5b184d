/**
 * Jobs: Graphile Worker's queue, read from the `graphile_worker.jobs` view
 * (a view: @adminjs/sql would not load it; table-resource.ts does, with `id`
 * named as its id column). The view has no payload column, which is as it
 * should be: payloads may carry data operators need not see.
 *
 * Everyone may read; admins may retry a job now or mark it completed (which
 * removes it). Both call SQL functions (090-console.sql) that wrap Graphile
 * Worker's own and write the audit log; nothing here writes its tables.
 * Both are forms acting on POST only (admin/sql-actions.ts): they used to run
 * on GET, which a link from another site could trigger with the session
 * cookie (SameSite=Lax allows top-level GETs).
 * (Graphile Worker enables row level security on its tables without
 * policies, so only their owner can change them.)
 */
import type { ResourceWithOptions } from 'adminjs';
import type pg from 'pg';
import { roleAccess } from '../features/role-access.ts';
import { sqlRecordAction } from '../sql-actions.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';

export interface JobsSummary {
  queued: number;
  locked: number;
  failing: number;
  permanentlyFailed: number;
}

/** Counts for the dashboard. */
export async function jobsSummary(pool: pg.Pool): Promise<JobsSummary | undefined> {
  const { rows } = await pool.query<JobsSummary>(`
    select (count(*) filter (where locked_at is null and attempts < max_attempts))::int as queued,
           (count(*) filter (where locked_at is not null))::int as locked,
           (count(*) filter (where attempts > 0 and attempts < max_attempts))::int as failing,
           (count(*) filter (where attempts >= max_attempts))::int as "permanentlyFailed"
      from graphile_worker.jobs`);
  return rows[0];
}

const NOT_CHANGED = 'The job is running (locked by a worker) or gone; nothing was changed.';
const JOB_SUMMARY = [
  { label: 'Task', param: 'task_identifier' },
  { label: 'Attempts', param: 'attempts' },
  { label: 'Runs at', param: 'run_at' },
  { label: 'Last error', param: 'last_error' },
];

export async function jobsResource(context: ResourceContext): Promise<ResourceWithOptions> {
  const { knex, pool } = context;
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'graphile_worker',
    table: 'jobs',
    idColumn: 'id',
  });
  return {
    resource,
    options: {
      navigation: { name: 'Platform', icon: 'Activity' },
      titleProperty: 'task_identifier',
      sort: { sortBy: 'run_at', direction: 'asc' },
      listProperties: ['id', 'task_identifier', 'queue_name', 'run_at', 'attempts', 'max_attempts', 'locked_at', 'last_error'],
      filterProperties: ['task_identifier', 'queue_name', 'key', 'run_at', 'attempts', 'locked_at', 'last_error'],
      properties: {
        last_error: { type: 'textarea' },
      },
      actions: {
        retryNow: sqlRecordAction(context, {
          roles: ['admin'],
          icon: 'RefreshCw',
          description: 'Runs this job at the next poll, with its attempts reset. A job a worker holds right now is left alone.',
          submitLabel: 'Retry now',
          idempotencyKey: 'none',
          summary: JOB_SUMMARY,
          run: async (client, id) => {
            const { rows } = await client.query<{ changed: number }>('select app_private.console_retry_jobs($1::bigint[]) as changed', [[id]]);
            return rows[0]?.changed ? { message: 'The job runs again at the next poll.' } : { message: NOT_CHANGED, failed: true };
          },
        }),
        markCompleted: sqlRecordAction(context, {
          roles: ['admin'],
          icon: 'CheckCircle',
          variant: 'danger',
          description: 'Marks this job completed: it is removed from the queue and will not run.',
          submitLabel: 'Mark completed',
          idempotencyKey: 'none',
          summary: JOB_SUMMARY,
          run: async (client, id) => {
            const { rows } = await client.query<{ changed: number }>('select app_private.console_complete_jobs($1::bigint[]) as changed', [[id]]);
            return rows[0]?.changed ? { message: 'The job was removed from the queue.', redirect: { resourceId: 'jobs' } } : { message: NOT_CHANGED, failed: true };
          },
        }),
      },
    },
    features: [roleAccess({ new: [], edit: [], delete: [], bulkDelete: [] })],
  };
}
