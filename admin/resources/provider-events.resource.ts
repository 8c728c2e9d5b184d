/**
 * Provider events: the inbox of payment-provider webhooks, read through
 * app_private.console_provider_events (510-console-views.sql): everything
 * about an event and the normalised event billing acted on, with secret-named
 * keys removed in SQL; never the raw body (the operator role cannot read the
 * payload column at all). strip-secrets removes secret-named keys of `event`
 * again on the way out.
 *
 * Replay (admin, finance): processes a stored event again through
 * app_private.console_replay_provider_event (docs/console.md, "Jobs, the
 * crontab and replays"); the processing job is idempotent, so replaying an
 * event already applied changes no money.
 */
import type { ResourceWithOptions } from 'adminjs';
import { PROVIDER_EVENT_OUTCOMES, PROVIDER_NAMES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { sqlRecordAction } from '../sql-actions.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

export async function providerEventsResource(context: ResourceContext): Promise<ResourceWithOptions> {
  const { knex, pool } = context;
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
      actions: {
        replay: sqlRecordAction(context, {
          roles: ['admin', 'finance'],
          icon: 'RotateCcw',
          description:
            'Processes this event again, as if it had just arrived: the worker applies it through the same idempotent steps as at intake, so an event already applied changes nothing (its outcome becomes no_change).',
          submitLabel: 'Replay event',
          summary: [
            { label: 'Provider', param: 'provider' },
            { label: 'Type', param: 'type' },
            { label: 'Outcome', param: 'outcome' },
            { label: 'Processed at', param: 'processed_at' },
            { label: 'Error', param: 'error' },
          ],
          offeredFor: (params) => params.outcome !== 'ignored',
          run: async (client, id, _input, key) => {
            await client.query('select app_private.console_replay_provider_event($1::uuid, $2)', [id, key]);
            return { message: 'The event is queued to be processed again.' };
          },
        }),
      },
    },
    features: [roleAccess(READ_ONLY)],
  };
}
