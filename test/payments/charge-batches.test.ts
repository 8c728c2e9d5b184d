/**
 * Charge batches under a crash (invariant 3: never a double charge, never a
 * skipped invoice): a real worker process (jobs/main.ts) charging a batch of
 * invoices through the sandbox gateway is SIGKILLed while the batch's
 * requests are on the wire — the gateway has charged every card, answered
 * some and holds the rest unanswered, nothing is recorded yet. The dead
 * worker's jobs are released (graphile_worker.force_unlock_workers, as an
 * operator does after a crash) and a second worker process runs them: each
 * pending attempt is re-sent with its own key, the gateway replays its
 * answer, and every invoice is paid by its first attempt with one real
 * charge. The gateway's webhooks are held back so that only the re-send can
 * settle the payments; released afterwards, they change nothing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningAbonement } from '../../server/index.ts';
import { setClock } from '../../sql-tests/support/billing.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { waitFor } from '../support/server.ts';
import { startWorkerProcess, stopWorkerProcess, type WorkerProcess } from '../support/worker-process.ts';
import { createShop, inboxSettled, rows, SANDBOX_SECRET, startPaymentsServer, subscribeWithCard, until } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;

before(async () => {
  db = await createTestDatabase();
  // No worker in the API process: the worker processes below are the only ones.
  server = await startPaymentsServer(db, { WORKER: 'off' });
});
after(async () => {
  await setClock(db, null);
  await server?.stop();
  await db?.drop();
});

/** `npm run worker` against the test database, charging through this test's sandbox gateway. */
function startWorker(): WorkerProcess {
  return startWorkerProcess(db, {
    PUBLIC_URL: server.url,
    SANDBOX_GATEWAY: 'on',
    SANDBOX_SECRET,
    WORKER_CONCURRENCY: '50',
    WORKER_LOCAL_QUEUE_SIZE: '50',
    PROVIDER_TIMEOUT_MS: '60000',
  });
}

describe('charge batches', () => {
  test('a worker killed mid-batch: the next worker re-sends each pending attempt with its key; one charge per invoice, none skipped', async () => {
    // Setup: six invoices to charge off-session (first invoices of subscriptions with saved cards), queued while no worker runs.
    await setClock(db, '2026-05-01T10:00:00.000Z');
    const shop = await createShop(db);
    const subscriptions = [];
    for (let i = 0; i < 6; i++) subscriptions.push((await subscribeWithCard(db, shop, 'pm_sbx_visa')).subscriptionId);
    const invoiceIds = (await rows(db, 'select id from app_public.invoices where subscription_id = any($1)', [subscriptions])).map((r) => r.id as string);
    assert.equal(invoiceIds.length, 6);
    const sandbox = server.sandbox!;
    sandbox.webhooks.pause();
    // The gateway charges the next three requests and never answers them.
    sandbox.faults.next('hang', 3);
    let first: WorkerProcess | null = null;
    let second: WorkerProcess | null = null;
    try {
      // Action: the first worker charges; it dies while its batch waits for the unanswered requests.
      first = startWorker();
      const keys = await waitFor(
        'every card charged at the gateway',
        async () => {
          const found = await rows(db, 'select idempotency_key from app_public.payments where invoice_id = any($1)', [invoiceIds]);
          if (found.length < 6) return null;
          const charged = await Promise.all(found.map((p) => sandbox.ledger.chargeCount(p.idempotency_key)));
          return charged.every((n) => n === 1) ? found.map((p) => p.idempotency_key as string) : null;
        },
        30_000,
      );
      const pendingAtKill = (await rows(db, `select id from app_public.payments where invoice_id = any($1) and status = 'pending'`, [invoiceIds])).length;
      await stopWorkerProcess(first, 'SIGKILL');
      assert.ok(pendingAtKill >= 3, `the unanswered charges were not recorded when the worker died (${pendingAtKill} pending)`);

      // Action: its jobs are released and another worker process takes them.
      await db.asSuperuser((c) =>
        c.query(`select graphile_worker.force_unlock_workers(array(select distinct locked_by from graphile_worker._private_jobs where locked_by is not null))`),
      );
      second = startWorker();
      await until(db, 'every invoice paid', `select count(*)::int as n from app_public.invoices where id = any($1) and status = 'paid'`, [invoiceIds], (r) => r.n === 6, 30_000);

      // Assertions: each invoice paid by its first attempt (re-sent with its key), one real charge each.
      const payments = await rows(db, 'select invoice_id, attempt, status, idempotency_key from app_public.payments where invoice_id = any($1) order by invoice_id', [invoiceIds]);
      assert.equal(payments.length, 6, 'no second attempt');
      for (const p of payments) {
        assert.deepEqual([p.attempt, p.status], [1, 'succeeded']);
        assert.equal(p.idempotency_key, `abonement-${p.invoice_id}-1`);
        assert.equal(await sandbox.ledger.chargeCount(p.idempotency_key), 1, `one charge for ${p.idempotency_key}`);
        assert.equal((await sandbox.ledger.payments({ idempotencyKey: p.idempotency_key })).length, 1, 'the re-send was replayed, not charged again');
      }
      assert.deepEqual(keys.sort(), payments.map((p) => p.idempotency_key).sort());
      const active = await rows(db, `select id from app_public.subscriptions where id = any($1) and status = 'active'`, [subscriptions]);
      assert.equal(active.length, 6);
      // The killed worker may also have held leases on customer e-mails (emails__send): those jobs fail and retry until
      // the lease expires, which is the outbox's business, not the charges'. No charge-side error is allowed.
      const errors = second
        .output()
        .split('\n')
        .filter((line) => line.includes('"level":50') && !line.includes('(emails__send,'));
      assert.deepEqual(errors, [], 'the second worker logged no error about charges');

      // The held webhooks arrive after all: nothing changes.
      sandbox.webhooks.resume();
      await sandbox.webhooks.idle();
      const events = await inboxSettled(db, `provider = 'sandbox' and payload->'event'->'payment'->>'idempotencyKey' = any($1)`, [keys]);
      assert.equal(events.length, 6);
      for (const event of events) assert.equal(event.outcome, 'no_change');
    } finally {
      sandbox.faults.clear();
      sandbox.webhooks.resume();
      await stopWorkerProcess(first, 'SIGKILL');
      await stopWorkerProcess(second, 'SIGTERM');
    }
  });
});
