// Stand-in for the real CognObserve app: @cognobserve/db. The real package is
// a Prisma 7 client over pg (@prisma/adapter-pg) on DATABASE_URL; this one
// hands out the pg pool itself and Prisma's cuid-style ids.
import { randomBytes } from 'node:crypto';
import pg from 'pg';

if (!process.env.DATABASE_URL) {
  console.error('@cognobserve/db: DATABASE_URL is not set');
  process.exit(1);
}

export const db = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 4, connectionTimeoutMillis: 5000 });
db.on('error', (err) => console.error(new Date().toISOString(), '@cognobserve/db: pool error:', err.message));

let counter = 0;
/** An id shaped like Prisma's @default(cuid()): "c" + 24 lowercase base-36 characters. */
export function cuid() {
  counter = (counter + 1) % 1296;
  const rand = BigInt(`0x${randomBytes(10).toString('hex')}`).toString(36).padStart(16, '0').slice(-16);
  return `c${Date.now().toString(36).padStart(6, '0').slice(-6)}${counter.toString(36).padStart(2, '0')}${rand}`;
}

/** Runs fn(client) in one transaction (Prisma's $transaction). */
export async function transaction(fn) {
  const client = await db.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}
