/**
 * The entitlement claim (docs/api.md, "Entitlements"): GraphQL's
 * customerEntitlementsClaim and REST's claim are one SQL definition
 * (app_public.customer_entitlements_claim), and a period end in Unix seconds
 * is truncated, never rounded up: a token must not grant access past the
 * paid period.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningAbonement } from '../../server/index.ts';
import { activeSubscription, createWorld, type World } from '../../sql-tests/support/billing.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer } from '../support/server.ts';
import { gqlClient, rest } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let world: World;
let token: string;

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db, { WORKER: 'off', RATE_LIMIT_PER_SECOND: '0' });
  world = await createWorld(db);
  const { rows } = await db.asOwner((c) => c.query(`select token from app_private.issue_api_key($1, 'test key', 'test')`, [world.tenantId]));
  token = rows[0].token;
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

describe('the entitlement claim', () => {
  test('a period ending at …39.61 s is claimed as …39 by GraphQL and REST alike', async () => {
    // Setup: 1798976559.61 s after the epoch, which rounding would make …60.
    const sub = await activeSubscription(db, world);
    await db.asOwner((c) => c.query(`update app_public.subscriptions set current_period_end = to_timestamp(1798976559.61) where id = $1`, [sub.id]));
    const planCode = (await db.asOwner((c) => c.query('select coalesce(code, id::text) as code from app_public.plans where id = $1', [world.planId]))).rows[0].code;
    // Action
    const graphql = await gqlClient(server, token).request<{ customerEntitlementsClaim: unknown }>(`query ($c: UUID!) { customerEntitlementsClaim(customerId: $c) }`, {
      c: world.customerId,
    });
    const restAnswer = await rest(server, 'GET', `/v1/customers/${world.customerId}/entitlements`, { token });
    // Assertions
    assert.equal(restAnswer.status, 200);
    assert.deepEqual(graphql.customerEntitlementsClaim, [[planCode, 1798976559]]);
    assert.deepEqual(restAnswer.body.claim, [[planCode, 1798976559]]);
  });
});
