/**
 * Customer e-mails (app_private.sent_emails): one per event and template,
 * with recipient, status and the SMTP server's message id. Read only, with
 * "Resend" for support and admin (docs/product.md, Who uses it), which calls
 * app_private.console_resend_email: it checks the role, queues the e-mail
 * again to the customer's current address, and writes the audit log.
 */
import type { ResourceWithOptions } from 'adminjs';
import { EMAIL_TEMPLATES, SENT_EMAIL_STATUSES } from '../../lib/statuses.ts';
import { roleAccess } from '../features/role-access.ts';
import { sqlRecordAction } from '../sql-actions.ts';
import { loadTableResource } from '../table-resource.ts';
import type { ResourceContext } from './context.ts';

export async function sentEmailsResource({ knex, pool, logger }: ResourceContext): Promise<ResourceWithOptions> {
  const resource = await loadTableResource({
    knex,
    pool,
    schema: 'app_private',
    table: 'sent_emails',
    availableValues: { status: SENT_EMAIL_STATUSES, template: EMAIL_TEMPLATES },
    hiddenColumns: ['sending_since'],
  });
  return {
    resource,
    options: {
      navigation: { name: 'Outbox', icon: 'Mail' },
      titleProperty: 'template',
      sort: { sortBy: 'created_at', direction: 'desc' },
      listProperties: ['template', 'to_address', 'status', 'send_count', 'sent_at', 'created_at'],
      filterProperties: ['tenant_id', 'customer_id', 'event_id', 'template', 'to_address', 'status', 'sent_at', 'created_at'],
      properties: {
        last_error: { type: 'textarea' },
      },
      actions: {
        resend: sqlRecordAction(
          { pool, logger },
          {
            roles: ['admin', 'support'],
            icon: 'Send',
            description: 'Sends this e-mail again, to the customer’s current address. An e-mail already queued is left alone (EMAIL_QUEUED).',
            submitLabel: 'Resend',
            // console_resend_email takes no key: a second submission finds the e-mail queued and is refused.
            idempotencyKey: 'none',
            summary: [
              { label: 'Template', param: 'template' },
              { label: 'Sent to', param: 'to_address' },
              { label: 'Status', param: 'status' },
            ],
            run: async (client, id) => {
              await client.query('select id from app_private.console_resend_email($1)', [id]);
              return { message: 'The e-mail is queued again, to the customer’s current address.' };
            },
          },
        ),
      },
    },
    features: [roleAccess({ new: [], edit: [], delete: [], bulkDelete: [] })],
  };
}
