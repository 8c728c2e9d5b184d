/**
 * The one webhook signature scheme abonement speaks, Stripe's scheme under our
 * own header names: on the webhooks abonement sends to tenants (events from
 * the outbox) and on the ones the built-in sandbox gateway sends to us.
 *
 *   Abonement-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>[,v1=…]
 *   Sandbox-Signature:   the same, with the sandbox's webhook secret
 *
 * During a secret rotation the sender signs with every active secret (one v1
 * each); a receiver accepts when any v1 matches one of its secrets and the
 * timestamp is within the tolerance (5 minutes), which bounds replays.
 * docs/webhooks.md shows how to check it without this module.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const WEBHOOK_SIGNATURE_HEADER = 'abonement-signature';
export const SANDBOX_SIGNATURE_HEADER = 'sandbox-signature';
export const WEBHOOK_TOLERANCE_SECONDS = 300;

export function signWebhook(payload: string, secrets: readonly string[], timestamp = Math.floor(Date.now() / 1000)): string {
  if (secrets.length === 0) throw new Error('a webhook needs at least one signing secret');
  const signatures = secrets.map((secret) => `v1=${createHmac('sha256', secret).update(`${timestamp}.${payload}`).digest('hex')}`);
  return [`t=${timestamp}`, ...signatures].join(',');
}

export type WebhookSignatureCheck = 'ok' | 'missing_signature' | 'bad_signature' | 'stale_timestamp';

export function verifyWebhookSignature(
  payload: string | Buffer,
  header: string | undefined,
  secrets: readonly string[],
  options: { toleranceSeconds?: number; now?: number } = {},
): WebhookSignatureCheck {
  if (!header) return 'missing_signature';
  let timestamp: number | undefined;
  const candidates: Buffer[] = [];
  for (const part of header.split(',')) {
    const [key, value] = part.split('=', 2).map((s) => s.trim());
    if (key === 't' && value && /^\d{1,12}$/.test(value)) timestamp = Number(value);
    else if (key === 'v1' && value && /^[0-9a-f]{64}$/.test(value)) candidates.push(Buffer.from(value, 'hex'));
  }
  if (timestamp === undefined || candidates.length === 0) return 'bad_signature';
  const body = typeof payload === 'string' ? payload : payload.toString('utf8');
  const expected = secrets.map((secret) => createHmac('sha256', secret).update(`${timestamp}.${body}`).digest());
  if (!candidates.some((c) => expected.some((e) => timingSafeEqual(c, e)))) return 'bad_signature';
  const now = options.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - timestamp) > (options.toleranceSeconds ?? WEBHOOK_TOLERANCE_SECONDS)) return 'stale_timestamp';
  return 'ok';
}
