#!/usr/bin/env bash
# Install the peer supervisors measured by bench/core.sh. Idempotent: installs only
# what is missing. Run as root on Debian bookworm.
#
#   supervisord  Debian `supervisor`
#   s6           Debian `s6`            (s6-svscan, s6-supervise, s6-log)
#   runit        Debian `runit`         (runsvdir, runsv)
#   tini         Debian `tini`
#   horust       crates.io, 0.1.14      (cargo install into $BENCH_CACHE/cargo)
#   pm2          npm                    (into $BENCH_CACHE/npm)
#   gcc, python3 for the helpers (flood.c, fixtures)
set -euo pipefail

BENCH_CACHE=${BENCH_CACHE:-/var/cache/cogno-bench}
HORUST_VERSION=${HORUST_VERSION:-0.1.14}
mkdir -p "$BENCH_CACHE"

log() { printf '[install-peers] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------
need_apt=()
for pair in supervisor:supervisord s6:s6-svscan runit:runsvdir tini:tini gcc:gcc python3:python3 procps:pgrep; do
    pkg=${pair%%:*} bin=${pair#*:}
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        need_apt+=("$pkg")
    fi
done
if ((${#need_apt[@]})); then
    log "apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends; policy-rc.d keeps the packages' own supervisord/runit
    # services from being started by the postinst scripts (there is no init here).
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
else
    log "Debian packages present"
fi

# --- horust (crates.io) ----------------------------------------------------
HORUST_ROOT="$BENCH_CACHE/cargo"
if [ -x "$HORUST_ROOT/bin/horust" ]; then
    log "horust present"
else
    command -v cargo >/dev/null || { log "cargo not found; install rustup first"; exit 1; }
    log "cargo install horust --version $HORUST_VERSION --locked --root $HORUST_ROOT"
    CARGO_TARGET_DIR="$BENCH_CACHE/cargo-target" \
        cargo install horust --version "$HORUST_VERSION" --locked --root "$HORUST_ROOT"
fi

# --- pm2 (npm, local prefix) -----------------------------------------------
PM2_PREFIX="$BENCH_CACHE/npm"
if [ -x "$PM2_PREFIX/bin/pm2" ]; then
    log "pm2 present"
else
    command -v npm >/dev/null || { log "npm not found: apt-get install nodejs npm"; exit 1; }
    log "npm install -g pm2 --prefix $PM2_PREFIX"
    npm install -g pm2 --prefix "$PM2_PREFIX" --no-audit --no-fund --loglevel=error
fi

log "done; peers:"
{
    echo "supervisord $(supervisord --version)"
    echo "s6 $(dpkg-query -W -f='${Version}' s6)"
    echo "runit $(dpkg-query -W -f='${Version}' runit)"
    echo "tini $(tini --version | awk '{print $3}')"
    echo "horust $(cargo install --list --root "$HORUST_ROOT" 2>/dev/null | awk '/^horust/ {print $2}' | tr -d v:)"
    echo "pm2 $("$PM2_PREFIX/bin/pm2" --version 2>/dev/null | tail -1)"
} >&2
