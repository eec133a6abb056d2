"""SECS-I interop with secsgem==0.3.0, over TCP on 127.0.0.1 and over a socat pty pair, in
both roles: its GemEquipmentHandler against `secsgate send` (secsgate is the host), and its
GemHostHandler against `secsgate sim` (secsgate is the equipment).

secsgem's SECS-I master does not handle line contention (both ends bidding ENQ at once: it
takes the other side's ENQ for its EOT; ../shared/reference/semi.md §4.7). So when secsgem is
the equipment (the master), the host side sends nothing until it has answered secsgem's
S1F13: the messages go to `secsgate send` on stdin only after it reports that answer. When
secsgem is the host (the slave) it yields as E4 says, and both sides may bid at start-up."""

import json
import pathlib
import re
import subprocess
import sys
import threading

import pytest
import secsgem.common
import secsgem.gem
import secsgem.secsi
import secsgem.secsitcp

from helpers import PEER, Lines, free_port, stop

TIMEOUT = 20


@pytest.fixture
def pty_pair(tmp_path):
    """Two ptys joined by socat, as a null-modem cable: (path a, path b)."""
    a, b = tmp_path / "a", tmp_path / "b"
    proc = subprocess.Popen(
        ["socat", "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = Lines(proc.stderr)
    lines.wait_for("starting data transfer loop")
    yield str(a), str(b)
    stop(proc)


def start_secsgem_equipment(*args):
    """Starts the secsgem equipment without waiting for it: over a serial line its `enable()`
    returns only once its first S1F13 has crossed, so the host must be there first."""
    return subprocess.Popen(
        [sys.executable, str(PEER), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def send_to_secsgem_equipment(secsgate_bin, line_args, equipment_args):
    """`secsgate send` as the SECS-I host of a secsgem equipment (started once the host's line
    is open): waits until it has answered the equipment's S1F13, then sends S1F1, S1F3 and
    S2F13 and checks their JSON replies."""
    send = subprocess.Popen(
        [secsgate_bin, "send", *line_args, "--json", "--timeout", "10"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    equipment = None
    try:
        err, out = Lines(send.stderr), Lines(send.stdout)
        err.wait_for(r"SECS-I line open|listening on")
        equipment = start_secsgem_equipment(*equipment_args)
        err.wait_for(r"answered S1F14")
        send.stdin.write("S1F1 W\nS1F3 W <L [2] <U4 10> <U4 11>>\nS2F13 W <L [1] <U4 20>>\n")
        send.stdin.close()
        assert send.wait(timeout=TIMEOUT * 2) == 0, err.text()
        out.thread.join(TIMEOUT)
    finally:
        stop(send)
        if equipment is not None:
            stop(equipment)
    replies = [json.loads(line) for line in out.text().splitlines()]
    assert [(r["header"]["stream"], r["header"]["function"]) for r in replies] == [(1, 2), (1, 4), (2, 14)]
    assert replies[0]["body"] == [{"format": "A", "value": "secsgem"}, {"format": "A", "value": "0.3.0"}]
    assert replies[1]["body"] == [{"format": "U4", "value": 23}, {"format": "A", "value": "LOT-1"}]
    assert replies[2]["body"] == [{"format": "U4", "value": 300}]


def test_send_to_secsgem_equipment_over_secs1_tcp(secsgate_bin):
    # secsgate listens; the secsgem equipment connects.
    port = free_port()
    send_to_secsgem_equipment(
        secsgate_bin,
        ["--secs1-tcp", f"127.0.0.1:{port}", "--passive"],
        ["--secs1-tcp", "--mode", "active", "--port", str(port)],
    )


def test_send_to_secsgem_equipment_over_a_serial_pty_pair(secsgate_bin, pty_pair):
    a, b = pty_pair
    send_to_secsgem_equipment(secsgate_bin, ["--serial", b], ["--serial", a])


class SimProcess:
    """`secsgate sim` on a SECS-I line, its stderr read on a thread."""

    def __init__(self, binary, folder, line_args):
        self.proc = subprocess.Popen(
            [binary, "sim", *line_args, "--spool-dir", str(folder / "spool"), "--name", "secs1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err = Lines(self.proc.stderr)

    def stop(self):
        stop(self.proc)


def host_against_sim(settings):
    """A secsgem GemHostHandler on `settings`: communicates with the simulator, then reads its
    model name, status variables and an equipment constant."""
    handler = secsgem.gem.GemHostHandler(settings)
    handler.enable()
    try:
        assert handler.waitfor_communicating(TIMEOUT), "secsgem host never communicating with secsgate sim"

        def ask(stream, function, data=None):
            sf = handler.stream_function(stream, function)
            reply = handler.send_and_waitfor_response(sf() if data is None else sf(data))
            assert reply is not None, f"no reply to S{stream}F{function}"
            return handler.settings.streams_functions.decode(reply).get()

        mdln, softrev = ask(1, 1)
        assert (mdln, softrev) == ("SECSGATE-SIM", "1.0.0")
        assert len(ask(1, 3, [1, 2])) == 2
        assert len(ask(2, 13, [200])) == 1
    finally:
        thread = threading.Thread(target=handler.disable, daemon=True)
        thread.start()
        thread.join(TIMEOUT)


def test_secsgem_host_against_sim_over_secs1_tcp(secsgate_bin, tmp_path):
    sim = SimProcess(secsgate_bin, tmp_path, ["--secs1-tcp", "0"])
    try:
        port = int(re.search(r":(\d+)$", sim.err.wait_for(r"simulator listening on")).group(1))
        host_against_sim(
            secsgem.secsitcp.SecsITcpSettings(
                address="127.0.0.1",
                port=port,
                connect_mode=secsgem.secsitcp.SecsITcpConnectMode.CLIENT,
                device_type=secsgem.common.DeviceType.HOST,
            )
        )
    finally:
        sim.stop()


def test_secsgem_host_against_sim_over_a_serial_pty_pair(secsgate_bin, tmp_path, pty_pair):
    a, b = pty_pair
    sim = SimProcess(secsgate_bin, tmp_path, ["--serial", a])
    try:
        sim.err.wait_for(r"simulator on SECS-I serial port")
        host_against_sim(secsgem.secsi.SecsISettings(port=b, device_type=secsgem.common.DeviceType.HOST))
    finally:
        sim.stop()
