/** Environment variables through which test/run.ts tells test files where their database comes from. */
export const TEST_ENV = {
  superuserUrl: 'ABONEMENT_TEST_SUPERUSER_URL',
  template: 'ABONEMENT_TEST_TEMPLATE',
  rolePrefix: 'ABONEMENT_TEST_ROLE_PREFIX',
  roleSecret: 'ABONEMENT_TEST_ROLE_SECRET',
} as const;
