/**
 * Shared pieces of the payments tests: the real API process (with its
 * in-process worker and the sandbox gateway mounted at /sandbox) against a
 * test database, billing fixtures, signed sandbox webhooks, log capture, and
 * waiting on database state (never sleeping).
 */
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { parseConfig } from '../../lib/config.ts';
import { redactedPaths, type Logger } from '../../lib/logger.ts';
import { sandboxCredentials } from '../../lib/sandbox-settings.ts';
import { signWebhook } from '../../lib/webhook-signature.ts';
import type { RunningAbonement } from '../../server/index.ts';
import { createCheckoutLink, type CheckoutLink } from '../../server/checkout.ts';
import { createCustomer, createPlan, createPrice, createTenant, key, setClock, type Row } from '../../sql-tests/support/billing.ts';
import type { TestDatabase } from '../support/database.ts';
import { startTestServer, waitFor } from '../support/server.ts';

export const SANDBOX_SECRET = 'payments-test-sandbox-secret-0123456789abcdef';

/** The sandbox's webhook secret as the server derives it from SANDBOX_SECRET (providers/registry.ts). */
export function sandboxWebhookSecret(): string {
  return sandboxCredentials(parseConfig({ SANDBOX_SECRET })).webhookSecret;
}

export interface CapturedLogs {
  logger: Logger;
  lines: Array<Record<string, unknown>>;
}

/** A pino logger whose JSON lines are kept in memory (warnings and above), with the production redaction. */
export function captureLogs(level: 'warn' | 'info' = 'warn'): CapturedLogs {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n')) if (line.trim()) lines.push(JSON.parse(line));
      callback();
    },
  });
  return { logger: pino({ level, redact: { paths: redactedPaths, censor: '[redacted]' } }, stream), lines };
}

export async function startPaymentsServer(db: TestDatabase, env: Record<string, string> = {}, logger?: Logger): Promise<RunningAbonement> {
  return startTestServer(db, { SANDBOX_GATEWAY: 'on', SANDBOX_SECRET, WORKER_CONCURRENCY: '4', ...env }, logger);
}

export interface Shop {
  tenantId: string;
  planId: string;
  priceId: string;
}

/** A test-mode tenant (the sandbox serves test-mode tenants) with one monthly price. */
export async function createShop(db: TestDatabase, options: { currency?: string; amount?: number; dunning?: number[]; defaultProvider?: string } = {}): Promise<Shop> {
  const currency = options.currency ?? 'EUR';
  const tenantId = await createTenant(db, { testMode: true, currency, ...(options.dunning ? { dunning: options.dunning } : {}) });
  if (options.defaultProvider) {
    await db.asOwner((c) => c.query('update app_public.tenants set default_payment_provider = $2 where id = $1', [tenantId, options.defaultProvider]));
  }
  const planId = await createPlan(db, tenantId, { name: 'Pro' });
  const priceId = await createPrice(db, tenantId, planId, { currency, amount: options.amount ?? 1990, interval: 'month' });
  return { tenantId, planId, priceId };
}

/** A new customer subscribes without a saved card: incomplete, first invoice open, waiting for a checkout. */
export async function subscribeWithoutCard(db: TestDatabase, shop: Shop, customerId?: string): Promise<Row> {
  const customer = customerId ?? (await createCustomer(db, shop.tenantId));
  const { rows } = await db.asTenant(shop.tenantId, (c) => c.query('select * from app_public.create_subscription($1, $2, null, $3)', [customer, shop.priceId, key()]));
  return rows[0];
}

export function checkoutFor(server: RunningAbonement, tenantId: string, subscriptionId: string): Promise<CheckoutLink> {
  return createCheckoutLink(server.checkout, { tenantId, subscriptionId });
}

export async function row(db: TestDatabase, sql: string, params: unknown[] = []): Promise<Row> {
  const { rows } = await db.asOwner((c) => c.query(sql, params));
  return rows[0];
}

export async function rows(db: TestDatabase, sql: string, params: unknown[] = []): Promise<Row[]> {
  const result = await db.asOwner((c) => c.query(sql, params));
  return result.rows;
}

/** Posts a sandbox event signed with `secret` (or with whatever `header` says) to the server's intake. */
export async function postSandboxEvent(
  server: RunningAbonement,
  event: Record<string, unknown>,
  options: { secret?: string; header?: string | null; timestamp?: number } = {},
): Promise<Response> {
  const body = JSON.stringify(event);
  const secret = options.secret ?? sandboxWebhookSecret();
  const header = options.header === undefined ? signWebhook(body, [secret], options.timestamp) : options.header;
  return fetch(`${server.url}/webhooks/sandbox`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(header === null ? {} : { 'sandbox-signature': header }) },
    body,
  });
}

