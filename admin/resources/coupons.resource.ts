/**
 * Coupons, promotion codes and the discounts redeemed from them (docs/api.md,
 * "Coupons and promotion codes"). Tenants create them through the API; read
 * only here, each discount linked to its subscription and coupon.
 */
import type { ResourceWithOptions } from 'adminjs';
import { READ_ONLY, roleAccess } from '../features/role-access.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';
import { Navigation } from './navigation.ts';

export async function couponsResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({ knex, pool, schema: 'app_public', table: 'coupons', references: { tenant_id: 'tenants' } });
  return {
    resource,
    options: {
      navigation: Navigation.catalogue,
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['tenant_id', 'name', 'percent_off', 'amount_off_minor', 'currency', 'duration', 'duration_in_periods', 'times_redeemed', 'max_redemptions', 'active'],
      filterProperties: ['tenant_id'],
    },
    features: [roleAccess(READ_ONLY)],
  };
}

export async function promotionCodesResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'promotion_codes',
    references: { tenant_id: 'tenants', coupon_id: 'coupons' },
  });
  return {
    resource,
    options: {
      navigation: Navigation.catalogue,
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['tenant_id', 'code', 'coupon_id', 'times_redeemed', 'max_redemptions', 'expires_at', 'first_time_only', 'once_per_customer', 'active'],
      filterProperties: ['tenant_id', 'coupon_id'],
    },
    features: [roleAccess(READ_ONLY)],
  };
}

export async function discountsResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_public',
    table: 'discounts',
    references: { tenant_id: 'tenants', customer_id: 'customers', subscription_id: 'subscriptions', coupon_id: 'coupons', promotion_code_id: 'promotion_codes' },
  });
  return {
    resource,
    options: {
      navigation: Navigation.customers,
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['tenant_id', 'customer_id', 'subscription_id', 'coupon_id', 'promotion_code_id', 'periods_remaining', 'started_at', 'ended_at'],
      filterProperties: ['tenant_id', 'customer_id'],
    },
    features: [roleAccess(READ_ONLY)],
  };
}

/** Tax rates (docs/api.md, "Taxes"), read only: tenants create them through the API. */
export async function taxRatesResource({ knex, pool }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({ knex, pool, schema: 'app_public', table: 'tax_rates', references: { tenant_id: 'tenants' } });
  return {
    resource,
    options: {
      navigation: Navigation.catalogue,
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['tenant_id', 'name', 'percentage', 'inclusive', 'country', 'fiscal_vat', 'active', 'created_at'],
      filterProperties: ['tenant_id', 'country'],
    },
    features: [roleAccess(READ_ONLY)],
  };
}
