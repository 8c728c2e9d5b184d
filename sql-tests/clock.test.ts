/**
 * The one clock (issue 3): app_hidden.now() is the transaction time unless
 * a test-mode tenant has a test clock or the tests froze the database-wide
 * clock; billing code reads time nowhere else.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { migrationsFolder } from '../db/migrate.ts';
import { activeSubscription, createWorld, errorOf, iso, key, renewDue, setClock, subscriptionInvoices } from './support/billing.ts';
import { runTestClock } from './support/test-clocks.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

describe('app_hidden.now()', () => {
  test('is the transaction time when nothing is frozen', async () => {
    await setClock(db, null);
    const { rows } = await db.asOwner((c) => c.query(`select app_hidden.now() = transaction_timestamp() as same`));
    assert.equal(rows[0].same, true);
  });

  test('the database-wide test clock moves every tenant without its own clock', async () => {
    await setClock(db, '2030-01-01T00:00:00Z');
    const world = await createWorld(db);
    const { rows } = await db.asTenant(world.tenantId, (c) => c.query(`select app_hidden.now() as now`));
    assert.equal(iso(rows[0].now), '2030-01-01T00:00:00.000Z');
  });

  test('a test-mode tenant moves its own clock forward only; a live tenant cannot', async () => {
    await setClock(db, '2026-04-01T00:00:00Z');
    const test_ = await createWorld(db, { testMode: true });
    const live = await createWorld(db);
    const advance = (tenantId: string, to: string) => db.asTenant(tenantId, (c) => c.query(`select app_public.advance_test_clock($1, $2)`, [to, key()]));
    await advance(test_.tenantId, '2026-06-01T00:00:00Z');
    await runTestClock(db, test_.tenantId);
    const now = async (tenantId: string) => iso((await db.asTenant(tenantId, (c) => c.query(`select app_hidden.now() as now`))).rows[0].now);
    assert.equal(await now(test_.tenantId), '2026-06-01T00:00:00.000Z');
    assert.equal(await now(live.tenantId), '2026-04-01T00:00:00.000Z', 'other tenants are not moved');
    assert.deepEqual(Object.values(await errorOf(advance(test_.tenantId, '2026-05-01T00:00:00Z'))).slice(0, 2), ['AB422', 'CLOCK_BACKWARDS']);
    assert.equal((await errorOf(advance(live.tenantId, '2026-06-01T00:00:00Z'))).detail, 'NOT_TEST_MODE');
    // A clock row for a live tenant (inserted by hand) is ignored.
    await db.asOwner((c) => c.query(`insert into app_private.test_clocks (tenant_id, frozen_at) values ($1, '2040-01-01Z')`, [live.tenantId]));
    assert.equal(await now(live.tenantId), '2026-04-01T00:00:00.000Z');
  });

  test("renew_due follows each tenant's clock: a test tenant renews ahead of real time, alone", async () => {
    await setClock(db, '2026-04-01T00:00:00Z');
    const test_ = await createWorld(db, { testMode: true });
    const live = await createWorld(db);
    const testSub = await activeSubscription(db, test_);
    const liveSub = await activeSubscription(db, live);
    await db.asTenant(test_.tenantId, (c) => c.query(`select app_public.advance_test_clock('2026-05-01T00:00:00Z', $1)`, [key()]));
    // The test clock's stepper runs renew_due (sql-tests/support/test-clocks.ts plays the worker).
    await runTestClock(db, test_.tenantId);
    const periods = async (id: string) => (await subscriptionInvoices(db, id)).filter((i) => i.is_period).length;
    assert.equal(await periods(testSub.id), 2);
    assert.equal(await periods(liveSub.id), 1);
    assert.deepEqual(await renewDue(db), [], 'nothing of the live tenant is due');
  });
});

describe('nothing else reads the time', () => {
  test('billing migrations (010–049) call no time function but app_hidden.now()', () => {
    const folder = path.join(migrationsFolder, 'current');
    const offenders: string[] = [];
    for (const file of readdirSync(folder).filter((f) => /^0[1-4]\d-.*\.sql$/.test(f))) {
      readFileSync(path.join(folder, file), 'utf8')
        .split('\n')
        .forEach((line, i) => {
          if (/^\s*(\/\*|\*)/.test(line)) return; // block comments (the why-notes)
          const code = line.replace(/--.*$/, '').replace(/app_hidden\.now\(/g, '');
          if (/\b(now\(|current_timestamp|clock_timestamp|statement_timestamp|localtimestamp|current_date|transaction_timestamp)/i.test(code)) {
            offenders.push(`${file}:${i + 1}: ${line.trim()}`);
          }
        });
    }
    // The clock itself, and the one place that converts clock time to real time for job scheduling.
    const allowed = [
      /^015-tenants\.sql:.*return coalesce\(frozen, pg_catalog\.transaction_timestamp\(\)\);$/,
      /^041-billing-internals\.sql:.*select pg_catalog\.transaction_timestamp\(\) \+ greatest/,
    ];
    assert.deepEqual(
      offenders.filter((o) => !allowed.some((a) => a.test(o))),
      [],
    );
  });
});
