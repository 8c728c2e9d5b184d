/**
 * app_reports.tenant_subscription_counts and tenant_monthly_revenue
 * (075-tenant-reports.sql): each tenant reads its own figures only.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { activeSubscription, createWorld, errorOf, setClock, subscribe, fileDatabase } from './support/billing.ts';

const db = fileDatabase({ clock: '2026-04-01T10:00:00Z' });

describe('tenant report views', () => {
  test('counts and revenue cover the reading tenant only', async () => {
    // Setup
    const a = await createWorld(db, { amount: 1500 });
    const b = await createWorld(db, { amount: 700 });
    await activeSubscription(db, a);
    await subscribe(db, a);
    await activeSubscription(db, b);
    // Action
    const counts = await db.asTenant(a.tenantId, (c) => c.query('select status, subscriptions from app_reports.tenant_subscription_counts order by status'));
    const revenue = await db.asTenant(a.tenantId, (c) => c.query('select month, currency, collected_minor, payments from app_reports.tenant_monthly_revenue'));
    // Assertions
    assert.deepEqual(
      counts.rows.map((r) => [r.status, r.subscriptions]),
      [
        ['active', '1'],
        ['incomplete', '1'],
      ],
    );
    assert.equal(revenue.rowCount, 1);
    assert.deepEqual([revenue.rows[0].currency, revenue.rows[0].collected_minor, revenue.rows[0].payments], ['USD', '1500', '1']);
    assert.equal((await errorOf(db.asAnonymous((c) => c.query('select * from app_reports.tenant_monthly_revenue')))).code, '42501');
  });
});
