/**
 * The `createCheckoutLink` mutation: GraphQL's door to the checkout flow
 * (server/checkout.ts createCheckoutLink), the same as REST's
 * POST /v1/subscriptions/:id/checkout. A tenant's API key may ask for any of
 * its subscriptions, a customer session only for the customer's own; the
 * flow runs on the worker pool with those claims as explicit arguments,
 * because it calls a payment provider between its SQL steps.
 *
 * The payload carries the link and, read under the caller's own role, the
 * payment and invoice it pays.
 */
import { SafeError, access, context, sideEffect, type Step } from 'postgraphile/grafast';
import { extendSchema, gql } from 'postgraphile/utils';
import { PROVIDER_NAMES } from '../lib/statuses.ts';
import type { ProviderName } from '../providers/types.ts';
import { CheckoutError, createCheckoutLink, type CheckoutDeps, type CheckoutLink } from './checkout.ts';

/** What the grafast context carries for this mutation (server/graphql.ts). */
export interface CheckoutGraphqlContext {
  pgSettings?: Record<string, string>;
  /** The process's checkout dependencies; null while the process is starting. */
  checkout?: CheckoutDeps | null;
}

interface CheckoutLinkInput {
  subscriptionId: string;
  returnUrl?: string | null;
  provider?: string | null;
  idempotencyKey?: string | null;
  clientMutationId?: string | null;
}

const MAX_URL = 2000;

/** The link as GraphQL's scalars serialise it (Datetime and BigInt travel as strings). */
type CheckoutLinkResult = Omit<CheckoutLink, 'expiresAt' | 'amountMinor'> & { expiresAt: string | null; amountMinor: string; clientMutationId: string | null };

async function runCheckout(input: CheckoutLinkInput, ctx: CheckoutGraphqlContext): Promise<CheckoutLinkResult> {
  const settings = ctx.pgSettings ?? {};
  const tenantId = settings['jwt.claims.tenant_id'];
  if (!tenantId) throw new SafeError('an API key or customer session is required', { code: 'UNAUTHENTICATED' });
  if (!ctx.checkout) throw new SafeError('the server is starting', { code: 'STARTING' });
  const returnUrl = input.returnUrl ?? null;
  if (returnUrl !== null && (!/^https?:\/\/\S+$/.test(returnUrl) || returnUrl.length > MAX_URL)) {
    throw new SafeError('returnUrl must be an http(s) URL', { code: 'INVALID_INPUT' });
  }
  const provider = input.provider ?? null;
  if (provider !== null && !(PROVIDER_NAMES as readonly string[]).includes(provider)) {
    throw new SafeError(`provider must be one of ${PROVIDER_NAMES.join(', ')}`, { code: 'INVALID_INPUT' });
  }
  try {
    const link = await createCheckoutLink(ctx.checkout, {
      subscriptionId: input.subscriptionId,
      tenantId,
      customerId: settings['jwt.claims.customer_id'] ?? null,
      returnUrl,
      provider: provider as ProviderName | null,
      idempotencyKey: input.idempotencyKey ?? null,
      headerIdempotencyKey: settings['abonement.idempotency_key'] ?? null,
    });
    return {
      ...link,
      expiresAt: link.expiresAt?.toISOString() ?? null,
      amountMinor: link.amountMinor.toString(),
      clientMutationId: input.clientMutationId ?? null,
    };
  } catch (error) {
    if (error instanceof CheckoutError) throw new SafeError(error.message, { code: error.code, status: error.status });
    throw error;
  }
}

export const CheckoutLinkMutationPlugin = extendSchema((build) => {
  const { payments, invoices } = build.input.pgRegistry.pgResources;
  return {
    typeDefs: gql`
      """
      A hosted payment page for a subscription's open invoice, from the payment provider the tenant's routing rules choose.
      """
      type CheckoutLink {
        "The payment attempt this link pays (pending until the customer pays)."
        paymentId: UUID!
        invoiceId: UUID!
        "The provider that hosts the page: sandbox, stripe, yookassa, cloudpayments or paypal."
        provider: String!
        "Send the customer here."
        url: String!
        "When the provider stops accepting payment on this page; ask again for a new link after that."
        expiresAt: Datetime
        "What the customer pays, in minor units of currency."
        amountMinor: BigInt!
        currency: String!
        "True when an open link made by an earlier request was returned instead of a new one."
        reused: Boolean!
      }

      input CreateCheckoutLinkInput {
        clientMutationId: String
        "A subscription with an open invoice (an incomplete subscription's first invoice, or a past-due one's)."
        subscriptionId: UUID!
        "Where the customer should end up afterwards; shown as a link on our return page."
        returnUrl: String
        """
        The provider the customer chose (e.g. a Pay with PayPal button): one the tenant's routing offers for this invoice
        (PROVIDER_NOT_OFFERED otherwise); no other is tried. Unset: the routing rules choose, with failover.
        """
        provider: String
        """
        Replays with the same key return the first result; the same key with other parameters is IDEMPOTENCY_KEY_REUSED.
        The Idempotency-Key header works too.
        """
        idempotencyKey: String
      }

      type CreateCheckoutLinkPayload {
        clientMutationId: String
        checkoutLink: CheckoutLink!
        "The payment attempt, as the caller may read it."
        payment: Payment
        "The invoice being paid, as the caller may read it."
        invoice: Invoice
      }

      extend type Mutation {
        """
        The payment link for a subscription's open invoice (create_subscription callers send the customer here for the first payment).
        Asking again returns the same link while it is open. Errors: SUBSCRIPTION_NOT_FOUND, SUBSCRIPTION_ENDED, NOTHING_TO_PAY,
        PAYMENT_IN_FLIGHT, NO_PAYMENT_PROVIDER, PROVIDER_NOT_OFFERED, CHECKOUT_OPEN_ELSEWHERE, PROVIDERS_UNAVAILABLE.
        """
        createCheckoutLink(input: CreateCheckoutLinkInput!): CreateCheckoutLinkPayload
      }
    `,
    objects: {
      Mutation: {
        plans: {
          createCheckoutLink(_$root: Step, fieldArgs: { getRaw(path: string): Step }) {
            const $input = fieldArgs.getRaw('input') as Step<CheckoutLinkInput>;
            const $context = context() as unknown as Step<CheckoutGraphqlContext>;
            return sideEffect([$input, $context], ([input, ctx]) => runCheckout(input, ctx));
          },
        },
      },
      CreateCheckoutLinkPayload: {
        plans: {
          checkoutLink: ($link: Step) => $link,
          clientMutationId: ($link: Step) => access($link, 'clientMutationId'),
          payment: ($link: Step) => payments!.get({ id: access($link, 'paymentId') }),
          invoice: ($link: Step) => invoices!.get({ id: access($link, 'invoiceId') }),
        },
      },
    },
  };
}, 'AbonementCheckoutLinkMutationPlugin');
