/**
 * One attempt of one webhook delivery (docs/webhooks.md):
 *
 *   1. app_private.begin_webhook_attempt leases the attempt and returns the
 *      endpoint URL, its active signing secrets and the exact body (nothing
 *      to do for a succeeded, given-up or deleted delivery: a replayed job is
 *      a no-op);
 *   2. check that the URL's host is not (or no longer resolves to) a loopback,
 *      private, link-local or metadata address (lib/webhook-address.ts), then
 *      POST the body, signed with every active secret (Abonement-Signature),
 *      with the event id in Abonement-Event-Id, a timeout, no redirects
 *      followed, and at most the first 200 characters of a failed answer kept;
 *   3. app_private.record_webhook_attempt decides: succeeded (2xx), a retry
 *      queued on the schedule (this task again, at run_at), or gave_up (410
 *      Gone also disables the endpoint).
 * No transaction is open during the request. Secrets and signatures are never
 * logged; the URL is logged by host only (its path or query may carry a
 * tenant's token).
 */
import { webhookHostRefusal } from '../../lib/webhook-address.ts';
import { signWebhook } from '../../lib/webhook-signature.ts';
import { assertIdPayload, type BillingTask } from '../context.ts';

interface Attempt {
  delivery_id: string | null;
  event_id: string | null;
  event_type: string | null;
  status: string;
  attempt: number | null;
  url: string | null;
  secrets: string[] | null;
  payload: string | null;
}

const SNIPPET_CHARS = 200;
const READ_LIMIT_BYTES = 2048;

/** The start of a response body, whitespace folded, for last_error. Reads at most READ_LIMIT_BYTES. */
async function snippet(response: Response): Promise<string> {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < READ_LIMIT_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } catch {
    // A body cut short (timeout, reset) still leaves what arrived.
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks).toString('utf8').replace(/\s+/g, ' ').trim().slice(0, SNIPPET_CHARS);
}

function describeFailure(error: unknown, timeoutMs: number): string {
  const e = error as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return `timeout: no answer within ${timeoutMs} ms`;
  const code = e?.cause?.code;
  return `request failed: ${code ?? e?.cause?.message ?? e?.message ?? String(error)}`.slice(0, 500);
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return '?';
  }
}

const task: BillingTask = async (payload, helpers, context) => {
  assertIdPayload(payload, 'delivery_id');
  const { webhookTimeoutMs: timeoutMs, webhookRetrySchedule } = context.outbox;
  const log = context.logger.child({ jobId: helpers.job.id, deliveryId: payload.delivery_id });
  // The lease outlives the request: another job for this delivery waits rather than sending in parallel.
  const leaseSeconds = Math.ceil(timeoutMs / 1000) + 30;
  const { rows } = await helpers.query<Attempt>('select * from app_private.begin_webhook_attempt($1, $2)', [payload.delivery_id, leaseSeconds]);
  const attempt = rows[0]!;
  if (attempt.attempt === null || !attempt.url || !attempt.payload || !attempt.secrets?.length) {
    log.debug({ status: attempt.status }, 'nothing to deliver');
    return;
  }

  const body = attempt.payload;
  const started = performance.now();
  let httpStatus: number | null = null;
  let error: string | null = null;
  try {
    // Checked now as well as at registration: a name can point elsewhere by now (docs/webhooks.md, "Security notes").
    error = await webhookHostRefusal(attempt.url, context.outbox.webhooksAllowPrivate);
    if (!error) {
      const response = await fetch(attempt.url, {
        method: 'POST',
        redirect: 'manual',
        signal: AbortSignal.timeout(timeoutMs),
        headers: {
          'content-type': 'application/json; charset=utf-8',
          'user-agent': 'abonement-webhooks/1.0',
          'abonement-signature': signWebhook(body, attempt.secrets),
          'abonement-event-id': attempt.event_id!,
          'abonement-delivery-attempt': String(attempt.attempt),
        },
        body,
      });
      httpStatus = response.status;
      if (response.ok) {
        await response.body?.cancel().catch(() => undefined);
      } else {
        const text = await snippet(response);
        const location = response.status >= 300 && response.status < 400 ? response.headers.get('location') : null;
        error = `HTTP ${response.status}${location ? ' (redirects are not followed)' : ''}${text ? `: ${text}` : ''}`;
      }
    }
  } catch (failure) {
    error = describeFailure(failure, timeoutMs);
  }
  const responseMs = Math.round(performance.now() - started);

  const recorded = await helpers.query<{ status: string; next_attempt_at: Date | null }>(
    'select status, next_attempt_at from app_private.record_webhook_attempt($1, $2, $3, $4, $5, $6)',
    [attempt.delivery_id, attempt.attempt, httpStatus, error, responseMs, webhookRetrySchedule],
  );
  const outcome = recorded.rows[0];
  const fields = {
    eventId: attempt.event_id,
    eventType: attempt.event_type,
    host: hostOf(attempt.url),
    attempt: attempt.attempt,
    httpStatus,
    responseMs,
    status: outcome?.status,
    nextAttemptAt: outcome?.next_attempt_at ?? undefined,
  };
  if (outcome?.status === 'succeeded') log.info(fields, 'webhook delivered');
  else log.warn({ ...fields, error }, outcome?.status === 'gave_up' ? 'webhook delivery gave up' : 'webhook delivery failed; retry scheduled');
};

export default task;
