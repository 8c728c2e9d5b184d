/**
 * Tenants: the merchants using abonement, with the settings billing reads
 * (time zone, dunning schedule, refund policy). Read only here: tenants are
 * created by app_private.create_tenant and change their own settings through
 * the API. A small table: every column may be sorted and text filters scan.
 * One action, for test-mode tenants and admins: advance the test clock
 * (app_private.console_advance_test_clock; docs/api.md, "Test clocks").
 */
import type { ResourceWithOptions } from 'adminjs';
import { PROVIDER_NAMES, TENANT_REFUND_POLICIES, TENANT_STATUSES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { sqlRecordAction } from '../sql-actions.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

const ADMIN = ['admin'] as const;

export async function tenantsResource(context: ResourceContext): Promise<ResourceWithOptions> {
  const { knex, pool } = context;
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'tenants',
    availableValues: {
      status: TENANT_STATUSES,
      refund_policy: TENANT_REFUND_POLICIES,
      default_payment_provider: PROVIDER_NAMES,
    },
  });
  return {
    resource,
    options: {
      navigation: Navigation.catalogue,
      titleProperty: 'name',
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['name', 'invoice_prefix', 'status', 'test_mode', 'default_currency', 'time_zone', 'created_at'],
      filterProperties: ['name', 'invoice_prefix', 'status', 'test_mode', 'default_currency', 'created_at'],
      actions: {
        advanceTestClock: sqlRecordAction(context, {
          roles: ADMIN,
          icon: 'Clock',
          description:
            "Moves this test tenant's clock forward and runs everything that becomes due on the way, in order: renewals, charges through the sandbox, dunning retries, reminders, e-mails and webhooks. At most two intervals of its shortest subscription interval at once.",
          submitLabel: 'Advance test clock',
          summary: [
            { label: 'Clock', param: 'clock_frozen_at' },
            { label: 'Status', param: 'clock_status' },
            { label: 'At most to', param: 'clock_max_advance_to' },
          ],
          fields: [{ name: 'frozen_at', label: 'Advance to', type: 'datetime', required: true, help: 'ISO 8601 with offset, e.g. 2026-07-01T00:00:00Z' }],
          offeredFor: (params) => params.test_mode === true,
          prepare: async (client, id) => {
            const { rows } = await client.query<{ status: string; frozen_at: Date; advancing_to: Date | null; max_advance_to: Date | null }>(
              'select * from app_private.console_test_clock($1)',
              [id],
            );
            const clock = rows[0]!;
            return {
              clock_frozen_at: clock.frozen_at.toISOString(),
              clock_status: clock.advancing_to ? `${clock.status} to ${clock.advancing_to.toISOString()}` : clock.status,
              clock_max_advance_to: clock.max_advance_to?.toISOString() ?? 'no limit (no subscriptions)',
            };
          },
          run: async (client, id, input, key) => {
            const { rows } = await client.query<{ advancing_to: Date }>('select advancing_to from app_private.console_advance_test_clock($1, $2, $3)', [id, input.frozen_at, key]);
            return { message: `The test clock is advancing to ${rows[0]!.advancing_to.toISOString()}; it is ready when the due work is done.` };
          },
        }),
      },
    },
    features: [roleAccess(READ_ONLY)],
  };
}
