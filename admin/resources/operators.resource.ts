/**
 * Operators: the people who use this console. Everyone may read the list;
 * only admins may change a name, a role or disable someone. Creating an
 * operator and setting passwords happen outside the console (first start,
 * command line), because a password must never travel through AdminJS's JSON.
 *
 * The operator role cannot read password_hash at all (column grants in
 * 001-foundation.sql); table-resource.ts would not load it anyway, and the
 * strip-secrets feature would remove it from any response.
 * 090-console.sql refuses a change that leaves no enabled admin.
 */
import type { ResourceWithOptions } from 'adminjs';
import { OPERATOR_ROLES } from '../../lib/statuses.ts';
import { roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';

export async function operatorsResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_private',
    table: 'operators',
    availableValues: { role: [...OPERATOR_ROLES] },
  });
  return {
    resource,
    options: {
      navigation: { name: 'Platform', icon: 'Settings' },
      titleProperty: 'email',
      sort: { sortBy: 'email', direction: 'asc' },
      listProperties: ['email', 'name', 'role', 'disabled_at', 'last_login_at'],
      filterProperties: ['email', 'name', 'role', 'disabled_at', 'last_login_at'],
      showProperties: ['id', 'email', 'name', 'role', 'disabled_at', 'last_login_at', 'created_at', 'updated_at'],
      editProperties: ['name', 'role', 'disabled_at'],
      properties: {
        role: { availableValues: OPERATOR_ROLES.map((role) => ({ value: role, label: role })) },
        disabled_at: { description: 'Set to disable the operator: their sessions end at their next request.' },
      },
    },
    features: [roleAccess({ new: [], delete: [], bulkDelete: [], edit: ['admin'] })],
  };
}
