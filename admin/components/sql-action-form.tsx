/**
 * The form of every record action that calls a SQL function
 * (admin/sql-actions.ts): what will happen, the record it acts on, its
 * fields, and one submit button. The form makes one idempotency key when it
 * opens and sends it with every submission, so a double click or a retry
 * after a lost answer has one effect (the key is not a secret: the session's
 * CSRF token, which ApiClient's axios copies from the XSRF-TOKEN cookie into
 * X-XSRF-TOKEN, is what admin/auth.ts checks). SQL's refusal ("CODE: message")
 * is shown on the form and as a notice, and beside its field when SQL names
 * one (the error's COLUMN: docs/console.md, "Catalogue").
 *
 * A resource action (no record, e.g. "New plan") asks its handler for the
 * params its fields need with a GET of its own (a record action gets them
 * with its record).
 */
import React, { useEffect, useState } from 'react';
import { Box, Button, FormGroup, Input, Label, MessageBox, Text } from '@adminjs/design-system';
import { ApiClient, useActionResponseHandler, type ActionProps } from 'adminjs';

interface FormField {
  name: string;
  label: string;
  type: 'text' | 'amount' | 'integer' | 'datetime' | 'select';
  options?: Array<{ value: string; label: string }>;
  defaultParam?: string;
  optionsParam?: string;
  help?: string;
  required?: boolean;
}

interface SqlActionForm {
  description: string;
  submitLabel: string;
  variant: 'primary' | 'danger';
  fields: FormField[];
  summary: Array<{ label: string; param: string }>;
  preview: boolean;
  resource: boolean;
}

interface PreviewLine {
  label: string;
  value: string;
}

/** The preview's lines, as admin/sql-actions.ts puts them in the record param `action_preview`. */
const PREVIEW_PARAM = 'action_preview';
/** The response property naming the field SQL refused, as admin/sql-actions.ts puts it (FIELD_ERRORS_PARAM). */
const FIELD_ERRORS_PARAM = 'fieldErrors';

function fieldErrorsOf(data: unknown): Record<string, string> {
  const errors = (data as Record<string, unknown> | undefined)?.[FIELD_ERRORS_PARAM];
  return errors && typeof errors === 'object' ? (errors as Record<string, string>) : {};
}

/** The initial values: each field's default param, else a select's first option, else empty. */
function initialValues(fields: FormField[], params: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(
    fields.map((field) => [field.name, field.defaultParam ? String(params[field.defaultParam] ?? '') : field.type === 'select' ? (optionsOf(field, params)[0]?.value ?? '') : '']),
  );
}

/** Options of a select: fixed in the action, or the record's own (JSON in a param that `prepare` set). */
function optionsOf(field: FormField, params: Record<string, unknown>): Array<{ value: string; label: string }> {
  if (!field.optionsParam) return field.options ?? [];
  try {
    const parsed = JSON.parse(String(params[field.optionsParam] ?? '[]')) as unknown;
    return Array.isArray(parsed) ? (parsed as Array<{ value: string; label: string }>) : [];
  } catch {
    return [];
  }
}

const api = new ApiClient();

