/**
 * The provider contract: what every adapter must do, run against each one
 * with a harness that plays the provider's side (the sandbox gateway, a fake
 * Stripe, a fake YooKassa). Adding a provider means writing its adapter and
 * a harness, then calling `providerContract()` from its test file; this list
 * of tests is the checklist (docs/providers.md).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import {
  ProviderError,
  type Checkout,
  type PaymentProvider,
  type PaymentResult,
  type ProviderCall,
  type ProviderEvent,
  type WebhookRejectionReason,
  type WebhookRequest,
} from '../../providers/types.ts';

/** Test behaviours every harness can produce, each in its provider's own way (test cards, test tokens). */
export type TestBehaviour = 'success' | 'soft_decline' | 'hard_decline' | 'requires_action' | 'decline_after_save' | 'processing_error';

export interface ContractHarness {
  provider: PaymentProvider;
  /** The same adapter with a short timeout, for the "no answer" test. */
  impatientProvider: PaymentProvider;
  /** The same adapter pointed at an address where nothing listens. */
  unreachableProvider: PaymentProvider;
  currency: string;
  /** The customer pays the hosted checkout with a card of this behaviour (hosted page, or the fake's control API). */
  payCheckout(checkout: Checkout, behaviour: 'success' | 'decline_after_save'): Promise<void>;
  /** A saved-method token that behaves this way off-session, when the provider has test tokens; else null. */
  savedToken(behaviour: TestBehaviour): Promise<string | null>;
  /** Webhook deliveries the provider has sent since the last call (waits for deliveries in flight). */
  takeWebhooks(): Promise<WebhookRequest[]>;
  /** Deliveries that look like the provider's but must be rejected, with the reason the adapter must give. */
  forgedWebhooks(): Promise<Array<{ name: string; request: WebhookRequest; reason: WebhookRejectionReason }>>;
  /** Real charges (succeeded) under our idempotency key, counted on the provider's side. */
  chargeCount(idempotencyKey: string): Promise<number>;
  /** The next API request fails: a 5xx before processing, or processed with no answer ever. */
  fault(kind: 'http_500' | 'hang'): void;
  /** Provider-specific expectations. */
  expect: {
    /** Card numbers that were typed in a browser (never to appear in any result). */
    cardNumbers: readonly string[];
  };
  close(): Promise<void>;
}

function ok<T>(call: ProviderCall<T>, what: string): T {
  if (!call.ok) assert.fail(`${what}: expected an answer, got ${call.failure.class} (${call.failure.code}): ${call.failure.message}`);
  return call.value;
}

function json(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
}

