/**
 * The REST API's shapes as zod schemas: request bodies and query strings are
 * checked with them, and /v1/openapi.json is generated from them
 * (server/rest/openapi.ts), so the document cannot drift from the code.
 *
 * Conventions (Stripe-like): snake_case; ids are UUIDs; a related object is
 * named by its id (`customer`, `price`, …); money is an integer count of
 * minor units with its ISO 4217 `currency`; times are ISO 8601 in UTC.
 */
import { z } from 'zod';
import {
  INVOICE_STATUSES,
  PAYMENT_STATUSES,
  PLAN_STATUSES,
  PRICE_INTERVALS,
  PROVIDER_NAMES,
  REFUND_DESTINATIONS,
  REFUND_REASONS,
  REFUND_RULES,
  REFUND_STATUSES,
  SUBSCRIPTION_STATUSES,
  TENANT_STATUSES,
} from '../../lib/statuses.ts';

export const registry = z.registry<{ id: string; description?: string }>();

function component<T extends z.ZodType>(id: string, schema: T, description?: string): T {
  registry.add(schema, { id, ...(description ? { description } : {}) });
  return schema;
}

const id = z.uuid();
const timestamp = z.iso.datetime({ offset: true });
const money = z.int().min(0).max(Number.MAX_SAFE_INTEGER).describe('Amount in minor units of `currency` (cents for USD, yen for JPY).');
const currency = z
  .string()
  .regex(/^[A-Z]{3}$/)
  .describe('ISO 4217 currency code.');
const nullable = <T extends z.ZodType>(schema: T) => schema.nullable();

export const Tenant = component(
  'Tenant',
  z.object({
    id,
    object: z.literal('tenant'),
    name: z.string(),
    status: z.enum(TENANT_STATUSES),
    test_mode: z.boolean(),
    default_currency: currency,
    time_zone: z.string(),
    created_at: timestamp,
  }),
  'The tenant the API key belongs to.',
);

export const TestClock = component(
  'TestClock',
  z.object({
    object: z.literal('test_clock'),
    status: z.enum(['ready', 'advancing']),
    frozen_at: timestamp,
    advancing_to: nullable(timestamp).describe('The target of the advance in progress.'),
    max_advance_to: nullable(timestamp).describe("The furthest one advance may go now: two intervals of the tenant's shortest subscription interval (null: no subscription)."),
    advance_started_at: nullable(timestamp),
    advance_finished_at: nullable(timestamp),
  }),
  "A test-mode tenant's clock (docs: Test clocks).",
);

export const AdvanceTestClockBody = z
  .object({
    frozen_at: timestamp.describe('The time to advance the clock to: not before its time, at most max_advance_to.'),
  })
  .strict();

export const Customer = component(
  'Customer',
  z.object({
    id,
    object: z.literal('customer'),
    external_id: z.string(),
    email: z.string(),
    name: z.string(),
    country: nullable(z.string()),
    locale: z.string(),
    currency: nullable(currency).describe('Set by the first subscription or invoice; never changes.'),
    metadata: z.record(z.string(), z.unknown()),
    created_at: timestamp,
    updated_at: timestamp,
  }),
  "An end user of the tenant, known by the tenant's own external_id.",
);

export const Price = component(
  'Price',
  z.object({
    id,
    object: z.literal('price'),
    currency,
    interval: z.enum(PRICE_INTERVALS),
    amount_minor: money,
  }),
);

export const Plan = component(
  'Plan',
  z.object({
    id,
    object: z.literal('plan'),
    code: nullable(z.string()),
    name: z.string(),
    description: z.string(),
    status: z.enum(PLAN_STATUSES),
    sale_starts_at: nullable(timestamp),
    sale_ends_at: nullable(timestamp),
    trial_days: z.int(),
    full_refund_days: z.int(),
    prices: z.array(Price).describe('Active prices: one per currency and interval.'),
    created_at: timestamp,
  }),
  'Something the tenant sells; purchasable while active, inside its sale window and with a price.',
);

export const subscriptionStatus = z.enum(SUBSCRIPTION_STATUSES);

