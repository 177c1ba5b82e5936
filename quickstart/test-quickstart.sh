#!/usr/bin/env bash
# The quick-start image's integration test, as a real container (podman via
# ../shared/tools/container-sim; there is no Docker engine here):
#
#   build the stand-in app image and the quick-start image; run it like
#   `docker run -d -p 3000:3000 -p 8080:8080 -v VOLUME:/data`; the app's
#   first-trace flow as a user does it (quickstart/first-trace.py: register,
#   log in, workspace, project, API key, POST /v1/traces → 202) and the
#   trace stored by the worker in "Trace"/"Span"; wait for its HEALTHCHECK;
#   /api/health 401 without a session and healthy with one; ingest answers
#   401 to a missing or bad key; the trace's workflow completed; `cogno
#   status` inside; no FATAL or ERROR line in the first start's output; stop
#   like `docker stop` (exits 0 in time, PostgreSQL shut down cleanly); run
#   again on the same volume (trace, key and workflow history kept, secrets
#   unchanged byte for byte, no recovery); then /data on a host folder owned
#   by another uid and on a read-only folder: clear errors.
#   Issue 12: a volume made by the previous image (PostgreSQL 15, Debian 12,
#   built from QS_PREV_REF) is upgraded to 17 on the new image's first start;
#   the image runs with no network at all (--network=none).
#
# Prints the figures for docs/performance.md. Cleans up its containers,
# volume and folders. Skips (loudly, exit 0) only when container-sim says
# this machine cannot run containers.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
sim=${CONTAINER_SIM:-$repo/../shared/tools/container-sim}
[ -x "$sim" ] || sim=/work/shared/tools/container-sim
tag=$$
# QS_TAG lets two runs on one machine (say, two worktrees) keep their images apart.
app_image=localhost/cognobserve-app:${QS_TAG:-test}
image=localhost/cognobserve:${QS_TAG:-test}
name=cogno-qs-$tag
volume=cogno-qs-vol-$tag
work=$(mktemp -d /tmp/cogno-qs.XXXXXX)
# The native servers' users (postgres, redis) must reach $work/native.
chmod 0711 "$work"
run_pid=""
failures=0
passes=0

log() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; failures=$((failures + 1)); }
ok() { printf 'ok: %s\n' "$*"; passes=$((passes + 1)); }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

