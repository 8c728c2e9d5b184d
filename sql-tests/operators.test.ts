/**
 * app_private.operators and the console's rules on it (090-console.sql):
 * first admin, "one enabled admin remains" (also under a race), updated_at,
 * and the audit trigger.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, sqlState, type TestDatabase } from '../test/support/database.ts';
import { backendPid, waitUntilBlocked } from './support/billing.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

const HASH = 'scrypt$15$8$3$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5';

async function operator(email: string, role: string): Promise<string> {
  const { rows } = await db.pools.owner.query<{ id: string }>('select app_private.upsert_operator($1, $2, $3) as id', [email, role, HASH]);
  return rows[0]!.id;
}

describe('create_first_admin', () => {
  test('creates an admin only while no operator exists, and is owner-only', async () => {
    await db.asOwner(
      async (c) => {
        // Setup
        await c.query('delete from app_private.operators');
        // Action
        const first = await c.query<{ id: string | null }>(`select app_private.create_first_admin('a@example.com', $1) as id`, [HASH]);
        const second = await c.query<{ id: string | null }>(`select app_private.create_first_admin('b@example.com', $1) as id`, [HASH]);
        // Assertions
        assert.ok(first.rows[0]!.id);
        assert.equal(second.rows[0]!.id, null);
        const { rows } = await c.query<{ email: string; role: string }>('select email, role from app_private.operators');
        assert.deepEqual(rows, [{ email: 'a@example.com', role: 'admin' }]);
      },
      { rollback: true },
    );
    const code = await sqlState(db.asOperator((c) => c.query(`select app_private.create_first_admin('x@example.com', 'h')`)));
    assert.equal(code, '42501');
  });
});

describe('at least one enabled admin remains', () => {
  test('demoting, disabling or deleting the last enabled admin is refused with AB001 / LAST_ADMIN', async () => {
    await db.asOwner(
      async (c) => {
        await c.query('delete from app_private.operators');
        const { rows } = await c.query<{ id: string }>(`select app_private.upsert_operator('solo@example.com', 'admin', $1) as id`, [HASH]);
        const id = rows[0]!.id;
        for (const change of [`set role = 'viewer'`, 'set disabled_at = now()']) {
          await c.query('savepoint s');
          const error = await c.query(`update app_private.operators ${change} where id = $1`, [id]).then(
            () => null,
            (e: { code?: string; detail?: string }) => e,
          );
          await c.query('rollback to savepoint s');
          assert.equal(error?.code, 'AB001', change);
          assert.equal(error?.detail, 'LAST_ADMIN');
        }
        await c.query(`select app_private.upsert_operator('other@example.com', 'viewer', $1)`, [HASH]);
        await c.query('savepoint s');
        assert.equal(await sqlState(c.query('delete from app_private.operators where id = $1', [id])), 'AB001');
        await c.query('rollback to savepoint s');
      },
      { rollback: true },
    );
  });

  test('two admins demoting each other at the same time: one of them is refused', async () => {
    // Setup: exactly two enabled admins (committed, so two connections see them).
    await db.pools.owner.query('delete from app_private.console_audit_log');
    await db.pools.owner.query(`delete from app_private.operators where email not in ('race-a@example.com', 'race-b@example.com')`);
    const a = await operator('race-a@example.com', 'admin');
    const b = await operator('race-b@example.com', 'admin');
    const first = await db.pools.operator.connect();
    const second = await db.pools.operator.connect();
    try {
      // Action
      await first.query('begin');
      await second.query('begin');
      const secondPid = await backendPid(second);
      await first.query(`update app_private.operators set role = 'viewer' where id = $1`, [a]);
      const racing = second.query(`update app_private.operators set role = 'viewer' where id = $1`, [b]).then(
        () => null,
        (e: { code?: string }) => e.code,
      );
      // The second waits on the first (advisory lock); let the first commit.
      await waitUntilBlocked(db, secondPid);
      await first.query('commit');
      const secondError = await racing;
      await second.query(secondError ? 'rollback' : 'commit');
      // Assertions
      assert.equal(secondError, 'AB001', 'the second demotion sees the first and is refused');
      const { rows } = await db.pools.owner.query<{ n: number }>(`select count(*)::int as n from app_private.operators where role = 'admin' and disabled_at is null`);
      assert.equal(rows[0]!.n, 1);
    } finally {
      await first.query('rollback').catch(() => undefined);
      await second.query('rollback').catch(() => undefined);
      first.release();
      second.release();
    }
  });
});

describe('changes of operators', () => {
  test('updated_at follows changes but not logins; every change is audited without the hash', async () => {
    const id = await operator('audited@example.com', 'support');
    const { rows: before } = await db.pools.owner.query<{ updated_at: Date }>('select updated_at from app_private.operators where id = $1', [id]);
    await db.asOperator((c) => c.query('select app_private.record_operator_login($1)', [id]));
    const { rows: afterLogin } = await db.pools.owner.query<{ updated_at: Date }>('select updated_at from app_private.operators where id = $1', [id]);
    assert.equal(afterLogin[0]!.updated_at.getTime(), before[0]!.updated_at.getTime(), 'a login is not a change');

    const actor = await operator('actor@example.com', 'admin');
    await db.asOperator((c) => c.query(`update app_private.operators set name = 'Renamed' where id = $1`, [id]), { operator_id: actor });
    const { rows: changed } = await db.pools.owner.query<{ updated_at: Date }>('select updated_at from app_private.operators where id = $1', [id]);
    assert.ok(changed[0]!.updated_at > before[0]!.updated_at);
    await db.pools.owner.query(`select app_private.upsert_operator('audited@example.com', 'support', 'scrypt$new')`);

    const { rows: audit } = await db.pools.owner.query<{ operator_id: string | null; action: string; before: object | null; after: Record<string, unknown> }>(
      `select operator_id, action, before, after from app_private.console_audit_log where resource = 'operators' and record_id = $1 order by id`,
      [id],
    );
    assert.deepEqual(
      audit.map((r) => [r.action, r.operator_id]),
      [
        ['insert', null],
        ['update', actor],
        ['update', null],
      ],
      'creation, the console change (by the actor), the command-line password reset; not the login',
    );
    assert.equal(audit[2]!.after.password_changed, true);
    assert.doesNotMatch(JSON.stringify(audit), /scrypt|password_hash/);
  });

  test('the operator role can read the audit log but not write it', async () => {
    assert.equal(await sqlState(db.asOperator((c) => c.query(`insert into app_private.console_audit_log (action, resource) values ('x', 'y')`))), '42501');
    assert.equal(await sqlState(db.asOperator((c) => c.query('delete from app_private.console_audit_log'))), '42501');
    await db.asOperator((c) => c.query('select count(*) from app_private.console_audit_log'));
  });
});
