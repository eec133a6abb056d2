#!/usr/bin/env bash
# A throwaway MQTT broker (Debian's mosquitto) for the tests and benchmarks, on a free
# loopback port, with its files in DIR.
#
#   scripts/mosquitto.sh start DIR   # prints the port; DIR/port and DIR/pid are written
#   scripts/mosquitto.sh stop DIR    # stops it by its PID
set -euo pipefail
cmd=${1:?usage: mosquitto.sh start|stop DIR}
dir=${2:?usage: mosquitto.sh start|stop DIR}
case "$cmd" in
  start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat > "$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $dir/
user $(id -un)
max_queued_messages 0
log_dest file $dir/mosquitto.log
CONF
    # Its output goes to its log file, not to the caller, which may wait for our stdout to close.
    /usr/sbin/mosquitto -c "$dir/mosquitto.conf" </dev/null >>"$dir/mosquitto.log" 2>&1 &
    echo $! > "$dir/pid"
    # Ready when the port accepts a connection (the broker's own log says so first).
    for _ in $(seq 100); do
      if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
        echo "$port" > "$dir/port"
        echo "$port"
        exit 0
      fi
      kill -0 "$(cat "$dir/pid")" 2>/dev/null || { cat "$dir/mosquitto.log" >&2; exit 1; }
      sleep 0.1
    done
    echo "mosquitto did not start; see $dir/mosquitto.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$dir/pid" ]; then
      pid=$(cat "$dir/pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/pid"
    fi
    ;;
  *) echo "usage: mosquitto.sh start|stop DIR" >&2; exit 2 ;;
esac
