/**
 * The REST routes (/v1): each one is a single SQL statement — a billing
 * function call or a read under row-level security — in one transaction as
 * the caller's database role, exactly as the GraphQL mutation or query of
 * the same name. TypeScript only maps JSON to arguments and rows to JSON.
 */
import type pg from 'pg';
import type { z } from 'zod';
import type { RequestIdentity } from '../auth.ts';
import { CheckoutError, createCheckoutLink, type CheckoutDeps } from '../checkout.ts';
import { signCustomerSession, type CustomerSessionRow } from '../sessions.ts';
import * as s from './schemas.ts';

export interface RouteContext {
  client: pg.PoolClient;
  identity: RequestIdentity | undefined;
  sessionKey: Uint8Array;
}

/** For a route that calls out (a payment provider) and so runs no transaction of its own. */
export interface ExternalRouteContext {
  identity: RequestIdentity;
  /** The request's Idempotency-Key header. */
  idempotencyKey: string | undefined;
  /** The checkout flow's dependencies; null while the process is starting. */
  checkout: CheckoutDeps | null;
}

export interface Page {
  limit: number;
  cursor?: string;
}

export interface RouteSpec {
  method: 'get' | 'post';
  /** Express path, e.g. /v1/subscriptions/:id */
  path: string;
  operationId: string;
  summary: string;
  tag: string;
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: z.ZodObject;
  response: z.ZodType;
  /** Read-only routes run in a read-only transaction. */
  readOnly: boolean;
  /** Name of the single thing fetched, for its *_NOT_FOUND code when RLS hides it or it does not exist. */
  notFound?: string;
  /** The route's statement, in one transaction as the caller (every route but the external ones). */
  run?(ctx: RouteContext, input: { params: any; query: any; body: any }): Promise<unknown>;
  /** A route that calls a provider between its SQL steps; it throws CheckoutError for refusals. */
  external?(ctx: ExternalRouteContext, input: { params: any; query: any; body: any }): Promise<unknown>;
}

/* Column lists: the API's names for each table's public columns. */
const columns = {
  customer: `id, 'customer' as object, external_id, email::text as email, name, country, locale, currency, metadata, created_at, updated_at`,
  subscription: `id, 'subscription' as object, customer_id as customer, price_id as price, pending_price_id as pending_price, quantity, pending_quantity,
    payment_method_id as payment_method, currency, status, current_period_start, current_period_end, trial_end, cancel_at_period_end,
    canceled_at, cancellation_reason, ended_at, paused_at, started_at, created_at, updated_at`,
  invoice: `id, 'invoice' as object, number, customer_id as customer, subscription_id as subscription, status, billing_reason, currency,
    subtotal_minor, tax_minor, balance_applied_minor, amount_due_minor, amount_paid_minor, period_start, period_end, due_at, paid_at, voided_at,
    attempt_count, next_attempt_at, created_at`,
  payment: `id, 'payment' as object, invoice_id as invoice, customer_id as customer, currency, amount_minor, refunded_minor, status,
    provider, provider_payment_id, attempt, failure_category, failure_code, failure_message, succeeded_at, failed_at, created_at`,
  taxRate: `id, 'tax_rate' as object, name, percentage::float8 as percentage, inclusive, country, fiscal_vat, active, created_at`,
  coupon: `id, 'coupon' as object, name, percent_off::float8 as percent_off, amount_off_minor, currency, duration, duration_in_periods,
    max_redemptions, times_redeemed, redeem_by, applies_to_plan_ids as applies_to_plans, active, created_at`,
  promotionCode: `id, 'promotion_code' as object, coupon_id as coupon, code, active, max_redemptions, times_redeemed, expires_at,
    first_time_only, once_per_customer, minimum_amount_minor, created_at`,
  discount: `id, 'discount' as object, subscription_id as subscription, customer_id as customer, coupon_id as coupon,
    promotion_code_id as promotion_code, periods_remaining, started_at, ended_at`,
  testClock: `'test_clock' as object, status, frozen_at, advancing_to, max_advance_to, advance_started_at, advance_finished_at`,
  refund: `id, 'refund' as object, payment_id as payment, customer_id as customer, subscription_id as subscription, currency, amount_minor,
    reason, rule, destination, status, failure_code, failure_message, succeeded_at, created_at`,
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class InvalidCursorError extends Error {}

export function encodeCursor(createdAt: Date, id: string): string {
  return Buffer.from(JSON.stringify([createdAt.toISOString(), id])).toString('base64url');
}

export function decodeCursor(cursor: string): [string, string] {
  try {
    const value = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(value) && value.length === 2 && typeof value[0] === 'string' && !Number.isNaN(Date.parse(value[0])) && typeof value[1] === 'string' && UUID.test(value[1])) {
      return [value[0], value[1]];
    }
  } catch {
    // fall through
  }
  throw new InvalidCursorError('cursor is not a cursor this API issued');
}

