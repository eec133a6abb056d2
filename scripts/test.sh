#!/usr/bin/env bash
# The whole test suite: installs what it needs, then Rust unit, property and integration
# tests, then the pytest interop tests against secsgem==0.3.0, with a PostgreSQL server and an
# MQTT broker of its own.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Servers of the tests, on loopback ports, stopped on exit by their PIDs: PostgreSQL for the
# store's tests (tests/postgres.rs, test_postgres.py; a URL already set is used as it is) and
# mosquitto for the MQTT tests (test_mqtt.py; its outage test also runs a broker of its own).
pg_dir="" mq_dir=""
cleanup() {
  [ -n "$pg_dir" ] && { scripts/pg.sh stop "$pg_dir" >/dev/null 2>&1 || true; rm -rf "$pg_dir"; }
  [ -n "$mq_dir" ] && { scripts/mosquitto.sh stop "$mq_dir" >/dev/null 2>&1 || true; rm -rf "$mq_dir"; }
  return 0
}
trap cleanup EXIT
if [ -z "${SECSGATE_TEST_PG_URL:-}" ]; then
  pg_dir=$(mktemp -d /tmp/secsgate-pg.XXXXXX)
  SECSGATE_TEST_PG_URL=$(scripts/pg.sh start "$pg_dir")
  export SECSGATE_TEST_PG_URL
fi
if [ -z "${SECSGATE_TEST_MQTT_PORT:-}" ]; then
  mq_dir=$(mktemp -d /tmp/secsgate-mqtt.XXXXXX)
  SECSGATE_TEST_MQTT_PORT=$(scripts/mosquitto.sh start "$mq_dir")
  export SECSGATE_TEST_MQTT_PORT
fi
cargo build --quiet --bin secsgate
cargo test --quiet
SECSGATE_BIN="$PWD/target/debug/secsgate" .venv/bin/python -m pytest -q python/tests
