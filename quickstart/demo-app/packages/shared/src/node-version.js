// Stand-in for the real CognObserve app: the real app's dependencies (Next.js
// 16, Prisma 7, its engines field) need Node.js 24; so does this double, so
// that an image with an older Node fails here as the real one would.
// Imported first by every entry point.
const REQUIRED_MAJOR = 24;
const major = Number(process.versions.node.split('.')[0]);
if (!(major >= REQUIRED_MAJOR)) {
  console.error(`CognObserve needs Node.js >= ${REQUIRED_MAJOR} (package.json engines.node ">=${REQUIRED_MAJOR}.0.0"); `
    + `this is Node.js ${process.version} (${process.execPath}). Install Node.js ${REQUIRED_MAJOR} or newer.`);
  process.exit(1);
}
