/**
 * Refunds: their own records (pending → succeeded | failed), created by the
 * refund functions (the Payments resource's Refund action among them) and
 * executed by the worker. Read only.
 */
import type { ResourceWithOptions } from 'adminjs';
import { REFUND_DESTINATIONS, REFUND_REASONS, REFUND_RULES, REFUND_STATUSES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

export async function refundsResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'refunds',
    availableValues: {
      status: REFUND_STATUSES,
      reason: REFUND_REASONS,
      rule: REFUND_RULES,
      destination: REFUND_DESTINATIONS,
    },
    references: { tenant_id: 'tenants', payment_id: 'payments', customer_id: 'customers', subscription_id: 'subscriptions' },
    sortable: ['created_at'],
    tenantScopedFilters: { payment_id: ['app_public.payments'], customer_id: ['app_public.customers'] },
  });
  return {
    resource,
    options: {
      navigation: Navigation.money,
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['id', 'payment_id', 'customer_id', 'amount_minor', 'currency', 'status', 'reason', 'rule', 'created_at'],
      filterProperties: ['tenant_id', 'payment_id', 'customer_id', 'status', 'created_at'],
    },
    features: [roleAccess(READ_ONLY)],
  };
}
