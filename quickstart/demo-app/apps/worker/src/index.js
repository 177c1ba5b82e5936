// Stand-in for the real CognObserve app: the Temporal worker process. It polls
// $TEMPORAL_TASK_QUEUE (cognobserve-tasks) in $TEMPORAL_NAMESPACE on
// $TEMPORAL_ADDRESS and runs demoWorkflow. The build step copies this file to
// dist/index.js next to the prebundled workflow code (dist/workflow-bundle.js).
'use strict';
const fs = require('fs');
const path = require('path');
const util = require('util');
const { NativeConnection, Worker, Runtime, DefaultLogger } = require('@temporalio/worker');
const { activities, pool } = require('./activities');

const LEVELS = { trace: 'TRACE', debug: 'DEBUG', info: 'INFO', warn: 'WARN', error: 'ERROR' };
const log = (...a) => console.log(new Date().toISOString(), 'worker:', ...a);

async function main() {
  // Signals are handled below (worker.shutdown()), not by the SDK's runtime.
  // One line per SDK log entry; its metadata only at LOG_LEVEL=debug/trace.
  const level = LEVELS[String(process.env.LOG_LEVEL).toLowerCase()] || 'INFO';
  const verbose = level === 'DEBUG' || level === 'TRACE';
  Runtime.install({
    logger: new DefaultLogger(level, ({ level: l, message, meta }) => {
      const extra = verbose && meta ? ` ${util.inspect(meta, { depth: 3, breakLength: Infinity })}`
        : meta && meta.state ? `: ${meta.state}` : '';
      (l === 'ERROR' || l === 'WARN' ? console.error : console.log)(`${new Date().toISOString()} worker: [${l}] ${message}${extra}`);
    }),
    shutdownSignals: [],
  });
  const bundle = path.join(__dirname, 'workflow-bundle.js');
  const workflows = fs.existsSync(bundle)
    ? { workflowBundle: { codePath: bundle } }
    : { workflowsPath: require.resolve('../src/workflows') }; // not built: bundle at start (slow)
  const connection = await NativeConnection.connect({ address: process.env.TEMPORAL_ADDRESS || '127.0.0.1:7233' });
  const taskQueue = process.env.TEMPORAL_TASK_QUEUE || 'cognobserve-tasks';
  const worker = await Worker.create({
    connection,
    namespace: process.env.TEMPORAL_NAMESPACE || 'default',
    taskQueue,
    activities,
    ...workflows,
  });

  let stopping = false;
  const stop = (signal) => {
    if (stopping) return;
    stopping = true;
    log(`${signal} received, shutting down`);
    setTimeout(() => process.exit(1), 2500).unref();
    try { worker.shutdown(); } catch (err) { log(`shutdown: ${err.message}`); }
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  log(`polling task queue ${taskQueue} (${workflows.workflowBundle ? 'prebundled workflows' : 'bundling workflows at start'})`);
  await worker.run();
  await connection.close();
  await pool.end();
  log('stopped');
}

main().then(() => process.exit(0), (err) => {
  console.error(new Date().toISOString(), 'worker: FAILED:', err);
  process.exit(1);
});
