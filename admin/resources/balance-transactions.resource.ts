/**
 * Balance movements: the append-only ledger of a customer's credit
 * (credits, refunds to the balance, credit applied to invoices), linked from
 * the customer's page (docs/console.md, "A customer's page"). Read only:
 * credits are made through app_public.credit_balance. Newest first on
 * balance_transactions_created_at_idx; a customer's movements through
 * balance_transactions_customer_idx.
 */
import type { ResourceWithOptions } from 'adminjs';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

export async function balanceTransactionsResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'balance_transactions',
    references: { tenant_id: 'tenants', customer_id: 'customers', invoice_id: 'invoices', refund_id: 'refunds' },
    sortable: ['created_at'],
    tenantScopedFilters: { customer_id: ['app_public.customers'] },
  });
  return {
    resource,
    options: {
      navigation: Navigation.money,
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['customer_id', 'kind', 'amount_minor', 'currency', 'balance_after_minor', 'description', 'created_at'],
      filterProperties: ['tenant_id', 'customer_id', 'created_at'],
    },
    features: [roleAccess(READ_ONLY)],
  };
}
