/**
 * One pino logger for the whole process. JSON lines in production and tests,
 * pretty output on a TTY in development. Children carry a request id
 * (pino-http) or a job id (worker), so every line can be traced to its cause.
 */
import { pino, type Logger } from 'pino';
import type { Config } from './config.ts';

export type { Logger };

/** Field names whose values must never reach a log line (PCI DSS, secrets). */
export const redactedPaths = [
  'password',
  '*.password',
  'password_hash',
  '*.password_hash',
  'token',
  '*.token',
  'secret',
  '*.secret',
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  'connectionString',
  '*.connectionString',
];

export function createLogger(config: Pick<Config, 'LOG_LEVEL' | 'LOG_PRETTY' | 'NODE_ENV'>): Logger {
  const pretty = config.LOG_PRETTY ?? (config.NODE_ENV === 'development' && process.stdout.isTTY === true);
  return pino({
    name: 'abonement',
    level: config.LOG_LEVEL,
    redact: { paths: redactedPaths, censor: '[redacted]' },
    ...(pretty ? { transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } } : {}),
  });
}
