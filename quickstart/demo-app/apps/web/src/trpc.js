// Stand-in for the real CognObserve app: the tRPC procedures of
// packages/api that the first-trace flow calls, with the real names, inputs,
// outputs and errors, over tRPC v11's HTTP protocol with the superjson
// transformer: POST /api/trpc/<router.procedure> with {"json": input}
// answers {"result":{"data":{"json": output}}}; ?batch=1 takes
// {"0":{"json": …},…} and answers an array; an error is
// {"error":{"json":{"message","code","data":{"code","httpStatus","path"}}}}.
import { db, cuid, transaction } from '@cognobserve/db';
import { generateApiKey, hashApiKey, maskApiKey } from '@cognobserve/shared';

const CODES = {
  BAD_REQUEST: [-32600, 400], UNAUTHORIZED: [-32001, 401], FORBIDDEN: [-32003, 403], NOT_FOUND: [-32004, 404],
  METHOD_NOT_SUPPORTED: [-32005, 405], CONFLICT: [-32009, 409], INTERNAL_SERVER_ERROR: [-32603, 500],
};

export class TRPCError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

// zod-like input checks: each returns an issue message or null.
const str = (min, max, { trim = false, regex = null, msg = null } = {}) => (v) => {
  if (typeof v !== 'string') return 'Invalid input: expected string';
  const s = trim ? v.trim() : v;
  if (s.length < min) return msg?.min ?? `Too small: expected string to have >=${min} characters`;
  if (max && s.length > max) return msg?.max ?? `Too big: expected string to have <=${max} characters`;
  if (regex && !regex.test(s)) return msg?.regex ?? 'Invalid string';
  return null;
};
const optional = (check) => (v) => (v === undefined ? null : check(v));
const datetime = (v) => (typeof v === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/.test(v) ? null : 'Invalid ISO datetime');

function parse(schema, input) {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new TRPCError('BAD_REQUEST', JSON.stringify([{ expected: 'object', code: 'invalid_type', path: [], message: 'Invalid input: expected object' }], null, 2));
  }
  const issues = [];
  const out = {};
  for (const [k, check] of Object.entries(schema)) {
    const m = check(input[k]);
    if (m) issues.push({ code: 'custom', path: [k], message: m });
    else if (input[k] !== undefined) out[k] = typeof input[k] === 'string' && schema[k].trims ? input[k].trim() : input[k];
  }
  if (issues.length) throw new TRPCError('BAD_REQUEST', JSON.stringify(issues, null, 2));
  return out;
}
const trimmed = (check) => Object.assign(check, { trims: true });

// workspaceMiddleware: the caller must be a member of input.workspaceSlug.
async function workspaceAccess(userId, slug) {
  const { rows } = await db.query(`SELECT w.id, w.slug, m.role FROM workspaces w
    JOIN workspace_members m ON m."workspaceId" = w.id AND m."userId" = $1 WHERE w.slug = $2`, [userId, slug]);
  if (!rows.length) throw new TRPCError('FORBIDDEN', "You don't have access to this workspace");
  return rows[0];
}

async function projectInWorkspace(projectId, workspaceId) {
  const { rows } = await db.query('SELECT id FROM "Project" WHERE id = $1 AND "workspaceId" = $2', [projectId, workspaceId]);
  if (!rows.length) throw new TRPCError('NOT_FOUND', 'Project not found in this workspace');
}

const SLUG = /^[a-z0-9][a-z0-9-]*[a-z0-9]$/;

