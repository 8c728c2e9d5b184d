/**
 * What billing tasks need besides their payload: the process's provider
 * adapters (built once per process from the configuration) and a few
 * settings. startWorker hands it to every task as a third argument, so task
 * files stay one small default export each (the file name is the task name).
 */
import type { JobHelpers } from 'graphile-worker';
import type { Config } from '../lib/config.ts';
import type { Logger } from '../lib/logger.ts';
import { createMailer, type Mailer } from '../lib/mailer.ts';
import type { ProviderRegistry } from '../providers/registry.ts';
import type { ChargeBatcher } from './charge-batcher.ts';

/** What the outbox tasks (webhooks, e-mail) need: docs/webhooks.md, docs/notifications.md. */
export interface OutboxSettings {
  /** How often each worker process checks the outbox for undispatched events (0: only the every-minute cron). */
  pollMs: number;
  /** Timeout of one webhook request. */
  webhookTimeoutMs: number;
  /** Seconds to wait after each failed attempt; null: the schedule in SQL. */
  webhookRetrySchedule: number[] | null;
  /** Deliver to loopback and private addresses (WEBHOOKS_ALLOW_PRIVATE). */
  webhooksAllowPrivate: boolean;
  mailer: Mailer;
}

export function outboxSettings(config: Config, logger: Logger): OutboxSettings {
  return {
    pollMs: config.OUTBOX_POLL_MS,
    webhookTimeoutMs: config.WEBHOOK_TIMEOUT_MS,
    webhookRetrySchedule: config.WEBHOOK_RETRY_SCHEDULE ?? null,
    webhooksAllowPrivate: config.WEBHOOKS_ALLOW_PRIVATE,
    mailer: createMailer(config, logger.child({ component: 'mail' })),
  };
}

export interface JobContext {
  providers: ProviderRegistry;
  /** Rows per statement in the billing crons. */
  batchSize: number;
  /** Payments in flight this long are settled by asking their provider. */
  reconcileAfterMinutes: number;
  outbox: OutboxSettings;
  /** invoices__collect's charges, shared by the jobs running in this process (jobs/charge-batcher.ts). */
  charges: ChargeBatcher;
  logger: Logger;
}

/** A task of jobs/tasks/: Graphile Worker's (payload, helpers) plus the process's JobContext. */
export type BillingTask = (payload: unknown, helpers: JobHelpers, context: JobContext) => Promise<void>;

/** Payload check for tasks whose payload names one row: `{ <field>: uuid }`. */
export function assertIdPayload<K extends string>(payload: unknown, field: K): asserts payload is Record<K, string> {
  const value = (payload as Record<string, unknown> | null)?.[field];
  if (typeof value !== 'string' || !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(value)) {
    throw new Error(`invalid payload: ${field} must be a uuid`);
  }
}
