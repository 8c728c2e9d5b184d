/**
 * Customers: a tenant's end users. A big table (millions of rows): the list
 * is newest first on customers_created_at_idx, e-mails are looked up exactly
 * (customers_email_idx), and only created_at may be sorted. metadata is the
 * tenant's free-form JSON: secret-named keys in it are stripped like any
 * other (features/strip-secrets.ts).
 */
import type { ResourceWithOptions } from 'adminjs';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

export async function customersResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'customers',
    references: { tenant_id: 'tenants' },
    sortable: ['created_at'],
    exactFilters: ['email'],
  });
  return {
    resource,
    options: {
      navigation: Navigation.customers,
      titleProperty: 'email',
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['email', 'name', 'external_id', 'tenant_id', 'country', 'currency', 'created_at'],
      filterProperties: ['tenant_id', 'email', 'created_at'],
      properties: { email: { description: 'Filter: the exact e-mail address.' } },
    },
    features: [roleAccess(READ_ONLY)],
  };
}
