/**
 * Subscriptions, with what support does to them: cancel (now or at period
 * end), pause and resume, each offered only where the state machine allows
 * its move (read from app_private.state_transitions, docs/console.md). Each
 * action calls the billing core's own function (app_public.cancel_subscription,
 * pause_subscription, resume_subscription), which checks the operator's role
 * (support or admin) and the state machine, takes the form's idempotency key
 * and writes the audit log.
 *
 * A big table: newest first on subscriptions_created_at_idx, status on
 * subscriptions_status_created_at_idx, a customer or price filter narrowed to
 * its tenant (tenantScopedFilters) so the core's tenant-first indexes serve it.
 */
import type { ResourceWithOptions } from 'adminjs';
import { SUBSCRIPTION_STATUSES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { legalMoves, sqlRecordAction } from '../sql-actions.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

const SUPPORT = ['admin', 'support'] as const;

export async function subscriptionsResource(context: ResourceContext): Promise<ResourceWithOptions> {
  const { knex, pool } = context;
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'subscriptions',
    availableValues: { status: SUBSCRIPTION_STATUSES },
    references: { tenant_id: 'tenants', customer_id: 'customers', price_id: 'prices', pending_price_id: 'prices', payment_method_id: 'payment_methods' },
    sortable: ['created_at'],
    tenantScopedFilters: { customer_id: ['app_public.customers'], price_id: ['app_public.prices'] },
  });
  // Each action is offered only where its move is a row of app_private.state_transitions (no paused → canceled).
  const legal = await legalMoves(pool, 'subscription');
  const summary = [
    { label: 'Status', param: 'status' },
    { label: 'Current period ends', param: 'current_period_end' },
  ];
  const cancel = (atPeriodEnd: boolean) =>
    sqlRecordAction(context, {
      roles: SUPPORT,
      icon: 'XCircle',
      variant: 'danger',
      description: atPeriodEnd
        ? 'The subscription runs until the end of its paid period and then ends instead of renewing.'
        : 'The subscription ends now. Its unpaid invoices are voided (except one whose payment is in flight). Nothing is refunded: refund the payment separately.',
      submitLabel: atPeriodEnd ? 'Cancel at period end' : 'Cancel now',
      summary,
      offeredFor: (params) => legal(params.status, 'canceled') && (!atPeriodEnd || (['active', 'trialing'].includes(String(params.status)) && params.cancel_at_period_end !== true)),
      run: async (client, id, _input, key) => {
        const { rows } = await client.query<{ status: string }>('select status from app_public.cancel_subscription($1, $2, $3)', [id, atPeriodEnd, key]);
        return { message: atPeriodEnd ? 'The subscription ends at the end of its period.' : `The subscription is ${rows[0]?.status}.` };
      },
    });
  return {
    resource,
    options: {
      navigation: Navigation.customers,
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['id', 'customer_id', 'tenant_id', 'price_id', 'status', 'current_period_end', 'cancel_at_period_end', 'created_at'],
      filterProperties: ['tenant_id', 'customer_id', 'price_id', 'status', 'created_at'],
      actions: {
        cancelNow: cancel(false),
        cancelAtPeriodEnd: cancel(true),
        pause: sqlRecordAction(context, {
          roles: SUPPORT,
          icon: 'Pause',
          description: 'Pauses the subscription now: no renewals while paused; an unpaid renewal invoice is voided. The paid period is kept.',
          submitLabel: 'Pause',
          summary,
          offeredFor: (params) => legal(params.status, 'paused'),
          run: async (client, id, _input, key) => {
            await client.query('select 1 from app_public.pause_subscription($1, $2)', [id, key]);
            return { message: 'The subscription is paused.' };
          },
        }),
        resume: sqlRecordAction(context, {
          roles: SUPPORT,
          icon: 'Play',
          description: 'Resumes the subscription. Inside its paid period it simply continues; after it, a new period starts now with a new invoice.',
          submitLabel: 'Resume',
          summary,
          offeredFor: (params) => params.status === 'paused' && legal('paused', 'active'),
          run: async (client, id, _input, key) => {
            await client.query('select 1 from app_public.resume_subscription($1, $2)', [id, key]);
            return { message: 'The subscription is active again.' };
          },
        }),
      },
    },
    features: [roleAccess(READ_ONLY)],
  };
}
