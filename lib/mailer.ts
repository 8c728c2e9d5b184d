/**
 * Outgoing e-mail (customer notifications, docs/notifications.md) through
 * nodemailer. With SMTP_URL set, messages go to that SMTP server; without it
 * (development, tests that do not test mail) nodemailer's JSON transport
 * builds the message without sending it, and the caller records the e-mail
 * as skipped ("not sent"), so nothing pretends a customer was told.
 *
 * The SMTP URL carries credentials: it is never logged.
 */
import nodemailer from 'nodemailer';
import type { Config } from './config.ts';
import type { Logger } from './logger.ts';

export interface OutgoingMail {
  from: { name: string; address: string };
  to: string;
  subject: string;
  text: string;
  html: string;
  /** Deterministic Message-ID: a re-sent copy (at-least-once) carries the same one, so mail clients can fold duplicates. */
  messageId: string;
  headers?: Record<string, string>;
}

export interface MailResult {
  /** false when no SMTP server is configured: the message was built, not sent. */
  delivered: boolean;
  messageId: string;
  /** The SMTP server's answer, e.g. "250 OK: queued as …". */
  response?: string;
}

export interface Mailer {
  /** Sender address (MAIL_FROM). */
  readonly fromAddress: string;
  readonly configured: boolean;
  send(mail: OutgoingMail): Promise<MailResult>;
}

/** Sender address when MAIL_FROM is unset (development only: SMTP_URL requires MAIL_FROM). */
export const DEFAULT_MAIL_FROM = 'no-reply@abonement.invalid';

export function createMailer(config: Pick<Config, 'SMTP_URL' | 'MAIL_FROM'>, logger: Logger): Mailer {
  const fromAddress = config.MAIL_FROM ?? DEFAULT_MAIL_FROM;
  if (!config.SMTP_URL) {
    const transport = nodemailer.createTransport({ jsonTransport: true });
    logger.info('SMTP_URL is not set: customer e-mails are rendered but not sent');
    return {
      fromAddress,
      configured: false,
      async send(mail) {
        const info = await transport.sendMail(mail);
        return { delivered: false, messageId: String(info.messageId ?? mail.messageId) };
      },
    };
  }
  // One connection per message (no pool): nothing to close at shutdown, and a broken server cannot wedge a pool.
  // Bounded waits: a hung server fails the job (retried later) instead of holding a worker slot for minutes.
  const transport = nodemailer.createTransport({ url: config.SMTP_URL, connectionTimeout: 15_000, greetingTimeout: 15_000, socketTimeout: 30_000 });
  return {
    fromAddress,
    configured: true,
    async send(mail) {
      const info = await transport.sendMail(mail);
      return { delivered: true, messageId: String(info.messageId ?? mail.messageId), response: info.response };
    },
  };
}