cleanup() {
  set +e
  podman rm -f "$name" "$name-2" "$name-3" "$name-r" "$name-uid" "$name-ro" >/dev/null 2>&1
  cleanup_image_checks
  [ -n "$run_pid" ] && kill "$run_pid" 2>/dev/null
  [ -x "${cogno:-}" ] && "$cogno" down --config "$work/native.yaml" --data "$work/native" >/dev/null 2>&1
  podman volume rm -f "$volume" "$volume-r" >/dev/null 2>&1
  mountpoint -q "$work/ro-mnt" 2>/dev/null && umount "$work/ro-mnt"
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ------------------------------------ issue 12: upgrade and network checks ---
# (Their own functions, run near the end; the app-flow checks above and below
# are independent of them.)
# The previous image: the last one on PostgreSQL 15 and Debian 12, built from
# that commit's own tree (its Dockerfile, config and demo app).
prev_ref=${QS_PREV_REF:-a76cac7}
prev_image=localhost/cognobserve-prev:${QS_TAG:-test}
prev_app_image=localhost/cognobserve-app-prev:${QS_TAG:-test}

cleanup_image_checks() {
  podman rm -f "$name-prev" "$name-up" "$name-rb" "$name-prev2" "$name-nonet" >/dev/null 2>&1
  podman volume rm -f "$volume-15" "$volume-nonet" >/dev/null 2>&1
}

# psql inside container $1 as the app, on its database: the query $2.
psql_in() {
  # shellcheck disable=SC2016 # expanded in the container
  podman exec "$1" sh -c 'eval "$(cogno env)" && psql "$DATABASE_URL" -qtAc "$0"' "$2"
}

# A volume made the way the previous image made it, by that image itself: a
# cluster created by Debian 12's PostgreSQL 15 (built with ICU, unlike the
# PyPI build of 15 the new image upgrades it with), the previous app's
# migrations, its secrets. A marker row goes in; then the new image starts
# on it as `docker run` would, with its own COGNO_PG_UPGRADE=auto.
upgrade_from_previous_image() {
  local vol_dir=/var/lib/containers/storage/volumes/$volume-15/_data secrets_15 t_up marker
  log "a volume of the previous image ($prev_ref: PostgreSQL 15, Debian 12), upgraded on the new image's first start"
  rm -rf "$work/prev" && mkdir "$work/prev"
  git -C "$repo" archive "$prev_ref" | tar -x -C "$work/prev"
  if ! { "$sim" build --file "$work/prev/quickstart/demo-app/Dockerfile" --tag "$prev_app_image" \
    "$work/prev/quickstart/demo-app" &&
    "$sim" build --file "$work/prev/Dockerfile.quickstart" --tag "$prev_image" --build-arg "APP_IMAGE=$prev_app_image" \
      --build-arg RUST_IMAGE=rust:1-bookworm --build-arg DEBIAN_IMAGE=debian:bookworm-slim \
      --build-arg "COGNO_COMMIT=$(git -C "$repo" rev-parse --short=12 "$prev_ref")" "$work/prev"; } >"$work/prev-build.log" 2>&1; then
    fail "building the previous image ($prev_ref)"; tail -30 "$work/prev-build.log"; return
  fi
  "$sim" run --image "$prev_image" --name "$name-prev" --data "$volume-15" >"$work/$name-prev.log" 2>&1 &
  run_pid=$!
  if ! "$sim" health --timeout 240 "$name-prev"; then
    fail "the previous image never became healthy"; tail -30 "$work/$name-prev.log"
    "$sim" stop --time 10 "$name-prev" >/dev/null; wait_exit; return
  fi
  psql_in "$name-prev" "CREATE TABLE qs_upgrade_marker (note text); INSERT INTO qs_upgrade_marker VALUES ('made by the PostgreSQL 15 image')"
  "$sim" stop --time 10 "$name-prev" >/dev/null
  wait_exit
  [ "$status" = 0 ] && [ "$(cat "$vol_dir/postgresql/PG_VERSION")" = 15 ] &&
    ok "the previous image made a PostgreSQL $(cat "$vol_dir/postgresql/PG_VERSION") volume and stopped" ||
    fail "the previous image's volume: exit $status, PG_VERSION $(cat "$vol_dir/postgresql/PG_VERSION" 2>&1)"
  secrets_15=$(sha256sum <"$vol_dir/secrets/.env")

  t_up=$(now)
  start "$name-up" "$volume-15"
  if "$sim" health --timeout 300 "$name-up"; then
    upgrade_time=$(since "$t_up")
    ok "the new image is healthy on the PostgreSQL 15 volume ${upgrade_time}s after run"
  else
    fail "the new image never became healthy on the PostgreSQL 15 volume"; tail -40 "$work/$name-up.log"
  fi
  grep -Eq 'cogno upgrade: PostgreSQL 15 → 17[.0-9]* done' "$work/$name-up.log" &&
    ok "its log: $(grep -Em1 'cogno upgrade: PostgreSQL 15 → 17[.0-9]* done' "$work/$name-up.log" | cut -c1-110)…" ||
    { fail "no 'PostgreSQL 15 → 17 done' in the log"; grep -i upgrade "$work/$name-up.log" | head -20; }
  [ "$(cat "$vol_dir/postgresql/PG_VERSION")" = 17 ] && ok "PG_VERSION is 17" ||
    fail "PG_VERSION is $(cat "$vol_dir/postgresql/PG_VERSION")"
  [ "$(cat "$vol_dir/postgresql-15.old/PG_VERSION" 2>&1)" = 15 ] &&
    ok "the old cluster is kept in /data/postgresql-15.old" || fail "no /data/postgresql-15.old"
  compgen -G "$vol_dir/backups/postgresql-before-upgrade-*.tar.zst" >/dev/null &&
    ok "the backup: $(cd "$vol_dir" && ls backups/postgresql-before-upgrade-*.tar.zst) ($(du -h "$vol_dir"/backups/postgresql-before-upgrade-*.tar.zst | cut -f1 | head -1))" ||
    fail "no backup in /data/backups"
  marker=$(psql_in "$name-up" "SELECT note FROM qs_upgrade_marker" 2>&1)
  [ "$marker" = "made by the PostgreSQL 15 image" ] && ok "the marker row is there" || fail "the marker row: $marker"
  [ "$(psql_in "$name-up" "SELECT extname FROM pg_extension WHERE extname = 'vector'")" = vector ] &&
    ok "extension vector exists in the upgraded app database" || fail "no extension vector after the upgrade"
  [ "$(sha256sum <"$vol_dir/secrets/.env")" = "$secrets_15" ] &&
    ok "secrets unchanged byte for byte across the upgrade" || fail "the secrets changed in the upgrade"
  podman exec "$name-up" cogno status >/dev/null && ok "cogno status after the upgrade (exit 0: ready)" ||
    fail "cogno status after the upgrade"
  "$sim" stop --time 10 "$name-up" >/dev/null
  wait_exit
  [ "$status" = 0 ] && ok "stopped: exit 0" || fail "stop after the upgrade: exit status $status"

  # The rollback docs/self-hosting/upgrading.md gives: the new image puts the
  # 15 cluster back, then the previous image runs on the volume again.
  if "$sim" run --image "$image" --name "$name-rb" --data "$volume-15" -- upgrade postgres --rollback \
    >"$work/$name-rb.log" 2>&1; then
    ok "upgrade postgres --rollback with the new image"
  else
    fail "upgrade postgres --rollback:"; cat "$work/$name-rb.log"; return
  fi
  "$sim" run --image "$prev_image" --name "$name-prev2" --data "$volume-15" >"$work/$name-prev2.log" 2>&1 &
  run_pid=$!
  if "$sim" health --timeout 240 "$name-prev2"; then
    marker=$(psql_in "$name-prev2" "SELECT note FROM qs_upgrade_marker" 2>&1)
    [ "$marker" = "made by the PostgreSQL 15 image" ] && [ "$(cat "$vol_dir/postgresql/PG_VERSION")" = 15 ] &&
      ok "the previous image runs on the rolled-back volume (PostgreSQL 15, marker row there)" ||
      fail "after the rollback: marker $marker, PG_VERSION $(cat "$vol_dir/postgresql/PG_VERSION")"
  else
    fail "the previous image is not healthy on the rolled-back volume"; tail -30 "$work/$name-prev2.log"
  fi
  "$sim" stop --time 10 "$name-prev2" >/dev/null
  wait_exit
}

# No network at all (`--network=none`: a loopback device only, no published
# ports): everything, the migrations included, runs from what is in the
# image and the volume. Checked through `podman exec`.
network_none() {
  local t_nonet migrations
  log "no network: --network=none"
  t_nonet=$(now)
  "$sim" run --image "$image" --name "$name-nonet" --data "$volume-nonet" --opt --network=none \
    >"$work/$name-nonet.log" 2>&1 &
  run_pid=$!
  if "$sim" health --timeout 240 "$name-nonet"; then
    ok "healthy without a network $(since "$t_nonet")s after run"
  else
    fail "not healthy without a network"; tail -40 "$work/$name-nonet.log"
  fi
  [ "$(podman exec "$name-nonet" ls /sys/class/net)" = lo ] && ok "its only network device is lo" ||
    fail "network devices: $(podman exec "$name-nonet" ls /sys/class/net | tr '\n' ' ')"
  podman exec "$name-nonet" cogno status >/dev/null && ok "cogno status (exit 0: ready)" || fail "cogno status without network"
  # Whichever migrations table the app keeps (Prisma's, or the demo app's own).
  migrations=$(psql_in "$name-nonet" "SELECT (SELECT count(*) FROM pg_tables WHERE tablename IN ('_prisma_migrations', '_demo_migrations')) || ' ' || (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')" 2>&1)
  [ "${migrations%% *}" -ge 1 ] 2>/dev/null && [ "${migrations##* }" -ge 2 ] &&
    ok "the migrations ran (migrations table, ${migrations##* } tables in public)" || fail "migrations: $migrations"
  [ "$(psql_in "$name-nonet" "SELECT extversion FROM pg_extension WHERE extname = 'vector'")" != "" ] &&
    ok "extension vector $(psql_in "$name-nonet" "SELECT extversion FROM pg_extension WHERE extname = 'vector'") in the app's database" ||
    fail "no extension vector in the app's database"
  podman exec --user cognobserve "$name-nonet" sh -c 'touch /app/.qs-write-test' 2>/dev/null &&
    fail "the app's user can write /app" || ok "the app's user cannot write /app (the migrations did not need to)"
  "$sim" stop --time 10 "$name-nonet" >/dev/null
  wait_exit
  [ "$status" = 0 ] && ok "stopped: exit 0" || fail "stop without network: exit status $status"
}

# ---------------------------------------------------------------- setup ---
log "container-sim setup"
if ! "$sim" setup >"$work/setup.log" 2>&1; then
  cat "$work/setup.log"
  printf '\n%s\n' "################################################################" \
    "SKIPPED: container-sim reports this machine cannot run containers;" \
    "the quick-start image was NOT tested. See the output above." \
    "################################################################"
  exit 0
fi

log "build the stand-in app image ($app_image)"
"$sim" build --file "$repo/quickstart/demo-app/Dockerfile" --tag "$app_image" "$repo/quickstart/demo-app"

log "build the quick-start image ($image)"
# container-sim makes its base images locally and resolves tags only: the
# Dockerfile's digest-pinned defaults are given as the tags they pin.
"$sim" build --file "$repo/Dockerfile.quickstart" --tag "$image" --build-arg "APP_IMAGE=$app_image" \
  --build-arg RUST_IMAGE=rust:1-bookworm --build-arg DEBIAN_IMAGE=debian:trixie-slim \
  --build-arg "COGNO_COMMIT=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" "$repo"
size=$(podman image inspect "$image" --format '{{.Size}}')
app_size=$(podman image inspect "$app_image" --format '{{.Size}}')
printf 'image size: %s MB in all, %s MB without the app layer\n' \
  "$((size / 1000000))" "$(((size - app_size) / 1000000))"

web_port=$(free_port)
ingest_port=$(free_port)

# Starts the image like `docker run -d`, output to $work/$1.log.
start() {
  local cname=$1 data=$2
  "$sim" run --image "$image" --name "$cname" --data "$data" \
    --publish "127.0.0.1:$web_port:3000" --publish "127.0.0.1:$ingest_port:8080" \
    >"$work/$cname.log" 2>&1 &
  run_pid=$!
}

# Writes to $work/NAME.ready the seconds from T0 (a `now`) until the
# container NAME's cogno logs `stack is ready` (the worker polling its queue
# included): the figure the HEALTHCHECK, polled once a second, rounds up.
time_ready() {
  local cname=$1 t0=$2
  (for _ in $(seq 1 3600); do
    if grep -q 'stack is ready' "$work/$cname.log" 2>/dev/null; then
      since "$t0" >"$work/$cname.ready"
      exit 0
    fi
    sleep 0.05
  done) &
}

# Waits for the container started by `start` to exit; sets $status.
# (Not in a $(…) subshell: only this shell can wait for its own children.)
wait_exit() {
  status=0
  wait "$run_pid" || status=$?
  run_pid=""
}

curl_json() { curl -sS --max-time 10 "$@"; }

# psql as the app, inside container $1: the value(s) of query $2, unaligned.
app_sql() {
  # shellcheck disable=SC2016 # expanded in the container
  podman exec "$1" sh -c 'eval "$(cogno env)" && psql "$DATABASE_URL" -tAc "$0"' "$2" 2>&1
}

# Waits up to $3 s until trace $2's row (name|span count) is in container $1's "Trace".
wait_trace() {
  local row
  for _ in $(seq 1 $(($3 * 5))); do
    row=$(app_sql "$1" "SELECT t.name || '|' || count(s.id) FROM \"Trace\" t LEFT JOIN \"Span\" s ON s.\"traceId\" = t.id WHERE t.id = '$2' GROUP BY t.id")
    [ "$row" = "first-trace|1" ] && return 0
    sleep 0.2
  done
  echo "$row"
  return 1
}

# Logs in like NextAuth's signIn("credentials") with curl's cookie jar $1.
login() {
  local jar=$1 csrf
  csrf=$(curl -sf --max-time 10 -c "$jar" -b "$jar" "http://127.0.0.1:$web_port/api/auth/csrf" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["csrfToken"])') || return 1
  curl -sf --max-time 10 -c "$jar" -b "$jar" "http://127.0.0.1:$web_port/api/auth/callback/credentials" \
    --data-urlencode "csrfToken=$csrf" --data-urlencode "email=$email" --data-urlencode "password=$password" \
    --data-urlencode json=true | grep -qv 'error='
}

# -------------------------------------------------------------- first run ---
log "first run on a fresh volume"
t_run=$(now)
start "$name" "$volume"
time_ready "$name" "$t_run"
# The app's flow as a user does it, once web and ingest answer (web starts
# after migrate); then the worker stores the trace.
for _ in $(seq 1 1200); do
  curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$web_port/api/auth/providers" &&
    curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$ingest_port/health" && break
  kill -0 "$run_pid" 2>/dev/null || break
  sleep 0.1
done
flow=""
for _ in 1 2 3; do
  flow=$(python3 "$here/first-trace.py" "http://127.0.0.1:$web_port" "http://127.0.0.1:$ingest_port" 2>"$work/flow.err") && break
  flow=""
  sleep 2
done
[ -n "$flow" ] || { fail "the first-trace flow: $(cat "$work/flow.err")"; tail -50 "$work/$name.log"; exit 1; }
field() { python3 -c "import json, sys; v = json.loads(sys.argv[1])[sys.argv[2]]; print(v if isinstance(v, str) else json.dumps(v))" "$flow" "$1"; }
trace_id=$(field trace_id)
workflow_id=$(field workflow_id)
api_key=$(field api_key)
email=$(field email)
password=$(field password)
ok "first-trace flow: register, log in, workspace, project, API key, POST /v1/traces → 202 $(field span_ids) (trace $trace_id)"
if row=$(wait_trace "$name" "$trace_id" 30); then
  first_trace=$(since "$t_run")
  ok "first trace $trace_id stored (\"Trace\" + 1 \"Span\") by the worker ${first_trace}s after run"
else
  fail "trace $trace_id not stored in \"Trace\": $row"; tail -50 "$work/$name.log"; exit 1
fi

"$sim" health --timeout 180 "$name" && ok "HEALTHCHECK (cogno healthcheck) passes" || fail "HEALTHCHECK never passed"
out=$(curl -sS --max-time 10 -w ' %{http_code}' "http://127.0.0.1:$web_port/api/health")
[ "$out" = '{"error":"Unauthorized"} 401' ] && ok "/api/health without a session: $out" || fail "/api/health without a session: $out"
if login "$work/cookies"; then
  health=$(curl_json -b "$work/cookies" "http://127.0.0.1:$web_port/api/health")
  grep -q '"status":"healthy"' <<<"$health" && ok "/api/health with a session: $health" || fail "/api/health with a session: $health"
else
  fail "logging in again as $email"
fi
curl_json "http://127.0.0.1:$ingest_port/health" | grep -q '"status":"ok"' && ok "ingest /health ok" || fail "ingest /health"
trace_body='{"name":"first-trace","spans":[{"name":"s"}]}'
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST -d "$trace_body" "http://127.0.0.1:$ingest_port/v1/traces")
[ "$code" = 401 ] && ok "POST /v1/traces without a key: 401" || fail "POST /v1/traces without a key: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST -H "X-API-Key: co_sk_$(printf '0%.0s' $(seq 1 43))" \
  -d "$trace_body" "http://127.0.0.1:$ingest_port/v1/traces")
