/**
 * Every custom React component of the console, registered once here (style:
 * AdminJS example app). Resources and pages refer to these constants, never to
 * file paths.
 *
 * Paths are absolute from the project root, so the compiled server
 * (dist/admin/components.js) still finds the sources: AdminJS checks that each
 * registered file exists, even when it serves a bundle made ahead of time by
 * `npm run build` (admin/bundle.ts). The sources (admin/components/) must
 * therefore ship with the compiled server.
 */
import path from 'node:path';
import { ComponentLoader } from 'adminjs';
import { projectRoot } from './environment.ts';

export const componentLoader = new ComponentLoader();

const source = (file: string) => path.join(projectRoot, 'admin', 'components', file);

export const Components = {
  Dashboard: componentLoader.add('Dashboard', source('dashboard.tsx')),
  /** The form of every record action that calls a SQL function (admin/sql-actions.ts). */
  SqlActionForm: componentLoader.add('SqlActionForm', source('sql-action-form.tsx')),
  /** The reports page (admin/pages/reports.ts). */
  Reports: componentLoader.add('Reports', source('reports.tsx')),
  /** The crontab page (admin/pages/crontab.ts). */
  Crontab: componentLoader.add('Crontab', source('crontab.tsx')),
  /** A customer's page: search and timeline (admin/pages/customer.ts). */
  CustomerPage: componentLoader.add('CustomerPage', source('customer-page.tsx')),
};
