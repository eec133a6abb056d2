#!/usr/bin/env bash
# Installs what the build, the tests and the benchmarks need on a fresh machine:
# Debian packages (socat for serial pty pairs, chromium and chromium-driver for the web
# console's browser tests, mosquitto for the MQTT tests, postgresql for the PostgreSQL
# store's tests, python3-dev when the python3 on PATH has no shared libpython for the embedded
# interpreter) and a Python venv in .venv with python/requirements.txt: pytest,
# secsgem==0.3.0 (the independent peer of the interop tests and the benchmark baselines),
# selenium (drives Chromium), paho-mqtt and pysparkplug (the independent MQTT client and
# Sparkplug B decoder of the northbound tests) and psycopg (checks the PostgreSQL rows).
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v socat >/dev/null 2>&1 || need_apt+=(socat)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
[ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
# PostgreSQL: the message store's second backend, tested against a server scripts/pg.sh runs.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# The gateway embeds CPython: the build links the python3 on PATH's shared libpython.
if ! python3 -c 'import sysconfig, sys; sys.exit(0 if sysconfig.get_config_var("Py_ENABLE_SHARED") else 1)' 2>/dev/null; then
  need_apt+=(python3-dev)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv || {
    sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv .venv
  }
fi
# Installs only what python/requirements.txt lists and the venv lacks.
.venv/bin/pip install -q --disable-pip-version-check -r python/requirements.txt
