/**
 * Helpers for the API tests: tenants with API keys (issued the way the
 * command line issues them), a GraphQL client (graphql-request) and a REST
 * client (fetch) bound to a credential, and row counts to prove that a
 * refused request wrote nothing.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { ClientError, GraphQLClient } from 'graphql-request';
import type { RunningAbonement } from '../../server/index.ts';
import type { TestDatabase } from '../support/database.ts';

export const TEST_JWT_SECRET = 'test-jwt-secret-test-jwt-secret-0123456789';

export interface TenantWithKey {
  tenantId: string;
  apiKeyId: string;
  token: string;
  prefix: string;
}

export async function createTenantWithKey(db: TestDatabase, options: { testMode?: boolean; name?: string } = {}): Promise<TenantWithKey> {
  const invoicePrefix = `A${randomBytes(4).toString('hex').toUpperCase()}`;
  return db.asOwner(async (c) => {
    const { rows } = await c.query(`select id from app_private.create_tenant($1, $2, 'USD', 'UTC', $3)`, [
      options.name ?? `Tenant ${invoicePrefix}`,
      invoicePrefix,
      options.testMode ?? true,
    ]);
    const tenantId = rows[0].id as string;
    const key = await c.query(`select * from app_private.issue_api_key($1, 'test key', 'test')`, [tenantId]);
    return { tenantId, apiKeyId: key.rows[0].id, token: key.rows[0].token, prefix: key.rows[0].prefix };
  });
}

export function gqlClient(server: RunningAbonement, token?: string, headers: Record<string, string> = {}): GraphQLClient {
  return new GraphQLClient(server.urls.graphql, {
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
  });
}

export interface GraphqlFailure {
  status: number;
  codes: string[];
  messages: string[];
}

/** Runs a request expected to fail and returns its HTTP status and error codes. */
export async function gqlFailure(promise: Promise<unknown>): Promise<GraphqlFailure> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof ClientError) {
      const errors = error.response.errors ?? [];
      return {
        status: error.response.status,
        codes: errors.map((e) => String((e.extensions as { code?: string } | undefined)?.code)),
        messages: errors.map((e) => e.message),
      };
    }
    throw error;
  }
  throw new Error('expected the GraphQL request to fail, but it succeeded');
}

export interface RestResponse<T = any> {
  status: number;
  headers: Headers;
  body: T;
}

export async function rest<T = any>(
  server: RunningAbonement,
  method: string,
  path: string,
  options: { token?: string; body?: unknown; raw?: string; headers?: Record<string, string> } = {},
): Promise<RestResponse<T>> {
  const headers: Record<string, string> = { ...(options.headers ?? {}) };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (options.body !== undefined || options.raw !== undefined) headers['content-type'] ??= 'application/json';
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers,
    body: options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body)),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, headers: res.headers, body: body as T };
}

export function idempotencyKey(): string {
  return `test-${randomUUID()}`;
}

/** Row counts of the tables a write could touch, to prove a refused request wrote nothing. */
export async function rowCounts(db: TestDatabase): Promise<Record<string, number>> {
  const tables = [
    'app_public.tenants',
    'app_public.plans',
    'app_public.prices',
    'app_public.customers',
    'app_public.payment_methods',
    'app_public.subscriptions',
    'app_public.invoices',
    'app_public.payments',
    'app_public.refunds',
    'app_public.events',
    'app_private.api_keys',
    'app_private.customer_sessions',
    'app_private.idempotency_keys',
  ];
  return db.asOwner(async (c) => {
    const counts: Record<string, number> = {};
    for (const table of tables) counts[table] = Number((await c.query(`select count(*) as n from ${table}`)).rows[0].n);
    return counts;
  });
}

export interface Catalogue {
  pro: { planId: string; monthUsd: string; yearUsd: string; monthEur: string };
  max: { planId: string; monthUsd: string };
  trial: { planId: string; monthUsd: string };
}

/** Plans and prices created the way a tenant creates them: GraphQL createPlan, createPrice, setPlanStatus. */
export async function createCatalogue(server: RunningAbonement, token: string): Promise<Catalogue> {
  const client = gqlClient(server, token);
  const plan = async (name: string, code: string, trialDays = 0) => {
    const data = await client.request<{ createPlan: { result: { rowId: string } } }>(`mutation ($input: CreatePlanInput!) { createPlan(input: $input) { result { rowId } } }`, {
      input: { name, code, trialDays, idempotencyKey: idempotencyKey() },
    });
    return data.createPlan.result.rowId;
  };
  const price = async (planId: string, currency: string, interval: string, amountMinor: number) => {
    const data = await client.request<{ createPrice: { result: { rowId: string } } }>(`mutation ($input: CreatePriceInput!) { createPrice(input: $input) { result { rowId } } }`, {
      input: { planId, currency, interval, amountMinor: String(amountMinor), idempotencyKey: idempotencyKey() },
    });
    return data.createPrice.result.rowId;
  };
  const activate = (planId: string) => client.request(`mutation ($id: UUID!) { setPlanStatus(input: { planId: $id, status: "active" }) { result { status } } }`, { id: planId });
  const proId = await plan('Pro', 'pro');
  const pro = {
    planId: proId,
    monthUsd: await price(proId, 'USD', 'month', 1000),
    yearUsd: await price(proId, 'USD', 'year', 10000),
    monthEur: await price(proId, 'EUR', 'month', 900),
  };
  const maxId = await plan('Max', 'max');
  const max = { planId: maxId, monthUsd: await price(maxId, 'USD', 'month', 2000) };
  const trialId = await plan('Trial', 'trial', 14);
  const trial = { planId: trialId, monthUsd: await price(trialId, 'USD', 'month', 500) };
  for (const id of [proId, maxId, trialId]) await activate(id);
  return { pro, max, trial };
}

/** A card on file, as the payments layer would store it (provider token included, which no API shows). */
export async function attachCard(db: TestDatabase, tenantId: string, customerId: string): Promise<string> {
  const { rows } = await db.asOwner((c) =>
    c.query(
      `insert into app_public.payment_methods (tenant_id, customer_id, provider, provider_token, brand, last4, exp_month, exp_year, is_default)
       values ($1, $2, 'sandbox', $3, 'visa', '4242', 12, 2030, true) returning id`,
      [tenantId, customerId, `tok_secret_${randomBytes(8).toString('hex')}`],
    ),
  );
  return rows[0].id;
}

/** Pays a subscription's open invoice through the worker's functions, as the payments layer will. */
export async function payOpenInvoice(db: TestDatabase, subscriptionId: string): Promise<{ invoiceId: string; paymentId: string }> {
  return db.asWorker(async (c) => {
    const { rows } = await c.query(`select id from app_public.invoices where subscription_id = $1 and status = 'open' order by created_at desc limit 1`, [subscriptionId]);
    const invoiceId = rows[0]?.id as string | undefined;
    if (!invoiceId) throw new Error(`subscription ${subscriptionId} has no open invoice`);
    const payment = await c.query('select id from app_private.begin_payment($1)', [invoiceId]);
    await c.query(`select app_private.record_payment_result($1, 'succeeded', $2)`, [payment.rows[0].id, `pp_${randomUUID()}`]);
    return { invoiceId, paymentId: payment.rows[0].id as string };
  });
}
