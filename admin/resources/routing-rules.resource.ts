/**
 * Payment routing rules: which provider takes a tenant's checkouts, by
 * currency and country. Tenants edit them through the API; read only here.
 */
import type { ResourceWithOptions } from 'adminjs';
import { PROVIDER_NAMES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

export async function routingRulesResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'payment_routing_rules',
    resourceId: 'routing_rules',
    availableValues: { provider: PROVIDER_NAMES },
    references: { tenant_id: 'tenants' },
  });
  return {
    resource,
    options: {
      navigation: Navigation.catalogue,
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['tenant_id', 'priority', 'provider', 'currency', 'country', 'created_at'],
      filterProperties: ['tenant_id', 'provider', 'currency', 'country'],
    },
    features: [roleAccess(READ_ONLY)],
  };
}
