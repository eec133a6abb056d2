"""The Ignition example project (projects/ignition) runs as shipped, on a free port: the
scripts pasted from Ignition's SECS/GEM documentation give the documented results against the
built-in simulator's default config.

- onStartup runs the docs' S1F11, S2F13 and S2F23 examples: S1F12 is the docs' namelist
  (SVID 4, RandomBinaryData, B), S2F14 the constants 200-207 asked for, S2F24 a TIAACK.
- S6F12Handler, the docs' custom response, answers the simulator's S6F11 event reports with
  system.secsgem.sendResponse.
- onSecsGemRealtimeUpdate, the docs' message handler verbatim, logs each realtime message
  ("CommonID=..., Equipment=..., ..."); messages.sdl marks S2F14 realtime with CommonID [ECV],
  so the S2F13 reply reaches it with the constants' values as its CommonID.

The test's copy of the project puts one line before each handler that logs
`type(payload[k]).__name__` for every payload key (the project's own files stay as the docs
print them). One gateway runs for the whole module; each test waits for its own log lines.
"""

import json
import pathlib
import re
import shutil
import signal
import subprocess

import pytest

from helpers import Lines, free_port, stop

PROJECT = pathlib.Path(__file__).resolve().parents[2] / "projects" / "ignition"

# Logged first by each handler in the test's copy: the handler, the message's S/F and the type
# name of every payload value. One line, valid Python 2 and 3.
TYPES_LINE = (
    "import json as _j; _h = _j.loads(payload['Message'])['header']; "
    "system.util.getLogger('seeds.types').info('payload types %s S%dF%d %s' % ("
    "{handler!r}, _h['stream'], _h['function'], "
    "_j.dumps(dict((_k, type(payload[_k]).__name__) for _k in payload.keys()), sort_keys=True)))\n"
)

REALTIME = "SECSGEM.Gateway.onSecsGemRealtimeUpdate"
# The line the docs' onSecsGemRealtimeUpdate logs.
REALTIME_LINE = re.compile(
    r"INFO script: CommonID=(?P<CommonID>.*?), Equipment=(?P<Equipment>.*?), "
    r"Direction=(?P<Direction>.*?), RequestResponse=(?P<RequestResponse>.*?), "
    r"TxID=(?P<TxID>-?\d+), Reply=(?P<Reply>True|False), Message=(?P<Message>\{.*\}) "
    r'logger="' + re.escape(REALTIME) + '"$'
)
CUSTOM_LINE = re.compile(
    r"INFO script: S6F12Handler: Sending back response to S6F11 message:"
    r"Equipment=(?P<Equipment>.*?), TxID=(?P<TxID>\d+), SystemBytes=(?P<SystemBytes>\d+), "
    r'Message=(?P<Message>\{.*\}) logger="SECSGEM.Gateway.S6F12Handler"$'
)
TYPES = re.compile(r"payload types (?P<handler>\w+) (?P<sf>S\d+F\d+) (?P<types>\{.*\}) logger=")

# The S1F12 reply as the docs' "SECS/GEM Messages" page prints it.
DOCS_S1F12 = {
    "header": {"doc": "Status Variable Namelist Reply", "stream": 1, "function": 12, "reply": False},
    "body": [
        [
            {"doc": "SVID, Status Variable ID", "format": "U4", "value": 4},
            {"doc": "SVNAME, Status Variable Name", "format": "A", "value": "RandomBinaryData"},
            {"doc": "UNITS, Units Identifier", "format": "A", "value": "B"},
        ]
    ],
}

# The constants the docs' S2F13 asks for (200, 201, 203, 205, 206, 207), as sdl/simulator.toml
# defines them: (format, value).
CONSTANTS = [("F4", 25.5), ("U4", 120), ("Bool", True), ("U2", 30), ("A", "READY"), ("U1", 5)]

DEADLINE = 40  # seconds from the gateway's start for any awaited line


