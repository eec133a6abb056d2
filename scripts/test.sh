#!/usr/bin/env bash
# The whole test suite: installs what it needs, then Rust unit, property and integration
# tests, then the pytest interop tests against secsgem==0.3.0, with a PostgreSQL server of its
# own for the store's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# A PostgreSQL server for the store's tests (tests/postgres.rs, test_postgres.py), stopped on
# exit by its PID; a URL already set (another server) is used as it is.
if [ -z "${SECSGATE_TEST_PG_URL:-}" ]; then
  pg_dir=$(mktemp -d /tmp/secsgate-pg.XXXXXX)
  trap 'scripts/pg.sh stop "$pg_dir" >/dev/null 2>&1 || true; rm -rf "$pg_dir"' EXIT
  SECSGATE_TEST_PG_URL=$(scripts/pg.sh start "$pg_dir")
  export SECSGATE_TEST_PG_URL
fi
cargo build --quiet --bin secsgate
cargo test --quiet
SECSGATE_BIN="$PWD/target/debug/secsgate" .venv/bin/python -m pytest -q python/tests
