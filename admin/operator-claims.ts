/**
 * Runs SQL on behalf of the logged-in operator: one transaction with
 * `jwt.claims.operator_id` set locally, so SQL functions and audit triggers
 * know who acted (read through app_hidden.current_operator_id()).
 */
import type pg from 'pg';

export async function asOperator<T>(pool: pg.Pool, operatorId: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('begin');
    await client.query(`select set_config('jwt.claims.operator_id', $1, true)`, [operatorId]);
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
