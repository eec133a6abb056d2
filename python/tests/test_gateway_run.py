"""`secsgate run` and `secsgate check` as processes: a project whose handlers talk to a
secsgem==0.3.0 equipment, config and script errors, a clean stop on SIGTERM, and the
system.pyi stubs matching the module the handlers see."""

import ast
import json
import pathlib
import signal
import subprocess
import textwrap
import time

import pytest

from helpers import free_port, start_equipment, stop

STUBS = pathlib.Path(__file__).resolve().parents[1] / "system.pyi"


def write_project(root, toml, files):
    (root / "handlers").mkdir(parents=True, exist_ok=True)
    (root / "lib").mkdir(exist_ok=True)
    (root / "out").mkdir(exist_ok=True)
    (root / "project.toml").write_text(textwrap.dedent(toml))
    for name, text in files.items():
        (root / name).write_text(textwrap.dedent(text))
    return root


EMIT = """
import json, os
def emit(name, value):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "out", name + ".json")
    with open(path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)
"""


def wait_for(path, timeout=20):
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} not written within {timeout} s")


def run_gateway(secsgate_bin, project):
    return subprocess.Popen(
        [secsgate_bin, "run", str(project), "--no-web"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_handlers_against_secsgem_equipment(secsgate, secsgate_bin, tmp_path):
    port = free_port()
    equipment = start_equipment("passive", port)
    project = write_project(
        tmp_path / "p",
        f"""
        [gateway]
        startup_wait = 10

        [[equipment]]
        name = "Tool1"
        port = {port}
        timers = {{ t5 = 0.5 }}
        realtime = ["S1F13"]          # the standard SDL does not mark S1F13 realtime
        """,
        {
            "lib/out.py": EMIT,
            "handlers/onStartup.py": """
                import out
                sg = system.secsgem
                tx = sg.sendRequest("S1F3", True, [{"format": "U4", "value": 10}, {"format": "U4", "value": 11}], "Tool1")
                svs = sg.getResponse(tx, "Tool1", 5)
                tx = sg.sendRequest("S2F13", True, "[]", "Tool1")
                ecs = sg.getResponse(tx, "Tool1", 5)
                tx = sg.sendRequest("S2F17", True, "", "Tool1")   # secsgem has no handler: S9F5
                s9 = sg.getResponse(tx, "Tool1", 5)
                out.emit("startup", {"payload": payload, "svs": svs, "ecs": ecs, "s9": s9,
                                     "api": sorted(n for n in dir(sg) if not n.startswith("_")),
                                     "util": sorted(n for n in dir(system.util) if not n.startswith("_")),
                                     "tag": sorted(n for n in dir(system.tag) if not n.startswith("_")),
                                     "db": sorted(n for n in dir(system.db) if not n.startswith("_"))})
            """,
            "handlers/onSecsGemRealtimeUpdate.py": """
                import out
                out.emit("realtime_" + payload["StreamFunction"], payload)
            """,
        },
    )
    gateway = run_gateway(secsgate_bin, project)
    try:
        try:
            startup = wait_for(project / "out" / "startup.json")
        except AssertionError as e:
            stop(gateway)
            raise AssertionError(f"{e}\ngateway log:\n{gateway.stderr.read()}") from None
        assert startup["payload"] == {"Equipment": ["Tool1"], "Communicating": ["Tool1"]}
        # No sdl key: the standard catalogue adds each item's doc.
        assert startup["svs"]["header"]["doc"] == "Selected Equipment Status Data"
        assert startup["svs"]["body"] == [
            {"doc": "SV, Status Variable Value", "format": "U4", "value": 23},
            {"doc": "SV, Status Variable Value", "format": "A", "value": "LOT-1"},
        ]
        assert {"doc": "ECV, Equipment Constant Value", "format": "U4", "value": 300} in startup["ecs"]["body"]
        assert startup["s9"]["header"]["stream"] == 9 and startup["s9"]["header"]["function"] == 5
        # secsgem's equipment opens with S1F13: the realtime handler saw it.
        s1f13 = wait_for(project / "out" / "realtime_S1F13.json")
        assert s1f13["Equipment"] == "Tool1" and s1f13["Reply"] is True
        assert json.loads(s1f13["Message"])["body"][0] == {"format": "A", "value": "secsgem"}
        # The stubs list exactly what the module has.
        stub = ast.parse(STUBS.read_text())
        classes = {c.name: c for c in stub.body if isinstance(c, ast.ClassDef)}
        def names(cls):
            return sorted(n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)))
        assert names(classes["secsgem"]) == startup["api"]
        assert names(classes["util"]) == startup["util"]
        assert names(classes["tag"]) == startup["tag"]
        assert names(classes["db"]) == startup["db"]
        # `secsgate tags` shows the running gateway's tags (its snapshot follows within 1 s).
        deadline = time.monotonic() + 20
        while True:
            tags = secsgate("tags", str(project))
            if "[SECSGEM]Tool1/Status = Communicating" in tags.stdout:
                break
            assert time.monotonic() < deadline, tags.stdout + tags.stderr
            time.sleep(0.1)
        assert tags.stdout.startswith("# tags of the running gateway (pid "), tags.stdout
        assert "[SECSGEM]Tool1/MessagesReceived = " in tags.stdout
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            assert gateway.wait(timeout=15) == 0
        finally:
            stop(gateway)
            stop(equipment)
    log = gateway.stderr.read()
    assert "stopping" in log
    # Stopped: the last snapshot says so.
    tags = secsgate("tags", str(project))
    assert tags.stdout.startswith("# the gateway is not running"), tags.stdout
    assert "[SECSGEM]Tool1/Status = Disabled" in tags.stdout, tags.stdout
    assert json.loads(secsgate("tags", "--json", str(project)).stdout)["running"] is False


def test_run_refuses_a_bad_config_with_file_and_line(secsgate, tmp_path):
    project = write_project(tmp_path / "bad", """
        [[equipment]]
        name = "T"
        port = 5000
        mode = "sideways"
        """, {})
    out = secsgate("run", str(project))
    assert out.returncode == 2
    assert "project.toml:5: equipment[0].mode: 'sideways' is not a mode" in out.stderr


def test_check(secsgate, tmp_path):
    good = write_project(tmp_path / "good", """
        [[equipment]]
        name = "T"
        port = 5000
        """, {"handlers/onStartup.py": "print 'python 2 is fine'\n", "lib/x.py": "X = 1\n"})
    out = secsgate("check", str(good))
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout

    bad = write_project(tmp_path / "bad", """
        [gateway]
        workers = 0

        [[equipment]]
        name = "T"
        port = 5000
        """, {"handlers/h.py": "if True\n    pass\n"})
    out = secsgate("check", str(bad))
    assert out.returncode == 1
    assert "project.toml:3: gateway.workers: 0 is out of range 1..=64" in out.stderr
    assert 'h.py", line 1' in out.stderr and "SyntaxError" in out.stderr
    assert "2 problem(s)" in out.stderr
