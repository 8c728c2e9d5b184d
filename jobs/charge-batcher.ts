/**
 * The charge step of invoices__collect for many invoices at once. Jobs stay
 * one per invoice (job keys, retries, sweeps unchanged); each job hands its
 * invoice to this process's ChargeBatcher and waits for its own outcome. The
 * invoices handed over while the previous batches are busy travel together:
 *
 *   begin_payments(ids)           one statement, one commit: every attempt and
 *                                 its deterministic key committed, the
 *                                 payments' advisory locks taken on this
 *                                 batch's connection
 *   adapter.chargeSaved × n       concurrently (bounded), each with its key
 *   apply_payment_results(json)   one statement, one commit, per wave of answers:
 *                                 those within waveMs of the first together; a
 *                                 few slow ones later, alone, while the batch no
 *                                 longer holds back the batches behind it
 *   unlock_payments(ids)          then the connection goes back to the pool
 *
 * Every rule stays in SQL, per invoice (the 300-renewals-batches.sql section
 * of db/migrations/committed/000002.sql);
 * what a job sees is what the one-invoice task did: an invoice with nothing
 * to charge, an attempt in flight elsewhere or a payment busy in another
 * process completes the job; an error for that invoice fails that job alone
 * (Graphile Worker retries it; a pending attempt is then re-sent with its
 * key, invariant 3). Provider answers that are not answers (timeouts,
 * refused connections, 5xx) take the one-payment path of before
 * (invariant 8). A worker killed mid-batch leaves pending attempts with
 * their keys committed: the jobs run again and re-send them, or
 * reconciliation settles them; the locks die with the connection.
 *
 * At low volume a batch is one invoice and nothing waits: a batch starts as
 * soon as fewer than `maxInFlight` are running.
 */
import type pg from 'pg';
import type { Logger } from '../lib/logger.ts';
import { applyPaymentResult, applyTransportFailure, paymentResultRecord, type PaymentResultRecord } from '../billing/payment-outcomes.ts';
import { fiscalReceipts } from '../billing/fiscal-receipts.ts';
import type { ProviderRegistry } from '../providers/registry.ts';
import type { PaymentResult, ProviderCall, ProviderName } from '../providers/types.ts';

interface BeginRow {
  invoice_id: string;
  outcome: 'begun' | 'resend' | 'in_flight' | 'settled' | 'not_due' | 'nothing' | 'error';
  error_code: string | null;
  error_message: string | null;
  payment_id: string | null;
  locked: boolean;
  provider: ProviderName | null;
  idempotency_key: string | null;
  amount_minor: string | null;
  currency: string | null;
  customer_id: string | null;
  provider_token: string | null;
  invoice_number: string | null;
  description: string | null;
}

interface AppliedRow {
  payment_id: string;
  previous_status: string | null;
  status: string | null;
  outcome: string;
  error_code: string | null;
  error_message: string | null;
}

interface Waiting {
  invoiceId: string;
  log: Logger;
  resolve(): void;
  reject(error: unknown): void;
}

export interface ChargeBatcherOptions {
  pool: pg.Pool;
  providers: ProviderRegistry;
  logger: Logger;
  /** Invoices per batch. */
  maxBatch?: number;
  /** Batches under way at once (each holds one connection while its requests are on the wire). */
  maxInFlight?: number;
  /** Provider requests on the wire at once, across batches. */
  maxRequests?: number;
  /**
   * Answers that arrive within this many ms of a batch's first one are applied
   * together; the rest (a provider slow to answer a few requests) are applied
   * as they come, and the batch stops counting against maxInFlight, so that a
   * few slow requests hold only their own invoices (docs/operations.md, "Processes").
   */
  waveMs?: number;
  /** Batches left waiting only for such slow answers (each keeps its connection and its payments' locks). */
  maxDraining?: number;
}

type Answer = { row: BeginRow; answer: ProviderCall<PaymentResult> | null; thrown?: unknown };

/** The values of `calls` in waves: what arrives within `waveMs` of a wave's first value (or all, once all are in). */
async function* inWaves<T>(calls: Promise<T>[], waveMs: number): AsyncGenerator<T[]> {
  const arrived: T[] = [];
  let remaining = calls.length;
  let signal: () => void = () => {};
  for (const call of calls) {
    void call.then((value) => {
      arrived.push(value);
      remaining--;
      signal();
    });
  }
  while (remaining > 0 || arrived.length > 0) {
    if (arrived.length === 0) await new Promise<void>((resolve) => (signal = resolve));
    if (remaining > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waveMs);
        signal = () => {
          if (remaining > 0) return;
          clearTimeout(timer);
          resolve();
        };
      });
    }
    signal = () => {};
    yield arrived.splice(0);
  }
}

/** Batches under way at once, and draining ones, by default. */
const DEFAULT_MAX_IN_FLIGHT = 4;
const DEFAULT_MAX_DRAINING = 4;
/** The connections a batcher with the default limits may hold at once (one per running or draining batch). */
export const CHARGE_BATCHER_CONNECTIONS = DEFAULT_MAX_IN_FLIGHT + DEFAULT_MAX_DRAINING;

