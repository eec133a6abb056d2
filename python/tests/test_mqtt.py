"""The gateway's MQTT publisher against a real broker (Debian's mosquitto, on a loopback port),
checked by an independent client (paho-mqtt): messages and statuses as JSON on the documented
topics, a request and its reply through MQTT, the credentials rule for requests, and the
broker stopped for 30 s during an event run (every message arrives, in order; `seq` lets the
consumer drop the repeats QoS 1 allows)."""

import json
import os
import subprocess

import pytest

from mqtt_helpers import REPO, Broker, Gateway, Subscriber, project

# How long the broker stays down in the outage test (the scenario: 30 s).
OUTAGE_SECONDS = float(os.environ.get("SECSGATE_TEST_OUTAGE_SECONDS", "30"))


def burst_config(events):
    """The default simulator config with a run of `events` event reports, 100 ms apart."""
    text = (REPO / "sdl" / "simulator.toml").read_text()
    return text + f'\n[[event_run]]\nname = "burst"\nrepeat = {events}\n\n[[event_run.step]]\ndelay = "100ms"\nevent = 100\n'


def test_messages_and_statuses_are_published_as_json(secsgate_bin, tmp_path, broker):
    sub = Subscriber(broker, ["secsgate/mq1/#"])
    gw = Gateway(secsgate_bin, project(tmp_path, "mq1", broker))
    try:
        # The demo's onStartup starts the simulator's lot run: six event reports, CEIDs 102,
        # 100, 101, 100, 101, 103.
        reports = sub.wait_on("secsgate/mq1/Tool1/S6F11", 6)
        first = json.loads(reports[0][1])
        assert first["gateway"] == "mq1" and first["equipment"] == "Tool1"
        assert first["direction"] == "Received" and first["streamFunction"] == "S6F11"
        assert isinstance(first["seq"], int) and isinstance(first["txId"], int)
        assert isinstance(first["systemBytes"], int)
        assert first["timestamp"].endswith("Z") and len(first["timestamp"]) == 24
        assert first["message"]["header"] == {"stream": 6, "function": 11, "reply": True}
        body = first["message"]["body"]
        assert [i["format"] for i in body[:2]] == ["U4", "U4"]
        ceids = [json.loads(p)["message"]["body"][1]["value"] for _, p, _ in reports[:6]]
        assert ceids == [102, 100, 101, 100, 101, 103]
        assert [json.loads(p)["commonId"] for _, p, _ in reports[:6]] == [str(c) for c in ceids]
        seqs = [json.loads(p)["seq"] for _, p, _ in sub.on("secsgate/mq1/Tool1/+")]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # Statuses: every change, in order, and the last one retained for late subscribers.
        statuses = [s["status"] for s in sub.json_on("secsgate/mq1/Tool1/status")]
        assert statuses[-1] == "Communicating", statuses
        assert sub.json_on("secsgate/mq1/status")[-1] == {"online": True, "gateway": "mq1"}
        late = Subscriber(broker, ["secsgate/mq1/Tool1/status"])
        try:
            (topic, payload, retained), = late.wait_on("secsgate/mq1/Tool1/status")
            assert retained and json.loads(payload)["status"] == "Communicating"
        finally:
            late.close()
        # Only what the SDL marks realtime or SQLTags: the S1F13 of the handshake is not.
        assert not sub.on("secsgate/mq1/Tool1/S1F13")
        # The web console and /metrics show the publisher.
        mqtt = json.loads(gw.get("/api/overview"))["mqtt"]
        assert mqtt["connected"] is True and mqtt["published"] >= 6 and mqtt["dropped"] == 0, mqtt
        metrics = gw.get("/metrics")
        assert "\nsecsgate_mqtt_connected 1\n" in metrics and "\nsecsgate_mqtt_queued 0\n" in metrics, metrics
        # A clean stop says the gateway is offline (retained), as its last will would.
        gw.stop()
        sub.wait(lambda: sub.json_on("secsgate/mq1/status")[-1]["online"] is False, "the offline status")
    finally:
        gw.stop()
        sub.close()


