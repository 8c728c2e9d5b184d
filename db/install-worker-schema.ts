/**
 * graphile-migrate hook (afterReset): installs Graphile Worker's schema into
 * the freshly created database at GM_DBURL, as migrations expect it to exist.
 */
import { runMigrations } from 'graphile-worker';

const url = process.env.GM_DBURL;
if (!url) {
  process.stderr.write('install-worker-schema: GM_DBURL is not set (run by graphile-migrate only)\n');
  process.exit(64);
}
await runMigrations({ connectionString: url });
