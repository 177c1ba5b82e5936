// Stand-in for the real CognObserve app: the web process (the real one is a
// Next.js 16 server on the same port). What it serves, like the real app:
//   - every /api route but /api/auth* and /api/internal* needs a session
//     (the real proxy.ts): 401 {"error":"Unauthorized"} without one;
//   - NextAuth's /api/auth/providers, csrf, session, callback/credentials,
//     signout and the app's POST /api/auth/register;
//   - tRPC at /api/trpc (src/trpc.js): workspaces.create, projects.create,
//     apiKeys.create;
//   - POST /api/internal/validate-key for the ingest service (X-Internal-Secret);
//   - GET /api/health: database, redis, temporal and ingest, really checked.
// Listens on $HOSTNAME:$PORT (default 0.0.0.0:3000).
import '@cognobserve/shared/node-version';
import http from 'node:http';
import { db, cuid, transaction } from '@cognobserve/db';
import { readBody, requireEnv, validateInternalSecret } from '@cognobserve/shared';
import { Connection } from '@temporalio/client';
import { Redis } from 'ioredis';
import { authConfig, cookie, csrfToken, csrfValid, decodeSession, encodeSession, hashPassword, parseCookies, verifyPassword } from './src/auth.js';
import { handleTrpc } from './src/trpc.js';

// The real app's env validation: these stop it at start when missing or short.
const NEXTAUTH_SECRET = requireEnv('NEXTAUTH_SECRET');
const INTERNAL_API_SECRET = requireEnv('INTERNAL_API_SECRET', 32);
requireEnv('JWT_SHARED_SECRET', 32);

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOSTNAME || '0.0.0.0';
const BASE_URL = (process.env.NEXTAUTH_URL || `http://localhost:${PORT}`).replace(/\/+$/, '');
const INGEST_URL = process.env.INGEST_HEALTH_URL || 'http://127.0.0.1:8080/health';
const TIMEOUT_MS = 1500; // per check: the whole answer stays under cogno's 2 s probe timeout
const MAX_BODY = 1024 * 1024;
const STARTED = Date.now();
const log = (...a) => console.log(new Date().toISOString(), 'web:', ...a);
const auth = authConfig(NEXTAUTH_SECRET, BASE_URL);

const redis = new Redis(process.env.REDIS_URL || 'redis://127.0.0.1:6379', {
  lazyConnect: true, connectTimeout: TIMEOUT_MS, maxRetriesPerRequest: 1, enableOfflineQueue: true,
});
redis.on('error', () => {}); // reported through the health check
let temporal = null; // Connection, made on first use and re-made after a failure

