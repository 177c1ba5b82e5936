#!/usr/bin/env node
// Stand-in for the real CognObserve app: the `prisma` CLI, reduced to
// `migrate deploy` and `migrate status`, doing what Prisma does with them on
// PostgreSQL, run in packages/db:
//   - reads prisma/migrations/<name>/migration.sql (in name order) and
//     migration_lock.toml (provider must be postgresql);
//   - takes Prisma's advisory lock (pg_advisory_lock(72707369));
//   - keeps Prisma's _prisma_migrations table (same columns; checksum = the
//     SHA-256 hex of migration.sql);
//   - refuses (P3009) while a migration is recorded as failed;
//   - applies each pending migration as one multi-statement script (one
//     implicit transaction, as Prisma's script runs), records it as started,
//     then finished or failed (P3018, with the database's error and code).
// Needs only DATABASE_URL; no network beyond the database, no writes to /app.
import '@cognobserve/shared/node-version';
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';

const LOCK_ID = 72707369;
const RESOLVE = 'Read more about how to resolve migration issues in a production database: https://pris.ly/d/migrate-resolve';
const dir = path.join('prisma', 'migrations');

function die(code, message) {
  console.error(`Error: ${code}\n\n${message}`);
  process.exit(1);
}

const args = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const command = args.slice(0, 2).join(' ');
if (command !== 'migrate deploy' && command !== 'migrate status') {
  console.error(`prisma (CognObserve double): unsupported command "${process.argv.slice(2).join(' ')}"; only "migrate deploy" and "migrate status" exist`);
  process.exit(2);
}
if (!fs.existsSync(path.join('prisma', 'schema.prisma'))) {
  die('P1012', 'Could not find Prisma Schema that is required for this command. Checked: prisma/schema.prisma');
}
const url = process.env.DATABASE_URL;
if (!url) die('P1012', 'error: Environment variable not found: DATABASE_URL.');
const lock = fs.existsSync(path.join(dir, 'migration_lock.toml')) ? fs.readFileSync(path.join(dir, 'migration_lock.toml'), 'utf8') : '';
const provider = (lock.match(/^provider\s*=\s*"([^"]*)"/m) || [])[1];
if (provider && provider !== 'postgresql') {
  die('P3019', `The datasource provider \`postgresql\` specified in your schema does not match the one specified in the migration_lock.toml, \`${provider}\`. Please remove your current migration directory and start a new migration history with prisma migrate dev. Read more: https://pris.ly/d/migrate-provider-switch`);
}

const migrations = fs.existsSync(dir) ? fs.readdirSync(dir, { withFileTypes: true })
  .filter((d) => d.isDirectory() && fs.existsSync(path.join(dir, d.name, 'migration.sql')))
  .map((d) => d.name).sort() : [];

const u = new URL(url);
console.log('Prisma schema loaded from prisma/schema.prisma');
console.log(`Datasource "db": PostgreSQL database "${decodeURIComponent(u.pathname.slice(1))}", schema "${u.searchParams.get('schema') || 'public'}" at "${u.host}"\n`);
console.log(`${migrations.length} migration${migrations.length === 1 ? '' : 's'} found in prisma/migrations\n`);

const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10000 });
try {
  await client.connect();
} catch (err) {
  die('P1001', `Can't reach database server at \`${u.host}\`\n\nPlease make sure your database server is running at \`${u.host}\`. (${err.message})`);
}

const fmtTime = (t) => t.toISOString().replace('T', ' ').replace('Z', ' UTC');
try {
  await client.query(`SELECT pg_advisory_lock(${LOCK_ID})`);
  await client.query(`CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
  )`);
  const { rows } = await client.query(`SELECT migration_name, checksum, finished_at, started_at
    FROM "_prisma_migrations" WHERE rolled_back_at IS NULL ORDER BY started_at`);
  const failed = rows.find((r) => !r.finished_at);
  if (failed) {
    die('P3009', `migrate found failed migrations in the target database, new migrations will not be applied. ${RESOLVE}\n`
      + `The \`${failed.migration_name}\` migration started at ${fmtTime(failed.started_at)} failed`);
  }
  const applied = new Map(rows.map((r) => [r.migration_name, r.checksum]));
  const scripts = new Map(migrations.map((m) => [m, fs.readFileSync(path.join(dir, m, 'migration.sql'), 'utf8')]));
  const checksum = (m) => createHash('sha256').update(scripts.get(m)).digest('hex');
  const modified = migrations.filter((m) => applied.has(m) && applied.get(m) !== checksum(m));
  if (modified.length) console.log(`WARNING The following migrations have been modified since they were applied:\n${modified.join('\n')}\n`);
  const pending = migrations.filter((m) => !applied.has(m));

  if (command === 'migrate status') {
    if (pending.length) {
      console.log(`Following migration${pending.length === 1 ? ' has' : 's have'} not yet been applied:\n${pending.join('\n')}`);
      process.exit(1);
    }
    console.log('Database schema is up to date!');
    process.exit(0);
  }
  if (!pending.length) {
    console.log('No pending migrations to apply.');
    process.exit(0);
  }
  for (const m of pending) {
    console.log(`Applying migration \`${m}\``);
    const id = randomUUID();
    await client.query(`INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, applied_steps_count)
      VALUES ($1, $2, $3, now(), 0)`, [id, checksum(m), m]);
    try {
      await client.query(scripts.get(m)); // one simple-protocol script: all of it or none of it
    } catch (err) {
      const detail = [`ERROR: ${err.message}`, err.detail && `DETAIL: ${err.detail}`, err.hint && `HINT: ${err.hint}`].filter(Boolean).join('\n');
      await client.query('UPDATE "_prisma_migrations" SET logs = $2 WHERE id = $1', [id, detail]);
      die('P3018', `A migration failed to apply. New migrations cannot be applied before the error is recovered from. ${RESOLVE}\n\n`
        + `Migration name: ${m}\n\nDatabase error code: ${err.code || 'unknown'}\n\nDatabase error:\n${detail}\n`);
    }
    await client.query('UPDATE "_prisma_migrations" SET finished_at = now(), applied_steps_count = 1 WHERE id = $1', [id]);
  }
  console.log('\nThe following migration(s) have been applied:\n\nmigrations/');
  for (const m of pending) console.log(`  └─ ${m}/\n    └─ migration.sql`);
  console.log('\nAll migrations have been successfully applied.');
  process.exit(0);
} catch (err) {
  die('P1017', `Server has closed the connection or failed: ${err.message}`);
}
