/**
 * Grafast reads GRAPHILE_ENV when it is first imported: import this module
 * before anything that imports postgraphile. Production mode unless told
 * otherwise; development mode adds checks that cost speed.
 */
process.env.GRAPHILE_ENV ??= process.env.NODE_ENV === 'development' && process.env.GRAPHILE_DEV === 'true' ? 'development' : 'production';
