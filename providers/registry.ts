/**
 * Builds the configured adapters from the validated configuration.
 *
 *   const providers = buildProviderRegistry(config, logger);
 *   providers.get('stripe')            // PaymentProvider | undefined
 *   providers.capabilities()           // for chooseProviders()
 *
 * The sandbox gateway the sandbox adapter talks to is an emulator of its own
 * (sandbox/), mounted by the API process.
 */
import { publicUrl, type Config } from '../lib/config.ts';
import type { Logger } from '../lib/logger.ts';
import { SANDBOX_MOUNT_PATH, sandboxCredentials, sandboxEnabled } from '../lib/sandbox-settings.ts';
import { CloudPaymentsAdapter } from './cloudpayments.ts';
import { chooseProviders, type RoutingPolicy, type RoutingRequest, type RoutingRules } from './routing.ts';
import { SandboxAdapter } from './sandbox.ts';
import { StripeAdapter } from './stripe.ts';
import type { PaymentProvider, ProviderCapabilities, ProviderName } from './types.ts';
import { PayPalAdapter } from './paypal.ts';
import { YooKassaAdapter } from './yookassa.ts';

export interface ProviderRegistry {
  get(name: ProviderName): PaymentProvider | undefined;
  all(): PaymentProvider[];
  capabilities(): Partial<Record<ProviderName, ProviderCapabilities>>;
  policy: RoutingPolicy;
  /**
   * Routing in one call: candidates as adapters, in order. With no rule and
   * no default, every configured adapter that fits, in registry order
   * (sandbox, Stripe, YooKassa, CloudPayments).
   */
  candidates(routing: RoutingRules, request: RoutingRequest): PaymentProvider[];
}

export function buildProviderRegistry(config: Config, logger: Logger): ProviderRegistry {
  const adapters = new Map<ProviderName, PaymentProvider>();
  const timeoutMs = config.PROVIDER_TIMEOUT_MS;
  if (sandboxEnabled(config)) {
    const { apiKey, webhookSecret } = sandboxCredentials(config);
    adapters.set('sandbox', new SandboxAdapter({ baseUrl: `${publicUrl(config)}${SANDBOX_MOUNT_PATH}`, apiKey, webhookSecrets: [webhookSecret], timeoutMs, logger }));
  }
  if (config.STRIPE_SECRET_KEY && config.STRIPE_WEBHOOK_SECRET) {
    adapters.set(
      'stripe',
      new StripeAdapter({
        secretKey: config.STRIPE_SECRET_KEY,
        webhookSecrets: config.STRIPE_WEBHOOK_SECRET.split(',')
          .map((s) => s.trim())
          .filter(Boolean),
        timeoutMs,
        logger,
        ...(config.STRIPE_API_BASE ? { api: stripeApi(config.STRIPE_API_BASE) } : {}),
      }),
    );
  }
  if (config.YOOKASSA_SHOP_ID && config.YOOKASSA_SECRET_KEY) {
    adapters.set(
      'yookassa',
      new YooKassaAdapter({
        shopId: config.YOOKASSA_SHOP_ID,
        secretKey: config.YOOKASSA_SECRET_KEY,
        apiBase: config.YOOKASSA_API_BASE,
        timeoutMs,
        logger,
        ...(config.YOOKASSA_WEBHOOK_SOURCES ? { webhookSources: config.YOOKASSA_WEBHOOK_SOURCES } : {}),
      }),
    );
  }
  if (config.PAYPAL_CLIENT_ID && config.PAYPAL_CLIENT_SECRET && config.PAYPAL_WEBHOOK_ID) {
    adapters.set(
      'paypal',
      new PayPalAdapter({
        clientId: config.PAYPAL_CLIENT_ID,
        clientSecret: config.PAYPAL_CLIENT_SECRET,
        webhookId: config.PAYPAL_WEBHOOK_ID,
        apiBase: config.PAYPAL_API_BASE,
        timeoutMs,
        logger,
      }),
    );
  }
  if (config.CLOUDPAYMENTS_PUBLIC_ID && config.CLOUDPAYMENTS_API_SECRET) {
    adapters.set(
      'cloudpayments',
      new CloudPaymentsAdapter({
        publicId: config.CLOUDPAYMENTS_PUBLIC_ID,
        apiSecret: config.CLOUDPAYMENTS_API_SECRET,
        apiBase: config.CLOUDPAYMENTS_API_BASE,
        ...(config.CLOUDPAYMENTS_LIVEMODE === undefined ? {} : { livemode: config.CLOUDPAYMENTS_LIVEMODE }),
        timeoutMs,
        logger,
      }),
    );
  }
  const policy: RoutingPolicy = { sandboxForLiveTenants: config.SANDBOX_ALLOW_LIVE_TENANTS };
  const capabilities = () => Object.fromEntries([...adapters].map(([name, adapter]) => [name, adapter.capabilities]));
  return {
    get: (name) => adapters.get(name),
    all: () => [...adapters.values()],
    capabilities,
    policy,
    candidates: (routing, request) => {
      // A tenant that configured nothing (no rule, no default) may use every adapter that fits, in registry order.
      const effective: RoutingRules =
        routing.rules.length === 0 && !routing.defaultProvider ? { rules: [...adapters.keys()].map((provider, priority) => ({ priority, provider })), defaultProvider: null } : routing;
      return chooseProviders(effective, request, capabilities(), policy).map((name) => adapters.get(name)!);
    },
  };
}

/** STRIPE_API_BASE (e.g. http://127.0.0.1:12111) as the SDK's host, port and protocol. */
export function stripeApi(base: string): { host: string; port: number; protocol: 'http' | 'https' } {
  const url = new URL(base);
  const protocol = url.protocol === 'http:' ? 'http' : 'https';
  return { host: url.hostname, port: url.port ? Number(url.port) : protocol === 'http' ? 80 : 443, protocol };
}
