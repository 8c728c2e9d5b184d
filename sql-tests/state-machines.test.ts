/**
 * docs/data-model.md, State machines: every legal transition of subscriptions and
 * payments works and writes a history row and its outbox event; every illegal
 * one is rejected with ILLEGAL_TRANSITION — as the owner, the most privileged
 * role that is not a superuser. The legal moves are written out here from the
 * docs, so a change to app_private.state_transitions that departs from them
 * fails this test.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type pg from 'pg';
import { createTestDatabase, sqlState, type TestDatabase } from '../test/support/database.ts';
import { createWorld, errorOf, subscribe, type World } from './support/billing.ts';

let db: TestDatabase;
let world: World;
let invoiceId: string;
before(async () => {
  db = await createTestDatabase();
  world = await createWorld(db);
  const sub = await subscribe(db, world);
  const { rows } = await db.asOwner((c) => c.query(`select id from app_public.invoices where subscription_id = $1`, [sub.id]));
  invoiceId = rows[0].id;
});
after(async () => {
  await db?.drop();
});

const SUBSCRIPTION_STATUSES = ['incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'paused', 'canceled'];
const SUBSCRIPTION_LEGAL: Record<string, string> = {
  'incomplete>active': 'subscription.activated',
  'incomplete>incomplete_expired': 'subscription.incomplete_expired',
  'incomplete>canceled': 'subscription.canceled',
  'trialing>active': 'subscription.activated',
  'trialing>past_due': 'subscription.past_due',
  'trialing>canceled': 'subscription.canceled',
  'active>past_due': 'subscription.past_due',
  'active>paused': 'subscription.paused',
  'active>canceled': 'subscription.canceled',
  'past_due>active': 'subscription.recovered',
  'past_due>canceled': 'subscription.canceled',
  'paused>active': 'subscription.resumed',
};
/** How to reach each status from a freshly inserted row, by legal moves only. */
const SUBSCRIPTION_PATH: Record<string, string[]> = {
  incomplete: ['incomplete'],
  trialing: ['trialing'],
  active: ['incomplete', 'active'],
  past_due: ['incomplete', 'active', 'past_due'],
  paused: ['incomplete', 'active', 'paused'],
  canceled: ['incomplete', 'canceled'],
  incomplete_expired: ['incomplete', 'incomplete_expired'],
};

const PAYMENT_STATUSES = ['pending', 'requires_action', 'processing', 'succeeded', 'failed', 'canceled'];
const PAYMENT_LEGAL: Record<string, string> = {
  'pending>processing': 'payment.processing',
  'pending>requires_action': 'payment.requires_action',
  'pending>failed': 'payment.failed',
  'pending>canceled': 'payment.canceled',
  'requires_action>processing': 'payment.processing',
  'requires_action>failed': 'payment.failed',
  'requires_action>canceled': 'payment.canceled',
  'processing>succeeded': 'payment.succeeded',
  'processing>failed': 'payment.failed',
};
const PAYMENT_PATH: Record<string, string[]> = {
  pending: ['pending'],
  requires_action: ['pending', 'requires_action'],
  processing: ['pending', 'processing'],
  succeeded: ['pending', 'processing', 'succeeded'],
  failed: ['pending', 'failed'],
  canceled: ['pending', 'canceled'],
};

async function insertSubscription(c: pg.PoolClient, status: string): Promise<string> {
  const { rows } = await c.query(
    `insert into app_public.subscriptions (tenant_id, customer_id, price_id, currency, status, current_period_start,
       current_period_end, billing_anchor, started_at)
     values ($1, $2, $3, 'USD', $4, '2026-01-01Z', '2026-02-01Z', '2026-01-01Z', '2026-01-01Z') returning id`,
    [world.tenantId, world.customerId, world.priceId, status],
  );
  return rows[0].id;
}

async function insertPayment(c: pg.PoolClient, status: string): Promise<string> {
  const { rows } = await c.query(
    `insert into app_public.payments (tenant_id, invoice_id, customer_id, currency, amount_minor, provider, idempotency_key, attempt, status)
     values ($1, $2, $3, 'USD', 1000, 'sandbox', gen_random_uuid()::text, 1, $4) returning id`,
    [world.tenantId, invoiceId, world.customerId, status],
  );
  return rows[0].id;
}

async function walk(c: pg.PoolClient, table: string, path: string[], insert: (c: pg.PoolClient, s: string) => Promise<string>) {
  const id = await insert(c, path[0]!);
  for (const status of path.slice(1)) await c.query(`update ${table} set status = $2 where id = $1`, [id, status]);
  return id;
}

