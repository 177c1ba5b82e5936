// Stand-in for the real CognObserve app: the demo worker's activity, which
// reads the number of stored traces from PostgreSQL.
'use strict';
const { Pool } = require('pg');

const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: 2, connectionTimeoutMillis: 5000 });
pool.on('error', () => {});

async function greet(name) {
  const { rows } = await pool.query('SELECT count(*)::int AS n FROM traces');
  return `hello, ${name} (${rows[0].n} traces stored)`;
}

module.exports = { activities: { greet }, pool };
