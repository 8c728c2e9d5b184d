/**
 * Outgoing webhooks end to end, over real HTTP: the API process with its
 * worker, tenants managing endpoints through GraphQL with their API keys, a
 * state change committing outbox events, and a local receiver that checks
 * every signature with verifyWebhookSignature. The retry schedule is shortened
 * by configuration (WEBHOOK_RETRY_SCHEDULE=0,0,0: four attempts, no waiting)
 * and the timeout to one second; nothing sleeps, everything waits on the
 * database or the receiver.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { gql } from 'graphql-request';
import type { RunningAbonement } from '../../server/index.ts';
import { verifyWebhookSignature } from '../../lib/webhook-signature.ts';
import { createCustomer, createPlan, createPrice, key, type Row } from '../../sql-tests/support/billing.ts';
import { createTenantWithKey, gqlClient, gqlFailure, type TenantWithKey } from '../api/support.ts';
import { captureLogs, jobsDone, rows, until, type CapturedLogs } from '../payments/support.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer, waitFor } from '../support/server.ts';
import { startWebhookReceiver, type ReceivedWebhook, type WebhookReceiver } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let receiver: WebhookReceiver;
let logs: CapturedLogs;

before(async () => {
  db = await createTestDatabase();
  receiver = await startWebhookReceiver();
  logs = captureLogs('info');
  server = await startTestServer(db, { WEBHOOK_RETRY_SCHEDULE: '0,0,0', WEBHOOK_TIMEOUT_MS: '1000', WORKER_CONCURRENCY: '4' }, logs.logger);
});
after(async () => {
  await server?.stop();
  await receiver?.close();
  await db?.drop();
});

const CREATE = gql`
  mutation ($url: String!, $events: [String], $key: String) {
    createWebhookEndpoint(input: { url: $url, enabledEvents: $events, idempotencyKey: $key }) {
      result { rowId url secret enabledEvents status }
    }
  }
`;

interface Endpoint {
  rowId: string;
  url: string;
  secret: string;
}

async function createEndpoint(tenant: TenantWithKey, path: string, events: string[] | null = null): Promise<Endpoint> {
  const data = await gqlClient(server, tenant.token).request<{ createWebhookEndpoint: { result: Endpoint } }>(CREATE, {
    url: receiver.url(path),
    events,
    key: key(),
  });
  return data.createWebhookEndpoint.result;
}

/** A state change that commits outbox events: an incomplete subscription (subscription.created, invoice.created, invoice.finalized). */
async function subscribe(tenant: TenantWithKey): Promise<Row> {
  const plan = await createPlan(db, tenant.tenantId);
  const price = await createPrice(db, tenant.tenantId, plan, { amount: 1990 });
  const customer = await createCustomer(db, tenant.tenantId);
  const {
    rows: [sub],
  } = await db.asTenant(tenant.tenantId, (c) => c.query('select * from app_public.create_subscription($1, $2, null, $3)', [customer, price, key()]));
  return sub;
}

async function deliveryOf(eventId: string, endpointId: string, done: (d: Row) => boolean = (d) => ['succeeded', 'gave_up'].includes(d.status)): Promise<Row> {
  return until(db, `delivery of ${eventId}`, 'select * from app_public.webhook_deliveries where event_id = $1 and endpoint_id = $2', [eventId, endpointId], done);
}

async function eventOf(subjectId: string, type: string): Promise<Row> {
  return until(db, `${type} event`, 'select * from app_public.events where subject_id = $1 and type = $2', [subjectId, type], Boolean);
}

function signatures(webhook: ReceivedWebhook): string[] {
  return String(webhook.headers['abonement-signature'])
    .split(',')
    .filter((p) => p.startsWith('v1='));
}

