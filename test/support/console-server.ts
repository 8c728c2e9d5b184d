/**
 * A console in a process of its own, for tests that need AdminJS loaded with
 * another NODE_ENV than the test runner's (AdminJS reads NODE_ENV once, at
 * import). Prints one JSON line `{"url": …}` when listening; stops on SIGTERM.
 *
 *   CONSOLE_ENV='{"NODE_ENV":"production","SESSION_SECRET":"…"}' node --import tsx test/support/console-server.ts
 */
import { startConsole } from './console.ts';

const env = JSON.parse(process.env.CONSOLE_ENV ?? '{}') as Record<string, string>;
const running = await startConsole({ env, trustProxy: 'loopback' });
process.stdout.write(`${JSON.stringify({ url: running.url })}\n`);
process.once('SIGTERM', () => {
  running.stop().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
