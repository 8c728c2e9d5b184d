/**
 * The YooKassa adapter against a local server speaking API v3: the provider
 * contract, then YooKassa-specific rules (decimal amounts, notifications
 * confirmed by re-fetching, 202 answers, the cancellation-reason table).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { YooKassaAdapter, yookassaFailureTable } from '../../providers/yookassa.ts';
import { closedPortUrl, testLogger } from './sandbox-stack.ts';
import { providerContract, type TestBehaviour } from './contract.ts';
import { startFakeYooKassaServer, type FakeYooKassaServer, type YooBehaviour } from './fake-yookassa-server.ts';

const behaviours: Record<TestBehaviour, YooBehaviour> = {
  success: 'succeed',
  soft_decline: 'insufficient_funds',
  hard_decline: 'card_expired',
  requires_action: 'needs_confirmation',
  decline_after_save: 'decline_after_save',
  processing_error: 'issuer_unavailable',
};

let fake: FakeYooKassaServer;
before(async () => {
  fake = await startFakeYooKassaServer();
});
after(async () => {
  await fake?.close();
});

function adapter(options: { timeoutMs?: number; apiBase?: string } = {}) {
  return new YooKassaAdapter({
    shopId: fake.shopId,
    secretKey: fake.secretKey,
    apiBase: options.apiBase ?? fake.apiBase,
    timeoutMs: options.timeoutMs ?? 10_000,
    logger: testLogger,
  });
}

providerContract('yookassa', async () => ({
  provider: adapter(),
  impatientProvider: adapter({ timeoutMs: 300 }),
  unreachableProvider: adapter({ apiBase: `${await closedPortUrl()}/v3` }),
  currency: 'RUB',
  async payCheckout(checkout, behaviour) {
    fake.payCheckout(checkout.providerCheckoutId, behaviour === 'success' ? 'succeed' : 'decline_after_save');
  },
  async savedToken(behaviour) {
    return fake.savedMethods[behaviours[behaviour]];
  },
  async takeWebhooks() {
    return fake.takeNotifications();
  },
  async forgedWebhooks() {
    // A notification claiming success for a payment YooKassa canceled, and one for a payment that never existed.
    const declined = await adapter().chargeSaved({
      idempotencyKey: `yoo:forgery:${randomUUID()}`,
      amount: { amountMinor: 100n, currency: 'RUB' },
      paymentMethodToken: fake.savedMethods.insufficient_funds,
      description: 'forgery victim',
      customerReference: 'c',
    });
    assert.ok(declined.ok && declined.value.providerPaymentId);
    fake.takeNotifications();
    return [
      {
        name: 'success claimed for a canceled payment',
        request: fake.notification('payment.succeeded', { id: declined.value.providerPaymentId, status: 'succeeded' }),
        reason: 'not_confirmed',
      },
      { name: 'unknown payment', request: fake.notification('payment.succeeded', { id: randomUUID(), status: 'succeeded' }), reason: 'not_confirmed' },
      { name: 'not JSON', request: { rawBody: 'payment.succeeded', headers: {} }, reason: 'malformed' },
      { name: 'not a notification', request: { rawBody: JSON.stringify({ event: 'payment.succeeded' }), headers: {} }, reason: 'malformed' },
    ];
  },
  chargeCount: async (key) => fake.chargeCount(key),
  fault: (kind) => fake.fault(kind),
  expect: { cardNumbers: [] },
  close: async () => undefined,
}));

describe('yookassa adapter specifics', () => {
  test('the cancellation-reason table follows the issue: soft, hard and gateway reasons', () => {
    assert.equal(yookassaFailureTable.insufficient_funds, 'soft_decline');
    assert.equal(yookassaFailureTable.general_decline, 'soft_decline');
    assert.equal(yookassaFailureTable.card_expired, 'hard_decline');
    assert.equal(yookassaFailureTable.fraud_suspected, 'hard_decline');
    assert.equal(yookassaFailureTable.permission_revoked, 'hard_decline');
    assert.equal(yookassaFailureTable.internal_timeout, 'gateway_error');
  });

  test('amounts travel as exact decimal strings', async () => {
    const result = await adapter().chargeSaved({
      idempotencyKey: `yoo:decimal:${randomUUID()}`,
      amount: { amountMinor: 9_007_199_254_740_993n, currency: 'RUB' },
      paymentMethodToken: fake.savedMethods.succeed,
      description: 'a large amount that a double cannot hold',
      customerReference: 'c',
    });
    assert.ok(result.ok);
    assert.equal(result.value.amount.amountMinor, 9_007_199_254_740_993n);
  });

  test('a notification is confirmed by fetching the payment; if YooKassa cannot be asked, it is retryable', async () => {
    fake.takeNotifications();
    const { result } = {
      result: await adapter().chargeSaved({
        idempotencyKey: `yoo:confirm:${randomUUID()}`,
        amount: { amountMinor: 100n, currency: 'RUB' },
        paymentMethodToken: fake.savedMethods.succeed,
        description: 'x',
        customerReference: 'c',
      }),
    };
    assert.ok(result.ok);
    const [delivery] = fake.takeNotifications();
    assert.ok(delivery);
    const verified = await adapter().verifyWebhook(delivery);
    assert.ok(verified.ok);
    assert.equal(verified.events[0]!.eventId, `payment.succeeded:${result.value.providerPaymentId}`);
    const unreachable = await adapter({ apiBase: `${await closedPortUrl()}/v3` }).verifyWebhook(delivery);
    assert.ok(!unreachable.ok);
    assert.deepEqual([unreachable.rejection.reason, unreachable.rejection.retryable], ['provider_unavailable', true]);
  });

  test('the event is built from the fetched object, not from what was posted', async () => {
    const paid = await adapter().chargeSaved({
      idempotencyKey: `yoo:fetched:${randomUUID()}`,
      amount: { amountMinor: 250n, currency: 'RUB' },
      paymentMethodToken: fake.savedMethods.succeed,
      description: 'x',
      customerReference: 'c',
    });
    assert.ok(paid.ok);
    fake.takeNotifications();
    const lie = fake.notification('payment.succeeded', { id: paid.value.providerPaymentId, status: 'succeeded', amount: { value: '1000000.00', currency: 'RUB' } });
    const verified = await adapter().verifyWebhook(lie);
    assert.ok(verified.ok && verified.events[0]!.kind === 'payment');
    assert.equal(verified.events[0]!.kind === 'payment' && verified.events[0]!.payment.amount.amountMinor, 250n);
  });

  test('HTTP 202 (still processing) is an unknown outcome, never a failure', async () => {
    fake.fault('accepted_202');
    const result = await adapter().chargeSaved({
      idempotencyKey: `yoo:202:${randomUUID()}`,
      amount: { amountMinor: 100n, currency: 'RUB' },
      paymentMethodToken: fake.savedMethods.succeed,
      description: 'x',
      customerReference: 'c',
    });
    assert.ok(!result.ok);
    assert.equal(result.failure.class, 'unknown');
  });

  test('a checkout declined on the page is a failed payment in the event, with the reason classified', async () => {
    const key = `yoo:page-decline:${randomUUID()}`;
    const created = await adapter().createCheckout({
      idempotencyKey: key,
      amount: { amountMinor: 100n, currency: 'RUB' },
      description: 'x',
      customer: { reference: 'c' },
      successUrl: 'http://127.0.0.1:9/s',
      cancelUrl: 'http://127.0.0.1:9/c',
    });
    assert.ok(created.ok);
    const pending = await adapter().retrieve({ providerPaymentId: created.value.providerCheckoutId });
    assert.ok(pending.ok && pending.value?.status === 'requires_action' && pending.value.failure?.code === 'awaiting_customer');
    fake.payCheckout(created.value.providerCheckoutId, 'insufficient_funds');
    const verified = await adapter().verifyWebhook(fake.takeNotifications()[0]!);
    assert.ok(verified.ok && verified.events[0]!.kind === 'payment');
    const payment = verified.events[0]!.kind === 'payment' ? verified.events[0]!.payment : null;
    assert.deepEqual([payment?.status, payment?.failure?.class, payment?.idempotencyKey], ['failed', 'soft_decline', key]);
  });
});
