/**
 * Runs every minute from the crontab (and once at worker start): records that
 * this worker process is alive, for /readyz.
 */
import type { Task } from 'graphile-worker';
import { workerIdentity } from '../identity.ts';

const heartbeat: Task = async (_payload, helpers) => {
  await helpers.withPgClient((client) => client.query('select app_private.record_heartbeat($1, $2)', [workerIdentity.id, workerIdentity.startedAt]));
  helpers.logger.debug('heartbeat recorded');
};

export default heartbeat;
