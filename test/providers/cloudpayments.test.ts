/**
 * The CloudPayments adapter against the CloudPayments emulator
 * (providers/cloudpayments-emulator.ts): the provider contract, then what is
 * CloudPayments' own — both HMAC headers, 3-D Secure finished with post3ds,
 * TrInitiatorCode on renewals, the reason-code table, and `{"code":0}` from
 * our webhook intake, through a real API process and database.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { CLOUDPAYMENTS_VATS, CloudPaymentsAdapter, cloudPaymentsFailureTable } from '../../providers/cloudpayments.ts';
import { FISCAL_VATS } from '../../lib/statuses.ts';
import { createCloudPaymentsEmulator, type CloudPaymentsEmulator, type CloudPaymentsTestBehaviour } from '../../providers/cloudpayments-emulator.ts';
import { classify } from '../../providers/failures.ts';
import type { ProviderError, FiscalReceipt, FiscalVat, WebhookRequest } from '../../providers/types.ts';
import type { RunningAbonement } from '../../server/index.ts';
import { setClock } from '../../sql-tests/support/billing.ts';
import { checkoutFor, createShop, inboxSettled, row, rows, runTask, startPaymentsServer, subscribeWithoutCard, until } from '../payments/support.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { providerContract, type TestBehaviour } from './contract.ts';
import { closedPortUrl, testLogger } from './sandbox-stack.ts';

const tokenBehaviour: Record<TestBehaviour, CloudPaymentsTestBehaviour> = {
  success: 'success',
  soft_decline: 'insufficient_funds',
  hard_decline: 'expired_card',
  requires_action: 'three_d_secure_always',
  decline_after_save: 'decline_after_save',
  processing_error: 'processing_error',
};

let emulator: CloudPaymentsEmulator;
before(async () => {
  emulator = createCloudPaymentsEmulator({ publicId: 'pk_test_emulator', apiSecret: 'cp-emulator-test-secret', logger: testLogger });
  await emulator.listen();
});
after(async () => {
  await emulator?.close();
});

function adapter(options: { timeoutMs?: number; apiBase?: string; apiSecret?: string } = {}) {
  return new CloudPaymentsAdapter({
    publicId: emulator.publicId,
    apiSecret: options.apiSecret ?? emulator.apiSecret,
    apiBase: options.apiBase ?? emulator.url,
    timeoutMs: options.timeoutMs ?? 10_000,
    logger: testLogger,
  });
}

/** The customer types a card on the hosted order page (the widget stand-in turns it into a cryptogram there). */
function submitCard(url: string, cardNumber: string): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ cardNumber, expDate: '12/34', cvv: '123', name: 'ADA LOVELACE' }).toString(),
    redirect: 'manual',
  });
}

function hidden(html: string, name: string): string {
  const value = new RegExp(`name="${name}" value="([^"]*)"`).exec(html)?.[1];
  assert.ok(value, `the page carries ${name}`);
  return value
    .replace(/&amp;/g, '&')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>');
}

function postForm(url: string, fields: Record<string, string>): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString(), redirect: 'manual' });
}

/** The bank's page: approve or fail; returns what it would post back to TermUrl. */
async function passBank(acsUrl: string, md: string, paReq: string, termUrl: string, approve: boolean): Promise<{ MD: string; PaRes: string }> {
  const bank = await postForm(acsUrl, { MD: md, PaReq: paReq, TermUrl: termUrl });
  assert.equal(bank.status, 200);
  assert.match(await bank.text(), /Test bank/);
  const done = await postForm(new URL('/acs/complete', acsUrl).toString(), { MD: md, TermUrl: termUrl, approve: approve ? '1' : '0' });
  const html = await done.text();
  assert.ok(html.includes(`action="${termUrl}"`), 'the bank posts back to TermUrl');
  return { MD: hidden(html, 'MD'), PaRes: hidden(html, 'PaRes') };
}

function dateTime(date: Date): string {
  return date.toISOString().slice(0, 19).replace('T', ' ');
}

