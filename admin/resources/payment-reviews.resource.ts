/**
 * Payment review: the payments that need a person, with the reason
 * (app_private.console_payment_reviews, 510-console-views.sql): in flight
 * with an unknown outcome, in flight unchanged for 15 minutes, or the latest
 * attempt of an open invoice failed with a gateway error. "Reconcile now"
 * settles one (see payments.resource.ts). Finance's work queue; everyone may
 * read it.
 */
import type { ResourceWithOptions } from 'adminjs';
import { PAYMENT_STATUSES, PROVIDER_NAMES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';
import { reconcileNowAction } from './payments.resource.ts';

export async function paymentReviewsResource(context: ResourceContext): Promise<ResourceWithOptions> {
  const { knex, pool } = context;
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_private',
    table: 'console_payment_reviews',
    resourceId: 'payment_reviews',
    idColumn: 'id',
    availableValues: {
      status: PAYMENT_STATUSES,
      review_reason: ['outcome_unknown', 'stuck_in_flight', 'gateway_error'],
      provider: PROVIDER_NAMES,
    },
    references: { tenant_id: 'tenants', customer_id: 'customers', invoice_id: 'invoices' },
    sortable: ['created_at', 'updated_at'],
  });
  return {
    resource,
    options: {
      navigation: Navigation.money,
      sort: { sortBy: 'updated_at', direction: 'asc' },
      listProperties: ['id', 'review_reason', 'status', 'amount_minor', 'currency', 'provider', 'invoice_id', 'updated_at'],
      filterProperties: ['tenant_id', 'review_reason', 'status', 'provider'],
      actions: { reconcileNow: reconcileNowAction(context) },
    },
    features: [roleAccess(READ_ONLY)],
  };
}
