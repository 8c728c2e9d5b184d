/**
 * The billing data, read-only: tenants, customers, subscriptions, invoices,
 * payments, refunds, the outbox and the status history. Every operator role
 * may list, show and search them (support reads everything, design-brief
 * section 1); changes go through SQL functions (record actions), never
 * through AdminJS's generic edit.
 *
 * At the brief's size (6M subscriptions, 10M payments a year) a list must not
 * sort or count millions of rows (docs/operations.md, "Data at size"):
 * - the default sort is newest first, served by an index on the sort column
 *   alone (unfiltered) and by (tenant_id, sort column) when filtered by tenant
 *   (420-console-indexes.sql); only indexed columns are sortable;
 * - filters are those an index serves: tenant, status, customer (with the
 *   tenant), and the time range;
 * - the count under the pagination is exact up to 10,000 rows and the
 *   planner's estimate beyond (TableResource.count), so page numbers past
 *   that read "about".
 */
import type { ResourceWithOptions } from 'adminjs';
import { roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';

interface BillingList {
  table: string;
  sortBy: string;
  listProperties: string[];
  filterProperties: string[];
  /** Columns an index serves in order (besides the default sort column). */
  sortable?: string[];
  hiddenColumns?: string[];
  availableValues?: Record<string, string[]>;
  titleProperty?: string;
}

const SUBSCRIPTION_STATUSES = ['incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'paused', 'canceled'];
const INVOICE_STATUSES = ['draft', 'open', 'paid', 'void', 'uncollectible'];
const PAYMENT_STATUSES = ['pending', 'requires_action', 'processing', 'succeeded', 'failed', 'canceled'];
const REFUND_STATUSES = ['pending', 'succeeded', 'failed'];

export const BILLING_LISTS: BillingList[] = [
  {
    table: 'tenants',
    sortBy: 'created_at',
    titleProperty: 'name',
    listProperties: ['name', 'invoice_prefix', 'status', 'test_mode', 'default_currency', 'time_zone', 'created_at'],
    filterProperties: ['name', 'status', 'test_mode', 'created_at'],
    sortable: ['name'],
    availableValues: { status: ['active', 'suspended', 'closed'] },
  },
  {
    table: 'customers',
    sortBy: 'created_at',
    titleProperty: 'email',
    listProperties: ['email', 'external_id', 'tenant_id', 'country', 'currency', 'created_at'],
    filterProperties: ['tenant_id', 'created_at'],
  },
  {
    table: 'subscriptions',
    sortBy: 'created_at',
    listProperties: ['id', 'tenant_id', 'customer_id', 'status', 'currency', 'current_period_end', 'created_at'],
    filterProperties: ['tenant_id', 'customer_id', 'status', 'created_at'],
    availableValues: { status: SUBSCRIPTION_STATUSES },
  },
  {
    table: 'invoices',
    sortBy: 'created_at',
    titleProperty: 'number',
    listProperties: ['number', 'tenant_id', 'customer_id', 'status', 'currency', 'amount_due_minor', 'due_at', 'created_at'],
    filterProperties: ['tenant_id', 'customer_id', 'subscription_id', 'status', 'created_at'],
    availableValues: { status: INVOICE_STATUSES },
  },
  {
    table: 'payments',
    sortBy: 'created_at',
    listProperties: ['id', 'tenant_id', 'customer_id', 'status', 'amount_minor', 'currency', 'provider', 'created_at'],
    filterProperties: ['tenant_id', 'customer_id', 'invoice_id', 'status', 'created_at'],
    // What the platform sends providers; plumbing, not for reading (also hidden from the API).
    hiddenColumns: ['idempotency_key'],
    availableValues: { status: PAYMENT_STATUSES },
  },
  {
    table: 'refunds',
    sortBy: 'created_at',
    listProperties: ['id', 'tenant_id', 'customer_id', 'status', 'amount_minor', 'currency', 'reason', 'created_at'],
    filterProperties: ['tenant_id', 'customer_id', 'payment_id', 'status', 'created_at'],
    hiddenColumns: ['provider_idempotency_key'],
    availableValues: { status: REFUND_STATUSES },
  },
  {
    table: 'events',
    sortBy: 'occurred_at',
    titleProperty: 'type',
    listProperties: ['type', 'tenant_id', 'subject_type', 'subject_id', 'occurred_at', 'dispatched_at'],
    filterProperties: ['tenant_id', 'subject_id', 'occurred_at'],
  },
  {
    table: 'status_changes',
    sortBy: 'changed_at',
    listProperties: ['entity', 'entity_id', 'tenant_id', 'from_status', 'to_status', 'changed_at'],
    filterProperties: ['tenant_id', 'entity_id', 'changed_at'],
  },
];

function billingResource(list: BillingList): (context: ResourceContext) => Promise<ResourceWithOptions> {
  return async ({ knex, pool }) => {
    const resource = await loadTableResource({
      knex,
      pool,
      schema: 'app_public',
      table: list.table,
      hiddenColumns: list.hiddenColumns,
      availableValues: list.availableValues,
    });
    const sortable = new Set([list.sortBy, ...(list.sortable ?? [])]);
    const properties: Record<string, { isSortable?: boolean; availableValues?: Array<{ value: string; label: string }> }> = {};
    for (const property of resource.properties()) {
      properties[property.path()] = { isSortable: sortable.has(property.path()) };
    }
    for (const [column, values] of Object.entries(list.availableValues ?? {})) {
      properties[column] = { ...properties[column], availableValues: values.map((value) => ({ value, label: value })) };
    }
    return {
      resource,
      options: {
        navigation: { name: 'Billing', icon: 'CreditCard' },
        ...(list.titleProperty ? { titleProperty: list.titleProperty } : {}),
        sort: { sortBy: list.sortBy, direction: 'desc' },
        listProperties: list.listProperties,
        filterProperties: list.filterProperties,
        properties,
      },
      // Read only for everyone: money and state change through SQL functions.
      features: [roleAccess({ new: [], edit: [], delete: [], bulkDelete: [] })],
    };
  };
}

export const billingResources = BILLING_LISTS.map(billingResource);
