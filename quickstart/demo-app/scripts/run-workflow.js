#!/usr/bin/env node
// Stand-in for the real CognObserve app: runs the demo workflow through the
// worker and prints its result. Inside the quick-start container:
//   podman exec cognobserve node /app/scripts/run-workflow.js [NAME]
// Env (defaults): TEMPORAL_ADDRESS (127.0.0.1:7233), TEMPORAL_NAMESPACE
// (default), TEMPORAL_TASK_QUEUE (cognobserve-tasks).
'use strict';
const { Connection, Client } = require('@temporalio/client');

async function main() {
  const connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS || '127.0.0.1:7233' });
  try {
    const client = new Client({ connection, namespace: process.env.TEMPORAL_NAMESPACE || 'default' });
    const workflowId = `demo-${Date.now()}`;
    const result = await client.workflow.execute('demoWorkflow', {
      taskQueue: process.env.TEMPORAL_TASK_QUEUE || 'cognobserve-tasks',
      workflowId,
      args: [process.argv[2] || 'world'],
      workflowExecutionTimeout: '30 seconds',
    });
    console.log(`${workflowId}: ${result}`);
  } finally {
    await connection.close();
  }
}

main().catch((err) => { console.error('run-workflow: FAILED:', err.message); process.exit(1); });