const procedures = {
  'workspaces.create': {
    type: 'mutation',
    input: {
      name: trimmed(str(1, 100, { trim: true, msg: { min: 'Name is required' } })),
      slug: str(3, 50, { regex: SLUG, msg: { min: 'Slug must be at least 3 characters', max: 'Slug must be at most 50 characters',
        regex: 'Slug must be lowercase alphanumeric with hyphens, and cannot start or end with a hyphen' } }),
    },
    async resolve(user, input) {
      try {
        return await transaction(async (c) => {
          const id = cuid();
          await c.query(`INSERT INTO workspaces (id, name, slug, "isPersonal", "updatedAt") VALUES ($1, $2, $3, false, now())`, [id, input.name, input.slug]);
          await c.query(`INSERT INTO workspace_members (id, "userId", "workspaceId", role, "updatedAt") VALUES ($1, $2, $3, 'OWNER', now())`, [cuid(), user.id, id]);
          return { id, name: input.name, slug: input.slug, isPersonal: false, role: 'OWNER' };
        });
      } catch (err) {
        if (err.code === '23505') throw new TRPCError('CONFLICT', 'This workspace slug is already taken');
        throw err;
      }
    },
  },
  'projects.create': {
    type: 'mutation',
    input: { workspaceSlug: str(1), name: str(1, 100) },
    async resolve(user, input) {
      const ws = await workspaceAccess(user.id, input.workspaceSlug);
      const { rows } = await db.query(`INSERT INTO "Project" (id, name, "workspaceId", "updatedAt") VALUES ($1, $2, $3, now())
        RETURNING id, name, "createdAt"`, [cuid(), input.name, ws.id]);
      return { id: rows[0].id, name: rows[0].name, createdAt: rows[0].createdAt.toISOString(), traceCount: 0 };
    },
  },
  'apiKeys.create': {
    type: 'mutation',
    input: {
      workspaceSlug: str(1, 0, { msg: { min: 'Workspace slug is required' } }),
      projectId: str(1, 0, { msg: { min: 'Project ID is required' } }),
      name: trimmed(str(1, 100, { trim: true, msg: { min: 'Name is required', max: 'Name too long' } })),
      expiresAt: optional(datetime),
    },
    async resolve(user, input) {
      const ws = await workspaceAccess(user.id, input.workspaceSlug);
      await projectInWorkspace(input.projectId, ws.id);
      if (input.expiresAt && new Date(input.expiresAt) <= new Date()) throw new TRPCError('BAD_REQUEST', 'Expiration date must be in the future');
      const key = generateApiKey();
      const { rows } = await db.query(`INSERT INTO "ApiKey" (id, "projectId", name, "hashedKey", "displayKey", "createdById", "expiresAt")
        VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, name, "displayKey", "createdAt", "expiresAt"`,
      [cuid(), input.projectId, input.name, hashApiKey(key), maskApiKey(key), user.id, input.expiresAt ? new Date(input.expiresAt) : null]);
      const k = rows[0];
      // The full key is returned this once; only its SHA-256 is stored.
      return { id: k.id, name: k.name, key, displayKey: k.displayKey, createdAt: k.createdAt.toISOString(), expiresAt: k.expiresAt?.toISOString() ?? null };
    },
  },
};

function errorShape(err, path) {
  const code = err instanceof TRPCError ? err.code : 'INTERNAL_SERVER_ERROR';
  const [rpc, httpStatus] = CODES[code];
  const message = err instanceof TRPCError ? err.message : 'Internal server error';
  return { status: httpStatus, body: { error: { json: { message, code: rpc, data: { code, httpStatus, path } } } } };
}

async function call(path, method, user, rawInput, log) {
  const proc = procedures[path];
  try {
    if (!proc) throw new TRPCError('NOT_FOUND', `No procedure found on path "${path}"`);
    if (proc.type === 'mutation' && method !== 'POST') throw new TRPCError('METHOD_NOT_SUPPORTED', `Unsupported ${method}-request to mutation procedure at path "${path}"`);
    if (!user) throw new TRPCError('UNAUTHORIZED', 'You must be logged in');
    const input = parse(proc.input, rawInput && typeof rawInput === 'object' && 'json' in rawInput ? rawInput.json : rawInput);
    const data = await proc.resolve(user, input);
    return { status: 200, body: { result: { data: { json: data } } } };
  } catch (err) {
    if (!(err instanceof TRPCError)) log(`tRPC ${path} failed: ${err.stack || err}`);
    return errorShape(err, path);
  }
}

/** Handles /api/trpc/<paths>; paths may be comma-separated with ?batch=1. */
export async function handleTrpc({ method, paths, batch, body, user, log }) {
  const names = paths.split(',');
  if (!batch) return call(names[0], method, user, body, log);
  const results = await Promise.all(names.map((n, i) => call(n, method, user, body?.[i] ?? body?.[String(i)], log)));
  const status = results.every((r) => r.status === results[0].status) ? results[0].status : 207;
  return { status, body: results.map((r) => r.body) };
}
