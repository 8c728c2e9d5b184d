/**
 * Record actions that call one SQL function on behalf of the operator
 * (style: "record actions call a handler that calls a SQL function; the
 * handler never writes tables itself").
 *
 * Every such action:
 *   - shows a form (components/sql-action-form.tsx) on GET and acts only on
 *     POST: AdminJS calls form-less actions with GET, and the session cookie
 *     (SameSite=Lax) rides along on a top-level GET from another site, so a
 *     link must never change anything; the POST has passed the console's
 *     origin and CSRF-token checks before it gets here (admin/auth.ts);
 *   - needs an idempotency key in the POST, generated once per form by the
 *     browser and passed to the SQL function, so a double submission has one
 *     effect (the second answers with the first's result);
 *   - runs through asOperator(): the SQL function checks the operator's role
 *     itself (app_hidden.require_operator_role) and writes the audit log;
 *     AdminJS's isAccessible only decides what the UI offers, and refuses
 *     early;
 *   - turns a business error of SQL (SQLSTATE class AB, code in DETAIL) into
 *     an error notice "CODE: message"; anything else is logged and shown as
 *     INTERNAL_ERROR without details;
 *   - strips secrets from the record it returns.
 */
import type { Action, ActionContext, ActionRequest, ActionResponse, NoticeMessage, RecordActionResponse, RecordJSON } from 'adminjs';
import type pg from 'pg';
import type { Logger } from '../lib/logger.ts';
import { Components } from './components.ts';
import { allowRoles, type ConsoleOperator, type OperatorRole } from './features/role-access.ts';
import { stripSecretsAfter } from './features/strip-secrets.ts';
import { asOperator } from './operator-claims.ts';

/** One input of an action's form. Values reach `run` as trimmed strings. */
export interface FormField {
  name: string;
  label: string;
  /**
   * `amount`: a non-negative integer of minor units (bigint); `integer`: a
   * whole number (its range is SQL's to check); `datetime`: an ISO 8601 time
   * with its offset, or empty. Each form is checked before SQL sees it.
   */
  type: 'text' | 'amount' | 'integer' | 'datetime' | 'select';
  options?: ReadonlyArray<{ value: string; label: string }>;
  /** A record param whose value pre-fills the field (e.g. refundable_minor from `prepare`). */
  defaultParam?: string;
  /** `select` only: a record param (set by `prepare`) holding the options as JSON, for options that depend on the record (ids). */
  optionsParam?: string;
  help?: string;
  required?: boolean;
}

/** What the form component reads from the action's `custom`. */
export interface SqlActionForm {
  description: string;
  submitLabel: string;
  variant: 'primary' | 'danger';
  fields: FormField[];
  /** Record params shown above the form, as label → param. */
  summary: ReadonlyArray<{ label: string; param: string }>;
  /** The form offers a Preview first, and its submit stays disabled until the current values were previewed. */
  preview: boolean;
  /** A resource action (no record, e.g. "New plan"): the form asks for `prepare`'s params with a GET of its own. */
  resource: boolean;
}

/** The response param naming the form field SQL refused (its error's COLUMN), shown beside that field. */
export const FIELD_ERRORS_PARAM = 'fieldErrors';

/** One line of a preview: what will happen, said before the operator confirms. */
export interface PreviewLine {
  label: string;
  value: string;
}

/** The record param that carries a preview's lines (JSON) back to the form. */
export const PREVIEW_PARAM = 'action_preview';

export interface ActionOutcome {
  message: string;
  /** An outcome that changed nothing (e.g. the job was locked): shown as an error, no redirect. */
  failed?: boolean;
  /** Where to go afterwards: a record's show page (default: this record's), or a list. */
  redirect?: { resourceId: string; recordId?: string };
}

export interface SqlActionSpec {
  roles: readonly OperatorRole[];
  icon: string;
  variant?: 'primary' | 'danger';
  description: string;
  submitLabel: string;
  fields?: FormField[];
  summary?: SqlActionForm['summary'];
  /** `resource`: an action on the resource, not on one record (then `recordId` is ''). Default `record`. */
  actionType?: 'record' | 'resource';
  /** Whether the UI offers the action for this record (display only: SQL decides). */
  offeredFor?: (params: Record<string, unknown>) => boolean;
  /** Extra params for the form, read as the operator (e.g. the refundable remainder). */
  prepare?: (client: pg.PoolClient, recordId: string) => Promise<Record<string, unknown>>;
  /**
   * What `run` would do with this input, from SQL that changes nothing (e.g.
   * preview_subscription_change): asked by the form's Preview button (a POST
   * with `preview`), before the operator may submit.
   */
  preview?: (client: pg.PoolClient, recordId: string, input: Record<string, string>) => Promise<PreviewLine[]>;
  /** Calls the SQL function. */
  run: (client: pg.PoolClient, recordId: string, input: Record<string, string>, idempotencyKey: string) => Promise<ActionOutcome>;
  /**
   * `required` (default): the POST must carry the form's key, passed to SQL.
   * `none`: for functions that are idempotent by nature and take no key
   * (the job actions: retrying or completing a job twice is the same).
   */
  idempotencyKey?: 'required' | 'none';
}

