/**
 * Plans: what tenants sell, with their sale window and refund window
 * (full_refund_days). Read only: tenants manage plans through the API.
 */
import type { ResourceWithOptions } from 'adminjs';
import { PLAN_STATUSES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

export async function plansResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'plans',
    availableValues: { status: PLAN_STATUSES },
    references: { tenant_id: 'tenants' },
  });
  return {
    resource,
    options: {
      navigation: Navigation.catalogue,
      titleProperty: 'name',
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['name', 'tenant_id', 'status', 'trial_days', 'full_refund_days', 'sale_starts_at', 'sale_ends_at', 'created_at'],
      filterProperties: ['tenant_id', 'name', 'status', 'created_at'],
    },
    features: [roleAccess(READ_ONLY)],
  };
}
