/**
 * Provider events: the inbox of payment-provider webhooks, read through
 * app_private.console_provider_events (510-console-views.sql): everything
 * about an event and the normalised event billing acted on, with secret-named
 * keys removed in SQL; never the raw body (the operator role cannot read the
 * payload column at all). strip-secrets removes secret-named keys of `event`
 * again on the way out.
 */
import type { ResourceWithOptions } from 'adminjs';
import { PROVIDER_EVENT_OUTCOMES, PROVIDER_NAMES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

export async function providerEventsResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_private',
    table: 'console_provider_events',
    resourceId: 'provider_events',
    idColumn: 'id',
    availableValues: {
      provider: PROVIDER_NAMES,
      outcome: PROVIDER_EVENT_OUTCOMES,
    },
    references: { tenant_id: 'tenants' },
    sortable: ['received_at'],
  });
  return {
    resource,
    options: {
      navigation: Navigation.activity,
      titleProperty: 'type',
      sort: { sortBy: 'received_at', direction: 'desc' },
      listProperties: ['provider', 'type', 'outcome', 'tenant_id', 'received_at', 'processed_at', 'attempts', 'error'],
      filterProperties: ['tenant_id', 'provider', 'received_at'],
      properties: { error: { type: 'textarea' } },
    },
    features: [roleAccess(READ_ONLY)],
  };
}
