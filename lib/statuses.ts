/**
 * The statuses, and the other closed lists of values, that the schema's check
 * constraints allow and TypeScript repeats: REST validates and documents them
 * (server/rest/schemas.ts), the console offers them as filters
 * (admin/resources/), adapters and e-mails name them in types. The database
 * decides; these are copies for the edges, and sql-tests/statuses.test.ts
 * fails when one differs from its check constraint or, for a state machine,
 * from the statuses of its app_private.state_transitions rows.
 *
 * Order is the order shown in the API document and the console.
 */

// ---------------------------------------------------------------- state machines (app_private.state_transitions)

export const SUBSCRIPTION_STATUSES = ['incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'paused', 'canceled'] as const;
export const INVOICE_STATUSES = ['draft', 'open', 'paid', 'void', 'uncollectible'] as const;
export const PAYMENT_STATUSES = ['pending', 'requires_action', 'processing', 'succeeded', 'failed', 'canceled'] as const;
export const REFUND_STATUSES = ['pending', 'succeeded', 'failed'] as const;
export const WEBHOOK_DELIVERY_STATUSES = ['pending', 'succeeded', 'failed', 'gave_up'] as const;

/** A payment still waiting for its outcome: at most one per invoice (invariant 1, index payments_one_in_flight_per_invoice). */
export const PAYMENT_IN_FLIGHT_STATUSES = ['pending', 'requires_action', 'processing'] as const satisfies ReadonlyArray<(typeof PAYMENT_STATUSES)[number]>;

export function paymentInFlight(status: string): boolean {
  return (PAYMENT_IN_FLIGHT_STATUSES as readonly string[]).includes(status);
}

/** The machines of app_private.state_transitions, with their statuses. */
export const STATE_MACHINES = {
  subscription: SUBSCRIPTION_STATUSES,
  payment: PAYMENT_STATUSES,
  invoice: INVOICE_STATUSES,
  refund: REFUND_STATUSES,
  webhook_delivery: WEBHOOK_DELIVERY_STATUSES,
} as const;

/** The machines whose moves are recorded in app_public.status_changes (webhook deliveries are guarded, not recorded). */
export const STATUS_CHANGE_ENTITIES = ['subscription', 'payment', 'invoice', 'refund'] as const satisfies ReadonlyArray<keyof typeof STATE_MACHINES>;

// ---------------------------------------------------------------- other statuses

export const TENANT_STATUSES = ['active', 'suspended', 'closed'] as const;
export const PLAN_STATUSES = ['draft', 'active', 'archived'] as const;
export const WEBHOOK_ENDPOINT_STATUSES = ['enabled', 'disabled'] as const;
export const WEBHOOK_ENDPOINT_DISABLED_REASONS = ['requested', 'gone'] as const;
export const SENT_EMAIL_STATUSES = ['queued', 'sent', 'skipped', 'failed'] as const;
export const PROVIDER_EVENT_OUTCOMES = ['applied', 'no_change', 'ignored', 'unmatched', 'needs_review'] as const;

// ---------------------------------------------------------------- other closed lists

export const PROVIDER_NAMES = ['sandbox', 'stripe', 'yookassa', 'cloudpayments', 'paypal'] as const;
export const FISCAL_VATS = ['none', 'vat0', 'vat5', 'vat7', 'vat10', 'vat20', 'vat22', 'vat5_105', 'vat7_107', 'vat10_110', 'vat20_120', 'vat22_122'] as const;
export const OPERATOR_ROLES = ['admin', 'finance', 'support', 'viewer'] as const;
export const PRICE_INTERVALS = ['month', 'year'] as const;
export const TENANT_REFUND_POLICIES = ['prorated', 'full_window_only'] as const;
export const INVOICE_BILLING_REASONS = ['subscription_create', 'subscription_cycle', 'subscription_resume', 'subscription_update', 'manual'] as const;
export const PAYMENT_FAILURE_CATEGORIES = ['soft_decline', 'hard_decline', 'gateway_error'] as const;
export const PAYMENT_FLOWS = ['off_session', 'checkout'] as const;
export const REFUND_REASONS = ['requested_by_customer', 'duplicate', 'fraudulent', 'service_issue', 'goodwill', 'other'] as const;
export const REFUND_RULES = ['full_window', 'prorated', 'operator_override', 'requested_amount'] as const;
export const REFUND_DESTINATIONS = ['original_payment', 'balance'] as const;
export const EMAIL_TEMPLATES = [
  'subscription_created',
  'subscription_activated',
  'subscription_renewed',
  'subscription_canceled',
  'payment_succeeded',
  'payment_failed',
  'refund_succeeded',
  'renewal_reminder',
] as const;
