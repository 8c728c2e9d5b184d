/**
 * The GraphQL schema: committed schema.graphql matches what the migrations
 * and server/graphql*.ts produce (run `npm run schema:export` after changing
 * either), and what it must never contain: secret or internal columns,
 * app_private tables, writable status columns, generated inserts.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { buildSchema, isInputObjectType, isObjectType, type GraphQLSchema } from 'postgraphile/graphql';
import { exposedFunctions } from '../../server/graphql-shape.ts';
import { schemaFile, schemaSDL } from '../../server/schema-sdl.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

let db: TestDatabase;
let sdl: string;
let schema: GraphQLSchema;

before(async () => {
  db = await createTestDatabase();
  sdl = await schemaSDL(db.urls.authenticator);
  schema = buildSchema(sdl);
});
after(async () => {
  await db?.drop();
});

function fieldsOf(typeName: string): string[] {
  const type = schema.getType(typeName);
  assert.ok(type && (isObjectType(type) || isInputObjectType(type)), `${typeName} exists`);
  return Object.keys(type.getFields()).sort();
}

describe('schema.graphql', () => {
  test('the committed file is what the code generates (run `npm run schema:export` after a change)', () => {
    const committed = readFileSync(schemaFile, 'utf8');
    if (committed !== sdl) {
      const a = committed.split('\n');
      const b = sdl.split('\n');
      const line = a.findIndex((l, i) => l !== b[i]);
      assert.fail(
        `schema.graphql is out of date from line ${line + 1}: committed ${JSON.stringify(a[line])}, generated ${JSON.stringify(b[line])}. Run npm run schema:export and commit it.`,
      );
    }
  });
});

describe('what the schema never shows', () => {
  test('no secret or internal column, under any spelling', () => {
    for (const secret of ['providerToken', 'secretHash', 'passwordHash', 'publicId', 'fingerprint', 'dispatchedAt', 'providerIdempotencyKey']) {
      assert.ok(!new RegExp(`\\b${secret}\\b`, 'i').test(sdl), `${secret} is not in the schema`);
    }
    // Payments keep their provider idempotency key to themselves; idempotencyKey appears only as an input.
    assert.ok(!fieldsOf('Payment').includes('idempotencyKey'));
  });

  test('no app_private table or internal type', () => {
    for (const name of [
      'Operator',
      'OperatorSession',
      'WorkerHeartbeat',
      'ProviderEvent',
      'AuditLog',
      'StateTransition',
      'TestClock',
      'ClockOverride',
      'InvoiceCounter',
      'IdempotencyKey',
      'CustomerSessionsConnection',
      'ApiKeySecret',
    ]) {
      assert.equal(schema.getType(name), undefined, `${name} is not a type`);
    }
    assert.ok(!/app_private|appPrivate|AppPrivate/.test(sdl.replace(/"""[\s\S]*?"""/g, '')), 'no app_private name outside descriptions');
  });

  test('state is never written directly: no input has a status field but set_plan_status', () => {
    const offenders = Object.values(schema.getTypeMap())
      .filter(isInputObjectType)
      .filter((t) => !t.name.endsWith('Filter') && !t.name.endsWith('Condition') && t.name !== 'SetPlanStatusInput')
      .filter((t) => Object.keys(t.getFields()).some((f) => /status$/i.test(f)))
      .map((t) => t.name);
    assert.deepEqual(offenders, []);
  });

  test('mutations are the billing functions plus safe updates; no generated insert', () => {
    const mutations = fieldsOf('Mutation');
    const camel = (s: string) => s.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
    const functions = new Set([...exposedFunctions].map(camel));
    // Generated (CRUD) updates and deletes; functions named update_… or delete_… (webhook endpoints) are checked below.
    assert.deepEqual(
      mutations.filter((m) => /^(update|delete)/.test(m) && !functions.has(m)),
      [
        'deletePaymentMethod',
        'deletePaymentMethodById',
        'deletePlan',
        'deletePlanById',
        'updateCustomer',
        'updateCustomerById',
        'updatePaymentMethod',
        'updatePaymentMethodById',
        'updatePlan',
        'updatePlanById',
        'updatePrice',
        'updatePriceById',
        'updateTenant',
        'updateTenantById',
      ],
    );
    // createCheckoutLink is our one hand-written mutation (server/graphql-checkout.ts): it calls a payment provider.
    const fromFunctions = mutations.filter((m) => (!/^(update|delete)/.test(m) || functions.has(m)) && m !== 'createCheckoutLink');
    assert.ok(mutations.includes('createCheckoutLink'));
    for (const m of fromFunctions) assert.ok(functions.has(m), `${m} is an exposed SQL function`);
    assert.ok(!mutations.includes('createPaymentMethod'), 'payment methods (provider tokens) are not created through the API');
  });

  test('patches hold only the columns tenants may change', () => {
    assert.deepEqual(fieldsOf('PricePatch'), ['active']);
    assert.deepEqual(fieldsOf('PaymentMethodPatch'), ['expMonth', 'expYear', 'isDefault']);
    assert.deepEqual(fieldsOf('CustomerPatch'), ['country', 'email', 'locale', 'metadata', 'name']);
    assert.deepEqual(fieldsOf('PlanPatch'), ['code', 'description', 'fiscalVat', 'fullRefundDays', 'name', 'saleEndsAt', 'saleStartsAt', 'trialDays']);
  });

  test('lists page forwards only, 20 by default, without offset', () => {
    const plans = (schema.getType('Query') as { getFields(): Record<string, { args: ReadonlyArray<{ name: string; defaultValue: unknown }> }> }).getFields().plans!;
    const args = Object.fromEntries(plans.args.map((a) => [a.name, a.defaultValue]));
    assert.equal(args.first, 20);
    assert.ok(!('offset' in args) && !('last' in args) && !('before' in args));
    assert.ok('filter' in args && 'after' in args);
  });
});
