/**
 * Which provider takes a payment: per-tenant routing rules (priority,
 * currency, customer country → provider) with a default, filtered by what
 * each adapter declares it can do. Pure functions: the rules will live in
 * SQL (a tenant-owned table, read by the checkout mutation) and be passed in.
 *
 *   chooseProviders(rules, { currency: 'RUB', country: 'RU', livemode: true }, registry.capabilities())
 *     → ['yookassa', 'stripe']   ordered candidates
 *
 * Failover (createCheckoutWithFailover) moves to the next candidate only when
 * a provider did not answer (gateway_error / unknown) before a checkout
 * existed — never on an answer: a checkout link is not a charge, so an orphan
 * link at the failed provider costs nothing, but a declined card must not be
 * retried elsewhere behind the customer's back.
 */
import type { Logger } from '../lib/logger.ts';
import type { Checkout, CheckoutInput, PaymentProvider, ProviderCapabilities, ProviderName, TransportFailure } from './types.ts';

export interface RoutingRule {
  /** Lower runs first. */
  priority: number;
  provider: ProviderName;
  /** ISO-4217; null/undefined matches any currency. */
  currency?: string | null;
  /** ISO-3166 alpha-2 of the customer; null/undefined matches any country. */
  country?: string | null;
}

export interface RoutingRules {
  rules: readonly RoutingRule[];
  /** Used when no rule matches, and appended as the last resort otherwise. */
  defaultProvider: ProviderName | null;
}

export interface RoutingRequest {
  currency: string;
  country: string | null;
  /** The tenant's mode: live tenants get live adapters, test tenants test adapters. */
  livemode: boolean;
}

export interface RoutingPolicy {
  /** Let live tenants use the sandbox (development demos only). Default false. */
  sandboxForLiveTenants?: boolean;
}

export function providerFits(name: ProviderName, capabilities: ProviderCapabilities, request: RoutingRequest, policy: RoutingPolicy = {}): boolean {
  if (!capabilities.currencies.includes(request.currency)) return false;
  if (capabilities.countries !== 'all' && (!request.country || !capabilities.countries.includes(request.country))) return false;
  if (request.livemode !== capabilities.livemode) {
    const sandboxForLive = name === 'sandbox' && request.livemode && policy.sandboxForLiveTenants === true;
    if (!sandboxForLive) return false;
  }
  return true;
}

/** Ordered, de-duplicated candidates for one payment. Empty means no provider can take it. */
export function chooseProviders(
  routing: RoutingRules,
  request: RoutingRequest,
  available: Partial<Record<ProviderName, ProviderCapabilities>>,
  policy: RoutingPolicy = {},
): ProviderName[] {
  const matches = routing.rules
    .filter((rule) => (rule.currency ?? null) === null || rule.currency === request.currency)
    .filter((rule) => (rule.country ?? null) === null || rule.country === request.country)
    .map((rule, index) => ({ rule, index, specificity: (rule.currency ? 1 : 0) + (rule.country ? 1 : 0) }))
    // Priority first; among equal priorities the more specific rule, then the order given.
    .sort((a, b) => a.rule.priority - b.rule.priority || b.specificity - a.specificity || a.index - b.index)
    .map(({ rule }) => rule.provider);
  if (routing.defaultProvider) matches.push(routing.defaultProvider);
  const seen = new Set<ProviderName>();
  const candidates: ProviderName[] = [];
  for (const name of matches) {
    if (seen.has(name)) continue;
    seen.add(name);
    const capabilities = available[name];
    if (capabilities && providerFits(name, capabilities, request, policy)) candidates.push(name);
  }
  return candidates;
}

export interface FailoverAttempt {
  provider: ProviderName;
  failure: TransportFailure;
}

export type FailoverResult = { ok: true; provider: ProviderName; checkout: Checkout; attempts: FailoverAttempt[] } | { ok: false; attempts: FailoverAttempt[] };

/**
 * Creates the checkout at the first candidate that answers. A ProviderError
 * (misuse, bad credentials) is thrown at once: it is not an outage, and
 * hiding it behind another provider would hide a misconfiguration.
 */
export async function createCheckoutWithFailover(candidates: readonly PaymentProvider[], input: CheckoutInput, logger?: Logger): Promise<FailoverResult> {
  const attempts: FailoverAttempt[] = [];
  for (const provider of candidates) {
    const result = await provider.createCheckout(input);
    if (result.ok) return { ok: true, provider: provider.name, checkout: result.value, attempts };
    attempts.push({ provider: provider.name, failure: result.failure });
    logger?.warn({ provider: provider.name, failure: result.failure.code }, 'checkout creation failed over to the next provider');
  }
  return { ok: false, attempts };
}