describe('delivery', () => {
  test('an event reaches the endpoint within moments, signed, with the event id as header and in the body', async () => {
    const tenant = await createTenantWithKey(db, { testMode: true });
    const endpoint = await createEndpoint(tenant, '/basic');
    assert.match(endpoint.secret, /^whsec_/);
    const sub = await subscribe(tenant);
    const created = await eventOf(sub.id, 'subscription.created');
    const webhook = await waitFor('subscription.created at the receiver', async () => receiver.received('/basic').find((w) => w.json.id === created.id));
    assert.equal(verifyWebhookSignature(webhook.body, webhook.headers['abonement-signature'] as string, [endpoint.secret]), 'ok');
    assert.equal(verifyWebhookSignature(webhook.body, webhook.headers['abonement-signature'] as string, ['whsec_wrong']), 'bad_signature');
    assert.equal(webhook.headers['abonement-event-id'], created.id);
    assert.equal(webhook.headers['content-type'], 'application/json; charset=utf-8');
    assert.deepEqual(Object.keys(webhook.json).sort(), ['created', 'data', 'id', 'livemode', 'type']);
    assert.deepEqual([webhook.json.type, webhook.json.livemode, webhook.json.data.id, webhook.json.data.status], ['subscription.created', false, sub.id, 'incomplete']);
    assert.equal(webhook.json.created, Math.floor(new Date(created.occurred_at).getTime() / 1000));
    const delivery = await deliveryOf(created.id, endpoint.rowId);
    assert.deepEqual([delivery.status, delivery.attempt_count, delivery.last_http_status, delivery.last_error], ['succeeded', 1, 200, null]);
    assert.ok(delivery.last_response_ms >= 0);
    // Every event of the change arrives, each once.
    for (const type of ['invoice.created', 'invoice.finalized']) {
      const e = await until(
        db,
        type,
        `select e.* from app_public.events e join app_public.invoices i on i.id = e.subject_id where i.subscription_id = $1 and e.type = $2`,
        [sub.id, type],
        Boolean,
      );
      await deliveryOf(e.id, endpoint.rowId);
    }
    const ids = receiver.received('/basic').map((w) => w.json.id);
    assert.equal(new Set(ids).size, ids.length, 'no event twice');
  });

  test('an endpoint gets only the event types it asked for', async () => {
    const tenant = await createTenantWithKey(db, { testMode: true });
    const invoicesOnly = await createEndpoint(tenant, '/filtered', ['invoice.finalized']);
    const everything = await createEndpoint(tenant, '/everything', ['*']);
    const sub = await subscribe(tenant);
    const created = await eventOf(sub.id, 'subscription.created');
    await deliveryOf(created.id, everything.rowId);
    const finalized = await until(
      db,
      'invoice.finalized',
      `select e.* from app_public.events e join app_public.invoices i on i.id = e.subject_id where i.subscription_id = $1 and e.type = 'invoice.finalized'`,
      [sub.id],
      Boolean,
    );
    await deliveryOf(finalized.id, invoicesOnly.rowId);
    await deliveryOf(finalized.id, everything.rowId);
    await jobsDone(db, 'events__deliver');
    assert.deepEqual(
      receiver.received('/filtered').map((w) => w.json.type),
      ['invoice.finalized'],
    );
    const {
      rows: [n],
    } = await db.asOwner((c) => c.query('select count(*)::int as n from app_public.webhook_deliveries where endpoint_id = $1', [invoicesOnly.rowId]));
    assert.equal(n.n, 1);
  });
});

