/**
 * The fiscal receipt as SQL keeps it (jsonb with amounts as strings, see
 * app_hidden.build_fiscal_receipt) → the adapters' FiscalReceipt (docs/providers.md,
 * "Fiscal receipts"); each adapter keeps its own VAT code table.
 */
import type { FiscalReceipt, FiscalVat } from './types.ts';

interface StoredReceipt {
  type: 'payment' | 'refund';
  tax_system: number;
  customer_email: string;
  currency: string;
  items: Array<{ description: string; quantity: number; unit_minor: string; amount_minor: string; vat: FiscalVat; payment_subject: 'service'; payment_mode: 'full_payment' }>;
}

export function fiscalReceiptFromJson(json: unknown): FiscalReceipt | null {
  if (!json) return null;
  const stored = json as StoredReceipt;
  return {
    type: stored.type,
    taxSystem: stored.tax_system,
    customerEmail: stored.customer_email,
    items: stored.items.map((item) => ({
      description: item.description,
      quantity: item.quantity,
      unit: { amountMinor: BigInt(item.unit_minor), currency: stored.currency },
      amount: { amountMinor: BigInt(item.amount_minor), currency: stored.currency },
      vat: item.vat,
      paymentSubject: item.payment_subject,
      paymentMode: item.payment_mode,
    })),
  };
}
