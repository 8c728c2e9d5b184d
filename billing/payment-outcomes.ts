/**
 * The one way a provider's answer about a payment reaches billing: the
 * normalized PaymentResult of an adapter (from a charge, a webhook event or a
 * reconciliation look-up) mapped onto app_private.apply_payment_result, which
 * holds every rule (state machine, amount check, saved card). Also the inbox's
 * JSON form of normalized events (bigint and Date survive the round trip).
 *
 * Never log a PaymentResult whole: paymentMethod.token is a secret.
 */
import type pg from 'pg';
import { PAYMENT_FAILURE_CATEGORIES } from '../lib/statuses.ts';
import type { FailureClass, PaymentProvider, PaymentResult, ProviderEvent, RefundResult, TransportFailure } from '../providers/types.ts';

export type Db = Pick<pg.Pool, 'query'> | Pick<pg.PoolClient, 'query'>;

export type ApplyOutcome = 'applied' | 'no_change' | 'needs_review';

export interface AppliedResult {
  paymentId: string;
  tenantId: string;
  previousStatus: string;
  status: string;
  outcome: ApplyOutcome;
}

type FailureCategory = (typeof PAYMENT_FAILURE_CATEGORIES)[number];
const failureCategories = new Set<FailureClass>(PAYMENT_FAILURE_CATEGORIES);

/** Our failure category for a declined payment: an unexpected class is a soft decline (bounded retries), like an unmapped code. */
export function failureCategory(result: Pick<PaymentResult, 'failure'>): FailureCategory {
  const cls = result.failure?.class;
  return cls && failureCategories.has(cls) ? (cls as FailureCategory) : 'soft_decline';
}

function appliedRow(row: Record<string, string>): AppliedResult {
  return {
    paymentId: row.payment_id!,
    tenantId: row.tenant_id!,
    previousStatus: row.previous_status!,
    status: row.status!,
    outcome: row.outcome as ApplyOutcome,
  };
}

/** A provider's answer about one payment in SQL's terms: apply_payment_result's arguments by name, and the element apply_payment_results takes. */
export interface PaymentResultRecord {
  payment_id: string;
  outcome: PaymentResult['status'];
  provider_payment_id: string | null;
  amount_minor: string;
  currency: string;
  failure_category: FailureCategory | null;
  failure_code: string | null;
  failure_message: string | null;
  /** The saved card, kept only from a success (renewals charge it). */
  method: { token: string; brand: string | null; last4: string | null; exp_month: number | null; exp_year: number | null } | null;
  action_url: string | null;
}

export function paymentResultRecord(paymentId: string, result: PaymentResult): PaymentResultRecord {
  const failed = result.status === 'failed';
  const method =
    result.status === 'succeeded' && result.paymentMethod
      ? {
          token: result.paymentMethod.token,
          brand: result.paymentMethod.brand,
          last4: result.paymentMethod.last4,
          exp_month: result.paymentMethod.expMonth,
          exp_year: result.paymentMethod.expYear,
        }
      : null;
  return {
    payment_id: paymentId,
    outcome: result.status,
    provider_payment_id: result.providerPaymentId,
    amount_minor: result.amount.amountMinor.toString(),
    currency: result.amount.currency,
    failure_category: failed ? failureCategory(result) : null,
    failure_code: failed ? (result.failure?.code ?? 'unspecified') : null,
    failure_message: failed ? (result.failure?.message ?? null) : null,
    method,
    action_url: result.status === 'requires_action' ? result.actionUrl : null,
  };
}

/** Applies an answer the provider gave about `paymentId` (status, failure, ids, saved card, 3-D Secure link). */
export async function applyPaymentResult(db: Db, paymentId: string, result: PaymentResult): Promise<AppliedResult> {
  const r = paymentResultRecord(paymentId, result);
  const { rows } = await db.query(`select * from app_private.apply_payment_result($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`, [
    r.payment_id,
    r.outcome,
    r.provider_payment_id,
    r.amount_minor,
    r.currency,
    r.failure_category,
    r.failure_code,
    r.failure_message,
    r.method ? JSON.stringify(r.method) : null,
    r.action_url,
  ]);
  return appliedRow(rows[0]);
}

/** A provider call that got no answer: `unknown` keeps the payment in flight for reconciliation (invariant 8); `gateway_error` fails the attempt for a retry within minutes. */
export async function applyTransportFailure(db: Db, paymentId: string, failure: TransportFailure): Promise<AppliedResult> {
  const { rows } =
    failure.class === 'unknown'
      ? await db.query(`select * from app_private.apply_payment_result($1, 'unknown')`, [paymentId])
      : await db.query(`select * from app_private.apply_payment_result($1, 'failed', null, null, null, 'gateway_error', $2, $3)`, [paymentId, failure.code, failure.message]);
  return appliedRow(rows[0]);
}

/** The provider holds no finished payment for ours (none at all: providerHasPayment false). See settle_unpaid_payment. */
export async function settleUnpaidPayment(db: Db, paymentId: string, providerHasPayment: boolean): Promise<AppliedResult> {
  const { rows } = await db.query('select * from app_private.settle_unpaid_payment($1, $2)', [paymentId, providerHasPayment]);
  return appliedRow(rows[0]);
}

