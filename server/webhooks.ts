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
 *   4. the event is stored once (unique provider + event id) and its
 *      provider_events__process job queued, in one transaction
 *      (app_private.accept_provider_events); ignored types are stored as
 *      processed;
 *   5. 200, once that transaction has committed. Duplicates are 200 too (the
 *      provider must stop re-delivering).
 *
 * Group commit (InboxWriter): queueing a Graphile Worker job sends a NOTIFY,
 * and PostgreSQL serialises notifying commits including their WAL flush, so
 * one transaction per event caps intake at about one event per fsync. Events
 * that arrive while a batch is being written go together into the next one:
 * at low load a batch is one event (no added latency), under load a few
 * dozen. Every request still waits for the commit that holds its own event
 * and job. A batch that fails is retried event by event, so one bad event
 * cannot fail the others.
 */
import express from 'express';
import type pg from 'pg';
import { Counter, Histogram } from 'prom-client';
import { eventToJson } from '../billing/payment-outcomes.ts';
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
  const batchSizes = new Histogram({
    name: 'webhook_inbox_batch_events',
    help: 'Events written per inbox transaction at webhook intake (group commit)',
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500],
    registers: [options.metrics.registry],
  });
  const inbox = new InboxWriter(options.pool, options.logger, (n) => batchSizes.observe(n));
  const raw = express.raw({ type: () => true, limit: options.bodyLimitBytes });
  const router = express.Router();

  router.post(
    '/webhooks/:provider',
    (req, res, next) => {
      const registry = options.providers();
      if (!registry) return error(res, 503, 'STARTING', 'the server is starting; deliver again shortly');
      const adapter = registry.get(req.params.provider as ProviderName);
      if (!adapter) {
        return error(res, 404, 'UNKNOWN_PROVIDER', `no payment provider ${JSON.stringify(req.params.provider)} is configured here`);
      }
      if (adapter.webhookSources && !adapter.webhookSources.allows(req.ip)) {
        // A provider that publishes its sending addresses instead of signing (YooKassa): anyone else is refused unread.
        rejections.inc({ provider: adapter.name, reason: 'source_address' });
        req.log.warn({ provider: adapter.name, address: req.ip, forwardedFor: req.headers['x-forwarded-for'] ?? null }, "webhook from an address outside the provider's ranges");
        return error(res, 403, 'WEBHOOK_SOURCE_REFUSED', `${adapter.name} notifications are accepted only from ${adapter.name}'s published addresses`);
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
      const rawBody: Buffer = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      try {
        const verdict = await adapter.verifyWebhook({ rawBody, headers: req.headers, url: req.originalUrl });
        if (!verdict.ok) {
          const { reason, message, retryable } = verdict.rejection;
          rejections.inc({ provider, reason });
          req.log.warn({ provider, reason, retryable, bytes: rawBody.length }, 'webhook rejected');
          return error(res, retryable ? 503 : 400, retryable ? 'WEBHOOK_NOT_CONFIRMED_YET' : 'WEBHOOK_REJECTED', message, { reason });
        }
        const raw = rawBody.toString('utf8');
        const stored = await Promise.all(
          verdict.events.map((event) =>
            inbox.accept({ provider, provider_event_id: event.eventId, type: event.providerType, payload: { event: eventToJson(event), raw }, ignored: event.kind === 'ignored' }),
          ),
        );
        let duplicates = 0;
        for (const [index, result] of stored.entries()) {
          accepted.inc({ provider, result: result.isNew ? 'new' : 'duplicate' });
          if (!result.isNew) duplicates++;
          req.log.debug(
            { provider, eventId: verdict.events[index]!.eventId, type: verdict.events[index]!.providerType, inbox: result.eventId, new: result.isNew },
            'webhook event stored',
          );
        }
        // A provider that expects a particular acknowledgement names it (CloudPayments: {"code":0}).
        res.status(200).json(adapter.webhookAnswer ?? { received: stored.length, duplicates });
      } catch (failure) {
        next(failure);
      }
    },
  );
  return router;
}

export interface InboxEvent {
  provider: ProviderName;
  provider_event_id: string;
  type: string;
  payload: { event: unknown; raw: string };
  ignored: boolean;
}

interface Waiting {
  event: InboxEvent;
  resolve(result: { eventId: string; isNew: boolean }): void;
  reject(error: unknown): void;
}

/** Writes inbox events in batches: whatever arrived while the previous batch was being written (see the module comment). */
export class InboxWriter {
  private queue: Waiting[] = [];
  private inFlight = 0;

  constructor(
    private readonly pool: pg.Pool,
    private readonly logger: Logger,
    private readonly observe: (events: number) => void = () => undefined,
    private readonly maxBatch = 500,
    private readonly maxInFlight = 2,
  ) {}

  accept(event: InboxEvent): Promise<{ eventId: string; isNew: boolean }> {
    return new Promise((resolve, reject) => {
      this.queue.push({ event, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      this.inFlight++;
      void this.write(batch).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private async write(batch: Waiting[]): Promise<void> {
    try {
      const { rows } = await this.pool.query<{ event_id: string; is_new: boolean }>('select event_id, is_new from app_private.accept_provider_events($1)', [
        JSON.stringify(batch.map((w) => w.event)),
      ]);
      if (rows.length !== batch.length) throw new Error(`inbox returned ${rows.length} rows for ${batch.length} events`);
      this.observe(batch.length);
      for (const [index, waiting] of batch.entries()) waiting.resolve({ eventId: rows[index]!.event_id, isNew: rows[index]!.is_new });
    } catch (error) {
      if (batch.length === 1) {
        batch[0]!.reject(error);
        return;
      }
      this.logger.warn({ err: error, events: batch.length }, 'inbox batch failed; writing its events one by one');
      await Promise.all(batch.map((waiting) => this.write([waiting])));
    }
  }
}