describe('failures and retries', () => {
  test('a 500 is retried on the schedule and the next attempt succeeds: same body, same event id, attempt counted', async () => {
    const tenant = await createTenantWithKey(db, { testMode: true });
    receiver.answer('/flaky', (n) => (n === 1 ? { status: 500, body: 'database down\n  please retry' } : { status: 200 }));
    const endpoint = await createEndpoint(tenant, '/flaky', ['subscription.created']);
    const sub = await subscribe(tenant);
    const created = await eventOf(sub.id, 'subscription.created');
    const delivery = await deliveryOf(created.id, endpoint.rowId, (d) => d.status === 'succeeded');
    assert.equal(delivery.attempt_count, 2);
    const [first, second] = receiver.received('/flaky');
    assert.equal(first!.body, second!.body);
    assert.deepEqual([first!.headers['abonement-delivery-attempt'], second!.headers['abonement-delivery-attempt']], ['1', '2']);
    for (const w of [first!, second!]) assert.equal(verifyWebhookSignature(w.body, w.headers['abonement-signature'] as string, [endpoint.secret]), 'ok');
  });

  test('an endpoint that keeps failing is given up after the last attempt, with the answer kept short', async () => {
    const tenant = await createTenantWithKey(db, { testMode: true });
    receiver.answer('/down', () => ({ status: 503, body: 'x'.repeat(5000) }));
    const endpoint = await createEndpoint(tenant, '/down', ['subscription.created']);
    const sub = await subscribe(tenant);
    const created = await eventOf(sub.id, 'subscription.created');
    const delivery = await deliveryOf(created.id, endpoint.rowId, (d) => d.status === 'gave_up');
    assert.deepEqual([delivery.attempt_count, delivery.last_http_status, delivery.next_attempt_at], [4, 503, null]);
    assert.equal(receiver.received('/down').length, 4);
    assert.ok(delivery.last_error.startsWith('HTTP 503: xxx') && delivery.last_error.length <= 220, `truncated: ${delivery.last_error.length}`);
  });

  test('redirects are not followed: a 302 is a failed attempt', async () => {
    const tenant = await createTenantWithKey(db, { testMode: true });
    receiver.answer('/moved', () => ({ status: 302, headers: { location: receiver.url('/elsewhere') }, body: '' }));
    const endpoint = await createEndpoint(tenant, '/moved', ['subscription.created']);
    const sub = await subscribe(tenant);
    const created = await eventOf(sub.id, 'subscription.created');
    const delivery = await deliveryOf(created.id, endpoint.rowId, (d) => d.status === 'gave_up');
    assert.equal(delivery.last_http_status, 302);
    assert.match(delivery.last_error, /redirects are not followed/);
    assert.equal(receiver.received('/elsewhere').length, 0);
  });

  test('no answer within the timeout is a failed attempt', async () => {
    const tenant = await createTenantWithKey(db, { testMode: true });
    receiver.answer('/slow', () => ({ status: 200, delayMs: 5_000 }));
    const endpoint = await createEndpoint(tenant, '/slow', ['subscription.created']);
    const sub = await subscribe(tenant);
    const created = await eventOf(sub.id, 'subscription.created');
    const delivery = await deliveryOf(created.id, endpoint.rowId, (d) => d.status === 'gave_up');
    assert.equal(delivery.last_http_status, null);
    assert.match(delivery.last_error, /^timeout: no answer within 1000 ms/);
    assert.equal(delivery.attempt_count, 4);
  });

  test('a replayed job does not deliver a succeeded delivery again', async () => {
    const tenant = await createTenantWithKey(db, { testMode: true });
    const endpoint = await createEndpoint(tenant, '/once', ['subscription.created']);
    const sub = await subscribe(tenant);
    const created = await eventOf(sub.id, 'subscription.created');
    const delivery = await deliveryOf(created.id, endpoint.rowId);
    assert.equal(delivery.status, 'succeeded');
    // The same job again (as after a crash before completion), and the events__deliver job too.
    await db.asWorker(async (c) => {
      await c.query(`select graphile_worker.add_job('webhooks__deliver', json_build_object('delivery_id', $1::uuid))`, [delivery.id]);
      await c.query(`select graphile_worker.add_job('events__deliver', json_build_object('event_id', $1::uuid))`, [created.id]);
    });
    await jobsDone(db, 'events__deliver');
    await jobsDone(db, 'webhooks__deliver');
    assert.equal(receiver.received('/once').filter((w) => w.json.id === created.id).length, 1);
    const again = await deliveryOf(created.id, endpoint.rowId);
    assert.equal(again.attempt_count, 1);
  });
});

