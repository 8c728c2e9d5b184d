/**
 * Runs SQL on behalf of the logged-in operator: one transaction with
 * `jwt.claims.operator_id` (and, when given, `jwt.claims.operator_role`) set
 * locally, so SQL functions and audit triggers know who acted (read through
 * app_hidden.current_operator_id() / current_operator_role(), which functions
 * such as console_resend_email check with require_operator_role).
 */
import type pg from 'pg';

export async function asOperator<T>(
  pool: pg.Pool,
  operatorId: string,
  fn: (client: pg.PoolClient) => Promise<T>,
  operatorRole?: string,
): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('begin');
    await client.query(`select set_config('jwt.claims.operator_id', $1, true)`, [operatorId]);
    if (operatorRole) await client.query(`select set_config('jwt.claims.operator_role', $1, true)`, [operatorRole]);
    const result = await fn(client);
    await client.query('commit');
    return result;
  } catch (error) {
    await client.query('rollback').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}
