#!/usr/bin/env bash
# Runs a stack in the foreground on a fresh Debian machine, installing what is
# missing first. Ctrl-C (SIGINT) stops it in order.
#   scripts/run-stack.sh                     # the example stack in config/example.yaml
#   scripts/run-stack.sh --config FILE ...   # any stack file; extra args go to `cogno up`
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo build --locked --release --quiet
if [ "$#" -eq 0 ]; then set -- --config config/example.yaml; fi
exec target/release/cogno up "$@"