[ "$code" = 401 ] && ok "POST /v1/traces with a bad key: 401" || fail "POST /v1/traces with a bad key: $code"
podman exec "$name" temporal workflow describe --address 127.0.0.1:7233 -w "$workflow_id" 2>&1 | grep -qi 'completed' \
  && ok "workflow $workflow_id (traceWorkflow) completed in the worker" || fail "workflow $workflow_id did not complete"

podman exec "$name" cogno status && ok "cogno status inside the container (exit 0: ready)" || fail "cogno status"

# Issue 15.2: a normal first start shows no FATAL or ERROR line, from any
# bundled server, the app or cogno.
if bad=$(grep -E 'FATAL|ERROR' "$work/$name.log"); then
  fail "the first start printed FATAL/ERROR lines:"$'\n'"$bad"
else
  ok "the first start printed no FATAL or ERROR line"
fi

# No server runs as root, and Temporal runs as its own user, not the app's.
owners=""
for svc in postgres redis temporal; do
  pid=$(podman exec "$name" cogno status --json | python3 -c \
    "import json, sys; print(next(s['pid'] for s in json.load(sys.stdin)['services'] if s['name'] == '$svc'))")
  owners+="$svc=$(podman exec "$name" stat -c %U "/proc/$pid") "
done
[ "$owners" = "postgres=postgres redis=redis temporal=temporal " ] \
  && ok "each bundled server runs as its own user: $owners" || fail "bundled servers' users: $owners"

