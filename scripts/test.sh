#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs what is missing,
# then format, lint, unit and integration tests (real processes, real servers).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo build --locked --release
cargo test --locked --no-fail-fast
# The quick-start image as a real container (podman through container-sim);
# skips loudly only when container-sim says this machine cannot run containers.
quickstart/test-quickstart.sh
