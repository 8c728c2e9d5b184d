/**
 * The PostgreSQL a test run uses: TEST_DATABASE_URL (a superuser URL, e.g. the
 * CI machine's PostgreSQL 15) or an embedded PostgreSQL started for the run on
 * a free port, in a throw-away data directory.
 */
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { folderClosedToPostgres, startEmbeddedPostgres, type EmbeddedPostgresHandle } from '../../lib/database.ts';
import type { Logger } from '../../lib/logger.ts';

export interface TestCluster {
  /** Superuser URL of the cluster's maintenance database. */
  superuserUrl: string;
  kind: 'external' | 'embedded';
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface TestClusterOptions {
  /** Superuser URL of an existing server (default: TEST_DATABASE_URL). */
  externalUrl?: string | undefined;
  /** Where throw-away data directories go (default: .test-data in the checkout). */
  root?: string;
}

/**
 * Where the run's data directory goes: the checkout's .test-data, unless root
 * runs the tests in a folder the `postgres` user cannot enter (a 0700 home
 * directory); then the system's temporary folder, said on stderr. The data is
 * thrown away after the run, so it may live anywhere.
 */
function testDataRoot(preferred: string): string {
  if (!folderClosedToPostgres(path.join(preferred, 'run', 'pg'))) return preferred;
  const fallback = path.join(os.tmpdir(), 'abonement-test-data');
  process.stderr.write(`abonement tests: the postgres user cannot reach ${preferred}; the embedded PostgreSQL's throw-away data goes to ${fallback}\n`);
  return fallback;
}

export async function startTestCluster(logger: Logger, options: TestClusterOptions = {}): Promise<TestCluster> {
  const external = 'externalUrl' in options ? options.externalUrl : process.env.TEST_DATABASE_URL;
  if (external) {
    return { superuserUrl: external, kind: 'external', stop: async () => {} };
  }
  const root = testDataRoot(options.root ?? path.resolve('.test-data'));
  mkdirSync(root, { recursive: true, mode: 0o755 });
  const dir = mkdtempSync(path.join(root, 'run-'));
  let handle: EmbeddedPostgresHandle;
  try {
    handle = await startEmbeddedPostgres({ dataDir: path.join(dir, 'pg'), port: await freePort(), database: 'postgres' }, logger);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    superuserUrl: handle.url,
    kind: 'embedded',
    stop: async () => {
      await handle.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
