-- Stand-in for the real CognObserve app: its last migration has this name and
-- the same need, the pgvector extension. The app's role is no superuser, so
-- this passes only when the extension exists already (cogno creates the
-- postgres service's `extensions:` as the superuser), and fails on a server
-- without pgvector: extension "vector" is not available.
create extension if not exists vector;

alter table code_chunks add column if not exists embedding vector(1536);
-- An HNSW index, as the app builds: pgvector older than 0.5 has none.
create index if not exists code_chunks_embedding_hnsw on code_chunks using hnsw (embedding vector_cosine_ops);
