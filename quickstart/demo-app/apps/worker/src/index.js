// Stand-in for the real CognObserve app: the Temporal worker process. It
// needs DATABASE_URL and INTERNAL_API_SECRET (>= 32 characters) like the real
// one, polls $TEMPORAL_TASK_QUEUE (cognobserve-tasks) in $TEMPORAL_NAMESPACE
// on $TEMPORAL_ADDRESS and runs traceWorkflow. The build step copies this
// file to dist/index.js next to the prebundled workflow code.
import '@cognobserve/shared/node-version';
import fs from 'node:fs';
import path from 'node:path';
import util from 'node:util';
import { requireEnv } from '@cognobserve/shared';
import temporalWorker from '@temporalio/worker';
import * as activities from './activities.js';

const { NativeConnection, Worker, Runtime, DefaultLogger } = temporalWorker;
const { pool, ...taskActivities } = activities;
const LEVELS = { trace: 'TRACE', debug: 'DEBUG', info: 'INFO', warn: 'WARN', error: 'ERROR' };
const log = (...a) => console.log(new Date().toISOString(), 'worker:', ...a);

requireEnv('DATABASE_URL');
requireEnv('INTERNAL_API_SECRET', 32);

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

try {
  const bundle = path.join(import.meta.dirname, 'workflow-bundle.js');
  const workflows = fs.existsSync(bundle)
    ? { workflowBundle: { codePath: bundle } }
    : { workflowsPath: path.join(import.meta.dirname, '..', 'src', 'workflows.js') }; // not built: bundle at start (slow)
  const connection = await NativeConnection.connect({ address: process.env.TEMPORAL_ADDRESS || '127.0.0.1:7233' });
  const taskQueue = process.env.TEMPORAL_TASK_QUEUE || 'cognobserve-tasks';
  const worker = await Worker.create({
    connection,
    namespace: process.env.TEMPORAL_NAMESPACE || 'default',
    taskQueue,
    activities: taskActivities,
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
  process.exit(0);
} catch (err) {
  console.error(new Date().toISOString(), 'worker: FAILED:', err);
  process.exit(1);
}
