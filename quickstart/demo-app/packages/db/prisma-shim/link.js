// Stand-in for the real CognObserve app: links the `prisma` shim where the
// real workspace has Prisma's CLI, packages/db/node_modules/.bin/prisma (what
// `npx prisma` in packages/db runs, and what config/cognobserve.yaml names).
// Run by the root package's postinstall.
import fs from 'node:fs';
import path from 'node:path';

const bin = path.join(import.meta.dirname, '..', 'node_modules', '.bin');
fs.mkdirSync(bin, { recursive: true });
fs.rmSync(path.join(bin, 'prisma'), { force: true });
fs.symlinkSync('../../prisma-shim/cli.js', path.join(bin, 'prisma'));
fs.chmodSync(path.join(import.meta.dirname, 'cli.js'), 0o755);
console.log(`linked ${path.join(bin, 'prisma')} -> ../../prisma-shim/cli.js`);