export const Subscription = component(
  'Subscription',
  z.object({
    id,
    object: z.literal('subscription'),
    customer: id,
    price: id,
    pending_price: nullable(id).describe('A price change that takes effect at the next period.'),
    quantity: z.int().describe('Seats: each period invoice bills quantity × the price amount.'),
    pending_quantity: nullable(z.int()).describe('A quantity change that takes effect at the next period.'),
    payment_method: nullable(id),
    currency,
    status: subscriptionStatus,
    current_period_start: timestamp,
    current_period_end: timestamp,
    trial_end: nullable(timestamp),
    cancel_at_period_end: z.boolean(),
    canceled_at: nullable(timestamp),
    cancellation_reason: nullable(z.string()),
    ended_at: nullable(timestamp),
    paused_at: nullable(timestamp),
    started_at: timestamp,
    created_at: timestamp,
    updated_at: timestamp,
  }),
  "A customer's subscription to a price. Statuses move only along the billing state machine.",
);

/** A line's amount: negative on a discount line only. */
const lineMoney = z.int().min(-Number.MAX_SAFE_INTEGER).max(Number.MAX_SAFE_INTEGER).describe('Amount in minor units of `currency`; negative on a discount line (`discount` set).');

export const InvoiceLine = component(
  'InvoiceLine',
  z.object({
    id,
    description: z.string(),
    quantity: z.int(),
    unit_amount_minor: lineMoney,
    amount_minor: lineMoney,
    price: nullable(id),
    discount: nullable(id).describe('The discount this line is (docs: Coupons and promotion codes).'),
    tax_rate: nullable(id).describe('Set on a tax line: its rate.'),
    tax_included: z.boolean().describe('A tax line of an inclusive rate: shown, not added (the other lines contain it).'),
    period_start: nullable(timestamp),
    period_end: nullable(timestamp),
  }),
);

const invoiceFields = {
  id,
  object: z.literal('invoice'),
  number: z.string(),
  customer: id,
  subscription: nullable(id),
  status: z.enum(INVOICE_STATUSES),
  billing_reason: z.string(),
  currency,
  subtotal_minor: money,
  tax_minor: money.describe('The tax in subtotal_minor (net = subtotal_minor − tax_minor).'),
  balance_applied_minor: money,
  amount_due_minor: money,
  amount_paid_minor: money,
  period_start: nullable(timestamp),
  period_end: nullable(timestamp),
  due_at: timestamp,
  paid_at: nullable(timestamp),
  voided_at: nullable(timestamp),
  attempt_count: z.int(),
  next_attempt_at: nullable(timestamp),
  created_at: timestamp,
};
export const Invoice = component('Invoice', z.object(invoiceFields), 'What a customer owes for one period (or a one-off charge).');
export const InvoiceWithLines = component('InvoiceWithLines', z.object({ ...invoiceFields, lines: z.array(InvoiceLine) }));

export const Payment = component(
  'Payment',
  z.object({
    id,
    object: z.literal('payment'),
    invoice: id,
    customer: id,
    currency,
    amount_minor: money,
    refunded_minor: money,
    status: z.enum(PAYMENT_STATUSES),
    provider: z.string(),
    provider_payment_id: nullable(z.string()),
    attempt: z.int(),
    failure_category: nullable(z.string()),
    failure_code: nullable(z.string()),
    failure_message: nullable(z.string()),
    succeeded_at: nullable(timestamp),
    failed_at: nullable(timestamp),
    created_at: timestamp,
  }),
  'One charge attempt of an invoice.',
);

export const Refund = component(
  'Refund',
  z.object({
    id,
    object: z.literal('refund'),
    payment: id,
    customer: id,
    subscription: nullable(id),
    currency,
    amount_minor: money,
    reason: z.string(),
    rule: z.enum(REFUND_RULES),
    destination: z.enum(REFUND_DESTINATIONS),
    status: z.enum(REFUND_STATUSES),
    failure_code: nullable(z.string()),
    failure_message: nullable(z.string()),
    succeeded_at: nullable(timestamp),
    created_at: timestamp,
  }),
  'Money returned from a payment.',
);

export const RefundQuote = component(
  'RefundQuote',
  z.object({
    object: z.literal('refund_quote'),
    amount_minor: money,
    currency,
    rule: z.enum(['full_window', 'prorated', 'window_passed', 'no_payment', 'already_refunded']),
    payment: nullable(id),
    refundable_minor: money,
    period_start: nullable(timestamp),
    period_end: nullable(timestamp),
    quoted_at: timestamp,
  }),
  'What a refund of the subscription would return now, and by which rule.',
);