/** A Pay notification as the emulator would sign it. */
function payNotification(fields: Record<string, string> = {}, when = new Date()): { rawBody: string; headers: Record<string, string> } {
  const rawBody = new URLSearchParams({
    TransactionId: '7777001',
    Amount: '123.45',
    Currency: 'RUB',
    OperationType: 'Payment',
    InvoiceId: 'abonement-forged-1',
    DateTime: dateTime(when),
    CardLastFour: '4242',
    CardExpDate: '12/34',
    CardType: 'Visa',
    Status: 'Completed',
    Name: 'АДА ЛАВЛЕЙС',
    Description: 'Подписка Pro, месяц',
    ...fields,
  }).toString();
  return { rawBody, headers: { 'content-type': 'application/x-www-form-urlencoded', ...emulator.sign(rawBody) } };
}

providerContract('cloudpayments', async () => ({
  provider: adapter(),
  impatientProvider: adapter({ timeoutMs: 300 }),
  unreachableProvider: adapter({ apiBase: await closedPortUrl() }),
  currency: 'RUB',
  async payCheckout(checkout, behaviour) {
    const response = await submitCard(checkout.url, behaviour === 'success' ? '4242424242424242' : '4000000000000341');
    assert.equal(response.status, 303, `the order page redirects (got ${response.status})`);
  },
  async savedToken(behaviour) {
    return emulator.testTokens[tokenBehaviour[behaviour]];
  },
  takeWebhooks: () => emulator.takeNotifications(),
  async forgedWebhooks() {
    const genuine = payNotification();
    const url = '/webhooks/cloudpayments?type=pay';
    const stale = payNotification({}, new Date(Date.now() - 5 * 24 * 3600_000));
    const notNotification = 'hello=world';
    return [
      { name: 'no signature', request: { rawBody: genuine.rawBody, headers: { 'content-type': 'application/x-www-form-urlencoded' }, url }, reason: 'missing_signature' },
      { name: 'tampered amount', request: { rawBody: genuine.rawBody.replace('Amount=123.45', 'Amount=1.00'), headers: genuine.headers, url }, reason: 'bad_signature' },
      {
        name: 'signed with another secret',
        request: { rawBody: genuine.rawBody, headers: { 'content-hmac': 'd3Jvbmc=', 'x-content-hmac': 'bm9wZQ==' }, url },
        reason: 'bad_signature',
      },
      { name: 'garbage header', request: { rawBody: genuine.rawBody, headers: { 'content-hmac': '%%%' }, url }, reason: 'bad_signature' },
      { name: 'replayed days later', request: { rawBody: stale.rawBody, headers: stale.headers, url }, reason: 'stale_timestamp' },
      { name: 'signed but not a notification', request: { rawBody: notNotification, headers: emulator.sign(notNotification) }, reason: 'malformed' },
    ];
  },
  chargeCount: async (key) => emulator.chargeCount(key),
  fault: (kind) => emulator.fault(kind),
  expect: { cardNumbers: ['4242424242424242', '4000000000000341', '4000000000003220', '4000002760003184'] },
  close: async () => undefined,
}));

