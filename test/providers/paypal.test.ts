/**
 * The PayPal adapter against a local server speaking PayPal's REST subset
 * (fake-paypal-server.ts): the provider contract, then PayPal's own rules —
 * webhooks verified by PayPal's endpoint and captured at intake, the OAuth
 * token cached and renewed, request-id replays checked against the request,
 * merchant-initiated charges of the vaulted source.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { PAYPAL_LIVE_API, PayPalAdapter, paypalFailureTable } from '../../providers/paypal.ts';
import type { FetchLike } from '../../providers/http.ts';
import { closedPortUrl, testLogger } from './sandbox-stack.ts';
import { providerContract, type TestBehaviour } from './contract.ts';
import { startFakePayPalServer, type FakePayPalServer, type PayPalBehaviour } from './fake-paypal-server.ts';

const behaviours: Record<TestBehaviour, PayPalBehaviour> = {
  success: 'succeed',
  soft_decline: 'instrument_declined',
  hard_decline: 'account_closed',
  requires_action: 'payer_action_required',
  decline_after_save: 'decline_after_save',
  processing_error: 'capture_failed',
};

let fake: FakePayPalServer;
before(async () => {
  fake = await startFakePayPalServer();
});
after(async () => {
  await fake?.close();
});

function adapter(options: { timeoutMs?: number; apiBase?: string; fetch?: FetchLike; webhookId?: string } = {}) {
  return new PayPalAdapter({
    clientId: fake.clientId,
    clientSecret: fake.clientSecret,
    webhookId: options.webhookId ?? fake.webhookId,
    apiBase: options.apiBase ?? fake.apiBase,
    timeoutMs: options.timeoutMs ?? 10_000,
    logger: testLogger,
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
}

const paidEvent = (orderId: string) => ({
  id: 'WH-FORGED-1',
  event_type: 'CHECKOUT.ORDER.APPROVED',
  create_time: new Date().toISOString(),
  resource: { id: orderId, status: 'APPROVED' },
});

providerContract('paypal', async () => ({
  provider: adapter(),
  impatientProvider: adapter({ timeoutMs: 300 }),
  unreachableProvider: adapter({ apiBase: await closedPortUrl() }),
  currency: 'EUR',
  async payCheckout(checkout, behaviour) {
    fake.approve(checkout.providerCheckoutId, behaviour === 'success' ? 'succeed' : 'decline_after_save');
  },
  async savedToken(behaviour) {
    return fake.savedTokens[behaviours[behaviour]];
  },
  async takeWebhooks() {
    return fake.takeWebhooks();
  },
  async forgedWebhooks() {
    const genuine = fake.signedDelivery(paidEvent('ORDER-THAT-DOES-NOT-MATTER'));
    const tampered = { rawBody: genuine.rawBody.toString().replace('ORDER-THAT-DOES-NOT-MATTER', 'ORDER-OF-SOMEONE-ELSE'), headers: genuine.headers };
    const { 'paypal-transmission-sig': _sig, ...unsigned } = genuine.headers;
    return [
      { name: 'tampered body', request: tampered, reason: 'bad_signature' },
      { name: 'signed for another webhook', request: fake.signedDelivery(paidEvent('O-1'), { webhookId: 'WH-SOMEONE-ELSE' }), reason: 'bad_signature' },
      { name: 'no signature', request: { rawBody: genuine.rawBody, headers: unsigned }, reason: 'missing_signature' },
      {
        name: 'an old delivery replayed',
        request: fake.signedDelivery(paidEvent('O-2'), { transmissionTime: new Date(Date.now() - 3600_000).toISOString() }),
        reason: 'stale_timestamp',
      },
      { name: 'not JSON', request: { rawBody: 'CHECKOUT.ORDER.APPROVED', headers: genuine.headers }, reason: 'malformed' },
    ];
  },
  chargeCount: async (key) => fake.chargeCount(key),
  fault: (kind) => fake.fault(kind),
  expect: { cardNumbers: [] },
  close: async () => undefined,
}));

describe('paypal adapter specifics', () => {
  test('the issue table sorts PayPal answers into our vocabulary', () => {
    assert.equal(paypalFailureTable.INSTRUMENT_DECLINED, 'soft_decline');
    assert.equal(paypalFailureTable.PAYER_ACTION_REQUIRED, 'requires_action');
    assert.equal(paypalFailureTable.PAYER_ACCOUNT_LOCKED_OR_CLOSED, 'hard_decline');
    assert.equal(paypalFailureTable.INVALID_RESOURCE_ID, 'hard_decline');
    assert.equal(paypalFailureTable.CAPTURE_FAILED, 'gateway_error');
  });

  test('the checkout asks PayPal to vault the source on success; renewals are merchant-initiated charges of the vault id', async () => {
    const sent: Array<{ url: string; headers: Record<string, string>; body: Record<string, unknown> }> = [];
    const spy: FetchLike = async (url, init) => {
      if (typeof init?.body === 'string' && init.body.startsWith('{')) {
        sent.push({ url: String(url), headers: init.headers as Record<string, string>, body: JSON.parse(init.body) });
      }
      return fetch(url, init);
    };
    const paypal = adapter({ fetch: spy });
    const checkout = await paypal.createCheckout({
      idempotencyKey: 'k-vault-checkout',
      amount: { amountMinor: 1990n, currency: 'EUR' },
      description: 'Cinema, monthly',
      customer: { reference: 'cust-1', email: 'ada@example.com' },
      successUrl: 'https://shop.example.com/ok',
      cancelUrl: 'https://shop.example.com/cancel',
    });
    assert.ok(checkout.ok);
    const order = sent.find((s) => s.url.endsWith('/v2/checkout/orders'))!;
    assert.equal(order.headers['paypal-request-id'], 'k-vault-checkout');
    assert.deepEqual((order.body.payment_source as { paypal: { attributes: unknown } }).paypal.attributes, {
      vault: { store_in_vault: 'ON_SUCCESS', usage_type: 'MERCHANT', customer_type: 'CONSUMER' },
    });
    assert.deepEqual((order.body.purchase_units as Array<{ amount: unknown; custom_id: string }>)[0]!.amount, { currency_code: 'EUR', value: '19.90' });

    sent.length = 0;
    const renewal = await paypal.chargeSaved({
      idempotencyKey: 'k-vault-renewal',
      amount: { amountMinor: 1990n, currency: 'EUR' },
      paymentMethodToken: fake.savedTokens.succeed,
      description: 'Cinema',
      customerReference: 'cust-1',
    });
    assert.ok(renewal.ok && renewal.value.status === 'succeeded');
    const source = sent[0]!.body.payment_source as { card: { vault_id: string; stored_credential: Record<string, string> } };
    assert.equal(`card:${source.card.vault_id}`, fake.savedTokens.succeed);
    assert.equal(source.card.stored_credential.payment_initiator, 'MERCHANT');
    assert.equal(sent[0]!.headers['paypal-request-id'], 'k-vault-renewal');
  });

  test('an approved order is captured at intake, once, however often PayPal delivers the approval', async () => {
    const paypal = adapter();
    const created = await paypal.createCheckout({
      idempotencyKey: 'k-capture-once',
      amount: { amountMinor: 500n, currency: 'EUR' },
      description: 'x',
      customer: { reference: 'c' },
      successUrl: 'https://s.example.com/',
      cancelUrl: 'https://s.example.com/c',
    });
    assert.ok(created.ok);
    fake.takeWebhooks();
    fake.approve(created.value.providerCheckoutId, 'succeed');
    const [approval] = fake.takeWebhooks();
    assert.ok(approval);
    const verdicts = [await paypal.verifyWebhook(approval), await paypal.verifyWebhook(approval), await paypal.verifyWebhook(approval)];
    for (const verdict of verdicts) {
      assert.ok(verdict.ok);
      const event = verdict.events[0]!;
      assert.equal(event.kind, 'payment');
      assert.equal(event.kind === 'payment' && event.payment.status, 'succeeded');
      assert.equal(event.kind === 'payment' && event.payment.providerPaymentId, created.value.providerCheckoutId);
    }
    assert.equal(fake.chargeCount('k-capture-once'), 1);
  });

  test('a forged approval is refused by PayPal before anything is captured', async () => {
    const paypal = adapter({ webhookId: 'WH-NOT-OURS' });
    const created = await adapter().createCheckout({
      idempotencyKey: 'k-forged-approval',
      amount: { amountMinor: 700n, currency: 'EUR' },
      description: 'x',
      customer: { reference: 'c' },
      successUrl: 'https://s.example.com/',
      cancelUrl: 'https://s.example.com/c',
    });
    assert.ok(created.ok);
    fake.takeWebhooks();
    fake.approve(created.value.providerCheckoutId, 'succeed');
    const [approval] = fake.takeWebhooks();
    const verdict = await paypal.verifyWebhook(approval!);
    assert.equal(!verdict.ok && verdict.rejection.reason, 'bad_signature');
    assert.equal(fake.chargeCount('k-forged-approval'), 0);
  });

  test('PayPal unreachable for the signature check is retryable, never accepted', async () => {
    const paypal = adapter();
    const delivery = fake.signedDelivery(paidEvent('O-3'));
    fake.fault('http_500');
    const verdict = await paypal.verifyWebhook(delivery);
    assert.deepEqual(!verdict.ok && [verdict.rejection.reason, verdict.rejection.retryable], ['provider_unavailable', true]);
  });

  test('the OAuth token is fetched once and reused; a revoked token is replaced once, transparently', async () => {
    const paypal = adapter();
    const before = fake.tokenRequests();
    for (let i = 0; i < 3; i++) assert.ok((await paypal.retrieve({ providerPaymentId: 'NO-SUCH-ORDER' })).ok);
    assert.equal(fake.tokenRequests(), before + 1);
    fake.expireTokens();
    const after = await paypal.retrieve({ providerPaymentId: 'NO-SUCH-ORDER' });
    assert.deepEqual(after, { ok: true, value: null });
    assert.equal(fake.tokenRequests(), before + 2);
  });

  test('wrong client credentials are a thrown authentication error, never a payment outcome', async () => {
    const paypal = new PayPalAdapter({ clientId: 'nobody', clientSecret: 'wrong', webhookId: fake.webhookId, apiBase: fake.apiBase, logger: testLogger });
    await assert.rejects(paypal.retrieve({ providerPaymentId: 'X' }), (error: unknown) => (error as { code?: string }).code === 'authentication');
  });

  test("only PayPal's live endpoint makes a livemode adapter", () => {
    assert.equal(adapter().capabilities.livemode, false);
    assert.equal(new PayPalAdapter({ clientId: 'a', clientSecret: 'b', webhookId: 'w', apiBase: PAYPAL_LIVE_API, logger: testLogger }).capabilities.livemode, true);
  });
});
