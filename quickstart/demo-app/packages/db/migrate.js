#!/usr/bin/env node
// Stand-in for the real CognObserve app: the database migration. The real app
// runs Prisma migrations; this demo creates the one table it uses, `traces`,
// idempotently, so running it on every start is safe.
'use strict';
const { Client } = require('pg');

const MIGRATIONS = [
  ['0001_traces', `CREATE TABLE IF NOT EXISTS traces (
     id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
     created_at timestamptz NOT NULL DEFAULT now(),
     body jsonb NOT NULL)`],
];

async function main() {
  if (!process.env.DATABASE_URL) {
    console.error('migrate: DATABASE_URL is not set');
    process.exit(1);
  }
  const client = new Client({ connectionString: process.env.DATABASE_URL, connectionTimeoutMillis: 10000 });
  try {
    await client.connect();
    await client.query(`CREATE TABLE IF NOT EXISTS _demo_migrations (
      name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`);
    let applied = 0;
    for (const [name, sql] of MIGRATIONS) {
      await client.query('BEGIN');
      const done = await client.query('SELECT 1 FROM _demo_migrations WHERE name = $1 FOR UPDATE', [name]);
      if (done.rowCount === 0) {
        await client.query(sql);
        await client.query('INSERT INTO _demo_migrations (name) VALUES ($1) ON CONFLICT DO NOTHING', [name]);
        applied++;
        console.log(`migrate: applied ${name}`);
      }
      await client.query('COMMIT');
    }
    console.log(applied ? `migrate: ${applied} migration(s) applied` : 'migrate: no pending migrations, database is up to date');
    await client.end();
  } catch (err) {
    console.error(`migrate: FAILED: ${err.message}`);
    await client.end().catch(() => {});
    process.exit(1);
  }
}

module.exports = { main };
if (require.main === module) main();
