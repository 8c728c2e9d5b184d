/**
 * Demo data: a test-mode tenant ("Demo Cinema") with plans in USD and EUR,
 * customers with cards on file, and a subscription in every state
 * (incomplete, incomplete_expired, trialing, active, past_due, paused,
 * canceled), built through the billing functions themselves, as the owner.
 *
 * Past states need time to pass: inside the seeding transaction the
 * database-wide clock override (app_private.set_clock) is moved through the
 * last five weeks and put back before commit, so no other transaction ever
 * sees it and the demo tenant runs on real time afterwards.
 *
 * Its cards are the sandbox's well-known saved test cards (seeded with the
 * sandbox ledger in SQL, 050-sandbox-gateway; sandboxTestTokens in
 * sandbox/cards.ts; docs/operations.md, "Demo cards"), so the worker charges
 * them like any tenant's and the states stay true: the past-due customer's
 * card keeps failing softly (dunning goes on), the incomplete one needs 3-D
 * Secure (it waits for the customer), everyone else's card pays.
 *
 * `npm start` seeds it on a database without tenants (unless
 * SEED_DEMO=false); `npm run abonement -- seed-demo` seeds it on demand.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Logger } from '../lib/logger.ts';

export interface DemoTenant {
  tenantId: string;
  name: string;
  invoicePrefix: string;
  /** The test API key, shown once. */
  apiKey: string;
  subscriptions: Record<string, string>;
}

const DAY = 86_400_000;

/** Well-known sandbox tokens (db/ may not import sandbox/: the test checks them against sandboxTestTokens). */
const CARDS = {
  pays: 'pm_sbx_visa',
  failsSoftly: 'pm_sbx_insufficientFunds',
  needsAuthentication: 'pm_sbx_authenticationRequired',
} as const;
type DemoCard = (typeof CARDS)[keyof typeof CARDS];

export async function seedDemo(client: pg.ClientBase, logger: Logger, options: { onlyIfEmpty: boolean }): Promise<DemoTenant | null> {
  await client.query('begin');
  try {
    // Two processes starting at once: one seeds, the other waits and then finds a tenant.
    await client.query(`select pg_advisory_xact_lock(hashtext('abonement:seed-demo'))`);
    if (options.onlyIfEmpty) {
      const { rows } = await client.query<{ any: boolean }>('select exists (select 1 from app_public.tenants) as any');
      if (rows[0]?.any) {
        await client.query('rollback');
        return null;
      }
    }
    const demo = await build(client);
    await client.query('commit');
    logger.info({ tenantId: demo.tenantId, invoicePrefix: demo.invoicePrefix }, 'seeded the demo tenant');
    return demo;
  } catch (error) {
    await client.query('rollback').catch(() => undefined);
    throw error;
  }
}

