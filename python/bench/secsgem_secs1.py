"""Baseline for `scripts/bench.sh secs1`: secsgem 0.3.0's sequential S1F1 W / S1F2 round trips
per second as a SECS-I host over a serial line (a pty), against secsgate's simulator on the
other end (benches/secs1.rs starts it and the line, then runs this).

    python secsgem_secs1.py DEVICE SECONDS

After communication is established (secsgem's host answers the simulator's S1F13 and sends its
own), it sends S1F1 and waits for the S1F2 with `send_and_waitfor_response`, one at a time: a
warm-up, then as many as fit in SECONDS (at least 3). Prints one JSON object on stdout:
    {"bench": "secsgem_pty", "round_trips_per_second": R, "round_trips": N}
or, when secsgem never communicates or a round trip fails, {"bench": "secsgem_pty",
"error": "..."}. `disable()` (which can hang in 0.3.0) is bounded by a timeout, and the process
exits without waiting for secsgem's threads."""

import json
import logging
import os
import sys
import threading
import time

import secsgem.common
import secsgem.gem
import secsgem.secsi


def main():
    device, seconds = sys.argv[1], max(float(sys.argv[2]), 0.0)
    logging.basicConfig(level=logging.CRITICAL)
    settings = secsgem.secsi.SecsISettings(port=device, speed=115200, device_type=secsgem.common.DeviceType.HOST)
    handler = secsgem.gem.GemHostHandler(settings)
    handler.enable()
    result = {"bench": "secsgem_pty"}
    try:
        if not handler.waitfor_communicating(20):
            result["error"] = "secsgem's host never communicated with the simulator"
        else:
            s1f1 = handler.stream_function(1, 1)
            for _ in range(3):
                if handler.send_and_waitfor_response(s1f1()) is None:
                    raise RuntimeError("no S1F2 in the warm-up")
            started = time.monotonic()
            trips = 0
            while time.monotonic() - started < seconds or trips < 3:
                if handler.send_and_waitfor_response(s1f1()) is None:
                    raise RuntimeError(f"no S1F2 after {trips} round trips")
                trips += 1
            elapsed = time.monotonic() - started
            result["round_trips_per_second"] = round(trips / elapsed, 1)
            result["round_trips"] = trips
    except Exception as e:  # the figure says what failed instead of a traceback
        result["error"] = str(e)
    print(json.dumps(result), flush=True)
    stopper = threading.Thread(target=handler.disable, daemon=True)
    stopper.start()
    stopper.join(5)
    os._exit(0)


if __name__ == "__main__":
    main()