/**
 * A page of `table`, newest first, continuing after the cursor: keyset
 * pagination on (created_at, id), which every listed table indexes per tenant.
 */
async function listPage(client: pg.PoolClient, table: string, cols: string, filters: Array<[column: string, value: unknown]>, page: Page): Promise<unknown> {
  const values: unknown[] = [];
  const where: string[] = [];
  for (const [column, value] of filters) {
    if (value === undefined) continue;
    values.push(value);
    where.push(`${column} = $${values.length}`);
  }
  if (page.cursor) {
    const [createdAt, id] = decodeCursor(page.cursor);
    values.push(createdAt, id);
    where.push(`(created_at, id) < ($${values.length - 1}::timestamptz, $${values.length}::uuid)`);
  }
  values.push(page.limit + 1);
  const { rows } = await client.query(
    `select ${cols} from ${table} ${where.length ? `where ${where.join(' and ')}` : ''} order by created_at desc, id desc limit $${values.length}`,
    values,
  );
  const hasMore = rows.length > page.limit;
  const data = rows.slice(0, page.limit);
  const last = data.at(-1) as { created_at: Date; id: string } | undefined;
  return { object: 'list', data, has_more: hasMore, next_cursor: hasMore && last ? encodeCursor(last.created_at, last.id) : null };
}

/** A preview's previewed_line[] (column `p.lines`) as the JSON array `lines`. */
const PREVIEWED_LINES = `(select coalesce(json_agg(json_build_object('description', l.description, 'quantity', l.quantity,
    'unit_amount_minor', l.unit_amount_minor, 'amount_minor', l.amount_minor, 'period_start', l.period_start, 'period_end', l.period_end) order by l.n), '[]')
  from unnest(p.lines) with ordinality l(description, quantity, unit_amount_minor, amount_minor, period_start, period_end, n)) as lines`;

async function one(client: pg.PoolClient, sql: string, values: unknown[]): Promise<unknown> {
  const { rows } = await client.query(sql, values);
  return rows[0] ?? null;
}

/**
 * Calls a billing function with named arguments, leaving out the ones not
 * given (undefined); `idempotency_key: null` lets the function take the key
 * from the Idempotency-Key header (abonement.idempotency_key).
 */
function callNamed(fn: string, args: Record<string, unknown>): { text: string; values: unknown[] } {
  const given = Object.entries(args).filter(([, v]) => v !== undefined);
  return {
    text: `${fn}(${given.map(([name], i) => `${name} => $${i + 1}`).join(', ')})`,
    values: given.map(([, v]) => (v !== null && typeof v === 'object' ? JSON.stringify(v) : v)),
  };
}

async function callReturning(client: pg.PoolClient, fn: string, args: Record<string, unknown>, cols: string): Promise<unknown> {
  const call = callNamed(fn, args);
  return one(client, `select ${cols} from ${call.text} as t`, call.values);
}

const getSubscription = (client: pg.PoolClient, id: string) => one(client, `select ${columns.subscription} from app_public.subscriptions where id = $1`, [id]);

