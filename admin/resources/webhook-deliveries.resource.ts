/**
 * Webhook deliveries (app_public.webhook_deliveries): what was sent to which
 * endpoint, how often, and the last answer. Read only, with "Retry now" for
 * admin and support on a failed or given-up delivery, which calls
 * app_private.console_retry_webhook_delivery (it checks the role, moves the
 * delivery back to pending, queues its job now, and writes the audit log).
 */
import type { ResourceWithOptions } from 'adminjs';
import { roleAccess } from '../features/role-access.ts';
import { sqlRecordAction } from '../features/sql-record-action.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';

export async function webhookDeliveriesResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'webhook_deliveries',
    availableValues: { status: ['pending', 'succeeded', 'failed', 'gave_up'] },
    hiddenColumns: ['attempt_started_at'],
  });
  return {
    resource,
    options: {
      navigation: { name: 'Outbox', icon: 'Send' },
      titleProperty: 'event_type',
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['event_type', 'endpoint_id', 'status', 'attempt_count', 'last_http_status', 'next_attempt_at', 'created_at'],
      filterProperties: ['tenant_id', 'endpoint_id', 'event_id', 'event_type', 'status', 'last_http_status', 'next_attempt_at', 'created_at'],
      properties: {
        endpoint_id: { reference: 'webhook_endpoints' },
        last_error: { type: 'textarea' },
      },
      actions: {
        retryNow: sqlRecordAction({
          pool,
          sql: 'select id from app_private.console_retry_webhook_delivery($1)',
          roles: ['admin', 'support'],
          notice: 'The delivery is sent again now.',
          guard: 'Send this delivery again now?',
          icon: 'RefreshCw',
        }),
      },
    },
    features: [roleAccess({ new: [], edit: [], delete: [], bulkDelete: [] })],
  };
}
