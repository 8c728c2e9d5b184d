/**
 * Webhooks within a fraction of a second instead of up to a minute: every
 * OUTBOX_POLL_MS each worker process asks app_private.outbox_has_undispatched()
 * (one index probe) and, when the outbox has undispatched events, queues the
 * events__dispatch task (job key events__dispatch: one queued run at a time;
 * a run already under way gets one follow-up). The every-minute cron stays as
 * the safety net. Why a poller and not NOTIFY: 220-outbox-dispatch.sql.
 */
import type pg from 'pg';
import type { Logger } from '../lib/logger.ts';

export interface OutboxPoller {
  stop(): Promise<void>;
}

export function startOutboxPoller(options: { pool: pg.Pool; logger: Logger; intervalMs: number; dispatch: () => Promise<void> }): OutboxPoller {
  const { pool, logger, intervalMs, dispatch } = options;
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<void> = Promise.resolve();
  let failing = false;

  const poll = async () => {
    try {
      const { rows } = await pool.query<{ due: boolean }>('select app_private.outbox_has_undispatched() as due');
      if (rows[0]?.due && !stopped) await dispatch();
      if (failing) logger.info('outbox poller recovered');
      failing = false;
    } catch (error) {
      // Logged once per outage; the cron still dispatches.
      if (!failing) logger.warn({ err: error }, 'outbox poll failed; retrying (the cron still dispatches)');
      failing = true;
    }
  };
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = poll().finally(schedule);
    }, intervalMs);
  };
  if (intervalMs > 0) schedule();

  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}
