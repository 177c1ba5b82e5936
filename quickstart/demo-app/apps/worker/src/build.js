// Stand-in for the real CognObserve app: the worker's build step (the real
// one is `tsc`). It prebundles the workflow code, so the worker needs no
// webpack run at start, and copies the worker's sources into dist/.
import '@cognobserve/shared/node-version';
import fs from 'node:fs';
import path from 'node:path';
import worker from '@temporalio/worker';

const src = import.meta.dirname;
const dist = path.join(src, '..', 'dist');
fs.mkdirSync(dist, { recursive: true });
const { code } = await worker.bundleWorkflowCode({ workflowsPath: path.join(src, 'workflows.js') });
fs.writeFileSync(path.join(dist, 'workflow-bundle.js'), code);
for (const f of ['index.js', 'activities.js']) fs.copyFileSync(path.join(src, f), path.join(dist, f));
console.log(`build: wrote ${dist}/{index.js,activities.js,workflow-bundle.js} (${code.length} bytes of workflow code)`);