# Memory as `docker stats` reports it: the cgroup's usage less its inactive
# file cache (pages PostgreSQL wrote and the kernel may drop at any time).
container_memory() {
  local id dir usage inactive
  id=$(podman inspect --format '{{.Id}}' "$1")
  dir=$(find /sys/fs/cgroup/memory /sys/fs/cgroup -maxdepth 5 -type d -name "*$id*" 2>/dev/null | head -n1)
  [ -n "$dir" ] || { echo "?"; return; }
  if [ -f "$dir/memory.usage_in_bytes" ]; then
    usage=$(cat "$dir/memory.usage_in_bytes")
    inactive=$(awk '$1 == "total_inactive_file" { print $2 }' "$dir/memory.stat")
  else
    usage=$(cat "$dir/memory.current")
    inactive=$(awk '$1 == "inactive_file" { print $2 }' "$dir/memory.stat")
  fi
  printf '%d MB (cgroup usage %d MB less %d MB inactive file cache)' \
    $(((usage - inactive) / 1000000)) $((usage / 1000000)) $((inactive / 1000000))
}
sleep 5
mem=$(container_memory "$name")
printf 'idle memory (container cgroup): %s\n' "$mem"

secrets_file=/var/lib/containers/storage/volumes/$volume/_data/secrets/.env
secrets_before=$(sha256sum "$secrets_file" | cut -d' ' -f1)

