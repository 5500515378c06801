#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs and starts the services the tests need,
# checks formatting and lints, runs every test (unit, integration, end-to-end, doc tests), and
# stops the services it started.
set -euo pipefail
cd "$(dirname "$0")/.."

# rust-toolchain.toml pins Rust 1.95.0. rustup downloads it where it can; on a machine whose
# only toolchain is a stable 1.95.0 and which cannot reach rustup's server, that stable is
# linked under the pinned name instead.
scripts/toolchain.sh

# A clean debug build of the workspace with its test binaries takes about 6 GiB under target/;
# incremental compilation would add another 1.5 GiB that a one-shot run never reuses.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
need_kib=$((8 * 1024 * 1024))
mkdir -p target
free_kib=$(df -Pk target | awk 'NR == 2 { print $4 }')
echo "test.sh: $((free_kib / 1024)) MiB free under $(pwd)/target"
if [ "$free_kib" -lt "$need_kib" ] && [ ! -d target/debug/deps ]; then
  echo "test.sh: warning: a clean build needs about 8 GiB free under target/, only" \
    "$((free_kib / 1024)) MiB is; a 'No space left on device' from rustc below means exactly that" >&2
fi

# Each phase's wall time, printed as it ends (CI's budget is watched phase by phase).
t0=$(date +%s)
phase() { local now; now=$(date +%s); echo "test.sh: $1 took $((now - t0)) s"; t0=$now; }

# The services install and start (network-bound) while the workspace compiles (CPU-bound).
trap 'scripts/services.sh stop' EXIT
(scripts/services.sh install && scripts/services.sh start) >target/services-setup.log 2>&1 &
services_pid=$!

cargo fmt --all --check
# Every crate packages for the registry (manifest, metadata, versions of its path dependencies,
# the files it includes). Building each from its package would compile the dependency tree a
# second time; that check is run by hand before a release (`cargo package --workspace`).
CARGO_TERM_QUIET=true cargo package --workspace --no-verify --exclude-lockfile --allow-dirty
phase "fmt and packaging"

# Clippy lints the workspace's crates while they are compiled for the tests, in the same
# build: clippy-driver is cargo's wrapper for workspace members (what `cargo clippy` does in
# check mode), so the dependencies are compiled once instead of checked once and built once.
# `--all-targets` takes in the benches too (criterion runs each once in test mode) and the
# `-D warnings` of `cargo clippy --workspace --all-targets -- -D warnings` comes through
# CLIPPY_ARGS. The doc tests follow in a second invocation over the same build.
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)"
export RUSTC_WORKSPACE_WRAPPER
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
cargo test --workspace --all-targets --locked --no-run
phase "building every test target, linted by clippy"
if ! wait "$services_pid"; then
  cat target/services-setup.log >&2
  echo "test.sh: installing or starting the services failed (its log is above)" >&2
  exit 1
fi
cat target/services-setup.log
phase "waiting for the services"
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
phase "running the tests and the doc tests"
