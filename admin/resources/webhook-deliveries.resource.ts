/**
 * Webhook deliveries (app_public.webhook_deliveries): what was sent to which
 * endpoint, how often, and the last answer. Read only, with "Retry now" for
 * admin and support on a failed or given-up delivery, which calls
 * app_private.console_retry_webhook_delivery (it checks the role, moves the
 * delivery back to pending, queues its job now, and writes the audit log).
 */
import type { ResourceWithOptions } from 'adminjs';
import { WEBHOOK_DELIVERY_STATUSES } from '../../lib/statuses.ts';
import { roleAccess } from '../features/role-access.ts';
import { sqlRecordAction } from '../sql-actions.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';

export async function webhookDeliveriesResource({ knex, pool, logger }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'webhook_deliveries',
    availableValues: { status: WEBHOOK_DELIVERY_STATUSES },
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
        retryNow: sqlRecordAction(
          { pool, logger },
          {
            roles: ['admin', 'support'],
            icon: 'RefreshCw',
            description: 'Sends this delivery again now (a failed or given-up one; the receiver de-duplicates by event id).',
            submitLabel: 'Retry now',
            // Retrying a delivery twice is the same as once: the function takes no key.
            idempotencyKey: 'none',
            summary: [
              { label: 'Status', param: 'status' },
              { label: 'Attempts', param: 'attempt_count' },
            ],
            run: async (client, id) => {
              await client.query('select id from app_private.console_retry_webhook_delivery($1)', [id]);
              return { message: 'The delivery is sent again now.' };
            },
          },
        ),
      },
    },
    features: [roleAccess({ new: [], edit: [], delete: [], bulkDelete: [] })],
  };
}