const PreviewedLine = z.object({
  description: z.string(),
  quantity: z.int().min(1),
  unit_amount_minor: lineMoney,
  amount_minor: lineMoney,
  period_start: nullable(timestamp),
  period_end: nullable(timestamp),
});

export const SubscriptionChangePreview = component(
  'SubscriptionChangePreview',
  z.object({
    object: z.literal('subscription_change_preview'),
    subscription: id,
    price: id,
    effective: z
      .enum(['now', 'period_end', 'trial'])
      .describe('now: switched now and prorated; period_end: scheduled for the next period; trial: the first invoice after the trial uses the new price.'),
    currency,
    invoice_subtotal_minor: money.describe('The proration invoice the change makes now (0 if none).'),
    balance_applied_minor: money.describe("The part of that invoice the customer's balance pays."),
    amount_due_minor: money.describe('What is charged now.'),
    credit_minor: money.describe('Unused time credited to the balance (a downgrade).'),
    quantity: z.int().describe('The seats the change asks for.'),
    lines: z.array(PreviewedLine),
    next_invoice_at: timestamp,
    next_price: id,
    next_quantity: z.int(),
    next_amount_minor: money.describe("The next renewal's amount (quantity × the price), before any balance."),
    previewed_at: timestamp,
  }),
  'What a change of price or seats would do now, computed by the SQL that performs it and rolled back (nothing is changed).',
);

export const UpcomingInvoicePreview = component(
  'UpcomingInvoicePreview',
  z.object({
    object: z.literal('upcoming_invoice'),
    subscription: id,
    invoice: nullable(id).describe('Set when the renewal invoice already exists (open, waiting for its payment).'),
    price: id,
    currency,
    period_start: timestamp,
    period_end: timestamp,
    subtotal_minor: money,
    balance_applied_minor: money.describe('The balance it would take as of now.'),
    amount_due_minor: money,
    lines: z.array(PreviewedLine),
    previewed_at: timestamp,
  }),
  "The subscription's next renewal invoice, computed by the renewal's own SQL and rolled back.",
);

export const CustomerSession = component(
  'CustomerSession',
  z.object({
    id,
    object: z.literal('customer_session'),
    customer: id,
    token: z.string().describe('Send as `Authorization: Bearer <token>` on behalf of the customer.'),
    issued_at: timestamp,
    expires_at: timestamp,
  }),
  'A self-service session for one customer (at most one hour).',
);

export const Entitlement = component(
  'Entitlement',
  z.object({
    plan_code: z.string(),
    plan: id,
    subscription: id,
    status: z.enum(['trialing', 'active']),
    period_end: timestamp,
  }),
);

export const Entitlements = component(
  'Entitlements',
  z.object({
    object: z.literal('entitlements'),
    customer: id,
    data: z.array(Entitlement),
    claim: z.array(z.tuple([z.string(), z.int()])).describe('The compact form for an access token: [plan code, period end in Unix seconds].'),
  }),
  'What a customer may use now: its trialing and active subscriptions.',
);

export const CheckoutLink = component(
  'CheckoutLink',
  z.object({
    object: z.literal('checkout_link'),
    payment: id.describe('The payment attempt this link pays (pending until the customer pays).'),
    invoice: id,
    provider: z.enum(PROVIDER_NAMES).describe("The provider that hosts the payment page, chosen by the tenant's routing rules."),
    url: z.string().describe('Send the customer here.'),
    expires_at: nullable(timestamp).describe('When the provider stops accepting payment on this page; ask again for a new link after that.'),
    amount_minor: money,
    currency,
    reused: z.boolean().describe('True when an open link made by an earlier request was returned instead of a new one.'),
  }),
  "A hosted payment page for a subscription's open invoice.",
);

export const ErrorBody = component(
  'Error',
  z.object({
    error: z.object({
      code: z.string().describe('Machine-readable, e.g. PLAN_NOT_ON_SALE, ILLEGAL_TRANSITION, INVALID_REQUEST.'),
      message: z.string(),
      request_id: z.string().describe('Quote it when reporting a problem.'),
      param: z.string().optional().describe('The request field at fault, for INVALID_REQUEST.'),
    }),
  }),
);

export function listOf<T extends z.ZodType>(name: string, item: T) {
  return component(
    `${name}List`,
    z.object({
      object: z.literal('list'),
      data: z.array(item),
      has_more: z.boolean(),
      next_cursor: nullable(z.string()).describe('Pass as `cursor` to read the next page; null on the last page.'),
    }),
  );
}

