/**
 * /v1/docs: the OpenAPI document rendered by Swagger UI from files this
 * server serves (docs/api.md, "API reference in the browser"). Over HTTP:
 * the page and every asset it names answer 200 from this origin, none of
 * them names an external URL that a browser would load, and the CSP allows
 * only this origin. In headless Chromium: the page renders the document's
 * title and operations with no request leaving the origin and no CSP error.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser } from 'playwright-core';
import type { RunningAbonement } from '../../server/index.ts';
import { DOCS_TITLE } from '../../server/rest/docs.ts';
import { launchChromium } from '../support/browser.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer } from '../support/server.ts';

let db: TestDatabase;
let server: RunningAbonement;

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db, { WORKER: 'off', RATE_LIMIT_PER_SECOND: '0' });
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

/** URLs a browser would load from HTML (src/href attributes) or CSS (url(…), @import). */
function loadedUrls(text: string, kind: 'html' | 'css'): string[] {
  if (kind === 'html') return [...text.matchAll(/\s(?:src|href)\s*=\s*["']([^"']+)["']/gi)].map((m) => m[1]!);
  return [...text.matchAll(/url\(\s*["']?([^"')]+)["']?\s*\)|@import\s+["']([^"']+)["']/gi)].map((m) => (m[1] ?? m[2])!);
}

test('/v1/docs and its assets are served from this origin and name no external URL', async () => {
  const pageUrl = `${server.url}/v1/docs`;
  const page = await fetch(pageUrl);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  const csp = page.headers.get('content-security-policy') ?? '';
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'(;|$)/, 'scripts only from this origin, no inline script');
  for (const directive of csp.split(';')) assert.doesNotMatch(directive, /https?:|\*/, `CSP directive ${directive} allows no other origin`);
  const html = await page.text();
  assert.match(html, new RegExp(`<title>${DOCS_TITLE}</title>`));
  assert.doesNotMatch(html, /<script>(?!<\/script>)/, 'no inline script');

  const urls = loadedUrls(html, 'html');
  assert.ok(urls.some((u) => u.endsWith('.js')) && urls.some((u) => u.endsWith('.css')), `scripts and styles: ${urls}`);
  const seen = new Set<string>();
  const queue = urls.map((u) => ({ url: new URL(u, pageUrl), from: pageUrl }));
  while (queue.length > 0) {
    const { url, from } = queue.shift()!;
    if (url.protocol === 'data:') continue;
    assert.equal(url.origin, server.url, `${from} loads ${url} from another origin`);
    if (seen.has(url.href)) continue;
    seen.add(url.href);
    const res = await fetch(url);
    assert.equal(res.status, 200, `${url} answers 200`);
    if (url.pathname.endsWith('.css')) {
      for (const u of loadedUrls(await res.text(), 'css')) {
        // SVG namespace declarations inside data: URIs are names, not loads.
        if (u.startsWith('data:')) continue;
        queue.push({ url: new URL(u, url), from: url.href });
      }
    } else if (url.pathname.endsWith('.js')) {
      const js = await res.text();
      // The initialiser points at this server's document and turns off the online validator.
      if (url.pathname.endsWith('/init.js')) {
        assert.match(js, /url: 'openapi\.json'/);
        assert.match(js, /validatorUrl: null/);
      }
      assert.ok(js.length > 0);
    } else {
      await res.arrayBuffer();
    }
  }
  assert.ok(seen.size >= 4, `fetched ${[...seen]}`);
  // The page's document is the API's own.
  const document = (await (await fetch(new URL('openapi.json', pageUrl))).json()) as { openapi: string };
  assert.equal(document.openapi, '3.1.0');
  // Only the package files the page uses are served, not the rest of node_modules.
  assert.notEqual((await fetch(`${server.url}/v1/docs/assets/package.json`)).status, 200);
  const slash = await fetch(`${server.url}/v1/docs/`, { redirect: 'manual' });
  assert.equal(slash.status, 301);
  assert.equal(slash.headers.get('location'), '/v1/docs');
});

test('/v1/docs renders the API reference in headless Chromium, with nothing loaded from elsewhere', async () => {
  let browser: Browser | undefined;
  try {
    browser = await launchChromium();
    const page = await browser.newPage();
    const foreign: string[] = [];
    const problems: string[] = [];
    page.on('request', (request) => {
      const url = request.url();
      if (!url.startsWith(`${server.url}/`) && !url.startsWith('data:') && !url.startsWith('blob:')) foreign.push(url);
    });
    page.on('response', (response) => {
      if (response.status() >= 400) problems.push(`${response.url()} ${response.status()}`);
    });
    page.on('pageerror', (error) => problems.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    await page.goto(`${server.url}/v1/docs`);
    assert.equal(await page.title(), DOCS_TITLE);
    // Swagger UI renders the document's info.title and one block per operation.
    await page.locator('.information-container .title').filter({ hasText: 'abonement' }).waitFor({ timeout: 20_000 });
    await page.locator('.opblock').first().waitFor();
    assert.ok((await page.locator('.opblock').count()) >= 10);
    assert.deepEqual(foreign, []);
    assert.deepEqual(problems, []);
  } finally {
    await browser?.close();
  }
});
