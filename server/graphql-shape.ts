/**
 * What the GraphQL schema shows, decided in one place (issue 5, schema
 * shaping). Opt-in: a table, view or function of app_public appears only if
 * it is listed here; everything else gets the `-*` behaviour. Mutations are
 * the billing functions; the only generated CRUD mutations are updates (and
 * two deletes) that row-level security and column grants make safe. Secret
 * and internal columns are hidden by name, and test/api/schema.test.ts checks
 * that none of them (nor any app_private object) reaches the schema.
 */
import { SafeError, flagError, lambda, object, type ObjectStep, type Step } from 'postgraphile/grafast';
import type { PgClass, PgConstraint } from 'postgraphile/graphile-build-pg/pg-introspection';
import { extendSchema, gql, pgSmartTags, type PgSmartTagRule } from 'postgraphile/utils';
import { signCustomerSession, type CustomerSessionRow } from './sessions.ts';

/** Read-only lists, single rows by primary key and node id. */
const READ = '-resource:insert -resource:update -resource:delete';
/** Read, plus updates (and deletes) by primary key or node id under RLS and column grants. */
const UPDATE = '-resource:insert +resource:update -resource:delete';
const UPDATE_DELETE = '-resource:insert +resource:update +resource:delete';

/** Tables and views of app_public that the API exposes, with how. */
export const exposedClasses: Record<string, string> = {
  tenants: `${UPDATE} -connection -list`,
  currencies: READ,
  plans: UPDATE_DELETE,
  prices: UPDATE,
  customers: UPDATE,
  payment_methods: UPDATE_DELETE,
  subscriptions: READ,
  invoices: READ,
  invoice_lines: READ,
  payments: READ,
  refunds: READ,
  customer_balances: READ,
  balance_transactions: READ,
  events: READ,
  status_changes: READ,
  tenant_api_keys: READ,
  webhook_endpoints: READ,
  webhook_deliveries: READ,
  coupons: READ,
  tax_rates: READ,
  promotion_codes: READ,
  discounts: READ,
};

/** Functions of app_public that the API exposes (volatile ones as mutations, stable ones as queries). */
export const exposedFunctions = new Set([
  // billing core
  'create_customer',
  'create_subscription',
  'cancel_subscription',
  'pause_subscription',
  'resume_subscription',
  'change_subscription_price',
  'change_subscription',
  'create_tax_rate',
  'set_plan_tax_rate',
  'create_coupon',
  'create_promotion_code',
  'apply_discount',
  'remove_discount',
  'preview_subscription_change',
  'preview_upcoming_invoice',
  'subscription_price_options',
  'refund_quote',
  'refund_subscription',
  'refund_payment',
  'create_invoice',
  'credit_balance',
  'advance_test_clock',
  'test_clock',
  // a customer's page (section 17-customer-timeline.sql of db/migrations/current)
  'search_customers',
  'customer_timeline',
  // API (sections 070-api-keys.sql to 075-tenant-reports.sql of db/migrations/committed/000001.sql)
  'current_tenant',
  'create_plan',
  'set_plan_status',
  'purchasable_plans',
  'create_price',
  // catalogue management (db/migrations/current/15-catalogue.sql; docs/api.md, "Catalogue: plans and prices")
  'update_plan_terms',
  'archive_price',
  'replace_price',
  'preview_price_move',
  'move_price_subscribers',
  'create_api_key',
  'revoke_api_key',
  'rotate_api_key',
  'create_customer_session',
  'revoke_customer_session',
  'customer_entitlements',
  'customer_entitlements_claim',
  // outbox delivery (sections 200-webhook-endpoints.sql to 230-notifications.sql of db/migrations/committed/000002.sql)
  'create_webhook_endpoint',
  'update_webhook_endpoint',
  'rotate_webhook_endpoint_secret',
  'delete_webhook_endpoint',
]);

/** Columns that stay out of the API although their table is in it: provider secrets and plumbing. */
export const hiddenAttributes = [
  'payment_methods.provider_token',
  'payments.idempotency_key',
  'refunds.provider_idempotency_key',
  'events.dispatched_at',
  'webhook_deliveries.attempt_started_at',
];

/**
 * Names of relations over composite foreign keys (tenant_id, …), which the
 * simplify-inflection preset cannot shorten by itself: [table, constraint,
 * field on this table, field on the referenced table].
 */