describe('cloudpayments adapter specifics', () => {
  test('the ReasonCode table: 5051 and 5005 soft, 5054 and 5043 hard, 5096 gateway; an unmapped code is soft', () => {
    assert.equal(cloudPaymentsFailureTable['5051'], 'soft_decline');
    assert.equal(cloudPaymentsFailureTable['5005'], 'soft_decline');
    assert.equal(cloudPaymentsFailureTable['5054'], 'hard_decline');
    assert.equal(cloudPaymentsFailureTable['5043'], 'hard_decline');
    assert.equal(cloudPaymentsFailureTable['5034'], 'hard_decline');
    assert.equal(cloudPaymentsFailureTable['5091'], 'gateway_error');
    assert.equal(cloudPaymentsFailureTable['5096'], 'gateway_error');
    assert.deepEqual(classify(cloudPaymentsFailureTable, ['5999']), { class: 'soft_decline', code: '5999', mapped: false });
  });

  test('an off-session decline carries the ReasonCode and is classified by the table', async () => {
    for (const [behaviour, code, failureClass] of [
      ['do_not_honor', '5005', 'soft_decline'],
      ['stolen_card', '5043', 'hard_decline'],
      ['expired_card', '5054', 'hard_decline'],
    ] as const) {
      const result = await adapter().chargeSaved({
        idempotencyKey: `cp:decline:${randomUUID()}`,
        amount: { amountMinor: 500n, currency: 'RUB' },
        paymentMethodToken: emulator.testTokens[behaviour],
        description: 'x',
        customerReference: 'c',
      });
      assert.ok(result.ok);
      assert.deepEqual([result.value.status, result.value.failure?.code, result.value.failure?.class], ['failed', code, failureClass]);
    }
  });

  test('renewals send TrInitiatorCode 0 (the merchant initiates) and PaymentScheduled 1; the API refuses a token charge without it, and asks 3-D Secure only when the cardholder initiates', async () => {
    const key = `cp:initiator:${randomUUID()}`;
    const result = await adapter().chargeSaved({
      idempotencyKey: key,
      amount: { amountMinor: 99_900n, currency: 'RUB' },
      paymentMethodToken: emulator.testTokens.success,
      description: 'Pro, renewal',
      customerReference: 'cust-1',
    });
    assert.ok(result.ok && result.value.providerPaymentId);
    const tx = emulator.transaction(Number(result.value.providerPaymentId));
    assert.deepEqual([tx?.trInitiatorCode, tx?.paymentScheduled, tx?.invoiceId, tx?.accountId], [0, 1, key, 'cust-1']);
    assert.equal(result.value.amount.amountMinor, 99_900n);
    const withoutInitiator = await fetch(`${emulator.url}/payments/tokens/charge`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${emulator.publicId}:${emulator.apiSecret}`).toString('base64')}`, 'content-type': 'application/json' },
      body: JSON.stringify({ Amount: 10, Currency: 'RUB', AccountId: 'c', Token: emulator.testTokens.success }),
    });
    const answer = (await withoutInitiator.json()) as { Success: boolean; Message: string };
    assert.deepEqual([answer.Success, /TrInitiatorCode/.test(answer.Message)], [false, true]);
    // A card authenticated with 3-D Secure once: the merchant's renewal needs no new challenge, a cardholder-initiated charge does.
    const renewal = await adapter().chargeSaved({
      idempotencyKey: `cp:mit:${randomUUID()}`,
      amount: { amountMinor: 100n, currency: 'RUB' },
      paymentMethodToken: emulator.testTokens.three_d_secure,
      description: 'x',
      customerReference: 'c',
    });
    assert.ok(renewal.ok && renewal.value.status === 'succeeded');
    const cardholderInitiated = await fetch(`${emulator.url}/payments/tokens/charge`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(`${emulator.publicId}:${emulator.apiSecret}`).toString('base64')}`, 'content-type': 'application/json' },
      body: JSON.stringify({ Amount: 1, Currency: 'RUB', AccountId: 'c', Token: emulator.testTokens.three_d_secure, TrInitiatorCode: 1 }),
    });
    const challenge = (await cardholderInitiated.json()) as { Success: boolean; Model: { AcsUrl?: string; PaReq?: string } };
    assert.deepEqual([challenge.Success, typeof challenge.Model.AcsUrl, typeof challenge.Model.PaReq], [false, 'string', 'string']);
  });

  test('a 54-FZ receipt travels in JsonData.CloudPayments.CustomerReceipt with CloudKassir codes, on the charge and on the refund; a receipt that does not add up is refused', async () => {
    const receipt = (type: 'payment' | 'refund', minor: bigint, vat: FiscalVat): FiscalReceipt => ({
      type,
      taxSystem: 2,
      customerEmail: 'ada@example.com',
      items: [
        {
          description: 'Pro (monthly)',
          quantity: 1,
          unit: { amountMinor: minor, currency: 'RUB' },
          amount: { amountMinor: minor, currency: 'RUB' },
          vat,
          paymentSubject: 'service',
          paymentMode: 'full_payment',
        },
      ],
    });
    const charged = await adapter().chargeSaved({
      idempotencyKey: `cp:receipt:${randomUUID()}`,
      amount: { amountMinor: 129_900n, currency: 'RUB' },
      paymentMethodToken: emulator.testTokens.success,
      description: 'Pro, renewal',
      customerReference: 'cust-r',
      receipt: receipt('payment', 129_900n, 'vat22'),
    });
    assert.ok(charged.ok && charged.value.status === 'succeeded');
    const sent = JSON.parse(emulator.transaction(Number(charged.value.providerPaymentId))!.jsonData!);
    assert.deepEqual(sent.CloudPayments.CustomerReceipt, {
      Items: [{ label: 'Pro (monthly)', price: 1299, quantity: 1, amount: 1299, vat: 22, method: 4, object: 4 }],
      taxationSystem: 1,
      email: 'ada@example.com',
      amounts: { electronic: 1299 },
    });
    assert.equal(sent.abonement_key, charged.value.idempotencyKey, 'our keys stay beside the receipt');
    // Every rate has its CloudKassir code; "no VAT" is null.
    assert.deepEqual(CLOUDPAYMENTS_VATS, {
      none: null,
      vat0: 0,
      vat10: 10,
      vat20: 20,
      vat10_110: 110,
      vat20_120: 120,
      vat5: 5,
      vat7: 7,
      vat5_105: 105,
      vat7_107: 107,
      vat22: 22,
      vat22_122: 122,
    });
    assert.deepEqual(Object.keys(CLOUDPAYMENTS_VATS).sort(), [...FISCAL_VATS].sort());

    const refunded = await adapter().refund({
      idempotencyKey: `cp:receipt-refund:${randomUUID()}`,
      providerPaymentId: charged.value.providerPaymentId!,
      amount: { amountMinor: 30_000n, currency: 'RUB' },
      receipt: receipt('refund', 30_000n, 'none'),
    });
    assert.ok(refunded.ok);
    const refundSent = JSON.parse(emulator.transaction(Number(refunded.value.providerRefundId))!.jsonData!);
    assert.deepEqual(refundSent.CloudPayments.CustomerReceipt.Items, [{ label: 'Pro (monthly)', price: 300, quantity: 1, amount: 300, vat: null, method: 4, object: 4 }]);
    assert.equal(refundSent.CloudPayments.CustomerReceipt.amounts.electronic, 300);

    // A receipt for another amount than the charge: CloudKassir would refuse it, so does the emulator, and nothing is charged.
    const key = `cp:receipt-bad:${randomUUID()}`;
    await assert.rejects(
      adapter().chargeSaved({
        idempotencyKey: key,
        amount: { amountMinor: 129_900n, currency: 'RUB' },
        paymentMethodToken: emulator.testTokens.success,
        description: 'x',
        customerReference: 'cust-r',
        receipt: receipt('payment', 100_000n, 'vat20'),
      }),
      (error: ProviderError) => error.code === 'invalid_request' && /CustomerReceipt/.test(error.message),
    );
    assert.equal(emulator.chargeCount(key), 0);
  });

  test('a cryptogram charge with 3-D Secure answers AcsUrl and PaReq; post3ds with the bank PaRes completes it once', async () => {
    const key = `cp:3ds:${randomUUID()}`;
    const input = {
      idempotencyKey: key,
      amount: { amountMinor: 12_300n, currency: 'RUB' },
      cryptogram: emulator.cryptogram('4000 0000 0000 3220', '12/34', '123'),
      description: 'Pro, first month',
      customer: { reference: 'cust-3ds', email: 'ada@example.com' },
      ipAddress: '127.0.0.1',
    };
    const charged = await adapter().chargeCryptogram(input);
    assert.ok(charged.ok);
    assert.equal(charged.value.payment.status, 'requires_action');
    assert.equal(charged.value.payment.failure?.class, 'requires_action');
    const challenge = charged.value.threeDSecure;
    assert.ok(challenge);
    assert.equal(emulator.chargeCount(key), 0, 'nothing charged before the bank confirms');
    const termUrl = 'https://shop.example/cloudpayments/3ds-return';
    const back = await passBank(challenge.acsUrl, challenge.transactionId, challenge.paReq, termUrl, true);
    assert.equal(back.MD, challenge.transactionId);
    const completed = await adapter().completeThreeDSecure({ transactionId: back.MD, paRes: back.PaRes });
    assert.ok(completed.ok);
    assert.equal(completed.value.status, 'succeeded');
    assert.equal(completed.value.idempotencyKey, key);
    assert.equal(completed.value.paymentMethod?.last4, '3220');
    const again = await adapter().completeThreeDSecure({ transactionId: back.MD, paRes: back.PaRes });
    assert.ok(again.ok && again.value.status === 'succeeded');
    assert.equal(emulator.chargeCount(key), 1);
    const notifications = await emulator.takeNotifications();
    const pay = notifications.find((n) => n.url?.endsWith('type=pay') && String(n.rawBody).includes(`TransactionId=${challenge.transactionId}`));
    assert.ok(pay, 'a Pay notification for the 3-D Secure payment');
  });

  test('failed 3-D Secure declines 5206 (a soft decline)', async () => {
    const charged = await adapter().chargeCryptogram({
      idempotencyKey: `cp:3ds-fail:${randomUUID()}`,
      amount: { amountMinor: 100n, currency: 'RUB' },
      cryptogram: emulator.cryptogram('4000000000003220'),
      description: 'x',
      customer: { reference: 'c' },
      ipAddress: '127.0.0.1',
    });
    assert.ok(charged.ok && charged.value.threeDSecure);
    const { acsUrl, transactionId, paReq } = charged.value.threeDSecure;
    const back = await passBank(acsUrl, transactionId, paReq, 'https://shop.example/3ds', false);
    const completed = await adapter().completeThreeDSecure({ transactionId: back.MD, paRes: back.PaRes });
    assert.ok(completed.ok);
    assert.deepEqual([completed.value.status, completed.value.failure?.code, completed.value.failure?.class], ['failed', '5206', 'soft_decline']);
  });

  test('the hosted order page runs 3-D Secure: bank page, PaRes back to the page, then the Pay notification with the token', async () => {
    const key = `cp:order-3ds:${randomUUID()}`;
    const created = await adapter().createCheckout({
      idempotencyKey: key,
      amount: { amountMinor: 45_600n, currency: 'RUB' },
      description: 'Pro, first month',
      customer: { reference: 'cust-order', email: 'ada@example.com' },
      successUrl: 'http://127.0.0.1:9/return/success',
      cancelUrl: 'http://127.0.0.1:9/return/cancel',
    });
    assert.ok(created.ok);
    await emulator.takeNotifications();
    const page = await submitCard(created.value.url, '4000000000003220');
    const html = await page.text();
    const acsUrl = /action="([^"]+\/acs)"/.exec(html)?.[1];
    assert.ok(acsUrl, 'the page sends the customer to the bank');
    const back = await passBank(acsUrl, hidden(html, 'MD'), hidden(html, 'PaReq'), hidden(html, 'TermUrl'), true);
    const returned = await postForm(hidden(html, 'TermUrl'), back);
    assert.equal(returned.status, 303);
    assert.equal(returned.headers.get('location'), 'http://127.0.0.1:9/return/success');
    const [pay] = await emulator.takeNotifications();
    assert.ok(pay);
    const verified = await adapter().verifyWebhook(pay);
    assert.ok(verified.ok && verified.events[0]?.kind === 'payment');
    const payment = verified.events[0].kind === 'payment' ? verified.events[0].payment : null;
    assert.deepEqual([payment?.status, payment?.idempotencyKey, payment?.paymentMethod?.last4], ['succeeded', key, '3220']);
    assert.ok(payment?.paymentMethod?.token.startsWith('tk_'));
    const found = await adapter().retrieve({ idempotencyKey: key });
    assert.ok(found.ok && found.value?.status === 'succeeded');
  });

  test('either HMAC header authenticates: Content-HMAC over the raw body, X-Content-HMAC over the URL-decoded body', async () => {
    const { rawBody, headers } = payNotification({ InvoiceId: 'abonement-hmac-1' });
    assert.notEqual(headers['content-hmac'], headers['x-content-hmac'], 'the Cyrillic fields make the two bodies differ');
    const url = '/webhooks/cloudpayments?type=pay';
    const onlyContent = await adapter().verifyWebhook({ rawBody, headers: { 'content-hmac': headers['content-hmac'] }, url });
    const onlyX = await adapter().verifyWebhook({ rawBody, headers: { 'x-content-hmac': headers['x-content-hmac'] }, url });
    assert.ok(onlyContent.ok && onlyX.ok);
    assert.deepEqual(
      onlyContent.events.map((e) => e.eventId),
      ['pay:7777001'],
    );
    assert.deepEqual(
      onlyX.events.map((e) => e.eventId),
      ['pay:7777001'],
    );
    const swapped = await adapter().verifyWebhook({ rawBody, headers: { 'x-content-hmac': headers['content-hmac']!.replace(/^./, (c) => (c === 'A' ? 'B' : 'A')) }, url });
    assert.equal(!swapped.ok && swapped.rejection.reason, 'bad_signature');
    const otherSecret = await adapter({ apiSecret: 'another-terminal-secret' }).verifyWebhook({ rawBody, headers, url });
    assert.equal(!otherSecret.ok && otherSecret.rejection.reason, 'bad_signature');
    // JSON notifications (a back-office setting) are signed over the raw JSON.
    const json = JSON.stringify({ TransactionId: 7777002, Amount: 10, Currency: 'RUB', DateTime: dateTime(new Date()), Status: 'Completed', OperationType: 'Payment' });
    const fromJson = await adapter().verifyWebhook({ rawBody: json, headers: { 'content-type': 'application/json', ...emulator.sign(json) }, url });
    assert.ok(fromJson.ok && fromJson.events[0]?.kind === 'payment');
  });

  test('notification types come from the URL: Check and Recurrent are acknowledged and ignored; Fail is a classified decline', async () => {
    const check = payNotification({ TransactionId: '7777003' });
    const ignored = await adapter().verifyWebhook({ ...check, url: '/webhooks/cloudpayments?type=check' });
    assert.ok(ignored.ok);
    assert.deepEqual([ignored.events[0]?.kind, ignored.events[0]?.eventId], ['ignored', 'check:7777003']);
    const failBody = new URLSearchParams({
      TransactionId: '7777004',
      Amount: '5.00',
      Currency: 'RUB',
      DateTime: dateTime(new Date()),
      ReasonCode: '5051',
      Reason: 'InsufficientFunds',
      InvoiceId: 'k-1',
    }).toString();
    const failed = await adapter().verifyWebhook({ rawBody: failBody, headers: emulator.sign(failBody), url: '/webhooks/cloudpayments?type=fail' });
    assert.ok(failed.ok && failed.events[0]?.kind === 'payment');
    const declined = failed.events[0].kind === 'payment' ? failed.events[0].payment : null;
    assert.deepEqual([declined?.status, declined?.failure?.class, declined?.failure?.code, declined?.idempotencyKey], ['failed', 'soft_decline', '5051', 'k-1']);
    const recurrentBody = new URLSearchParams({ Id: 'sc_1', AccountId: 'c', Amount: '10', Currency: 'RUB', Interval: 'Month', Period: '1', Status: 'Active' }).toString();
    const recurrent = await adapter().verifyWebhook({ rawBody: recurrentBody, headers: emulator.sign(recurrentBody), url: '/webhooks/cloudpayments?type=recurrent' });
    assert.ok(recurrent.ok && recurrent.events[0]?.kind === 'ignored');
  });
});

describe('cloudpayments through the API', () => {
  let db: TestDatabase;
  let server: RunningAbonement;
  before(async () => {
    db = await createTestDatabase();
    server = await startPaymentsServer(db, {
      CLOUDPAYMENTS_PUBLIC_ID: emulator.publicId,
      CLOUDPAYMENTS_API_SECRET: emulator.apiSecret,
      CLOUDPAYMENTS_API_BASE: emulator.url,
    });
  });
  after(async () => {
    await server?.stop();
    await db?.drop();
  });

  async function deliver(delivery: WebhookRequest): Promise<Response> {
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(delivery.headers)) if (typeof value === 'string') headers[name] = value;
    return fetch(`${server.url}${delivery.url ?? '/webhooks/cloudpayments'}`, { method: 'POST', headers, body: delivery.rawBody });
  }

  test('a RUB subscription pays on the order page; notifications are answered {"code":0}, five replays change nothing; the renewal charges the token as the merchant', async () => {
    // Setup
    const shop = await createShop(db, { currency: 'RUB', amount: 49_900, defaultProvider: 'cloudpayments' });
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    assert.equal(link.provider, 'cloudpayments');
    const payment = await row(db, 'select * from app_public.payments where id = $1', [link.paymentId]);
    // Action
    await emulator.takeNotifications();
    assert.equal((await submitCard(payment.action_url, '4242424242424242')).status, 303);
    const notifications = await emulator.takeNotifications();
    assert.equal(notifications.length, 1);
    for (let i = 0; i < 6; i++) {
      const answer = await deliver(notifications[0]!);
      assert.equal(answer.status, 200);
      assert.deepEqual(await answer.json(), { code: 0 });
    }
    await inboxSettled(db, `provider = 'cloudpayments' and provider_event_id like 'pay:%' and payload->'event'->'payment'->>'idempotencyKey' = $1`, [payment.idempotency_key]);
    // Assertions
    const subscription = await row(db, 'select * from app_public.subscriptions where id = $1', [sub.id]);
    assert.equal(subscription.status, 'active');
    const paid = await row(db, 'select * from app_public.payments where id = $1', [link.paymentId]);
    assert.deepEqual([paid.status, paid.amount_minor, paid.currency], ['succeeded', '49900', 'RUB']);
    assert.equal(
      (await rows(db, `select 1 from app_private.provider_events where provider = 'cloudpayments' and payload->'event'->'payment'->>'idempotencyKey' = $1`, [payment.idempotency_key]))
        .length,
      1,
    );
    const method = await row(db, 'select provider, provider_token from app_public.payment_methods where id = $1', [subscription.payment_method_id]);
    assert.equal(method.provider, 'cloudpayments');
    assert.match(method.provider_token, /^tk_/);
    assert.equal(emulator.chargeCount(payment.idempotency_key), 1);

    // Action: the period ends; the renewal charges the saved token, merchant-initiated.
    await setClock(db, new Date(new Date(subscription.current_period_end).getTime() + 60_000).toISOString());
    try {
      await runTask(db, 'subscriptions__renew_due');
      const renewal = await until(
        db,
        'the renewal charge',
        `select p.* from app_public.payments p join app_public.invoices i on i.id = p.invoice_id
        where i.subscription_id = $1 and i.billing_reason = 'subscription_cycle'`,
        [sub.id],
        (p) => p.status === 'succeeded',
      );
      // Assertions
      assert.deepEqual([renewal.provider, renewal.flow], ['cloudpayments', 'off_session']);
      assert.equal(emulator.chargeCount(renewal.idempotency_key), 1);
      const tx = emulator.transaction(Number(renewal.provider_payment_id));
      assert.deepEqual([tx?.trInitiatorCode, tx?.token], [0, method.provider_token]);
    } finally {
      await setClock(db, null);
    }
  });

  test('a forged notification is refused (400) and stored nowhere', async () => {
    const forged = payNotification({ TransactionId: '8888001', InvoiceId: 'abonement-forged-2' });
    const refused = await deliver({
      rawBody: forged.rawBody,
      headers: { ...forged.headers, 'content-hmac': 'Zm9yZ2Vk', 'x-content-hmac': 'Zm9yZ2Vk' },
      url: '/webhooks/cloudpayments?type=pay',
    });
    assert.equal(refused.status, 400);
    assert.equal(((await refused.json()) as { error: { reason: string } }).error.reason, 'bad_signature');
    assert.equal((await rows(db, `select 1 from app_private.provider_events where provider = 'cloudpayments' and provider_event_id = 'pay:8888001'`)).length, 0);
  });
});
