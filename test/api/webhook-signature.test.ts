/**
 * The outgoing webhook signature (lib/webhook-signature.ts), and the
 * recipe docs/api.md gives tenants: verified here with nothing but
 * node:crypto, exactly as written there.
 */
import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { describe, test } from 'node:test';
import { signWebhook, verifyWebhookSignature } from '../../lib/webhook-signature.ts';

const body = JSON.stringify({ id: 'evt_1', type: 'subscription.canceled', data: { subscription_id: 's1' } });

describe('webhook signatures', () => {
  test('a signed payload verifies; a changed body, a wrong secret or an old timestamp do not', () => {
    const header = signWebhook(body, ['whsec_current'], 1_800_000_000);
    assert.equal(verifyWebhookSignature(body, header, ['whsec_current'], { now: 1_800_000_010 }), 'ok');
    assert.equal(verifyWebhookSignature(`${body} `, header, ['whsec_current'], { now: 1_800_000_010 }), 'bad_signature');
    assert.equal(verifyWebhookSignature(body, header, ['whsec_other'], { now: 1_800_000_010 }), 'bad_signature');
    assert.equal(verifyWebhookSignature(body, header, ['whsec_current'], { now: 1_800_000_400 }), 'stale_timestamp');
    assert.equal(verifyWebhookSignature(body, undefined, ['whsec_current']), 'missing_signature');
    assert.equal(verifyWebhookSignature(body, 't=abc,v1=zz', ['whsec_current']), 'bad_signature');
  });

  test('during a rotation both secrets sign, and a receiver with either accepts', () => {
    const header = signWebhook(body, ['whsec_new', 'whsec_old'], 1_800_000_000);
    assert.equal(header.split(',').filter((p) => p.startsWith('v1=')).length, 2);
    assert.equal(verifyWebhookSignature(body, header, ['whsec_old'], { now: 1_800_000_000 }), 'ok');
    assert.equal(verifyWebhookSignature(body, header, ['whsec_new'], { now: 1_800_000_000 }), 'ok');
  });

  test('the recipe in docs/api.md verifies what signWebhook produces', () => {
    const header = signWebhook(body, ['whsec_doc'], 1_800_000_000);
    // --- as in docs/api.md ---
    const fields = header.split(',').map((part) => part.split('='));
    const t = fields.find(([k]) => k === 't')![1]!;
    const expected = createHmac('sha256', 'whsec_doc').update(`${t}.${body}`).digest();
    const ok = fields.some(([k, v]) => k === 'v1' && /^[0-9a-f]{64}$/.test(v!) && timingSafeEqual(Buffer.from(v!, 'hex'), expected)) && Math.abs(1_800_000_000 - Number(t)) <= 300;
    // ---
    assert.equal(ok, true);
  });
});
