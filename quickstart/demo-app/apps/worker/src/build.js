// Stand-in for the real CognObserve app: the worker's build step. It prebundles
// the workflow code (so the worker needs no webpack run at start) and copies
// the worker's sources into dist/.
'use strict';
const fs = require('fs');
const path = require('path');
const { bundleWorkflowCode } = require('@temporalio/worker');

async function build() {
  const src = __dirname;
  const dist = path.join(src, '..', 'dist');
  fs.mkdirSync(dist, { recursive: true });
  const { code } = await bundleWorkflowCode({ workflowsPath: require.resolve('./workflows') });
  fs.writeFileSync(path.join(dist, 'workflow-bundle.js'), code);
  for (const f of ['index.js', 'activities.js']) fs.copyFileSync(path.join(src, f), path.join(dist, f));
  console.log(`build: wrote ${dist}/{index.js,activities.js,workflow-bundle.js} (${code.length} bytes of workflow code)`);
}

build().catch((err) => { console.error('build: FAILED:', err); process.exit(1); });
