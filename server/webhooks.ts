/**
 * POST /webhooks/:provider — provider webhook intake.
 *
 * Verify, store, enqueue, answer; nothing else on the request path:
 *   1. unknown (or unconfigured) provider → 404, before the body is read;
 *   2. the raw bytes (express.raw, BODY_LIMIT_BYTES; larger → 413), because
 *      signatures are over bytes, never over re-serialized JSON;
 *   3. the adapter's verifyWebhook (HMAC for the sandbox and Stripe, a
 *      confirming GET for YooKassa — the only provider call here, mandated by
 *      its unsigned notifications). A rejection stores nothing: 400 with a
 *      JSON code and the reason, or 503 when the provider should deliver
 *      again (YooKassa could not be asked); counted in
 *      webhook_rejections_total and logged as a warning (never the body, the
 *      signature or a secret);
 *   4. per event, one statement: app_private.accept_provider_event stores it
 *      once (unique provider + event id) and queues provider_events__process
 *      in the same transaction; ignored types are stored as processed;
 *   5. 200. Duplicates are 200 too (the provider must stop re-delivering).
 */
import express from 'express';
import type pg from 'pg';
import { Counter } from 'prom-client';
import { eventToJson } from '../lib/payment-outcomes.ts';
import type { Logger } from '../lib/logger.ts';
import type { ProviderRegistry } from '../providers/registry.ts';
import type { ProviderName } from '../providers/types.ts';
import type { Metrics } from './metrics.ts';

export interface WebhookIntakeOptions {
  /** A worker-role pool (app_private.accept_provider_event). */
  pool: pg.Pool;
  /** The process's adapters; null while the process is still starting. */
  providers: () => ProviderRegistry | null;
  metrics: Metrics;
  bodyLimitBytes: number;
  logger: Logger;
}

function error(res: express.Response, status: number, code: string, message: string, extra: Record<string, unknown> = {}): void {
  res.status(status).json({ error: { code, message, ...extra } });
}

export function webhookRoutes(options: WebhookIntakeOptions): express.Router {
  const rejections = new Counter({
    name: 'webhook_rejections_total',
    help: 'Provider webhooks refused at intake (bad or missing signature, stale, malformed, not confirmed), by provider and reason',
    labelNames: ['provider', 'reason'] as const,
    registers: [options.metrics.registry],
  });
  const accepted = new Counter({
    name: 'webhook_events_total',
    help: 'Verified provider events at intake, by provider and whether they were new or duplicate deliveries',
    labelNames: ['provider', 'result'] as const,
    registers: [options.metrics.registry],
  });
  const raw = express.raw({ type: () => true, limit: options.bodyLimitBytes });
  const router = express.Router();

  router.post(
    '/webhooks/:provider',
    (req, res, next) => {
      const registry = options.providers();
      if (!registry) return error(res, 503, 'STARTING', 'the server is starting; deliver again shortly');
      if (!registry.get(req.params.provider as ProviderName)) {
        return error(res, 404, 'UNKNOWN_PROVIDER', `no payment provider ${JSON.stringify(req.params.provider)} is configured here`);
      }
      raw(req, res, (failure?: unknown) => {
        if (!failure) return next();
        const e = failure as { type?: string; message?: string };
        if (e.type === 'entity.too.large') {
          req.log.warn({ provider: req.params.provider, limit: options.bodyLimitBytes }, 'webhook body too large');
          return error(res, 413, 'PAYLOAD_TOO_LARGE', `webhook body exceeds ${options.bodyLimitBytes} bytes`);
        }
        next(failure);
      });
    },
    async (req, res, next) => {
      const provider = req.params.provider as ProviderName;
      const adapter = options.providers()!.get(provider)!;
      const rawBody = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      try {
        const verdict = await adapter.verifyWebhook({ rawBody, headers: req.headers });
        if (!verdict.ok) {
          const { reason, message, retryable } = verdict.rejection;
          rejections.inc({ provider, reason });
          req.log.warn({ provider, reason, retryable, bytes: rawBody.length }, 'webhook rejected');
          return error(res, retryable ? 503 : 400, retryable ? 'WEBHOOK_NOT_CONFIRMED_YET' : 'WEBHOOK_REJECTED', message, { reason });
        }
        const text = rawBody.toString('utf8');
        let duplicates = 0;
        for (const event of verdict.events) {
          const { rows } = await options.pool.query<{ event_id: string; is_new: boolean }>(
            'select event_id, is_new from app_private.accept_provider_event($1, $2, $3, $4, $5)',
            [provider, event.eventId, event.providerType, JSON.stringify({ event: eventToJson(event), raw: text }), event.kind === 'ignored'],
          );
          const stored = rows[0]!;
          accepted.inc({ provider, result: stored.is_new ? 'new' : 'duplicate' });
          if (!stored.is_new) duplicates++;
          req.log.debug({ provider, eventId: event.eventId, type: event.providerType, kind: event.kind, inbox: stored.event_id, new: stored.is_new }, 'webhook event stored');
        }
        res.status(200).json({ received: verdict.events.length, duplicates });
      } catch (failure) {
        next(failure);
      }
    },
  );
  return router;
}
