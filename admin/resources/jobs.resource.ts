/**
 * Jobs: Graphile Worker's queue, read from the `graphile_worker.jobs` view
 * (a view: @adminjs/sql would not load it; table-resource.ts does, with `id`
 * named as its id column). The view has no payload column, which is as it
 * should be: payloads may carry data operators need not see.
 *
 * Everyone may read; admins may retry a job now or mark it completed (which
 * removes it). Both call Graphile Worker's own SQL functions; nothing here
 * writes its tables.
 */
import type { ActionContext, ActionRequest, ActionResponse, RecordActionResponse, ResourceWithOptions } from 'adminjs';
import type pg from 'pg';
import { allowRoles, roleAccess } from '../features/role-access.ts';
import { stripSecretsAfter } from '../features/strip-secrets.ts';
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

function jobAction(
  pool: pg.Pool,
  sql: string,
  notice: string,
  gone: boolean,
): (request: ActionRequest, response: unknown, context: ActionContext) => Promise<RecordActionResponse> {
  return async (_request, _response, context) => {
    const record = context.record!;
    await pool.query(sql, [[String(record.id())]]);
    const fresh = gone ? null : await context.resource.findOne(String(record.id()));
    return {
      record: (fresh ?? record).toJSON(context.currentAdmin),
      notice: { message: notice, type: 'success' },
      ...(gone ? { redirectUrl: context.h.resourceUrl({ resourceId: context.resource.id() }) } : {}),
    };
  };
}

export async function jobsResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'graphile_worker',
    table: 'jobs',
    idColumn: 'id',
  });
  const adminOnly = allowRoles(['admin']);
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
        retryNow: {
          actionType: 'record',
          icon: 'RefreshCw',
          guard: 'Run this job now, with its attempts reset?',
          component: false,
          isAccessible: adminOnly,
          handler: jobAction(
            pool,
            'select graphile_worker.reschedule_jobs($1::bigint[], run_at := now(), attempts := 0)',
            'The job runs again at the next poll.',
            false,
          ),
          after: stripSecretsAfter as (response: ActionResponse) => ActionResponse,
        },
        markCompleted: {
          actionType: 'record',
          icon: 'CheckCircle',
          variant: 'danger',
          guard: 'Mark this job completed? It is removed from the queue and will not run.',
          component: false,
          isAccessible: adminOnly,
          handler: jobAction(pool, 'select graphile_worker.complete_jobs($1::bigint[])', 'The job was removed from the queue.', true),
          after: stripSecretsAfter as (response: ActionResponse) => ActionResponse,
        },
      },
    },
    features: [roleAccess({ new: [], edit: [], delete: [], bulkDelete: [] })],
  };
}
