/**
 * `npm run worker` (jobs/main.ts) as a child process against a test
 * database: for tests that kill a worker, start a second one, or watch one
 * from outside.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { TestDatabase } from './database.ts';
import { TEST_ENV } from './env.ts';

export interface WorkerProcess {
  child: ChildProcess;
  /** Everything it printed so far (pino JSON lines). */
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts a worker process on `db` (as the test run's roles), with `env` on top of a quiet test configuration. */
export function startWorkerProcess(db: TestDatabase, env: Record<string, string> = {}): WorkerProcess {
  const inherited: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ['DATABASE_OWNER_URL', 'DATABASE_AUTHENTICATOR_URL', 'DATABASE_WORKER_URL', 'DATABASE_OPERATOR_URL']) delete inherited[name];
  const child = spawn(process.execPath, ['--import', 'tsx', 'jobs/main.ts'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...inherited,
      NODE_ENV: 'test',
      LOG_LEVEL: 'warn',
      LOG_PRETTY: 'false',
      DATABASE_URL: db.superuserUrl,
      DB_ROLE_PREFIX: process.env[TEST_ENV.rolePrefix],
      DB_ROLE_SECRET: process.env[TEST_ENV.roleSecret],
      MIGRATE_ON_START: 'false',
      ...env,
    },
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, output: () => output, exited };
}

/** Sends `signal` to a worker that still runs, and waits for it to exit. */
export async function stopWorkerProcess(worker: WorkerProcess | null, signal: NodeJS.Signals): Promise<void> {
  if (!worker || worker.child.exitCode !== null || worker.child.signalCode !== null) return;
  worker.child.kill(signal);
  await worker.exited;
}
