/**
 * Runs SQL on behalf of the logged-in operator: one transaction with the
 * claims `jwt.claims.operator_id` and `jwt.claims.operator_role` set locally,
 * so SQL functions check the role (app_hidden.require_operator_role) and
 * audit triggers know who acted (app_hidden.current_operator_id()).
 *
 * The role claim is read from app_private.operators in the same transaction,
 * not taken from the session: SQL checks the role the operator has now, and a
 * disabled operator gets none (every role check then refuses).
 */
import type pg from 'pg';
import { withTransaction } from '../lib/database.ts';

export function asOperator<T>(pool: pg.Pool, operatorId: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  return withTransaction(pool, async (client) => {
    await client.query(
      `select set_config('jwt.claims.operator_id', $1, true),
              set_config('jwt.claims.operator_role',
                coalesce((select o.role from app_private.operators o where o.id::text = $1 and o.disabled_at is null), ''), true)`,
      [operatorId],
    );
    return fn(client);
  });
}
