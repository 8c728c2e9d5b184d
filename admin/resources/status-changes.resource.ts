/** Status changes: the history of every status move of subscriptions, payments, invoices and refunds. */
import type { ResourceWithOptions } from 'adminjs';
import { STATUS_CHANGE_ENTITIES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { SUBJECT_TABLES } from './events.resource.ts';
import { Navigation } from './navigation.ts';

export async function statusChangesResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'status_changes',
    availableValues: { entity: STATUS_CHANGE_ENTITIES },
    references: { tenant_id: 'tenants' },
    sortable: ['changed_at'],
    tenantScopedFilters: { entity_id: SUBJECT_TABLES },
  });
  return {
    resource,
    options: {
      navigation: Navigation.activity,
      sort: { sortBy: 'changed_at', direction: 'desc' },
      listProperties: ['entity', 'entity_id', 'from_status', 'to_status', 'tenant_id', 'changed_at'],
      filterProperties: ['tenant_id', 'entity_id', 'changed_at'],
      properties: { entity_id: { description: 'Filter: the id of a subscription, invoice, payment or refund.' } },
    },
    features: [roleAccess(READ_ONLY)],
  };
}
