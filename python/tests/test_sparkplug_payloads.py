"""Sparkplug B interop: the payloads secsgate's north::sparkplug module builds (NDEATH will,
NBIRTH, DBIRTH, DDATA, DDEATH) decode with pysparkplug, an independent implementation, to the
expected metrics, datatypes, values and seq."""

import os
import subprocess

import pysparkplug
import pytest
from conftest import REPO
from sparkplug_decode import BOOLEAN, DOUBLE, INT64, STRING, UINT64, decode, metrics_by_name

T0 = 1_700_000_000_000
KINDS = ["NDEATH", "NBIRTH", "DBIRTH", "DDATA", "DDEATH"]


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Runs the Rust test that writes the sample payloads; returns {kind: (topic, bytes)}."""
    out = tmp_path_factory.mktemp("sparkplug")
    env = dict(os.environ, SECSGATE_SPARKPLUG_SAMPLES=str(out))
    run = subprocess.run(
        ["cargo", "test", "--quiet", "--lib", "north::sparkplug::tests::interop_samples", "--", "--exact"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout, run.stdout
    return {k: ((out / f"{k}.topic").read_text(), (out / f"{k}.bin").read_bytes()) for k in KINDS}


def test_topics(samples):
    node = "spBv1.0/secsgate/{}/gw1"
    assert samples["NDEATH"][0] == node.format("NDEATH")
    assert samples["NBIRTH"][0] == node.format("NBIRTH")
    for kind in ["DBIRTH", "DDATA", "DDEATH"]:
        assert samples[kind][0] == node.format(kind) + "/Equip4"
        # pysparkplug parses the topic the same way
        topic = pysparkplug.Topic.from_str(samples[kind][0])
        assert (topic.group_id, topic.edge_node_id, topic.device_id) == ("secsgate", "gw1", "Equip4")
        assert topic.message_type == getattr(pysparkplug.MessageType, kind)


def test_ndeath_and_nbirth_carry_the_same_bd_seq(samples):
    ndeath = decode(samples["NDEATH"][1])
    assert ndeath["seq"] is None
    assert ndeath["timestamp"] == T0
    assert ndeath["metrics"] == [{"name": "bdSeq", "datatype": UINT64, "value": 7, "is_null": False}]
    # pysparkplug's own NDEATH type reads it too
    assert pysparkplug.NDeath.decode(samples["NDEATH"][1]).bd_seq_metric.value == 7

    nbirth = decode(samples["NBIRTH"][1])
    assert nbirth["seq"] == 0
    assert nbirth["timestamp"] == T0 + 1
    m = metrics_by_name(nbirth)
    assert list(m) == ["bdSeq", "Node Control/Rebirth", "Properties/Version", "Properties/Equipment Count"]
    assert (m["bdSeq"]["datatype"], m["bdSeq"]["value"]) == (UINT64, 7)
    assert (m["Node Control/Rebirth"]["datatype"], m["Node Control/Rebirth"]["value"]) == (BOOLEAN, False)
    assert m["Properties/Version"]["datatype"] == STRING
    assert m["Properties/Version"]["value"]
    assert (m["Properties/Equipment Count"]["datatype"], m["Properties/Equipment Count"]["value"]) == (UINT64, 0)
    assert pysparkplug.NBirth.decode(samples["NBIRTH"][1]).seq == 0


def test_dbirth_metrics_datatypes_and_values(samples):
    dbirth = decode(samples["DBIRTH"][1])
    assert dbirth["seq"] == 2  # NBIRTH 0, NDATA (equipment count) 1
    assert dbirth["timestamp"] == T0 + 2
    got = {m["name"]: (m["datatype"], m["value"], m["is_null"]) for m in dbirth["metrics"]}
    assert got == {
        "Status": (STRING, "Communicating", False),
        "Enabled": (BOOLEAN, True, False),
        "MessagesReceived": (INT64, 42, False),
        "Offset": (INT64, -5, False),
        "Big": (UINT64, 18446744073709551615, False),
        "Ratio": (DOUBLE, 0.25, False),
        "Missing": (STRING, None, True),
        "Messages/S6F11/4001/Body/0/1": (STRING, '[1,"a"]', False),
    }
    # a birth pysparkplug accepts: every metric named and typed
    birth = pysparkplug.DBirth.decode(samples["DBIRTH"][1])
    assert all(metric.timestamp == T0 + 2 for metric in birth.metrics)


def test_ddata_holds_only_the_changed_metrics(samples):
    ddata = decode(samples["DDATA"][1])
    assert ddata["seq"] == 3
    assert ddata["timestamp"] == T0 + 3
    assert ddata["metrics"] == [
        {"name": "MessagesReceived", "datatype": INT64, "value": 43, "is_null": False},
        {"name": "Ratio", "datatype": DOUBLE, "value": 0.5, "is_null": False},
    ]
    assert pysparkplug.DData.decode(samples["DDATA"][1]).seq == 3


def test_ddeath(samples):
    ddeath = decode(samples["DDEATH"][1])
    assert (ddeath["seq"], ddeath["timestamp"], ddeath["metrics"]) == (4, T0 + 4, [])
    assert pysparkplug.DDeath.decode(samples["DDEATH"][1]).seq == 4
