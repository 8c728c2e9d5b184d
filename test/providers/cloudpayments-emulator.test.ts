/**
 * The CloudPayments emulator on its own: notifications delivered to a URL
 * (signed, per-type query, retried until `{"code":0}`), the widget stand-in,
 * Basic auth, X-Request-ID, and `npm run emulator:cloudpayments` as a process.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import express from 'express';
import { createCloudPaymentsEmulator, type CloudPaymentsEmulator } from '../../providers/cloudpayments-emulator.ts';
import { listen, testLogger, type Listening } from './sandbox-stack.ts';

const secret = 'emulator-own-test-secret';
let emulator: CloudPaymentsEmulator;
let receiver: Listening;
const received: Array<{ url: string; body: string; headers: Record<string, string | string[] | undefined> }> = [];
let answers: number[] = [];

before(async () => {
  const app = express();
  app.post('/hook', express.raw({ type: '*/*' }), (req, res) => {
    received.push({ url: req.originalUrl, body: (req.body as Buffer).toString('utf8'), headers: { ...req.headers } });
    const status = answers.shift() ?? 200;
    res.status(status).json(status === 200 ? { code: 0 } : { code: 13 });
  });
  receiver = await listen(app);
  emulator = createCloudPaymentsEmulator({ publicId: 'pk_own', apiSecret: secret, notificationUrl: `${receiver.url}/hook`, logger: testLogger, retryDelaysMs: [20, 20] });
  await emulator.listen();
});
after(async () => {
  await emulator?.close();
  await receiver?.close();
});

function api(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${emulator.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`pk_own:${secret}`).toString('base64')}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

describe('cloudpayments emulator', () => {
  test('a cryptogram charge sends a signed Pay notification to ?type=pay; a refusal is retried until {"code":0}', async () => {
    await emulator.takeNotifications();
    received.length = 0;
    answers = [500];
    const charged = (await (
      await api('/payments/cards/charge', { Amount: 10.5, Currency: 'RUB', IpAddress: '127.0.0.1', CardCryptogramPacket: emulator.cryptogram('4242424242424242'), InvoiceId: 'inv-1' })
    ).json()) as {
      Success: boolean;
      Model: { TransactionId: number; Status: string; Token: string; CardLastFour: string };
    };
    assert.deepEqual([charged.Success, charged.Model.Status, charged.Model.CardLastFour], [true, 'Completed', '4242']);
    assert.match(charged.Model.Token, /^tk_/);
    await emulator.takeNotifications();
    assert.equal(received.length, 2, 'delivered once, refused, delivered again');
    const [first, second] = received;
    assert.equal(first!.body, second!.body);
    assert.equal(first!.url, '/hook?type=pay');
    const params = new URLSearchParams(first!.body);
    assert.deepEqual(
      [params.get('TransactionId'), params.get('Amount'), params.get('InvoiceId'), params.get('Status')],
      [String(charged.Model.TransactionId), '10.50', 'inv-1', 'Completed'],
    );
    assert.equal(first!.headers['content-hmac'], createHmac('sha256', secret).update(first!.body).digest('base64'));
    assert.equal(
      first!.headers['x-content-hmac'],
      createHmac('sha256', secret)
        .update(decodeURIComponent(first!.body.replace(/\+/g, ' ')))
        .digest('base64'),
    );
    assert.ok(!first!.body.includes('4242424242424242'), 'no card number in notifications');
  });

  test('the widget stand-in turns a test card into an opaque cryptogram; other numbers are refused', async () => {
    const page = await fetch(`${emulator.url}/widget?publicId=pk_own`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'none'/);
    const made = await fetch(`${emulator.url}/widget/cryptogram`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'cardNumber=4000+0000+0000+9995&expDate=12%2F34&cvv=123',
    });
    const { packet } = (await made.json()) as { packet: string };
    assert.match(packet, /^01[A-Za-z0-9+/=]+$/);
    assert.ok(!Buffer.from(packet.slice(2), 'base64').toString('latin1').includes('9995'), 'the card number is not readable in the cryptogram');
    const declined = (await (await api('/payments/cards/charge', { Amount: 1, Currency: 'RUB', IpAddress: '127.0.0.1', CardCryptogramPacket: packet })).json()) as {
      Success: boolean;
      Model: { ReasonCode: number; Status: string };
    };
    assert.deepEqual([declined.Success, declined.Model.Status, declined.Model.ReasonCode], [false, 'Declined', 5051]);
    const unknown = await fetch(`${emulator.url}/widget/cryptogram`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ cardNumber: '4111111111111111', expDate: '12/34' }),
    });
    assert.equal(unknown.status, 400);
    await emulator.takeNotifications();
  });

  test('Basic auth is required; X-Request-ID replays the first answer and refuses another body', async () => {
    assert.equal((await fetch(`${emulator.url}/test`, { method: 'POST' })).status, 401);
    const body = { Amount: 3, Currency: 'RUB', AccountId: 'a', Token: emulator.testTokens.success, TrInitiatorCode: 0, InvoiceId: 'inv-idem' };
    const first = (await (await api('/payments/tokens/charge', body, { 'x-request-id': 'rq-1' })).json()) as { Model: { TransactionId: number } };
    const replay = await api('/payments/tokens/charge', body, { 'x-request-id': 'rq-1' });
    assert.equal(replay.headers.get('x-idempotent-replay'), 'true');
    assert.equal(((await replay.json()) as { Model: { TransactionId: number } }).Model.TransactionId, first.Model.TransactionId);
    assert.equal((await api('/payments/tokens/charge', { ...body, Amount: 4 }, { 'x-request-id': 'rq-1' })).status, 409);
    assert.equal(emulator.chargeCount('inv-idem'), 1);
    await emulator.takeNotifications();
  });

  test('npm run emulator:cloudpayments starts it on PORT with the given credentials and logs with pino', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'providers/cloudpayments-emulator-main.ts'], {
      env: { ...process.env, PORT: '0', CLOUDPAYMENTS_PUBLIC_ID: 'pk_cli', CLOUDPAYMENTS_API_SECRET: 'cli-secret-123', LOG_LEVEL: 'info', NODE_ENV: 'test' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (chunk: Buffer) => {
          out += chunk.toString();
          for (const line of out.split('\n')) {
            if (!line.startsWith('{')) continue;
            try {
              const entry = JSON.parse(line) as { url?: string; msg?: string };
              if (entry.url && entry.msg?.includes('listening')) resolve(entry.url);
            } catch {
              // a partial line
            }
          }
        });
        child.on('exit', (code) => reject(new Error(`the emulator exited with ${code}`)));
      });
      const ok = await fetch(`${url}/test`, { method: 'POST', headers: { authorization: `Basic ${Buffer.from('pk_cli:cli-secret-123').toString('base64')}` } });
      assert.equal(((await ok.json()) as { Success: boolean }).Success, true);
    } finally {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  });
});
