/**
 * Tenants' webhook endpoints (app_public.webhook_endpoints), read only:
 * tenants manage them through the API. The signing secrets live in
 * app_private.webhook_endpoint_secrets, which the operator role cannot read
 * at all; this resource never loads them.
 */
import type { ResourceWithOptions } from 'adminjs';
import { WEBHOOK_ENDPOINT_DISABLED_REASONS, WEBHOOK_ENDPOINT_STATUSES } from '../../lib/statuses.ts';
import { roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';

export async function webhookEndpointsResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'webhook_endpoints',
    availableValues: { status: WEBHOOK_ENDPOINT_STATUSES, disabled_reason: WEBHOOK_ENDPOINT_DISABLED_REASONS },
  });
  return {
    resource,
    options: {
      navigation: { name: 'Outbox', icon: 'Send' },
      titleProperty: 'url',
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['url', 'tenant_id', 'status', 'enabled_events', 'created_at'],
      filterProperties: ['tenant_id', 'url', 'status', 'disabled_reason', 'created_at'],
      showProperties: ['id', 'tenant_id', 'url', 'description', 'enabled_events', 'status', 'disabled_reason', 'created_at', 'updated_at'],
    },
    features: [roleAccess({ new: [], edit: [], delete: [], bulkDelete: [] })],
  };
}
