/**
 * The console as production runs it: components bundled ahead of time by
 * admin/bundle.ts (what `npm run build` runs), then a server with
 * NODE_ENV=production serving that bundle without bundling again. This is the
 * path where Express 5 used to 404 AdminJS's `.adminjs/bundle.js` (a
 * dot-folder) and custom components silently vanished.
 *
 * AdminJS reads NODE_ENV when it loads, so both steps run in child processes.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { SESSION_COOKIE } from '../../admin/auth.ts';
import { ADMIN_EMAIL, ADMIN_PASSWORD, ConsoleClient } from '../support/console.ts';

const bundleDir = mkdtempSync(path.join(tmpdir(), 'abonement-console-bundle-'));
const bundleFile = path.join(bundleDir, 'bundle.js');
const { ADMIN_JS_SKIP_BUNDLE: _unset, ...inherited } = process.env;
// No ADMIN_JS_SKIP_BUNDLE: admin/environment.ts must set it on its own when the bundle exists.
const childEnv = { ...inherited, NODE_ENV: 'production', ADMIN_JS_TMP_DIR: bundleDir };
let server: ChildProcess | undefined;
let url = '';
let bundleMs = 0;
const serverOutput: string[] = [];

before(async () => {
  const started = performance.now();
  const build = spawnSync(process.execPath, ['--import', 'tsx', 'admin/bundle.ts'], { env: childEnv, encoding: 'utf8' });
  bundleMs = performance.now() - started;
  assert.equal(build.status, 0, `admin/bundle.ts failed: ${build.stderr}`);

  server = spawn(process.execPath, ['--import', 'tsx', 'test/support/console-server.ts'], {
    env: {
      ...childEnv,
      CONSOLE_ENV: JSON.stringify({ NODE_ENV: 'production', SESSION_SECRET: 'a-production-session-secret-of-enough-length', JWT_SECRET: 'a-production-jwt-secret-of-enough-length-xx' }),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: server.stdout! });
  url = await new Promise<string>((resolve, reject) => {
    lines.on('line', (line) => {
      serverOutput.push(line);
      if (line.startsWith('{"url"')) resolve((JSON.parse(line) as { url: string }).url);
    });
    server!.once('exit', (code) => reject(new Error(`console server exited early (${code})`)));
  });
});
after(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((resolve) => server!.once('exit', resolve));
    server.kill('SIGTERM');
    await exited;
  }
  rmSync(bundleDir, { recursive: true, force: true });
});

test('npm run build bundles the components; production serves that file and does not bundle again', async (t) => {
  t.diagnostic(`bundle (child process incl. start-up): ${Math.round(bundleMs)} ms`);
  const built = readFileSync(bundleFile, 'utf8');
  assert.match(built, /AdminJS\.UserComponents\.Dashboard/);
  const mtime = statSync(bundleFile).mtimeMs;
  const response = await fetch(`${url}/admin/frontend/assets/components.bundle.js`);
  assert.equal(response.status, 200, 'the bundle is served from a folder without a leading dot');
  assert.equal(await response.text(), built);
  assert.equal(statSync(bundleFile).mtimeMs, mtime, 'the server did not bundle again (ADMIN_JS_SKIP_BUNDLE)');
  // AdminJS announces a start-up bundle synchronously on stdout, before the server listens.
  assert.ok(!serverOutput.some((line) => /bundling/i.test(line)), serverOutput.join('\n'));
  const login = await fetch(`${url}/admin/login`);
  assert.equal(login.status, 200);
  assert.doesNotMatch(await login.text(), /fonts\.googleapis\.com/);
});

test('production session cookies are Secure: none over plain HTTP, one behind a TLS proxy', async () => {
  const plain = new ConsoleClient(url);
  const overHttp = await plain.login(ADMIN_EMAIL, ADMIN_PASSWORD);
  assert.equal(overHttp.status, 303);
  assert.equal(plain.cookies.size, 0, 'express-session will not send a Secure cookie over plain HTTP');

  const response = await fetch(`${url}/admin/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-forwarded-proto': 'https' },
    body: new URLSearchParams({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD }),
    redirect: 'manual',
  });
  assert.equal(response.status, 303);
  const cookie = response.headers.getSetCookie().find((c) => c.startsWith(`${SESSION_COOKIE}=`));
  assert.ok(cookie, 'behind a proxy that says https (trust proxy), the cookie is set');
  assert.match(cookie, /; Secure/);
  assert.match(cookie, /; HttpOnly/);
});

test('memory of a production console process (reported, not asserted)', async (t) => {
  const client = new ConsoleClient(url);
  await client.request('POST', '/admin/login', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
  for (let i = 0; i < 20; i++) {
    await fetch(`${url}/admin/login`);
    await fetch(`${url}/admin/frontend/assets/app.bundle.js`);
  }
  const status = existsSync(`/proc/${server!.pid}/status`) ? readFileSync(`/proc/${server!.pid}/status`, 'utf8') : '';
  const rss = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  t.diagnostic(`console server RSS (NODE_ENV=production, under tsx, incl. test support): ${rss ? Math.round(Number(rss) / 1024) : '?'} MiB`);
});
