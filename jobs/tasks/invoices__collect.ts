/**
 * Charges an open invoice off-session (renewals, dunning retries, gateway
 * retries; queued by billing's SQL and by the renewal cron's sweep):
 *   begin_payment (the attempt and its deterministic key, committed first)
 *   → adapter.chargeSaved with that key → apply_payment_result.
 * What the answer does is billing's SQL: success pays the invoice and moves
 * the period; a soft decline runs the tenant's dunning schedule; a hard
 * decline stops retries; requires_action waits for the customer (the link is
 * on the payment and in its outbox event).
 * When the provider did not answer:
 *   - nothing was sent (refused connection, 429) → gateway_error: retried
 *     within minutes with backoff, with the next attempt's key;
 *   - a 5xx: some providers document it as "indeterminate", so the provider
 *     is asked at once by key; only a certain "not there" counts as a gateway
 *     error, anything else is left for reconciliation;
 *   - a timeout → unknown: the payment stays processing and is settled by
 *     reconciliation, never charged again blindly (invariant 8).
 * Idempotent: begin_payment refuses a second attempt while one is in flight;
 * a pending attempt found in flight (a worker died mid-charge) is re-sent
 * with the same key, which the provider answers without charging twice
 * (invariant 3). The payment's advisory lock keeps a charge and a
 * reconciliation of the same payment from overlapping.
 */
import type pg from 'pg';
import { applyPaymentResult, applyTransportFailure, withPaymentLock } from '../../lib/payment-outcomes.ts';
import type { ProviderName } from '../../providers/types.ts';
import { assertIdPayload, type BillingTask, type JobContext } from '../context.ts';

interface ChargeRow {
  id: string;
  status: string;
  flow: string;
  provider: ProviderName;
  idempotency_key: string;
  amount_minor: string;
  currency: string;
  customer_id: string;
  outcome_unknown_since: Date | null;
  provider_token: string | null;
  description: string;
  invoice_number: string;
}

/** Business errors of begin_payment after which there is nothing to charge now. */
const nothingToDo = new Set(['INVOICE_NOT_FOUND', 'INVOICE_NOT_OPEN', 'NO_PAYMENT_METHOD']);

async function chargeRow(client: pg.PoolClient, paymentId: string): Promise<ChargeRow> {
  const { rows } = await client.query<ChargeRow>(
    `select p.id, p.status, p.flow, p.provider, p.idempotency_key, p.amount_minor, p.currency, p.customer_id, p.outcome_unknown_since,
            pm.provider_token, i.number as invoice_number,
            coalesce((select l.description from app_public.invoice_lines l where l.tenant_id = i.tenant_id and l.invoice_id = i.id
                      order by l.created_at, l.id limit 1), 'Invoice') || ' · ' || i.number as description
     from app_public.payments p
     join app_public.invoices i on i.tenant_id = p.tenant_id and i.id = p.invoice_id
     left join app_public.payment_methods pm on pm.tenant_id = p.tenant_id and pm.customer_id = p.customer_id and pm.id = p.payment_method_id
     where p.id = $1`,
    [paymentId],
  );
  return rows[0]!;
}

async function charge(client: pg.PoolClient, row: ChargeRow, context: JobContext, log: JobContext['logger']): Promise<void> {
  const adapter = context.providers.get(row.provider);
  if (!adapter) throw new Error(`provider ${row.provider} of payment ${row.id} is not configured in this process`);
  if (!row.provider_token) {
    // The saved method was deleted: it can never be charged again; ask the customer for a new card.
    await client.query(`select app_private.apply_payment_result($1, 'failed', null, null, null, 'hard_decline', 'payment_method_missing', $2)`, [
      row.id,
      'the payment method was removed',
    ]);
    return;
  }
  const amount = { amountMinor: BigInt(row.amount_minor), currency: row.currency };
  const answer = await adapter.chargeSaved({
    idempotencyKey: row.idempotency_key,
    amount,
    paymentMethodToken: row.provider_token,
    description: row.description,
    customerReference: row.customer_id,
    metadata: { invoice_number: row.invoice_number },
  });
  if (answer.ok) {
    const applied = await applyPaymentResult(client, row.id, answer.value);
    log.info({ paymentId: row.id, provider: row.provider, status: applied.status, failure: answer.value.failure?.class }, 'charge answered');
    return;
  }
  const failure = answer.failure;
  if (failure.class === 'gateway_error' && /^http_5/.test(failure.code)) {
    // A 5xx may have been processed: ask before failing the attempt (invariant 8).
    const lookup = await adapter.retrieve({ idempotencyKey: row.idempotency_key, createdAfter: new Date(Date.now() - 3600_000) });
    if (lookup.ok && lookup.value) {
      await applyPaymentResult(client, row.id, lookup.value);
      return;
    }
    const certain = lookup.ok && adapter.capabilities.retrieveByKey !== 'search_eventually_consistent';
    await applyTransportFailure(client, row.id, certain ? failure : { ...failure, class: 'unknown' });
    log.warn({ paymentId: row.id, provider: row.provider, failure: failure.code, settled: certain }, 'provider error while charging');
    return;
  }
  await applyTransportFailure(client, row.id, failure);
  log.warn({ paymentId: row.id, provider: row.provider, failure: failure.code, class: failure.class }, 'provider did not answer the charge');
}

const task: BillingTask = async (payload, helpers, context) => {
  assertIdPayload(payload, 'invoice_id');
  const log = context.logger.child({ jobId: helpers.job.id, invoiceId: payload.invoice_id });
  await helpers.withPgClient(async (client) => {
    let paymentId: string;
    try {
      const { rows } = await client.query<{ id: string }>('select id from app_private.begin_payment($1)', [payload.invoice_id]);
      paymentId = rows[0]!.id;
    } catch (error) {
      const code = (error as { code?: string; detail?: string }).code?.startsWith('AB') ? (error as { detail?: string }).detail : undefined;
      if (code && nothingToDo.has(code)) {
        log.debug({ code }, 'nothing to charge');
        return;
      }
      if (code !== 'PAYMENT_IN_FLIGHT') throw error;
      const { rows } = await client.query<{ id: string; status: string; flow: string; outcome_unknown_since: Date | null }>(
        `select id, status, flow, outcome_unknown_since from app_public.payments
         where invoice_id = $1 and status in ('pending', 'requires_action', 'processing')`,
        [payload.invoice_id],
      );
      const inFlight = rows[0];
      // Only an off-session attempt that never got an answer is re-sent (same key); the rest is settled elsewhere.
      if (!inFlight || inFlight.flow !== 'off_session' || inFlight.status !== 'pending' || inFlight.outcome_unknown_since) {
        log.debug({ payment: inFlight?.id, status: inFlight?.status, flow: inFlight?.flow }, 'a payment is in flight; nothing to charge');
        return;
      }
      paymentId = inFlight.id;
      log.warn({ paymentId }, 're-sending an unanswered charge with its key');
    }
    const done = await withPaymentLock(client, paymentId, async () => {
      const row = await chargeRow(client, paymentId);
      if (row.status !== 'pending') return; // settled meanwhile
      await charge(client, row, context, log);
    });
    if (done === null) log.info({ paymentId }, 'payment busy in another process; leaving it');
  });
};

export default task;