export interface SqlActionDeps {
  pool: pg.Pool;
  logger: Logger;
}

/** Keys the form makes (see sql-action-form.tsx); anything else is refused before SQL. */
const IDEMPOTENCY_KEY = /^[A-Za-z0-9_.:-]{16,200}$/;
const AMOUNT = /^[0-9]{1,18}$/;
const INTEGER = /^-?[0-9]{1,9}$/;
const DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface DatabaseError {
  code?: string;
  detail?: string;
  message?: string;
  /** The field SQL named as at fault (app_hidden.raise_field_error). */
  column?: string;
}

/** The field of the form an error of SQL names (its COLUMN), if the form has that field: shown beside it. */
export function fieldErrorOf(error: unknown, fields: readonly FormField[]): Record<string, string> | undefined {
  const { code, detail, message, column } = error as DatabaseError;
  if (!column || !code?.startsWith('AB') || !fields.some((f) => f.name === column)) return undefined;
  return { [column]: `${detail ?? code}: ${message ?? 'refused'}` };
}

/**
 * The notice for an error of an action's SQL: business errors (class AB) and
 * integrity violations (class 23) as "CODE: message"; anything else as
 * INTERNAL_ERROR, with the details only in the log.
 */
export function errorNotice(error: unknown, logger: Logger, context: Record<string, unknown>): NoticeMessage {
  const { code, detail, message } = error as DatabaseError;
  if (code?.startsWith('AB') || code?.startsWith('23')) {
    logger.warn({ ...context, sqlstate: code, code: detail ?? code, reason: message }, 'console action refused by the database');
    return { type: 'error', message: `${detail ?? code}: ${message ?? 'refused by the database'}` };
  }
  logger.error({ ...context, err: error }, 'console action failed');
  return { type: 'error', message: 'INTERNAL_ERROR: the action failed; the server log has the details' };
}

function checkField(field: FormField, value: string): string | null {
  if (field.required && value === '') return `INVALID_INPUT: ${field.label} is required`;
  if (value === '') return null;
  if (field.type === 'amount' && !AMOUNT.test(value)) return `INVALID_INPUT: ${field.label} must be a whole number of minor units (e.g. 1050 for 10.50)`;
  if (field.type === 'integer' && !INTEGER.test(value)) return `INVALID_INPUT: ${field.label} must be a whole number`;
  if (field.type === 'datetime' && (!DATETIME.test(value) || Number.isNaN(Date.parse(value)))) {
    return `INVALID_INPUT: ${field.label} must be a time such as 2026-05-01T00:00:00Z (with its offset), or empty`;
  }
  if (field.type === 'select' && field.optionsParam) {
    // Options of the record are ids: their form is checked here, whether this record may use one is SQL's to say.
    if (!UUID.test(value)) return `INVALID_INPUT: ${field.label} must be one of the options offered`;
  } else if (field.type === 'select' && !field.options?.some((o) => o.value === value)) {
    return `INVALID_INPUT: ${field.label} must be one of ${field.options?.map((o) => o.value).join(', ')}`;
  }
  return null;
}

function validate(fields: readonly FormField[], payload: Record<string, unknown>): { input: Record<string, string> } | { error: string; field: string } {
  const input: Record<string, string> = {};
  for (const field of fields) {
    const value = String(payload[field.name] ?? '').trim();
    const error = checkField(field, value);
    if (error) return { error, field: field.name };
    input[field.name] = value;
  }
  return { input };
}

/**
 * The legal status moves of one state machine, read from
 * app_private.state_transitions (docs/data-model.md, "State machines"), so an
 * action that moves a status is offered only where SQL would allow the move.
 * Read once when the console starts: the table changes only with a migration.
 */
export async function legalMoves(pool: pg.Pool, machine: string): Promise<(from: unknown, to: string) => boolean> {
  const { rows } = await pool.query<{ from_status: string; to_status: string }>(
    'select from_status, to_status from app_private.state_transitions where machine = $1 and from_status is not null',
    [machine],
  );
  const moves = new Set(rows.map((r) => `${r.from_status}>${r.to_status}`));
  return (from, to) => moves.has(`${String(from)}>${to}`);
}

