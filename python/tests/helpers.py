"""Process helpers shared by the pytest interop tests: free ports, secsgem peers, and
stopping what a test started, by its PID."""

import pathlib
import re
import socket
import subprocess
import sys
import threading
import time

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


TIMEOUT = 20


class Lines:
    """The lines a process writes to one of its pipes, read on a thread (and copied to a file
    if asked), awaited by pattern: each wait wakes as a line arrives, never on a timer."""

    def __init__(self, pipe, copy_to=None):
        self.lines = []
        self.ended = False
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(pipe, copy_to), daemon=True)
        self.thread.start()

    def _read(self, pipe, copy_to):
        copy = open(copy_to, "w") if copy_to else None
        try:
            for line in pipe:
                if copy:
                    copy.write(line)
                    copy.flush()
                with self.cond:
                    self.lines.append(line.rstrip("\n"))
                    self.cond.notify_all()
        finally:
            if copy:
                copy.close()
            with self.cond:
                self.ended = True
                self.cond.notify_all()

    def wait_for_all(self, predicate, count=1, timeout=TIMEOUT):
        """The lines matching `predicate` once there are `count` of them."""
        with self.cond:
            deadline = time.monotonic() + timeout
            while True:
                found = [line for line in self.lines if predicate(line)]
                if len(found) >= count:
                    return found
                if self.ended:
                    raise AssertionError(f"the pipe closed with {len(found)} of {count} lines; got {self.lines}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(found)} of {count} lines within {timeout} s; got {self.lines}")
                self.cond.wait(left)

    def wait_for(self, pattern, timeout=TIMEOUT):
        """The first line matching `pattern`, waiting for it to be written."""
        regex = re.compile(pattern)
        return self.wait_for_all(lambda line: regex.search(line), 1, timeout)[0]

    def text(self):
        with self.cond:
            return "\n".join(self.lines)
