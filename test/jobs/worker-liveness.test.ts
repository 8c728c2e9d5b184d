/**
 * Jobs locked by a worker process that died (SIGKILL, a lost machine) are
 * released by the next worker process within its beat, not after Graphile
 * Worker's 4-hour timeout: pools whose heartbeat is stale, and pools that
 * never beat once their lock is that old. A live pool's locks are kept.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { waitFor } from '../support/server.ts';
import { startWorkerProcess, stopWorkerProcess } from '../support/worker-process.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

describe('worker liveness', () => {
  test('a starting worker releases the jobs of dead workers and keeps those of live ones', async () => {
    // Setup: three jobs of a task no worker here runs, locked by a pool that stopped beating five minutes ago,
    // by a pool beating now, and by a pool that never beat (locked two minutes ago).
    const ids = await db.asSuperuser(async (c) => {
      const add = async (worker: string, lockedAgo: string) => {
        const { rows } = await c.query<{ id: string }>(`select id from graphile_worker.add_job('liveness_probe', '{}'::json)`);
        await c.query(`update graphile_worker._private_jobs set locked_by = $2, locked_at = now() - $3::interval where id = $1`, [rows[0]!.id, worker, lockedAgo]);
        return rows[0]!.id;
      };
      await c.query(`insert into app_private.worker_pool_beats (pool_id, beat_at) values ('pool-dead', now() - interval '5 minutes'), ('pool-live', now())`);
      return { dead: await add('pool-dead', '30 seconds'), live: await add('pool-live', '3 minutes'), never: await add('pool-never-beat', '2 minutes') };
    });

    const worker = startWorkerProcess(db);
    try {
      const locks = async () =>
        db.asSuperuser(async (c) => {
          const { rows } = await c.query<{ id: string; locked_by: string | null }>('select id::text, locked_by from graphile_worker._private_jobs where id = any($1)', [
            Object.values(ids),
          ]);
          return Object.fromEntries(rows.map((r) => [r.id, r.locked_by]));
        });
      const after = await waitFor(
        'the dead workers’ jobs released',
        async () => {
          const now = await locks();
          return now[ids.dead] === null && now[ids.never] === null ? now : null;
        },
        30_000,
      ).catch((error: Error) => assert.fail(`${error.message}; worker output: ${worker.output()}`));
      assert.equal(after[ids.live], 'pool-live', 'a live worker keeps its job');
      // The new worker beats for its own pool id, so the next one to start sees it alive.
      const beats = await waitFor('the new worker pools’ beats', async () => {
        const { rows } = await db.asSuperuser((c) => c.query(`select pool_id from app_private.worker_pool_beats where pool_id not in ('pool-dead', 'pool-live')`));
        return rows.length >= 3 ? rows : null;
      });
      // One Graphile Worker pool per lane (jobs/worker.ts, WORKER_LANES), each beating for itself.
      assert.equal(beats.length, 3, 'a beat for each of the new worker’s pools');
      assert.match(worker.output(), /released the jobs locked by workers that stopped beating/);
    } finally {
      await stopWorkerProcess(worker, 'SIGTERM');
    }
  });
});
