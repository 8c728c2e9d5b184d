/**
 * Jobs: Graphile Worker's queue, read from the `graphile_worker.jobs` view
 * (a view: @adminjs/sql would not load it; table-resource.ts does, with `id`
 * named as its id column). The view has no payload column, which is as it
 * should be: payloads may carry data operators need not see.
 *
 * Everyone may read; admins may run a job now, fail it permanently, delete
 * it, or unlock the jobs of a crashed worker (docs/console.md, "Jobs, the
 * crontab and replays"). Each calls a SQL function (16-jobs-admin.sql) that
 * checks the role, wraps Graphile Worker's own admin function and writes the
 * audit log with the form's idempotency key; nothing here writes its tables
 * (the operator role cannot). All are forms acting on POST only
 * (admin/sql-actions.ts): a link from another site must change nothing.
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

/** The job functions refuse with JOB_LOCKED, JOB_NOT_FOUND … themselves: their errors reach the form. */
const JOB_SUMMARY = [
  { label: 'Task', param: 'task_identifier' },
  { label: 'Attempts', param: 'attempts' },
  { label: 'Runs at', param: 'run_at' },
  { label: 'Locked by', param: 'locked_by' },
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
        runNow: sqlRecordAction(context, {
          roles: ['admin'],
          icon: 'RefreshCw',
          description: 'Runs this job at the next poll, with its attempts reset (a permanently failed job too). A job a worker holds right now is refused.',
          submitLabel: 'Run now',
          summary: JOB_SUMMARY,
          run: async (client, id, _input, key) => {
            await client.query('select app_private.console_run_job_now($1::bigint, $2)', [id, key]);
            return { message: 'The job runs at the next poll.' };
          },
        }),
        failPermanently: sqlRecordAction(context, {
          roles: ['admin'],
          icon: 'XOctagon',
          variant: 'danger',
          description: 'Fails this job permanently: it stays in the list with your name and reason as its last error and never runs again (unless you run it now).',
          submitLabel: 'Fail permanently',
          fields: [{ name: 'reason', label: 'Reason', type: 'text', help: 'Kept in the job’s last error and the audit log (at most 500 characters).' }],
          summary: JOB_SUMMARY,
          offeredFor: (params) => Number(params.attempts) < Number(params.max_attempts),
          run: async (client, id, input, key) => {
            await client.query('select app_private.console_fail_job($1::bigint, $2, $3)', [id, input.reason ?? '', key]);
            return { message: 'The job failed permanently; it will not run again.' };
          },
        }),
        deleteJob: sqlRecordAction(context, {
          roles: ['admin'],
          icon: 'Trash2',
          variant: 'danger',
          description: 'Deletes this job: it is removed from the queue and will not run (Graphile Worker’s complete_jobs). The audit log keeps it as it was.',
          submitLabel: 'Delete job',
          summary: JOB_SUMMARY,
          run: async (client, id, _input, key) => {
            await client.query('select app_private.console_delete_job($1::bigint, $2)', [id, key]);
            return { message: 'The job was deleted.', redirect: { resourceId: 'jobs' } };
          },
        }),
        unlockWorker: sqlRecordAction(context, {
          roles: ['admin'],
          icon: 'Unlock',
          variant: 'danger',
          description:
            'Unlocks every job and queue of the worker holding this job, so other workers take them. Only once that worker has been silent for a minute (it crashed): a live worker’s jobs would run twice.',
          submitLabel: 'Unlock the worker’s jobs',
          summary: JOB_SUMMARY,
          offeredFor: (params) => Boolean(params.locked_by),
          run: async (client, id, _input, key) => {
            await client.query('select app_private.console_unlock_worker($1::bigint, $2)', [id, key]);
            return { message: 'The worker’s jobs were unlocked; they run at the next poll.' };
          },
        }),
      },
    },
    features: [roleAccess({ new: [], edit: [], delete: [], bulkDelete: [] })],
  };
}
