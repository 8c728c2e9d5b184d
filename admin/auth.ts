/**
 * Who may use the console: sessions in PostgreSQL, passport-local login, and
 * the guard in front of AdminJS's routes.
 *
 * Why not AdminJS's own `authenticate` (buildAuthenticatedRouter): it keeps
 * the session id across login (session fixation). passport 0.7 regenerates the
 * session on login and on logout. We render AdminJS's login page ourselves
 * (`admin.renderLogin`) on our own GET/POST /admin/login.
 *
 * Rules:
 * - the operator is re-read from the database on every request
 *   (deserializeUser), so disabling an operator or changing their role takes
 *   effect at their next request;
 * - disabled operators cannot log in; unknown e-mails cost the same scrypt
 *   time as known ones;
 * - failed logins are logged (reason, IP, e-mail if it looks like one; never
 *   the password) and rate limited per e-mail+IP and per IP;
 * - cookies: httpOnly, SameSite=Lax, Secure in production, path limited to
 *   the console;
 * - CSRF (docs/console.md, "Sessions and CSRF"): SameSite stops other sites,
 *   not other origins of the same site (another port of the host, a sibling
 *   sub-domain), so every state-changing request must come from the
 *   console's own origin (Origin, or Sec-Fetch-Site when a browser sends no
 *   Origin) and, behind the login, carry the session's CSRF token in
 *   X-XSRF-TOKEN. The token is also in the XSRF-TOKEN cookie, which AdminJS's
 *   API client (axios) echoes in that header on same-origin requests, so
 *   AdminJS's own actions and ours (admin/sql-actions.ts) carry it with no
 *   code of their own. SameSite=Strict was considered and not taken: it adds
 *   nothing against same-site origins, and would drop the session on links
 *   into the console from mail or chat.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import connectPgSimple from 'connect-pg-simple';
import express from 'express';
import session from 'express-session';
import passport from 'passport';
import { Strategy as LocalStrategy } from 'passport-local';
import type pg from 'pg';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import type { Config } from '../lib/config.ts';
import type { Logger } from '../lib/logger.ts';
import { timingDummyHash, verifyPassword } from '../lib/passwords.ts';
import { OPERATOR_ROLES } from '../lib/statuses.ts';
import { consoleLogins } from '../lib/billing-metrics.ts';
import type { ConsoleOperator, OperatorRole } from './features/role-access.ts';

export interface LoginLimits {
  /** Failed attempts allowed per e-mail and IP within the window. */
  perEmailAndIp: number;
  /** Failed attempts allowed per IP (any e-mail) within the window. */
  perIp: number;
  windowSeconds: number;
}

export const DEFAULT_LOGIN_LIMITS: LoginLimits = { perEmailAndIp: 5, perIp: 30, windowSeconds: 15 * 60 };

export interface ConsoleAuthOptions {
  config: Config;
  logger: Logger;
  /** Operator-role connections: sessions, credentials, the operator of each request. */
  pool: pg.Pool;
  rootPath: string;
  renderLogin(props: { action: string; errorMessage: string | null }): Promise<string>;
  loginLimits?: Partial<LoginLimits>;
  /** Session lifetime (absolute, from login). */
  sessionMaxAgeMs?: number;
}

export interface ConsoleAuth {
  /** Session, passport, /login and /logout: mount before anything else of the console. */
  router: express.Router;
  /** Lets logged-in operators through and hands them to AdminJS; sends everyone else to the login page. */
  requireOperator: express.RequestHandler;
  close(): Promise<void>;
}

export const SESSION_COOKIE = 'abonement.console';
/** The names axios reads and sends by default (xsrfCookieName, xsrfHeaderName). */
export const CSRF_COOKIE = 'XSRF-TOKEN';
const CSRF_HEADER = 'x-xsrf-token';
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

declare module 'express-session' {
  interface SessionData {
    /** Per-session CSRF token, made at login. */
    csrfToken?: string;
  }
}

function refused(res: express.Response, code: 'CROSS_ORIGIN_REQUEST' | 'CSRF_TOKEN_INVALID', message: string): void {
  res.status(403).json({ error: { code, message } });
}

