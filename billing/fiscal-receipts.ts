/**
 * The 54-FZ receipts of payments and refunds, as SQL builds and keeps them
 * (app_private.payment_fiscal_receipt / refund_fiscal_receipt; docs/providers.md,
 * "Fiscal receipts"): asked for before a provider call, so that the receipt sent
 * is the one kept, and every retry sends the same.
 */
import type pg from 'pg';
import { fiscalReceiptFromJson } from '../providers/fiscal.ts';
import type { FiscalReceipt } from '../providers/types.ts';

type Queryable = Pick<pg.Pool | pg.PoolClient, 'query'>;

/** The receipt of one payment or refund; null when none is due. */
export async function fiscalReceipt(db: Queryable, id: string, kind: 'payment' | 'refund' = 'payment'): Promise<FiscalReceipt | null> {
  const fn = kind === 'payment' ? 'app_private.payment_fiscal_receipt' : 'app_private.refund_fiscal_receipt';
  const { rows } = await db.query<{ receipt: unknown }>(`select ${fn}($1) as receipt`, [id]);
  return fiscalReceiptFromJson(rows[0]?.receipt);
}

/** The receipts of many payments in one statement, by payment id. */
export async function fiscalReceipts(db: Queryable, paymentIds: readonly string[]): Promise<Map<string, FiscalReceipt | null>> {
  const receipts = new Map<string, FiscalReceipt | null>();
  if (paymentIds.length === 0) return receipts;
  const { rows } = await db.query<{ id: string; receipt: unknown }>('select id, app_private.payment_fiscal_receipt(id) as receipt from unnest($1::uuid[]) as id', [paymentIds]);
  for (const row of rows) receipts.set(row.id, fiscalReceiptFromJson(row.receipt));
  return receipts;
}