class Gateway:
    def __init__(self, proc, log_path):
        self.proc = proc
        self.log_path = log_path
        self.log = Lines(proc.stderr, copy_to=log_path)

    def lines(self):
        return self.log.text().splitlines()

    def wait(self, what, predicate, count=1):
        """The log lines matching `predicate` once there are `count` of them (waiting for each
        line as the gateway writes it); fails with the log when the deadline passes first."""
        try:
            return self.log.wait_for_all(predicate, count, DEADLINE)
        except AssertionError:
            raise AssertionError(f"no {what} in the log within {DEADLINE} s:\n" + self.log.text()) from None

    def json_after(self, prefix):
        """The JSON a startup line logs after `prefix`."""
        line = self.wait(prefix, lambda l: prefix in l)[0]
        text = line.split(prefix, 1)[1].rsplit(' logger="', 1)[0]
        return json.loads(text)

    def realtime(self, sf, count=1):
        """The parsed onSecsGemRealtimeUpdate lines for messages of `sf`."""

        def match(line):
            m = REALTIME_LINE.search(line)
            if not m:
                return None
            header = json.loads(m["Message"])["header"]
            return m if f"S{header['stream']}F{header['function']}" == sf else None

        return [match(l) for l in self.wait(f"realtime {sf} line", match, count)]

    def types(self, handler, sf):
        def match(line):
            m = TYPES.search(line)
            return m and m["handler"] == handler and m["sf"] == sf

        line = self.wait(f"payload types of {handler} for {sf}", match)[0]
        return json.loads(TYPES.search(line)["types"])


