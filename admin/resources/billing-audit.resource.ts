/**
 * Billing audit: every billing action of an operator (cancel, pause, resume,
 * refund, void, review …), written by the SQL functions themselves
 * (app_hidden.audit into app_private.audit_log, append-only for every role)
 * with the operator, their role at the time, and the rows before and after.
 * Everyone may read it: support needs to see who canceled what. (The
 * Platform audit log, changes of operators and jobs, stays admin-only.)
 */
import type { ResourceWithOptions } from 'adminjs';
import { OPERATOR_ROLES } from '../../lib/statuses.ts';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

export async function billingAuditResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_private',
    table: 'audit_log',
    resourceId: 'billing_audit',
    availableValues: { operator_role: OPERATOR_ROLES },
    references: { tenant_id: 'tenants', operator_id: 'operators' },
    sortable: ['at'],
  });
  return {
    resource,
    options: {
      navigation: Navigation.activity,
      titleProperty: 'action',
      sort: { sortBy: 'at', direction: 'desc' },
      listProperties: ['at', 'operator_id', 'operator_role', 'action', 'target_table', 'target_id', 'tenant_id'],
      filterProperties: ['tenant_id', 'operator_id', 'at'],
      showProperties: ['at', 'operator_id', 'operator_role', 'action', 'target_table', 'target_id', 'tenant_id', 'before', 'after'],
    },
    features: [roleAccess(READ_ONLY)],
  };
}
