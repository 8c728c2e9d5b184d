/**
 * Subscriptions, with what support does to them: cancel (now or at period
 * end), pause and resume, each offered only where the state machine allows
 * its move (read from app_private.state_transitions, docs/console.md), and
 * change the price after a preview of what it costs (preview_subscription_change,
 * the change's own SQL rolled back). Each action calls the billing core's own
 * function (app_public.cancel_subscription, pause_subscription,
 * resume_subscription, change_subscription), which checks the operator's role
 * (support or admin) and the state machine, takes the form's idempotency key
 * and writes the audit log.
 *
 * A big table: newest first on subscriptions_created_at_idx, status on
 * subscriptions_status_created_at_idx, a customer or price filter narrowed to
 * its tenant (tenantScopedFilters) so the core's tenant-first indexes serve it.
 */
import type { ResourceWithOptions } from 'adminjs';
import { minorToDecimal } from '../../lib/money.ts';
import { SUBSCRIPTION_STATUSES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { legalMoves, sqlRecordAction, type PreviewLine } from '../sql-actions.ts';
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
  const money = (minor: string, currency: string) => `${minorToDecimal(BigInt(minor), currency)} ${currency}`;
  const changePrice = sqlRecordAction(context, {
    roles: SUPPORT,
    icon: 'Repeat',
    description:
      'Moves the subscription to another price of the same currency, changes its seats, or both. Now: more is charged prorated for the rest of the period, less is credited to the balance. At period end (or to another interval): the next period uses the new price and seats, nothing is prorated. Preview shows exactly what will happen.',
    submitLabel: 'Change',
    summary: [...summary, { label: 'Current price', param: 'price_label' }],
    fields: [
      { name: 'new_price_id', label: 'New price', type: 'select', optionsParam: 'price_options' },
      { name: 'quantity', label: 'Seats', type: 'integer', defaultParam: 'quantity', required: true, help: 'Each invoice bills seats × the price.' },
      {
        name: 'when',
        label: 'When',
        type: 'select',
        options: [
          { value: 'now', label: 'now, prorated' },
          { value: 'period_end', label: 'at the end of the period' },
        ],
      },
    ],
    offeredFor: (params) => ['active', 'trialing'].includes(String(params.status)) && params.cancel_at_period_end !== true,
    prepare: async (client, id) => {
      // The options are what SQL would accept (app_public.subscription_price_options); the current price for the summary.
      const { rows } = await client.query<{ id: string; plan: string; amount_minor: string; currency: string; interval: string; current: boolean }>(
        `select p.id, pl.name as plan, p.amount_minor, p.currency, p.interval, p.current
         from (select o.*, false as current from app_public.subscription_price_options($1) o
               union all
               select c.*, true from app_public.prices c join app_public.subscriptions s on s.tenant_id = c.tenant_id and s.price_id = c.id where s.id = $1) p
         join app_public.plans pl on pl.tenant_id = p.tenant_id and pl.id = p.plan_id
         order by pl.name, p.interval, p.amount_minor`,
        [id],
      );
      const label = (r: (typeof rows)[number]) => `${r.plan} — ${money(r.amount_minor, r.currency)} per ${r.interval}`;
      const current = rows.filter((r) => r.current).map(label)[0] ?? '';
      return {
        // The first option keeps the price, for a change of seats only.
        price_options: JSON.stringify([{ value: '', label: `keep ${current}` }, ...rows.filter((r) => !r.current).map((r) => ({ value: r.id, label: label(r) }))]),
        price_label: current,
      };
    },
    preview: async (client, id, input): Promise<PreviewLine[]> => {
      const { rows } = await client.query(
        `select p.*, (select format('%s (%s)', pl.name, pr.interval) from app_public.prices pr join app_public.plans pl on pl.tenant_id = pr.tenant_id and pl.id = pr.plan_id
                      where pr.id = p.next_price_id) as next_label
         from app_public.preview_subscription_change($1, $2, $3, $4) p`,
        [id, input.new_price_id || null, input.when === 'period_end', input.quantity],
      );
      const p = rows[0];
      const when =
        { now: 'now, prorated', period_end: 'at the end of the period (nothing prorated)', trial: 'now (in the trial: the first invoice uses it)' }[String(p.effective)] ?? p.effective;
      return [
        { label: 'Takes effect', value: when },
        { label: 'Charged now', value: money(p.amount_due_minor, p.currency) },
        ...(p.invoice_subtotal_minor !== '0'
          ? [{ label: 'Proration invoice', value: `${money(p.invoice_subtotal_minor, p.currency)}, of which the balance pays ${money(p.balance_applied_minor, p.currency)}` }]
          : []),
        ...(p.credit_minor !== '0' ? [{ label: 'Credited to the balance', value: money(p.credit_minor, p.currency) }] : []),
        {
          label: 'Next invoice',
          value: `${new Date(p.next_invoice_at).toISOString().slice(0, 10)}: ${money(p.next_amount_minor, p.currency)} for ${p.next_quantity === 1 ? '' : `${p.next_quantity} × `}${p.next_label}`,
        },
      ];
    },
    run: async (client, id, input, key) => {
      const { rows } = await client.query<{ price_id: string; quantity: number; pending_price_id: string | null; pending_quantity: number | null }>(
        'select price_id, quantity, pending_price_id, pending_quantity from app_public.change_subscription($1, $2, $3, $4, $5)',
        [id, input.new_price_id || null, input.quantity, input.when === 'period_end', key],
      );
      const row = rows[0];
      return { message: row?.pending_price_id || row?.pending_quantity ? 'The change starts with the next period.' : 'The subscription is changed.' };
    },
  });
  return {
    resource,
    options: {
      navigation: Navigation.customers,
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['id', 'customer_id', 'tenant_id', 'price_id', 'quantity', 'status', 'current_period_end', 'cancel_at_period_end', 'created_at'],
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
        changePrice,
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
