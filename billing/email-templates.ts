/**
 * Customer e-mail templates (docs/notifications.md): plain text and simple
 * HTML, in English and Russian (the customer's locale; anything else gets
 * English). What to say comes from app_private.email_context (SQL); this file
 * only words it.
 *
 * Money arrives as minor units (a string of digits) and is formatted exactly:
 * minorToDecimal (string arithmetic on the currency exponent) gives the
 * decimal, and Intl.NumberFormat formats that *string* (never a float) with
 * the currency's number of fraction digits: 1990 EUR → €19.90, 500 JPY → ¥500,
 * 1234 BHD → BHD 1.234. Dates are shown in the tenant's time zone.
 */
import { escapeHtml } from '../lib/html.ts';
import { currencyExponent, minorToDecimal } from '../lib/money.ts';
import type { EMAIL_TEMPLATES } from '../lib/statuses.ts';

export type EmailTemplate = (typeof EMAIL_TEMPLATES)[number];

/** app_private.email_context, as the worker receives it. */
export interface EmailContext {
  email_id: string;
  template: EmailTemplate;
  to: string;
  locale: string;
  event_id: string;
  event_type: string;
  tenant_name: string;
  time_zone: string;
  customer_name: string | null;
  plan_name: string | null;
  interval: 'month' | 'year' | null;
  amount_minor: string | null;
  currency: string | null;
  subscription_status: string | null;
  period_start: string | null;
  period_end: string | null;
  trial_end: string | null;
  ended_at: string | null;
  invoice_number: string | null;
  next_attempt_at: string | null;
  failure_message: string | null;
  action_url: string | null;
  days: number | null;
}

export interface RenderedEmail {
  subject: string;
  text: string;
  html: string;
}

type Lang = 'en' | 'ru';

export function languageOf(locale: string | null | undefined): Lang {
  return /^ru\b/i.test(locale ?? '') ? 'ru' : 'en';
}

/** Exact money: minor units → the currency's decimal string → locale formatting of that string. */
export function formatMoney(amountMinor: string | bigint, currency: string, locale: string): string {
  const exponent = currencyExponent(currency);
  const decimal = minorToDecimal(BigInt(amountMinor), currency);
  const format = new Intl.NumberFormat(locale, {
    style: 'currency',
    currency,
    currencyDisplay: 'symbol',
    minimumFractionDigits: exponent,
    maximumFractionDigits: exponent,
  });
  // Intl.NumberFormat formats decimal strings exactly (ES2023); typed as number in older TypeScript libs.
  return format.format(decimal as unknown as number);
}

function formatDate(value: string | null, lang: Lang, timeZone: string): string {
  if (!value) return '';
  return new Intl.DateTimeFormat(lang === 'ru' ? 'ru-RU' : 'en-GB', { dateStyle: 'long', timeZone }).format(new Date(value));
}

interface Words {
  money: string;
  plan: string;
  per: string;
  start: string;
  end: string;
  trialEnd: string;
  endedAt: string;
  nextAttempt: string;
}

type Paragraph = string | { text: string; url: string };

const copy: Record<
  Lang,
  {
    hello: (name: string | null) => string;
    signoff: (tenant: string) => string;
    templates: Record<EmailTemplate, (w: Words, c: EmailContext) => { subject: string; body: Paragraph[] }>;
  }
