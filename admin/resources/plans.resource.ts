/**
 * Plans: what tenants sell, with their sale window, trial days and refund
 * window (full_refund_days). Admins create and edit them here through the
 * same SQL functions as the API (docs/console.md, "Catalogue"):
 * app_public.create_plan, update_plan_terms, set_plan_status and
 * create_price, each checking the operator's role (admin), taking the form's
 * idempotency key, naming the field it refuses, and writing the audit log.
 */
import type { ResourceWithOptions } from 'adminjs';
import type pg from 'pg';
import { PLAN_STATUSES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { sqlRecordAction, type FormField } from '../sql-actions.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

const ADMIN = ['admin'] as const;

/** The terms a plan form edits: the names are update_plan_terms' arguments, so SQL's refusals land beside their field. */
const TERMS: FormField[] = [
  { name: 'name', label: 'Name', type: 'text', required: true, defaultParam: 'name' },
  { name: 'description', label: 'Description', type: 'text', defaultParam: 'description' },
  { name: 'sale_starts_at', label: 'On sale from', type: 'datetime', defaultParam: 'sale_starts_at_input', help: 'Empty: on sale as soon as it is active.' },
  { name: 'sale_ends_at', label: 'On sale until', type: 'datetime', defaultParam: 'sale_ends_at_input', help: 'Empty: no end. Subscribers keep renewing after it.' },
  { name: 'trial_days', label: 'Trial days', type: 'integer', defaultParam: 'trial_days', help: '0 to 730; 0 means no trial.' },
  {
    name: 'full_refund_days',
    label: 'Full-refund window (days)',
    type: 'integer',
    defaultParam: 'full_refund_days',
    help: 'A refund is full this many days into a paid period, then proportional.',
  },
];

const blank = (value: string | undefined) => (value === undefined || value === '' ? null : value);

/** The plan's terms as the form shows them (times as ISO 8601 in UTC). */
async function currentTerms(client: pg.PoolClient, planId: string): Promise<Record<string, unknown>> {
  const { rows } = await client.query(
    `select name, description, trial_days::text, full_refund_days::text,
            coalesce(to_char(sale_starts_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), '') as sale_starts_at_input,
            coalesce(to_char(sale_ends_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), '') as sale_ends_at_input
     from app_public.plans where id = $1`,
    [planId],
  );
  return rows[0] ?? {};
}

export async function plansResource(context: ResourceContext): Promise<ResourceWithOptions> {
  const { knex, pool } = context;
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'plans',
    availableValues: { status: PLAN_STATUSES },
    references: { tenant_id: 'tenants' },
  });
  const setStatus = (status: 'active' | 'archived') =>
    sqlRecordAction(context, {
      roles: ADMIN,
      icon: status === 'active' ? 'PlayCircle' : 'Archive',
      variant: status === 'active' ? 'primary' : 'danger',
      description:
        status === 'active'
          ? 'Puts the plan on sale: its active prices can be bought inside its sale window. A plan never returns to draft.'
          : 'Takes the plan off sale: nobody new can buy it. Its subscribers keep renewing at their prices; cancel or move them separately.',
      submitLabel: status === 'active' ? 'Put on sale' : 'Archive plan',
      summary: [{ label: 'Status', param: 'status' }],
      offeredFor: (params) => params.status !== status,
      run: async (client, id, _input, key) => {
        await client.query('select 1 from app_public.set_plan_status($1, $2, $3)', [id, status, key]);
        return { message: status === 'active' ? 'The plan is on sale.' : 'The plan is archived.' };
      },
    });
  return {
    resource,
    options: {
      navigation: Navigation.catalogue,
      titleProperty: 'name',
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['name', 'tenant_id', 'status', 'trial_days', 'full_refund_days', 'sale_starts_at', 'sale_ends_at', 'created_at'],
      filterProperties: ['tenant_id', 'name', 'status', 'created_at'],
      actions: {
        createPlan: sqlRecordAction(context, {
          actionType: 'resource',
          roles: ADMIN,
          icon: 'Plus',
          description: 'A new plan starts as a draft: add its prices (a monthly and a yearly one per currency), then put it on sale.',
          submitLabel: 'Create plan',
          fields: [
            { name: 'tenant_id', label: 'Tenant', type: 'select', optionsParam: 'tenant_options', required: true },
            TERMS[0]!,
            { name: 'code', label: 'Code', type: 'text', help: 'Short stable name for entitlement tokens: a-z, 0-9, _ and -, at most 32 characters. Optional.' },
            ...TERMS.slice(1),
          ],
          prepare: async (client) => {
            const { rows } = await client.query<{ id: string; name: string }>(`select id, name from app_public.tenants order by name limit 500`);
            return { tenant_options: JSON.stringify(rows.map((r) => ({ value: r.id, label: r.name }))), trial_days: '0', full_refund_days: '7' };
          },
          run: async (client, _id, input, key) => {
            const { rows } = await client.query<{ id: string }>(
              `select id from app_public.create_plan(name => $1, idempotency_key => $2, code => $3, description => $4, sale_starts_at => $5,
                 sale_ends_at => $6, trial_days => $7, full_refund_days => $8, tenant_id => $9)`,
              [
                input.name,
                key,
                blank(input.code),
                input.description ?? '',
                blank(input.sale_starts_at),
                blank(input.sale_ends_at),
                blank(input.trial_days),
                blank(input.full_refund_days),
                input.tenant_id,
              ],
            );
            return { message: 'The plan is created as a draft. Add its prices, then put it on sale.', redirect: { resourceId: 'plans', recordId: rows[0]!.id } };
          },
        }),
        editPlan: sqlRecordAction(context, {
          roles: ADMIN,
          icon: 'Edit',
          description:
            'Edits the plan’s terms. The sale window decides when it can be bought; trial days apply to new subscriptions; the full-refund window applies to refunds from now on. Prices are changed on the Prices page (a price in use is never changed: a new one is made).',
          submitLabel: 'Save plan',
          summary: [{ label: 'Status', param: 'status' }],
          fields: TERMS,
          prepare: currentTerms,
          run: async (client, id, input, key) => {
            await client.query('select 1 from app_public.update_plan_terms($1, $2, $3, $4, $5, $6, $7, $8)', [
              id,
              input.name,
              input.description ?? '',
              blank(input.sale_starts_at),
              blank(input.sale_ends_at),
              blank(input.trial_days),
              blank(input.full_refund_days),
              key,
            ]);
            return { message: 'The plan is saved.' };
          },
        }),
        addPrice: sqlRecordAction(context, {
          roles: ADMIN,
          icon: 'DollarSign',
          description: 'Adds a price to the plan: one active price per currency and interval. Amounts are in minor units (1050 = 10.50 in a two-decimal currency).',
          submitLabel: 'Add price',
          summary: [{ label: 'Plan', param: 'name' }],
          fields: [
            { name: 'currency', label: 'Currency', type: 'text', required: true, help: 'ISO 4217, e.g. USD, EUR, JPY.' },
            {
              name: 'interval',
              label: 'Interval',
              type: 'select',
              options: [
                { value: 'month', label: 'per month' },
                { value: 'year', label: 'per year' },
              ],
            },
            { name: 'amount_minor', label: 'Amount (minor units)', type: 'amount', required: true },
          ],
          run: async (client, id, input, key) => {
            await client.query('select 1 from app_public.create_price($1, $2, $3, $4, $5)', [id, input.currency, input.interval, input.amount_minor, key]);
            return { message: 'The price is added.' };
          },
        }),
        putOnSale: setStatus('active'),
        archivePlan: setStatus('archived'),
      },
    },
    features: [roleAccess(READ_ONLY)],
  };
}
