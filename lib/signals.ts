/**
 * SIGINT/SIGTERM → one graceful stop; a second signal (more than two seconds
 * after the first), or a stop that takes longer than the timeout plus a
 * margin, exits at once. Signals arriving together are one: a terminal's
 * Ctrl-C reaches the whole process group, and tsx or `timeout` relay it again.
 */
import type { Logger } from './logger.ts';

export function handleShutdownSignals(logger: Logger, stop: (reason: string) => Promise<void>, timeoutMs: number): void {
  let stoppingSince: number | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stoppingSince !== undefined) {
      if (Date.now() - stoppingSince < 2000) return;
      logger.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(1);
    }
    stoppingSince = Date.now();
    const force = setTimeout(() => {
      logger.error({ timeoutMs }, 'shutdown took too long; exiting');
      process.exit(1);
    }, timeoutMs + 10_000);
    force.unref();
    stop(signal).then(
      () => process.exit(0),
      (error) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}
