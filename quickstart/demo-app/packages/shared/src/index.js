// Stand-in for the real CognObserve app: @cognobserve/shared's API-key helpers,
// with the real formats (co_sk_ + base62 of 32 random bytes; stored as the
// SHA-256 hex of the whole key; shown masked as co_sk_...abcd), the
// constant-time check of the X-Internal-Secret header, and what web and
// ingest share besides (the environment check, reading a request body).
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
export const API_KEY_PREFIX = process.env.API_KEY_PREFIX || 'co_sk_';
const RANDOM_BYTES = Number(process.env.API_KEY_RANDOM_BYTES_LENGTH || 32);

function base62(buf) {
  let n = BigInt(`0x${buf.toString('hex') || '0'}`);
  let out = '';
  while (n > 0n) { out = BASE62[Number(n % 62n)] + out; n /= 62n; }
  return out || '0';
}

export const generateApiKey = () => `${API_KEY_PREFIX}${base62(randomBytes(RANDOM_BYTES))}`;
export const hashApiKey = (key) => createHash('sha256').update(key).digest('hex');
export const maskApiKey = (key) => `${API_KEY_PREFIX}...${key.slice(-4)}`;

export function validateInternalSecret(provided, expected) {
  if (!provided || !expected || provided.length !== expected.length) return false;
  return timingSafeEqual(Buffer.from(provided), Buffer.from(expected));
}

/** The real app's env validation (zod): a missing or short secret stops the process at start. */
export function requireEnv(name, minLength = 1) {
  const v = process.env[name];
  if (!v || v.length < minLength) {
    console.error(`❌ Invalid environment variables: ${name} ${v ? `must be at least ${minLength} characters` : 'is required'}`);
    process.exit(1);
  }
  return v;
}

/**
 * A request's body as text. Over maxBytes it rejects with an error whose
 * `status` is 413 and drops the connection (web caps its bodies; the real
 * ingest reads whatever comes, so it passes no cap).
 */
export function readBody(req, maxBytes = Infinity) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > maxBytes) { reject(Object.assign(new Error('body too large'), { status: 413 })); req.destroy(); } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
