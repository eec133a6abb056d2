"""HSMS interop: `secsgate send` against a secsgem==0.3.0 GemEquipmentHandler, both when the
equipment listens (secsgate active) and when it connects (secsgate --passive); plus the exit
codes of failed exchanges."""

import json
import re
import socket
import struct
import subprocess
import threading
import time

import pytest

from helpers import free_port, start_equipment, stop

MESSAGES = ["S1F13 W <L>", "S1F1 W", "S1F3 W <L [2] <U4 10> <U4 11>>", "S2F13 W <L [1] <U4 20>>", "linktest"]


@pytest.fixture
def passive_equipment():
    port = free_port()
    proc = start_equipment("passive", port)
    yield port
    stop(proc)


def check_replies(stdout):
    """The JSON replies to MESSAGES, one per line, then the linktest answer."""
    lines = stdout.strip().splitlines()
    assert lines[-1] == "Linktest.rsp"
    replies = [json.loads(line) for line in lines[:-1]]
    assert [(r["header"]["stream"], r["header"]["function"]) for r in replies] == [(1, 14), (1, 2), (1, 4), (2, 14)]
    commack, mdln = replies[0]["body"]
    assert commack == {"format": "B", "value": 0}
    assert mdln == [{"format": "A", "value": "secsgem"}, {"format": "A", "value": "0.3.0"}]
    assert replies[1]["body"] == mdln
    assert replies[2]["body"] == [{"format": "U4", "value": 23}, {"format": "A", "value": "LOT-1"}]
    assert replies[3]["body"] == [{"format": "U4", "value": 300}]


def test_send_to_passive_secsgem_equipment(secsgate, passive_equipment):
    out = secsgate("send", "--connect", f"127.0.0.1:{passive_equipment}", "--json", *MESSAGES)
    assert out.returncode == 0, out.stderr
    check_replies(out.stdout)


def test_send_sml_output_and_stdin(secsgate, passive_equipment):
    stdin = "S1F13 W\n<L>\n.\nS1F3 W <L [1]\n  <U4 10>\n>\nS1F1 W\n"
    out = secsgate("send", "--connect", f"127.0.0.1:{passive_equipment}", stdin=stdin)
    assert out.returncode == 0, out.stderr
    assert "S1F4\n<L [1]\n  <U4 23>\n>\n." in out.stdout
    assert out.stdout.count("S1F2\n") == 1


def test_secsgem_equipment_connects_to_send_passive(secsgate_bin):
    send = subprocess.Popen(
        [secsgate_bin, "send", "--passive", "--connect", "127.0.0.1:0", "--json", *MESSAGES],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    equipment = None
    try:
        first = send.stderr.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        assert match, first
        equipment = start_equipment("active", int(match.group(1)))
        stdout, stderr = send.communicate(timeout=60)
        assert send.returncode == 0, stderr
        check_replies(stdout)
    finally:
        stop(send)
        if equipment is not None:
            stop(equipment)


def test_stream_nine_answer_exits_1(secsgate, passive_equipment):
    # secsgem's equipment has no handler for S2F17 and answers S9F5 with the message header.
    # With T3 at 40 s, finishing well before it shows the S9F5 ended the transaction (a
    # re-select after secsgem loses track of the session may add a T5 reconnect: 10 s).
    started = time.monotonic()
    out = secsgate("send", "--connect", f"127.0.0.1:{passive_equipment}", "--timeout", "40",
                   "S1F13 W <L>", "S2F17 W", "S1F1 W", timeout=60)
    assert out.returncode == 1
    assert time.monotonic() - started < 30, out.stderr
    assert "S2F17" in out.stderr and "S9F5: unrecognized function" in out.stderr, out.stderr
    assert "S1F2" not in out.stdout  # stops at the first failure


def test_connection_refused_exits_1(secsgate):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    out = secsgate("send", "--connect", f"127.0.0.1:{port}", "--wait", "1", "S1F1 W")
    assert out.returncode == 1
    assert time.monotonic() - started < 10
    assert f"cannot connect to 127.0.0.1:{port}" in out.stderr, out.stderr


def silent_peer():
    """A peer that selects and then never answers a data message (a plain socket)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        with conn:
            header = b""
            while len(header) < 14:
                header += conn.recv(14 - len(header))
            # Select.rsp (SType 2) with the Select.req's system bytes, status 0.
            conn.sendall(struct.pack(">IHBBBB", 10, 0xFFFF, 0, 0, 0, 2) + header[10:14])
            while conn.recv(4096):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_reply_timeout_exits_1(secsgate):
    listener, thread = silent_peer()
    try:
        port = listener.getsockname()[1]
        started = time.monotonic()
        out = secsgate("send", "--connect", f"127.0.0.1:{port}", "--timeout", "1", "S1F1 W")
        assert out.returncode == 1
        assert 0.9 < time.monotonic() - started < 10
        assert "T3 reply timeout: no reply to S1F1" in out.stderr, out.stderr
        thread.join(timeout=10)
        assert not thread.is_alive(), "secsgate send closed the connection when it was done"
    finally:
        listener.close()


def test_bad_message_exits_2_before_connecting(secsgate):
    out = secsgate("send", "--connect", "127.0.0.1:1", "S1F3 W <L [2] <U4 1>>")
    assert out.returncode == 2
    assert "line 1, column" in out.stderr


def test_json_messages_in(secsgate, passive_equipment):
    message = '{"header": {"stream": 1, "function": 3, "reply": true}, "body": [{"format": "U4", "value": 10}]}'
    out = secsgate("send", "--connect", f"127.0.0.1:{passive_equipment}", "--json", "S1F13 W <L>", message)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[1])["body"] == [{"format": "U4", "value": 23}]