/* Requests */

export const idParams = z.object({ id }).strict();

export const pageQuery = {
  limit: z.coerce.number().int().min(1).max(100).default(20).describe('Page size, 1 to 100 (default 20).'),
  cursor: z.string().max(200).optional().describe('`next_cursor` of the previous page.'),
};

export const CreateCustomerBody = z
  .object({
    external_id: z.string().min(1).max(255),
    email: z.email(),
    name: z.string().max(500).optional(),
    country: z
      .string()
      .regex(/^[A-Za-z]{2}$/)
      .optional(),
    locale: z
      .string()
      .regex(/^[a-z]{2}(-[A-Z]{2})?$/)
      .optional(),
    metadata: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

export const CreateSessionBody = z
  .object({
    expires_in_seconds: z.int().min(60).max(3600).optional(),
  })
  .strict();

/** A subscription's quantity: what subscriptions_quantity_check allows (docs/api.md, "Seats"). */
const seats = z.int().min(1).max(1_000_000);

export const CreateSubscriptionBody = z
  .object({
    customer: id,
    price: id,
    payment_method: id.optional(),
    quantity: seats.optional().describe('Seats (default 1): each invoice bills quantity × the price amount.'),
    promotion_code: z.string().max(64).optional().describe('A promotion code the customer typed (case-insensitive).'),
    coupon: id.optional().describe('A coupon to redeem (instead of a promotion code).'),
  })
  .strict();

export const Coupon = component(
  'Coupon',
  z.object({
    id,
    object: z.literal('coupon'),
    name: z.string(),
    percent_off: nullable(z.number()),
    amount_off_minor: nullable(money),
    currency: nullable(currency),
    duration: z.enum(['once', 'repeating', 'forever']),
    duration_in_periods: nullable(z.int()),
    max_redemptions: nullable(z.int()),
    times_redeemed: z.int(),
    redeem_by: nullable(timestamp),
    applies_to_plans: nullable(z.array(id)),
    active: z.boolean(),
    created_at: timestamp,
  }),
  'A discount: percent_off or amount_off_minor in currency, for one, duration_in_periods or every period invoice.',
);

export const TaxRate = component(
  'TaxRate',
  z.object({
    id,
    object: z.literal('tax_rate'),
    name: z.string(),
    percentage: z.number(),
    inclusive: z.boolean(),
    country: nullable(z.string()),
    fiscal_vat: nullable(z.string()),
    active: z.boolean(),
    created_at: timestamp,
  }),
  "A tenant's tax rate: inclusive (prices contain it) or exclusive (added), for a plan or the customers of a country.",
);

export const CreateTaxRateBody = z
  .object({
    name: z.string().min(1).max(100),
    percentage: z.number().gt(0).max(100).describe('Up to four decimals.'),
    inclusive: z.boolean().optional(),
    country: z
      .string()
      .regex(/^[A-Za-z]{2}$/)
      .optional()
      .describe('ISO 3166-1 alpha-2: the rate of customers there.'),
    fiscal_vat: z.string().max(20).optional().describe('54-FZ VAT code printed on receipts, e.g. vat20.'),
  })
  .strict();

export const PlanTaxRate = component(
  'PlanTaxRate',
  z.object({ object: z.literal('plan_tax_rate'), plan: id, tax_rate: nullable(id) }),
  "A plan's tax rate (null: by the customer's country).",
);

export const PlanTaxRateBody = z.object({ tax_rate: nullable(id).describe("null: by the customer's country.") }).strict();

export const CreateCouponBody = z
  .object({
    name: z.string().min(1).max(200),
    duration: z.enum(['once', 'repeating', 'forever']),
    percent_off: z.number().gt(0).max(100).optional().describe('Up to two decimals.'),
    amount_off_minor: z.int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
    currency: currency.optional().describe('With amount_off_minor.'),
    duration_in_periods: z.int().min(1).max(1200).optional().describe('With duration repeating: how many period invoices.'),
    max_redemptions: z.int().min(1).optional(),
    redeem_by: timestamp.optional(),
    applies_to_plans: z.array(id).min(1).max(100).optional().describe('Plans it applies to (default: all).'),
  })
  .strict();

export const PromotionCode = component(
  'PromotionCode',
  z.object({
    id,
    object: z.literal('promotion_code'),
    coupon: id,
    code: z.string(),
    active: z.boolean(),
    max_redemptions: nullable(z.int()),
    times_redeemed: z.int(),
    expires_at: nullable(timestamp),
    first_time_only: z.boolean(),
    once_per_customer: z.boolean(),
    minimum_amount_minor: nullable(money),
    created_at: timestamp,
  }),
  'A code customers type for a coupon, with its own limits.',
);

export const CreatePromotionCodeBody = z
  .object({
    code: z.string().regex(/^[A-Za-z0-9_-]{3,64}$/),
    max_redemptions: z.int().min(1).optional(),
    expires_at: timestamp.optional(),
    first_time_only: z.boolean().optional(),
    once_per_customer: z.boolean().optional(),
    minimum_amount_minor: z.int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
  })
  .strict();

export const Discount = component(
  'Discount',
  z.object({
    id,
    object: z.literal('discount'),
    subscription: id,
    customer: id,
    coupon: id,
    promotion_code: nullable(id),
    periods_remaining: nullable(z.int()).describe('Period invoices left (null: forever).'),
    started_at: timestamp,
    ended_at: nullable(timestamp),
  }),
  'A coupon redeemed on a subscription.',
);

export const ApplyDiscountBody = z
  .object({
    promotion_code: z.string().max(64).optional(),
    coupon: id.optional(),
  })
  .strict()
  .refine((body) => (body.promotion_code === undefined) !== (body.coupon === undefined), { message: 'give a promotion_code or a coupon' });

export const CancelBody = z
  .object({
    at_period_end: z.boolean().optional().describe('End at the end of the paid period instead of now.'),
  })
  .strict();

export const EmptyBody = z.object({}).strict();

export const CheckoutBody = z
  .object({
    return_url: z
      .string()
      .max(2000)
      .regex(/^https?:\/\/\S+$/, 'an http(s) URL')
      .optional()
      .describe('Where the customer should end up afterwards; shown as a link on our return page.'),
    provider: z
      .enum(PROVIDER_NAMES)
      .optional()
      .describe(
        "The provider the customer chose (e.g. a Pay with PayPal button); one the tenant's routing offers for this invoice (PROVIDER_NOT_OFFERED otherwise). Unset: the routing rules choose, with failover.",
      ),
  })
  .strict();

export const ChangePriceBody = z
  .object({
    price: id,
    at_period_end: z.boolean().optional().describe('Switch at the next period instead of now (no proration).'),
  })
  .strict();

export const ChangeSubscriptionBody = z
  .object({
    price: id.optional().describe('The new price (omit to keep it).'),
    quantity: seats.optional().describe('The new quantity of seats (omit to keep it).'),
    at_period_end: z.boolean().optional().describe('Switch at the next period instead of now (no proration).'),
  })
  .strict()
  .refine((body) => body.price !== undefined || body.quantity !== undefined, { message: 'give a price, a quantity or both' });

const refundReason = z.enum(REFUND_REASONS);
const refundDestination = z.enum(REFUND_DESTINATIONS);

export const RefundSubscriptionBody = z
  .object({
    reason: refundReason.optional(),
    destination: refundDestination.optional(),
  })
  .strict();

export const RefundPaymentBody = z
  .object({
    payment: id,
    amount_minor: z.int().min(1).max(Number.MAX_SAFE_INTEGER),
    reason: refundReason.optional(),
    destination: refundDestination.optional(),
  })
  .strict();

export const PageQuery = z.object({ ...pageQuery }).strict();
export const SubscriptionListQuery = z.object({ ...pageQuery, customer: id.optional(), status: subscriptionStatus.optional() }).strict();
export const CustomerListQuery = z.object({ ...pageQuery, email: z.string().max(320).optional(), external_id: z.string().max(255).optional() }).strict();
export const InvoiceListQuery = z
  .object({
    ...pageQuery,
    customer: id.optional(),
    subscription: id.optional(),
    status: z.enum(INVOICE_STATUSES).optional(),
  })
  .strict();
export const PaymentListQuery = z
  .object({
    ...pageQuery,
    customer: id.optional(),
    invoice: id.optional(),
    status: z.enum(PAYMENT_STATUSES).optional(),
  })
  .strict();
export const RefundListQuery = z.object({ ...pageQuery, customer: id.optional(), payment: id.optional() }).strict();
export const NoQuery = z.object({}).strict();
