/**
 * The sandbox gateway's test cards, numbered as in Stripe's test mode, and what
 * each one does. A number is only ever used to pick a behaviour on the hosted
 * page; the ledger keeps the behaviour, brand and last4.
 */

export type SandboxBehaviour =
  | 'succeed'
  | 'decline_generic'
  | 'decline_insufficient_funds'
  | 'decline_stolen'
  | 'challenge_3ds'
  | 'decline_after_attach'
  | 'processing_error'
  | 'charge_then_timeout';

export interface SandboxTestCard {
  number: string;
  behaviour: SandboxBehaviour;
  /** What the customer (or a developer) should expect. */
  description: string;
}

export const sandboxTestCards: readonly SandboxTestCard[] = [
  { number: '4242424242424242', behaviour: 'succeed', description: 'Succeeds, on the page and off-session.' },
  { number: '5555555555554444', behaviour: 'succeed', description: 'Succeeds (Mastercard).' },
  { number: '4000000000000002', behaviour: 'decline_generic', description: 'Declined: generic_decline (soft decline).' },
  { number: '4000000000009995', behaviour: 'decline_insufficient_funds', description: 'Declined: insufficient_funds (soft decline, retried by dunning).' },
  { number: '4000000000009979', behaviour: 'decline_stolen', description: 'Declined: stolen_card (hard decline, never retried).' },
  { number: '4000000000003220', behaviour: 'challenge_3ds', description: '3-D Secure: a challenge page on checkout; off-session charges need the customer again (requires_action).' },
  {
    number: '4000000000000341',
    behaviour: 'decline_after_attach',
    description: 'Checkout succeeds and the card is saved; every later off-session charge is declined (card_declined, soft).',
  },
  { number: '4000000000000119', behaviour: 'processing_error', description: 'processing_error: a gateway error, retried within minutes.' },
  { number: '4000000000090003', behaviour: 'charge_then_timeout', description: 'Sandbox only: the charge succeeds, then the gateway times out before answering (unknown outcome).' },
];

/** What a declining behaviour answers with, as the gateway's own codes. */
export const declineFor: Partial<Record<SandboxBehaviour, { code: string; message: string }>> = {
  decline_generic: { code: 'generic_decline', message: 'Your card was declined.' },
  decline_insufficient_funds: { code: 'insufficient_funds', message: 'Your card has insufficient funds.' },
  decline_stolen: { code: 'stolen_card', message: 'Your card was declined.' },
  decline_after_attach: { code: 'card_declined', message: 'Your card was declined.' },
  processing_error: { code: 'processing_error', message: 'An error occurred while processing your card. Try again in a little bit.' },
};

export function digitsOnly(value: string): string {
  return value.replace(/[\s-]/g, '');
}

export function cardBrand(number: string): string {
  if (/^4/.test(number)) return 'visa';
  if (/^(5[1-5]|2[2-7])/.test(number)) return 'mastercard';
  if (/^3[47]/.test(number)) return 'amex';
  if (/^220[0-4]/.test(number)) return 'mir';
  return 'unknown';
}

export function findTestCard(number: string): SandboxTestCard | undefined {
  const digits = digitsOnly(number);
  return sandboxTestCards.find((card) => card.number === digits);
}

/** "12/34", "12 / 2034", "1234" → month and four-digit year, or null. */
export function parseExpiry(value: string): { month: number; year: number } | null {
  const match = /^\s*(\d{1,2})\s*\/?\s*(\d{2}|\d{4})\s*$/.exec(value);
  if (!match) return null;
  const month = Number(match[1]);
  const year = match[2]!.length === 2 ? 2000 + Number(match[2]) : Number(match[2]);
  if (month < 1 || month > 12 || year > 2100) return null;
  return { month, year };
}

export function isExpired(expiry: { month: number; year: number }, now: Date): boolean {
  const year = now.getUTCFullYear();
  const month = now.getUTCMonth() + 1;
  return expiry.year < year || (expiry.year === year && expiry.month < month);
}

/**
 * Saved tokens that exist in every sandbox ledger (seeded by the 050-sandbox-gateway.sql section of db/migrations/committed/000001.sql), one per behaviour.
 * The demo tenant's cards are three of them (db/demo.ts; test/payments/demo.test.ts checks it uses no other).
 */
export const sandboxTestTokens: Record<SandboxBehaviour, string> = {
  succeed: 'pm_sbx_visa',
  decline_generic: 'pm_sbx_chargeDeclined',
  decline_insufficient_funds: 'pm_sbx_insufficientFunds',
  decline_stolen: 'pm_sbx_stolenCard',
  challenge_3ds: 'pm_sbx_authenticationRequired',
  decline_after_attach: 'pm_sbx_chargeCustomerFail',
  processing_error: 'pm_sbx_processingError',
  charge_then_timeout: 'pm_sbx_timeout',
};