describe('secrets', () => {
  test('during a rotation each delivery carries a v1 signature per active secret', async () => {
    const tenant = await createTenantWithKey(db, { testMode: true });
    const endpoint = await createEndpoint(tenant, '/rotating', ['subscription.created']);
    const data = await gqlClient(server, tenant.token).request<{ rotateWebhookEndpointSecret: { result: Endpoint } }>(
      gql`mutation ($id: UUID!) { rotateWebhookEndpointSecret(input: { endpointId: $id }) { result { rowId secret } } }`,
      { id: endpoint.rowId },
    );
    const rotated = data.rotateWebhookEndpointSecret.result.secret;
    assert.match(rotated, /^whsec_/);
    const sub = await subscribe(tenant);
    const created = await eventOf(sub.id, 'subscription.created');
    await deliveryOf(created.id, endpoint.rowId);
    const webhook = receiver.received('/rotating').find((w) => w.json.id === created.id)!;
    assert.equal(signatures(webhook).length, 2);
    const header = webhook.headers['abonement-signature'] as string;
    assert.equal(verifyWebhookSignature(webhook.body, header, [endpoint.secret]), 'ok', 'the old secret still verifies');
    assert.equal(verifyWebhookSignature(webhook.body, header, [rotated]), 'ok', 'the new one too');
  });

  test('secrets never appear in GraphQL reads or in the logs', async () => {
    const tenant = await createTenantWithKey(db, { testMode: true });
    const endpoint = await createEndpoint(tenant, '/quiet');
    const sub = await subscribe(tenant);
    await deliveryOf((await eventOf(sub.id, 'subscription.created')).id, endpoint.rowId);
    const read = await gqlClient(server, tenant.token).request(gql`
      {
        webhookEndpoints { nodes { rowId url description enabledEvents status disabledReason createdAt updatedAt
          deliveries { nodes { rowId eventId eventType status attemptCount lastHttpStatus lastError lastResponseMs nextAttemptAt } } } }
        webhookDeliveries { nodes { rowId event { rowId type data } endpoint { url } } }
      }
    `);
    const text = JSON.stringify(read);
    assert.ok(text.includes(endpoint.rowId) && text.includes('subscription.created'));
    assert.ok(!text.includes('whsec_'), 'no secret in GraphQL reads');
    const logText = JSON.stringify(logs.lines);
    assert.ok(
      logs.lines.some((l) => l.msg === 'webhook delivered'),
      'deliveries are logged',
    );
    assert.ok(!logText.includes('whsec_') && !logText.includes('v1='), 'no secret or signature in the logs');
    assert.ok(!logText.includes('/quiet'), 'endpoint paths are not logged (hosts only)');
  });
});

describe('isolation', () => {
  test("tenant B neither sees nor changes tenant A's endpoints or deliveries", async () => {
    const a = await createTenantWithKey(db, { testMode: true });
    const b = await createTenantWithKey(db, { testMode: true });
    const endpoint = await createEndpoint(a, '/tenant-a');
    const sub = await subscribe(a);
    await deliveryOf((await eventOf(sub.id, 'subscription.created')).id, endpoint.rowId);
    const asB = gqlClient(server, b.token);
    const seen = await asB.request<{ webhookEndpoints: { nodes: unknown[] }; webhookDeliveries: { nodes: unknown[] } }>(
      gql`{ webhookEndpoints { nodes { rowId } } webhookDeliveries { nodes { rowId } } }`,
    );
    assert.deepEqual([seen.webhookEndpoints.nodes, seen.webhookDeliveries.nodes], [[], []]);
    for (const mutation of [
      gql`mutation ($id: UUID!) { updateWebhookEndpoint(input: { endpointId: $id, url: "https://evil.example.com/" }) { clientMutationId } }`,
      gql`mutation ($id: UUID!) { rotateWebhookEndpointSecret(input: { endpointId: $id }) { result { secret } } }`,
      gql`mutation ($id: UUID!) { deleteWebhookEndpoint(input: { endpointId: $id }) { clientMutationId } }`,
    ]) {
      const failure = await gqlFailure(asB.request(mutation, { id: endpoint.rowId }));
      assert.deepEqual(failure.codes, ['WEBHOOK_ENDPOINT_NOT_FOUND']);
    }
    const [still] = await rows(db, 'select url from app_public.webhook_endpoints where id = $1', [endpoint.rowId]);
    assert.equal(still!.url, receiver.url('/tenant-a'));
  });
});