def test_a_request_and_its_reply_through_mqtt(secsgate_bin, tmp_path, broker):
    sub = Subscriber(broker, ["secsgate/mq2/+/response"])
    gw = Gateway(secsgate_bin, project(tmp_path, "mq2", broker, "commands = true\n", startup=False))
    try:
        gw.lines.wait_for(r"equipment status.*to=Communicating")
        gw.lines.wait_for(r"MQTT: subscribed topic=secsgate/mq2/\+/request")
        request = {"correlationId": "r-1", "message": {"header": {"stream": 1, "function": 3, "reply": True}, "body": [{"format": "U4", "value": 1}]}}
        sub.publish("secsgate/mq2/Tool1/request", json.dumps(request))
        (topic, payload, _), = sub.wait_on("secsgate/mq2/Tool1/response")[:1]
        reply = json.loads(payload)
        assert reply["correlationId"] == "r-1" and reply["ok"] is True, reply
        assert reply["reply"]["header"] == {"stream": 1, "function": 4, "reply": False}
        assert len(reply["reply"]["body"]) == 1 and isinstance(reply["txId"], int)
        # SML works too; a correlation ID may be any JSON value.
        sub.publish("secsgate/mq2/Tool1/request", json.dumps({"correlationId": 7, "sml": "S1F1 W ."}))
        # Bad requests get an answer that says why.
        sub.publish("secsgate/mq2/Tool1/request", json.dumps({"correlationId": "bad", "message": {"header": {"stream": 1}}}))
        sub.publish("secsgate/mq2/Tool1/request", b"not json")
        sub.publish("secsgate/mq2/NoSuchTool/request", json.dumps({"correlationId": "nobody", "sml": "S1F1 W ."}))
        sub.wait(lambda: len({json.dumps(json.loads(p)["correlationId"]) for _, p, _ in sub.on("secsgate/mq2/+/response")}) >= 5, "five answers")
        answers = {json.dumps(r["correlationId"]): r for r in sub.json_on("secsgate/mq2/+/response")}
        assert answers["7"]["ok"] is True and answers["7"]["reply"]["header"]["function"] == 2
        assert answers['"bad"']["ok"] is False and "header.function" in answers['"bad"']["error"]
        assert answers["null"]["ok"] is False and "not JSON" in answers["null"]["error"]
        assert answers['"nobody"']["ok"] is False and "unknown equipment" in answers['"nobody"']["error"]
        assert [t for t, _, _ in sub.on("secsgate/mq2/NoSuchTool/response")], "answered on the topic asked"
    finally:
        gw.stop()
        sub.close()


def test_requests_need_the_password_when_one_is_set(secsgate_bin, tmp_path, broker):
    sub = Subscriber(broker, ["secsgate/mq3/+/response"])
    gw = Gateway(secsgate_bin, project(tmp_path, "mq3", broker, "commands = true\n", startup=False), env={"SECSGATE_MQTT_COMMAND_PASSWORD": "s3cret"})
    try:
        gw.lines.wait_for(r"equipment status.*to=Communicating")
        gw.lines.wait_for(r"MQTT: subscribed topic=secsgate/mq3/\+/request")
        wrong = {"correlationId": "w", "sml": "S1F1 W .", "password": "guess"}
        sub.publish("secsgate/mq3/Tool1/request", json.dumps(wrong))
        (_, payload, _), = sub.wait_on("secsgate/mq3/Tool1/response")[:1]
        assert json.loads(payload)["ok"] is False and "password" in json.loads(payload)["error"]
        sub.publish("secsgate/mq3/Tool1/request", json.dumps({**wrong, "correlationId": "r", "password": "s3cret"}))
        sub.wait(lambda: any(r["correlationId"] == "r" for r in sub.json_on("secsgate/mq3/Tool1/response")), "the answer to r")
        (right,) = [r for r in sub.json_on("secsgate/mq3/Tool1/response") if r["correlationId"] == "r"]
        assert right["ok"] is True and right["reply"]["header"]["function"] == 2
    finally:
        gw.stop()
        sub.close()


