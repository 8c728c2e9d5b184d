/** This worker process's identity, as recorded in its heartbeat. */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

export const workerIdentity = {
  id: `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`,
  startedAt: new Date(),
};
