/**
 * Feature: no field named like a secret leaves the console in an action's
 * JSON. The column grants already keep `password_hash` and its kind out of the
 * operator role's reach, and table-resource.ts does not load such columns;
 * this `after` hook is the line of defence that holds even if a grant is
 * widened by mistake or a JSON column carries a `token` key.
 *
 * Remember: AdminJS's `isVisible: false` only hides a field in the UI; it is
 * still sent in the JSON. Never rely on visibility for secrets.
 *
 * Applied to every resource in admin/index.ts. A custom action returning
 * records must add `stripSecretsAfter` to its own `after` hooks.
 */
import { buildFeature, type ActionResponse, type After, type FeatureType } from 'adminjs';
import { isSecretPath } from '../secret-names.ts';

interface RecordLike {
  params?: Record<string, unknown>;
  populated?: Record<string, RecordLike | null | undefined>;
}

function stripRecord(record: RecordLike | null | undefined): void {
  if (!record || typeof record !== 'object') return;
  if (record.params && typeof record.params === 'object') {
    for (const path of Object.keys(record.params)) {
      if (isSecretPath(path)) delete record.params[path];
    }
  }
  for (const populated of Object.values(record.populated ?? {})) stripRecord(populated);
}

/** Removes secret-named params from `record`/`records` of an action response, in place. */
export function stripSecretsFromResponse<T extends ActionResponse>(response: T): T {
  const { record, records } = response as { record?: RecordLike; records?: RecordLike[] };
  stripRecord(record);
  if (Array.isArray(records)) records.forEach(stripRecord);
  return response;
}

export const stripSecretsAfter: After<ActionResponse> = (response) => stripSecretsFromResponse(response);

/** The standard actions that return records. */
const RECORD_ACTIONS = ['list', 'show', 'edit', 'new', 'search', 'delete', 'bulkDelete'] as const;

export function stripSecrets(): FeatureType {
  return buildFeature({
    actions: Object.fromEntries(RECORD_ACTIONS.map((name) => [name, { after: stripSecretsAfter }])),
  });
}