export function sqlRecordAction({ pool, logger }: SqlActionDeps, spec: SqlActionSpec): Partial<Action<ActionResponse>> {
  const allowed = allowRoles(spec.roles);
  const form: SqlActionForm = {
    description: spec.description,
    submitLabel: spec.submitLabel,
    variant: spec.variant ?? 'primary',
    fields: spec.fields ?? [],
    summary: spec.summary ?? [],
    preview: spec.preview !== undefined,
    resource: spec.actionType === 'resource',
  };

  const handler = async (request: ActionRequest, _response: unknown, context: ActionContext): Promise<RecordActionResponse> => {
    const record = context.record;
    const operator = context.currentAdmin as ConsoleOperator;
    const recordId = record ? String(record.id()) : '';
    const resourceId = context.resource.id();
    const current = (): RecordJSON =>
      record ? record.toJSON(context.currentAdmin) : ({ id: '', params: {}, populated: {}, errors: {}, title: '', recordActions: [], bulkActions: [], baseError: null } as RecordJSON);
    /** A refusal: the notice, and the field it concerns (if the form has it) for the form to show beside that field. */
    const refusal = (notice: NoticeMessage, fieldErrors?: Record<string, string>): RecordActionResponse =>
      ({ record: current(), notice, ...(fieldErrors ? { [FIELD_ERRORS_PARAM]: fieldErrors } : {}) }) as RecordActionResponse;
    if (request.method !== 'post') {
      // The form: the record, and whatever it needs from SQL. Nothing changes on GET.
      const json = current();
      if (spec.prepare) Object.assign(json.params, await asOperator(pool, operator.id, (client) => spec.prepare!(client, recordId)));
      return { record: json };
    }
    const payload = (request.payload ?? {}) as Record<string, unknown>;
    const log = { event: 'console_action', action: context.action.name, resource: resourceId, recordId, operatorId: operator.id };
    if (spec.preview && payload.preview === 'true') {
      // A preview changes nothing, so it needs no idempotency key; SQL still checks the operator's role.
      const checkedPreview = validate(form.fields, payload);
      if ('error' in checkedPreview) return refusal({ type: 'error', message: checkedPreview.error }, { [checkedPreview.field]: checkedPreview.error });
      try {
        const lines = await asOperator(pool, operator.id, (client) => spec.preview!(client, recordId, checkedPreview.input));
        const json = current();
        json.params[PREVIEW_PARAM] = JSON.stringify(lines);
        return { record: json };
      } catch (error) {
        return refusal(errorNotice(error, logger, { ...log, preview: true }), fieldErrorOf(error, form.fields));
      }
    }
    const key = String(payload.idempotency_key ?? '');
    if (spec.idempotencyKey !== 'none' && !IDEMPOTENCY_KEY.test(key)) {
      return { record: current(), notice: { type: 'error', message: 'IDEMPOTENCY_KEY_REQUIRED: submit the action from its form (it carries a fresh idempotency key)' } };
    }
    const checked = validate(form.fields, payload);
    if ('error' in checked) return refusal({ type: 'error', message: checked.error }, { [checked.field]: checked.error });
    try {
      const outcome = await asOperator(pool, operator.id, (client) => spec.run(client, recordId, checked.input, key));
      if (outcome.failed) {
        logger.info({ ...log, reason: outcome.message }, 'console action changed nothing');
        return { record: current(), notice: { type: 'error', message: outcome.message } };
      }
      logger.info(log, 'console action done');
      const fresh = (recordId ? await context.resource.findOne(recordId, context) : null) ?? record;
      const target = outcome.redirect ?? (recordId ? { resourceId, recordId } : { resourceId });
      return {
        record: fresh ? fresh.toJSON(context.currentAdmin) : current(),
        notice: { type: 'success', message: outcome.message },
        redirectUrl: target.recordId
          ? context.h.recordActionUrl({ resourceId: target.resourceId, recordId: target.recordId, actionName: 'show' })
          : context.h.resourceUrl({ resourceId: target.resourceId }),
      };
    } catch (error) {
      return refusal(errorNotice(error, logger, log), fieldErrorOf(error, form.fields));
    }
  };

  return {
    actionType: spec.actionType ?? 'record',
    icon: spec.icon,
    component: Components.SqlActionForm,
    isAccessible: allowed,
    isVisible: (context: ActionContext) => allowed(context) && (!spec.offeredFor || !context.record || spec.offeredFor(context.record.params)),
    custom: form,
    handler,
    after: stripSecretsAfter as (response: ActionResponse) => ActionResponse,
  };
}
