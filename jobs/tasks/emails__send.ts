/**
 * Sends one customer e-mail (a sent_emails row, queued by
 * app_private.queue_event_emails or an operator's resend):
 *   1. app_private.begin_email_send leases the queued row and returns what
 *      the template shows (null: sent, skipped or failed already, so a
 *      replayed job sends nothing);
 *   2. render it (billing/email-templates.ts) and send it over SMTP with a
 *      Message-ID derived from the row, so a copy re-sent after a crash
 *      carries the same id;
 *   3. app_private.record_email_result: sent with the server's message id;
 *      skipped when no SMTP server is configured; on an error the row stays
 *      queued and this job fails, so Graphile Worker retries it with backoff
 *      (failed after 8 attempts).
 * An e-mail leased by another attempt (EMAIL_SEND_IN_PROGRESS, e.g. by a
 * worker that was killed) is not a failure: the job schedules itself for
 * when the lease ends.
 * The recipient's address is not logged.
 */
import { renderEmail, type EmailContext } from '../../billing/email-templates.ts';
import { assertIdPayload, type BillingTask } from '../context.ts';

const task: BillingTask = async (payload, helpers, context) => {
  assertIdPayload(payload, 'email_id');
  const { mailer } = context.outbox;
  const log = context.logger.child({ jobId: helpers.job.id, emailId: payload.email_id });
  let mail: (EmailContext & { attempt: number }) | null | undefined;
  try {
    const { rows } = await helpers.query<{ context: (EmailContext & { attempt: number }) | null }>('select app_private.begin_email_send($1) as context', [payload.email_id]);
    mail = rows[0]?.context;
  } catch (error) {
    const { code, detail } = error as { code?: string; detail?: string };
    if (code !== 'AB409' || detail !== 'EMAIL_SEND_IN_PROGRESS') throw error;
    // Another attempt holds the lease (or held it when its worker was killed): run again when it ends, without failing.
    const { rows } = await helpers.query<{ ends_at: Date | null }>('select app_private.email_send_lease_ends_at($1) as ends_at', [payload.email_id]);
    const runAt = rows[0]?.ends_at ?? new Date();
    await helpers.addJob('emails__send', { email_id: payload.email_id }, { runAt, jobKey: `emails__send:${payload.email_id}`, maxAttempts: 10 });
    log.info({ runAt }, 'e-mail leased by another attempt: sent after its lease ends');
    return;
  }
  if (!mail) {
    log.debug('nothing to send');
    return;
  }
  const rendered = renderEmail(mail);
  const record = (outcome: 'sent' | 'not_sent' | 'error', messageId: string | null, error: string | null) =>
    helpers.query<{ status: string }>('select app_private.record_email_result($1, $2, $3, $4, $5, $6) as status', [
      mail.email_id,
      mail.attempt,
      outcome,
      rendered.subject,
      messageId,
      error,
    ]);
  let result;
  try {
    result = await mailer.send({
      from: { name: mail.tenant_name, address: mailer.fromAddress },
      to: mail.to,
      subject: rendered.subject,
      text: rendered.text,
      html: rendered.html,
      messageId: `<${mail.email_id}@${mailer.fromAddress.split('@')[1] ?? 'abonement'}>`,
      headers: { 'X-Abonement-Event-Id': mail.event_id, 'X-Abonement-Template': mail.template },
    });
  } catch (error) {
    const message = (error as Error).message?.slice(0, 500) ?? String(error);
    const {
      rows: [after],
    } = await record('error', null, message);
    log.warn({ template: mail.template, attempt: mail.attempt, status: after?.status, error: message }, 'e-mail not sent');
    if (after?.status === 'queued') throw new Error(`SMTP send failed (attempt ${mail.attempt}): ${message}`);
    return;
  }
  if (!result.delivered) {
    await record('not_sent', result.messageId, null);
    log.info({ template: mail.template, eventId: mail.event_id }, 'e-mail rendered but not sent: no SMTP server configured (SMTP_URL)');
    return;
  }
  await record('sent', result.messageId, null);
  log.info({ template: mail.template, eventId: mail.event_id, messageId: result.messageId }, 'e-mail sent');
};

export default task;