class InvoiceError extends Error {
  constructor(invoiceId: string, code: string | null, message: string | null) {
    super(`invoice ${invoiceId}: ${code ?? 'error'}${message ? ` (${message})` : ''}`);
    this.name = 'InvoiceError';
  }
}

export class ChargeBatcher {
  private queue: Waiting[] = [];
  private inFlight = 0;
  private draining = 0;
  private scheduled = false;
  private requests = 0;
  private waitingForRequest: Array<() => void> = [];
  private readonly maxBatch: number;
  private readonly maxInFlight: number;
  private readonly maxRequests: number;
  private readonly waveMs: number;
  private readonly maxDraining: number;

  constructor(private readonly options: ChargeBatcherOptions) {
    this.maxBatch = options.maxBatch ?? 200;
    this.maxInFlight = options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    this.maxRequests = options.maxRequests ?? 64;
    this.waveMs = options.waveMs ?? 200;
    this.maxDraining = options.maxDraining ?? DEFAULT_MAX_DRAINING;
  }

  /** Charges the invoice's open amount (as invoices__collect always did); resolves when its outcome is recorded. */
  collect(invoiceId: string, log: Logger): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ invoiceId, log, resolve, reject });
      if (!this.scheduled) {
        // Jobs handed out together (one local-queue fetch) arrive within a tick: let them share a batch.
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.pump();
        });
      }
    });
  }

  private pump(): void {
    // Draining batches beyond maxDraining count as running ones: connections stay bounded.
    while (this.inFlight + Math.max(0, this.draining - this.maxDraining) < this.maxInFlight && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      this.inFlight++;
      let draining = false;
      const drain = () => {
        if (draining) return;
        draining = true;
        this.inFlight--;
        this.draining++;
        this.pump();
      };
      void this.run(batch, drain).finally(() => {
        if (draining) this.draining--;
        else this.inFlight--;
        this.pump();
      });
    }
  }

  private async slot<T>(fn: () => Promise<T>): Promise<T> {
    while (this.requests >= this.maxRequests) await new Promise<void>((resolve) => this.waitingForRequest.push(resolve));
    this.requests++;
    try {
      return await fn();
    } finally {
      this.requests--;
      this.waitingForRequest.shift()?.();
    }
  }

  /** One batch; `drain()` once only slow answers are outstanding. */
  private async run(batch: Waiting[], drain: () => void): Promise<void> {
    const pending = new Map<string, Waiting[]>();
    for (const waiting of batch) pending.set(waiting.invoiceId, [...(pending.get(waiting.invoiceId) ?? []), waiting]);
    const settle = (invoiceId: string, error?: unknown) => {
      for (const waiting of pending.get(invoiceId) ?? []) error === undefined ? waiting.resolve() : waiting.reject(error);
      pending.delete(invoiceId);
    };
    let client: pg.PoolClient | null = null;
    let locked: string[] = [];
    let lockError: unknown;
    try {
      client = await this.options.pool.connect();
      const { rows } = await client.query<BeginRow>('select * from app_private.begin_payments($1::uuid[])', [[...pending.keys()]]);
      locked = rows.filter((r) => (r.outcome === 'begun' || r.outcome === 'resend') && r.locked).map((r) => r.payment_id!);
      const toCharge: BeginRow[] = [];
      for (const row of rows) {
        const log = pending.get(row.invoice_id)?.[0]?.log ?? this.options.logger;
        switch (row.outcome) {
          case 'begun':
          case 'resend':
            if (!row.locked) {
              log.info({ paymentId: row.payment_id }, 'payment busy in another process; leaving it');
              settle(row.invoice_id);
            } else {
              if (row.outcome === 'resend') log.warn({ paymentId: row.payment_id }, 're-sending an unanswered charge with its key');
              toCharge.push(row);
            }
            break;
          case 'error':
            settle(row.invoice_id, new InvoiceError(row.invoice_id, row.error_code, row.error_message));
            break;
          default:
            log.debug({ outcome: row.outcome, code: row.error_code, paymentId: row.payment_id }, 'nothing to charge');
            settle(row.invoice_id);
        }
      }

      // 54-FZ receipts of the RUB charges, built and kept with their payments in one statement before any is sent.
      const receipts = await fiscalReceipts(
        client,
        toCharge.filter((row) => row.currency === 'RUB').map((row) => row.payment_id!),
      );

      // The provider calls, each with its attempt's key; their answers applied in waves.
      const calls = toCharge.map(async (row): Promise<Answer> => {
        const adapter = this.options.providers.get(row.provider!);
        if (!adapter) return { row, answer: null, thrown: new Error(`provider ${row.provider} of payment ${row.payment_id} is not configured in this process`) };
        if (!row.provider_token) return { row, answer: null };
        try {
          const answer = await this.slot(() =>
            adapter.chargeSaved({
              idempotencyKey: row.idempotency_key!,
              amount: { amountMinor: BigInt(row.amount_minor!), currency: row.currency! },
              paymentMethodToken: row.provider_token!,
              description: row.description!,
              customerReference: row.customer_id!,
              metadata: { invoice_number: row.invoice_number! },
              receipt: receipts.get(row.payment_id!) ?? null,
            }),
          );
          return { row, answer };
        } catch (thrown) {
          return { row, answer: null, thrown };
        }
      });

      for await (const wave of inWaves(calls, this.waveMs)) {
        await this.applyAnswers(client, wave, pending, settle, batch.length);
        if (wave.length < toCharge.length) drain();
      }

      // Every invoice has its row; one that had none would otherwise wait for ever.
      for (const invoiceId of [...pending.keys()]) settle(invoiceId, new InvoiceError(invoiceId, 'NO_OUTCOME', 'begin_payments returned no row for it'));
    } catch (error) {
      for (const invoiceId of [...pending.keys()]) settle(invoiceId, error);
    } finally {
      if (client) {
        if (locked.length > 0) {
          await client.query('select app_private.unlock_payments($1::uuid[])', [locked]).catch((error: unknown) => {
            lockError = error;
          });
        }
        // A connection that could not release its locks is closed: they die with it.
        client.release(lockError instanceof Error ? lockError : undefined);
      }
    }
  }

  /** Applies provider answers: the answers in one statement, the rest (no answer, misuse) one by one as before. */
  private async applyAnswers(
    client: pg.PoolClient,
    answers: Answer[],
    pending: Map<string, Waiting[]>,
    settle: (invoiceId: string, error?: unknown) => void,
    batchSize: number,
  ): Promise<void> {
    const elements: Array<Partial<PaymentResultRecord>> = [];
    const byPayment = new Map<string, BeginRow>();
    const unanswered: Array<{ row: BeginRow; answer: Extract<ProviderCall<PaymentResult>, { ok: false }> }> = [];
    for (const { row, answer, thrown } of answers) {
      if (thrown !== undefined) {
        settle(row.invoice_id, thrown);
      } else if (answer === null) {
        // The saved method was deleted: it can never be charged again; ask the customer for a new card.
        elements.push({
          payment_id: row.payment_id!,
          outcome: 'failed',
          failure_category: 'hard_decline',
          failure_code: 'payment_method_missing',
          failure_message: 'the payment method was removed',
        });
        byPayment.set(row.payment_id!, row);
      } else if (answer.ok) {
        elements.push(paymentResultRecord(row.payment_id!, answer.value));
        byPayment.set(row.payment_id!, row);
      } else {
        unanswered.push({ row, answer });
      }
    }
    if (elements.length > 0) {
      const { rows: applied } = await client.query<AppliedRow>('select * from app_private.apply_payment_results($1::jsonb)', [JSON.stringify(elements)]);
      let succeeded = 0;
      let failed = 0;
      for (const result of applied) {
        const row = byPayment.get(result.payment_id)!;
        if (result.outcome === 'error') {
          settle(row.invoice_id, new InvoiceError(row.invoice_id, result.error_code, result.error_message));
          continue;
        }
        if (result.status === 'succeeded') succeeded++;
        if (result.status === 'failed') failed++;
        pending.get(row.invoice_id)?.[0]?.log.debug({ paymentId: row.payment_id, provider: row.provider, status: result.status }, 'charge answered');
        settle(row.invoice_id);
      }
      this.options.logger.info({ charges: applied.length, succeeded, failed, batch: batchSize }, 'charges answered');
    }
    for (const { row, answer } of unanswered) {
      try {
        await this.unanswered(client, row, answer.failure, pending.get(row.invoice_id)?.[0]?.log ?? this.options.logger);
        settle(row.invoice_id);
      } catch (error) {
        settle(row.invoice_id, error);
      }
    }
  }

  /** The provider did not answer (see invoices__collect): a 5xx is looked up by key first; a timeout stays unknown (invariant 8). */
  private async unanswered(client: pg.PoolClient, row: BeginRow, failure: Extract<ProviderCall<PaymentResult>, { ok: false }>['failure'], log: Logger): Promise<void> {
    const adapter = this.options.providers.get(row.provider!)!;
    if (failure.class === 'gateway_error' && /^http_5/.test(failure.code)) {
      // A 5xx may have been processed: ask before failing the attempt (invariant 8).
      const lookup = await adapter.retrieve({ idempotencyKey: row.idempotency_key!, createdAfter: new Date(Date.now() - 3600_000) });
      if (lookup.ok && lookup.value) {
        await applyPaymentResult(client, row.payment_id!, lookup.value);
        return;
      }
      const certain = lookup.ok && adapter.capabilities.retrieveByKey !== 'search_eventually_consistent';
      await applyTransportFailure(client, row.payment_id!, certain ? failure : { ...failure, class: 'unknown' });
      log.warn({ paymentId: row.payment_id, provider: row.provider, failure: failure.code, settled: certain }, 'provider error while charging');
      return;
    }
    await applyTransportFailure(client, row.payment_id!, failure);
    log.warn({ paymentId: row.payment_id, provider: row.provider, failure: failure.code, class: failure.class }, 'provider did not answer the charge');
  }
}