@pytest.fixture(scope="module")
def gateway(secsgate_bin, tmp_path_factory):
    root = tmp_path_factory.mktemp("ignition")
    project = root / "ignition"
    shutil.copytree(PROJECT, project)
    toml = project / "project.toml"
    toml.write_text(toml.read_text().replace("port = 5000", f"port = {free_port()}"))
    for handler in ("onSecsGemRealtimeUpdate", "S6F12Handler"):
        path = project / "handlers" / f"{handler}.py"
        path.write_text(TYPES_LINE.format(handler=handler) + path.read_text())
    check = subprocess.run([secsgate_bin, "check", str(project)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    log_path = root / "gateway.log"
    proc = subprocess.Popen(
        [secsgate_bin, "run", str(project), "--no-web"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    g = Gateway(proc, log_path)
    try:
        yield g
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        finally:
            stop(proc)
    g.log.thread.join(15)
    assert code == 0, g.log.text()


def test_project_files_are_the_docs_examples():
    """The handlers hold the docs' code as printed (Jython 2.7: print statements, `except
    Exception, e:`), and the SDL marks S2F14 as the docs' worked example says."""
    realtime = (PROJECT / "handlers" / "onSecsGemRealtimeUpdate.py").read_text()
    assert 'msg = "CommonID=" + commonID\n' in realtime
    assert 'logger = system.util.getLogger("SECSGEM.Gateway.onSecsGemRealtimeUpdate")\nlogger.info(msg)\n' in realtime
    custom = (PROJECT / "handlers" / "S6F12Handler.py").read_text()
    assert 'system.secsgem.sendResponse(txId, systemBytes, "S6F12", body, equipment)\n' in custom
    startup = (PROJECT / "handlers" / "onStartup.py").read_text()
    assert "\nprint response\n" in startup and "except Exception, e:" in startup
    assert 'transactionID = system.secsgem.sendRequest("S1F11", True, body, "Equip4")' in startup
    s2f14 = json.loads((PROJECT / "messages.sdl").read_text())["messages"]["S2"]["F14"]
    assert s2f14["realtime"] is True and s2f14["CommonID"] == ["ECV"]


def test_s1f11_gives_the_documented_s1f12(gateway):
    assert gateway.json_after("S1F12 response: ") == DOCS_S1F12
    # `print response` (a Python 2 print statement) goes to the log too.
    gateway.wait("printed S1F12", lambda l: 'stream="stdout"' in l and "'RandomBinaryData'" in l)


def test_s2f13_gives_the_constants(gateway):
    reply = gateway.json_after("S2F14 response: ")
    assert reply["header"] == {"doc": "Equipment Constant Data", "stream": 2, "function": 14, "reply": False}
    assert [(i["format"], i["value"]) for i in reply["body"]] == CONSTANTS
    assert {i["doc"] for i in reply["body"]} == {"ECV, Equipment Constant Value"}


def test_s2f23_starts_the_trace(gateway):
    reply = gateway.json_after("S2F24 response: ")
    assert reply["header"]["function"] == 24
    tiaack = reply["body"][0] if isinstance(reply["body"], list) else reply["body"]
    assert tiaack["format"] == "B" and tiaack["value"] == 0
    assert tiaack["doc"].startswith("TIAACK")


def test_custom_response_answers_s6f11_with_send_response(gateway):
    sent = gateway.wait("custom response sent", lambda l: "S6F12Handler: S612 response sent" in l, count=6)
    assert len(sent) >= 6  # the lot run's six event reports
    m = CUSTOM_LINE.search(gateway.wait("custom response log", lambda l: CUSTOM_LINE.search(l) is not None)[0])
    assert m["Equipment"] == "Equip4"
    message = json.loads(m["Message"])
    assert (message["header"]["stream"], message["header"]["function"], message["header"]["reply"]) == (6, 11, True)
    assert message["body"][1]["doc"].startswith("CEID")
    types = gateway.types("S6F12Handler", "S6F11")
    assert {k: types[k] for k in ("Equipment", "TxID", "SystemBytes", "Message")} == {
        "Equipment": "str",
        "TxID": "int",
        "SystemBytes": "int",
        "Message": "str",
    }
    log = "\n".join(gateway.lines())
    assert "sending the default reply" not in log, log


def test_realtime_payload_types(gateway):
    """Each key has the type the docs' handler relies on: it concatenates CommonID,
    Equipment, Direction, RequestResponse and Message to a str, and str()s TxID and Reply."""
    types = gateway.types("onSecsGemRealtimeUpdate", "S6F11")
    assert {k: types.get(k) for k in ("CommonID", "Equipment", "Direction", "RequestResponse", "TxID", "Reply", "Message")} == {
        "CommonID": "str",
        "Equipment": "str",
        "Direction": "str",
        "RequestResponse": "str",
        "TxID": "int",
        "Reply": "bool",
        "Message": "str",
    }


def test_realtime_handler_logs_event_reports_and_trace_data(gateway):
    """The docs' onSecsGemRealtimeUpdate runs unchanged for the S6F11 event reports and the
    S6F1 trace data (both realtime in the standard SDL)."""
    for m in gateway.realtime("S6F11", count=6):
        assert (m["Equipment"], m["Direction"], m["RequestResponse"], m["Reply"]) == (
            "Equip4", "Received", "Request", "True")
        assert m["CommonID"]
    trace = gateway.realtime("S6F1")[0]
    assert json.loads(trace["Message"])["header"]["doc"] == "Trace Data Send"
    assert (trace["Equipment"], trace["RequestResponse"]) == ("Equip4", "Request")
    log = "\n".join(gateway.lines())
    assert "onSecsGemRealtimeUpdate.py" not in log, log  # no traceback from the handler


def test_s2f14_reaches_the_realtime_handler(gateway):
    """The docs' "Message Handler Example Using the Simulator": S2F14 marked realtime in the
    SDL reaches onSecsGemRealtimeUpdate when the reply to the S2F13 arrives."""
    m = gateway.realtime("S2F14")[0]
    message = json.loads(m["Message"])
    assert [(i["format"], i["value"]) for i in message["body"]] == CONSTANTS
    assert (m["Equipment"], m["Direction"], m["RequestResponse"], m["Reply"]) == (
        "Equip4", "Received", "Response", "False")
    types = gateway.types("onSecsGemRealtimeUpdate", "S2F14")
    assert (types["CommonID"], types["TxID"], types["Reply"], types["Message"]) == ("str", "int", "bool", "str")


def test_s2f14_common_id_is_the_ecv_values(gateway):
    """messages.sdl gives S2F14 "CommonID": ["ECV"], as the docs' example does: the CommonID
    is the values of the constants, in order."""
    m = gateway.realtime("S2F14")[0]
    values = [i["value"] for i in json.loads(m["Message"])["body"]]
    assert m["CommonID"] == ",".join(v if isinstance(v, str) else json.dumps(v) for v in values)
    assert m["CommonID"] == "25.5,120,true,30,READY,5"


def test_event_and_trace_common_ids_are_ceid_and_trid(gateway):
    """The standard SDL's CommonID lists: CEID for S6F11, TRID for S6F1."""
    for m in gateway.realtime("S6F11", count=6):
        assert m["CommonID"] == str(json.loads(m["Message"])["body"][1]["value"])
    trace = gateway.realtime("S6F1")[0]
    assert trace["CommonID"] == str(json.loads(trace["Message"])["body"][0]["value"]) == "1"
