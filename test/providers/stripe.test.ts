/**
 * The Stripe adapter against a local server speaking Stripe's API: the
 * provider contract, then Stripe-specific mapping and webhook rules.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { StripeAdapter, stripeFailureTable } from '../../providers/stripe.ts';
import { ProviderError } from '../../providers/types.ts';
import { freePort } from '../support/cluster.ts';
import { providerContract, type TestBehaviour } from './contract.ts';
import { startFakeStripeServer, type FakeStripeServer } from './fake-stripe-server.ts';
import { testLogger } from './sandbox-stack.ts';

const tokens: Record<TestBehaviour, string> = {
  success: 'pm_card_visa',
  soft_decline: 'pm_card_chargeDeclinedInsufficientFunds',
  hard_decline: 'pm_card_chargeDeclinedStolenCard',
  requires_action: 'pm_card_authenticationRequired',
  decline_after_save: 'pm_card_chargeCustomerFail',
  processing_error: 'pm_card_chargeDeclinedProcessingError',
};

let fake: FakeStripeServer;
before(async () => {
  fake = await startFakeStripeServer();
});
after(async () => {
  await fake?.close();
});

function adapter(options: { timeoutMs?: number; port?: number; webhookSecrets?: string[]; secretKey?: string } = {}) {
  return new StripeAdapter({
    secretKey: options.secretKey ?? fake.secretKey,
    webhookSecrets: options.webhookSecrets ?? [fake.webhookSecret],
    api: { ...fake.api, ...(options.port ? { port: options.port } : {}) },
    timeoutMs: options.timeoutMs ?? 10_000,
    logger: testLogger,
  });
}

providerContract('stripe', async () => ({
  provider: adapter(),
  impatientProvider: adapter({ timeoutMs: 300 }),
  unreachableProvider: adapter({ port: await freePort() }),
  currency: 'EUR',
  async payCheckout(checkout, behaviour) {
    const paid = await fake.payCheckout(checkout.providerCheckoutId, behaviour === 'success' ? '4242424242424242' : '4000000000000341');
    assert.ok(paid, 'the checkout was paid');
  },
  async savedToken(behaviour) {
    return tokens[behaviour];
  },
  async takeWebhooks() {
    return fake.takeWebhooks();
  },
  async forgedWebhooks() {
    const event = {
      id: 'evt_forged',
      object: 'event',
      type: 'payment_intent.succeeded',
      created: Math.floor(Date.now() / 1000),
      data: { object: { id: 'pi_x', object: 'payment_intent' } },
    };
    const genuine = fake.signEvent(event);
    return [
      { name: 'no signature', request: { rawBody: genuine.rawBody, headers: {} }, reason: 'missing_signature' },
      { name: 'tampered body', request: { rawBody: genuine.rawBody.toString().replace('pi_x', 'pi_y'), headers: genuine.headers }, reason: 'bad_signature' },
      { name: 'foreign secret', request: fake.signEvent(event, { secret: 'whsec_someone_else' }), reason: 'bad_signature' },
      { name: 'replayed an hour later', request: fake.signEvent(event, { timestamp: Math.floor(Date.now() / 1000) - 3600 }), reason: 'stale_timestamp' },
      // Stripe's own check only looks backwards; a timestamp from the future is refused like the sandbox refuses it.
      { name: 'dated an hour ahead', request: fake.signEvent(event, { timestamp: Math.floor(Date.now() / 1000) + 3600 }), reason: 'stale_timestamp' },
      { name: 'garbage header', request: { rawBody: genuine.rawBody, headers: { 'stripe-signature': 'nonsense' } }, reason: 'bad_signature' },
    ];
  },
  chargeCount: async (key) => fake.chargeCount(key),
  fault: (kind) => fake.fault(kind),
  expect: { cardNumbers: ['4242424242424242', '4000000000000341'] },
  close: async () => undefined,
}));

describe('stripe adapter specifics', () => {
  test('the mapping table sorts Stripe decline codes into our vocabulary', () => {
    assert.equal(stripeFailureTable.insufficient_funds, 'soft_decline');
    assert.equal(stripeFailureTable.generic_decline, 'soft_decline');
    assert.equal(stripeFailureTable.stolen_card, 'hard_decline');
    assert.equal(stripeFailureTable.lost_card, 'hard_decline');
    assert.equal(stripeFailureTable.expired_card, 'hard_decline');
    assert.equal(stripeFailureTable.processing_error, 'gateway_error');
    assert.equal(stripeFailureTable.authentication_required, 'requires_action');
  });

  test("lost and expired cards are hard declines with Stripe's own code kept", async () => {
    for (const [token, code] of [
      ['pm_card_chargeDeclinedLostCard', 'lost_card'],
      ['pm_card_chargeDeclinedExpiredCard', 'expired_card'],
    ] as const) {
      const result = await adapter().chargeSaved({
        idempotencyKey: `stripe:${code}:${randomUUID()}`,
        amount: { amountMinor: 500n, currency: 'USD' },
        paymentMethodToken: token,
        description: 'renewal',
        customerReference: 'c',
      });
      assert.ok(result.ok);
      assert.equal(result.value.status, 'failed');
      assert.deepEqual([result.value.failure?.class, result.value.failure?.code], ['hard_decline', code]);
      assert.ok(result.value.providerPaymentId?.startsWith('pi_'), 'the failed PaymentIntent is referenced');
    }
  });

  test('a decline replayed with the same key is the same answer, not a new attempt', async () => {
    const key = `stripe:replay-decline:${randomUUID()}`;
    const input = { idempotencyKey: key, amount: { amountMinor: 500n, currency: 'USD' }, paymentMethodToken: tokens.soft_decline, description: 'r', customerReference: 'c' };
    const first = await adapter().chargeSaved(input);
    const before = fake.requests.length;
    const second = await adapter().chargeSaved(input);
    assert.ok(first.ok && second.ok);
    assert.equal(second.value.providerPaymentId, first.value.providerPaymentId);
    assert.equal(fake.requests.length, before + 1);
  });

  test('off-session requests carry our key as Idempotency-Key and confirm off-session', async () => {
    const key = `stripe:headers:${randomUUID()}`;
    await adapter().chargeSaved({ idempotencyKey: key, amount: { amountMinor: 500n, currency: 'USD' }, paymentMethodToken: tokens.success, description: 'r', customerReference: 'c' });
    const sent = fake.requests.filter((r) => r.idempotencyKey === key);
    assert.deepEqual(
      sent.map((r) => `${r.method} ${r.path}`),
      ['POST /v1/payment_intents'],
    );
  });

  test('an unknown saved method is a hard decline (ask the customer for a new card), not a crash', async () => {
    const result = await adapter().chargeSaved({
      idempotencyKey: `stripe:missing:${randomUUID()}`,
      amount: { amountMinor: 500n, currency: 'USD' },
      paymentMethodToken: 'cus_gone:pm_gone',
      description: 'r',
      customerReference: 'c',
    });
    assert.ok(result.ok);
    assert.equal(result.value.failure?.class, 'hard_decline');
    assert.equal(result.value.providerPaymentId, null);
  });

  test('a bad API key is a thrown authentication error, never a payment outcome', async () => {
    await assert.rejects(
      adapter({ secretKey: 'sk_test_wrong' }).retrieve({ providerPaymentId: 'pi_x' }),
      (error: unknown) => error instanceof ProviderError && error.code === 'authentication',
    );
  });

  test('a live key makes the adapter a livemode one (never offered to test tenants)', () => {
    assert.equal(adapter({ secretKey: 'sk_live_x' }).capabilities.livemode, true);
    assert.equal(adapter().capabilities.livemode, false);
  });

  test('a failed attempt on a hosted checkout is ignored (the customer may still pay); completion is a payment', async () => {
    const key = `stripe:checkout-fail:${randomUUID()}`;
    const created = await adapter().createCheckout({
      idempotencyKey: key,
      amount: { amountMinor: 900n, currency: 'EUR' },
      description: 'Plan',
      customer: { reference: 'c' },
      successUrl: 'http://127.0.0.1:9/s',
      cancelUrl: 'http://127.0.0.1:9/c',
    });
    assert.ok(created.ok);
    fake.takeWebhooks();
    assert.equal(await fake.payCheckout(created.value.providerCheckoutId, '4000000000009995'), null);
    assert.ok(await fake.payCheckout(created.value.providerCheckoutId, '4242424242424242'));
    const kinds = [];
    for (const delivery of fake.takeWebhooks()) {
      const verified = await adapter().verifyWebhook(delivery);
      assert.ok(verified.ok);
      for (const event of verified.events) kinds.push(`${event.providerType}:${event.kind}${event.kind === 'payment' ? `:${event.payment.status}` : ''}`);
    }
    assert.deepEqual(kinds, ['payment_intent.payment_failed:ignored', 'payment_intent.succeeded:payment:succeeded', 'checkout.session.completed:payment:succeeded']);
  });

  test('webhook secrets rotate: an event signed with the previous secret still verifies', async () => {
    const event = { id: 'evt_rot', object: 'event', type: 'customer.created', created: Math.floor(Date.now() / 1000), data: { object: { id: 'cus_1' } } };
    const rotated = adapter({ webhookSecrets: ['whsec_new', fake.webhookSecret] });
    const verdict = await rotated.verifyWebhook(fake.signEvent(event));
    assert.ok(verdict.ok);
    assert.equal(verdict.events[0]!.kind, 'ignored');
  });

  test('a signed event whose object lacks its timestamps is malformed (a 400 at intake), not a crash', async () => {
    const now = Math.floor(Date.now() / 1000);
    const intent = { id: 'pi_nocreated', object: 'payment_intent', status: 'succeeded', amount: 900, currency: 'eur', metadata: {} };
    for (const event of [
      { id: 'evt_nocreated', object: 'event', type: 'payment_intent.succeeded', created: now, data: { object: intent } },
      { id: 'evt_badcreated', object: 'event', type: 'payment_intent.succeeded', created: now, data: { object: { ...intent, created: 'yesterday' } } },
      { id: 'evt_noeventcreated', object: 'event', type: 'payment_intent.succeeded', data: { object: { ...intent, created: now } } },
    ]) {
      const verdict = await adapter().verifyWebhook(fake.signEvent(event));
      assert.ok(!verdict.ok, event.id);
      assert.equal(verdict.rejection.reason, 'malformed', event.id);
      assert.equal(verdict.rejection.retryable, false);
    }
  });
});
