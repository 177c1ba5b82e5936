// Stand-in for the real CognObserve app: the demo Temporal workflow. It runs in
// the worker's workflow sandbox (bundled at build time into dist/).
'use strict';
const { proxyActivities } = require('@temporalio/workflow');

const { greet } = proxyActivities({ startToCloseTimeout: '10 seconds' });

/** demoWorkflow(name) → "hello, NAME (N traces stored)" */
async function demoWorkflow(name = 'world') {
  return await greet(String(name));
}

module.exports = { demoWorkflow };
