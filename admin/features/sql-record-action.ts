/**
 * A console record action that calls one SQL function with the record's id,
 * on behalf of the logged-in operator (admin/operator-claims.ts: operator id
 * and role as claims, so the function checks the role and writes the audit
 * log itself). The handler never writes a table; a business error from SQL
 * (SQLSTATE class AB) becomes the notice the operator sees.
 */
import type { Action, ActionContext, ActionRequest, ActionResponse, RecordActionResponse } from 'adminjs';
import type pg from 'pg';
import { asOperator } from '../operator-claims.ts';
import { allowRoles, type ConsoleOperator, type OperatorRole } from './role-access.ts';
import { stripSecretsAfter } from './strip-secrets.ts';

export interface SqlRecordActionOptions {
  pool: pg.Pool;
  /** A statement with one parameter, the record id, e.g. `select * from app_private.console_resend_email($1)`. */
  sql: string;
  roles: readonly OperatorRole[];
  /** Shown on success. */
  notice: string;
  /** The confirmation question. */
  guard: string;
  icon: string;
}

export function sqlRecordAction(options: SqlRecordActionOptions): Partial<Action<ActionResponse>> {
  const handler = async (_request: ActionRequest, _response: unknown, context: ActionContext): Promise<RecordActionResponse> => {
    const record = context.record!;
    const operator = context.currentAdmin as ConsoleOperator;
    try {
      await asOperator(options.pool, operator.id, (client) => client.query(options.sql, [String(record.id())]));
    } catch (error) {
      const { code, message } = error as { code?: string; message?: string };
      if (!code?.startsWith('AB')) throw error;
      return { record: record.toJSON(context.currentAdmin), notice: { message: message ?? 'refused', type: 'error' } };
    }
    const fresh = await context.resource.findOne(String(record.id()));
    return { record: (fresh ?? record).toJSON(context.currentAdmin), notice: { message: options.notice, type: 'success' } };
  };
  return {
    actionType: 'record',
    icon: options.icon,
    guard: options.guard,
    component: false,
    isAccessible: allowRoles(options.roles),
    handler,
    after: stripSecretsAfter as (response: ActionResponse) => ActionResponse,
  };
}
