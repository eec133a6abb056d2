"""The demo project runs as shipped (on a free port instead of 5000): the startup script
reads SVs, defines and links a report, starts the simulator's lot run, and the S6F11 reports
reach the custom response handler and the realtime handler."""

import pathlib
import re
import shutil
import signal
import subprocess
import time

from helpers import free_port, stop

DEMO = pathlib.Path(__file__).resolve().parents[2] / "projects" / "demo"


def test_demo_project(secsgate_bin, tmp_path):
    project = tmp_path / "demo"
    shutil.copytree(DEMO, project)
    toml = project / "project.toml"
    toml.write_text(toml.read_text().replace("port = 5000", f"port = {free_port()}"))
    check = subprocess.run([secsgate_bin, "check", str(project)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    gateway = subprocess.Popen(
        [secsgate_bin, "run", str(project), "--web", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    lines = []
    try:
        until = time.monotonic() + 30
        while time.monotonic() < until:
            line = gateway.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "event 103" in line:
                break
        log = "".join(lines)
        assert re.search(r"S1F3 reply: .*\"format\":\"F4\"", log), log
        assert "report 9000 linked" in log, log
        assert "started the simulator's 'lot' event run" in log, log
        assert re.search(r"event 102 \(DATAID \d+\): \{9000: \['\d{16}', 'LOT-0001', 'RCP-A'\]\}", log), log
        assert "event report CEID 102 with 1 report(s)" in log, log
        assert '"doc":"Selected Equipment Status Data"' in log, log  # annotated by the standard SDL
        assert "event 103" in log, log
        assert "ERROR" not in log, log
        assert "does not match the SDL" not in log, log
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            assert gateway.wait(timeout=15) == 0
        finally:
            stop(gateway)
