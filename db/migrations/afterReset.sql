-- Run by graphile-migrate as the superuser after it (re)creates a database
-- (the shadow database that `npm run db:commit` checks migrations against).
-- The same extensions the role bootstrap creates in the real database.
create extension if not exists pgcrypto;
create extension if not exists citext;
create extension if not exists btree_gist;
