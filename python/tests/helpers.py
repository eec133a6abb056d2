"""Process helpers shared by the pytest interop tests: free ports, secsgem peers, and
stopping what a test started, by its PID."""

import pathlib
import socket
import subprocess
import sys

PEER = pathlib.Path(__file__).resolve().parents[1] / "peers" / "secsgem_equipment.py"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc):
    """Stops a process we started, by its PID: terminate, then kill."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def start_equipment(mode, port):
    proc = subprocess.Popen(
        [sys.executable, str(PEER), "--mode", mode, "--port", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"secsgem equipment did not start: {line!r}"
    return proc