export function providerContract(name: string, setup: () => Promise<ContractHarness>): void {
  describe(`${name}: provider contract`, () => {
    let h: ContractHarness;
    const seen: unknown[] = [];
    before(async () => {
      h = await setup();
    });
    after(async () => {
      // No result of any call may carry a card number (PCI: tokens, brand, last4, expiry only).
      const all = json(seen);
      for (const number of h?.expect.cardNumbers ?? []) assert.ok(!all.includes(number), `a result contains the card number ${number}`);
      await h?.close();
    });

    const newKey = (label: string) => `contract:${name}:${label}:${randomUUID()}`;
    const amount = () => ({ amountMinor: 12_345n, currency: h.currency });
    const record = <T>(value: T): T => {
      seen.push(value);
      return value;
    };

    async function verifiedEvents(): Promise<ProviderEvent[]> {
      const events: ProviderEvent[] = [];
      for (const request of await h.takeWebhooks()) {
        const verified = await h.provider.verifyWebhook(request);
        if (!verified.ok) assert.fail(`an authentic webhook was rejected: ${verified.rejection.reason}: ${verified.rejection.message}`);
        events.push(...record(verified.events));
      }
      return events;
    }

    async function checkout(label: string) {
      const key = newKey(label);
      const created = ok(
        record(
          await h.provider.createCheckout({
            idempotencyKey: key,
            amount: amount(),
            description: 'Contract plan, monthly',
            customer: { reference: `cust-${label}`, email: 'ada@example.com', country: 'DE' },
            successUrl: 'http://127.0.0.1:9/return/success',
            cancelUrl: 'http://127.0.0.1:9/return/cancel',
          }),
        ),
        'createCheckout',
      );
      return { key, checkout: created };
    }

    /** Pays a checkout and returns the first payment as retrieve() knows it (with the saved method). */
    async function firstPayment(label: string, behaviour: 'success' | 'decline_after_save' = 'success') {
      const { key, checkout: created } = await checkout(label);
      await h.payCheckout(created, behaviour);
      const events = await verifiedEvents();
      const paid = events.find((e): e is Extract<ProviderEvent, { kind: 'payment' }> => e.kind === 'payment' && e.payment.idempotencyKey === key && e.payment.status === 'succeeded');
      assert.ok(paid, `a verified succeeded payment event for the checkout (got ${events.map((e) => e.providerType).join(', ') || 'none'})`);
      assert.ok(paid.payment.providerPaymentId);
      const retrieved = ok(record(await h.provider.retrieve({ providerPaymentId: paid.payment.providerPaymentId })), 'retrieve');
      assert.ok(retrieved, 'retrieve finds the paid payment');
      return { key, checkout: created, event: paid, payment: retrieved };
    }

    async function tokenFor(behaviour: TestBehaviour): Promise<string> {
      const token = await h.savedToken(behaviour);
      if (token) return token;
      assert.equal(behaviour, 'success', `the ${name} harness must provide a saved token for ${behaviour}`);
      return (await firstPayment('token')).payment.paymentMethod!.token;
    }

    async function charge(token: string, key = newKey('charge'), provider = h.provider) {
      const result = await provider.chargeSaved({
        idempotencyKey: key,
        amount: amount(),
        paymentMethodToken: token,
        description: 'Contract plan, renewal',
        customerReference: 'cust-renewal',
      });
      return { key, result: record(result) };
    }

    test('declares capabilities the router can use', () => {
      const caps = h.provider.capabilities;
      assert.ok(caps.currencies.length > 0);
      for (const currency of caps.currencies) assert.match(currency, /^[A-Z]{3}$/);
      assert.ok(caps.currencies.includes(h.currency));
      assert.ok(caps.countries === 'all' || caps.countries.every((c) => /^[A-Z]{2}$/.test(c)));
      assert.equal(typeof caps.threeDSecure, 'boolean');
      assert.equal(caps.livemode, false, 'contract runs against test-mode credentials');
      assert.equal(h.provider.name.length > 0, true);
    });

    test('createCheckout returns a URL and a provider reference; the same key returns the same checkout', async () => {
      const { key, checkout: created } = await checkout('create');
      assert.match(created.url, /^https?:\/\//);
      assert.ok(created.providerCheckoutId.length > 0);
      assert.equal(created.provider, h.provider.name);
      const again = ok(
        record(
          await h.provider.createCheckout({
            idempotencyKey: key,
            amount: amount(),
            description: 'Contract plan, monthly',
            customer: { reference: 'cust-create', email: 'ada@example.com', country: 'DE' },
            successUrl: 'http://127.0.0.1:9/return/success',
            cancelUrl: 'http://127.0.0.1:9/return/cancel',
          }),
        ),
        'createCheckout again',
      );
      assert.equal(again.providerCheckoutId, created.providerCheckoutId);
    });

    test('paying a checkout yields a verified succeeded event and a saved card, without card data', async () => {
      const { key, event, payment } = await firstPayment('pay');
      assert.equal(event.provider, h.provider.name);
      assert.ok(event.eventId.length > 0);
      assert.equal(payment.status, 'succeeded');
      assert.equal(payment.idempotencyKey, key);
      assert.equal(payment.amount.amountMinor, 12_345n);
      assert.equal(typeof payment.amount.amountMinor, 'bigint');
      assert.equal(payment.amount.currency, h.currency);
      assert.equal(payment.failure, null);
      const method = payment.paymentMethod;
      assert.ok(method, 'the card is saved for renewals');
      assert.ok(method.token.length > 0);
      assert.match(method.last4 ?? '', /^\d{4}$/);
      assert.ok(method.brand);
      assert.ok(method.expMonth && method.expMonth >= 1 && method.expMonth <= 12);
      assert.ok(method.expYear && method.expYear >= 2024);
      assert.equal(await h.chargeCount(key), 1);
    });

    test('retrieve finds a payment by our idempotency key, and answers null for an unknown one', async () => {
      const { key, payment } = await firstPayment('by-key');
      const byKey = ok(record(await h.provider.retrieve({ idempotencyKey: key, createdAfter: new Date(Date.now() - 3600_000) })), 'retrieve by key');
      assert.equal(byKey?.providerPaymentId, payment.providerPaymentId);
      assert.equal(byKey?.status, 'succeeded');
      const missing = ok(await h.provider.retrieve({ idempotencyKey: newKey('never-used'), createdAfter: new Date(Date.now() - 3600_000) }), 'retrieve unknown');
      assert.equal(missing, null);
    });

    test('chargeSaved charges a saved card; the same key answers the same payment and never charges twice', async () => {
      const token = await tokenFor('success');
      const first = await charge(token);
      const paid = ok(first.result, 'chargeSaved');
      assert.equal(paid.status, 'succeeded');
      assert.equal(paid.idempotencyKey, first.key);
      assert.equal(paid.amount.amountMinor, 12_345n);
      assert.equal(paid.failure, null);
      const replay = ok((await charge(token, first.key)).result, 'chargeSaved replay');
      assert.equal(replay.providerPaymentId, paid.providerPaymentId);
      assert.equal(replay.status, 'succeeded');
      assert.equal(await h.chargeCount(first.key), 1);
    });

    test('concurrent charges under one key charge once', async () => {
      const token = await tokenFor('success');
      const key = newKey('concurrent');
      const results = await Promise.allSettled([charge(token, key), charge(token, key), charge(token, key)]);
      const ids = new Set<string | null>();
      for (const r of results) {
        // A provider may answer a concurrent duplicate with a conflict instead of the result; it must never charge.
        if (r.status === 'fulfilled' && r.value.result.ok) ids.add(r.value.result.value.providerPaymentId);
      }
      assert.ok(ids.size <= 1, 'at most one payment id for one key');
      assert.equal(await h.chargeCount(key), 1);
    });

    test('reusing a key with different parameters throws idempotency_conflict and charges nothing more', async () => {
      const token = await tokenFor('success');
      const { key } = await charge(token);
      await assert.rejects(
        h.provider.chargeSaved({
          idempotencyKey: key,
          amount: { amountMinor: 99_999n, currency: h.currency },
          paymentMethodToken: token,
          description: 'Contract plan, renewal',
          customerReference: 'cust-renewal',
        }),
        (error: unknown) => error instanceof ProviderError && error.code === 'idempotency_conflict',
      );
      assert.equal(await h.chargeCount(key), 1);
    });

    const declines: Array<[TestBehaviour, PaymentResult['status'], string]> = [
      ['soft_decline', 'failed', 'soft_decline'],
      ['hard_decline', 'failed', 'hard_decline'],
      ['requires_action', 'requires_action', 'requires_action'],
      ['processing_error', 'failed', 'gateway_error'],
    ];
    for (const [behaviour, status, failureClass] of declines) {
      test(`an off-session ${behaviour.replace('_', ' ')} is a ${status} payment classified ${failureClass}`, async () => {
        const token = await tokenFor(behaviour);
        const { key, result } = await charge(token);
        const payment = ok(result, 'chargeSaved');
        assert.equal(payment.status, status);
        assert.equal(payment.failure?.class, failureClass);
        assert.ok(payment.failure?.code);
        assert.equal(await h.chargeCount(key), 0, 'nothing was charged');
      });
    }

    test('a card saved on checkout that declines later gives a soft decline off-session (dunning)', async () => {
      const { payment } = await firstPayment('after-save', 'decline_after_save');
      const { key, result } = await charge(payment.paymentMethod!.token);
      const renewal = ok(result, 'chargeSaved');
      assert.equal(renewal.status, 'failed');
      assert.equal(renewal.failure?.class, 'soft_decline');
      assert.equal(await h.chargeCount(key), 0);
    });

    test('a provider 5xx is a gateway_error; nothing is charged, and the same key then charges once', async () => {
      const token = await tokenFor('success');
      const key = newKey('5xx');
      h.fault('http_500');
      const failed = (await charge(token, key)).result;
      assert.equal(failed.ok, false);
      assert.equal(!failed.ok && failed.failure.class, 'gateway_error');
      assert.equal(await h.chargeCount(key), 0);
      const retried = ok((await charge(token, key)).result, 'retry');
      assert.equal(retried.status, 'succeeded');
      assert.equal(await h.chargeCount(key), 1);
    });

    test('a refused connection is a gateway_error', async () => {
      const result = (await charge('tok_irrelevant', newKey('refused'), h.unreachableProvider)).result;
      assert.equal(result.ok, false);
      assert.equal(!result.ok && result.failure.class, 'gateway_error');
      assert.equal(!result.ok && result.failure.code, 'connection_refused');
      const checkoutResult = await h.unreachableProvider.createCheckout({
        idempotencyKey: newKey('refused-checkout'),
        amount: amount(),
        description: 'x',
        customer: { reference: 'c' },
        successUrl: 'http://127.0.0.1:9/s',
        cancelUrl: 'http://127.0.0.1:9/c',
      });
      assert.equal(!checkoutResult.ok && checkoutResult.failure.class, 'gateway_error');
    });

    test('a timeout after sending is unknown; retrieve by key settles it; the same key never charges twice', async () => {
      const token = await tokenFor('success');
      const key = newKey('timeout');
      h.fault('hang');
      const lost = (await charge(token, key, h.impatientProvider)).result;
      assert.equal(lost.ok, false);
      assert.equal(!lost.ok && lost.failure.class, 'unknown');
      // Invariant 8: ask before retrying. The provider did charge.
      const settled = ok(await h.provider.retrieve({ idempotencyKey: key, createdAfter: new Date(Date.now() - 3600_000) }), 'reconcile');
      assert.equal(settled?.status, 'succeeded');
      assert.equal(await h.chargeCount(key), 1);
      const replay = ok((await charge(token, key)).result, 'replay after reconcile');
      assert.equal(replay.providerPaymentId, settled?.providerPaymentId);
      assert.equal(await h.chargeCount(key), 1);
    });

    test('refunds: partial, replayed by key, and never above the remainder', async () => {
      const { payment } = await firstPayment('refund');
      const key = newKey('refund');
      const refund = ok(
        record(await h.provider.refund({ idempotencyKey: key, providerPaymentId: payment.providerPaymentId!, amount: { amountMinor: 10_000n, currency: h.currency } })),
        'refund',
      );
      assert.equal(refund.status, 'succeeded');
      assert.equal(refund.amount.amountMinor, 10_000n);
      assert.equal(refund.providerPaymentId, payment.providerPaymentId);
      const replay = ok(
        await h.provider.refund({ idempotencyKey: key, providerPaymentId: payment.providerPaymentId!, amount: { amountMinor: 10_000n, currency: h.currency } }),
        'refund replay',
      );
      assert.equal(replay.providerRefundId, refund.providerRefundId);
      await assert.rejects(
        h.provider.refund({ idempotencyKey: newKey('over'), providerPaymentId: payment.providerPaymentId!, amount: { amountMinor: 2_346n, currency: h.currency } }),
        (error: unknown) => error instanceof ProviderError && error.code === 'invalid_request',
      );
      const rest = ok(
        await h.provider.refund({ idempotencyKey: newKey('rest'), providerPaymentId: payment.providerPaymentId!, amount: { amountMinor: 2_345n, currency: h.currency } }),
        'refund the rest',
      );
      assert.equal(rest.status, 'succeeded');
      const after = ok(await h.provider.retrieve({ providerPaymentId: payment.providerPaymentId! }), 'retrieve after refunds');
      assert.equal(after?.refundedMinor, 12_345n, 'retrieve reports what was refunded');
      const events = await verifiedEvents();
      assert.ok(
        events.some((e) => e.kind === 'refund' && e.refund.providerRefundId === refund.providerRefundId),
        'a verified refund event',
      );
    });

    test('forged, tampered and stale webhooks are rejected with a typed reason', async () => {
      const forged = await h.forgedWebhooks();
      assert.ok(forged.length >= 2, 'the harness provides forgeries');
      for (const { name: forgery, request, reason } of forged) {
        const verdict = await h.provider.verifyWebhook(request);
        assert.equal(verdict.ok, false, `${forgery} must be rejected`);
        assert.equal(!verdict.ok && verdict.rejection.reason, reason, forgery);
      }
    });

    test('the same delivery verified twice gives the same event id (the inbox dedupes on it)', async () => {
      const { checkout: created } = await checkout('dup');
      await h.payCheckout(created, 'success');
      const deliveries = await h.takeWebhooks();
      assert.ok(deliveries.length > 0);
      const first = await h.provider.verifyWebhook(deliveries[0]!);
      const second = await h.provider.verifyWebhook(deliveries[0]!);
      assert.ok(first.ok && second.ok);
      assert.deepEqual(
        first.events.map((e) => e.eventId),
        second.events.map((e) => e.eventId),
      );
    });
  });
}
