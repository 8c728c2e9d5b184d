/**
 * Tenants: the merchants using abonement, with the settings billing reads
 * (time zone, dunning schedule, refund policy). Read only here: tenants are
 * created by app_private.create_tenant and change their own settings through
 * the API. A small table: every column may be sorted and text filters scan.
 */
import type { ResourceWithOptions } from 'adminjs';
import { PROVIDER_NAMES, TENANT_REFUND_POLICIES, TENANT_STATUSES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

export async function tenantsResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'tenants',
    availableValues: {
      status: TENANT_STATUSES,
      refund_policy: TENANT_REFUND_POLICIES,
      default_payment_provider: PROVIDER_NAMES,
    },
  });
  return {
    resource,
    options: {
      navigation: Navigation.catalogue,
      titleProperty: 'name',
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['name', 'invoice_prefix', 'status', 'test_mode', 'default_currency', 'time_zone', 'created_at'],
      filterProperties: ['name', 'invoice_prefix', 'status', 'test_mode', 'default_currency', 'created_at'],
    },
    features: [roleAccess(READ_ONLY)],
  };
}
