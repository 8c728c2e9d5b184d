/**
 * `npm start` as a real child process on its own embedded PostgreSQL: boot
 * banner, readiness failing while the database is down, SIGTERM leaving no
 * process behind, recovery after the process was SIGKILLed, and config errors.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { freePort } from './support/cluster.ts';
import { ConsoleClient } from './support/console.ts';
import { waitFor } from './support/server.ts';

const root = path.resolve('.test-data');
mkdirSync(root, { recursive: true });
const dataRoot = mkdtempSync(path.join(root, 'process-'));
after(() => rmSync(dataRoot, { recursive: true, force: true }));

interface Started {
  child: ChildProcess;
  url: string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function baseEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of ['DATABASE_URL', 'DATABASE_OWNER_URL', 'DATABASE_AUTHENTICATOR_URL', 'DATABASE_WORKER_URL', 'DATABASE_OPERATOR_URL', 'SESSION_SECRET', 'PORT']) {
    delete env[key];
  }
  return { ...env, NODE_ENV: 'development', LOG_LEVEL: 'warn', LOG_PRETTY: 'false', ...extra };
}

function run(script: string, env: NodeJS.ProcessEnv): { child: ChildProcess; stderr: () => string; exited: Started['exited'] } {
  const child = spawn(process.execPath, ['--import', 'tsx', script], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  // Both streams, in order: the banner and config errors come on stderr, warnings and errors as JSON on stdout.
  let stderr = '';
  const collect = (chunk: Buffer) => {
    stderr += chunk.toString();
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, stderr: () => stderr, exited };
}

async function startProcess(dataDir: string, pgPort: number): Promise<Started> {
  const started = run('server/main.ts', baseEnv({ EMBEDDED_PG_DIR: dataDir, EMBEDDED_PG_PORT: String(pgPort), PORT: '0' }));
  try {
    const url = await waitFor(
      'the start banner',
      async () => {
        const exit = await Promise.race([started.exited, Promise.resolve(null)]);
        if (exit) throw new Error(`abonement exited early (${JSON.stringify(exit)}): ${started.stderr()}`);
        return /GraphQL API\s+(http:\/\/\S+)\/graphql/.exec(started.stderr())?.[1];
      },
      // A first start initialises a cluster and migrates it; on a loaded 2-core machine that took over a minute.
      180_000,
    );
    return { ...started, url };
  } catch (error) {
    // A start that never printed its banner must not outlive the test: its pipes would keep this file running forever.
    started.child.kill('SIGTERM');
    const forced = setTimeout(() => started.child.kill('SIGKILL'), 30_000);
    await started.exited;
    clearTimeout(forced);
    throw new Error(`${(error as Error).message}; output so far: ${started.stderr()}`);
  }
}

function postmasterPid(dataDir: string): number {
  return Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
}

function childPids(pid: number): number[] {
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
  return children ? children.split(/\s+/).map(Number) : [];
}

/** Every process below pid, deepest last (read from /proc while they run). */
function descendants(pid: number): number[] {
  const found: number[] = [];
  for (const child of childPids(pid)) found.push(child, ...descendants(child));
  return found;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function readyz(url: string): Promise<{ status: number; body: { checks: Record<string, { ok: boolean }> } }> {
  const res = await fetch(`${url}/readyz`);
  return { status: res.status, body: (await res.json()) as { checks: Record<string, { ok: boolean }> } };
}

describe('npm start on an embedded PostgreSQL', () => {
  const dataDir = path.join(dataRoot, 'pg');

  test('boots, prints the URLs and the first login, becomes ready, and SIGTERM leaves no process', async () => {
    const pgPort = await freePort();
    const app = await startProcess(dataDir, pgPort);
    try {
      assert.match(app.stderr(), /Console\s+http:\/\/\S+\/admin/);
      assert.match(app.stderr(), /Metrics\s+http:\/\/\S+\/metrics/);
      assert.match(app.stderr(), /GraphiQL \(Ruru\)\s+http:\/\/\S+\//);
      // The printed first-login credentials open the console.
      const login = /First login: (\S+) \/ (\S+)/.exec(app.stderr());
      assert.ok(login, `first login printed: ${app.stderr()}`);
      const client = new ConsoleClient(app.url);
      const loggedIn = await client.login(login[1]!, login[2]!);
      assert.equal(loggedIn.status, 303, loggedIn.text);
      assert.equal(loggedIn.location, '/admin');
      assert.equal((await client.get('/admin/api/resources/operators/actions/list')).status, 200);
      const ready = await waitFor('readiness', async () => ((await readyz(app.url)).status === 200 ? true : null), 30_000);
      assert.equal(ready, true);

      // The database "goes down" (all its processes stopped, not killed): readiness fails, liveness does not.
      const pgPid = postmasterPid(dataDir);
      const pgProcesses = [pgPid, ...childPids(pgPid)];
      for (const pid of pgProcesses) process.kill(pid, 'SIGSTOP');
      try {
        const down = await readyz(app.url);
        assert.equal(down.status, 503);
        assert.equal(down.body.checks.database!.ok, false);
        assert.equal((await fetch(`${app.url}/healthz`)).status, 200);
      } finally {
        for (const pid of pgProcesses) process.kill(pid, 'SIGCONT');
      }
      assert.equal((await readyz(app.url)).status, 200, 'ready again once the database answers');

      const stoppedAt = Date.now();
      app.child.kill('SIGTERM');
      const exit = await app.exited;
      assert.equal(exit.code, 0, `clean exit; stderr: ${app.stderr()}`);
      assert.ok(Date.now() - stoppedAt < 30_000, 'stopped within 30 s');
      assert.equal(alive(pgPid), false, 'the embedded PostgreSQL was stopped');
    } finally {
      app.child.kill('SIGKILL');
    }
  });

  test('after a SIGKILL left PostgreSQL running, the next start takes over the data directory', async () => {
    const pgPort = await freePort();
    const first = await startProcess(dataDir, pgPort);
    const orphan = postmasterPid(dataDir);
    first.child.kill('SIGKILL');
    await first.exited;
    assert.equal(alive(orphan), true, 'PostgreSQL outlived its parent');

    const second = await startProcess(dataDir, pgPort);
    try {
      assert.equal(alive(orphan), false, 'the orphan was stopped');
      const res = await fetch(`${second.url}/graphql`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: '{ __typename }' }),
      });
      assert.equal(res.status, 200);
      const pgPid = postmasterPid(dataDir);
      second.child.kill('SIGTERM');
      assert.equal((await second.exited).code, 0, second.stderr());
      assert.equal(alive(pgPid), false);
    } finally {
      second.child.kill('SIGKILL');
    }
  });
});

