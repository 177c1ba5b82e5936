#!/usr/bin/env bash
# Runs a stack in the foreground on a fresh Debian machine, installing what is
# missing first. Ctrl-C (SIGINT) stops it in order.
#   scripts/run-stack.sh                     # the built-in quick-start stack, data in ./data
#   scripts/run-stack.sh --config FILE ...   # any stack file; extra args go to `cogno up`
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --locked --release --quiet
# No arguments: the built-in quick-start stack (PostgreSQL, Redis, Temporal), data in ./data.
exec target/release/cogno up "$@"
