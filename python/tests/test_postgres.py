"""The message store in PostgreSQL: a gateway against `secsgate sim` walks GEM (establish
communication, are-you-there, status variables, a report defined, linked and enabled) with
`[store] url` set; a handler reads the walk back with `system.db.runPrepQuery` (a Dataset)
and round-trips values of every kind through `runPrepUpdate(..., getKey=True)`; psycopg checks
the rows independently; `secsgate log` reads them, by the project and by `--url`.

The server is the one scripts/test.sh starts (`SECSGATE_TEST_PG_URL`); without it the test
fails, unless `SECSGATE_SKIP_PG=1` says to skip it."""

import json
import os
import re
import signal
import subprocess
import textwrap

import pytest

from helpers import Lines, stop


def pg_url():
    url = os.environ.get("SECSGATE_TEST_PG_URL")
    if url:
        return url
    if os.environ.get("SECSGATE_SKIP_PG") == "1":
        pytest.skip("SECSGATE_SKIP_PG=1")
    pytest.fail(
        "SECSGATE_TEST_PG_URL is not set: run scripts/test.sh, or start a server with "
        "`scripts/pg.sh start DIR` and export SECSGATE_TEST_PG_URL=<the URL it prints> "
        "(SECSGATE_SKIP_PG=1 skips this test)"
    )


STARTUP = r'''
import json, os
log = system.util.getLogger("walk")
db = system.db
name = GATEWAY
tool = "Tool1"

def req(sf, body):
    tx = system.secsgem.sendRequest(sf, True, body, tool)
    return system.secsgem.getResponse(tx, tool, 10)

req("S1F1", "")
req("S1F3", [{"format": "U4", "value": 2001}])
req("S2F33", [{"format": "U4", "value": 1}, [[{"format": "U4", "value": 9000}, [{"format": "U4", "value": 2001}]]]])
req("S2F35", [{"format": "U4", "value": 2}, [[{"format": "U4", "value": 102}, [{"format": "U4", "value": 9000}]]]])
req("S2F37", [{"format": "Bool", "value": True}, []])

# The store writes behind the gateway: wait (bounded) until the last reply is in. A script
# has no event for "rows written", so this reads again every 50 ms.
sql = ('SELECT "ID", "StreamFunction", "Direction", "Gateway", "Reply", "Raw", "MessageName" '
       'FROM "SECSGEM_Messages" WHERE "Gateway" = ? ORDER BY "ID"')
# On a new database the table itself comes with the store's first batch.
for _ in range(400):
    try:
        ds = db.runPrepQuery(sql, [name])
    except system.db.DatabaseError as e:
        if "does not exist" not in str(e):
            raise
        ds = None
    if ds is not None and "S2F38" in [ds.getValueAt(r, "StreamFunction") for r in range(ds.getRowCount())]:
        break
    import time
    time.sleep(0.05)
rows = []
for r in range(ds.getRowCount()):
    raw = ds.getValueAt(r, "Raw")
    rows.append([ds.getValueAt(r, "StreamFunction"), ds.getValueAt(r, "Direction"),
                 ds.getValueAt(r, "Gateway"), ds.getValueAt(r, "Reply"),
                 type(raw).__name__, type(ds.getValueAt(r, "ID")).__name__])

# Values both ways, and the new row's key.
table = '"' + NOTES + '"'
db.runUpdateQuery('CREATE TABLE ' + table + ' (id BIGSERIAL PRIMARY KEY, note TEXT, n BIGINT, '
                  'f DOUBLE PRECISION, b BYTEA, ok BOOLEAN, nothing TEXT, amount NUMERIC(10,2))')
k1 = db.runPrepUpdate('INSERT INTO ' + table + ' (note, n, f, b, ok, nothing, amount) VALUES (?, ?, ?, ?, ?, ?, ?)',
                      ["it's ? here", 2**40, 1.5, b"\x00\x01\xff", True, None, 12.34], getKey=True)
k2 = db.runPrepUpdate('INSERT INTO ' + table + ' (note) VALUES (?) RETURNING id', ["second"], getKey=True)
changed = db.runPrepUpdate('UPDATE ' + table + ' SET n = n + ? WHERE id = ?', [1, k1])
back = db.runPrepQuery('SELECT note, n, f, b, ok, nothing, amount FROM ' + table + ' WHERE id = ?', [k1])
values = [back.getValueAt(0, c) for c in range(back.getColumnCount())]
types = [type(v).__name__ for v in values]
values[3] = list(bytearray(values[3]))
out = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "out", "walk.json")
with open(out + ".tmp", "w") as f:
    json.dump({"rows": rows, "columns": list(ds.getColumnNames()), "keys": [k1, k2], "changed": changed,
               "values": values, "types": types}, f)
os.replace(out + ".tmp", out)
log.info("walk checked")
'''


