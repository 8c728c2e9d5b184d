/**
 * `npm run build` (after tsc): bundles the console's React components ahead
 * of time, so production starts without bundling and serves a fixed file.
 *
 *   npm run build                     → admin-bundle/production/bundle.js
 *   ADMIN_JS_TMP_DIR=/srv/x npm run build   → /srv/x/bundle.js
 *
 * Run the server with NODE_ENV=production (and the same ADMIN_JS_TMP_DIR if
 * you set one); admin/environment.ts then sets ADMIN_JS_SKIP_BUNDLE=true when
 * the bundle exists. The component sources (admin/components/) must ship
 * with the compiled server too: AdminJS checks they exist at start.
 *
 * The bundle is made for production (minified, React production paths), so
 * NODE_ENV is forced to production here, before AdminJS loads.
 */
import { statSync } from 'node:fs';
import { createLogger } from '../lib/logger.ts';

process.env.NODE_ENV = 'production';
const logger = createLogger({ LOG_LEVEL: 'info', LOG_PRETTY: false, NODE_ENV: 'production' });

const { bundleDir, bundleFile } = await import('./environment.ts');
const { default: AdminJS } = await import('adminjs');
const { componentsBundler, generateUserComponentEntry } = await import('adminjs/bundler');
const { bundleOptions } = await import('./index.ts');

const started = performance.now();
const admin = new AdminJS(bundleOptions());
await componentsBundler.createEntry({ content: generateUserComponentEntry(admin, bundleDir) });
await componentsBundler.build();
logger.info(
  {
    bundleFile,
    bytes: statSync(bundleFile).size,
    components: Object.keys(admin.componentLoader.getComponents()),
    ms: Math.round(performance.now() - started),
  },
  'console components bundled',
);