log "stop like docker stop (SIGTERM, 10 s grace)"
t_stop=$(now)
"$sim" stop --time 10 "$name" >/dev/null
wait_exit
stop_time=$(since "$t_stop")
[ "$status" = 0 ] && ok "exited 0 in ${stop_time}s" || fail "exit status $status after ${stop_time}s (137: it had to be killed)"
grep -q 'database system is shut down' "$work/$name.log" && ok "PostgreSQL shut down cleanly" \
  || fail "no clean PostgreSQL shutdown in the log"

# ------------------------------------------------------------- second run ---
log "second run on the same volume"
t_run=$(now)
start "$name-2" "$volume"
time_ready "$name-2" "$t_run"
"$sim" health --timeout 180 "$name-2" && warm=$(since "$t_run") && ok "healthy again after ${warm}s" \
  || { fail "not healthy on the second run"; tail -50 "$work/$name-2.log"; }
wait_trace "$name-2" "$trace_id" 1 >/dev/null && ok "trace $trace_id is still there" || fail "trace $trace_id was lost"
if out=$(curl -sS --max-time 10 -X POST -H "X-API-Key: $api_key" -H 'content-type: application/json' \
  -d '{"name":"first-trace","spans":[{"name":"after-restart"}]}' "http://127.0.0.1:$ingest_port/v1/traces") &&
  id2=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["trace_id"])' <<<"$out" 2>/dev/null) &&
  wait_trace "$name-2" "$id2" 30 >/dev/null; then
  ok "the API key still works after the restart: trace $id2 stored"
