/**
 * Feature: which operator roles (docs/product.md, Who uses it) may use which action
 * of a resource. AdminJS checks `isAccessible` on the server for every API
 * call and hides what is not accessible in the UI.
 *
 *   admin    everything
 *   finance  refunds, payment review, reports
 *   support  read everything, cancel/pause subscriptions, resend e-mails
 *   viewer   read only
 *
 * Defaults: every role may read (list, show, search); only admins may use
 * new, edit, delete and bulkDelete. A resource passes its own rules for those
 * and for its custom actions; an empty list closes an action to everybody.
 */
import { buildFeature, type ActionContext, type FeatureType } from 'adminjs';
import { OPERATOR_ROLES } from '../../lib/statuses.ts';

export type OperatorRole = (typeof OPERATOR_ROLES)[number];

/** What AdminJS knows about the logged-in operator (its `currentAdmin`). Never anything secret. */
export interface ConsoleOperator {
  id: string;
  email: string;
  title: string;
  role: OperatorRole;
}

export function operatorRole(context: Pick<ActionContext, 'currentAdmin'>): OperatorRole | undefined {
  const role = (context.currentAdmin as Partial<ConsoleOperator> | undefined)?.role;
  return OPERATOR_ROLES.find((r) => r === role);
}

export function allowRoles(roles: readonly OperatorRole[]) {
  return (context: ActionContext): boolean => {
    const role = operatorRole(context);
    return role !== undefined && roles.includes(role);
  };
}

const EVERYONE = OPERATOR_ROLES;
const DEFAULT_RULES: Record<string, readonly OperatorRole[]> = {
  list: EVERYONE,
  show: EVERYONE,
  search: EVERYONE,
  new: ['admin'],
  edit: ['admin'],
  delete: ['admin'],
  bulkDelete: ['admin'],
};

/** Rules for a resource everyone reads and nobody changes through AdminJS's generic actions (changes go through SQL functions). */
export const READ_ONLY: Record<string, readonly OperatorRole[]> = { new: [], edit: [], delete: [], bulkDelete: [] };

export function roleAccess(rules: Record<string, readonly OperatorRole[]> = {}): FeatureType {
  const merged = { ...DEFAULT_RULES, ...rules };
  return buildFeature({
    actions: Object.fromEntries(Object.entries(merged).map(([action, roles]) => [action, { isAccessible: roles.length === 0 ? false : allowRoles(roles) }])),
  });
}
