/**
 * Payment methods: brand, last four digits and expiry only. The provider's
 * token is never in the console: the operator role is not granted the
 * provider_token column (025-customers.sql), so it cannot even see it in
 * the catalogue; table-resource.ts would not load a column named like a
 * secret anyway, and strip-secrets removes such params from every response.
 * test/console/billing.test.ts proves it on the raw JSON.
 */
import type { ResourceWithOptions } from 'adminjs';
import { PROVIDER_NAMES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

export async function paymentMethodsResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'payment_methods',
    references: { tenant_id: 'tenants', customer_id: 'customers' },
    availableValues: { provider: PROVIDER_NAMES },
    sortable: ['created_at'],
    tenantScopedFilters: { customer_id: ['app_public.customers'] },
  });
  return {
    resource,
    options: {
      navigation: Navigation.customers,
      titleProperty: 'last4',
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['customer_id', 'brand', 'last4', 'exp_month', 'exp_year', 'provider', 'is_default', 'created_at'],
      filterProperties: ['customer_id', 'created_at'],
    },
    features: [roleAccess(READ_ONLY)],
  };
}