else
  fail "a trace after the restart: $out"
fi
podman exec "$name-2" temporal workflow describe --address 127.0.0.1:7233 -w "$workflow_id" >/dev/null 2>&1 \
  && ok "workflow $workflow_id history is still there" || fail "workflow $workflow_id history was lost"
[ "$(sha256sum "$secrets_file" | cut -d' ' -f1)" = "$secrets_before" ] \
  && ok "secrets file unchanged byte for byte" || fail "secrets file changed"
if grep -Eq 'redo starts|not properly shut down|automatic recovery|was interrupted' "$work/$name-2.log"; then
  fail "PostgreSQL ran recovery on the second start"
else
  ok "no recovery in PostgreSQL's log"
fi
# A Redis key for the archive round trip below (the demo app keeps none that a test can name).
# shellcheck disable=SC2016 # expanded in the container
podman exec "$name-2" sh -c 'REDISCLI_AUTH=$(sed -n "s/^REDIS_PASSWORD=//p" /data/secrets/.env) \
  redis-cli SET qs-archive-key "kept across image and native"' >/dev/null
mkdir -m 0700 "$work/arch"
if archive=$(podman exec "$name-2" cogno backup --to /data/backups 2>"$work/backup.err") &&
  [ "${archive%.tar.zst}" != "$archive" ]; then
  ok "cogno backup inside the running container: $archive"
  cp "/var/lib/containers/storage/volumes/$volume/_data/${archive#/data/}" "$work/arch/image.tar.zst"
