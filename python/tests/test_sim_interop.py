"""Simulator interop: a secsgem==0.3.0 GemHostHandler drives `secsgate sim` (establish
communication, on-line, status and constants, clock, event reports, alarms, remote commands),
and the spool survives a kill and restart of the simulator process."""

import pathlib
import re
import sqlite3
import subprocess
import threading
import time

import pytest
import secsgem.common
import secsgem.gem
import secsgem.hsms
from secsgem.secs.functions.base import SecsStreamFunction

from helpers import stop

CONFIG = """
[equipment]
mdln = "INTEROP"
softrev = "2.0"
control_state = "host-offline"
spool = [6]

[[status_variable]]
id = 10
name = "Temperature"
units = "degC"
format = "U4"
value = 23

[[status_variable]]
id = 11
name = "LotID"
format = "A"
value = "LOT-1"

[[equipment_constant]]
id = 20
name = "MaxTemp"
units = "degC"
format = "U4"
value = 300
min = 0
max = 500

[[collection_event]]
id = 50
name = "ProcessDone"

[[alarm]]
id = 7
name = "Hot"
text = "too hot"
category = 2

[[remote_command]]
name = "START"
run = "done"
parameters = [{ name = "LOTID", format = "A" }]

[[remote_command]]
name = "ALARM"
run = "alarm"

[[remote_command]]
name = "BURST"
run = "burst"

[[event_run]]
name = "done"
[[event_run.step]]
event = 50

[[event_run]]
name = "alarm"
[[event_run.step]]
alarm_set = 7

# Five events, starting after the host has had time to disconnect.
[[event_run]]
name = "burst"
[[event_run.step]]
delay = "500ms"
event = 50
[[event_run.step]]
delay = "20ms"
event = 50
[[event_run.step]]
delay = "20ms"
event = 50
[[event_run.step]]
delay = "20ms"
event = 50
[[event_run.step]]
delay = "20ms"
event = 50
"""

TIMEOUT = 10


class SecsS02F31(SecsStreamFunction):
    """S2F31 Date and Time Set, which secsgem 0.3.0 does not define."""

    _stream = 2
    _function = 31
    _data_format = "< TIME >"
    _to_host = False
    _to_equipment = True
    _has_reply = True
    _is_reply_required = True
    _is_multi_block = False


class SecsS02F32(SecsStreamFunction):
    """S2F32 Date and Time Set Acknowledge: TIACK, a <B[1]> like TIAACK (secsgem 0.3.0 has
    no TIACK data item)."""

    _stream = 2
    _function = 32
    _data_format = "< TIAACK >"
    _to_host = True
    _to_equipment = False
    _has_reply = False
    _is_reply_required = False
    _is_multi_block = False