const relationNames: Array<[string, string, string, string]> = [
  ['prices', 'prices_plan_fkey', 'plan', 'prices'],
  ['payment_methods', 'payment_methods_customer_fkey', 'customer', 'paymentMethods'],
  ['subscriptions', 'subscriptions_customer_fkey', 'customer', 'subscriptions'],
  ['subscriptions', 'subscriptions_price_fkey', 'price', 'subscriptions'],
  ['subscriptions', 'subscriptions_pending_price_fkey', 'pendingPrice', 'subscriptionsSwitchingHere'],
  ['subscriptions', 'subscriptions_payment_method_fkey', 'paymentMethod', 'subscriptions'],
  ['invoices', 'invoices_customer_fkey', 'customer', 'invoices'],
  ['invoices', 'invoices_subscription_fkey', 'subscription', 'invoices'],
  ['invoices', 'invoices_price_fkey', 'price', 'invoices'],
  ['invoice_lines', 'invoice_lines_invoice_fkey', 'invoice', 'lines'],
  ['invoice_lines', 'invoice_lines_customer_fkey', 'customer', 'invoiceLines'],
  ['invoice_lines', 'invoice_lines_price_fkey', 'price', 'invoiceLines'],
  ['payments', 'payments_invoice_fkey', 'invoice', 'payments'],
  ['payments', 'payments_customer_fkey', 'customer', 'payments'],
  ['payments', 'payments_payment_method_fkey', 'paymentMethod', 'payments'],
  ['refunds', 'refunds_payment_fkey', 'payment', 'refunds'],
  ['refunds', 'refunds_customer_fkey', 'customer', 'refunds'],
  ['refunds', 'refunds_subscription_fkey', 'subscription', 'refunds'],
  ['customer_balances', 'customer_balances_customer_fkey', 'customer', 'balances'],
  ['balance_transactions', 'balance_transactions_customer_fkey', 'customer', 'balanceTransactions'],
  ['balance_transactions', 'balance_transactions_invoice_fkey', 'invoice', 'balanceTransactions'],
  ['balance_transactions', 'balance_transactions_refund_fkey', 'refund', 'balanceTransactions'],
  ['subscriptions', 'subscriptions_tenant_id_fkey', 'tenant', 'subscriptions'],
  ['webhook_deliveries', 'webhook_deliveries_endpoint_fkey', 'endpoint', 'deliveries'],
  ['webhook_deliveries', 'webhook_deliveries_event_fkey', 'event', 'webhookDeliveries'],
];

/**
 * Backward relations whose foreign key carries the currency (or whose index
 * is partial), so Amber's index check hides them, although the index on
 * (tenant_id, parent_id, …) serves them: listed explicitly.
 */
const listedBackwards = new Set(['invoices_subscription_fkey', 'refunds_subscription_fkey', 'payments_invoice_fkey', 'refunds_payment_fkey']);

const rules: PgSmartTagRule[] = [
  ...Object.entries(exposedClasses).map(([name, behavior]): PgSmartTagRule => ({ kind: 'class', match: `app_public.${name}`, tags: { behavior } })),
  // Report views: read-only lists (security_invoker views, so RLS decides the rows).
  { kind: 'class', match: (c: PgClass) => c.getNamespace()?.nspname === 'app_reports', tags: { behavior: `${READ} -single` } },
  { kind: 'class', match: 'app_reports.tenant_subscription_counts', tags: { name: 'subscription_counts' } },
  { kind: 'class', match: 'app_reports.tenant_monthly_revenue', tags: { name: 'monthly_revenue' } },
  ...hiddenAttributes.map((name): PgSmartTagRule => ({ kind: 'attribute', match: `app_public.${name}`, tags: { behavior: '-*' } })),
  // Lookups by secondary unique keys add nothing a filter does not (and most include tenant_id, which RLS fixes anyway).
  { kind: 'constraint', match: (c: PgConstraint) => c.contype === 'u', tags: { behavior: '-single -update -delete' } },
  // Currencies are reference data: no `currencyByCurrency` on every row, no rows listed under a currency.
  {
    kind: 'constraint',
    match: (c: PgConstraint) => c.contype === 'f' && c.getForeignClass()?.relname === 'currencies',
    tags: { behavior: '-*' },
  },
  ...relationNames.map(
    ([table, constraint, fieldName, foreignFieldName]): PgSmartTagRule => ({
      kind: 'constraint',
      match: `app_public.${table}.${constraint}`,
      tags: { fieldName, foreignFieldName, ...(listedBackwards.has(constraint) ? { behavior: '+connection' } : {}) },
    }),
  ),
];

/**
 * Names. The subscriptions table is typed BillingSubscription (a type named
 * Subscription would collide with GraphQL's root subscription type), but its
 * fields keep the natural names: subscriptions, subscription, subscriptionById.
 */
