/**
 * The gateway's ledger (schema sandbox_gateway): its rows, the transaction
 * its writes run in, the events it records, and the read-only view tests
 * use to count real charges.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { withTransaction } from '../lib/database.ts';
import type { SandboxEvent } from './webhooks.ts';

export interface PaymentRow {
  id: string;
  idempotency_key: string;
  checkout_id: string | null;
  amount_minor: string;
  currency: string;
  status: string;
  failure_code: string | null;
  failure_message: string | null;
  payment_method_token: string | null;
  off_session: boolean;
  refunded_minor: string;
  metadata: Record<string, string>;
  created_at: Date;
  pm_brand: string | null;
  pm_last4: string | null;
  pm_exp_month: number | null;
  pm_exp_year: number | null;
}

export interface CheckoutRow {
  id: string;
  idempotency_key: string;
  amount_minor: string;
  currency: string;
  description: string;
  customer_reference: string;
  success_url: string;
  cancel_url: string;
  metadata: Record<string, string>;
  status: string;
  payment_id: string | null;
  expires_at: Date;
}

export interface SandboxLedgerPayment {
  id: string;
  idempotencyKey: string;
  checkoutId: string | null;
  status: string;
  amountMinor: bigint;
  currency: string;
  refundedMinor: bigint;
  failureCode: string | null;
  offSession: boolean;
}

export interface SandboxLedger {
  /** Real charges for a key: succeeded payments. */
  chargeCount(idempotencyKey: string): Promise<number>;
  payments(filter?: { idempotencyKey?: string; checkoutId?: string }): Promise<SandboxLedgerPayment[]>;
}

type Db = pg.PoolClient | pg.Pool;

/** A provider-style object id: a prefix and 24 random hex digits. */
export function newId(prefix: string): string {
  return `${prefix}${randomBytes(12).toString('hex')}`;
}

export const paymentSelect = `
  select p.*, m.brand as pm_brand, m.last4 as pm_last4, m.exp_month as pm_exp_month, m.exp_year as pm_exp_year
  from sandbox_gateway.payments p left join sandbox_gateway.payment_methods m on m.token = p.payment_method_token`;

/**
 * The gateway's own writes commit without waiting for the WAL flush: it is a
 * test-money emulator sharing billing's database, and billing's own commits
 * (synchronous) flush the WAL up to and past the gateway's. A crash of the
 * database can lose only gateway writes that no billing commit has relied
 * on yet — a charge billing then finds missing and retries under its next key,
 * as with a provider that never received the request.
 */
export function gatewayTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  return withTransaction(pool, fn, { settings: { synchronous_commit: 'off' } });
}

export async function loadPayment(db: Db, paymentId: string): Promise<PaymentRow | undefined> {
  const { rows } = await db.query<PaymentRow>(`${paymentSelect} where p.id = $1`, [paymentId]);
  return rows[0];
}

export async function loadCheckout(db: Db, checkoutId: string, lock = false): Promise<CheckoutRow | undefined> {
  const { rows } = await db.query<CheckoutRow>(`select * from sandbox_gateway.checkouts where id = $1${lock ? ' for update' : ''}`, [checkoutId]);
  return rows[0];
}

/** Records an event in the ledger's transaction; the caller hands it to the webhook dispatcher once that commits. */
export async function recordEvent(client: pg.PoolClient, now: Date, type: string, object: Record<string, unknown>): Promise<SandboxEvent> {
  const event: SandboxEvent = { id: newId('evt_sbx_'), type, created: Math.floor(now.getTime() / 1000), data: { object } };
  await client.query('insert into sandbox_gateway.events (id, type, payload) values ($1, $2, $3)', [event.id, type, JSON.stringify(event)]);
  return event;
}

export function ledgerOf(pool: pg.Pool): SandboxLedger {
  return {
    async chargeCount(idempotencyKey) {
      const { rows } = await pool.query<{ n: string }>(`select count(*) as n from sandbox_gateway.payments where idempotency_key = $1 and status = 'succeeded'`, [idempotencyKey]);
      return Number(rows[0]!.n);
    },
    async payments(filter = {}) {
      const { rows } = await pool.query<PaymentRow>(
        `${paymentSelect} where ($1::text is null or p.idempotency_key = $1) and ($2::text is null or p.checkout_id = $2) order by p.created_at`,
        [filter.idempotencyKey ?? null, filter.checkoutId ?? null],
      );
      return rows.map((row) => ({
        id: row.id,
        idempotencyKey: row.idempotency_key,
        checkoutId: row.checkout_id,
        status: row.status,
        amountMinor: BigInt(row.amount_minor),
        currency: row.currency,
        refundedMinor: BigInt(row.refunded_minor),
        failureCode: row.failure_code,
        offSession: row.off_session,
      }));
    },
  };
}
