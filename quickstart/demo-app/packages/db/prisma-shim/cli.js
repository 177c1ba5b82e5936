#!/usr/bin/env node
// Stand-in for the real CognObserve app: a tiny `prisma` CLI shim so that the
// stack's `npx --no-install prisma migrate deploy` (in /app/packages/db) runs
// the demo migration. Only `migrate deploy` (and `migrate status`) are known.
'use strict';
const args = process.argv.slice(2).filter((a) => !a.startsWith('-'));
if (args[0] !== 'migrate' || !['deploy', 'status', undefined].includes(args[1])) {
  console.error(`prisma (CognObserve demo shim): unsupported command "${process.argv.slice(2).join(' ')}"; only "migrate deploy" exists`);
  process.exit(2);
}
require('../migrate.js').main();