def test_requests_from_a_remote_broker_need_a_password(secsgate_bin, tmp_path):
    folder = project(tmp_path, "mq4", 1883, "commands = true\n")
    toml = folder / "project.toml"
    toml.write_text(toml.read_text().replace('url = "mqtt://127.0.0.1:1883"', 'url = "mqtt://broker.fab.example:1883"'))
    line = next(i for i, l in enumerate(toml.read_text().splitlines(), 1) if "broker.fab.example" in l)
    done = subprocess.run([secsgate_bin, "run", str(folder), "--no-web"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"project.toml:{line}: mqtt.commands" in done.stderr and "command_password" in done.stderr, done.stderr
    # `secsgate check` says the same.
    checked = subprocess.run([secsgate_bin, "check", str(folder)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 1 and f"project.toml:{line}: mqtt.commands" in checked.stderr, checked.stderr


def test_a_broker_outage_loses_nothing_and_keeps_the_order(secsgate_bin, tmp_path):
    broker = Broker(tmp_path / "own-broker").start()
    events = 400
    # A persistent session: the broker keeps what arrives for it while it is away too.
    sub = Subscriber(broker.port, ["secsgate/mq5/Tool1/+"], session="outage-checker")
    folder = project(tmp_path, "mq5", broker.port, "reconnect_max = 1\n", sim_config=burst_config(events), startup=False)
    gw = Gateway(secsgate_bin, folder)
    try:
        gw.lines.wait_for(r"events enabled")
        assert gw.start_run("burst")["started"] is True
        sub.wait_on("secsgate/mq5/Tool1/S6F11", 20)
        broker.stop()
        gw.lines.wait_for(r"MQTT broker unreachable")
        # The broker stays down for the scenario's 30 s while the run goes on (about 300 of its
        # 400 reports are made meanwhile); this is the outage, not a wait for something.
        import time
        time.sleep(OUTAGE_SECONDS)
        during = len(sub.on("secsgate/mq5/Tool1/S6F11"))
        assert during < events, "the run must go on past the outage"
        broker.start()
        gw.lines.wait_for(r"MQTT broker reachable again")
        # The broker restarted with messages it had sent to the subscriber but not seen
        # acknowledged: it sends those again, marked DUP (MQTT's QoS 1 between it and the
        # subscriber). `seq` is what lets a consumer drop them, and what the test checks: in
        # order and none missing, once repeats are dropped.
        def distinct(topic_filter):
            seen, out = set(), []
            for _, p, retained in sub.on(topic_filter):
                m = json.loads(p)
                if not retained and m["seq"] not in seen:
                    seen.add(m["seq"])
                    out.append(m)
            return out

        sub.wait(lambda: len(distinct("secsgate/mq5/Tool1/S6F11")) >= events, f"{events} distinct reports", timeout=120)
        dataids = [m["message"]["body"][0]["value"] for m in distinct("secsgate/mq5/Tool1/S6F11")]
        assert dataids == list(range(dataids[0], dataids[0] + events)), dataids
        # (A retained status comes again with each subscription: the broker's copy, not ours.)
        everything = [m["seq"] for m in distinct("secsgate/mq5/Tool1/+")]
        assert everything == list(range(everything[0], everything[0] + len(everything))), "in order, no gap"
        # Repeats the broker did not mark as its own are the gateway's: QoS 1 allows those
        # only for what was in flight when the connection broke (256 at most).
        arrivals = [(p, dup) for (_, p, retained), dup in zip(sub.on("secsgate/mq5/Tool1/+"), sub.dup_flags("secsgate/mq5/Tool1/+")) if not retained]
        seen, resent = set(), 0
        for p, dup in arrivals:
            seq = json.loads(p)["seq"]
            if seq in seen and not dup:
                resent += 1
            seen.add(seq)
        assert resent <= 256, resent
        unreachable = [l for l in gw.lines.lines if "MQTT broker unreachable" in l]
        assert len(unreachable) == 1, unreachable
    finally:
        gw.stop()
        sub.close()
        broker.stop()


def test_tags_as_sparkplug_b_read_by_an_independent_decoder(secsgate_bin, tmp_path, broker):
    import pysparkplug
    from sparkplug_decode import BOOLEAN, INT64, STRING, UINT64, decode, metrics_by_name

    sub = Subscriber(broker, ["spBv1.0/fab1/#"])
    folder = project(tmp_path, "mq6", broker, '[mqtt.sparkplug]\ngroup_id = "fab1"\n')
    gw = Gateway(secsgate_bin, folder)
    try:
        (_, nbirth, _), = sub.wait_on("spBv1.0/fab1/NBIRTH/mq6")[:1]
        nbirth = decode(nbirth)
        node = metrics_by_name(nbirth)
        assert nbirth["seq"] == 0
        assert node["bdSeq"]["datatype"] == UINT64
        assert node["Node Control/Rebirth"] == {"name": "Node Control/Rebirth", "datatype": BOOLEAN, "value": False, "is_null": False}
        assert node["Properties/Equipment Count"]["value"] == 1
        bd_seq = node["bdSeq"]["value"]
        (_, dbirth, _), = sub.wait_on("spBv1.0/fab1/DBIRTH/mq6/Tool1")[:1]
        dbirth = decode(dbirth)
        assert dbirth["seq"] == 1
        tool = metrics_by_name(dbirth)
        assert tool["Enabled"]["datatype"] == BOOLEAN and tool["Enabled"]["value"] is True
        assert tool["Status"]["datatype"] == STRING
        assert tool["MessagesReceived"]["datatype"] == INT64
        # The lot run's reports change the counters (and the status on the way): DDATA with
        # only what changed, each message's seq one more than the last.
        gw.lines.wait_for(r"started the simulator's 'lot' event run")
        data = [decode(p) for _, p, _ in sub.wait_on("spBv1.0/fab1/DDATA/mq6/Tool1")]
        assert all(0 < len(d["metrics"]) < len(tool) for d in data), data
        assert "MessagesReceived" in metrics_by_name(data[0]), data[0]
        seqs = [decode(p)["seq"] for t, p, _ in sub.on("spBv1.0/fab1/#") if "/NDEATH/" not in t]
        assert all((b - a) % 256 == 1 for a, b in zip(seqs, seqs[1:]) if b != 0), seqs
        # A host asks for a rebirth: NBIRTH again with the same bdSeq and seq 0, then DBIRTH.
        ts = pysparkplug.get_current_timestamp()
        rebirth = pysparkplug.NCmd(timestamp=ts, metrics=(pysparkplug.Metric(timestamp=ts, name="Node Control/Rebirth", datatype=pysparkplug.DataType.BOOLEAN, value=True),))
        gw.lines.wait_for(r"MQTT: subscribed topic=spBv1.0/fab1/NCMD/mq6")
        sub.publish("spBv1.0/fab1/NCMD/mq6", rebirth.encode())
        births = sub.wait_on("spBv1.0/fab1/NBIRTH/mq6", 2)
        again = decode(births[1][1])
        assert again["seq"] == 0 and metrics_by_name(again)["bdSeq"]["value"] == bd_seq
        sub.wait_on("spBv1.0/fab1/DBIRTH/mq6/Tool1", 2)
    finally:
        gw.stop()
    try:
        # Stopping: the NDEATH of the same session.
        (_, ndeath, _), = sub.wait_on("spBv1.0/fab1/NDEATH/mq6")[:1]
        assert metrics_by_name(decode(ndeath))["bdSeq"]["value"] == bd_seq
    finally:
        sub.close()


def make_certificates(folder):
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    folder.mkdir(parents=True, exist_ok=True)
    run = lambda *args: subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=secsgate test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.ext").write_text("subjectAltName = IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
    return folder / "ca.pem"


def test_tls_and_broker_credentials_from_the_environment(secsgate_bin, tmp_path):
    certs = tmp_path / "certs"
    ca = make_certificates(certs)
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "bay3", "s3cret-gw"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "checker", "s3cret-sub"], check=True)
    broker = Broker(
        tmp_path / "tls-broker",
        listener_conf=f"cafile {ca}\ncertfile {certs / 'server.pem'}\nkeyfile {certs / 'server.key'}\npassword_file {passwords}\n",
        anonymous=False,
    ).start()
    sub = Subscriber(broker.port, ["secsgate/bay3/#"], tls_ca=ca, credentials=("checker", "s3cret-sub"))
    extra = f'username = "bay3"\nca_file = "{ca}"\n'
    folder = project(tmp_path, "bay3", broker.port, extra)
    toml = folder / "project.toml"
    toml.write_text(toml.read_text().replace(f'url = "mqtt://127.0.0.1:{broker.port}"', f'url = "mqtts://127.0.0.1:{broker.port}"'))
    gw = Gateway(secsgate_bin, folder, env={"SECSGATE_MQTT_PASSWORD": "s3cret-gw"})
    try:
        reports = sub.wait_on("secsgate/bay3/Tool1/S6F11", 6)
        assert json.loads(reports[0][1])["gateway"] == "bay3"
    finally:
        gw.stop()
    # A wrong password: refused by the broker, said once in the log, and the tool is still served.
    wrong = Gateway(secsgate_bin, folder, env={"SECSGATE_MQTT_PASSWORD": "guess"})
    try:
        line = wrong.lines.wait_for(r"MQTT broker unreachable")
        assert "NotAuthorized" in line or "not authorized" in line.lower() or "BadUserNamePassword" in line, line
        wrong.lines.wait_for(r"equipment status.*to=Communicating")
    finally:
        wrong.stop()
        sub.close()
        broker.stop()
