// Stand-in for the real CognObserve app: the web process (the real one is a
// Next.js server). It serves GET /api/health with the design's JSON by really
// querying PostgreSQL, Redis, Temporal and the ingest service, and a tiny
// landing page at /. Listens on $HOSTNAME:$PORT (default 0.0.0.0:3000).
'use strict';
const http = require('http');
const { Pool } = require('pg');
const Redis = require('ioredis');
const { Connection } = require('@temporalio/client');

const PORT = Number(process.env.PORT || 3000);
const HOST = process.env.HOSTNAME || '0.0.0.0';
const INGEST_URL = process.env.INGEST_HEALTH_URL || 'http://127.0.0.1:8080/health';
const TIMEOUT_MS = 1500; // per check: the whole answer stays under cogno's 2 s probe timeout
const log = (...a) => console.log(new Date().toISOString(), 'web:', ...a);

const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: 2, connectionTimeoutMillis: TIMEOUT_MS });
pool.on('error', (err) => log('postgres pool error:', err.message));
const redis = new Redis(process.env.REDIS_URL || 'redis://127.0.0.1:6379', {
  lazyConnect: true, connectTimeout: TIMEOUT_MS, maxRetriesPerRequest: 1, enableOfflineQueue: true,
});
redis.on('error', () => {}); // reported through the health check
let temporal = null; // Connection, made on first use and re-made after a failure

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out`)), TIMEOUT_MS); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const checks = {
  database: async () => { await pool.query('SELECT 1'); },
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
  ingest: () => new Promise((resolve, reject) => {
    const req = http.get(INGEST_URL, { timeout: TIMEOUT_MS }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => {
        let ok = false;
        try { ok = res.statusCode === 200 && JSON.parse(body).status === 'ok'; } catch { /* not JSON */ }
        if (ok) resolve(); else reject(new Error(`ingest answered ${res.statusCode}`));
      });
    });
    req.on('timeout', () => req.destroy(new Error('ingest timed out')));
    req.on('error', reject);
  }),
};

async function health() {
  const names = Object.keys(checks);
  const results = await Promise.all(names.map((n) => withTimeout(checks[n](), n).then(() => 'pass', (err) => {
    log(`health check ${n} failed: ${err.message}`);
    return 'fail';
  })));
  const services = Object.fromEntries(names.map((n, i) => [n, results[i]]));
  return { status: results.every((r) => r === 'pass') ? 'healthy' : 'unhealthy', services };
}

function send(res, code, body, type = 'application/json') {
  res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(type === 'application/json' ? JSON.stringify(body) : body);
}

const server = http.createServer((req, res) => {
  const path = (req.url || '/').split('?')[0];
  if (req.method === 'GET' && path === '/api/health') {
    health().then((h) => send(res, h.status === 'healthy' ? 200 : 503, h), (err) => send(res, 500, { error: err.message }));
  } else if (req.method === 'GET' && path === '/api/auth/providers') {
    // What config/cognobserve.yaml probes: like the real app's NextAuth route,
    // it answers without a session.
    send(res, 200, { credentials: { id: 'credentials', name: 'Credentials', type: 'credentials' } });
  } else if (req.method === 'GET' && path === '/') {
    send(res, 200, '<!doctype html><title>CognObserve (demo)</title><h1>CognObserve demo app</h1>'
      + '<p>This is the stand-in for the real CognObserve web app. See <a href="/api/health">/api/health</a>; '
      + 'send traces to the ingest service on port 8080 (POST /v1/traces).</p>', 'text/html; charset=utf-8');
  } else {
    send(res, 404, { error: 'not found' });
  }
});
server.keepAliveTimeout = 5000;
server.listen(PORT, HOST, () => log(`listening on http://${HOST}:${PORT} (NODE_ENV=${process.env.NODE_ENV || ''})`));

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  log(`${signal} received, shutting down`);
  const hard = setTimeout(() => process.exit(1), 2500);
  hard.unref();
  server.close();
  server.closeAllConnections();
  Promise.allSettled([pool.end(), redis.disconnect(), temporal ? temporal.close() : null])
    .then(() => { log('stopped'); process.exit(0); });
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
