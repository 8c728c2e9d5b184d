/**
 * Builds the configured adapters (and, in the API process, the sandbox
 * gateway they may talk to) from the validated configuration.
 *
 *   const providers = buildProviderRegistry(config, logger);
 *   providers.get('stripe')            // PaymentProvider | undefined
 *   providers.capabilities()           // for chooseProviders()
 *
 *   // API process only: the emulator itself, mounted under /sandbox
 *   const gateway = createConfiguredSandboxGateway(config, logger, workerPool);
 *   if (gateway) app.use('/sandbox', gateway.router);
 */
import { createHmac } from 'node:crypto';
import type pg from 'pg';
import { publicUrl, type Config } from '../lib/config.ts';
import type { Logger } from '../lib/logger.ts';
import { chooseProviders, type RoutingPolicy, type RoutingRequest, type RoutingRules } from './routing.ts';
import { SandboxAdapter } from './sandbox.ts';
import { createSandboxGateway, type SandboxGateway } from './sandbox/gateway.ts';
import { StripeAdapter } from './stripe.ts';
import type { PaymentProvider, ProviderCapabilities, ProviderName } from './types.ts';
import { YooKassaAdapter } from './yookassa.ts';

export const SANDBOX_MOUNT_PATH = '/sandbox';

export function sandboxEnabled(config: Pick<Config, 'SANDBOX_GATEWAY' | 'NODE_ENV'>): boolean {
  return config.SANDBOX_GATEWAY === 'on' || (config.SANDBOX_GATEWAY === 'auto' && config.NODE_ENV !== 'production');
}

/**
 * The sandbox's API key and webhook secret, derived from SANDBOX_SECRET so
 * every process of one installation agrees without sharing state. Outside
 * production a missing secret falls back to one derived from the database
 * settings: a known secret for test money only (parseConfig refuses a
 * sandbox in production without SANDBOX_SECRET).
 */
export function sandboxCredentials(config: Config): { apiKey: string; webhookSecret: string } {
  const root =
    config.SANDBOX_SECRET ?? `abonement-sandbox-development:${config.DB_ROLE_SECRET ?? config.DATABASE_URL ?? config.DB_ROLE_PREFIX}`;
  const derive = (label: string) => createHmac('sha256', root).update(label).digest('base64url');
  return { apiKey: `sbx_${derive('api-key')}`, webhookSecret: `whsec_sbx_${derive('webhook-secret')}` };
}

export interface ProviderRegistry {
  get(name: ProviderName): PaymentProvider | undefined;
  all(): PaymentProvider[];
  capabilities(): Partial<Record<ProviderName, ProviderCapabilities>>;
  policy: RoutingPolicy;
  /**
   * Routing in one call: candidates as adapters, in order. With no rule and
   * no default, every configured adapter that fits, in registry order
   * (sandbox, Stripe, YooKassa).
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
        webhookSecrets: config.STRIPE_WEBHOOK_SECRET.split(',').map((s) => s.trim()).filter(Boolean),
        timeoutMs,
        logger,
        ...(config.STRIPE_API_BASE ? { api: stripeApi(config.STRIPE_API_BASE) } : {}),
      }),
    );
  }
  if (config.YOOKASSA_SHOP_ID && config.YOOKASSA_SECRET_KEY) {
    adapters.set(
      'yookassa',
      new YooKassaAdapter({ shopId: config.YOOKASSA_SHOP_ID, secretKey: config.YOOKASSA_SECRET_KEY, apiBase: config.YOOKASSA_API_BASE, timeoutMs, logger }),
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

/** The emulator for the API process, or null when the sandbox is off. `pool` must be a worker-role pool. */
export function createConfiguredSandboxGateway(config: Config, logger: Logger, pool: pg.Pool): SandboxGateway | null {
  if (!sandboxEnabled(config)) return null;
  const { apiKey, webhookSecret } = sandboxCredentials(config);
  return createSandboxGateway({
    pool,
    apiKey,
    webhook: { url: config.SANDBOX_WEBHOOK_URL ?? `${publicUrl(config)}/webhooks/sandbox`, secrets: [webhookSecret] },
    logger,
    publicUrl: `${publicUrl(config)}${SANDBOX_MOUNT_PATH}`,
  });
}
