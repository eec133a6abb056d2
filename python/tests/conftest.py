"""Shared fixtures: the secsgate binary under test, and a runner for its commands."""

import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def secsgate_bin():
    """Path of the secsgate binary: $SECSGATE_BIN, else a debug build made here."""
    path = os.environ.get("SECSGATE_BIN")
    if path:
        return path
    subprocess.run(["cargo", "build", "--quiet", "--bin", "secsgate"], cwd=REPO, check=True)
    return str(REPO / "target" / "debug" / "secsgate")


@pytest.fixture
def secsgate(secsgate_bin):
    """Runs `secsgate ARGS...` with optional stdin; returns the CompletedProcess."""

    def run(*args, stdin=None, timeout=30):
        return subprocess.run(
            [secsgate_bin, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def broker(tmp_path):
    """The port of an MQTT broker: the test script's (`SECSGATE_TEST_MQTT_PORT`), else one of
    this test's own (Debian's mosquitto), stopped by its PID after."""
    port = os.environ.get("SECSGATE_TEST_MQTT_PORT")
    if port:
        yield int(port)
        return
    from mqtt_helpers import Broker

    b = Broker(tmp_path / "broker").start()
    try:
        yield b.port
    finally:
        b.stop()