/** Our payment a provider's payment refers to, or null when it is not ours. */
export async function findPayment(db: Db, provider: string, result: Pick<PaymentResult, 'idempotencyKey' | 'providerPaymentId' | 'providerCheckoutId'>): Promise<string | null> {
  const { rows } = await db.query<{ id: string | null }>('select app_private.payment_for_provider($1, $2, $3, $4) as id', [
    provider,
    result.idempotencyKey,
    result.providerPaymentId,
    result.providerCheckoutId,
  ]);
  return rows[0]?.id ?? null;
}

/**
 * Webhook payloads may lack the card (Stripe does not expand it): a first
 * payment's success needs it for renewals, so ask the provider by its id.
 */
export async function withPaymentMethod(adapter: PaymentProvider, result: PaymentResult): Promise<PaymentResult> {
  if (result.status !== 'succeeded' || result.paymentMethod || !result.providerPaymentId) return result;
  const fetched = await adapter.retrieve({ providerPaymentId: result.providerPaymentId });
  if (!fetched.ok) throw new Error(`${adapter.name} did not answer while fetching the saved card (${fetched.failure.code}); retrying`);
  return fetched.value?.paymentMethod ? { ...result, paymentMethod: fetched.value.paymentMethod } : result;
}

export interface AppliedRefund {
  refundId: string;
  tenantId: string;
  previousStatus: string;
  status: string;
  outcome: 'applied' | 'no_change';
}

export async function applyRefundResult(db: Db, refundId: string, result: RefundResult): Promise<AppliedRefund> {
  const { rows } = await db.query('select * from app_private.apply_refund_result($1, $2, $3, $4, $5)', [
    refundId,
    result.status,
    result.providerRefundId,
    result.failure?.code ?? null,
    result.failure?.message ?? null,
  ]);
  const row = rows[0];
  return { refundId: row.refund_id, tenantId: row.tenant_id, previousStatus: row.previous_status, status: row.status, outcome: row.outcome };
}

// ---------------------------------------------------------------- the inbox's JSON form of events

type Json = Record<string, unknown>;

function paymentToJson(p: PaymentResult): Json {
  return { ...p, amount: { ...p.amount, amountMinor: p.amount.amountMinor.toString() }, refundedMinor: p.refundedMinor.toString(), createdAt: p.createdAt.toISOString() };
}

function paymentFromJson(j: Json): PaymentResult {
  const amount = j.amount as { amountMinor: string; currency: string };
  return {
    ...(j as unknown as PaymentResult),
    amount: { amountMinor: BigInt(amount.amountMinor), currency: amount.currency },
    refundedMinor: BigInt(j.refundedMinor as string),
    createdAt: new Date(j.createdAt as string),
  };
}

function refundToJson(r: RefundResult): Json {
  return { ...r, amount: { ...r.amount, amountMinor: r.amount.amountMinor.toString() } };
}

function refundFromJson(j: Json): RefundResult {
  const amount = j.amount as { amountMinor: string; currency: string };
  return { ...(j as unknown as RefundResult), amount: { amountMinor: BigInt(amount.amountMinor), currency: amount.currency } };
}

export function eventToJson(event: ProviderEvent): Json {
  const base = { provider: event.provider, eventId: event.eventId, providerType: event.providerType, occurredAt: event.occurredAt.toISOString() };
  switch (event.kind) {
    case 'payment':
      return { ...base, kind: 'payment', payment: paymentToJson(event.payment) };
    case 'refund':
      return { ...base, kind: 'refund', refund: refundToJson(event.refund) };
    case 'checkout_expired':
      return { ...base, kind: 'checkout_expired', providerCheckoutId: event.providerCheckoutId, idempotencyKey: event.idempotencyKey };
    case 'ignored':
      return { ...base, kind: 'ignored' };
  }
}

export function eventFromJson(json: unknown): ProviderEvent {
  const j = json as Json;
  if (!j || typeof j !== 'object' || typeof j.kind !== 'string' || typeof j.eventId !== 'string') throw new Error('not a stored provider event');
  const base = { provider: j.provider as ProviderEvent['provider'], eventId: j.eventId, providerType: String(j.providerType), occurredAt: new Date(j.occurredAt as string) };
  switch (j.kind) {
    case 'payment':
      return { ...base, kind: 'payment', payment: paymentFromJson(j.payment as Json) };
    case 'refund':
      return { ...base, kind: 'refund', refund: refundFromJson(j.refund as Json) };
    case 'checkout_expired':
      return { ...base, kind: 'checkout_expired', providerCheckoutId: String(j.providerCheckoutId), idempotencyKey: (j.idempotencyKey as string | null) ?? null };
    case 'ignored':
      return { ...base, kind: 'ignored' };
    default:
      throw new Error(`unknown stored event kind ${String(j.kind)}`);
  }
}

// ---------------------------------------------------------------- one provider conversation per payment at a time

/**
 * Runs `fn` holding a session advisory lock on the payment, or returns null
 * when another process holds it. A charge (or its re-send) and a
 * reconciliation of the same payment never overlap, so reconciliation cannot
 * conclude "the provider holds nothing" while a request for that very
 * payment is still on the wire. The lock dies with the connection.
 */
export async function withPaymentLock<T>(client: Pick<pg.PoolClient, 'query'>, paymentId: string, fn: () => Promise<T>): Promise<T | null> {
  const { rows } = await client.query<{ locked: boolean }>(`select pg_try_advisory_lock(hashtextextended('abonement:payment:' || $1, 0)) as locked`, [paymentId]);
  if (!rows[0]?.locked) return null;
  try {
    return await fn();
  } finally {
    await client.query(`select pg_advisory_unlock(hashtextextended('abonement:payment:' || $1, 0))`, [paymentId]);
  }
}
