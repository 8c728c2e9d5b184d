/**
 * Webhooks within milliseconds instead of up to a minute: every transaction
 * that writes outbox events NOTIFYs channel abonement_outbox at commit
 * (220-outbox-dispatch.sql); this listener, one per worker process, answers
 * by queueing the events__dispatch task (job key events__dispatch, so a burst
 * of notifications queues one run, and a run already under way gets a
 * follow-up). Notifications arriving within DEBOUNCE_MS are folded into one.
 *
 * Losing the connection only costs latency: the every-minute cron still
 * dispatches. The listener reconnects after a second.
 */
import type pg from 'pg';
import type { Logger } from '../lib/logger.ts';

export const OUTBOX_CHANNEL = 'abonement_outbox';
const DEBOUNCE_MS = 20;
const RECONNECT_MS = 1000;

export interface OutboxListener {
  stop(): Promise<void>;
}

export function startOutboxListener(options: { pool: pg.Pool; logger: Logger; dispatch: () => Promise<void> }): OutboxListener {
  const { pool, logger, dispatch } = options;
  let client: pg.PoolClient | null = null;
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let reconnect: NodeJS.Timeout | null = null;
  let inFlight: Promise<void> = Promise.resolve();

  const flush = () => {
    timer = null;
    inFlight = dispatch().catch((error) => logger.warn({ err: error }, 'could not queue outbox dispatch; the cron will'));
  };
  const onNotification = (message: pg.Notification) => {
    if (message.channel !== OUTBOX_CHANNEL || stopped || timer) return;
    timer = setTimeout(flush, DEBOUNCE_MS);
  };
  const drop = (error?: Error) => {
    const c = client;
    client = null;
    if (c) {
      c.removeAllListeners('notification');
      c.removeAllListeners('error');
      c.on('error', () => undefined);
      c.release(error ?? true);
    }
  };
  const connect = async () => {
    reconnect = null;
    if (stopped) return;
    try {
      const c = await pool.connect();
      if (stopped) {
        c.release();
        return;
      }
      client = c;
      c.on('notification', onNotification);
      c.on('error', (error) => {
        logger.warn({ err: error }, 'outbox listener connection lost; reconnecting');
        drop(error);
        if (!stopped) reconnect = setTimeout(() => void connect(), RECONNECT_MS);
      });
      await c.query(`listen ${OUTBOX_CHANNEL}`);
      // Events committed while nobody listened go out now rather than at the next cron.
      flush();
    } catch (error) {
      logger.warn({ err: error }, 'outbox listener could not connect; retrying');
      drop(error as Error);
      if (!stopped) reconnect = setTimeout(() => void connect(), RECONNECT_MS);
    }
  };
  void connect();

  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      if (reconnect) clearTimeout(reconnect);
      await inFlight;
      if (client) {
        await client.query(`unlisten ${OUTBOX_CHANNEL}`).catch(() => undefined);
        const c = client;
        client = null;
        c.removeAllListeners('notification');
        c.release();
      }
    },
  };
}
