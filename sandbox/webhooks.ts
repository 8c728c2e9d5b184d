/**
 * Asynchronous, signed webhook delivery for the sandbox gateway, with the
 * switches tests need to reproduce what real providers do to us: deliver the
 * same event twice, late, or out of order.
 *
 *   dispatcher.configure({ duplicates: 1 })   every event is delivered twice
 *   dispatcher.configure({ delayMs: 5000 })   each delivery waits (for manual testing)
 *   dispatcher.pause() … dispatcher.resume({ reverse: true })
 *                                             hold deliveries, then release them newest first
 *   await dispatcher.idle()                   every released delivery has been answered
 *   dispatcher.log                            what was sent, when, and the receiver's answer
 *
 * Failed deliveries (network error or non-2xx) are retried on `retryDelaysMs`;
 * an event that still fails is logged and dropped, as providers eventually do
 * (reconciliation covers it).
 */
import type { Logger } from '../lib/logger.ts';
import { SANDBOX_SIGNATURE_HEADER, signWebhook } from '../lib/webhook-signature.ts';

export interface SandboxEvent {
  id: string;
  type: string;
  created: number;
  data: { object: Record<string, unknown> };
}

export interface DeliveryRecord {
  eventId: string;
  type: string;
  attempt: number;
  /** HTTP status of the receiver's answer, or null when it could not be reached. */
  status: number | null;
  ok: boolean;
  at: Date;
}

export interface WebhookSwitches {
  /** Extra copies of every event (0 = deliver once). */
  duplicates: number;
  /** Wait before each delivery, in milliseconds. */
  delayMs: number;
}

export interface DispatcherOptions {
  /** Where to deliver; null disables delivery (events are still recorded). */
  url: string | null;
  /** One or more secrets; each adds a v1 entry to the header (rotation). */
  secrets: readonly string[];
  logger: Logger;
  retryDelaysMs?: readonly number[];
  fetch?: typeof fetch;
  timeoutMs?: number;
}

interface Pending {
  event: SandboxEvent;
  body: string;
  attempt: number;
}

export class SandboxWebhookDispatcher {
  readonly log: DeliveryRecord[] = [];
  private url: string | null;
  private readonly secrets: readonly string[];
  private readonly logger: Logger;
  private readonly retryDelaysMs: readonly number[];
  private readonly doFetch: typeof fetch;
  private readonly timeoutMs: number;
  private switches: WebhookSwitches = { duplicates: 0, delayMs: 0 };
  private paused = false;
  private held: Pending[] = [];
  private inFlight = 0;
  private waiters: Array<() => void> = [];
  private timers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(options: DispatcherOptions) {
    if (options.secrets.length === 0) throw new Error('the sandbox webhook dispatcher needs a signing secret');
    this.url = options.url;
    this.secrets = options.secrets;
    this.logger = options.logger;
    this.retryDelaysMs = options.retryDelaysMs ?? [1_000, 5_000, 30_000, 120_000];
    this.doFetch = options.fetch ?? fetch;
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  configure(switches: Partial<WebhookSwitches>): void {
    this.switches = { ...this.switches, ...switches };
  }

  setUrl(url: string | null): void {
    this.url = url;
  }

  /** Queues an event (after its transaction committed). */
  enqueue(event: SandboxEvent): void {
    if (this.closed) return;
    const body = JSON.stringify(event);
    for (let copy = 0; copy <= this.switches.duplicates; copy++) {
      const pending: Pending = { event, body, attempt: 1 };
      if (this.paused) this.held.push(pending);
      else this.schedule(pending, this.switches.delayMs);
    }
  }

  /** Holds every delivery from now on until resume(). */
  pause(): void {
    this.paused = true;
  }

  /** Releases held deliveries, in arrival order or newest first. */
  resume(options: { reverse?: boolean } = {}): void {
    this.paused = false;
    const released = options.reverse ? this.held.reverse() : this.held;
    this.held = [];
    // Sequential release keeps the chosen order observable at the receiver.
    void this.deliverInOrder(released);
  }

  get heldCount(): number {
    return this.held.length;
  }

  /** Resolves when nothing is scheduled or in flight (held deliveries do not count). */
  idle(): Promise<void> {
    if (this.inFlight === 0 && this.timers.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.held = [];
    this.settle();
    await this.idle();
  }

  private async deliverInOrder(items: Pending[]): Promise<void> {
    this.inFlight++;
    try {
      for (const item of items) await this.deliver(item);
    } finally {
      this.inFlight--;
      this.settle();
    }
  }

  private schedule(pending: Pending, delayMs: number): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      this.inFlight++;
      void this.deliver(pending).finally(() => {
        this.inFlight--;
        this.settle();
      });
    }, delayMs);
    this.timers.add(timer);
  }

  private settle(): void {
    if (this.inFlight === 0 && this.timers.size === 0) {
      const waiters = this.waiters;
      this.waiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  private async deliver(pending: Pending): Promise<void> {
    if (this.closed || !this.url) return;
    const timestamp = Math.floor(Date.now() / 1000);
    const header = signWebhook(pending.body, this.secrets, timestamp);
    let status: number | null = null;
    try {
      const response = await this.doFetch(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', [SANDBOX_SIGNATURE_HEADER]: header, 'user-agent': 'abonement-sandbox-gateway/1' },
        body: pending.body,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      status = response.status;
      await response.arrayBuffer().catch(() => undefined);
    } catch (error) {
      this.logger.debug({ err: error, eventId: pending.event.id }, 'sandbox webhook delivery failed');
    }
    const ok = status !== null && status >= 200 && status < 300;
    this.log.push({ eventId: pending.event.id, type: pending.event.type, attempt: pending.attempt, status, ok, at: new Date() });
    if (ok || this.closed) return;
    const delay = this.retryDelaysMs[pending.attempt - 1];
    if (delay === undefined) {
      this.logger.warn({ eventId: pending.event.id, type: pending.event.type, attempts: pending.attempt }, 'sandbox webhook dropped after retries');
      return;
    }
    this.schedule({ ...pending, attempt: pending.attempt + 1 }, delay);
  }
}
