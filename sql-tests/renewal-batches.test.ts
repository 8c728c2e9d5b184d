/**
 * app_private.renew_due batches running at once (docs/data-model.md, "Renewal
 * periods"): each numbers its invoices through the tenants' counter rows and
 * applies customer balances, and takes those rows in (tenant, customer)
 * order, so overlapping batches over interleaved tenants wait for each other
 * and never deadlock; every period is still invoiced once.
 *
 * Its own database: the order of due subscriptions is the point, and other
 * files' subscriptions would come first.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { activeSubscription, backendPid, createWorld, openTransaction, renewDue, setClock, settle, subscriptionInvoices, waitUntilBlocked, type Row } from './support/billing.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await setClock(db, null);
  await db?.drop();
});

describe('renew_due batches at once', () => {
  test('two overlapping batches over interleaved tenants neither deadlock nor double-invoice', async () => {
    // Setup: tenants A, B and C; periods ending b1 < a1 < c1 < c2 < a2.
    const [a, b, c] = [await createWorld(db), await createWorld(db), await createWorld(db)];
    const subs: Row[] = [];
    let hour = 0;
    for (const world of [b, a, c, c, a]) {
      await setClock(db, `2026-03-01T0${hour++}:00:00Z`);
      subs.push(await activeSubscription(db, world));
    }
    await setClock(db, '2026-04-02T00:00:00Z');
    // Tenant A's invoice counter is held for a moment (as a tenant's own invoicing would hold it).
    const holder = await openTransaction(db.pools.superuser, (x) => x.query('select * from app_private.invoice_counters where tenant_id = $1 for update', [a.tenantId]));
    const first = await openTransaction(db.pools.worker);
    const second = await openTransaction(db.pools.worker);
    try {
      // Action: batch 1 takes b1, a1, c1 and batch 2 c2, a2; both wait on A's counter; it is released.
      // (In period-end order, batch 1 held B's counter and batch 2 C's while both waited for A's; then batch 1 needed
      // C's: a deadlock.)
      const [firstPid, secondPid] = [await backendPid(first), await backendPid(second)];
      const byFirst = settle(first.query('select * from app_private.renew_due(3)'));
      await waitUntilBlocked(db, firstPid);
      const bySecond = settle(second.query('select * from app_private.renew_due(2)'));
      await waitUntilBlocked(db, secondPid);
      await holder.query('commit');
      // Each batch commits when it returns, as the job does: batch 2 waits for batch 1's counter until then.
      const finish = async (tx: typeof first, result: Awaited<typeof byFirst>) => {
        await tx.query(result.ok ? 'commit' : 'rollback');
        return result;
      };
      const [firstResult, secondResult] = await Promise.all([byFirst.then((r) => finish(first, r)), bySecond.then((r) => finish(second, r))]);

      // Assertions: neither failed; each renewed its own.
      assert.ok(firstResult.ok, `batch 1: ${JSON.stringify(!firstResult.ok && firstResult.error.code)}`);
      assert.ok(secondResult.ok, `batch 2: ${JSON.stringify(!secondResult.ok && secondResult.error.code)}`);
      const renewed = (rows: Row[]) => rows.map((i) => i.subscription_id).sort();
      assert.deepEqual(renewed(firstResult.value.rows), renewed(subs.slice(0, 3).map((s) => ({ subscription_id: s.id }))));
      assert.deepEqual(renewed(secondResult.value.rows), renewed(subs.slice(3).map((s) => ({ subscription_id: s.id }))));
    } finally {
      holder.release();
      first.release();
      second.release();
    }
    // Every period invoiced once; each tenant's invoice numbers run on without a gap or a repeat.
    assert.equal((await renewDue(db)).length, 0);
    const numbers = new Map<string, number[]>();
    for (const sub of subs) {
      const invoices = await subscriptionInvoices(db, sub.id);
      assert.equal(invoices.length, 2, `subscription ${sub.id}: one invoice per period`);
      numbers.set(sub.tenant_id, [...(numbers.get(sub.tenant_id) ?? []), ...invoices.map((i) => Number(String(i.number).split('-').at(-1)))]);
    }
    for (const list of numbers.values()) {
      assert.deepEqual(
        list.sort((x, y) => x - y),
        Array.from({ length: list.length }, (_, k) => k + 1),
      );
    }
  });
});