for (const machine of [
  {
    name: 'subscription',
    table: 'app_public.subscriptions',
    statuses: SUBSCRIPTION_STATUSES,
    legal: SUBSCRIPTION_LEGAL,
    path: SUBSCRIPTION_PATH,
    insert: insertSubscription,
    initial: ['incomplete', 'trialing'],
  },
  { name: 'payment', table: 'app_public.payments', statuses: PAYMENT_STATUSES, legal: PAYMENT_LEGAL, path: PAYMENT_PATH, insert: insertPayment, initial: ['pending'] },
]) {
  describe(`${machine.name} state machine, as the owner`, () => {
    test('the transition table is exactly docs/data-model.md, State machines', async () => {
      const { rows } = await db.asOwner((c) =>
        c.query(`select from_status, to_status, event_type from app_private.state_transitions where machine = $1 and from_status is not null`, [machine.name]),
      );
      const actual = Object.fromEntries(rows.map((r) => [`${r.from_status}>${r.to_status}`, r.event_type]));
      assert.deepEqual(actual, machine.legal);
    });

    for (const from of machine.statuses) {
      for (const to of machine.statuses) {
        if (from === to) continue;
        const move = `${from}>${to}`;
        const expectedEvent = machine.legal[move];
        test(`${move} is ${expectedEvent ? 'allowed' : 'rejected'}`, async () => {
          await db.asOwner(
            async (c) => {
              // Setup
              const id = await walk(c, machine.table, machine.path[from]!, machine.insert);
              // Action
              await c.query('savepoint attempt');
              const attempt = c.query(`update ${machine.table} set status = $2 where id = $1`, [id, to]);
              // Assertions
              if (expectedEvent) {
                await attempt;
                const history = await c.query(`select from_status, to_status from app_public.status_changes where entity_id = $1 order by changed_at, ctid`, [id]);
                assert.deepEqual(history.rows.at(-1), { from_status: from, to_status: to });
                const events = await c.query(`select type from app_public.events where subject_id = $1`, [id]);
                assert.ok(
                  events.rows.some((e) => e.type === expectedEvent),
                  `${expectedEvent} written`,
                );
              } else {
                const error = await errorOf(attempt);
                assert.equal(error.code, 'AB409');
                assert.equal(error.detail, 'ILLEGAL_TRANSITION');
                await c.query('rollback to savepoint attempt');
              }
            },
            { rollback: true },
          );
        });
      }
    }

    for (const status of machine.statuses.filter((s) => !machine.initial.includes(s))) {
      test(`a new ${machine.name} cannot start as ${status}`, async () => {
        const error = await errorOf(db.asOwner((c) => machine.insert(c, status), { rollback: true }));
        assert.equal(error.detail, 'ILLEGAL_TRANSITION');
      });
    }
  });
}

/**
 * Webhook deliveries use the same rows and guard (docs/data-model.md, "State
 * machines"), without history rows or outbox events: the moves are checked
 * here pair by pair as the owner, with the same error as the other machines.
 */
const DELIVERY_STATUSES = ['pending', 'succeeded', 'failed', 'gave_up'];
const DELIVERY_LEGAL = ['pending>succeeded', 'pending>failed', 'pending>gave_up', 'failed>succeeded', 'failed>gave_up', 'failed>pending', 'gave_up>pending'];

describe('webhook delivery state machine, as the owner', () => {
  let endpointId: string;
  before(async () => {
    const { rows } = await db.asTenant(world.tenantId, (c) =>
      c.query(`select id from app_public.create_webhook_endpoint('https://example.com/hook', array['*'], null, gen_random_uuid()::text)`),
    );
    endpointId = rows[0].id;
  });

  async function insertDelivery(c: pg.PoolClient, status: string): Promise<string> {
    const {
      rows: [e],
    } = await c.query(`select app_hidden.emit_event($1, 'test.delivery', 'subscription', gen_random_uuid(), '{}') as id`, [world.tenantId]);
    const { rows } = await c.query(
      `insert into app_public.webhook_deliveries (tenant_id, event_id, endpoint_id, event_type, status) values ($1, $2, $3, 'test.delivery', $4) returning id`,
      [world.tenantId, e.id, endpointId, status],
    );
    return rows[0].id;
  }

  test('the transition table is exactly the documented moves, starting at pending, with no events', async () => {
    const { rows } = await db.asOwner((c) => c.query(`select from_status, to_status, event_type from app_private.state_transitions where machine = 'webhook_delivery'`));
    assert.deepEqual(
      rows
        .filter((r) => r.from_status !== null)
        .map((r) => `${r.from_status}>${r.to_status}`)
        .sort(),
      [...DELIVERY_LEGAL].sort(),
    );
    assert.deepEqual(
      rows.filter((r) => r.from_status === null).map((r) => r.to_status),
      ['pending'],
    );
    assert.ok(rows.every((r) => r.event_type === null));
  });

  for (const from of DELIVERY_STATUSES) {
    for (const to of DELIVERY_STATUSES) {
      if (from === to) continue;
      const move = `${from}>${to}`;
      const legal = DELIVERY_LEGAL.includes(move);
      test(`${move} is ${legal ? 'allowed' : 'rejected'}`, async () => {
        await db.asOwner(
          async (c) => {
            const id = await insertDelivery(c, 'pending');
            if (from !== 'pending') await c.query(`update app_public.webhook_deliveries set status = $2 where id = $1`, [id, from]);
            await c.query('savepoint attempt');
            const attempt = c.query(`update app_public.webhook_deliveries set status = $2 where id = $1 returning status`, [id, to]);
            if (legal) {
              assert.equal((await attempt).rows[0].status, to);
            } else {
              const error = await errorOf(attempt);
              assert.deepEqual([error.code, error.detail], ['AB409', 'ILLEGAL_TRANSITION']);
              await c.query('rollback to savepoint attempt');
            }
          },
          { rollback: true },
        );
      });
    }
  }

  for (const status of DELIVERY_STATUSES.filter((s) => s !== 'pending')) {
    test(`a new delivery cannot start as ${status}`, async () => {
      const error = await errorOf(db.asOwner((c) => insertDelivery(c, status), { rollback: true }));
      assert.deepEqual([error.code, error.detail], ['AB409', 'ILLEGAL_TRANSITION']);
    });
  }
});

describe('request roles cannot write statuses at all', () => {
  test('a tenant cannot update its own subscription or payment rows directly', async () => {
    const sub = await subscribe(db, world);
    for (const table of ['app_public.subscriptions', 'app_public.payments', 'app_public.invoices']) {
      const code = await sqlState(db.asTenant(world.tenantId, (c) => c.query(`update ${table} set status = 'canceled' where id = $1`, [sub.id])));
      assert.equal(code, '42501', `${table}: permission denied`);
    }
  });
});