> = {
  en: {
    hello: (name) => (name ? `Hello ${name},` : 'Hello,'),
    signoff: (tenant) => `— ${tenant}`,
    templates: {
      subscription_created: (w, c) => ({
        subject: `Your ${w.plan} subscription with ${c.tenant_name}`,
        body:
          c.subscription_status === 'trialing'
            ? [`Your free trial of ${w.plan} has started. It ends on ${w.trialEnd}; after that the subscription costs ${w.money} per ${w.per}.`]
            : [`Your subscription to ${w.plan} (${w.money} per ${w.per}) has been created. It starts as soon as the first payment is made.`],
      }),
      subscription_activated: (w) => ({
        subject: `Your ${w.plan} subscription is active`,
        body: [`Your subscription to ${w.plan} is now active. It renews on ${w.end} for ${w.money}.`],
      }),
      subscription_renewed: (w, c) => ({
        subject: `Your ${w.plan} subscription has been renewed`,
        body: [`Your subscription to ${w.plan} has been renewed for ${w.start} – ${w.end}.`, `Amount: ${w.money}${c.invoice_number ? ` (invoice ${c.invoice_number})` : ''}.`],
      }),
      subscription_canceled: (w) => ({
        subject: `Your ${w.plan} subscription has been canceled`,
        body: [`Your subscription to ${w.plan} has been canceled${w.endedAt ? ` and ended on ${w.endedAt}` : ''}.`],
      }),
      payment_succeeded: (w, c) => ({
        subject: `Payment received: ${w.money}`,
        body: [`We have received your payment of ${w.money}${c.invoice_number ? ` for invoice ${c.invoice_number}` : ''}${c.plan_name ? ` (${w.plan})` : ''}. Thank you!`],
      }),
      payment_failed: (w, c) => ({
        subject: `Your payment of ${w.money} did not go through`,
        body: [
          `Your payment of ${w.money}${c.invoice_number ? ` for invoice ${c.invoice_number}` : ''}${c.plan_name ? ` (${w.plan})` : ''} did not go through${c.failure_message ? `: ${c.failure_message}` : '.'}`,
          ...(c.action_url ? [{ text: 'Pay now:', url: c.action_url }] : []),
          c.next_attempt_at ? `We will try again on ${w.nextAttempt}. To avoid an interruption, please check your payment method.` : 'Please check your payment method.',
        ],
      }),
      refund_succeeded: (w) => ({
        subject: `Refund of ${w.money}`,
        body: [`We have refunded ${w.money} to you. Depending on your bank it may take a few days to appear.`],
      }),
      renewal_reminder: (w) => ({
        subject: `Your ${w.plan} subscription renews on ${w.end}`,
        body: [`Your subscription to ${w.plan} renews on ${w.end}, and ${w.money} will be charged then.`, 'Nothing to do if you want to keep it.'],
      }),
    },
  },
  ru: {
    hello: (name) => (name ? `Здравствуйте, ${name}!` : 'Здравствуйте!'),
    signoff: (tenant) => `— ${tenant}`,
    templates: {
      subscription_created: (w, c) => ({
        subject: `Ваша подписка «${w.plan}» в ${c.tenant_name}`,
        body:
          c.subscription_status === 'trialing'
            ? [`Пробный период «${w.plan}» начался и закончится ${w.trialEnd}; затем подписка стоит ${w.money} в ${w.per}.`]
            : [`Подписка «${w.plan}» (${w.money} в ${w.per}) оформлена. Она начнёт действовать после первой оплаты.`],
      }),
      subscription_activated: (w) => ({
        subject: `Подписка «${w.plan}» активна`,
        body: [`Ваша подписка «${w.plan}» активна. Следующее продление — ${w.end}, ${w.money}.`],
      }),
      subscription_renewed: (w, c) => ({
        subject: `Подписка «${w.plan}» продлена`,
        body: [`Подписка «${w.plan}» продлена на период ${w.start} – ${w.end}.`, `Сумма: ${w.money}${c.invoice_number ? ` (счёт ${c.invoice_number})` : ''}.`],
      }),
      subscription_canceled: (w) => ({
        subject: `Подписка «${w.plan}» отменена`,
        body: [`Ваша подписка «${w.plan}» отменена${w.endedAt ? ` и завершилась ${w.endedAt}` : ''}.`],
      }),
      payment_succeeded: (w, c) => ({
        subject: `Оплата получена: ${w.money}`,
        body: [`Мы получили оплату ${w.money}${c.invoice_number ? ` по счёту ${c.invoice_number}` : ''}${c.plan_name ? ` («${w.plan}»)` : ''}. Спасибо!`],
      }),
      payment_failed: (w, c) => ({
        subject: `Оплата ${w.money} не прошла`,
        body: [
          `Оплата ${w.money}${c.invoice_number ? ` по счёту ${c.invoice_number}` : ''}${c.plan_name ? ` («${w.plan}»)` : ''} не прошла${c.failure_message ? `: ${c.failure_message}` : '.'}`,
          ...(c.action_url ? [{ text: 'Оплатить:', url: c.action_url }] : []),
          c.next_attempt_at ? `Мы попробуем снова ${w.nextAttempt}. Пожалуйста, проверьте способ оплаты.` : 'Пожалуйста, проверьте способ оплаты.',
        ],
      }),
      refund_succeeded: (w) => ({
        subject: `Возврат ${w.money}`,
        body: [`Мы вернули вам ${w.money}. В зависимости от банка деньги поступят в течение нескольких дней.`],
      }),
      renewal_reminder: (w) => ({
        subject: `Подписка «${w.plan}» продлится ${w.end}`,
        body: [`Подписка «${w.plan}» продлится ${w.end}; будет списано ${w.money}.`, 'Если вы хотите её сохранить, ничего делать не нужно.'],
      }),
    },
  },
};

export function renderEmail(context: EmailContext): RenderedEmail {
  const lang = languageOf(context.locale);
  const locale = lang === 'ru' ? 'ru-RU' : 'en-US';
  const l = copy[lang];
  const words: Words = {
    money: context.amount_minor !== null && context.currency ? formatMoney(context.amount_minor, context.currency, locale) : '',
    plan: context.plan_name ?? (lang === 'ru' ? 'подписка' : 'subscription'),
    per: context.interval === 'year' ? (lang === 'ru' ? 'год' : 'year') : lang === 'ru' ? 'месяц' : 'month',
    start: formatDate(context.period_start, lang, context.time_zone),
    end: formatDate(context.period_end, lang, context.time_zone),
    trialEnd: formatDate(context.trial_end, lang, context.time_zone),
    endedAt: formatDate(context.ended_at, lang, context.time_zone),
    nextAttempt: formatDate(context.next_attempt_at, lang, context.time_zone),
  };
  const { subject, body } = l.templates[context.template](words, context);
  const paragraphs: Paragraph[] = [l.hello(context.customer_name), ...body, l.signoff(context.tenant_name)];
  const text = `${paragraphs.map((p) => (typeof p === 'string' ? p : `${p.text} ${p.url}`)).join('\n\n')}\n`;
  const html =
    `<!doctype html><html lang="${lang}"><head><meta charset="utf-8"><title>${escapeHtml(subject)}</title></head>` +
    `<body style="font-family: sans-serif; line-height: 1.5; color: #222">` +
    paragraphs.map((p) => (typeof p === 'string' ? `<p>${escapeHtml(p)}</p>` : `<p>${escapeHtml(p.text)} <a href="${escapeHtml(p.url)}">${escapeHtml(p.url)}</a></p>`)).join('') +
    `</body></html>`;
  return { subject, text, html };
}
