/**
 * Exact money conversions (adapters, e-mails, pages): integer minor units (bigint) to
 * and from the decimal strings some providers use ("100.00"), by string
 * arithmetic on the ISO-4217 exponent. No floating point anywhere: 0.1 + 0.2
 * must never reach a ledger.
 */
/** An amount: integer minor units of an ISO-4217 currency. */
export interface Money {
  amountMinor: bigint;
  currency: string;
}

/** ISO-4217 minor-unit exponents that differ from 2. Everything else we accept has 2. */
const exponents: Record<string, number> = {
  BIF: 0,
  CLP: 0,
  DJF: 0,
  GNF: 0,
  ISK: 0,
  JPY: 0,
  KMF: 0,
  KRW: 0,
  PYG: 0,
  RWF: 0,
  UGX: 0,
  UYI: 0,
  VND: 0,
  VUV: 0,
  XAF: 0,
  XOF: 0,
  XPF: 0,
  BHD: 3,
  IQD: 3,
  JOD: 3,
  KWD: 3,
  LYD: 3,
  OMR: 3,
  TND: 3,
  CLF: 4,
  UYW: 4,
};

export function isCurrencyCode(value: string): boolean {
  return /^[A-Z]{3}$/.test(value);
}

export function currencyExponent(currency: string): number {
  if (!isCurrencyCode(currency)) throw new RangeError(`not an ISO-4217 currency code: ${JSON.stringify(currency)}`);
  return exponents[currency] ?? 2;
}

/** 12345n RUB → "123.45"; 500n JPY → "500". */
export function minorToDecimal(amountMinor: bigint, currency: string): string {
  const exponent = currencyExponent(currency);
  const negative = amountMinor < 0n;
  const digits = (negative ? -amountMinor : amountMinor).toString();
  if (exponent === 0) return `${negative ? '-' : ''}${digits}`;
  const padded = digits.padStart(exponent + 1, '0');
  return `${negative ? '-' : ''}${padded.slice(0, -exponent)}.${padded.slice(-exponent)}`;
}

/**
 * "123.45" RUB → 12345n. Accepts fewer fraction digits than the exponent
 * ("100" or "100.5" RUB); rejects more (a sub-minor amount is not money we can
 * book) and anything that is not a plain decimal.
 */
export function decimalToMinor(value: string, currency: string): bigint {
  const exponent = currencyExponent(currency);
  const match = /^(-?)(\d+)(?:\.(\d+))?$/.exec(value);
  if (!match) throw new RangeError(`not a decimal amount: ${JSON.stringify(value)}`);
  const [, sign, whole, fraction = ''] = match;
  if (fraction.length > exponent && !/^0*$/.test(fraction.slice(exponent))) {
    throw new RangeError(`${value} ${currency} has more than ${exponent} fraction digits`);
  }
  const minor = BigInt(whole! + fraction.slice(0, exponent).padEnd(exponent, '0'));
  return sign === '-' ? -minor : minor;
}

/** Validates a Money before it leaves for a provider: positive, integral, known currency. */
export function assertChargeable(money: Money, currencies: readonly string[]): void {
  if (typeof money.amountMinor !== 'bigint') throw new TypeError('amountMinor must be a bigint');
  if (money.amountMinor <= 0n) throw new RangeError('amount must be positive');
  currencyExponent(money.currency);
  if (!currencies.includes(money.currency)) throw new RangeError(`currency ${money.currency} is not supported here`);
}

/** bigint → JSON-safe number for APIs that take integers (Stripe); refuses what a double cannot hold exactly. */
export function minorToSafeNumber(amountMinor: bigint): number {
  if (amountMinor > BigInt(Number.MAX_SAFE_INTEGER) || amountMinor < -BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError('amount exceeds the exactly representable integer range');
  }
  return Number(amountMinor);
}

/** A JSON integer from a provider → bigint, refusing non-integers. */
export function integerToMinor(value: unknown): bigint {
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
  if (typeof value === 'string' && /^-?\d+$/.test(value)) return BigInt(value);
  throw new RangeError(`not an integer amount: ${JSON.stringify(value)}`);
}
