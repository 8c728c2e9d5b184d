/**
 * The console's billing SQL (500-549 in db/migrations/current/): the secret
 * name rule shared with admin/secret-names.ts, the inbox view without
 * secrets, console_close_invoice, console_review_payment and
 * console_billing_summary — each checking the operator's role in SQL,
 * idempotent per key and audit-logged, whatever the console does.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { isSecretName } from '../admin/secret-names.ts';
import { createTestDatabase, sqlState, type Claims, type TestDatabase } from '../test/support/database.ts';
import { beginPayment, createWorld, errorOf, getRow, key, openInvoice, payInvoice, recordResult, subscribe, type Row, type World } from './support/billing.ts';

let db: TestDatabase;
let world: World;
const operators: Record<string, Claims> = {};

before(async () => {
  db = await createTestDatabase();
  world = await createWorld(db);
  for (const role of ['admin', 'finance', 'support', 'viewer']) {
    const { rows } = await db.pools.owner.query(`select app_private.upsert_operator($1, $2, 'x') as id`, [`${role}-${randomUUID()}@example.com`, role]);
    operators[role] = { operator_id: rows[0].id, operator_role: role };
  }
});
after(async () => {
  await db?.drop();
});

async function manualInvoice(): Promise<Row> {
  const { rows } = await db.asTenant(world.tenantId, (c) =>
    c.query('select * from app_public.create_invoice($1, $2, $3)', [world.customerId, JSON.stringify([{ description: 'One-off', unit_amount_minor: 500 }]), key()]),
  );
  return rows[0];
}

function closeInvoice(role: string, invoiceId: string, status: string, idempotencyKey = key()) {
  return db.asOperator((c) => c.query('select * from app_private.console_close_invoice($1, $2, $3)', [invoiceId, status, idempotencyKey]), operators[role]);
}

async function audit(action: string, targetId: string): Promise<Row[]> {
  const { rows } = await db.asOwner((c) => c.query('select * from app_private.audit_log where action = $1 and target_id = $2', [action, targetId]));
  return rows;
}

describe('secret names', () => {
  test('SQL and admin/secret-names.ts agree', async () => {
    const names = [
      'password_hash',
      'provider_token',
      'secret_hash',
      'webhook_secret',
      'apiKey',
      'api_key',
      'privateKey',
      'cvc',
      'card_cvv',
      'salt',
      'otp',
      'credentials',
      'paymentMethod',
      'token',
      'tokens_used',
      'passage',
      'hashtag',
      'pan',
      'company',
      'idempotency_key',
      'brand',
      'last4',
      'provider_idempotency_key',
      'accessToken',
      'ID_TOKEN',
      'Secret',
    ];
    const { rows } = await db.asOperator((c) => c.query('select n, app_hidden.is_secret_name(n) as secret from unnest($1::text[]) n', [names]));
    for (const row of rows) assert.equal(row.secret, isSecretName(row.n), row.n);
  });

  test('without_secret_keys removes them at any depth, in objects inside arrays too', async () => {
    const { rows } = await db.asOperator((c) =>
      c.query(`select app_hidden.without_secret_keys($1) as v`, [{ a: 1, token: 't', nested: { apiKey: 'k', keep: [{ card_token: 'x', brand: 'visa' }, 'plain'] }, list: [1, 2] }]),
    );
    assert.deepEqual(rows[0].v, { a: 1, nested: { keep: [{ brand: 'visa' }, 'plain'] }, list: [1, 2] });
  });

  test('the operator role still cannot read the inbox payload; the console view has no raw body', async () => {
    assert.equal(await sqlState(db.asOperator((c) => c.query('select payload from app_private.provider_events'))), '42501');
    const { rows } = await db.asOperator((c) =>
      c.query(`select column_name from information_schema.columns where table_schema = 'app_private' and table_name = 'console_provider_events'`),
    );
    assert.deepEqual(
      rows.map((r) => r.column_name).filter((n: string) => ['payload', 'raw'].includes(n)),
      [],
    );
  });
});

describe('console_close_invoice', () => {
  test('finance voids; a replay with the same key returns the first result and logs once; another status with that key is refused', async () => {
    const invoice = await manualInvoice();
    const formKey = key();
    const first = await closeInvoice('finance', invoice.id, 'void', formKey);
    const replay = await closeInvoice('finance', invoice.id, 'void', formKey);
    assert.equal(first.rows[0].status, 'void');
    assert.deepEqual(replay.rows[0], first.rows[0]);
    assert.equal((await audit('void_invoice', invoice.id)).length, 1);
    const reused = await errorOf(closeInvoice('finance', invoice.id, 'uncollectible', formKey));
    assert.equal(reused.detail, 'IDEMPOTENCY_KEY_REUSED');
  });

  test('support and viewer are refused in SQL (FORBIDDEN), and nothing changes', async () => {
    const invoice = await manualInvoice();
    for (const role of ['support', 'viewer']) {
      const error = await errorOf(closeInvoice(role, invoice.id, 'void'));
      assert.deepEqual([error.code, error.detail], ['AB403', 'FORBIDDEN'], role);
    }
    assert.equal((await getRow(db, 'app_public.invoices', invoice.id)).status, 'open');
  });

  test('illegal moves, a payment in flight and a running subscription are refused', async () => {
    const invoice = await manualInvoice();
    await closeInvoice('admin', invoice.id, 'void');
    assert.equal((await errorOf(closeInvoice('admin', invoice.id, 'uncollectible'))).detail, 'ILLEGAL_TRANSITION');
    assert.equal((await errorOf(closeInvoice('admin', invoice.id, 'paid'))).detail, 'INVALID_INPUT');
    const other = await manualInvoice();
    await beginPayment(db, other.id);
    assert.equal((await errorOf(closeInvoice('admin', other.id, 'uncollectible'))).detail, 'PAYMENT_IN_FLIGHT');
    const sub = await subscribe(db, world);
    const period = await openInvoice(db, sub.id);
    assert.equal((await errorOf(closeInvoice('admin', period.id, 'void'))).detail, 'SUBSCRIPTION_NOT_ENDED');
  });
});

describe('console_review_payment', () => {
  test('reconciles an unknown outcome, collects again after a gateway error, refuses a healthy payment; finance and admin only', async () => {
    const sub = await subscribe(db, world);
    const invoice = await openInvoice(db, sub.id);
    const payment = await beginPayment(db, invoice.id);
    const review = (role: string, id: string) => db.asOperator((c) => c.query('select app_private.console_review_payment($1, $2) as r', [id, key()]), operators[role]);
    assert.equal((await errorOf(review('finance', payment.id))).detail, 'PAYMENT_NEEDS_NO_REVIEW');
    await recordResult(db, payment.id, 'unknown');
    assert.equal((await errorOf(review('support', payment.id))).detail, 'FORBIDDEN');
    assert.equal((await review('finance', payment.id)).rows[0].r.queued, 'payments__reconcile');
    await recordResult(db, payment.id, 'failed', 'gateway_error');
    const collected = (await review('admin', payment.id)).rows[0].r;
    assert.deepEqual([collected.queued, collected.invoice_id], ['invoices__collect', invoice.id]);
    const rows = await audit('review_payment', payment.id);
    assert.deepEqual(rows.map((r) => r.operator_role).sort(), ['admin', 'finance']);
  });
});

describe('console_billing_summary', () => {
  test('counts for every operator role; nobody else gets a console figure through the claim helpers', async () => {
    const { rows } = await db.asOperator((c) => c.query('select * from app_private.console_billing_summary()'), operators.viewer);
    const { rows: exact } = await db.asOwner((c) =>
      c.query(`select count(*) filter (where status = 'active') as active, count(*) filter (where status = 'past_due') as past_due from app_public.subscriptions`),
    );
    assert.equal(rows[0].active_subscriptions, exact[0].active);
    assert.equal(rows[0].past_due_subscriptions, exact[0].past_due);
    assert.equal(rows[0].active_subscriptions_estimated, false);
    assert.equal(await sqlState(db.asTenant(world.tenantId, (c) => c.query('select * from app_private.console_billing_summary()'))), '42501');
  });

  test("on a big table, active subscriptions are the planner's estimate (and say so)", async () => {
    for (let i = 0; i < 4; i++) {
      const sub = await subscribe(db, world);
      await payInvoice(db, (await openInvoice(db, sub.id)).id);
    }
    // Setup: statistics as ANALYZE leaves them, then a table the planner believes has 1M rows (all rolled back).
    const client = await db.pools.superuser.connect();
    try {
      await client.query('begin');
      await client.query('analyze app_public.subscriptions');
      await client.query(`update pg_class set reltuples = 1000000, relpages = 10000 where oid = 'app_public.subscriptions'::regclass`);
      const { rows: stats } = await client.query(
        `select most_common_freqs[array_position(most_common_vals::text::text[], 'active')] as share
           from pg_stats where schemaname = 'app_public' and tablename = 'subscriptions' and attname = 'status'`,
      );
      // Action: as the console does it, on the operator's login role.
      await client.query(`set local role ${db.roles.operator}`);
      await client.query(`select set_config('jwt.claims.operator_id', $1, true), set_config('jwt.claims.operator_role', 'viewer', true)`, [operators.viewer!.operator_id]);
      const { rows } = await client.query('select * from app_private.console_billing_summary()');
      // Assertions
      assert.equal(rows[0].active_subscriptions_estimated, true);
      const expected = 1_000_000 * stats[0].share;
      assert.ok(Math.abs(Number(rows[0].active_subscriptions) - expected) <= expected * 0.01, `${rows[0].active_subscriptions} ≈ ${expected}`);
    } finally {
      await client.query('rollback');
      client.release();
    }
  });
});
