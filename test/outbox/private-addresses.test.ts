/**
 * Webhooks never reach the installation's own network unless
 * WEBHOOKS_ALLOW_PRIVATE=true (docs/webhooks.md, "Security notes"): with it off
 * (production's default) a loopback URL is refused when it is registered
 * through the API, and refused again when delivering, after DNS resolution,
 * to an endpoint that got past registration (a name that pointed elsewhere
 * then). Only loopback addresses are ever contacted here; names are resolved
 * by a fake resolver.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { gql } from 'graphql-request';
import { addressKind, webhookHostRefusal } from '../../lib/webhook-address.ts';
import type { RunningAbonement } from '../../server/index.ts';
import { createCustomer, createPlan, createPrice, key, type Row } from '../../sql-tests/support/billing.ts';
import { createTenantWithKey, gqlClient, gqlFailure } from '../api/support.ts';
import { until } from '../payments/support.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer } from '../support/server.ts';
import { startWebhookReceiver, type WebhookReceiver } from './support.ts';

describe('addresses', () => {
  test('every spelling of loopback, private, link-local and metadata addresses is classified', () => {
    for (const a of ['127.0.0.1', '127.255.0.9', '0.0.0.0', '::1', '::', '::ffff:127.0.0.1', '::ffff:7f00:1']) assert.equal(addressKind(a), 'loopback', a);
    for (const a of ['10.0.0.1', '172.16.5.4', '192.168.1.1', '100.64.0.1', 'fc00::1', 'fd12::1', '::ffff:10.0.0.1']) assert.equal(addressKind(a), 'private', a);
    for (const a of ['169.254.169.254', 'fd00:ec2::254', '::ffff:169.254.169.254']) assert.equal(addressKind(a), 'metadata', a);
    for (const a of ['169.254.1.1', 'fe80::1']) assert.equal(addressKind(a), 'link_local', a);
    for (const a of ['224.0.0.1', '255.255.255.255', 'ff02::1', '2001:db8::1', '64:ff9b::7f00:1', '2002:7f00:1::1']) assert.equal(addressKind(a), 'reserved', a);
    for (const a of ['93.184.215.14', '1.1.1.1', '2606:4700::1111']) assert.equal(addressKind(a), 'public', a);
  });

  test('a name is judged by every address it resolves to', async () => {
    const resolveTo =
      (...addresses: string[]) =>
      async () =>
        addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
    assert.equal(await webhookHostRefusal('https://hooks.example.com/x', false, resolveTo('93.184.215.14', '2606:4700::1111')), null);
    assert.match((await webhookHostRefusal('https://hooks.example.com/x', false, resolveTo('93.184.215.14', '127.0.0.1'))) ?? '', /resolves to 127\.0\.0\.1.*loopback/);
    assert.match((await webhookHostRefusal('https://rebind.example.com/x', true, resolveTo('169.254.169.254'))) ?? '', /metadata/);
    assert.equal(await webhookHostRefusal('https://hooks.example.com/x', true, resolveTo('127.0.0.1')), null);
    // Literal addresses are read as fetch reads them, without asking DNS.
    const noDns = async () => assert.fail('an IP literal must not be resolved');
    assert.match((await webhookHostRefusal('https://2130706433/x', false, noDns)) ?? '', /127\.0\.0\.1 is a loopback address/);
    assert.match((await webhookHostRefusal('https://[::ffff:a9fe:a9fe]/x', true, noDns)) ?? '', /metadata/);
  });
});

describe('with WEBHOOKS_ALLOW_PRIVATE off', () => {
  let db: TestDatabase;
  let server: RunningAbonement;
  let receiver: WebhookReceiver;

  before(async () => {
    db = await createTestDatabase();
    receiver = await startWebhookReceiver();
    server = await startTestServer(db, { WEBHOOKS_ALLOW_PRIVATE: 'false', WEBHOOK_RETRY_SCHEDULE: '0', WEBHOOK_TIMEOUT_MS: '1000' });
  });
  after(async () => {
    await server?.stop();
    await receiver?.close();
    await db?.drop();
  });

  test('registering a loopback URL through the API is refused with INVALID_WEBHOOK_URL', async () => {
    const tenant = await createTenantWithKey(db, { testMode: true });
    const port = new URL(receiver.url('/')).port;
    for (const url of [receiver.url('/registered'), `http://localhost:${port}/registered`, `http://[::ffff:127.0.0.1]:${port}/registered`, `http://2130706433:${port}/registered`]) {
      const failure = await gqlFailure(
        gqlClient(server, tenant.token).request(
          gql`
            mutation ($url: String!, $key: String) {
              createWebhookEndpoint(input: { url: $url, idempotencyKey: $key }) {
                result {
                  rowId
                }
              }
            }
          `,
          { url, key: key() },
        ),
      );
      assert.deepEqual(failure.codes, ['INVALID_WEBHOOK_URL'], url);
    }
    assert.equal(receiver.received().length, 0);
  });

  test('a delivery to an endpoint that resolves to loopback is refused before any request, and gives up', async () => {
    const tenant = await createTenantWithKey(db, { testMode: true });
    // The test database's own connections allow loopback (test/support/database.ts): this endpoint stands for a
    // name that passed registration and points at loopback by the time of delivery.
    const endpoint = await db.asTenant(tenant.tenantId, async (c) => {
      const { rows } = await c.query('select * from app_public.create_webhook_endpoint($1, null, null, $2)', [receiver.url('/delivered'), key()]);
      return rows[0] as Row;
    });
    const plan = await createPlan(db, tenant.tenantId);
    const price = await createPrice(db, tenant.tenantId, plan, { amount: 1990 });
    const customer = await createCustomer(db, tenant.tenantId);
    const sub = await db.asTenant(
      tenant.tenantId,
      async (c) => (await c.query('select * from app_public.create_subscription($1, $2, null, $3)', [customer, price, key()])).rows[0] as Row,
    );
    const event = await until(db, 'subscription.created', `select * from app_public.events where subject_id = $1 and type = 'subscription.created'`, [sub.id], Boolean);
    const delivery = await until(
      db,
      'the delivery giving up',
      'select * from app_public.webhook_deliveries where event_id = $1 and endpoint_id = $2',
      [event.id, endpoint.id],
      (d: Row) => d.status === 'gave_up',
    );
    assert.equal(delivery.attempt_count, 2);
    assert.equal(delivery.last_http_status, null);
    assert.match(delivery.last_error, /^refused: 127\.0\.0\.1 is a loopback address/);
    assert.equal(receiver.received('/delivered').length, 0);
  });
});