describe('npm scripts stopped by a supervisor', () => {
  // A supervisor (systemd, Docker, a CI runner) signals only the process it started: here npm itself.
  test('SIGTERM to the `npm start` process stops the server, its children and the embedded PostgreSQL', async () => {
    const dataDir = path.join(dataRoot, 'npm-pg');
    const npm = process.env.npm_execpath;
    const command = npm && /\.(c|m)?js$/.test(npm) ? [process.execPath, npm] : ['npm'];
    const env = baseEnv({ EMBEDDED_PG_DIR: dataDir, EMBEDDED_PG_PORT: String(await freePort()), PORT: '0' });
    env.PATH = `${path.dirname(process.execPath)}${path.delimiter}${env.PATH ?? ''}`;
    const child = spawn(command[0]!, [...command.slice(1), 'start', '--silent'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    let tree: number[] = [];
    try {
      await waitFor('the start banner', async () => /GraphQL API\s+http:\/\/\S+\/graphql/.test(output), 60_000);
      tree = descendants(child.pid!);
      const pgPid = postmasterPid(dataDir);
      assert.ok(tree.includes(pgPid), `PostgreSQL runs below npm: ${tree.join(' ')}`);
      child.kill('SIGTERM');
      const exit = await exited;
      assert.ok(exit.code === 0 || exit.signal === 'SIGTERM', `npm ended: ${JSON.stringify(exit)}; ${output}`);
      const left = await waitFor('every child to end', async () => (tree.some(alive) ? null : 'none'), 30_000).catch(() =>
        tree.filter(alive).map((pid) => `${pid} ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')}`),
      );
      assert.equal(left, 'none', 'no process outlives npm');
    } finally {
      for (const pid of tree.filter(alive)) process.kill(pid, 'SIGKILL');
      child.kill('SIGKILL');
    }
  });
});

describe('configuration errors', () => {
  test('a bad value stops the process with one line naming the variable', async () => {
    const proc = run('server/main.ts', baseEnv({ PORT: 'eighty' }));
    const exit = await proc.exited;
    assert.equal(exit.code, 78);
    const lines = proc.stderr().trim().split('\n');
    assert.equal(lines.length, 1, proc.stderr());
    assert.match(lines[0]!, /^abonement: invalid configuration: PORT /);
  });

  test('half of the per-role database URLs is refused, naming the missing one', async () => {
    const proc = run('server/main.ts', baseEnv({ DATABASE_OWNER_URL: 'postgres://a@127.0.0.1/x' }));
    const exit = await proc.exited;
    assert.equal(exit.code, 78);
    assert.match(proc.stderr(), /DATABASE_AUTHENTICATOR_URL must be set together/);
  });

  test('production without SESSION_SECRET is refused', async () => {
    const proc = run('server/main.ts', baseEnv({ NODE_ENV: 'production' }));
    assert.equal((await proc.exited).code, 78);
    assert.match(proc.stderr(), /SESSION_SECRET is required/);
  });
});
