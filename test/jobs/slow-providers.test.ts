/**
 * A provider that does not answer some requests holds only those invoices'
 * jobs (docs/operations.md, "Processes"): the worker's payments lane keeps
 * charging the others, whose answers are applied without waiting for the
 * slow ones (jobs/charge-batcher.ts, waves), and the main lane — heartbeat,
 * crons — goes on as if nothing were wrong. Before the lanes, the charges
 * waiting on five unanswered requests filled every job slot of the worker.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningAbonement } from '../../server/index.ts';
import { setClock } from '../../sql-tests/support/billing.ts';
import { createShop, rows, SANDBOX_SECRET, startPaymentsServer, subscribeWithCard, until } from '../payments/support.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { waitFor } from '../support/server.ts';
import { startWorkerProcess, stopWorkerProcess, type WorkerProcess } from '../support/worker-process.ts';

let db: TestDatabase;
let server: RunningAbonement;

before(async () => {
  db = await createTestDatabase();
  // No worker in the API process: the worker process below is the only one.
  server = await startPaymentsServer(db, { WORKER: 'off' });
});
after(async () => {
  await setClock(db, null);
  await server?.stop();
  await db?.drop();
});

describe('slow providers', () => {
  test('five requests the provider never answers hold five invoices; the other charges, the heartbeat and other jobs go on', async () => {
    // Setup: 30 invoices to charge off-session, queued while no worker runs; the gateway charges the first five
    // requests it receives and holds them unanswered (longer than this test waits for anything).
    await setClock(db, '2026-05-01T10:00:00.000Z');
    const shop = await createShop(db);
    const subscriptions: string[] = [];
    for (let i = 0; i < 30; i++) subscriptions.push((await subscribeWithCard(db, shop, 'pm_sbx_visa')).subscriptionId);
    const invoiceIds = (await rows(db, 'select id from app_public.invoices where subscription_id = any($1)', [subscriptions])).map((r) => r.id as string);
    assert.equal(invoiceIds.length, 30);
    const sandbox = server.sandbox!;
    // Only the answers to the charges settle them (the gateway's webhooks would settle the held ones too).
    sandbox.webhooks.pause();
    sandbox.faults.next('hang', 5);
    let worker: WorkerProcess | null = null;
    const count = async (status: string) =>
      (await rows(db, 'select count(*)::int as n from app_public.payments where invoice_id = any($1) and status = $2', [invoiceIds, status]))[0]!.n as number;
    try {
      // Action: a worker with few job slots in each lane, and a provider timeout longer than the test.
      worker = startWorkerProcess(db, {
        PUBLIC_URL: server.url,
        SANDBOX_GATEWAY: 'on',
        SANDBOX_SECRET,
        WORKER_CONCURRENCY: '4',
        WORKER_PAYMENTS_CONCURRENCY: '10',
        WORKER_LOCAL_QUEUE_SIZE: '10',
        PROVIDER_TIMEOUT_MS: '120000',
      });
      await waitFor('five charges made at the gateway and left unanswered', async () => (await count('pending')) >= 5, 30_000);

      // Assertions: while those five wait, work of the main lane runs…
      const queued = await db.asSuperuser(async (c) => {
        const { rows: jobs } = await c.query<{ id: string }>(
          `select (graphile_worker.add_job('maintenance__cleanup', '{}'::json)).id union all select (graphile_worker.add_job('heartbeat', '{}'::json)).id`,
        );
        return jobs.map((j) => j.id);
      });
      const since = new Date();
      await waitFor(
        'the cleanup and heartbeat jobs done',
        async () => {
          const left = await db.asSuperuser((c) => c.query('select id from graphile_worker._private_jobs where id = any($1)', [queued]));
          return left.rowCount === 0;
        },
        30_000,
      ).catch((error: Error) => assert.fail(`${error.message}; worker output: ${worker?.output()}`));
      const beat = await rows(db, 'select max(beat_at) as at from app_private.worker_heartbeats');
      assert.ok((beat[0]!.at as Date).getTime() >= since.getTime() - 1000, 'the heartbeat was recorded while the charges waited');

      // …and every other invoice is charged and paid.
      await until(
        db,
        'the 25 other invoices paid',
        `select count(*)::int as n from app_public.invoices where id = any($1) and status = 'paid'`,
        [invoiceIds],
        (r) => r.n === 25,
        30_000,
      );
      assert.equal(await count('pending'), 5, 'the five unanswered charges are still waiting: the test ran while they held');
      const payments = await rows(db, 'select idempotency_key from app_public.payments where invoice_id = any($1)', [invoiceIds]);
      assert.equal(payments.length, 30, 'one attempt per invoice');
      for (const p of payments) assert.equal(await sandbox.ledger.chargeCount(p.idempotency_key as string), 1, `one charge for ${p.idempotency_key}`);
    } finally {
      // The held requests are dropped (their outcome stays unknown until reconciliation), then the worker stops.
      sandbox.faults.dropHeld();
      sandbox.faults.clear();
      sandbox.webhooks.resume();
      await stopWorkerProcess(worker, 'SIGTERM');
    }
  });
});
