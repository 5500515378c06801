#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs and starts the services the tests need,
# checks formatting and lints, runs every test (unit, integration, end-to-end, doc tests), and
# stops the services it started.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh install
trap 'scripts/services.sh stop' EXIT
scripts/services.sh start

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# One cargo invocation builds every test target; it also runs the doc tests of every library.
cargo test --workspace --locked
