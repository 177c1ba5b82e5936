-- Stand-in for the real CognObserve app: its last migration has the same
-- name and does the same: it needs the pgvector extension. As the app's
-- (unprivileged) role this succeeds only when the extension already exists
-- (cogno creates the postgres service's `extensions:` as the superuser);
-- without pgvector on the server it fails: extension "vector" is not available.
CREATE EXTENSION IF NOT EXISTS vector;

-- 1536 dimensions for OpenAI text-embedding-3-small
ALTER TABLE code_chunks
ADD COLUMN IF NOT EXISTS embedding vector(1536);

CREATE INDEX IF NOT EXISTS code_chunks_embedding_idx
ON code_chunks
USING hnsw (embedding vector_cosine_ops)
WITH (m = 16, ef_construction = 64);
