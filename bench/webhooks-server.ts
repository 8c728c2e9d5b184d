/**
 * The API process for bench/webhooks.ts, in its own process (the load
 * generator must not share its event loop). Configured entirely by the
 * environment the bench passes; prints {"url": …} once listening.
 */
import '../lib/graphile-env.ts';
import { loadConfig } from '../lib/config.ts';
import { createLogger } from '../lib/logger.ts';
import { startAbonement } from '../server/index.ts';

const config = loadConfig();
const running = await startAbonement(config, createLogger(config));
process.stdout.write(`${JSON.stringify({ url: running.url })}\n`);
process.once('SIGTERM', () => {
  void running.stop('bench finished').then(() => process.exit(0));
});