def test_gem_walk_logged_to_postgres_and_read_back(secsgate_bin, secsgate, tmp_path):
    url = pg_url()
    psycopg = pytest.importorskip("psycopg")
    name = f"pytest-{os.getpid()}"
    notes = f"pytest_notes_{os.getpid()}"
    sim = subprocess.Popen(
        [secsgate_bin, "sim", "--port", "0", "--spool-dir", str(tmp_path / "spool")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    gateway = None
    try:
        sim_lines = Lines(sim.stderr)
        port = int(re.search(r"simulator listening on 127\.0\.0\.1:(\d+)",
                             sim_lines.wait_for(r"simulator listening on")).group(1))
        project = tmp_path / "project"
        (project / "handlers").mkdir(parents=True)
        (project / "out").mkdir()
        (project / "project.toml").write_text(textwrap.dedent(f"""
            [gateway]
            name = "{name}"
            startup_wait = 15

            [store]
            url = "{url}"
            batch = 8

            [[equipment]]
            name = "Tool1"
            mode = "active"
            address = "127.0.0.1"
            port = {port}
            timers = {{ t5 = 1 }}
        """))
        (project / "handlers" / "onStartup.py").write_text(
            STARTUP.replace("GATEWAY", json.dumps(name)).replace("NOTES", json.dumps(notes)))
        gateway = subprocess.Popen(
            [secsgate_bin, "run", str(project), "--no-web"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        lines = Lines(gateway.stderr)
        done = lines.wait_for(r"walk checked|handler raised", timeout=60)
        assert "walk checked" in done, lines.text()
        walk = json.loads((project / "out" / "walk.json").read_text())

        # What the handler read with system.db: the walk, in order, a Dataset of typed values.
        sfs = [r[0] for r in walk["rows"]]
        for sf in ["S1F13", "S1F14", "S1F1", "S1F2", "S1F3", "S1F4", "S2F33", "S2F34", "S2F35", "S2F36",
                   "S2F37", "S2F38"]:
            assert sf in sfs, (sf, walk["rows"])
        assert sfs.index("S1F1") < sfs.index("S1F3") < sfs.index("S2F37")
        s1f3 = walk["rows"][sfs.index("S1F3")]
        assert s1f3 == ["S1F3", "Sent", name, True, "bytes", "int"], s1f3
        s1f4 = walk["rows"][sfs.index("S1F4")]
        assert s1f4[:4] == ["S1F4", "Received", name, False], s1f4
        assert walk["columns"] == ["ID", "StreamFunction", "Direction", "Gateway", "Reply", "Raw", "MessageName"]
        k1, k2 = walk["keys"]
        assert k1 >= 1 and k2 == k1 + 1, walk["keys"]
        assert walk["changed"] == 1
        assert walk["values"] == ["it's ? here", 2**40 + 1, 1.5, [0, 1, 255], True, None, 12.34], walk["values"]
        assert walk["types"] == ["str", "int", "float", "bytes", "bool", "NoneType", "float"], walk["types"]

        # The same rows, checked independently.
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                'SELECT "StreamFunction", "Direction", "Gateway", "Equipment", "Reply", "SML", "Raw", "Timestamp" '
                'FROM "SECSGEM_Messages" WHERE "Gateway" = %s ORDER BY "ID"', (name,)).fetchall()
            assert [r[0] for r in rows][: len(sfs)] == sfs
            by_sf = {r[0]: r for r in rows}
            assert by_sf["S1F3"][1:5] == ("Sent", name, "Tool1", True)
            assert by_sf["S1F3"][5].startswith("S1F3 W <L [1] <U4 2001>>"), by_sf["S1F3"][5]
            assert bytes(by_sf["S1F3"][6])[:2] == b"\x01\x01", "a list of one"
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", by_sf["S1F3"][7])
            status = conn.execute(
                'SELECT "Status" FROM "SECSGEM_EquipmentInfo" WHERE "Gateway" = %s AND "Equipment" = %s',
                (name, "Tool1")).fetchone()
            assert status is not None
            conn.execute(f'DROP TABLE "{notes}"')

        # secsgate log: by the project (its [store] url), and by --url with a gateway filter.
        out = secsgate("log", str(project), "--gateway", name, "--sf", "S1F3")
        assert out.returncode == 0, out.stderr
        assert re.search(r"Tool1 Sent Request .*S1F3 W <L \[1\] <U4 2001>>", out.stdout), out.stdout
        out = secsgate("log", "--url", url, "--gateway", name, "--json")
        assert out.returncode == 0, out.stderr
        logged = [json.loads(line) for line in out.stdout.splitlines()]
        assert [m["StreamFunction"] for m in logged][: len(sfs)] == sfs
        assert {m["Gateway"] for m in logged} == {name}
        out = secsgate("log", "--url", "mysql://x@127.0.0.1/db")
        assert out.returncode != 0 and "not a PostgreSQL URL" in out.stderr, out.stderr
    finally:
        if gateway is not None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(timeout=15)
            finally:
                stop(gateway)
        stop(sim)