export const routes: RouteSpec[] = [
  {
    method: 'get',
    path: '/v1/tenant',
    operationId: 'getTenant',
    tag: 'Tenant',
    readOnly: true,
    summary: 'The tenant this API key belongs to',
    query: s.NoQuery,
    response: s.Tenant,
    notFound: 'TENANT',
    run: ({ client }) =>
      one(
        client,
        `select id, 'tenant' as object, name, status, test_mode, default_currency, time_zone, created_at
      from app_public.current_tenant() where id is not null`,
        [],
      ),
  },

  /* Test clocks (test-mode tenants) */
  {
    method: 'get',
    path: '/v1/test_clock',
    operationId: 'getTestClock',
    tag: 'Test clocks',
    readOnly: true,
    summary: "The tenant's test clock: ready or advancing (app_public.test_clock)",
    query: s.NoQuery,
    response: s.TestClock,
    run: ({ client }) => one(client, `select ${columns.testClock} from app_public.test_clock() t`, []),
  },
  {
    method: 'post',
    path: '/v1/test_clock/advance',
    operationId: 'advanceTestClock',
    tag: 'Test clocks',
    readOnly: false,
    summary: 'Advance the test clock, running the work that becomes due on the way in order (app_public.advance_test_clock)',
    body: s.AdvanceTestClockBody,
    response: s.TestClock,
    run: ({ client }, { body }) => callReturning(client, 'app_public.advance_test_clock', { frozen_at: body.frozen_at, idempotency_key: null }, columns.testClock),
  },

  /* Customers */
  {
    method: 'post',
    path: '/v1/customers',
    operationId: 'createCustomer',
    tag: 'Customers',
    readOnly: false,
    summary: 'Create a customer (app_public.create_customer)',
    body: s.CreateCustomerBody,
    response: s.Customer,
    run: ({ client }, { body }) =>
      callReturning(
        client,
        'app_public.create_customer',
        {
          external_id: body.external_id,
          email: body.email,
          idempotency_key: null,
          name: body.name,
          country: body.country,
          locale: body.locale,
          metadata: body.metadata,
        },
        columns.customer,
      ),
  },
  {
    method: 'get',
    path: '/v1/customers',
    operationId: 'listCustomers',
    tag: 'Customers',
    readOnly: true,
    summary: 'List customers, newest first',
    query: s.CustomerListQuery,
    response: s.listOf('Customer', s.Customer),
    run: ({ client }, { query }) =>
      listPage(
        client,
        'app_public.customers',
        columns.customer,
        [
          ['email', query.email],
          ['external_id', query.external_id],
        ],
        query,
      ),
  },
  {
    method: 'get',
    path: '/v1/customers/:id',
    operationId: 'getCustomer',
    tag: 'Customers',
    readOnly: true,
    summary: 'Get a customer',
    params: s.idParams,
    query: s.NoQuery,
    response: s.Customer,
    notFound: 'CUSTOMER',
    run: ({ client }, { params }) => one(client, `select ${columns.customer} from app_public.customers where id = $1`, [params.id]),
  },
  {
    method: 'post',
    path: '/v1/customers/:id/sessions',
    operationId: 'createCustomerSession',
    tag: 'Customers',
    readOnly: false,
    summary: 'Create a self-service session token for a customer (app_public.create_customer_session)',
    params: s.idParams,
    body: s.CreateSessionBody,
    response: s.CustomerSession,
    run: async ({ client, sessionKey }, { params, body }) => {
      const row = (await callReturning(
        client,
        'app_public.create_customer_session',
        { customer_id: params.id, expires_in_seconds: body.expires_in_seconds },
        'id, tenant_id, customer_id, issued_at, expires_at',
      )) as CustomerSessionRow;
      return {
        id: row.id,
        object: 'customer_session',
        customer: row.customer_id,
        token: await signCustomerSession(row, sessionKey),
        issued_at: row.issued_at,
        expires_at: row.expires_at,
      };
    },
  },
  {
    method: 'get',
    path: '/v1/customers/:id/entitlements',
    operationId: 'getCustomerEntitlements',
    tag: 'Customers',
    readOnly: true,
    summary: 'What a customer may use now, for access tokens (app_public.customer_entitlements)',
    params: s.idParams,
    query: s.NoQuery,
    response: s.Entitlements,
    run: async ({ client }, { params }) => {
      // One statement, so the list and the claim (its one definition in SQL, docs/api.md "Entitlements") read the same snapshot.
      const { rows } = await client.query(
        `select e.plan_code, e.plan_id as plan, e.subscription_id as subscription, e.status, e.period_end, c.claim
         from (select app_public.customer_entitlements_claim($1) as claim) c
         left join app_public.customer_entitlements($1) e on true`,
        [params.id],
      );
      return {
        object: 'entitlements',
        customer: params.id,
        data: rows.filter((r) => r.subscription !== null).map(({ claim: _claim, ...entitlement }) => entitlement),
        claim: rows[0].claim,
      };
    },
  },

  /* Plans */
  {
    method: 'get',
    path: '/v1/plans',
    operationId: 'listPurchasablePlans',
    tag: 'Plans',
    readOnly: true,
    summary: 'Plans that can be bought now, with their active prices (app_public.purchasable_plans)',
    query: s.NoQuery,
    response: s.listOf('Plan', s.Plan),
    run: async ({ client }) => {
      const { rows } = await client.query(`
        select p.id, 'plan' as object, p.code, p.name, p.description, p.status, p.sale_starts_at, p.sale_ends_at, p.trial_days,
               p.full_refund_days, p.created_at,
               coalesce((select jsonb_agg(jsonb_build_object('id', pr.id, 'object', 'price', 'currency', pr.currency,
                                                             'interval', pr.interval, 'amount_minor', pr.amount_minor)
                                          order by pr.currency, pr.interval)
                         from app_public.prices pr where pr.tenant_id = p.tenant_id and pr.plan_id = p.id and pr.active), '[]') as prices
        from app_public.purchasable_plans() p`);
      return { object: 'list', data: rows, has_more: false, next_cursor: null };
    },
  },

  /* Taxes */
  {
    method: 'post',
    path: '/v1/tax_rates',
    operationId: 'createTaxRate',
    tag: 'Taxes',
    readOnly: false,
    summary: 'Create a tax rate (app_public.create_tax_rate)',
    body: s.CreateTaxRateBody,
    response: s.TaxRate,
    run: ({ client }, { body }) =>
      callReturning(
        client,
        'app_public.create_tax_rate',
        {
          name: body.name,
          percentage: body.percentage,
          inclusive: body.inclusive ?? false,
          country: body.country ?? null,
          fiscal_vat: body.fiscal_vat ?? null,
          idempotency_key: null,
        },
        columns.taxRate,
      ),
  },
  {
    method: 'get',
    path: '/v1/tax_rates',
    operationId: 'listTaxRates',
    tag: 'Taxes',
    readOnly: true,
    summary: 'List tax rates, newest first',
    query: s.PageQuery,
    response: s.listOf('TaxRate', s.TaxRate),
    run: ({ client }, { query }) => listPage(client, 'app_public.tax_rates', columns.taxRate, [], query),
  },
  {
    method: 'post',
    path: '/v1/plans/:id/tax_rate',
    operationId: 'setPlanTaxRate',
    tag: 'Taxes',
    readOnly: false,
    summary: "Set a plan's tax rate (app_public.set_plan_tax_rate)",
    params: s.idParams,
    body: s.PlanTaxRateBody,
    response: s.PlanTaxRate,
    run: ({ client }, { params, body }) =>
      one(client, `select 'plan_tax_rate' as object, p.id as plan, p.tax_rate_id as tax_rate from app_public.set_plan_tax_rate($1, $2, null) p`, [params.id, body.tax_rate]),
  },

  /* Coupons and promotion codes */
  {
    method: 'post',
    path: '/v1/coupons',
    operationId: 'createCoupon',
    tag: 'Coupons',
    readOnly: false,
    summary: 'Create a coupon (app_public.create_coupon)',
    body: s.CreateCouponBody,
    response: s.Coupon,
    run: ({ client }, { body }) =>
      callReturning(
        client,
        'app_public.create_coupon',
        {
          name: body.name,
          duration: body.duration,
          percent_off: body.percent_off ?? null,
          amount_off_minor: body.amount_off_minor ?? null,
          currency: body.currency ?? null,
          duration_in_periods: body.duration_in_periods ?? null,
          max_redemptions: body.max_redemptions ?? null,
          redeem_by: body.redeem_by ?? null,
          applies_to_plan_ids: body.applies_to_plans ?? null,
          idempotency_key: null,
        },
        columns.coupon,
      ),
  },
  {
    method: 'get',
    path: '/v1/coupons',
    operationId: 'listCoupons',
    tag: 'Coupons',
    readOnly: true,
    summary: 'List coupons, newest first',
    query: s.PageQuery,
    response: s.listOf('Coupon', s.Coupon),
    run: ({ client }, { query }) => listPage(client, 'app_public.coupons', columns.coupon, [], query),
  },
  {
    method: 'post',
    path: '/v1/coupons/:id/promotion_codes',
    operationId: 'createPromotionCode',
    tag: 'Coupons',
    readOnly: false,
    summary: 'Create a promotion code for a coupon (app_public.create_promotion_code)',
    params: s.idParams,
    body: s.CreatePromotionCodeBody,
    response: s.PromotionCode,
    run: ({ client }, { params, body }) =>
      callReturning(
        client,
        'app_public.create_promotion_code',
        {
          coupon_id: params.id,
          code: body.code,
          max_redemptions: body.max_redemptions ?? null,
          expires_at: body.expires_at ?? null,
          first_time_only: body.first_time_only ?? false,
          once_per_customer: body.once_per_customer ?? false,
          minimum_amount_minor: body.minimum_amount_minor ?? null,
          idempotency_key: null,
        },
        columns.promotionCode,
      ),
  },

  /* Subscriptions */
  {
    method: 'post',
    path: '/v1/subscriptions',
    operationId: 'createSubscription',
    tag: 'Subscriptions',
    readOnly: false,
    summary: 'Subscribe a customer to a price (app_public.create_subscription)',
    body: s.CreateSubscriptionBody,
    response: s.Subscription,
    run: ({ client }, { body }) =>
      callReturning(
        client,
        'app_public.create_subscription',
        {
          customer_id: body.customer,
          price_id: body.price,
          payment_method_id: body.payment_method ?? null,
          idempotency_key: null,
          quantity: body.quantity ?? 1,
          promotion_code: body.promotion_code ?? null,
          coupon_id: body.coupon ?? null,
        },
        columns.subscription,
      ),
  },
  {
    method: 'get',
    path: '/v1/subscriptions',
    operationId: 'listSubscriptions',
    tag: 'Subscriptions',
    readOnly: true,
    summary: 'List subscriptions, newest first',
    query: s.SubscriptionListQuery,
    response: s.listOf('Subscription', s.Subscription),
    run: ({ client }, { query }) =>
      listPage(
        client,
        'app_public.subscriptions',
        columns.subscription,
        [
          ['customer_id', query.customer],
          ['status', query.status],
        ],
        query,
      ),
  },
  {
    method: 'get',
    path: '/v1/subscriptions/:id',
    operationId: 'getSubscription',
    tag: 'Subscriptions',
    readOnly: true,
    summary: 'Get a subscription',
    params: s.idParams,
    query: s.NoQuery,
    response: s.Subscription,
    notFound: 'SUBSCRIPTION',
    run: ({ client }, { params }) => getSubscription(client, params.id),
  },
  {
    method: 'post',
    path: '/v1/subscriptions/:id/checkout',
    operationId: 'createCheckoutLink',
    tag: 'Subscriptions',
    readOnly: false,
    summary: 'The payment link for the open invoice (server/checkout.ts); asking again returns the open link',
    params: s.idParams,
    body: s.CheckoutBody,
    response: s.CheckoutLink,
    external: async ({ identity, idempotencyKey, checkout }, { params, body }) => {
      if (!checkout) throw new CheckoutError(503, 'STARTING', 'the server is starting');
      const tenantId = identity.claims.tenant_id;
      if (!tenantId) throw new CheckoutError(403, 'TENANT_REQUIRED', 'an API key or customer session of a tenant is required');
      const link = await createCheckoutLink(checkout, {
        subscriptionId: params.id,
        tenantId,
        customerId: identity.claims.customer_id ?? null,
        returnUrl: body.return_url ?? null,
        provider: body.provider ?? null,
        headerIdempotencyKey: idempotencyKey ?? null,
      });
      return {
        object: 'checkout_link',
        payment: link.paymentId,
        invoice: link.invoiceId,
        provider: link.provider,
        url: link.url,
        expires_at: link.expiresAt?.toISOString() ?? null,
        amount_minor: link.amountMinor.toString(),
        currency: link.currency,
        reused: link.reused,
      };
    },
  },
  {
    method: 'post',
    path: '/v1/subscriptions/:id/cancel',
    operationId: 'cancelSubscription',
    tag: 'Subscriptions',
    readOnly: false,
    summary: 'Cancel now or at the end of the period (app_public.cancel_subscription)',
    params: s.idParams,
    body: s.CancelBody,
    response: s.Subscription,
    run: ({ client }, { params, body }) =>
      callReturning(client, 'app_public.cancel_subscription', { subscription_id: params.id, at_period_end: body.at_period_end ?? false, idempotency_key: null }, columns.subscription),
  },
  {
    method: 'post',
    path: '/v1/subscriptions/:id/pause',
    operationId: 'pauseSubscription',
    tag: 'Subscriptions',
    readOnly: false,
    summary: 'Pause an active subscription (app_public.pause_subscription)',
    params: s.idParams,
    body: s.EmptyBody,
    response: s.Subscription,
    run: ({ client }, { params }) => callReturning(client, 'app_public.pause_subscription', { subscription_id: params.id, idempotency_key: null }, columns.subscription),
  },
  {
    method: 'post',
    path: '/v1/subscriptions/:id/resume',
    operationId: 'resumeSubscription',
    tag: 'Subscriptions',
    readOnly: false,
    summary: 'Resume a paused subscription (app_public.resume_subscription)',
    params: s.idParams,
    body: s.EmptyBody,
    response: s.Subscription,
    run: ({ client }, { params }) => callReturning(client, 'app_public.resume_subscription', { subscription_id: params.id, idempotency_key: null }, columns.subscription),
  },
  {
    method: 'post',
    path: '/v1/subscriptions/:id/change_price',
    operationId: 'changeSubscriptionPrice',
    tag: 'Subscriptions',
    readOnly: false,
    summary: 'Upgrade or downgrade (app_public.change_subscription_price)',
    params: s.idParams,
    body: s.ChangePriceBody,
    response: s.Subscription,
    run: ({ client }, { params, body }) =>
      callReturning(
        client,
        'app_public.change_subscription_price',
        { subscription_id: params.id, new_price_id: body.price, at_period_end: body.at_period_end ?? false, idempotency_key: null },
        columns.subscription,
      ),
  },
  {
    method: 'post',
    path: '/v1/subscriptions/:id/change',
    operationId: 'changeSubscription',
    tag: 'Subscriptions',
    readOnly: false,
    summary: 'Change the price, the seats or both (app_public.change_subscription)',
    params: s.idParams,
    body: s.ChangeSubscriptionBody,
    response: s.Subscription,
    run: ({ client }, { params, body }) =>
      callReturning(
        client,
        'app_public.change_subscription',
        {
          subscription_id: params.id,
          new_price_id: body.price ?? null,
          new_quantity: body.quantity ?? null,
          at_period_end: body.at_period_end ?? false,
          idempotency_key: null,
        },
        columns.subscription,
      ),
  },
  {
    method: 'post',
    path: '/v1/subscriptions/:id/change_preview',
    operationId: 'previewSubscriptionChange',
    tag: 'Subscriptions',
    // The preview runs the change and rolls it back (a subtransaction), so it needs a writable transaction; it changes nothing.
    readOnly: false,
    summary: 'What change (or change_price) with this body would do now, changing nothing (app_public.preview_subscription_change)',
    params: s.idParams,
    body: s.ChangeSubscriptionBody,
    response: s.SubscriptionChangePreview,
    run: ({ client }, { params, body }) =>
      one(
        client,
        `select 'subscription_change_preview' as object, p.subscription_id as subscription, p.price_id as price, p.quantity, p.effective, p.currency,
           p.invoice_subtotal_minor, p.balance_applied_minor, p.amount_due_minor, p.credit_minor, ${PREVIEWED_LINES},
           p.next_invoice_at, p.next_price_id as next_price, p.next_quantity, p.next_amount_minor, p.previewed_at
         from app_public.preview_subscription_change($1, $2, $3, $4) p`,
        [params.id, body.price ?? null, body.at_period_end ?? false, body.quantity ?? null],
      ),
  },
  {
    method: 'get',
    path: '/v1/subscriptions/:id/upcoming_invoice',
    operationId: 'previewUpcomingInvoice',
    tag: 'Subscriptions',
    // As change_preview: the renewal runs and is rolled back.
    readOnly: false,
    summary: 'The next renewal invoice, changing nothing (app_public.preview_upcoming_invoice)',
    params: s.idParams,
    query: s.NoQuery,
    response: s.UpcomingInvoicePreview,
    run: ({ client }, { params }) =>
      one(
        client,
        `select 'upcoming_invoice' as object, p.subscription_id as subscription, p.invoice_id as invoice, p.price_id as price, p.currency,
           p.period_start, p.period_end, p.subtotal_minor, p.balance_applied_minor, p.amount_due_minor, ${PREVIEWED_LINES}, p.previewed_at
         from app_public.preview_upcoming_invoice($1) p`,
        [params.id],
      ),
  },
  {
    method: 'post',
    path: '/v1/subscriptions/:id/discount',
    operationId: 'applyDiscount',
    tag: 'Coupons',
    readOnly: false,
    summary: 'Redeem a promotion code or a coupon on a running subscription (app_public.apply_discount)',
    params: s.idParams,
    body: s.ApplyDiscountBody,
    response: s.Discount,
    run: ({ client }, { params, body }) =>
      callReturning(
        client,
        'app_public.apply_discount',
        { subscription_id: params.id, promotion_code: body.promotion_code ?? null, coupon_id: body.coupon ?? null, idempotency_key: null },
        columns.discount,
      ),
  },
  {
    method: 'post',
    path: '/v1/subscriptions/:id/discount/remove',
    operationId: 'removeDiscount',
    tag: 'Coupons',
    readOnly: false,
    summary: 'End the running discount now (app_public.remove_discount)',
    params: s.idParams,
    body: s.EmptyBody,
    response: s.Discount,
    run: ({ client }, { params }) => callReturning(client, 'app_public.remove_discount', { subscription_id: params.id, idempotency_key: null }, columns.discount),
  },
  {
    method: 'get',
    path: '/v1/subscriptions/:id/refund_quote',
    operationId: 'quoteSubscriptionRefund',
    tag: 'Refunds',
    readOnly: true,
    summary: 'What a refund would return now, and by which rule (app_public.refund_quote)',
    params: s.idParams,
    query: s.NoQuery,
    response: s.RefundQuote,
    run: ({ client }, { params }) =>
      one(
        client,
        `select 'refund_quote' as object, amount_minor, currency, rule, payment_id as payment,
      refundable_minor, period_start, period_end, quoted_at from app_public.refund_quote($1)`,
        [params.id],
      ),
  },
  {
    method: 'post',
    path: '/v1/subscriptions/:id/refund',
    operationId: 'refundSubscription',
    tag: 'Refunds',
    readOnly: false,
    summary: 'Refund the current period by the refund rule and end the subscription (app_public.refund_subscription)',
    params: s.idParams,
    body: s.RefundSubscriptionBody,
    response: s.Refund,
    run: ({ client }, { params, body }) =>
      callReturning(client, 'app_public.refund_subscription', { subscription_id: params.id, idempotency_key: null, reason: body.reason, destination: body.destination }, columns.refund),
  },

  /* Refunds */
  {
    method: 'post',
    path: '/v1/refunds',
    operationId: 'createRefund',
    tag: 'Refunds',
    readOnly: false,
    summary: 'Refund part or all of a payment (app_public.refund_payment)',
    body: s.RefundPaymentBody,
    response: s.Refund,
    run: ({ client }, { body }) =>
      callReturning(
        client,
        'app_public.refund_payment',
        { payment_id: body.payment, amount_minor: body.amount_minor, idempotency_key: null, reason: body.reason, destination: body.destination },
        columns.refund,
      ),
  },
  {
    method: 'get',
    path: '/v1/refunds',
    operationId: 'listRefunds',
    tag: 'Refunds',
    readOnly: true,
    summary: 'List refunds, newest first',
    query: s.RefundListQuery,
    response: s.listOf('Refund', s.Refund),
    run: ({ client }, { query }) =>
      listPage(
        client,
        'app_public.refunds',
        columns.refund,
        [
          ['customer_id', query.customer],
          ['payment_id', query.payment],
        ],
        query,
      ),
  },
  {
    method: 'get',
    path: '/v1/refunds/:id',
    operationId: 'getRefund',
    tag: 'Refunds',
    readOnly: true,
    summary: 'Get a refund',
    params: s.idParams,
    query: s.NoQuery,
    response: s.Refund,
    notFound: 'REFUND',
    run: ({ client }, { params }) => one(client, `select ${columns.refund} from app_public.refunds where id = $1`, [params.id]),
  },

  /* Invoices and payments */
  {
    method: 'get',
    path: '/v1/invoices',
    operationId: 'listInvoices',
    tag: 'Invoices',
    readOnly: true,
    summary: 'List invoices, newest first',
    query: s.InvoiceListQuery,
    response: s.listOf('Invoice', s.Invoice),
    run: ({ client }, { query }) =>
      listPage(
        client,
        'app_public.invoices',
        columns.invoice,
        [
          ['customer_id', query.customer],
          ['subscription_id', query.subscription],
          ['status', query.status],
        ],
        query,
      ),
  },
  {
    method: 'get',
    path: '/v1/invoices/:id',
    operationId: 'getInvoice',
    tag: 'Invoices',
    readOnly: true,
    summary: 'Get an invoice with its lines',
    params: s.idParams,
    query: s.NoQuery,
    response: s.InvoiceWithLines,
    notFound: 'INVOICE',
    run: ({ client }, { params }) =>
      one(
        client,
        `select ${columns.invoice},
      coalesce((select jsonb_agg(jsonb_build_object('id', l.id, 'description', l.description, 'quantity', l.quantity,
        'unit_amount_minor', l.unit_amount_minor, 'amount_minor', l.amount_minor, 'price', l.price_id, 'discount', l.discount_id, 'tax_rate', l.tax_rate_id, 'tax_included', l.tax_included,
        'period_start', l.period_start, 'period_end', l.period_end) order by l.created_at, app_hidden.invoice_line_rank(l), l.id)
        from app_public.invoice_lines l where l.tenant_id = i.tenant_id and l.invoice_id = i.id), '[]') as lines
      from app_public.invoices i where i.id = $1`,
        [params.id],
      ),
  },
  {
    method: 'get',
    path: '/v1/payments',
    operationId: 'listPayments',
    tag: 'Payments',
    readOnly: true,
    summary: 'List payments, newest first',
    query: s.PaymentListQuery,
    response: s.listOf('Payment', s.Payment),
    run: ({ client }, { query }) =>
      listPage(
        client,
        'app_public.payments',
        columns.payment,
        [
          ['customer_id', query.customer],
          ['invoice_id', query.invoice],
          ['status', query.status],
        ],
        query,
      ),
  },
  {
    method: 'get',
    path: '/v1/payments/:id',
    operationId: 'getPayment',
    tag: 'Payments',
    readOnly: true,
    summary: 'Get a payment',
    params: s.idParams,
    query: s.NoQuery,
    response: s.Payment,
    notFound: 'PAYMENT',
    run: ({ client }, { params }) => one(client, `select ${columns.payment} from app_public.payments where id = $1`, [params.id]),
  },
];
