"""Baseline for `scripts/bench.sh hsms`: secsgem 0.3.0's sequential S1F1 W / S1F2 round trips
per second over 127.0.0.1.

A secsgem GemHostHandler (active) talks to a secsgem GemEquipmentHandler (passive,
python/peers/secsgem_equipment.py), each in its own subprocess, so each side has its own
interpreter and GIL, as two programs would. After communication is established (S1F13/S1F14)
the host sends S1F1 and waits for the S1F2 with `send_and_waitfor_response`, one at a time:
a warm-up, then as many as fit in the measuring time.

Placements, as in benches/hsms.rs: `free` (the scheduler decides), `split` (host on core 0,
equipment on core 1), `same` (both on core 0).

    python secsgem_hsms.py [--placements free,split,same] [--warmup S] [--seconds S]

Prints one JSON object per placement on stdout:
    {"bench": "secsgem_sequential", "placement": P, "round_trips": N, "seconds": S,
     "per_second": R}

This process starts both subprocesses and stops both by PID (SIGTERM, then SIGKILL) whatever
happens. The host subprocess bounds its own `disable()` (which can hang in 0.3.0) with a
timeout and exits without waiting for secsgem's threads."""

import argparse
import json
import logging
import os
import pathlib
import select
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve()
PEER = HERE.parents[1] / "peers" / "secsgem_equipment.py"

CORES = {"free": (None, None), "split": (0, 1), "same": (0, 0)}  # placement: (host, equipment)


def free_port():
    """An ephemeral port on 127.0.0.1 (bound to port 0 and released; secsgem 0.3.0's passive
    side binds in a thread and does not report the port it got)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu):
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def read_line(proc, timeout):
    """The next stdout line of `proc`, or "" after `timeout` seconds or at its exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            return proc.stdout.readline()
    return ""


def stop(proc):
    """Stops a subprocess by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=3)
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            try:
                f.close()
            except OSError:
                pass


def measure(placement, warmup, seconds):
    host_cpu, equipment_cpu = CORES[placement]
    port = free_port()
    started = []
    try:
        equipment = subprocess.Popen(
            [sys.executable, str(PEER), "--mode", "passive", "--address", "127.0.0.1",
             "--port", str(port), "--log", "ERROR"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            preexec_fn=pinned(equipment_cpu),
        )
        started.append(equipment)
        said = read_line(equipment, timeout=15)
        if said.strip() != "ready":
            raise RuntimeError(f"the secsgem equipment did not start (said {said!r})")
        host = subprocess.Popen(
            [sys.executable, str(HERE), "--host-port", str(port),
             "--warmup", str(warmup), "--seconds", str(seconds)],
            stdout=subprocess.PIPE, text=True, preexec_fn=pinned(host_cpu),
        )
        started.append(host)
        said = read_line(host, timeout=warmup + seconds + 30)
        if not said:
            raise RuntimeError("the secsgem host gave no result")
        result = json.loads(said)
        result["placement"] = placement
        return result
    finally:
        for proc in reversed(started):
            stop(proc)


def disable_bounded(handler, timeout):
    """handler.disable() in a daemon thread; gives up after `timeout` seconds."""
    t = threading.Thread(target=handler.disable, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive()


def host_main(port, warmup, seconds):
    """The host side: measure, print one JSON line, exit without waiting for secsgem."""
    import secsgem.common
    import secsgem.gem
    import secsgem.hsms
    import secsgem.secs

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    settings = secsgem.hsms.HsmsSettings(
        address="127.0.0.1",
        port=port,
        connect_mode=secsgem.hsms.HsmsConnectMode.ACTIVE,
        device_type=secsgem.common.DeviceType.HOST,
        session_id=0,
    )
    host = secsgem.gem.GemHostHandler(settings)
    host.enable()
    try:
        if not host.waitfor_communicating(timeout=15):
            raise RuntimeError("secsgem host and equipment did not establish communication")

        def round_trip():
            reply = host.send_and_waitfor_response(secsgem.secs.functions.SecsS01F01())
            if reply is None or reply.header.stream != 1 or reply.header.function != 2:
                raise RuntimeError(f"S1F1 was not answered with S1F2: {reply}")

        until = time.perf_counter() + warmup
        while time.perf_counter() < until:
            round_trip()
        count = 0
        start = now = time.perf_counter()
        until = start + seconds
        while now < until:
            round_trip()
            count += 1
            now = time.perf_counter()
        elapsed = now - start
    finally:
        if not disable_bounded(host, timeout=5):
            print("secsgem_hsms: host disable() did not return within 5 s", file=sys.stderr)
    print(json.dumps({
        "bench": "secsgem_sequential",
        "round_trips": count,
        "seconds": elapsed,
        "per_second": count / elapsed,
    }), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--placements", default="free,split,same")
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--host-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host_port is not None:
        host_main(args.host_port, args.warmup, args.seconds)
        return
    cores = os.cpu_count() or 1
    for placement in args.placements.split(","):
        placement = placement.strip()
        if placement not in CORES or (placement == "split" and cores < 2):
            continue
        print(json.dumps(measure(placement, args.warmup, args.seconds)), flush=True)


if __name__ == "__main__":
    code = 0
    try:
        main()
    except Exception as exc:  # noqa: BLE001 - report, then exit without waiting for threads
        print(f"secsgem_hsms: {exc!r}", file=sys.stderr, flush=True)
        code = 1
    sys.stderr.flush()
    # The host's secsgem threads may outlive a hung disable(); do not wait for them.
    os._exit(code)
