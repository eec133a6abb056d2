"""Baseline for `scripts/bench.sh sim`: secsgem 0.3.0's GemEquipmentHandler sending S6F11 to
a secsgem GemHostHandler that only acknowledges them, and the memory a GemEquipmentHandler
takes.

    python secsgem_sim.py events [--count N]
        The equipment runs in a subprocess (its own interpreter and GIL, as a separate
        program would); the host, in this process, defines a report of one SV, links it to a
        collection event and enables it, then the equipment triggers the event N times
        (`trigger_collection_events`, which sends each S6F11 W and waits for its S6F12).
        Prints {"bench": "secsgem_s6f11", "events": N, "seconds": S, "per_second": R}.

    python secsgem_sim.py memory [--count N]
        RSS of this process before and after creating and enabling N passive
        GemEquipmentHandlers. Prints {"bench": "secsgem_memory", "handlers": N,
        "rss_before_kib": A, "rss_after_kib": B, "per_handler_kib": P}.

    python secsgem_sim.py equipment --port P     (the subprocess of `events`)

Everything started is stopped before exit: the equipment subprocess by its PID, and
disable() (which can hang in 0.3.0) bounded by a timeout or skipped by os._exit."""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time

import secsgem.common
import secsgem.gem
import secsgem.hsms
import secsgem.secs

CEID = 5000
SVID = 10


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(port, active):
    return secsgem.hsms.HsmsSettings(
        address="127.0.0.1",
        port=port,
        connect_mode=secsgem.hsms.HsmsConnectMode.ACTIVE if active else secsgem.hsms.HsmsConnectMode.PASSIVE,
        device_type=secsgem.common.DeviceType.HOST if active else secsgem.common.DeviceType.EQUIPMENT,
        session_id=0,
    )


class Equipment(secsgem.gem.GemEquipmentHandler):
    def __init__(self, s):
        super().__init__(s)
        self.status_variables.update({
            SVID: secsgem.gem.StatusVariable(SVID, "Temperature", "degC", secsgem.secs.variables.U4, False),
        })
        self.status_variables[SVID].value = 23
        self.collection_events.update({CEID: secsgem.gem.CollectionEvent(CEID, "Bench", [])})


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def equipment(port):
    handler = Equipment(settings(port, active=False))
    handler.enable()
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if words and words[0] == "go":
            handler.trigger_collection_events([CEID] * int(words[1]))
    os._exit(0)


def events(count):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "equipment", "--port", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    host = None
    try:
        assert proc.stdout.readline().strip() == "ready"
        host = secsgem.gem.GemHostHandler(settings(port, active=True))
        received = {"n": 0}
        done = threading.Event()
        target = {"n": 0}

        def on_event(_):
            received["n"] += 1
            if received["n"] >= target["n"]:
                done.set()

        host.events.collection_event_received += on_event
        host.enable()
        assert host.waitfor_communicating(30)
        host.subscribe_collection_event(CEID, [SVID], 1)

        def run(n):
            received["n"] = 0
            target["n"] = n
            done.clear()
            started = time.monotonic()
            proc.stdin.write(f"go {n}\n")
            proc.stdin.flush()
            assert done.wait(600), f"only {received['n']} of {n} events"
            return time.monotonic() - started

        run(200)  # warm-up
        seconds = run(count)
        print(json.dumps({"bench": "secsgem_s6f11", "events": count, "seconds": seconds,
                          "per_second": count / seconds}))
    finally:
        if host is not None:
            t = threading.Thread(target=host.disable, daemon=True)
            t.start()
            t.join(timeout=5)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def memory(count):
    before = rss_kib()
    handlers = []
    for _ in range(count):
        h = Equipment(settings(free_port(), active=False))
        h.enable()
        handlers.append(h)
    time.sleep(0.5)
    after = rss_kib()
    print(json.dumps({"bench": "secsgem_memory", "handlers": count, "rss_before_kib": before,
                      "rss_after_kib": after, "per_handler_kib": (after - before) / count}), flush=True)
    os._exit(0)  # their disable() can hang; the listening threads end with the process


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["events", "memory", "equipment"])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.what == "equipment":
        equipment(args.port)
    elif args.what == "events":
        events(args.count)
    else:
        memory(args.count)


if __name__ == "__main__":
    main()
