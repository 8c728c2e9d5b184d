/**
 * Jobs: Graphile Worker's queue, read from the `graphile_worker.jobs` view
 * (a view: @adminjs/sql would not load it; table-resource.ts does, with `id`
 * named as its id column). The view has no payload column, which is as it
 * should be: payloads may carry data operators need not see.
 *
 * Everyone may read; admins may retry a job now or mark it completed (which
 * removes it). Both call SQL functions (090-console.sql) that wrap Graphile
 * Worker's own and write the audit log; nothing here writes its tables.
 * (Graphile Worker enables row level security on its tables without
 * policies, so only their owner can change them.)
 */
import type { ActionContext, ActionRequest, ActionResponse, RecordActionResponse, ResourceWithOptions } from 'adminjs';
import type pg from 'pg';
import { allowRoles, roleAccess, type ConsoleOperator } from '../features/role-access.ts';
import { asOperator } from '../operator-claims.ts';
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
    const operator = context.currentAdmin as ConsoleOperator;
    const { rows } = await asOperator(pool, operator.id, (client) => client.query<{ changed: number }>(sql, [[String(record.id())]]));
    if (!rows[0]?.changed) {
      return {
        record: record.toJSON(context.currentAdmin),
        notice: { message: 'The job is running (locked by a worker) or gone; nothing was changed.', type: 'error' },
      };
    }
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
            'select app_private.console_retry_jobs($1::bigint[]) as changed',
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
          handler: jobAction(pool, 'select app_private.console_complete_jobs($1::bigint[]) as changed', 'The job was removed from the queue.', true),
          after: stripSecretsAfter as (response: ActionResponse) => ActionResponse,
        },
      },
    },
    features: [roleAccess({ new: [], edit: [], delete: [], bulkDelete: [] })],
  };
}
