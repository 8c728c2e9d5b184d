/**
 * `npm run emulator:cloudpayments`: the CloudPayments emulator on its own,
 * for staging (docs/providers.md, "CloudPayments emulator").
 *
 *   PORT (default 8090), HOST (default 127.0.0.1)
 *   CLOUDPAYMENTS_PUBLIC_ID, CLOUDPAYMENTS_API_SECRET — the credentials it accepts
 *     (defaults pk_emulator / the development secret below; set both outside a laptop)
 *   CLOUDPAYMENTS_EMULATOR_NOTIFY_URL — where notifications go, e.g. http://127.0.0.1:3000/webhooks/cloudpayments
 *   CLOUDPAYMENTS_EMULATOR_PUBLIC_URL — the URL customers reach it at (links on its pages)
 *   LOG_LEVEL
 */
import { z } from 'zod';
import { createLogger } from '../lib/logger.ts';
import { handleShutdownSignals } from '../lib/signals.ts';
import { createCloudPaymentsEmulator } from './cloudpayments-emulator.ts';

const env = z
  .object({
    PORT: z.coerce.number().int().min(0).max(65_535).default(8090),
    HOST: z.string().default('127.0.0.1'),
    CLOUDPAYMENTS_PUBLIC_ID: z.string().min(1).default('pk_emulator'),
    CLOUDPAYMENTS_API_SECRET: z.string().min(8).default('emulator-development-api-secret'),
    CLOUDPAYMENTS_EMULATOR_NOTIFY_URL: z.url().optional(),
    CLOUDPAYMENTS_EMULATOR_PUBLIC_URL: z.url().optional(),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info'),
    NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
  })
  .parse(process.env);

const logger = createLogger({ LOG_LEVEL: env.LOG_LEVEL, NODE_ENV: env.NODE_ENV });
const emulator = createCloudPaymentsEmulator({
  publicId: env.CLOUDPAYMENTS_PUBLIC_ID,
  apiSecret: env.CLOUDPAYMENTS_API_SECRET,
  notificationUrl: env.CLOUDPAYMENTS_EMULATOR_NOTIFY_URL ?? null,
  ...(env.CLOUDPAYMENTS_EMULATOR_PUBLIC_URL ? { publicUrl: env.CLOUDPAYMENTS_EMULATOR_PUBLIC_URL } : {}),
  logger,
});
const url = await emulator.listen(env.PORT, env.HOST);
logger.info(
  { url, publicId: env.CLOUDPAYMENTS_PUBLIC_ID, notificationUrl: env.CLOUDPAYMENTS_EMULATOR_NOTIFY_URL ?? null, widget: `${url}/widget?publicId=${env.CLOUDPAYMENTS_PUBLIC_ID}` },
  'CloudPayments emulator listening (set CLOUDPAYMENTS_API_BASE to this URL)',
);
handleShutdownSignals(logger, async () => emulator.close(), 5_000);