def wait_until(check, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Sim:
    """A `secsgate sim` process on an ephemeral port, its stderr in a file."""

    def __init__(self, binary, folder):
        self.folder = folder
        config = folder / "sim.toml"
        config.write_text(CONFIG)
        self.log_path = folder / f"sim-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary, "sim", "--port", "0", "--config", str(config), "--spool-dir", str(folder / "spool"),
             "--name", "interop", "--t3", "5"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

        def port():
            match = re.search(r"simulator listening on 127\.0\.0\.1:(\d+)", self.log_path.read_text())
            if self.proc.poll() is not None:
                raise AssertionError(f"sim exited: {self.log_path.read_text()}")
            return match and int(match.group(1))

        self.port = wait_until(port, "the simulator to listen")

    def spooled(self):
        """Messages in the simulator's spool file, read beside it."""
        with sqlite3.connect(self.folder / "spool" / "interop.spool.sqlite", timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=5)
        self.log.close()

    def stop(self):
        stop(self.proc)
        self.log.close()


class Host:
    """A secsgem GemHostHandler connected to the simulator."""

    def __init__(self, port):
        settings = secsgem.hsms.HsmsSettings(
            address="127.0.0.1",
            port=port,
            connect_mode=secsgem.hsms.HsmsConnectMode.ACTIVE,
            device_type=secsgem.common.DeviceType.HOST,
            session_id=0,
        )
        self.handler = secsgem.gem.GemHostHandler(settings)
        self.handler.settings.streams_functions.update(SecsS02F31)
        self.handler.settings.streams_functions.update(SecsS02F32)
        self.events = []
        self.alarms = []
        self.handler.events.collection_event_received += self.events.append
        self.handler.events.alarm_received += self.alarms.append
        self.handler.enable()
        assert self.handler.waitfor_communicating(TIMEOUT), "no communication established"

    def ask(self, stream, function, data=None):
        sf = self.handler.stream_function(stream, function)
        message = sf() if data is None else sf(data)
        reply = self.handler.send_and_waitfor_response(message)
        assert reply is not None, f"no reply to S{stream}F{function}"
        return self.handler.settings.streams_functions.decode(reply).get()

    def close(self):
        # secsgem's disable() can hang: bound it.
        thread = threading.Thread(target=self.handler.disable, daemon=True)
        thread.start()
        thread.join(timeout=5)


@pytest.fixture
def sim(secsgate_bin, tmp_path):
    s = Sim(secsgate_bin, tmp_path)
    yield s
    s.stop()


@pytest.fixture
def host(sim):
    h = Host(sim.port)
    yield h
    h.close()


def test_host_drives_the_simulator(host):
    handler = host.handler
    # On-line from HOST OFF-LINE, then already on-line.
    assert handler.go_online() == 0
    assert handler.go_online() == 2
    # Status and namelists.
    assert host.ask(1, 3, [10, 11]) == [23, "LOT-1"]
    assert host.ask(1, 11, [10]) == [{"SVID": 10, "SVNAME": "Temperature", "UNITS": "degC"}]
    # Equipment constants, with range checking.
    assert host.ask(2, 13, [20]) == [300]
    assert host.ask(2, 15, [{"ECID": 20, "ECV": 400}]) == 0
    assert host.ask(2, 15, [{"ECID": 20, "ECV": 600}]) == 3
    assert host.ask(2, 15, [{"ECID": 99, "ECV": 1}]) == 1
    assert host.ask(2, 13, [20]) == [400]
    # Clock: YYYYMMDDhhmmsscc (S2F31 is added to secsgem 0.3.0, which lacks it).
    assert re.fullmatch(r"\d{16}", host.ask(2, 17))
    assert host.ask(2, 31, "2030010203040500") == 0
    assert host.ask(2, 17).startswith("2030010203")
    assert host.ask(2, 31, "20301402") == 1
    # Event reports: define, link, enable (secsgem's subscribe), then an event from a run
    # started by a remote command.
    handler.subscribe_collection_event(50, [10, 11], 1)
    reply = handler.send_remote_command("START", [["LOTID", "L1"]])
    assert reply.HCACK.get() == 0
    event = wait_until(lambda: host.events and host.events[0], "S6F11")
    assert event["ceid"].get() == 50
    assert [v["value"] for v in event["values"]] == [23, "LOT-1"]
    # Alarms: enable, list, then S5F1 when set.
    assert handler.enable_alarm(7) == 0
    assert handler.list_alarms([7]) == [{"ALCD": 2, "ALID": 7, "ALTX": "too hot"}]
    assert handler.list_enabled_alarms() == [{"ALCD": 2, "ALID": 7, "ALTX": "too hot"}]
    assert handler.send_remote_command("ALARM", []).HCACK.get() == 0
    alarm = wait_until(lambda: host.alarms and host.alarms[0], "S5F1")
    assert alarm["alid"].get() == 7
    assert alarm["code"].get() == 0x82
    # Unknown remote command and bad parameter.
    assert handler.send_remote_command("JUMP", []).HCACK.get() == 1
    bad = handler.send_remote_command("START", [["COLOUR", "red"]])
    assert bad.HCACK.get() == 3
    assert bad.PARAMS.get() == [{"CPNAME": "COLOUR", "CPACK": 1}]
    # Off-line again.
    assert handler.go_offline() == 0


def test_spooled_events_survive_a_restart(secsgate_bin, tmp_path):
    sim = Sim(secsgate_bin, tmp_path)
    host = None
    try:
        host = Host(sim.port)
        assert host.handler.go_online() == 0
        host.handler.subscribe_collection_event(50, [10], 1)
        assert host.ask(2, 43, [{"STRID": 6, "FCNID": [11]}]) == {"RSPACK": 0, "DATA": []}
        # The run's first event comes 500 ms after the command: the host is gone by then.
        assert host.handler.send_remote_command("BURST", []).HCACK.get() == 0
        host.close()
        host = None
        wait_until(lambda: sim.spooled() == 5, "five spooled events")
        assert sim.proc.poll() is None
        sim.kill()  # no clean shutdown: the spool must already be on disk
        sim = Sim(secsgate_bin, tmp_path)
        host = Host(sim.port)
        data_ids = []

        def on_event(handler, message):
            # secsgem runs callbacks on several threads: the order on the wire is the order
            # of the system bytes the simulator gave its primaries.
            decoded = handler.settings.streams_functions.decode(message)
            data_ids.append((message.header.system, decoded.DATAID.get()))
            return handler.stream_function(6, 12)(0)

        host.handler.register_stream_function(6, 11, on_event)
        assert host.handler.go_online() == 0
        assert host.ask(1, 3, [2013]) == [5]  # SpoolCountActual
        assert host.ask(6, 23, 0) == 0  # transmit
        wait_until(lambda: len(data_ids) >= 5, "five spooled S6F11")
        wait_until(lambda: host.ask(1, 3, [2013]) == [0], "an empty spool")
        assert [data_id for _, data_id in sorted(data_ids)] == [1, 2, 3, 4, 5]
        assert host.ask(6, 23, 0) == 2  # no spooled data
    finally:
        if host is not None:
            host.close()
        sim.stop()


def test_sim_runs_the_default_config_and_stops_on_sigterm(secsgate, default_sim):
    proc, port = default_sim
    out = secsgate("send", "--connect", f"127.0.0.1:{port}", "S1F13 W <L>", "S1F1 W",
                   "S2F41 W <L [2] <A \"START\"> <L>>")
    assert out.returncode == 0, out.stderr
    assert '<A "SECSGATE-SIM">' in out.stdout
    assert "S2F42\n<L [2]\n  <B 0x04>" in out.stdout
    proc.terminate()
    assert proc.wait(timeout=10) == 0


def test_sim_refuses_a_bad_config_with_file_line_and_key(secsgate, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[[alarm]]\nid = 1\ntext = "t"\nset_event = 9\n')
    out = secsgate("sim", "--port", "0", "--config", str(config), "--spool-dir", str(tmp_path))
    assert out.returncode == 2
    assert f"{config}:4: alarm.set_event: alarm 1: collection event 9 is not defined" in out.stderr, out.stderr
    out = secsgate("sim", "--port", "0", "--run", "nope", "--spool-dir", str(tmp_path))
    assert out.returncode == 2
    assert "--run nope: no such event run" in out.stderr, out.stderr


@pytest.fixture
def default_sim(secsgate_bin, tmp_path):
    """A `secsgate sim` with the built-in default config on an ephemeral port: (process, port)."""
    log_path = tmp_path / "default-sim.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [secsgate_bin, "sim", "--port", "0", "--spool-dir", str(tmp_path / "spool")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
        )
    try:
        port = wait_until(
            lambda: (m := re.search(r"listening on 127\.0\.0\.1:(\d+)", log_path.read_text())) and m.group(1),
            "the simulator to listen",
        )
        yield proc, port
    finally:
        stop(proc)


def test_send_answers_the_simulators_own_primaries(secsgate, default_sim):
    """`secsgate send` plays a GEM host for what the peer sends meanwhile: a fresh simulator's
    S1F13 on connect is answered with S1F14, so the README's examples work as written."""
    _, port = default_sim
    out = secsgate("send", "--connect", f"127.0.0.1:{port}", "S1F13 W <L>",
                   "S1F3 W <L [1] <U4 2001>>", "S1F1 W")
    assert out.returncode == 0, out.stderr
    assert "S1F4" in out.stdout and "S1F2" in out.stdout, out.stdout
    if "received S1F13" in out.stderr:
        assert "answered S1F14 <L [2] <B 0x00> <L [0]>>" in out.stderr, out.stderr
