/**
 * The sandbox gateway: a card gateway emulator in the spirit of a provider's
 * test mode, built into abonement. It is "the provider" for development and
 * test-mode tenants; providers/sandbox.ts is the adapter that talks to it over
 * HTTP exactly as the Stripe and YooKassa adapters talk to theirs.
 *
 * Mount it with an Express router:
 *
 *   const gateway = createSandboxGateway({ pool: workerPool, apiKey, webhook: { url, secrets: [secret] }, logger });
 *   app.use('/sandbox', gateway.router);
 *
 * This file is the wiring. Under the mount point it serves the JSON API at
 * /api/v1 (sandbox/api-routes.ts, idempotent as Stripe is:
 * sandbox/idempotency.ts) and the hosted card and 3-D Secure pages
 * (sandbox/page-routes.ts); its ledger is schema sandbox_gateway
 * (sandbox/ledger.ts); tests inject faults (sandbox/faults.ts) and switch
 * webhook delivery (sandbox/webhooks.ts).
 */
import express from 'express';
import type pg from 'pg';
import { publicUrl, type Config } from '../lib/config.ts';
import type { Logger } from '../lib/logger.ts';
import { SANDBOX_MOUNT_PATH, sandboxCredentials, sandboxEnabled } from '../lib/sandbox-settings.ts';
import { ApiError } from './api-error.ts';
import { apiRoutes } from './api-routes.ts';
import type { GatewayContext } from './context.ts';
import { createFaultInjector, type SandboxFault } from './faults.ts';
import { ledgerOf, type SandboxLedger } from './ledger.ts';
import { pageRoutes } from './page-routes.ts';
import { SandboxWebhookDispatcher } from './webhooks.ts';

export type { SandboxFault } from './faults.ts';
export type { SandboxLedgerPayment } from './ledger.ts';

export interface SandboxGatewayOptions {
  /** A pool whose role may write schema sandbox_gateway (the worker role). */
  pool: pg.Pool;
  /** Adapters authenticate with `Authorization: Bearer <apiKey>`. */
  apiKey: string;
  webhook: {
    /** Where signed events go, e.g. http://127.0.0.1:3000/webhooks/sandbox; null records events without sending. */
    url: string | null;
    /** Signing secrets (first is current; more during a rotation). */
    secrets: readonly string[];
    retryDelaysMs?: readonly number[];
  };
  logger: Logger;
  /** Absolute URL the router is mounted at (…/sandbox), for links it hands out; default: taken from each request. */
  publicUrl?: string;
  /** Lifetime of a hosted checkout. Default 24 h. */
  checkoutTtlMs?: number;
  /** How long a "timing out" API call keeps the connection open before dropping it unanswered. Default 60 s. */
  timeoutHoldMs?: number;
  now?: () => Date;
}

export interface SandboxGateway {
  router: express.Router;
  webhooks: SandboxWebhookDispatcher;
  /** Fault injection for the next API requests (not pages): a 500 before processing, or processing then no answer. */
  faults: {
    next(fault: SandboxFault, count?: number): void;
    clear(): void;
    /** Drops the connections of the requests held unanswered so far (their callers see a dropped connection). */
    dropHeld(): void;
  };
  ledger: SandboxLedger;
  close(): Promise<void>;
}

export function createSandboxGateway(options: SandboxGatewayOptions): SandboxGateway {
  const logger = options.logger.child({ component: 'sandbox-gateway' });
  const webhooks = new SandboxWebhookDispatcher({
    url: options.webhook.url,
    secrets: options.webhook.secrets,
    logger,
    ...(options.webhook.retryDelaysMs ? { retryDelaysMs: options.webhook.retryDelaysMs } : {}),
  });
  const faults = createFaultInjector(options.timeoutHoldMs ?? 60_000);
  const ctx: GatewayContext = { pool: options.pool, logger, now: options.now ?? (() => new Date()), webhooks, faults };

  const router = express.Router();
  router.use((req, res, next) => {
    res.locals.sandboxBase = (options.publicUrl ?? `${req.protocol}://${req.get('host')}${req.baseUrl}`).replace(/\/$/, '');
    next();
  });
  router.use('/api/v1', apiRoutes(ctx, { apiKey: options.apiKey, checkoutTtlMs: options.checkoutTtlMs ?? 24 * 3600_000 }));
  router.use(pageRoutes(ctx));
  router.use(((error, req, res, next) => {
    void next;
    if (error instanceof ApiError) {
      res.status(error.status).json(error.body());
      return;
    }
    if ((error as { type?: string }).type === 'entity.parse.failed') {
      res.status(400).json(new ApiError(400, 'invalid_request_error', 'body_invalid', 'the body is not valid JSON').body());
      return;
    }
    logger.error({ err: error, method: req.method, path: req.path }, 'sandbox gateway request failed');
    if (!res.headersSent) res.status(500).json(new ApiError(500, 'api_error', 'internal', 'The sandbox gateway failed.').body());
  }) as express.ErrorRequestHandler);

  return {
    router,
    webhooks,
    faults: { next: faults.next, clear: faults.clear, dropHeld: faults.close },
    ledger: ledgerOf(options.pool),
    async close() {
      faults.close();
      await webhooks.close();
    },
  };
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