export function sandboxEvent(type: string, object: Record<string, unknown>): Record<string, unknown> {
  return { id: `evt_sbx_${randomUUID().replace(/-/g, '')}`, type, created: Math.floor(Date.now() / 1000), data: { object } };
}

/** Waits until every inbox row (or those matching `where`) has been processed. */
export async function inboxSettled(db: TestDatabase, where = 'true', params: unknown[] = []): Promise<Row[]> {
  return waitFor(`inbox rows processed (${where})`, async () => {
    const found = await rows(db, `select * from app_private.provider_events where ${where} order by received_at`, params);
    return found.length > 0 && found.every((r) => r.processed_at !== null) ? found : null;
  });
}

/** Waits until `sql` returns a row whose `column` equals `value`. */
export async function until(db: TestDatabase, what: string, sql: string, params: unknown[], predicate: (row: Row) => boolean, timeoutMs = 20_000): Promise<Row> {
  return waitFor(
    what,
    async () => {
      const found = await row(db, sql, params);
      return found && predicate(found) ? found : null;
    },
    timeoutMs,
  );
}

/** Queues a task now through Graphile Worker (as the cron would) and lets the in-process worker run it. */
export async function runTask(db: TestDatabase, task: string, payload: Record<string, unknown> = {}): Promise<void> {
  await db.asWorker((c) => c.query('select graphile_worker.add_job($1, $2::json)', [task, JSON.stringify(payload)]));
}

/** Resolves when no job of `task` is due or running any more (jobs scheduled for later do not count; a failure throws). */
export async function jobsDone(db: TestDatabase, task: string, timeoutMs = 20_000): Promise<void> {
  await waitFor(
    `${task} jobs to finish`,
    async () => {
      const { rows: left } = await db.asWorker((c) =>
        c.query(`select id, attempts, last_error from graphile_worker.jobs where task_identifier = $1 and (run_at <= now() or locked_at is not null)`, [task]),
      );
      const failed = left.find((j) => j.last_error);
      if (failed) throw new Error(`${task} job failed: ${failed.last_error}`);
      return left.length === 0;
    },
    timeoutMs,
  );
}

export async function outboxTypes(db: TestDatabase, subjectIds: string[]): Promise<string[]> {
  const found = await rows(db, 'select type from app_public.events where subject_id = any($1) order by occurred_at, type', [subjectIds]);
  return found.map((r) => r.type);
}

// ---------------------------------------------------------------- the browser

/** Pays a sandbox checkout the way its card form does (plain cards need no browser). */
export async function payOnSandboxPage(url: string, number: string): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    body: new URLSearchParams({ number, expiry: '12/34', cvc: '123', name: 'Ada Lovelace' }),
    redirect: 'manual',
  });
}

/** A sandbox payment method row for a customer: one of the ledger's well-known saved tokens (sandbox/cards.ts). */
export async function saveSandboxToken(db: TestDatabase, tenantId: string, customerId: string, token: string): Promise<string> {
  const {
    rows: [pm],
  } = await db.asOwner((c) =>
    c.query(
      `insert into app_public.payment_methods (tenant_id, customer_id, provider, provider_token, brand, last4, exp_month, exp_year, is_default)
       values ($1, $2, 'sandbox', $3, 'visa', '4242', 12, 2099, true) returning id`,
      [tenantId, customerId, token],
    ),
  );
  return pm.id;
}

/** Subscribes with a saved method: the first invoice is charged off-session by the worker at once. */
export async function subscribeWithCard(db: TestDatabase, shop: Shop, token: string): Promise<{ subscriptionId: string; customerId: string; paymentMethodId: string }> {
  const customerId = await createCustomer(db, shop.tenantId);
  const paymentMethodId = await saveSandboxToken(db, shop.tenantId, customerId, token);
  const {
    rows: [sub],
  } = await db.asTenant(shop.tenantId, (c) => c.query('select * from app_public.create_subscription($1, $2, $3, $4)', [customerId, shop.priceId, paymentMethodId, key()]));
  return { subscriptionId: sub.id, customerId, paymentMethodId };
}

/**
 * Moves the clock a minute past the subscription's period end, runs the renewal
 * cron, and returns the renewal's payment once it has succeeded. The caller
 * puts the clock back (setClock(db, null)) when done.
 */
export async function renewalAfterPeriodEnd(db: TestDatabase, subscriptionId: string, periodEnd: string | Date, what = 'the renewal charge'): Promise<Row> {
  await setClock(db, new Date(new Date(periodEnd).getTime() + 60_000).toISOString());
  await runTask(db, 'subscriptions__renew_due');
  return until(
    db,
    what,
    `select p.* from app_public.payments p join app_public.invoices i on i.id = p.invoice_id
    where i.subscription_id = $1 and i.billing_reason = 'subscription_cycle'`,
    [subscriptionId],
    (p) => p.status === 'succeeded',
  );
}
