// Stand-in for the real CognObserve app: the activity that stores a trace
// and its spans in "Trace" and "Span", in one transaction (the real one goes
// through the in-process tRPC caller internal.ingestTrace into Prisma).
import { db, transaction } from '@cognobserve/db';

const LEVELS = new Set(['DEBUG', 'DEFAULT', 'WARNING', 'ERROR']);
const jsonOrNull = (v) => (v === undefined || v === null ? null : JSON.stringify(v));

export async function persistTrace(input) {
  console.log(`[Activity:persistTrace] Processing trace: ${input.id} with ${input.spans.length} spans`);
  await transaction(async (c) => {
    await c.query(`INSERT INTO "Trace" (id, "projectId", name, timestamp, metadata) VALUES ($1, $2, $3, $4, $5::jsonb)`,
      [input.id, input.projectId, input.name, new Date(input.timestamp), jsonOrNull(input.metadata)]);
    for (const s of input.spans) {
      await c.query(`INSERT INTO "Span" (id, "traceId", "parentSpanId", name, "startTime", "endTime", input, output, metadata,
          model, "modelParameters", "promptTokens", "completionTokens", "totalTokens", level, "statusMessage")
        VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9::jsonb, $10, $11::jsonb, $12, $13, $14, $15, $16)`,
      [s.id, input.id, s.parentSpanId ?? null, s.name, new Date(s.startTime), s.endTime ? new Date(s.endTime) : null,
        jsonOrNull(s.input), jsonOrNull(s.output), jsonOrNull(s.metadata), s.model ?? null, jsonOrNull(s.modelParameters),
        s.promptTokens ?? null, s.completionTokens ?? null, s.totalTokens ?? null,
        LEVELS.has(String(s.level).toUpperCase()) ? String(s.level).toUpperCase() : 'DEFAULT', s.statusMessage ?? null]);
    }
  });
  console.log(`[Activity:persistTrace] Trace ${input.id} persisted`);
  return input.id;
}

export const pool = db;