async function build(client: pg.ClientBase): Promise<DemoTenant> {
  const q = async <T = unknown>(sql: string, values: unknown[] = []): Promise<T[]> => (await client.query(sql, values)).rows as T[];
  const previousOverride = (await q<{ frozen_at: Date }>('select frozen_at from app_private.clock_override'))[0]?.frozen_at ?? null;
  const now = Date.now();
  const at = (daysAgo: number) => q('select app_private.set_clock($1)', [new Date(now - daysAgo * DAY)]);

  const taken = (await q<{ n: number }>(`select count(*)::int as n from app_public.tenants where invoice_prefix like 'DEMO%'`))[0]!.n;
  const invoicePrefix = taken === 0 ? 'DEMO' : `DEMO${randomBytes(3).toString('hex').toUpperCase()}`;
  const name = taken === 0 ? 'Demo Cinema (test)' : `Demo Cinema ${invoicePrefix} (test)`;

  await at(35);
  const [tenant] = await q<{ id: string }>(`select id from app_private.create_tenant($1, $2, 'USD', 'UTC', true)`, [name, invoicePrefix]);
  const tenantId = tenant!.id;
  // From here on the owner acts for the demo tenant (RLS scopes it by this claim).
  await q(`select set_config('jwt.claims.tenant_id', $1, true)`, [tenantId]);
  const key = () => `demo-seed-${randomUUID()}`;

  const plan = async (planName: string, code: string, description: string, trialDays = 0) => {
    const [p] = await q<{ id: string }>(`select id from app_public.create_plan(name => $1, idempotency_key => $2, code => $3, description => $4, trial_days => $5)`, [
      planName,
      key(),
      code,
      description,
      trialDays,
    ]);
    return p!.id;
  };
  const price = async (planId: string, currency: string, interval: string, amount: number) => {
    const [p] = await q<{ id: string }>('select id from app_public.create_price($1, $2, $3, $4, $5)', [planId, currency, interval, amount, key()]);
    return p!.id;
  };
  const basic = await plan('Basic', 'basic', 'HD streaming on one screen');
  const premium = await plan('Premium', 'premium', '4K streaming on four screens');
  const family = await plan('Family', 'family', 'Premium for households, with a 14-day trial', 14);
  const prices = {
    basicUsd: await price(basic, 'USD', 'month', 999),
    basicUsdYear: await price(basic, 'USD', 'year', 9990),
    basicEur: await price(basic, 'EUR', 'month', 899),
    premiumUsd: await price(premium, 'USD', 'month', 1999),
    premiumEur: await price(premium, 'EUR', 'month', 1799),
    familyUsd: await price(family, 'USD', 'month', 2499),
  };
  for (const id of [basic, premium, family]) await q(`select app_public.set_plan_status($1, 'active')`, [id]);

  const customer = async (slug: string, person: string, country: string, locale: string, token: DemoCard = CARDS.pays) => {
    const [c] = await q<{ id: string }>(
      `select id from app_public.create_customer(external_id => $1, email => $2, idempotency_key => $3, name => $4, country => $5, locale => $6,
         metadata => '{"source": "demo"}')`,
      [`demo-${slug}`, `${slug}@demo.example`, key(), person, country, locale],
    );
    // Brand, last4 and expiry as the sandbox ledger has them; no row there means the seeds drifted apart.
    const [pm] = await q<{ id: string }>(
      `insert into app_public.payment_methods (tenant_id, customer_id, provider, provider_token, brand, last4, exp_month, exp_year, is_default)
       select $1, $2, 'sandbox', g.token, g.brand, g.last4, g.exp_month, g.exp_year, true
       from sandbox_gateway.payment_methods g where g.token = $3
       returning id`,
      [tenantId, c!.id, token],
    );
    if (!pm) throw new Error(`the sandbox ledger has no test card ${token}`);
    return { id: c!.id, card: pm!.id };
  };
  const subscribe = async (c: { id: string; card: string }, priceId: string) => {
    const [s] = await q<{ id: string }>('select id from app_public.create_subscription($1, $2, $3, $4)', [c.id, priceId, c.card, key()]);
    return s!.id;
  };
  const charge = async (subscriptionId: string, outcome: 'succeeded' | 'failed') => {
    const [inv] = await q<{ id: string }>(`select id from app_public.invoices where subscription_id = $1 and status = 'open' order by created_at desc limit 1`, [subscriptionId]);
    const [pay] = await q<{ id: string }>('select id from app_private.begin_payment($1)', [inv!.id]);
    await q('select app_private.record_payment_result($1, $2, $3, $4, $5, $6)', [
      pay!.id,
      outcome,
      `demo_${randomBytes(6).toString('hex')}`,
      outcome === 'failed' ? 'soft_decline' : null,
      outcome === 'failed' ? 'insufficient_funds' : null,
      outcome === 'failed' ? 'Insufficient funds' : null,
    ]);
  };
  /** The next period's invoice, exactly as the worker's renew_due makes it, for one subscription. */
  const renew = (subscriptionId: string) =>
    q(
      `select app_hidden.create_period_invoice(s, p, s.current_period_end,
         app_hidden.next_period_end(s.billing_anchor, p.interval, t.time_zone, s.current_period_end), 'subscription_cycle')
       from app_public.subscriptions s
       join app_public.prices p on p.tenant_id = s.tenant_id and p.id = s.price_id
       join app_public.tenants t on t.id = s.tenant_id
       where s.id = $1`,
      [subscriptionId],
    );

  const ada = await customer('ada', 'Ada Lovelace', 'GB', 'en');
  const boris = await customer('boris', 'Boris Pasternak', 'DE', 'de');
  const chloe = await customer('chloe', 'Chloé Martin', 'FR', 'fr');
  const dmitri = await customer('dmitri', 'Dmitri Ivanov', 'US', 'en');
  const emma = await customer('emma', 'Emma Schmidt', 'AT', 'de');
  const farid = await customer('farid', 'Farid Haddad', 'US', 'en', CARDS.failsSoftly);
  const grace = await customer('grace', 'Grace Hopper', 'US', 'en', CARDS.needsAuthentication);

  // Five weeks ago: three sign-ups; Emma never pays.
  const active = await subscribe(ada, prices.basicUsd);
  await charge(active, 'succeeded');
  const pastDue = await subscribe(farid, prices.premiumUsd);
  await charge(pastDue, 'succeeded');
  const expired = await subscribe(emma, prices.basicUsd);

  // Four days ago: renewals come due; Ada's card pays, Farid's is declined (dunning starts); Emma's first invoice lapsed.
  await at(4);
  await renew(active);
  await charge(active, 'succeeded');
  await renew(pastDue);
  await charge(pastDue, 'failed');
  await q('select app_private.expire_incomplete(1000)');

  // Two days ago: Boris subscribes in euros and cancels; Chloé subscribes in euros and pauses.
  await at(2);
  const canceled = await subscribe(boris, prices.premiumEur);
  await charge(canceled, 'succeeded');
  await q('select app_public.cancel_subscription($1, false, $2)', [canceled, key()]);
  const paused = await subscribe(chloe, prices.basicEur);
  await charge(paused, 'succeeded');
  await q('select app_public.pause_subscription($1, $2)', [paused, key()]);

  // Today: Dmitri starts a trial; Grace has just signed up and not paid yet.
  await q('select app_private.set_clock($1)', [previousOverride]);
  const trialing = await subscribe(dmitri, prices.familyUsd);
  const incomplete = await subscribe(grace, prices.basicUsd);

  const { rows: states } = await client.query<{ status: string }>('select status from app_public.subscriptions where tenant_id = $1', [tenantId]);
  const expected = ['active', 'canceled', 'incomplete', 'incomplete_expired', 'past_due', 'paused', 'trialing'];
  const got = [...new Set(states.map((r) => r.status))].sort();
  if (JSON.stringify(got) !== JSON.stringify(expected)) throw new Error(`demo seed produced states ${got.join(', ')}; expected ${expected.join(', ')}`);

  await q(`select set_config('jwt.claims.tenant_id', '', true)`);
  const [apiKey] = await q<{ token: string }>(`select token from app_private.issue_api_key($1, 'demo key', 'seed-demo')`, [tenantId]);
  return {
    tenantId,
    name,
    invoicePrefix,
    apiKey: apiKey!.token,
    subscriptions: { active, past_due: pastDue, incomplete_expired: expired, canceled, paused, trialing, incomplete },
  };
}
