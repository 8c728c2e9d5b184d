/**
 * Plays Graphile Worker for an advancing test clock in the sql-tests, which
 * run no worker: calls app_private.step_test_clock as test_clocks__advance
 * does, and does the jobs due with the SQL their tasks call (renew_due and its
 * collection sweep, queue_renewal_reminders, expire_incomplete,
 * dispatch_events); a charge job pays its invoice through begin_payment and
 * record_payment_result, or declines it (soft) when `declines` says so.
 * test/clocks/test-clocks.test.ts runs the same with the real worker.
 */
import type { TestDatabase } from '../../test/support/database.ts';
import { iso, payInvoice, type Row } from './billing.ts';

export interface ClockRun {
  /** The clock's time after each move, in order. */
  moves: string[];
  /** How many steps waited for work. */
  waits: number;
}

/** Does every due job (but the stepper's) with the SQL its task calls, then completes it. */
export async function workDueJobs(db: TestDatabase, declines: (invoice: Row) => boolean): Promise<void> {
  const { rows: jobs } = await db.asSuperuser((c) =>
    c.query(`select j.id, t.identifier as task, j.payload from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
             where j.run_at <= now() and j.locked_at is null and t.identifier <> 'test_clocks__advance' order by j.id`),
  );
  for (const job of jobs) {
    if (job.task === 'subscriptions__renew_due') {
      await db.asWorker((c) => c.query('select id from app_private.renew_due(100)'));
      await db.asWorker((c) =>
        c.query(`select app_hidden.enqueue_job('invoices__collect', json_build_object('invoice_id', i.id), 'invoices__collect:' || i.id)
                 from app_private.invoices_due_for_collection(100) i`),
      );
    } else if (job.task === 'subscriptions__remind_renewals') {
      await db.asWorker((c) => c.query('select app_private.queue_renewal_reminders(500)'));
    } else if (job.task === 'subscriptions__expire_incomplete') {
      await db.asWorker((c) => c.query('select app_private.expire_incomplete(100)'));
    } else if (job.task === 'events__dispatch') {
      await db.asWorker((c) => c.query('select app_private.dispatch_events(500)'));
    } else if (job.task === 'invoices__collect') {
      const { rows } = await db.asOwner((c) => c.query(`select * from app_public.invoices where id = $1 and status = 'open'`, [job.payload.invoice_id]));
      if (rows[0]) await (declines(rows[0]) ? payInvoice(db, rows[0].id, 'failed', 'soft_decline') : payInvoice(db, rows[0].id));
    }
    // Deliveries and e-mails are recorded; sending them is not the clock's business here.
    await db.asSuperuser((c) => c.query('select graphile_worker.complete_jobs(array[$1::bigint])', [job.id]));
  }
}

/** Steps a tenant's advancing clock to ready, doing its due work in between (bounded). */
export async function runTestClock(db: TestDatabase, tenantId: string, declines: (invoice: Row) => boolean = () => false): Promise<ClockRun> {
  const run: ClockRun = { moves: [], waits: 0 };
  for (let i = 0; i < 1_000; i++) {
    const { rows } = await db.asWorker((c) => c.query('select app_private.step_test_clock($1) as outcome', [tenantId]));
    if (rows[0].outcome === 'ready') return run;
    if (rows[0].outcome === 'stepped') {
      const { rows: clock } = await db.asWorker((c) => c.query('select frozen_at from app_private.test_clocks where tenant_id = $1', [tenantId]));
      run.moves.push(iso(clock[0].frozen_at));
    } else run.waits++;
    await workDueJobs(db, declines);
  }
  throw new Error('the test clock did not become ready in 1,000 steps');
}