else
  fail "cogno backup inside the container: $(cat "$work/backup.err")"
fi
"$sim" stop --time 10 "$name-2" >/dev/null
wait_exit
[ "$status" = 0 ] && ok "second stop: exit 0" || fail "second stop: exit status $status"

# ------------------------------------------- image archive <-> native cogno ---
# Issue 11: an archive from the image restores into a native `cogno up`, and
# the other way round. Natively the stack is the bundled servers alone (the
# app is the image's), on free ports, as this machine's users.
log "the image's archive restored natively, and a native archive into the image"
cogno=$repo/target/release/cogno
[ -x "$cogno" ] || cogno=$repo/target/debug/cogno
native=$work/native
# The image runs PostgreSQL 17 with pgvector and Redis 8, and its archive
# needs them (a PG17 dump does not load into 15; Redis 7 cannot read Redis 8's
# RDB format 12): natively, the PostgreSQL 17 with pgvector and the Redis 8
# that scripts/install-deps.sh installs.
pg17_bin=${PG17_HOME:-/opt/postgresql-17}/bin
redis8=${REDIS8_HOME:-/opt/redis-8}/bin/redis-server
printf 'services:\n  postgres: {kind: postgres, port: %s, bin_dir: %s, extensions: [vector]}\n  redis: {kind: redis, port: %s, bin: %s}\n  temporal: {kind: temporal, port: %s, ui_port: %s}\n' \
  "$(free_port)" "$pg17_bin" "$(free_port)" "$redis8" "$(free_port)" "$(free_port)" >"$work/native.yaml"
native_env() {
  "$cogno" env --json --config "$work/native.yaml" --data "$native" |
    python3 -c "import json, sys; print(json.load(sys.stdin)['env']['$1'])"
}
if "$cogno" restore "$work/arch/image.tar.zst" --config "$work/native.yaml" --data "$native" >"$work/native-restore.log" 2>&1 &&
  "$cogno" up --detach --config "$work/native.yaml" --data "$native" >"$work/native-up.log" 2>&1; then
  ok "the image's archive restored natively, and the stack up"
  db=$(native_env DATABASE_URL)
  [ "$(psql "$db" -tAc "SELECT name FROM \"Trace\" WHERE id = '$trace_id'")" = first-trace ] &&
    ok "natively: trace $trace_id is there" || fail "natively: trace $trace_id is missing"
  [ "$(REDISCLI_AUTH=$(native_env REDIS_PASSWORD) redis-cli -u "$(native_env REDIS_URL)" GET qs-archive-key 2>/dev/null)" = "kept across image and native" ] &&
    ok "natively: the Redis key is there" || fail "natively: the Redis key is missing"
  temporal workflow describe --address "$(native_env TEMPORAL_ADDRESS)" -w "$workflow_id" >/dev/null 2>&1 &&
    ok "natively: workflow $workflow_id history is there" || fail "natively: workflow $workflow_id history is missing"
  [ "$(sha256sum <"$native/secrets/.env")" = "$(sha256sum <"$secrets_file")" ] &&
    ok "natively: the secrets byte for byte" || fail "natively: the secrets differ"
  psql "$db" -qc "CREATE TABLE native_marker (note text); INSERT INTO native_marker VALUES ('written natively')"
  "$cogno" backup --to "$work/arch/native.tar.zst" --config "$work/native.yaml" --data "$native" >/dev/null 2>"$work/native-backup.err" &&
    ok "a native backup" || fail "native backup: $(cat "$work/native-backup.err")"
