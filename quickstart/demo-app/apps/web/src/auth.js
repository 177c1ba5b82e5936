// Stand-in for the real CognObserve app: what NextAuth v4 does for it (JWT
// session strategy, credentials provider, pages.signIn = /login), with
// NextAuth's paths, cookie names and token format: the session cookie is a
// JWE (dir + A256GCM, key derived from NEXTAUTH_SECRET by HKDF as NextAuth
// v4 does), the CSRF cookie "token|sha256(token + secret)". Passwords are
// hashed with scrypt here (the real app: bcrypt, cost 12).
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes, randomUUID, scrypt, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';

const scryptAsync = promisify(scrypt);
const SESSION_MAX_AGE = 7 * 24 * 60 * 60; // the real app's session.maxAge

export function authConfig(secret, baseUrl) {
  const secure = baseUrl.startsWith('https://');
  return {
    secret,
    baseUrl,
    secure,
    cookies: {
      session: `${secure ? '__Secure-' : ''}next-auth.session-token`,
      csrf: `${secure ? '__Host-' : ''}next-auth.csrf-token`,
      callbackUrl: `${secure ? '__Secure-' : ''}next-auth.callback-url`,
    },
    key: Buffer.from(hkdfSync('sha256', secret, '', 'NextAuth.js Generated Encryption Key', 32)),
  };
}

const b64u = (buf) => Buffer.from(buf).toString('base64url');

export function encodeSession(cfg, user) {
  const now = Math.floor(Date.now() / 1000);
  const payload = { name: user.name, email: user.email, picture: user.image ?? null, sub: user.id, id: user.id,
    iat: now, exp: now + SESSION_MAX_AGE, jti: randomUUID() };
  const header = b64u(JSON.stringify({ alg: 'dir', enc: 'A256GCM' }));
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', cfg.key, iv);
  cipher.setAAD(Buffer.from(header, 'ascii'));
  const ct = Buffer.concat([cipher.update(JSON.stringify(payload)), cipher.final()]);
  return { token: `${header}..${b64u(iv)}.${b64u(ct)}.${b64u(cipher.getAuthTag())}`, expires: new Date((now + SESSION_MAX_AGE) * 1000) };
}

/** The token's payload, or null if it is missing, forged, or expired. */
export function decodeSession(cfg, token) {
  try {
    const [header, encKey, iv, ct, tag] = String(token || '').split('.');
    if (encKey !== '' || !tag) return null;
    const h = JSON.parse(Buffer.from(header, 'base64url'));
    if (h.alg !== 'dir' || h.enc !== 'A256GCM') return null;
    const d = createDecipheriv('aes-256-gcm', cfg.key, Buffer.from(iv, 'base64url'));
    d.setAAD(Buffer.from(header, 'ascii'));
    d.setAuthTag(Buffer.from(tag, 'base64url'));
    const p = JSON.parse(Buffer.concat([d.update(Buffer.from(ct, 'base64url')), d.final()]));
    return p.exp * 1000 > Date.now() && p.sub ? p : null;
  } catch {
    return null;
  }
}

const csrfHash = (cfg, token) => createHash('sha256').update(`${token}${cfg.secret}`).digest('hex');

/** The CSRF token from a valid cookie, or a new one (with the cookie value to set). */
export function csrfToken(cfg, cookieValue) {
  const [token, hash] = String(cookieValue || '').split('|');
  if (token && hash === csrfHash(cfg, token)) return { token, cookie: null };
  const fresh = randomBytes(32).toString('hex');
  return { token: fresh, cookie: `${fresh}|${csrfHash(cfg, fresh)}` };
}

export function csrfValid(cfg, cookieValue, bodyToken) {
  const [token, hash] = String(cookieValue || '').split('|');
  return !!token && hash === csrfHash(cfg, token) && bodyToken === token;
}

export async function hashPassword(password) {
  const salt = randomBytes(16);
  const hash = await scryptAsync(password, salt, 64);
  return `scrypt$${salt.toString('hex')}$${hash.toString('hex')}`;
}

export async function verifyPassword(password, stored) {
  const [kind, salt, hash] = String(stored || '').split('$');
  if (kind !== 'scrypt' || !salt || !hash) return false;
  const got = await scryptAsync(password, Buffer.from(salt, 'hex'), 64);
  return timingSafeEqual(got, Buffer.from(hash, 'hex'));
}

export function cookie(name, value, { maxAge, expires, httpOnly = true, secure = false } = {}) {
  let c = `${name}=${value}; Path=/; SameSite=Lax`;
  if (httpOnly) c += '; HttpOnly';
  if (secure) c += '; Secure';
  if (expires) c += `; Expires=${expires.toUTCString()}`;
  if (maxAge !== undefined) c += `; Max-Age=${maxAge}`;
  return c;
}

export function parseCookies(header) {
  const out = {};
  for (const part of String(header || '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = decodeURIComponent(part.slice(i + 1).trim());
  }
  return out;
}
