#!/usr/bin/env bash
# The whole test suite: installs what it needs, then Rust unit, property and integration
# tests, then the pytest interop tests against secsgem==0.3.0.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --quiet --bin secsgate
cargo test --quiet
SECSGATE_BIN="$PWD/target/debug/secsgate" .venv/bin/python -m pytest -q python/tests
