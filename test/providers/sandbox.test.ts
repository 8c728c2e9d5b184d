/**
 * The sandbox gateway and its adapter: the provider contract, then what only
 * the sandbox does (test cards on the hosted page, its ledger's guarantees,
 * webhook switches).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { sandboxTestTokens, type SandboxBehaviour } from '../../sandbox/cards.ts';
import { signWebhook } from '../../lib/webhook-signature.ts';
import type { Checkout, ProviderEvent } from '../../providers/types.ts';
import { createTestDatabase, sqlState, type TestDatabase } from '../support/database.ts';
import { providerContract, type TestBehaviour } from './contract.ts';
import { closedPortUrl, startSandboxStack, type SandboxStack } from './sandbox-stack.ts';

const behaviourOf: Record<TestBehaviour, SandboxBehaviour> = {
  success: 'succeed',
  soft_decline: 'decline_insufficient_funds',
  hard_decline: 'decline_stolen',
  requires_action: 'challenge_3ds',
  decline_after_save: 'decline_after_attach',
  processing_error: 'processing_error',
};

/** Submits the hosted card form the way a browser without JavaScript does. */
async function submitCard(url: string, number: string, expiry = '12/34', cvc = '123'): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ number, expiry, cvc, name: 'Ada Lovelace' }).toString(),
    redirect: 'manual',
  });
}

let db: TestDatabase;
let stack: SandboxStack;
before(async () => {
  db = await createTestDatabase();
  stack = await startSandboxStack(db.pools.worker);
});
after(async () => {
  await stack?.close();
  await db?.drop();
});

providerContract('sandbox', async () => ({
  provider: stack.adapter(),
  impatientProvider: stack.adapter({ timeoutMs: 300 }),
  unreachableProvider: stack.adapter({ baseUrl: `${await closedPortUrl()}/sandbox` }),
  currency: 'EUR',
  async payCheckout(checkout: Checkout, behaviour) {
    const response = await submitCard(checkout.url, behaviour === 'success' ? '4242424242424242' : '4000000000000341');
    assert.equal(response.status, 303, `the card page redirects (got ${response.status})`);
  },
  async savedToken(behaviour) {
    return sandboxTestTokens[behaviourOf[behaviour]];
  },
  async takeWebhooks() {
    await stack.gateway.webhooks.idle();
    return stack.receiver.received.splice(0);
  },
  async forgedWebhooks() {
    const body = JSON.stringify({ id: 'evt_sbx_forged', type: 'payment.succeeded', created: Math.floor(Date.now() / 1000), data: { object: { id: 'pay_x' } } });
    const header = (payload: string, secret = stack.webhookSecret, t?: number) => ({ 'sandbox-signature': signWebhook(payload, [secret], t) });
    return [
      { name: 'no signature', request: { rawBody: body, headers: {} }, reason: 'missing_signature' },
      { name: 'tampered body', request: { rawBody: body.replace('pay_x', 'pay_y'), headers: header(body) }, reason: 'bad_signature' },
      { name: 'foreign secret', request: { rawBody: body, headers: header(body, 'whsec_someone_else') }, reason: 'bad_signature' },
      { name: 'replayed an hour later', request: { rawBody: body, headers: header(body, stack.webhookSecret, Math.floor(Date.now() / 1000) - 3600) }, reason: 'stale_timestamp' },
      { name: 'garbage header', request: { rawBody: body, headers: { 'sandbox-signature': 'v1=zz' } }, reason: 'bad_signature' },
    ];
  },
  chargeCount: (key) => stack.gateway.ledger.chargeCount(key),
  fault: (kind) => stack.gateway.faults.next(kind),
  expect: { cardNumbers: ['4242424242424242', '4000000000000341'] },
  close: async () => undefined,
}));

