"""A fleet: two gateways, each with its own equipment (a simulated tool in each), sharing one MQTT
broker and one PostgreSQL database. Both publish on their own topics, and both write the same
tables, each row naming its gateway. The broker and the database are the servers scripts/test.sh
starts (`SECSGATE_TEST_MQTT_PORT`, `SECSGATE_TEST_PG_URL`)."""

import json
import os

import pytest

from mqtt_helpers import Gateway, Subscriber, project
from test_postgres import pg_url


def test_two_gateways_share_the_broker_and_the_database(secsgate_bin, tmp_path, broker):
    broker_port = broker
    url = pg_url()
    psycopg = pytest.importorskip("psycopg")
    names = [f"fleet{os.getpid()}a", f"fleet{os.getpid()}b"]
    sub = Subscriber(broker_port, [f"secsgate/{n}/#" for n in names])
    gateways = []
    try:
        for n in names:
            folder = project(tmp_path, n, broker_port)
            toml = folder / "project.toml"
            toml.write_text(toml.read_text() + f'\n[store]\nurl = "{url}"\nbatch = 64\n')
            gateways.append(Gateway(secsgate_bin, folder))
        # Each demo's onStartup runs a lot on its own simulator: six event reports each.
        for n in names:
            reports = [json.loads(p) for _, p, _ in sub.wait_on(f"secsgate/{n}/Tool1/S6F11", 6)]
            assert {r["gateway"] for r in reports} == {n}
            assert [r["message"]["body"][1]["value"] for r in reports[:6]] == [102, 100, 101, 100, 101, 103]
    finally:
        # A clean stop writes everything the stores hold.
        for g in gateways:
            g.stop()
        sub.close()
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            'SELECT "Gateway", "Equipment", COUNT(*) FROM "SECSGEM_Messages" '
            'WHERE "Gateway" = ANY(%s) AND "StreamFunction" = %s GROUP BY 1, 2 ORDER BY 1',
            (names, "S6F11"),
        ).fetchall()
        assert rows == [(names[0], "Tool1", 6), (names[1], "Tool1", 6)], rows
        info = conn.execute(
            'SELECT "Gateway", "Equipment", "Status" FROM "SECSGEM_EquipmentInfo" WHERE "Gateway" = ANY(%s) ORDER BY 1',
            (names,),
        ).fetchall()
        assert [(g, e) for g, e, _ in info] == [(names[0], "Tool1"), (names[1], "Tool1")], info