export const SubscriptionNamesPlugin: GraphileConfig.Plugin = {
  name: 'AbonementSubscriptionNamesPlugin',
  version: '1.0.0',
  after: ['PgSimplifyInflectionPlugin'],
  inflection: {
    replace: {
      allRowsConnection(previous, _options, resource) {
        const name = previous!(resource);
        return name === 'billingSubscriptions' ? 'subscriptions' : name;
      },
      rowByUnique(previous, _options, details) {
        const name = previous!(details);
        return name === 'billingSubscription' ? 'subscription' : name;
      },
      // Functions exposed as plain lists (never also as connections) keep their own name, without a List suffix.
      customQueryListField(previous, _options, details) {
        return previous!(details).replace(/List$/, '');
      },
      nodeById(previous, _options, typeName) {
        const name = previous!(typeName);
        return name === 'billingSubscriptionById' ? 'subscriptionById' : name;
      },
    },
  },
};

interface PgExtensions {
  pg?: { schemaName?: string; name?: string };
}

/**
 * The opt-in rule: whatever app_public object the lists above do not name is
 * not in the API at all; and no filter reaches through a relation (each such
 * filter is a correlated subquery a client could multiply at will).
 */
export const ShapeBehaviorPlugin: GraphileConfig.Plugin = {
  name: 'AbonementShapeBehaviorPlugin',
  version: '1.0.0',
  schema: {
    entityBehavior: {
      pgResource: {
        inferred: {
          after: ['inferred'],
          provides: ['postInferred'],
          callback(behavior, resource) {
            const pg = (resource.extensions as PgExtensions | undefined)?.pg;
            if (pg?.schemaName !== 'app_public' || !pg.name) return behavior;
            const listed = resource.parameters ? exposedFunctions.has(pg.name) : pg.name in exposedClasses;
            return listed ? behavior : [behavior, '-*'];
          },
        },
      },
      pgCodecRelation: {
        inferred: { after: ['inferred'], provides: ['postInferred'], callback: (behavior) => [behavior, '-filterBy'] },
      },
    },
  },
};

export const ShapeSmartTagsPlugin = pgSmartTags(rules, null, { name: 'AbonementShapeSmartTagsPlugin' });

/**
 * Lists default to newest first (`CREATED_AT_DESC`, then the primary key),
 * like REST: it is what people want to see, and every tenant table has an
 * index on (tenant_id, created_at), while the primary-key order PostGraphile
 * defaults to is a random uuid order that makes PostgreSQL walk the whole
 * primary-key index, across all tenants, to find one tenant's first page.
 */
export const NewestFirstPlugin: GraphileConfig.Plugin = {
  name: 'AbonementNewestFirstPlugin',
  version: '1.0.0',
  after: ['PgConnectionArgOrderByDefaultValuePlugin'],
  schema: {
    hooks: {
      GraphQLObjectType_fields_field_args_arg(arg, build, context) {
        const { argName, isPgFieldConnection, pgFieldResource } = context.scope;
        if (argName !== 'orderBy' || !isPgFieldConnection || !pgFieldResource?.codec.attributes || pgFieldResource.parameters) return arg;
        const OrderBy = build.getTypeByName(build.inflection.orderByType(build.inflection.tableType(pgFieldResource.codec)));
        const newest = OrderBy && build.graphql.isEnumType(OrderBy) ? OrderBy.getValues().find((v) => v.name === 'CREATED_AT_DESC') : undefined;
        return newest ? { ...arg, defaultValue: [newest.value] } : arg;
      },
    },
  },
};

/**
 * An update by key or node id that matched no row the caller may change (it
 * does not exist, or row-level security hides it) fails like a delete does:
 * PostGraphile's pgUpdateSingle answers a bare `null` there, pgDeleteSingle an
 * error that makeMaskError turns into NOT_FOUND (docs/api.md, "Errors"). The
 * payload gains a hidden check of the update's result that flags the same
 * error as the delete's, so both answer alike.
 */
export const UpdateNotFoundPlugin: GraphileConfig.Plugin = {
  name: 'AbonementUpdateNotFoundPlugin',
  version: '1.0.0',
  after: ['PgMutationUpdateDeletePlugin'],
  schema: {
    hooks: {
      GraphQLObjectType_fields_field(field, _build, context) {
        const { isPgUpdateMutation, pgFieldResource } = context.scope as { isPgUpdateMutation?: boolean; pgFieldResource?: { name: string } };
        const plan = field.plan;
        if (!isPgUpdateMutation || !plan) return field;
        const message = `No values were updated in collection '${pgFieldResource?.name}' because no values you can update were found matching these criteria.`;
        return {
          ...field,
          plan(...planArgs: Parameters<typeof plan>) {
            const $payload = plan(...planArgs) as ObjectStep<{ result: Step }>;
            const $result = $payload.getStepForKey('result');
            const $found = lambda($result, (row: unknown) => (row == null ? flagError(new Error(message)) : row));
            return object({ result: $result, found: $found });
          },
        } as typeof field;
      },
    },
  },
};

