/**
 * Events: the outbox, one row per business event, written by the
 * transaction that caused it; outgoing webhooks and e-mails are driven from
 * here. The biggest table of all: newest first on events_occurred_at_idx,
 * per tenant on the core's (tenant_id, occurred_at) index, and by subject
 * (a subscription, invoice, payment or refund id) narrowed to that subject's
 * tenant so events_subject_idx serves it.
 */
import type { ResourceWithOptions } from 'adminjs';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

/** The tables whose ids are the subjects of events and status changes. */
export const SUBJECT_TABLES = ['app_public.subscriptions', 'app_public.invoices', 'app_public.payments', 'app_public.refunds'];

export async function eventsResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'events',
    references: { tenant_id: 'tenants' },
    sortable: ['occurred_at'],
    tenantScopedFilters: { subject_id: SUBJECT_TABLES },
  });
  return {
    resource,
    options: {
      navigation: Navigation.activity,
      titleProperty: 'type',
      sort: { sortBy: 'occurred_at', direction: 'desc' },
      listProperties: ['type', 'subject_type', 'subject_id', 'tenant_id', 'occurred_at', 'dispatched_at'],
      filterProperties: ['tenant_id', 'subject_id', 'occurred_at'],
      properties: { subject_id: { description: 'Filter: the id of a subscription, invoice, payment or refund.' } },
    },
    features: [roleAccess(READ_ONLY)],
  };
}
