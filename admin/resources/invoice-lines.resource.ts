/** Invoice lines: what an invoice is made of. Usually opened filtered by invoice (its tenant-first index serves that). */
import type { ResourceWithOptions } from 'adminjs';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

export async function invoiceLinesResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'invoice_lines',
    references: { tenant_id: 'tenants', invoice_id: 'invoices', customer_id: 'customers', price_id: 'prices' },
    sortable: ['created_at'],
    tenantScopedFilters: { invoice_id: ['app_public.invoices'], customer_id: ['app_public.customers'] },
  });
  return {
    resource,
    options: {
      navigation: Navigation.money,
      titleProperty: 'description',
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['invoice_id', 'description', 'quantity', 'unit_amount_minor', 'amount_minor', 'period_start', 'period_end', 'created_at'],
      filterProperties: ['tenant_id', 'invoice_id', 'customer_id', 'created_at'],
    },
    features: [roleAccess(READ_ONLY)],
  };
}