/** 128 random bits; getRandomValues works on plain HTTP too (randomUUID needs a secure context). */
function newIdempotencyKey(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return `console-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** 1050 minor units of a 2-digit currency → "10.50". Exact: string arithmetic, no floats. */
function majorUnits(minor: string, exponent: number): string {
  if (!/^[0-9]+$/.test(minor)) return '';
  if (exponent === 0) return minor;
  const padded = minor.padStart(exponent + 1, '0');
  return `${padded.slice(0, -exponent)}.${padded.slice(-exponent)}`;
}

const SqlActionFormComponent: React.FC<ActionProps> = ({ action, resource, record }) => {
  const form = action.custom as SqlActionForm;
  // A resource action has no record: its params come from its own GET (below).
  const [fetched, setFetched] = useState<Record<string, unknown> | null>(null);
  const params = (record?.params ?? fetched ?? {}) as Record<string, unknown>;
  const [idempotencyKey] = useState(newIdempotencyKey);
  const [values, setValues] = useState<Record<string, string>>(() => initialValues(form.fields, params));
  const [submitting, setSubmitting] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [fieldErrors, setFieldErrors] = useState<Record<string, string>>({});
  useEffect(() => {
    if (!form.resource) return;
    api
      .resourceAction({ resourceId: resource.id, actionName: action.name })
      .then((response) => {
        const loaded = (response.data.record?.params ?? {}) as Record<string, unknown>;
        setFetched(loaded);
        setValues(initialValues(form.fields, loaded));
      })
      .catch(() => setError('The form could not be loaded; reload the page.'));
  }, [form.resource, resource.id, action.name]);
  const call = (data: Record<string, string>) =>
    record
      ? api.recordAction({ resourceId: resource.id, recordId: record.id, actionName: action.name, data })
      : api.resourceAction({ resourceId: resource.id, actionName: action.name, data });
  // The preview shown and the values it was made for: submitting needs a preview of exactly these values.
  const [preview, setPreview] = useState<{ lines: PreviewLine[]; values: string } | null>(null);
  const [previewing, setPreviewing] = useState(false);
  const handleResponse = useActionResponseHandler();
  const previewedNow = !form.preview || preview?.values === JSON.stringify(values);

  const askPreview = () => {
    if (previewing || (!record && !form.resource)) return;
    setPreviewing(true);
    setError(null);
    setFieldErrors({});
    const asked = JSON.stringify(values);
    call({ ...values, preview: 'true' })
      .then((response) => {
        const notice = response.data.notice;
        if (notice?.type === 'error') {
          setError(notice.message);
          setFieldErrors(fieldErrorsOf(response.data));
          setPreview(null);
        } else {
          const raw = (response.data.record?.params as Record<string, unknown> | undefined)?.[PREVIEW_PARAM];
          setPreview({ lines: JSON.parse(String(raw ?? '[]')) as PreviewLine[], values: asked });
        }
        setPreviewing(false);
      })
      .catch(() => {
        setError('The preview failed; ask again.');
        setPreviewing(false);
      });
  };

  const submit = (event: React.FormEvent) => {
    event.preventDefault();
    if (submitting || (!record && !form.resource) || !previewedNow) return;
    setSubmitting(true);
    setError(null);
    setFieldErrors({});
    call({ ...values, idempotency_key: idempotencyKey })
      .then((response) => {
        const notice = response.data.notice;
        if (notice?.type === 'error') {
          setError(notice.message);
          setFieldErrors(fieldErrorsOf(response.data));
          setSubmitting(false);
        }
        handleResponse(response);
      })
      .catch(() => {
        // Same key on the retry: if the first request did arrive, the retry answers with its result.
        setError('The request failed; submitting again is safe.');
        setSubmitting(false);
      });
  };

  const currency = typeof params.currency === 'string' ? params.currency : null;
  const exponent = typeof params.currency_exponent === 'number' ? params.currency_exponent : Number(params.currency_exponent ?? NaN);

  return (
    <Box as="form" onSubmit={submit} data-testid="sql-action-form">
      <Text mb="lg">{form.description}</Text>
      {form.summary.length > 0 ? (
        <Box mb="lg" as="dl">
          {form.summary.map((item) => (
            <Box key={item.param} flex flexDirection="row" mb="sm">
              <Text as="dt" mr="default" style={{ minWidth: 180 }} color="grey60">
                {item.label}
              </Text>
              <Text as="dd" data-testid={`summary-${item.param}`}>
                {String(params[item.param] ?? '—')}
              </Text>
            </Box>
          ))}
        </Box>
      ) : null}
      {form.fields.map((field) => (
        <FormGroup key={field.name}>
          <Label htmlFor={`field-${field.name}`} required={field.required}>
            {field.label}
          </Label>
          {field.type === 'select' ? (
            <select
              id={`field-${field.name}`}
              data-testid={`field-${field.name}`}
              value={values[field.name]}
              onChange={(e) => setValues({ ...values, [field.name]: e.target.value })}
              style={{ padding: 8, minWidth: 240 }}
            >
              {optionsOf(field, params).map((option) => (
                <option key={option.value} value={option.value}>
                  {option.label}
                </option>
              ))}
            </select>
          ) : (
            <Input
              id={`field-${field.name}`}
              data-testid={`field-${field.name}`}
              inputMode={field.type === 'amount' || field.type === 'integer' ? 'numeric' : undefined}
              placeholder={field.type === 'datetime' ? '2026-05-01T00:00:00Z' : undefined}
              aria-invalid={fieldErrors[field.name] ? true : undefined}
              value={values[field.name]}
              onChange={(e: React.ChangeEvent<HTMLInputElement>) => {
                setValues({ ...values, [field.name]: e.target.value });
                // The refusal was about the old value: it goes when the field changes.
                if (fieldErrors[field.name]) setFieldErrors(Object.fromEntries(Object.entries(fieldErrors).filter(([name]) => name !== field.name)));
              }}
            />
          )}
          {field.type === 'amount' && currency && Number.isInteger(exponent) ? (
            <Text variant="sm" color="grey60">
              = {majorUnits(values[field.name] ?? '', exponent)} {currency}
            </Text>
          ) : null}
          {fieldErrors[field.name] ? (
            <Text variant="sm" color="error" data-testid={`field-error-${field.name}`} role="alert">
              {fieldErrors[field.name]}
            </Text>
          ) : null}
          {field.help ? (
            <Text variant="sm" color="grey60">
              {field.help}
            </Text>
          ) : null}
        </FormGroup>
      ))}
      {error ? <MessageBox mb="lg" variant="danger" message={error} data-testid="sql-action-error" /> : null}
      {form.preview && preview && previewedNow ? (
        <Box mb="lg" as="dl" data-testid="sql-action-preview" p="default" style={{ border: '1px solid #ccc', borderRadius: 4 }}>
          {preview.lines.map((line) => (
            <Box key={line.label} flex flexDirection="row" mb="sm">
              <Text as="dt" mr="default" style={{ minWidth: 220 }} color="grey60">
                {line.label}
              </Text>
              <Text as="dd">{line.value}</Text>
            </Box>
          ))}
        </Box>
      ) : null}
      {form.preview ? (
        <Button type="button" variant="outlined" mr="default" onClick={askPreview} disabled={previewing} data-testid="sql-action-preview-button">
          Preview
        </Button>
      ) : null}
      <Button type="submit" variant={form.variant === 'danger' ? 'danger' : 'contained'} disabled={submitting || !previewedNow} data-testid="sql-action-submit">
        {form.submitLabel}
      </Button>
    </Box>
  );
};

export default SqlActionFormComponent;
