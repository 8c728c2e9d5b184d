/**
 * Routing rules, capability filtering, test/live separation and checkout
 * failover (pure: no database, no network but two tiny fake adapters).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseConfig } from '../../lib/config.ts';
import { sandboxCredentials, sandboxEnabled } from '../../lib/sandbox-settings.ts';
import { buildProviderRegistry } from '../../providers/registry.ts';
import { chooseProviders, createCheckoutWithFailover, type RoutingRules } from '../../providers/routing.ts';
import { ProviderError, type CheckoutInput, type PaymentProvider, type ProviderCall, type ProviderCapabilities, type ProviderName, type Checkout } from '../../providers/types.ts';
import { testLogger } from './sandbox-stack.ts';

const caps = (currencies: string[], livemode: boolean, countries: ProviderCapabilities['countries'] = 'all'): ProviderCapabilities => ({
  currencies,
  countries,
  threeDSecure: true,
  livemode,
  retrieveByKey: 'exact',
});

const live = { stripe: caps(['EUR', 'USD'], true), yookassa: caps(['RUB'], true, ['RU', 'KZ']), sandbox: caps(['EUR', 'USD', 'RUB'], false) };
const testMode = { stripe: caps(['EUR', 'USD'], false), yookassa: caps(['RUB'], false, ['RU', 'KZ']), sandbox: caps(['EUR', 'USD', 'RUB'], false) };

const rules: RoutingRules = {
  defaultProvider: 'stripe',
  rules: [
    { priority: 10, provider: 'yookassa', currency: 'RUB' },
    { priority: 10, provider: 'yookassa', currency: 'RUB', country: 'RU' },
    { priority: 20, provider: 'stripe', country: 'RU' },
    { priority: 5, provider: 'stripe', currency: 'EUR', country: 'DE' },
  ],
};

describe('chooseProviders', () => {
  test('rules by priority, then specificity, then the default; duplicates removed', () => {
    assert.deepEqual(chooseProviders(rules, { currency: 'RUB', country: 'RU', livemode: true }, live), ['yookassa']);
    assert.deepEqual(chooseProviders(rules, { currency: 'EUR', country: 'DE', livemode: true }, live), ['stripe']);
  });

  test('candidates that cannot take the currency or the country are filtered out', () => {
    assert.deepEqual(chooseProviders(rules, { currency: 'RUB', country: 'DE', livemode: true }, live), [], 'yookassa does not serve DE, stripe has no RUB');
    assert.deepEqual(chooseProviders({ ...rules, rules: [{ priority: 1, provider: 'yookassa' }] }, { currency: 'EUR', country: 'RU', livemode: true }, live), ['stripe']);
  });

  test('failover order comes from the rules: several candidates in priority order', () => {
    const both = { defaultProvider: 'stripe' as ProviderName, rules: [{ priority: 1, provider: 'sandbox' as ProviderName }] };
    assert.deepEqual(chooseProviders(both, { currency: 'EUR', country: null, livemode: false }, testMode), ['sandbox', 'stripe']);
  });

  test('live tenants never get test adapters (the sandbox included) unless the policy allows the sandbox', () => {
    const sandboxFirst: RoutingRules = { defaultProvider: 'stripe', rules: [{ priority: 1, provider: 'sandbox' }] };
    assert.deepEqual(chooseProviders(sandboxFirst, { currency: 'EUR', country: null, livemode: true }, live), ['stripe']);
    assert.deepEqual(chooseProviders(sandboxFirst, { currency: 'EUR', country: null, livemode: true }, live, { sandboxForLiveTenants: true }), ['sandbox', 'stripe']);
    assert.deepEqual(chooseProviders(sandboxFirst, { currency: 'EUR', country: null, livemode: false }, live), ['sandbox'], 'test tenants never reach live keys');
  });

  test('RUB goes to CloudPayments or YooKassa by the tenant rules, the other one as failover', () => {
    const both = { ...live, cloudpayments: caps(['RUB', 'USD', 'EUR'], true) };
    const cloudpaymentsFirst: RoutingRules = {
      defaultProvider: 'stripe',
      rules: [
        { priority: 1, provider: 'cloudpayments', currency: 'RUB' },
        { priority: 2, provider: 'yookassa', currency: 'RUB' },
      ],
    };
    assert.deepEqual(chooseProviders(cloudpaymentsFirst, { currency: 'RUB', country: 'RU', livemode: true }, both), ['cloudpayments', 'yookassa']);
    assert.deepEqual(chooseProviders(cloudpaymentsFirst, { currency: 'RUB', country: 'DE', livemode: true }, both), ['cloudpayments'], 'YooKassa does not serve DE here');
    const yookassaFirst: RoutingRules = {
      ...cloudpaymentsFirst,
      rules: [
        { priority: 1, provider: 'yookassa', currency: 'RUB' },
        { priority: 2, provider: 'cloudpayments', currency: 'RUB' },
      ],
    };
    assert.deepEqual(chooseProviders(yookassaFirst, { currency: 'RUB', country: 'RU', livemode: true }, both), ['yookassa', 'cloudpayments']);
    assert.deepEqual(chooseProviders(yookassaFirst, { currency: 'EUR', country: 'RU', livemode: true }, both), ['stripe'], 'RUB rules do not catch EUR');
    assert.deepEqual(
      chooseProviders({ defaultProvider: 'cloudpayments', rules: [] }, { currency: 'RUB', country: 'RU', livemode: false }, both),
      [],
      'a live terminal is not for test tenants',
    );
  });

  test('a provider that is not configured is skipped', () => {
    assert.deepEqual(chooseProviders(rules, { currency: 'RUB', country: 'RU', livemode: true }, { stripe: live.stripe }), []);
  });
});

function scripted(name: ProviderName, outcome: 'ok' | 'gateway_error' | 'unknown' | 'throws'): PaymentProvider & { calls: number } {
  const adapter = {
    name,
    calls: 0,
    capabilities: caps(['EUR'], false),
    async createCheckout(input: CheckoutInput): Promise<ProviderCall<Checkout>> {
      adapter.calls++;
      if (outcome === 'throws') throw new ProviderError(name, 'authentication', 'bad key');
      if (outcome !== 'ok') return { ok: false, failure: { class: outcome, code: outcome, message: outcome } };
      return { ok: true, value: { provider: name, providerCheckoutId: `co_${input.idempotencyKey}`, url: `https://${name}.example/pay`, providerPaymentId: null, expiresAt: null } };
    },
    chargeSaved: () => Promise.reject(new Error('unused')),
    refund: () => Promise.reject(new Error('unused')),
    retrieve: () => Promise.reject(new Error('unused')),
    verifyWebhook: () => Promise.reject(new Error('unused')),
  };
  return adapter;
}

const input: CheckoutInput = {
  idempotencyKey: 'k1',
  amount: { amountMinor: 100n, currency: 'EUR' },
  description: 'x',
  customer: { reference: 'c' },
  successUrl: 'https://t.example/ok',
  cancelUrl: 'https://t.example/no',
};

describe('createCheckoutWithFailover', () => {
  test('an outage (gateway_error, unknown) moves to the next candidate', async () => {
    const [a, b, c] = [scripted('stripe', 'gateway_error'), scripted('yookassa', 'unknown'), scripted('sandbox', 'ok')];
    const result = await createCheckoutWithFailover([a, b, c], input);
    assert.ok(result.ok);
    assert.equal(result.provider, 'sandbox');
    assert.deepEqual(
      result.attempts.map((x) => [x.provider, x.failure.class]),
      [
        ['stripe', 'gateway_error'],
        ['yookassa', 'unknown'],
      ],
    );
  });

  test('the first provider that answers wins; later ones are not called', async () => {
    const [a, b] = [scripted('stripe', 'ok'), scripted('sandbox', 'ok')];
    const result = await createCheckoutWithFailover([a, b], input);
    assert.ok(result.ok && result.provider === 'stripe');
    assert.equal(b.calls, 0);
  });

  test('misconfiguration is thrown, not hidden behind another provider', async () => {
    const [a, b] = [scripted('stripe', 'throws'), scripted('sandbox', 'ok')];
    await assert.rejects(createCheckoutWithFailover([a, b], input), ProviderError);
    assert.equal(b.calls, 0);
  });

  test('all down: every attempt is reported', async () => {
    const result = await createCheckoutWithFailover([scripted('stripe', 'gateway_error')], input);
    assert.ok(!result.ok);
    assert.equal(result.attempts.length, 1);
  });
});

describe('registry and configuration', () => {
  test('the sandbox is on by default outside production and off in production', () => {
    assert.equal(sandboxEnabled(parseConfig({ NODE_ENV: 'development' })), true);
    assert.equal(sandboxEnabled(parseConfig({ NODE_ENV: 'production', SESSION_SECRET: 'x'.repeat(32), JWT_SECRET: 'j'.repeat(32) })), false);
    assert.throws(() => parseConfig({ NODE_ENV: 'production', SESSION_SECRET: 'x'.repeat(32), JWT_SECRET: 'j'.repeat(32), SANDBOX_GATEWAY: 'on' }), /SANDBOX_SECRET/);
    assert.throws(
      () => parseConfig({ NODE_ENV: 'production', SESSION_SECRET: 'x'.repeat(32), JWT_SECRET: 'j'.repeat(32), SANDBOX_ALLOW_LIVE_TENANTS: 'true' }),
      /SANDBOX_ALLOW_LIVE_TENANTS/,
    );
  });

  test('adapters are built from configuration; every process derives the same sandbox credentials', () => {
    const config = parseConfig({
      NODE_ENV: 'development',
      STRIPE_SECRET_KEY: 'sk_test_abc',
      STRIPE_WEBHOOK_SECRET: 'whsec_new,whsec_old',
      YOOKASSA_SHOP_ID: '100500',
      YOOKASSA_SECRET_KEY: 'test_abc',
      PAYPAL_CLIENT_ID: 'client',
      PAYPAL_CLIENT_SECRET: 'secret',
      PAYPAL_WEBHOOK_ID: 'WH-1',
      CLOUDPAYMENTS_PUBLIC_ID: 'pk_test_0123',
      CLOUDPAYMENTS_API_SECRET: 'cp-api-secret-abc',
      CLOUDPAYMENTS_API_BASE: 'http://127.0.0.1:8090',
      SANDBOX_SECRET: 's'.repeat(40),
    });
    const registry = buildProviderRegistry(config, testLogger);
    assert.deepEqual(
      registry
        .all()
        .map((p) => p.name)
        .sort(),
      ['cloudpayments', 'paypal', 'sandbox', 'stripe', 'yookassa'],
    );
    assert.equal(registry.get('stripe')?.capabilities.livemode, false);
    assert.equal(registry.get('paypal')?.capabilities.livemode, false, "PayPal's sandbox endpoint by default");
    assert.equal(registry.get('cloudpayments')?.capabilities.livemode, false, 'an API base other than api.cloudpayments.ru is a test terminal');
    assert.equal(
      buildProviderRegistry(parseConfig({ CLOUDPAYMENTS_PUBLIC_ID: 'pk_1', CLOUDPAYMENTS_API_SECRET: 'secret-123' }), testLogger).get('cloudpayments')?.capabilities.livemode,
      true,
    );
    assert.equal(
      buildProviderRegistry(parseConfig({ CLOUDPAYMENTS_PUBLIC_ID: 'pk_1', CLOUDPAYMENTS_API_SECRET: 'secret-123', CLOUDPAYMENTS_LIVEMODE: 'false' }), testLogger).get('cloudpayments')
        ?.capabilities.livemode,
      false,
    );
    assert.deepEqual(sandboxCredentials(config), sandboxCredentials(parseConfig({ SANDBOX_SECRET: 's'.repeat(40) })));
    assert.notDeepEqual(sandboxCredentials(config), sandboxCredentials(parseConfig({ SANDBOX_SECRET: 't'.repeat(40) })));
    const candidates = registry.candidates(
      { defaultProvider: 'stripe', rules: [{ priority: 1, provider: 'yookassa', currency: 'RUB' }] },
      { currency: 'RUB', country: 'RU', livemode: false },
    );
    assert.deepEqual(
      candidates.map((p) => p.name),
      ['yookassa'],
    );
    const rub = registry.candidates(
      {
        defaultProvider: 'stripe',
        rules: [
          { priority: 1, provider: 'cloudpayments', currency: 'RUB' },
          { priority: 2, provider: 'yookassa', currency: 'RUB' },
        ],
      },
      { currency: 'RUB', country: 'RU', livemode: false },
    );
    assert.deepEqual(
      rub.map((p) => p.name),
      ['cloudpayments', 'yookassa'],
    );
  });

  test('a Stripe key without its webhook secret, or half a YooKassa configuration, is refused at boot', () => {
    assert.throws(() => parseConfig({ STRIPE_SECRET_KEY: 'sk_test_abc' }), /STRIPE_WEBHOOK_SECRET/);
    assert.throws(() => parseConfig({ YOOKASSA_SHOP_ID: '1' }), /YOOKASSA_SECRET_KEY/);
    assert.throws(() => parseConfig({ PAYPAL_CLIENT_ID: 'c', PAYPAL_CLIENT_SECRET: 's' }), /PAYPAL_WEBHOOK_ID must be set together/);
    assert.throws(() => parseConfig({ CLOUDPAYMENTS_PUBLIC_ID: 'pk_1' }), /CLOUDPAYMENTS_API_SECRET/);
    assert.throws(() => parseConfig({ CLOUDPAYMENTS_API_SECRET: 'secret-123' }), /CLOUDPAYMENTS_PUBLIC_ID/);
  });
});
