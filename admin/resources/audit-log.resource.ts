/**
 * The console's audit log (app_private.console_audit_log): who did what, with
 * the record before and after, written only by SQL (090-console.sql). Read
 * only, and only for admins: it shows who changed whom.
 */
import type { ResourceWithOptions } from 'adminjs';
import { roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';

export async function auditLogResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_private',
    table: 'console_audit_log',
    resourceId: 'audit_log',
  });
  return {
    resource,
    options: {
      navigation: { name: 'Platform', icon: 'FileText' },
      sort: { sortBy: 'at', direction: 'desc' },
      listProperties: ['at', 'operator_id', 'action', 'resource', 'record_id'],
      filterProperties: ['at', 'operator_id', 'action', 'resource', 'record_id'],
      showProperties: ['at', 'operator_id', 'action', 'resource', 'record_id', 'before', 'after'],
      properties: {
        // Shown as the operator's e-mail (AdminJS loads the referenced operators).
        operator_id: { reference: 'operators' },
      },
    },
    features: [roleAccess({ list: ['admin'], show: ['admin'], search: ['admin'], new: [], edit: [], delete: [], bulkDelete: [] })],
  };
}
