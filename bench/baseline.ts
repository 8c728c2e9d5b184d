/**
 * Baselines every benchmark measures in the same run, so a figure can be read
 * as a ratio to what this machine does anyway (docs/product.md, Goals):
 * - HTTP: a bare Express JSON route in its own process, driven by autocannon;
 * - database: pgbench's TPC-B-like transactions against the same server.
 * Absolute numbers move between machines; ratios move much less.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import autocannon from 'autocannon';

const execFileAsync = promisify(execFile);

export interface LoadResult {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  non2xx: number;
  total: number;
}

export async function load(options: autocannon.Options): Promise<LoadResult> {
  const result = await autocannon({ connections: 50, duration: 10, ...options });
  return {
    requestsPerSecond: result.requests.average,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
    total: result.requests.total,
  };
}

/** A bare Express route in a child process (the process boundary matters: autocannon shares no event loop with it). */
export async function expressBaseline(durationSeconds: number): Promise<LoadResult> {
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import express from 'express';
       const app = express();
       app.get('/', (_req, res) => res.json({ ok: true }));
       const server = app.listen(0, '127.0.0.1', () => process.stdout.write(String(server.address().port) + '\\n'));`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout!.once('data', (chunk: Buffer) => resolve(Number(chunk.toString().trim())));
      child.once('exit', (code) => reject(new Error(`baseline server exited with ${code}`)));
    });
    return await load({ url: `http://127.0.0.1:${port}/`, duration: durationSeconds });
  } finally {
    child.kill('SIGTERM');
  }
}

/**
 * pgbench TPC-B-like TPS against `databaseUrl` (a scratch database: pgbench
 * creates its tables there). Null when pgbench is not installed.
 */
export async function pgbenchTps(databaseUrl: string, seconds: number, clients = 8): Promise<number | null> {
  try {
    await execFileAsync('pgbench', ['-i', '-q', '-s', '10', databaseUrl], { timeout: 120_000 });
    const { stdout } = await execFileAsync('pgbench', ['-c', String(clients), '-j', '2', '-T', String(seconds), databaseUrl], {
      timeout: (seconds + 60) * 1000,
    });
    const match = /tps = ([\d.]+)/.exec(stdout);
    return match ? Number(match[1]) : null;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

export function formatRow(name: string, r: LoadResult, baseline?: LoadResult): string {
  const ratio = baseline ? `  ${(r.requestsPerSecond / baseline.requestsPerSecond).toFixed(2)}× bare Express` : '';
  return `${name.padEnd(34)} ${r.requestsPerSecond.toFixed(0).padStart(7)} req/s  p50 ${String(r.p50Ms).padStart(4)} ms  p99 ${String(r.p99Ms).padStart(4)} ms  errors ${r.errors + r.non2xx}${ratio}`;
}
