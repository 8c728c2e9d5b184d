/**
 * Steps an advancing test clock (docs/data-model.md, "Test clocks"):
 * app_private.step_test_clock waits while the tenant's work due at the
 * clock's time is not done, marks the clock ready at its target, or moves it
 * to the next due instant and queues the cron tasks that do that work. Each
 * call that is not ready also queues the next run of this task (keyed, in the
 * tenant's own queue, so runs never overlap). A run calls it again while the
 * work is being done, pausing PAUSE_MS between calls, for at most BUDGET_MS,
 * then leaves the rest to that queued run: a long advance never holds a
 * worker slot for long. Idempotent: each step decides from the database alone,
 * under the clock row's lock.
 */
import { assertIdPayload, type BillingTask } from '../context.ts';

const BUDGET_MS = 5_000;
const PAUSE_MS = 100;

const task: BillingTask = async (payload, helpers, context) => {
  assertIdPayload(payload, 'tenant_id');
  const log = context.logger.child({ jobId: helpers.job.id, tenantId: payload.tenant_id });
  const started = Date.now();
  for (;;) {
    const { rows } = await helpers.query<{ outcome: 'ready' | 'waiting' | 'stepped' }>('select app_private.step_test_clock($1) as outcome', [payload.tenant_id]);
    const outcome = rows[0]!.outcome;
    if (outcome === 'ready') {
      log.info('test clock ready');
      return;
    }
    if (Date.now() - started > BUDGET_MS) return;
    // The work of this step is being done by other jobs (the cron tasks, charges, deliveries): look again shortly.
    if (outcome === 'waiting') await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
  }
};

export default task;