describe('sandbox gateway', () => {
  async function newCheckout(label: string) {
    const key = `sbx:${label}:${randomUUID()}`;
    const result = await stack.adapter().createCheckout({
      idempotencyKey: key,
      amount: { amountMinor: 2_500n, currency: 'EUR' },
      description: 'Pro plan',
      customer: { reference: 'cust-1' },
      successUrl: 'http://127.0.0.1:9/ok',
      cancelUrl: 'http://127.0.0.1:9/cancel',
    });
    assert.ok(result.ok);
    return { key, checkout: result.value };
  }

  async function events(): Promise<ProviderEvent[]> {
    await stack.gateway.webhooks.idle();
    const adapter = stack.adapter();
    const out: ProviderEvent[] = [];
    for (const request of stack.receiver.received.splice(0)) {
      const verified = await adapter.verifyWebhook(request);
      assert.ok(verified.ok, 'sandbox deliveries verify');
      out.push(...verified.events);
    }
    return out;
  }

  test('the hosted page is plain HTML with no external asset, and lists the test cards', async () => {
    const { checkout } = await newCheckout('page');
    const response = await fetch(checkout.url);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /text\/html/);
    assert.match(response.headers.get('content-security-policy') ?? '', /default-src 'none'/);
    const html = await response.text();
    assert.match(html, /25\.00 EUR/);
    assert.ok(html.includes('4000 0000 0000 3220'));
    assert.ok(!/<script|<link|src="http|href="http/i.test(html), 'no script, stylesheet link or external asset');
  });

  test('declines on the page re-render the form; the checkout stays open and a good card then pays once', async () => {
    const { key, checkout } = await newCheckout('declines');
    for (const [number, message] of [
      ['4000000000000002', /declined/],
      ['4000000000009995', /insufficient funds/],
      ['4000000000009979', /declined/],
      ['4000000000000119', /error occurred while processing/],
      ['4111111111111111', /test card/],
    ] as const) {
      const response = await submitCard(checkout.url, number);
      assert.ok(response.status === 402 || response.status === 422, `${number}: ${response.status}`);
      assert.match(await response.text(), message);
    }
    assert.equal((await submitCard(checkout.url, '4242424242424242', '01/20')).status, 422, 'expired card');
    const paid = await submitCard(checkout.url, '4242 4242 4242 4242');
    assert.equal(paid.status, 303);
    assert.equal(paid.headers.get('location'), 'http://127.0.0.1:9/ok');
    assert.equal(await stack.gateway.ledger.chargeCount(key), 1);
    const ledger = await stack.gateway.ledger.payments({ idempotencyKey: key });
    assert.deepEqual(
      ledger.map((p) => p.status),
      ['failed', 'failed', 'failed', 'failed', 'succeeded'],
    );
    const again = await submitCard(checkout.url, '4242424242424242');
    assert.equal(again.status, 200, 'a paid checkout shows "already paid"');
    assert.equal(await stack.gateway.ledger.chargeCount(key), 1, 'and does not charge again');
    const completed = (await events()).filter((e) => e.kind === 'payment' && e.payment.idempotencyKey === key);
    assert.equal(completed.length, 1, 'only the completed checkout is announced, not the declined attempts');
  });

  test('4000000000003220 goes through a 3-D Secure challenge; failing it lets the customer retry', async () => {
    const { key, checkout } = await newCheckout('3ds');
    const challenge = await submitCard(checkout.url, '4000000000003220');
    assert.equal(challenge.status, 303);
    const challengeUrl = new URL(challenge.headers.get('location')!, checkout.url).toString();
    assert.match(await (await fetch(challengeUrl)).text(), /3-D Secure/);
    const failed = await fetch(challengeUrl, { method: 'POST', body: new URLSearchParams({ outcome: 'fail' }), redirect: 'manual' });
    assert.equal(failed.status, 402);
    assert.equal(await stack.gateway.ledger.chargeCount(key), 0);
    const second = await submitCard(checkout.url, '4000000000003220');
    const approved = await fetch(new URL(second.headers.get('location')!, checkout.url), { method: 'POST', body: new URLSearchParams({ outcome: 'approve' }), redirect: 'manual' });
    assert.equal(approved.status, 303);
    assert.equal(approved.headers.get('location'), 'http://127.0.0.1:9/ok');
    assert.equal(await stack.gateway.ledger.chargeCount(key), 1);
  });

  test('4000000000090003 on the page charges, then the gateway times out: no redirect, no webhook, retrieve finds it', async () => {
    const { key, checkout } = await newCheckout('timeout-page');
    const response = await submitCard(checkout.url, '4000000000090003');
    assert.equal(response.status, 504);
    assert.equal(await stack.gateway.ledger.chargeCount(key), 1);
    assert.equal((await events()).filter((e) => e.kind === 'payment' && e.payment.idempotencyKey === key).length, 0);
    const found = await stack.adapter().retrieve({ idempotencyKey: key });
    assert.ok(found.ok && found.value?.status === 'succeeded');
  });

  test('the timeout token charges then never answers the API: unknown, then settled by retrieve', async () => {
    const key = `sbx:timeout-api:${randomUUID()}`;
    const result = await stack.adapter({ timeoutMs: 300 }).chargeSaved({
      idempotencyKey: key,
      amount: { amountMinor: 700n, currency: 'EUR' },
      paymentMethodToken: sandboxTestTokens.charge_then_timeout,
      description: 'renewal',
      customerReference: 'cust-1',
    });
    assert.ok(!result.ok);
    assert.equal(result.failure.class, 'unknown');
    const found = await stack.adapter().retrieve({ idempotencyKey: key });
    assert.ok(found.ok && found.value?.status === 'succeeded');
    assert.equal(await stack.gateway.ledger.chargeCount(key), 1);
  });

  test('an off-session payment that requires action can be completed by the customer on the action page', async () => {
    const key = `sbx:action:${randomUUID()}`;
    const result = await stack.adapter().chargeSaved({
      idempotencyKey: key,
      amount: { amountMinor: 700n, currency: 'EUR' },
      paymentMethodToken: sandboxTestTokens.challenge_3ds,
      description: 'renewal',
      customerReference: 'cust-1',
    });
    assert.ok(result.ok && result.value.status === 'requires_action' && result.value.actionUrl);
    const page = await fetch(result.value.actionUrl, { method: 'POST', body: new URLSearchParams({ outcome: 'approve' }) });
    assert.equal(page.status, 200);
    assert.equal(await stack.gateway.ledger.chargeCount(key), 1);
    const statuses = (await events()).flatMap((e) => (e.kind === 'payment' && e.payment.idempotencyKey === key ? [e.payment.status] : []));
    assert.deepEqual(statuses.sort(), ['requires_action', 'succeeded'], 'deliveries run concurrently: order is not promised');
  });

  test('the ledger itself refuses a second charge for one key, and a refund above the charge', async () => {
    const key = `sbx:ledger:${randomUUID()}`;
    const insert = (id: string, status: string) =>
      db.asWorker((c) =>
        c.query(
          `insert into sandbox_gateway.payments (id, idempotency_key, amount_minor, currency, status, payment_method_token, off_session)
           values ($1, $2, 100, 'EUR', $3, 'pm_sbx_visa', true)`,
          [id, key, status],
        ),
      );
    await insert(`pay_${randomUUID().replace(/-/g, '')}`, 'succeeded');
    assert.equal(await sqlState(insert(`pay_${randomUUID().replace(/-/g, '')}`, 'succeeded')), '23505');
    assert.equal(await sqlState(insert(`pay_${randomUUID().replace(/-/g, '')}`, 'processing')), '23505');
    assert.equal(await sqlState(db.asWorker((c) => c.query(`update sandbox_gateway.payments set refunded_minor = 101 where idempotency_key = $1`, [key]))), '23514');
  });

  test('the ledger stores no card number: only token, brand, last4, expiry', async () => {
    const { rows } = await db.asOwner((c) =>
      c.query<{ column_name: string }>(`select column_name from information_schema.columns where table_schema = 'sandbox_gateway' and table_name = 'payment_methods'`),
    );
    assert.deepEqual(rows.map((r) => r.column_name).sort(), ['behaviour', 'brand', 'created_at', 'exp_month', 'exp_year', 'last4', 'token']);
    const dump = await db.asOwner((c) =>
      c.query(`select (select json_agg(p) from sandbox_gateway.payments p)::text || (select json_agg(e) from sandbox_gateway.events e)::text as all`),
    );
    assert.ok(!String(dump.rows[0].all).includes('4242424242424242'));
  });

  test('request roles cannot reach the sandbox ledger; the operator may read it', async () => {
    assert.equal(await sqlState(db.asTenant(randomUUID(), (c) => c.query('select * from sandbox_gateway.payments'))), '42501');
    await db.asOperator((c) => c.query('select count(*) from sandbox_gateway.payments'));
    assert.equal(await sqlState(db.asOperator((c) => c.query(`delete from sandbox_gateway.payments`))), '42501');
  });

  test('webhook switches: duplicates, held then reversed, and retries after a receiver error', async () => {
    const adapter = stack.adapter();
    await events();
    stack.gateway.webhooks.configure({ duplicates: 1 });
    stack.gateway.webhooks.pause();
    const keys: string[] = [];
    for (let i = 0; i < 3; i++) {
      const key = `sbx:switch:${i}:${randomUUID()}`;
      keys.push(key);
      const result = await adapter.chargeSaved({
        idempotencyKey: key,
        amount: { amountMinor: 100n, currency: 'EUR' },
        paymentMethodToken: 'pm_sbx_visa',
        description: 'r',
        customerReference: 'c',
      });
      assert.ok(result.ok);
    }
    assert.equal(stack.gateway.webhooks.heldCount, 6);
    await stack.gateway.webhooks.idle();
    assert.equal(stack.receiver.received.length, 0, 'held deliveries are not sent');
    stack.gateway.webhooks.resume({ reverse: true });
    const arrived = await events();
    stack.gateway.webhooks.configure({ duplicates: 0 });
    const order = arrived.map((e) => (e.kind === 'payment' ? e.payment.idempotencyKey : null));
    assert.deepEqual(order, [keys[2], keys[2], keys[1], keys[1], keys[0], keys[0]]);
    assert.equal(arrived[0]!.eventId, arrived[1]!.eventId, 'a duplicate carries the same event id');

    stack.receiver.answer.status = 500;
    const key = `sbx:retry:${randomUUID()}`;
    const retried = stack.gateway.webhooks.log.length;
    await adapter.chargeSaved({ idempotencyKey: key, amount: { amountMinor: 100n, currency: 'EUR' }, paymentMethodToken: 'pm_sbx_visa', description: 'r', customerReference: 'c' });
    await stack.gateway.webhooks.idle();
    stack.receiver.answer.status = 200;
    const attempts = stack.gateway.webhooks.log.slice(retried).filter((d) => d.type === 'payment.succeeded');
    assert.deepEqual(
      attempts.map((d) => d.attempt),
      [1, 2, 3],
      'delivered, then retried on each configured delay',
    );
    stack.receiver.received.splice(0);
  });

  test('API authentication: a wrong key is refused', async () => {
    const response = await fetch(`${stack.baseUrl}/api/v1/payments/pay_x`, { headers: { authorization: 'Bearer nope' } });
    assert.equal(response.status, 401);
  });
});
