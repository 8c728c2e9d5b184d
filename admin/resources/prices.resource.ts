/**
 * Prices: a plan's amount in minor units of one currency per month or year.
 * Immutable amounts; read only here.
 */
import type { ResourceWithOptions } from 'adminjs';
import { PRICE_INTERVALS } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

export async function pricesResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'prices',
    availableValues: { interval: PRICE_INTERVALS },
    references: { tenant_id: 'tenants', plan_id: 'plans' },
  });
  return {
    resource,
    options: {
      navigation: Navigation.catalogue,
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['id', 'plan_id', 'tenant_id', 'currency', 'interval', 'amount_minor', 'active', 'created_at'],
      filterProperties: ['tenant_id', 'plan_id', 'currency', 'interval', 'active', 'created_at'],
      properties: { amount_minor: { description: 'Minor units of the currency (1050 USD = 10.50 USD).' } },
    },
    features: [roleAccess(READ_ONLY)],
  };
}