export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;

const checkPageSize = (n: unknown): number => {
  const size = n ?? DEFAULT_PAGE_SIZE;
  if (typeof size !== 'number' || !Number.isInteger(size) || size < 0 || size > MAX_PAGE_SIZE) {
    throw new SafeError(`first must be an integer between 0 and ${MAX_PAGE_SIZE}`, { code: 'PAGE_SIZE_OUT_OF_RANGE' });
  }
  return size;
};

/**
 * Every list is paged forwards with `first` (default 20, at most 100) and
 * `after`: no `offset` (deep offsets cost a scan) and no backwards paging, so
 * no request can ask for an unbounded or expensive page.
 */
export const PaginationLimitsPlugin: GraphileConfig.Plugin = {
  name: 'AbonementPaginationLimitsPlugin',
  version: '1.0.0',
  after: ['PgFirstLastBeforeAfterArgsPlugin'],
  schema: {
    entityBehavior: {
      pgResource: { inferred: { after: ['inferred'], provides: ['postInferred'], callback: (behavior) => [behavior, '-resource:connection:backwards'] } },
    },
    hooks: {
      GraphQLObjectType_fields_field_args(args, build, context) {
        const { isPgFieldConnection, isPgFieldSimpleCollection } = context.scope;
        if (!(isPgFieldConnection || isPgFieldSimpleCollection) || !args.first) return args;
        const { offset: _offset, last: _last, before: _before, ...rest } = args;
        return {
          ...rest,
          first: {
            ...args.first,
            description: build.wrapDescription(`Read the first \`n\` values of the set (default ${DEFAULT_PAGE_SIZE}, at most ${MAX_PAGE_SIZE}); page on with \`after\`.`, 'arg'),
            defaultValue: DEFAULT_PAGE_SIZE,
            applyPlan(_: unknown, $connection: { setFirst($n: Step): void }, arg: { getRaw(): Step }) {
              $connection.setFirst(lambda(arg.getRaw(), checkPageSize));
            },
          },
        };
      },
    },
  },
};

const BIGINT = /^-?\d{1,19}$/;

/**
 * Money travels as BigInt strings; a string that is not an integer is refused
 * while variables are checked (400 INVALID_VARIABLES at the gate,
 * server/protection.ts) instead of failing later inside PostgreSQL.
 */
export const StrictBigIntPlugin: GraphileConfig.Plugin = {
  name: 'AbonementStrictBigIntPlugin',
  version: '1.0.0',
  schema: {
    hooks: {
      GraphQLScalarType(config) {
        if (config.name !== 'BigInt') return config;
        const parseValue = config.parseValue;
        const parseLiteral = config.parseLiteral;
        const check = (value: unknown): unknown => {
          const text = typeof value === 'number' && Number.isSafeInteger(value) ? String(value) : value;
          if (typeof text !== 'string' || !BIGINT.test(text)) throw new TypeError('BigInt must be an integer, as a string of digits');
          return text;
        };
        return {
          ...config,
          parseValue: (value: unknown) => (parseValue ? parseValue(check(value)) : check(value)),
          parseLiteral: (ast, variables) => {
            const parsed = parseLiteral ? parseLiteral(ast, variables) : undefined;
            return check(parsed);
          },
        };
      },
    },
  },
};

/**
 * The customer session token, signed by the API from the session row
 * (server/sessions.ts), so GraphQL and REST hand out the same token for the
 * same session.
 */
export function customerSessionTokenPlugin(sessionKey: Uint8Array): GraphileConfig.Plugin {
  return extendSchema(
    () => ({
      typeDefs: gql`
        extend type CustomerSession {
          """
          The JWT to send as \`Authorization: Bearer <token>\` on behalf of the customer until \`expiresAt\`.
          """
          token: String
        }
      `,
      objects: {
        CustomerSession: {
          plans: {
            token($session: Step & { get(attr: string): Step }) {
              const $row = lambda(
                [$session.get('id'), $session.get('tenant_id'), $session.get('customer_id'), $session.get('issued_at'), $session.get('expires_at')],
                ([id, tenant_id, customer_id, issued_at, expires_at]) => ({ id, tenant_id, customer_id, issued_at, expires_at }) as CustomerSessionRow,
              );
              return lambda($row, (row) => (row.id ? signCustomerSession(row, sessionKey) : null));
            },
          },
        },
      },
    }),
    'AbonementCustomerSessionTokenPlugin',
  );
}