function sameToken(given: string | undefined, expected: string): boolean {
  if (!given) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

type FailureReason = 'unknown_operator' | 'wrong_password' | 'disabled' | 'missing_fields';

/** An e-mail to log, or a marker: what people type into the e-mail field is sometimes their password. */
function loggableEmail(value: unknown): string {
  if (typeof value !== 'string' || value.length === 0) return '(none)';
  return /^[^@\s]{1,64}@[^@\s]{1,255}$/.test(value.trim()) ? value.trim().toLowerCase() : '(not an e-mail)';
}

/**
 * Where to go after login: only console pages, as a path. Anything else (other
 * hosts, `//evil`, quotes that could escape AdminJS's inline state script) is
 * dropped.
 */
export function safeReturnPath(rootPath: string, value: unknown): string | null {
  if (typeof value !== 'string' || value.length > 512) return null;
  if (value !== rootPath && !value.startsWith(`${rootPath}/`) && !value.startsWith(`${rootPath}?`)) return null;
  if (value.includes('//') || !/^[A-Za-z0-9\-._~%/?=&+,]*$/.test(value)) return null;
  return value;
}

export function createConsoleAuth(options: ConsoleAuthOptions): ConsoleAuth {
  const { config, pool, rootPath } = options;
  const log = options.logger.child({ component: 'console-auth' });
  const loginPath = `${rootPath}/login`;
  const limits = { ...DEFAULT_LOGIN_LIMITS, ...options.loginLimits };

  let secret = config.SESSION_SECRET;
  if (!secret) {
    // config.ts refuses to start production without SESSION_SECRET.
    secret = randomBytes(32).toString('base64url');
    log.warn('SESSION_SECRET is not set: using a random secret for this process; console sessions end when it restarts');
  }

  const PgStore = connectPgSimple(session);
  const store = new PgStore({
    pool,
    schemaName: 'app_private',
    tableName: 'operator_sessions',
    createTableIfMissing: false,
    // Cookies expire at an absolute time; touching the row on every request would only cost writes.
    disableTouch: true,
    pruneSessionInterval: 15 * 60,
    errorLog: (...args: unknown[]) => log.error({ detail: args.map(String).join(' ') }, 'session store error'),
  });

  const authenticator = new passport.Passport();
  authenticator.use(
    new LocalStrategy({ usernameField: 'email', passwordField: 'password', session: true }, (email, password, done) => {
      void (async () => {
        const { rows } = await pool.query<{ id: string; role: string; password_hash: string; disabled: boolean }>(
          'select id, role, password_hash, disabled from app_private.operator_credentials($1)',
          [email.trim()],
        );
        const found = rows[0];
        if (!found) {
          await verifyPassword(password, await timingDummyHash());
          consoleLogins.inc({ result: 'unknown_operator' });
          return done(null, false, { message: 'unknown_operator' });
        }
        if (!(await verifyPassword(password, found.password_hash))) {
          consoleLogins.inc({ result: 'wrong_password' });
          return done(null, false, { message: 'wrong_password' });
        }
        // Checked after the password, so only someone who knows it learns the account is disabled.
        if (found.disabled) {
          consoleLogins.inc({ result: 'disabled' });
          return done(null, false, { message: 'disabled' });
        }
        await pool.query('select app_private.record_operator_login($1)', [found.id]);
        consoleLogins.inc({ result: 'success' });
        return done(null, { id: found.id });
      })().catch((error: unknown) => done(error));
    }),
  );
  authenticator.serializeUser((user, done) => done(null, (user as { id: string }).id));
  authenticator.deserializeUser((id: unknown, done) => {
    if (typeof id !== 'string') return done(null, false);
    pool
      .query<{ id: string; email: string; name: string; role: string; disabled: boolean }>(
        'select id, email, name, role, disabled_at is not null as disabled from app_private.operators where id = $1',
        [id],
      )
      .then(({ rows }) => {
        const row = rows[0];
        const role = OPERATOR_ROLES.find((r) => r === row?.role);
        // false ends the login: a deleted or disabled operator is logged out at their next request.
        if (!row || row.disabled || !role) return done(null, false);
        const operator: ConsoleOperator = { id: row.id, email: row.email, title: row.name || row.email, role: role as OperatorRole };
        return done(null, operator);
      })
      .catch((error: unknown) => done(error));
  });

  const byEmailAndIp = new RateLimiterMemory({ points: limits.perEmailAndIp, duration: limits.windowSeconds });
  const byIp = new RateLimiterMemory({ points: limits.perIp, duration: limits.windowSeconds });
  const limitKey = (req: express.Request) =>
    `${String(req.body?.email ?? '')
      .trim()
      .toLowerCase()}|${req.ip}`;

  async function renderLogin(res: express.Response, status: number, errorMessage: string | null, next: string | null) {
    const action = next ? `${loginPath}?next=${encodeURIComponent(next)}` : loginPath;
    const html = await options.renderLogin({ action, errorMessage });
    res.status(status).type('html').send(html);
  }

  const production = config.NODE_ENV === 'production';
  const sessionMaxAgeMs = options.sessionMaxAgeMs ?? 12 * 60 * 60 * 1000;
  const publicOrigin = config.PUBLIC_URL ? new URL(config.PUBLIC_URL).origin : null;

  /**
   * State-changing requests only from the console's own origin: this
   * request's scheme and host (as `trust proxy` lets Express see them), or
   * PUBLIC_URL's. Without Origin, Sec-Fetch-Site decides; a client that sends
   * neither is not a browser and carries no one else's cookies.
   */
  const sameOrigin: express.RequestHandler = (req, res, next) => {
    if (SAFE_METHODS.has(req.method)) return next();
    const origin = req.get('origin');
    const site = req.get('sec-fetch-site');
    const own = `${req.protocol}://${req.host}`;
    const allowed = origin !== undefined ? origin === own || origin === publicOrigin : site === undefined || site === 'same-origin' || site === 'none';
    if (allowed) return next();
    log.warn(
      {
        event: 'console_request_refused',
        reason: 'cross_origin',
        method: req.method,
        path: req.originalUrl.split('?')[0],
        origin,
        secFetchSite: site,
        expected: [own, publicOrigin].filter(Boolean),
        ip: req.ip,
      },
      'console request from another origin refused (behind a proxy: set PUBLIC_URL or trust proxy)',
    );
    refused(res, 'CROSS_ORIGIN_REQUEST', "state-changing console requests are accepted only from the console's own pages");
  };

  function csrfToken(req: express.Request): string {
    req.session.csrfToken ??= randomBytes(32).toString('base64url');
    return req.session.csrfToken;
  }

  /** Scripts of the console read it (not HttpOnly); no other site ever needs it (Strict). Like the session cookie, never over plain HTTP in production. */
  function sendCsrfCookie(req: express.Request, res: express.Response): void {
    if (production && !req.secure) return;
    const token = csrfToken(req);
    const sent = req.get('cookie')?.match(/(?:^|;\s*)XSRF-TOKEN=([^;]*)/)?.[1];
    if (sent === token) return;
    res.cookie(CSRF_COOKIE, token, { path: rootPath, httpOnly: false, sameSite: 'strict', secure: production, maxAge: sessionMaxAgeMs });
  }

  const router = express.Router();
  router.use(sameOrigin);
  router.use(
    session({
      name: SESSION_COOKIE,
      secret,
      store,
      resave: false,
      saveUninitialized: false,
      unset: 'destroy',
      cookie: {
        path: rootPath,
        httpOnly: true,
        sameSite: 'lax',
        secure: production,
        maxAge: sessionMaxAgeMs,
      },
    }),
  );
  router.use(authenticator.initialize());
  router.use(authenticator.session());

  router.get('/login', (req, res, next) => {
    const returnTo = safeReturnPath(rootPath, req.query.next);
    if (req.user) return res.redirect(303, returnTo ?? rootPath);
    renderLogin(res, 200, null, returnTo).catch(next);
  });

  router.post('/login', express.urlencoded({ extended: false, limit: '8kb' }), (req, res, next) => {
    const returnTo = safeReturnPath(rootPath, req.query.next);
    const email = loggableEmail(req.body?.email);
    void (async () => {
      const [emailState, ipState] = await Promise.all([byEmailAndIp.get(limitKey(req)), byIp.get(req.ip ?? '')]);
      if ((emailState?.consumedPoints ?? 0) >= limits.perEmailAndIp || (ipState?.consumedPoints ?? 0) >= limits.perIp) {
        const retryAfter = Math.ceil(Math.max(emailState?.msBeforeNext ?? 0, ipState?.msBeforeNext ?? 0) / 1000);
        log.warn({ event: 'console_login_refused', reason: 'rate_limited', email, ip: req.ip, retryAfter }, 'console login refused: too many failed attempts');
        res.setHeader('Retry-After', String(retryAfter));
        return renderLogin(res, 429, `Too many failed logins. Try again in ${Math.ceil(retryAfter / 60)} minutes.`, returnTo);
      }
      if (typeof req.body?.email !== 'string' || typeof req.body?.password !== 'string' || !req.body.email || !req.body.password) {
        return failed('missing_fields');
      }
      authenticator.authenticate('local', (error: unknown, user: { id: string } | false, info?: { message?: string }) => {
        if (error) return next(error);
        if (!user) return void failed((info?.message as FailureReason | undefined) ?? 'wrong_password').catch(next);
        // passport 0.7 regenerates the session here: the id an attacker may have planted is discarded.
        req.logIn(user, (loginError) => {
          if (loginError) return next(loginError);
          void byEmailAndIp.delete(limitKey(req));
          // The session was regenerated: a new session, a new token.
          sendCsrfCookie(req, res);
          log.info({ event: 'console_login', operatorId: user.id, ip: req.ip }, 'operator logged in to the console');
          res.redirect(303, returnTo ?? rootPath);
        });
      })(req, res, next);
    })().catch(next);

    async function failed(reason: FailureReason) {
      await Promise.all([byEmailAndIp.penalty(limitKey(req), 1), byIp.penalty(req.ip ?? '', 1)]);
      log.warn({ event: 'console_login_failed', reason, email, ip: req.ip }, 'console login failed');
      await renderLogin(res, 401, 'invalidCredentials', returnTo);
    }
  });

  const logout: express.RequestHandler = (req, res, next) => {
    const operatorId = (req.user as ConsoleOperator | undefined)?.id;
    req.logOut((error) => {
      if (error) return next(error);
      // logOut left a fresh, empty session behind; remove it and the cookie too.
      req.session.destroy((destroyError) => {
        if (destroyError) return next(destroyError);
        res.clearCookie(SESSION_COOKIE, { path: rootPath, httpOnly: true, sameSite: 'lax', secure: production });
        res.clearCookie(CSRF_COOKIE, { path: rootPath, sameSite: 'strict', secure: production });
        if (operatorId) log.info({ event: 'console_logout', operatorId }, 'operator logged out of the console');
        res.redirect(303, loginPath);
      });
    });
  };
  router.get('/logout', logout);
  router.post('/logout', logout);

  const requireOperator: express.RequestHandler = (req, res, next) => {
    const operator = req.user as ConsoleOperator | undefined;
    if (operator) {
      if (SAFE_METHODS.has(req.method)) {
        // Sessions from before the token existed get one at their next page or API read.
        sendCsrfCookie(req, res);
      } else if (!sameToken(req.get(CSRF_HEADER), csrfToken(req))) {
        log.warn(
          { event: 'console_request_refused', reason: 'csrf_token', method: req.method, path: req.originalUrl.split('?')[0], operatorId: operator.id, ip: req.ip },
          'console request without the session CSRF token refused',
        );
        return refused(res, 'CSRF_TOKEN_INVALID', "reload the console page and try again (the request lacks this session's CSRF token)");
      }
      // @adminjs/express reads the current admin from req.session.adminUser. Non-enumerable: it is
      // handed to AdminJS for this request only and never stored in the session row.
      Object.defineProperty(req.session, 'adminUser', { value: operator, enumerable: false, configurable: true, writable: true });
      return next();
    }
    const page = req.method === 'GET' && !req.path.startsWith('/api/') && !req.path.startsWith('/frontend/');
    const returnTo = page ? safeReturnPath(rootPath, `${rootPath}${req.url === '/' ? '' : req.url}`) : null;
    // AdminJS's frontend notices API calls that end on the login page and sends the browser there.
    res.redirect(302, returnTo && returnTo !== rootPath ? `${loginPath}?next=${encodeURIComponent(returnTo)}` : loginPath);
  };

  return {
    router,
    requireOperator,
    close: async () => {
      await store.close();
    },
  };
}
