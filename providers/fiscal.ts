/**
 * The fiscal receipt as SQL keeps it (jsonb with amounts as strings, see
 * app_hidden.build_fiscal_receipt) → the adapters' FiscalReceipt, and the
 * provider codes of each VAT rate (docs/providers.md, "Fiscal receipts").
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

/** YooKassa's `vat_code` of each rate (YooKassa API, "receipt.items.vat_code"). */
export const YOOKASSA_VAT_CODES: Record<FiscalVat, number> = {
  none: 1,
  vat0: 2,
  vat10: 3,
  vat20: 4,
  vat10_110: 5,
  vat20_120: 6,
  vat5: 7,
  vat7: 8,
  vat5_105: 9,
  vat7_107: 10,
  vat22: 11,
  vat22_122: 12,
};

/** CloudPayments' `Vat` of each rate (CloudPayments API, "Формат передачи значений ставки НДС"); null: not subject to VAT. */
export const CLOUDPAYMENTS_VAT: Record<FiscalVat, number | null> = {
  none: null,
  vat0: 0,
  vat10: 10,
  vat20: 20,
  vat10_110: 110,
  vat20_120: 120,
  vat5: 5,
  vat7: 7,
  vat5_105: 105,
  vat7_107: 107,
  vat22: 22,
  vat22_122: 122,
};
