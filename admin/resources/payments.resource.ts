/**
 * Payments, with what finance does to them:
 *
 * - Refund: a chosen amount (default: all that is left) with a reason, to the
 *   card or to the customer balance, through the billing core's
 *   app_public.refund_payment. It checks the role (finance or admin) and,
 *   under the payment's row lock, that pending + succeeded refunds never
 *   exceed the payment (invariant 2: REFUND_EXCEEDS_REMAINDER otherwise). A
 *   refund to the card is pending until the worker's refunds__execute sends
 *   it to the provider. The form's idempotency key makes a double submission
 *   one refund.
 * - Reconcile now (also on Payment review): app_private.console_review_payment.
 *
 * A big table: newest first on payments_created_at_idx, status on
 * payments_status_created_at_idx, customer and invoice filters narrowed to
 * their tenant.
 */
import type { ResourceWithOptions } from 'adminjs';
import { PAYMENT_FAILURE_CATEGORIES, PAYMENT_FLOWS, PAYMENT_STATUSES, PROVIDER_NAMES, REFUND_REASONS, paymentInFlight } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { sqlRecordAction, type SqlActionDeps } from '../sql-actions.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

const FINANCE = ['admin', 'finance'] as const;

/** "Reconcile now", shared by Payments and Payment review (the record id is the payment's). */
export function reconcileNowAction(deps: SqlActionDeps) {
  return sqlRecordAction(deps, {
    roles: FINANCE,
    icon: 'RefreshCw',
    description:
      'In flight with an unknown outcome or unchanged for 15 minutes: the worker asks the provider about this payment now (payments__reconcile) and applies its answer; it is never charged again blindly. Failed with a gateway error while its invoice is still open: the invoice is collected again now (invoices__collect).',
    submitLabel: 'Reconcile now',
    summary: [
      { label: 'Status', param: 'status' },
      { label: 'Failure category', param: 'failure_category' },
      { label: 'Outcome unknown since', param: 'outcome_unknown_since' },
      { label: 'Last change', param: 'updated_at' },
    ],
    offeredFor: (params) => paymentInFlight(String(params.status)) || (params.status === 'failed' && params.failure_category === 'gateway_error'),
    run: async (client, id, _input, key) => {
      const { rows } = await client.query<{ result: { queued: string } }>('select app_private.console_review_payment($1, $2) as result', [id, key]);
      return {
        message:
          rows[0]?.result.queued === 'invoices__collect' ? 'The invoice is collected again now.' : 'The provider is asked about this payment now; its answer is applied when it comes.',
        redirect: { resourceId: 'payments', recordId: id },
      };
    },
  });
}

export async function paymentsResource(context: ResourceContext): Promise<ResourceWithOptions> {
  const { knex, pool } = context;
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'payments',
    availableValues: {
      status: PAYMENT_STATUSES,
      provider: PROVIDER_NAMES,
      failure_category: PAYMENT_FAILURE_CATEGORIES,
      flow: PAYMENT_FLOWS,
    },
    references: { tenant_id: 'tenants', customer_id: 'customers', invoice_id: 'invoices', payment_method_id: 'payment_methods' },
    sortable: ['created_at'],
    tenantScopedFilters: { customer_id: ['app_public.customers'], invoice_id: ['app_public.invoices'] },
  });
  return {
    resource,
    options: {
      navigation: Navigation.money,
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['id', 'invoice_id', 'customer_id', 'status', 'amount_minor', 'refunded_minor', 'currency', 'provider', 'created_at'],
      filterProperties: ['tenant_id', 'customer_id', 'invoice_id', 'status', 'provider', 'created_at'],
      actions: {
        refund: sqlRecordAction(context, {
          roles: FINANCE,
          icon: 'CornerUpLeft',
          variant: 'danger',
          description:
            'Refunds part or all of this payment (never more than what is left after pending and succeeded refunds). To the card: pending until the worker has sent it to the provider. To the balance: credited at once. Subscriptions are not touched: cancel separately if needed.',
          submitLabel: 'Refund',
          summary: [
            { label: 'Amount (minor units)', param: 'amount_minor' },
            { label: 'Refunded so far', param: 'refunded_minor' },
            { label: 'Refundable now', param: 'refundable_minor' },
            { label: 'Currency', param: 'currency' },
          ],
          fields: [
            { name: 'refund_amount_minor', label: 'Amount to refund (minor units)', type: 'amount', required: true, defaultParam: 'refundable_minor' },
            { name: 'refund_reason', label: 'Reason', type: 'select', options: REFUND_REASONS.map((r) => ({ value: r, label: r.replaceAll('_', ' ') })) },
            {
              name: 'refund_destination',
              label: 'Refund to',
              type: 'select',
              options: [
                { value: 'original_payment', label: 'the original payment (card)' },
                { value: 'balance', label: 'the customer balance' },
              ],
            },
          ],
          offeredFor: (params) => params.status === 'succeeded',
          prepare: async (client, id) => {
            const { rows } = await client.query<{ refundable_minor: string; currency_exponent: number }>(
              `select app_private.console_refundable_minor(p.id) as refundable_minor, c.exponent as currency_exponent
                 from app_public.payments p join app_public.currencies c on c.code = p.currency where p.id = $1`,
              [id],
            );
            return rows[0] ?? {};
          },
          run: async (client, id, input, key) => {
            const { rows } = await client.query<{ id: string; amount_minor: string; currency: string; status: string }>(
              'select id, amount_minor, currency, status from app_public.refund_payment($1, $2::bigint, $3, $4, $5)',
              [id, input.refund_amount_minor, key, input.refund_reason, input.refund_destination],
            );
            const refund = rows[0]!;
            return {
              message: `Refund of ${refund.amount_minor} ${refund.currency} (minor units) is ${refund.status}${refund.status === 'pending' ? ': the worker sends it to the provider' : ''}.`,
              redirect: { resourceId: 'refunds', recordId: refund.id },
            };
          },
        }),
        reconcileNow: reconcileNowAction(context),
      },
    },
    features: [roleAccess(READ_ONLY)],
  };
}
