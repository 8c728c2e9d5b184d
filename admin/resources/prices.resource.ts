/**
 * Prices: a plan's amount in minor units of one currency per month or year.
 * A price is never changed in place (grandfathering, docs/console.md,
 * "Catalogue"): "Change amount" archives it and makes its successor
 * (app_public.replace_price), its subscribers keep it; "Move subscribers"
 * moves them to another price at their next renewal
 * (app_public.move_price_subscribers) after a preview that counts the same
 * rows (app_public.preview_price_move). Admins only; each function checks
 * the role itself, takes the form's idempotency key and writes the audit log.
 */
import type { ResourceWithOptions } from 'adminjs';
import type pg from 'pg';
import { minorToDecimal } from '../../lib/money.ts';
import { PRICE_INTERVALS } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { sqlRecordAction, type PreviewLine } from '../sql-actions.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

const ADMIN = ['admin'] as const;

export async function pricesResource(context: ResourceContext): Promise<ResourceWithOptions> {
  const { knex, pool } = context;
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'prices',
    availableValues: { interval: PRICE_INTERVALS },
    references: { tenant_id: 'tenants', plan_id: 'plans' },
  });
  const money = (minor: string, currency: string) => `${minorToDecimal(BigInt(minor), currency)} ${currency}`;
  const day = (at: Date | string | null) => (at ? new Date(at).toISOString().slice(0, 10) : '—');
  const summary = [
    { label: 'Price', param: 'price_label' },
    { label: 'Subscriptions on it', param: 'subscription_count' },
  ];
  const describe = async (client: pg.PoolClient, id: string) => {
    const { rows } = await client.query<{ plan: string; amount_minor: string; interval: string; active: boolean; subscriptions: string; currency: string; currency_exponent: number }>(
      `select pl.name as plan, p.amount_minor, p.interval, p.active, p.currency, c.exponent as currency_exponent,
              (select count(*) from app_public.subscriptions s
               where s.tenant_id = p.tenant_id and s.price_id = p.id and s.status not in ('canceled', 'incomplete_expired'))::text as subscriptions
       from app_public.prices p join app_public.plans pl on pl.tenant_id = p.tenant_id and pl.id = p.plan_id
       join app_public.currencies c on c.code = p.currency
       where p.id = $1`,
      [id],
    );
    const row = rows[0];
    const label = row && `${row.plan} — ${money(row.amount_minor, row.currency)} per ${row.interval}${row.active ? '' : ' (archived)'}`;
    return row ? { price_label: label, subscription_count: row.subscriptions, currency: row.currency, currency_exponent: row.currency_exponent } : {};
  };
  return {
    resource,
    options: {
      navigation: Navigation.catalogue,
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['id', 'plan_id', 'tenant_id', 'currency', 'interval', 'amount_minor', 'active', 'created_at'],
      filterProperties: ['tenant_id', 'plan_id', 'currency', 'interval', 'active', 'created_at'],
      properties: { amount_minor: { description: 'Minor units of the currency (1050 USD = 10.50 USD).' } },
      actions: {
        changeAmount: sqlRecordAction(context, {
          roles: ADMIN,
          icon: 'Edit',
          description:
            'New subscribers pay the new amount. This price is archived, not changed: its subscribers keep paying it (grandfathered) until you move them with “Move subscribers”.',
          submitLabel: 'Change amount',
          summary,
          fields: [{ name: 'amount_minor', label: 'New amount (minor units)', type: 'amount', required: true }],
          offeredFor: (params) => params.active === true,
          prepare: describe,
          run: async (client, id, input, key) => {
            const { rows } = await client.query<{ id: string }>('select id from app_public.replace_price($1, $2, $3)', [id, input.amount_minor, key]);
            return { message: 'A new price is made; subscribers of the old one keep it.', redirect: { resourceId: 'prices', recordId: rows[0]!.id } };
          },
        }),
        archivePrice: sqlRecordAction(context, {
          roles: ADMIN,
          icon: 'Archive',
          variant: 'danger',
          description: 'Takes the price off sale. Its subscribers keep it and renew at it.',
          submitLabel: 'Archive price',
          summary,
          offeredFor: (params) => params.active === true,
          prepare: describe,
          run: async (client, id, _input, key) => {
            await client.query('select 1 from app_public.archive_price($1, $2)', [id, key]);
            return { message: 'The price is archived; its subscribers keep it.' };
          },
        }),
        moveSubscribers: sqlRecordAction(context, {
          roles: ADMIN,
          icon: 'Repeat',
          description:
            'Moves this price’s subscribers to another price of the same currency at their next renewal: nothing is prorated, each renews at the new price. Subscriptions that are ending, past due, paused or have a change of their own scheduled stay. Preview says how many move and what they will pay.',
          submitLabel: 'Move subscribers',
          summary,
          fields: [{ name: 'to_price_id', label: 'New price', type: 'select', optionsParam: 'price_options', required: true }],
          prepare: async (client, id) => {
            const { rows } = await client.query<{ id: string; plan: string; amount_minor: string; currency: string; interval: string }>(
              `select o.id, pl.name as plan, o.amount_minor, o.currency, o.interval
               from app_public.prices p
               join app_public.prices o on o.tenant_id = p.tenant_id and o.currency = p.currency and o.id <> p.id and o.active
               join app_public.plans pl on pl.tenant_id = o.tenant_id and pl.id = o.plan_id
               where p.id = $1 order by o.created_at desc limit 200`,
              [id],
            );
            return {
              ...(await describe(client, id)),
              price_options: JSON.stringify(rows.map((r) => ({ value: r.id, label: `${r.plan} — ${money(r.amount_minor, r.currency)} per ${r.interval}` }))),
            };
          },
          preview: async (client, id, input): Promise<PreviewLine[]> => {
            const { rows } = await client.query('select * from app_public.preview_price_move($1, $2)', [id, input.to_price_id]);
            const p = rows[0];
            return [
              { label: 'Subscriptions that move', value: String(p.subscriptions) },
              { label: 'Staying on this price', value: String(p.skipped) },
              { label: 'Each pays from its next renewal', value: `${money(p.to_amount_minor, p.currency)} per ${p.to_interval} (now ${money(p.from_amount_minor, p.currency)})` },
              { label: 'Those renewals together', value: money(p.per_renewal_minor, p.currency) },
              { label: 'Renewals fall between', value: `${day(p.first_change_at)} and ${day(p.last_change_at)}` },
            ];
          },
          run: async (client, id, input, key) => {
            const { rows } = await client.query<{ moved: string }>('select moved from app_public.move_price_subscribers($1, $2, $3)', [id, input.to_price_id, key]);
            return { message: `${rows[0]?.moved ?? 0} subscriptions move to the new price at their next renewal.` };
          },
        }),
      },
    },
    features: [roleAccess(READ_ONLY)],
  };
}
