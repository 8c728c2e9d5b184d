/**
 * Cron, hourly: forgets what has expired — idempotency keys older than their
 * 24 h window and customer sessions past their end — so both tables stay small.
 */
import type { BillingTask } from '../context.ts';

const cleanup: BillingTask = async (_payload, helpers, context) => {
  const { rows } = await helpers.query<{ keys: number; sessions: number }>(
    `select app_private.delete_expired_idempotency_keys() as keys, app_private.delete_expired_customer_sessions() as sessions`,
  );
  context.logger.info({ idempotencyKeys: rows[0]!.keys, customerSessions: rows[0]!.sessions }, 'expired rows deleted');
};

export default cleanup;
