/**
 * Invoices, with what finance does to them: void, or mark uncollectible,
 * through app_private.console_close_invoice (520-console-actions.sql), which
 * checks the role (finance or admin), the invoice state machine, that no
 * payment is in flight and that a period invoice's subscription has ended;
 * idempotent per form, audit-logged. Invoice lines are their own resource,
 * filtered by invoice.
 */
import type { ResourceWithOptions } from 'adminjs';
import { INVOICE_BILLING_REASONS, INVOICE_STATUSES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { sqlRecordAction } from '../sql-actions.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

const FINANCE = ['admin', 'finance'] as const;

export async function invoicesResource(context: ResourceContext): Promise<ResourceWithOptions> {
  const { knex, pool } = context;
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'invoices',
    availableValues: {
      status: INVOICE_STATUSES,
      billing_reason: INVOICE_BILLING_REASONS,
    },
    references: { tenant_id: 'tenants', customer_id: 'customers', subscription_id: 'subscriptions', price_id: 'prices' },
    sortable: ['created_at'],
    exactFilters: ['number'],
    tenantScopedFilters: { customer_id: ['app_public.customers'], subscription_id: ['app_public.subscriptions'] },
  });
  const summary = [
    { label: 'Number', param: 'number' },
    { label: 'Status', param: 'status' },
    { label: 'Amount due (minor units)', param: 'amount_due_minor' },
    { label: 'Currency', param: 'currency' },
  ];
  const close = (status: 'void' | 'uncollectible') =>
    sqlRecordAction(context, {
      roles: FINANCE,
      icon: status === 'void' ? 'Slash' : 'AlertTriangle',
      variant: 'danger',
      description:
        status === 'void'
          ? 'Voids the invoice: it is no longer owed and collection stops. Customer balance it used is returned. Not for a period of a running subscription: cancel or pause the subscription instead.'
          : 'Marks the invoice uncollectible: collection stops, the debt is written off (a late payment still pays it). Not for a period of a running subscription.',
      submitLabel: status === 'void' ? 'Void invoice' : 'Mark uncollectible',
      summary,
      offeredFor: (params) => (status === 'void' ? ['draft', 'open', 'uncollectible'] : ['open']).includes(String(params.status)),
      run: async (client, id, _input, key) => {
        const { rows } = await client.query<{ number: string; status: string }>('select number, status from app_private.console_close_invoice($1, $2, $3)', [id, status, key]);
        return { message: `Invoice ${rows[0]?.number} is ${rows[0]?.status}.` };
      },
    });
  return {
    resource,
    options: {
      navigation: Navigation.money,
      titleProperty: 'number',
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['number', 'customer_id', 'tenant_id', 'status', 'billing_reason', 'amount_due_minor', 'currency', 'due_at', 'created_at'],
      filterProperties: ['tenant_id', 'customer_id', 'subscription_id', 'status', 'number', 'created_at'],
      properties: { number: { description: 'Filter: the exact invoice number, e.g. ACME-2026-000123.' } },
      actions: { void: close('void'), markUncollectible: close('uncollectible') },
    },
    features: [roleAccess(READ_ONLY)],
  };
}