else
  fail "the image's archive, natively:"
  cat "$work/native-restore.log" "$work/native-up.log"
fi
"$cogno" down --config "$work/native.yaml" --data "$native" >/dev/null 2>&1 || true

if "$sim" run --image "$image" --name "$name-r" --data "$volume-r" --opt "--volume=$work/arch:/arch:ro" \
  -- restore /arch/native.tar.zst --data /data >"$work/$name-r.log" 2>&1; then
  ok "the native archive restored by the image into a fresh volume"
  start "$name-3" "$volume-r"
  "$sim" health --timeout 180 "$name-3" && ok "the image is healthy on it" || fail "not healthy on the restored volume"
  wait_trace "$name-3" "$trace_id" 1 >/dev/null &&
    ok "trace $trace_id is there after image -> native -> image" || fail "trace $trace_id was lost on the way"
  [ "$(app_sql "$name-3" "SELECT note FROM native_marker")" = "written natively" ] &&
    ok "the row written natively is in the image" || fail "the row written natively is not in the image"
  [ "$(sha256sum <"/var/lib/containers/storage/volumes/$volume-r/_data/secrets/.env")" = "$(sha256sum <"$secrets_file")" ] &&
    ok "the secrets byte for byte after image -> native -> image" || fail "the secrets differ after the round trip"
  "$sim" stop --time 10 "$name-3" >/dev/null
  wait_exit
else
  fail "the native archive, restored by the image:"
  cat "$work/$name-r.log"
fi

# ---------------------------------------------------------- bad data dirs ---
# Expects the container to exit non-zero by itself with an error naming /data.
expect_refusal() {
  local cname=$1 data=$2 what=$3
  start "$cname" "$data"
  for _ in $(seq 1 600); do kill -0 "$run_pid" 2>/dev/null || break; sleep 0.2; done
  podman rm -f "$cname" >/dev/null 2>&1 || true
  wait_exit
  if [ "$status" != 0 ] && grep -q '/data' "$work/$cname.log" && grep -qi 'help' "$work/$cname.log"; then
    ok "$what: refused with exit $status: $(grep -m1 'error' "$work/$cname.log")"
  else
    fail "$what: exit $status"; cat "$work/$cname.log"
  fi
}

log "a host folder owned by another uid"
mkdir -m 0700 "$work/other-uid"
chown 12345:12345 "$work/other-uid"
expect_refusal "$name-uid" "$work/other-uid" "folder of uid 12345 (0700)"

log "a read-only folder"
mkdir "$work/ro" "$work/ro-mnt"
mount --bind "$work/ro" "$work/ro-mnt"
mount -o remount,ro,bind "$work/ro-mnt"
expect_refusal "$name-ro" "$work/ro-mnt" "read-only folder"

upgrade_from_previous_image
network_none

log "figures"
printf 'time to ready (cold volume):       %ss\n' "$(cat "$work/$name.ready" 2>/dev/null || echo '?')"
printf 'time to ready (warm volume):       %ss\n' "$(cat "$work/$name-2.ready" 2>/dev/null || echo '?')"
printf 'time to first trace (cold volume): %ss\n' "$first_trace"
printf 'time to healthy (warm volume):     %ss\n' "${warm:-?}"
printf 'docker stop to exit:               %ss\n' "$stop_time"
printf 'idle memory:                       %s\n' "$mem"
printf 'healthy on a PG 15 volume (upgrade): %ss\n' "${upgrade_time:-?}"

printf '\nquickstart: %s passed, %s failed\n' "$passes" "$failures"
[ "$failures" -eq 0 ]
