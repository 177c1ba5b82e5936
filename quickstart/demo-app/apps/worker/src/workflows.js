// Stand-in for the real CognObserve app: its trace workflow, by the real name
// and input (what the ingest service starts), run in the worker's sandbox
// (prebundled at build time into dist/workflow-bundle.js). The real one also
// calculates costs and updates daily summaries after persisting, both
// non-critical; the double only persists.
import { log, proxyActivities } from '@temporalio/workflow';

const { persistTrace } = proxyActivities({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 3 },
});

/** traceWorkflow(TraceWorkflowInput) → {traceId, spanCount, costsCalculated} */
export async function traceWorkflow(input) {
  log.info('Starting trace workflow', { traceId: input.id, projectId: input.projectId, spanCount: input.spans.length });
  const traceId = await persistTrace(input);
  log.info('Trace workflow completed', { traceId, spanCount: input.spans.length });
  return { traceId, spanCount: input.spans.length, costsCalculated: 0 };
}