// ------------------------------------------------------------------ health ---
function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out`)), TIMEOUT_MS); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const checks = {
  database: async () => { await db.query('SELECT 1'); },
  redis: async () => {
    if (redis.status === 'wait') await redis.connect();
    if ((await redis.ping()) !== 'PONG') throw new Error('unexpected PING reply');
  },
  temporal: async () => {
    try {
      if (!temporal) temporal = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS || '127.0.0.1:7233', connectTimeout: TIMEOUT_MS });
      await temporal.withDeadline(Date.now() + TIMEOUT_MS, () => temporal.workflowService.describeNamespace({
        namespace: process.env.TEMPORAL_NAMESPACE || 'default',
      }));
    } catch (err) {
      const c = temporal; temporal = null;
      if (c) c.close().catch(() => {});
      throw err;
    }
  },
  ingest: async () => {
    const res = await fetch(INGEST_URL, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    await res.body?.cancel();
  },
};

// The real route's shape: status healthy / degraded (the database passes,
// something else fails) / unhealthy (503).
async function health() {
  const names = Object.keys(checks);
  const services = Object.fromEntries(await Promise.all(names.map(async (n) => {
    const start = Date.now();
    try {
      await withTimeout(checks[n](), n);
      return [n, { status: 'pass', latencyMs: Date.now() - start }];
    } catch (err) {
      log(`health check ${n} failed: ${err.message}`);
      return [n, { status: 'fail', error: String(err.message || err) }];
    }
  })));
  const all = names.every((n) => services[n].status === 'pass');
  const status = all ? 'healthy' : services.database.status === 'pass' ? 'degraded' : 'unhealthy';
  return { status, version: '0.1.0', timestamp: new Date().toISOString(), uptime: Math.floor((Date.now() - STARTED) / 1000), services };
}

// ------------------------------------------------------------------ helpers ---
const NO_STORE = { 'cache-control': 'no-store, no-cache, must-revalidate' };

function send(res, code, body, headers = {}) {
  const type = typeof body === 'string' ? 'text/html; charset=utf-8' : 'application/json';
  res.writeHead(code, { 'content-type': type, ...NO_STORE, ...headers });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

function redirect(res, location, headers = {}) {
  res.writeHead(302, { location, ...NO_STORE, ...headers });
  res.end();
}


/** JSON or form-encoded body as an object (NextAuth takes both). */
async function readFields(req) {
  const text = await readBody(req, MAX_BODY);
  if (!text) return {};
  if (String(req.headers['content-type']).includes('application/x-www-form-urlencoded')) return Object.fromEntries(new URLSearchParams(text));
  return JSON.parse(text);
}

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

async function currentUser(cookies) {
  const token = decodeSession(auth, cookies[auth.cookies.session]);
  if (!token) return null;
  const { rows } = await db.query('SELECT id, name, email, image FROM users WHERE id = $1', [token.sub]);
  return rows[0] ? { ...rows[0], exp: token.exp } : null;
}

// ------------------------------------------------------------- /api/auth/* ---
const PROVIDERS = ['credentials', 'google', 'github'];

async function handleAuth(req, res, url, cookies) {
  const action = url.pathname.slice('/api/auth/'.length);
  const method = req.method;

  if (method === 'GET' && action === 'providers') {
    return send(res, 200, Object.fromEntries(PROVIDERS.map((id) => [id, {
      id, name: id === 'credentials' ? 'credentials' : id === 'google' ? 'Google' : 'GitHub', type: id === 'credentials' ? 'credentials' : 'oauth',
      signinUrl: `${BASE_URL}/api/auth/signin/${id}`, callbackUrl: `${BASE_URL}/api/auth/callback/${id}`,
    }])));
  }
  if (method === 'GET' && action === 'csrf') {
    const { token, cookie: fresh } = csrfToken(auth, cookies[auth.cookies.csrf]);
    return send(res, 200, { csrfToken: token }, fresh ? { 'set-cookie': cookie(auth.cookies.csrf, fresh, { secure: auth.secure }) } : {});
  }
  if (method === 'GET' && action === 'session') {
    const user = await currentUser(cookies);
    if (!user) return send(res, 200, {});
    const { rows: workspaces } = await db.query(`SELECT w.id, w.name, w.slug, m.role, w."isPersonal" FROM workspace_members m
      JOIN workspaces w ON w.id = m."workspaceId" WHERE m."userId" = $1 ORDER BY m."createdAt"`, [user.id]);
    return send(res, 200, { user: { name: user.name, email: user.email, image: user.image, id: user.id, workspaces, projects: [] },
      expires: new Date(user.exp * 1000).toISOString() });
  }
  if (method === 'POST' && action === 'register') {
    let b;
    try { b = await readFields(req); } catch { return send(res, 400, { error: 'Invalid JSON' }); }
    const issues = [];
    if (typeof b.name !== 'string' || b.name.length < 2 || b.name.length > 100) issues.push({ path: ['name'], message: 'name must be 2 to 100 characters' });
    if (typeof b.email !== 'string' || !EMAIL.test(b.email)) issues.push({ path: ['email'], message: 'Invalid email address' });
    if (typeof b.password !== 'string' || b.password.length < 8 || b.password.length > 100) issues.push({ path: ['password'], message: 'password must be 8 to 100 characters' });
    if (issues.length) return send(res, 400, { error: 'Validation failed', code: 'VALIDATION_ERROR', details: issues });
    const hashed = await hashPassword(b.password);
    try {
      const user = await transaction(async (c) => {
        const { rows } = await c.query(`INSERT INTO users (id, name, email, password, "updatedAt") VALUES ($1, $2, $3, $4, now())
          RETURNING id, name, email`, [cuid(), b.name, b.email, hashed]);
        return rows[0];
      });
      return send(res, 201, user);
    } catch (err) {
      if (err.code === '23505') return send(res, 409, { error: 'User already exists', code: 'ALREADY_EXISTS' });
      throw err;
    }
  }
  if (method === 'POST' && action === 'callback/credentials') {
    const b = await readFields(req).catch(() => ({}));
    // NextAuth answers with a redirect; with json=true (what its signIn()
    // sends) with {"url": <that redirect>} instead.
    const answer = (location, headers = {}) => (b.json === 'true' || b.json === true
      ? send(res, 200, { url: location }, headers) : redirect(res, location, headers));
    if (!csrfValid(auth, cookies[auth.cookies.csrf], b.csrfToken)) return answer(`${BASE_URL}/login?csrf=true`);
    let user = null;
    if (typeof b.email === 'string' && EMAIL.test(b.email) && typeof b.password === 'string' && b.password) {
      const { rows } = await db.query('SELECT id, name, email, image, password FROM users WHERE email = $1', [b.email]);
      if (rows[0] && await verifyPassword(b.password, rows[0].password)) user = rows[0];
    }
    if (!user) return answer(`${BASE_URL}/login?error=CredentialsSignin&provider=credentials`);
    const { token, expires } = encodeSession(auth, user);
    const callback = typeof b.callbackUrl === 'string' && (b.callbackUrl.startsWith('/') || b.callbackUrl.startsWith(BASE_URL))
      ? new URL(b.callbackUrl, BASE_URL).href : BASE_URL;
    return answer(callback, { 'set-cookie': [cookie(auth.cookies.session, token, { expires, secure: auth.secure }),
      cookie(auth.cookies.callbackUrl, encodeURIComponent(callback), { secure: auth.secure })] });
  }
  if (method === 'POST' && action === 'signout') {
    const b = await readFields(req).catch(() => ({}));
    if (!csrfValid(auth, cookies[auth.cookies.csrf], b.csrfToken)) return redirect(res, `${BASE_URL}/login?csrf=true`);
    const gone = cookie(auth.cookies.session, '', { maxAge: 0, secure: auth.secure });
    return b.json === 'true' ? send(res, 200, { url: `${BASE_URL}/login` }, { 'set-cookie': gone }) : redirect(res, `${BASE_URL}/login`, { 'set-cookie': gone });
  }
  return send(res, 400, { error: `This action with HTTP ${method} is not supported by NextAuth.js` });
}

// ------------------------------------------------------------ /api/internal ---
async function validateKey(req, res) {
  if (!validateInternalSecret(req.headers['x-internal-secret'], INTERNAL_API_SECRET)) {
    log('invalid internal API secret attempt');
    return send(res, 401, { valid: false, error: 'Unauthorized' });
  }
  let b;
  try { b = JSON.parse(await readBody(req, MAX_BODY)); } catch { return send(res, 401, { valid: false, error: 'Invalid JSON' }); }
  if (typeof b?.hashedKey !== 'string' || !/^[a-f0-9]{64}$/i.test(b.hashedKey)) return send(res, 401, { valid: false, error: 'Invalid hash format' });
  const { rows } = await db.query('SELECT id, "projectId", "expiresAt" FROM "ApiKey" WHERE "hashedKey" = $1', [b.hashedKey]);
  const key = rows[0];
  if (!key || (key.expiresAt && key.expiresAt < new Date())) return send(res, 401, { valid: false, error: 'Invalid or expired API key' });
  log(`API key validated: key ${key.id}, project ${key.projectId}`);
  return send(res, 200, { valid: true, projectId: key.projectId });
}

// ------------------------------------------------------------------- pages ---
const page = (title, body) => `<!doctype html><meta charset="utf-8"><title>${title} · CognObserve (double)</title><h1>${title}</h1>${body}`;

// ------------------------------------------------------------------ router ---
async function handle(req, res) {
  const url = new URL(req.url || '/', 'http://localhost');
  const path = url.pathname;
  const cookies = parseCookies(req.headers.cookie);

  if (path.startsWith('/api/auth/')) return handleAuth(req, res, url, cookies);
  if (path.startsWith('/api/internal')) {
    if (req.method === 'POST' && path === '/api/internal/validate-key') return validateKey(req, res);
    return send(res, 404, { error: 'Not found' });
  }
  if (path === '/login' || path === '/register') {
    const user = await currentUser(cookies);
    if (user) return redirect(res, `${BASE_URL}/`);
    return send(res, 200, page(path === '/login' ? 'Log in' : 'Register',
      '<p>The CognObserve double has no UI: use the HTTP API (quickstart/first-trace.py).</p>'));
  }
  const user = await currentUser(cookies);
  if (path.startsWith('/api')) {
    if (!user) return send(res, 401, { error: 'Unauthorized' });
    if (req.method === 'GET' && path === '/api/health') {
      const h = await health();
      return send(res, h.status === 'unhealthy' ? 503 : 200, h);
    }
    if (path.startsWith('/api/trpc/')) {
      let body;
      if (req.method === 'POST') {
        try { body = JSON.parse((await readBody(req, MAX_BODY)) || '{}'); } catch {
          return send(res, 400, { error: { json: { message: 'Invalid JSON', code: -32700, data: { code: 'PARSE_ERROR', httpStatus: 400 } } } });
        }
      } else {
        try { body = url.searchParams.has('input') ? JSON.parse(url.searchParams.get('input')) : undefined; } catch { body = undefined; }
      }
      const r = await handleTrpc({ method: req.method, paths: decodeURIComponent(path.slice('/api/trpc/'.length)),
        batch: url.searchParams.get('batch') === '1', body, user, log });
      return send(res, r.status, r.body);
    }
    return send(res, 404, { error: 'Not found' });
  }
  if (!user) return redirect(res, `${BASE_URL}/login?callbackUrl=${encodeURIComponent(path)}`);
  return send(res, 200, page('CognObserve', `<p>Logged in as ${user.email.replace(/[<>&"]/g, '')}. This is the stand-in for the real web app: `
    + 'send traces to the ingest service (POST /v1/traces with X-API-Key).</p>'));
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    log(`${req.method} ${req.url} failed: ${err.stack || err.message}`);
    if (!res.headersSent) send(res, err.status || 500, { error: err.status ? err.message : 'Internal server error', code: 'INTERNAL_ERROR' });
  });
});
server.keepAliveTimeout = 5000;
server.listen(PORT, HOST, () => log(`listening on http://${HOST}:${PORT} (NODE_ENV=${process.env.NODE_ENV || ''}, NEXTAUTH_URL=${BASE_URL})`));

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  log(`${signal} received, shutting down`);
  const hard = setTimeout(() => process.exit(1), 2500);
  hard.unref();
  server.close();
  server.closeAllConnections();
  Promise.allSettled([db.end(), redis.disconnect(), temporal ? temporal.close() : null])
    .then(() => { log('stopped'); process.exit(0); });
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
