-- Stand-in for the real CognObserve app: the tables its first-trace flow
-- touches, under the names the app uses (the auth tables in snake_case, the
-- rest in Prisma's quoted PascalCase), with only the columns the double reads
-- or writes. Ids are cuid-like text, times timestamp(3), as Prisma makes them.

create type "WorkspaceRole" as enum ('OWNER', 'ADMIN', 'MEMBER');
create type "SpanLevel" as enum ('DEBUG', 'DEFAULT', 'WARNING', 'ERROR');

create table users (
  id text primary key,
  name text,
  email text not null unique,
  "emailVerified" timestamp(3),
  password text,
  image text,
  "createdAt" timestamp(3) not null default current_timestamp,
  "updatedAt" timestamp(3) not null
);

create table workspaces (
  id text primary key,
  name text not null,
  slug text not null unique,
  "isPersonal" boolean not null default false,
  "createdAt" timestamp(3) not null default current_timestamp,
  "updatedAt" timestamp(3) not null
);

create table workspace_members (
  id text primary key,
  "userId" text not null references users (id) on delete cascade on update cascade,
  "workspaceId" text not null references workspaces (id) on delete cascade on update cascade,
  role "WorkspaceRole" not null default 'MEMBER',
  "createdAt" timestamp(3) not null default current_timestamp,
  "updatedAt" timestamp(3) not null,
  unique ("userId", "workspaceId")
);
create index on workspace_members ("workspaceId");

create table "Project" (
  id text primary key,
  name text not null,
  "workspaceId" text not null references workspaces (id) on delete cascade on update cascade,
  "createdAt" timestamp(3) not null default current_timestamp,
  "updatedAt" timestamp(3) not null
);
create index on "Project" ("workspaceId");

-- The key itself is never stored: its SHA-256 (hashedKey) and a masked form.
create table "ApiKey" (
  id text primary key,
  "projectId" text not null references "Project" (id) on delete cascade on update cascade,
  name text not null default 'Default',
  "hashedKey" text not null unique,
  "displayKey" text not null,
  "createdById" text,
  "createdAt" timestamp(3) not null default current_timestamp,
  "lastUsedAt" timestamp(3),
  "expiresAt" timestamp(3)
);
create index on "ApiKey" ("projectId");

create table "Trace" (
  id text primary key,
  "projectId" text not null references "Project" (id) on delete cascade on update cascade,
  "sessionId" text,
  "userId" text,
  name text not null,
  timestamp timestamp(3) not null default current_timestamp,
  metadata jsonb
);
create index on "Trace" ("projectId", timestamp desc);

create table "Span" (
  id text primary key,
  "traceId" text not null references "Trace" (id) on delete cascade on update cascade,
  "parentSpanId" text,
  name text not null,
  "startTime" timestamp(3) not null,
  "endTime" timestamp(3),
  input jsonb,
  output jsonb,
  metadata jsonb,
  model text,
  "modelParameters" jsonb,
  "promptTokens" integer,
  "completionTokens" integer,
  "totalTokens" integer,
  level "SpanLevel" not null default 'DEFAULT',
  "statusMessage" text
);
create index on "Span" ("traceId", "startTime");

-- What the app's pgvector migration extends (its repository index).
create table code_chunks (
  id text primary key,
  "repoId" text not null,
  "filePath" text not null,
  content text not null,
  "createdAt" timestamp(3) not null default current_timestamp
);
create index on code_chunks ("repoId");
