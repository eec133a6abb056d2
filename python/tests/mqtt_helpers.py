"""MQTT test helpers: a mosquitto broker (Debian's package) on a loopback port, stopped by its
PID; an independent subscriber (paho-mqtt 1.6, which the Sparkplug decoder's package needs) whose waits wake on each message; and a gateway
project made from the demo with `[mqtt]` added."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt

from helpers import Lines, free_port, stop

REPO = pathlib.Path(__file__).resolve().parents[2]
DEMO = REPO / "projects" / "demo"
MOSQUITTO = "/usr/sbin/mosquitto"
TIMEOUT = 30


class Broker:
    """A mosquitto on 127.0.0.1 with its persistence in `folder`; `stop()` and `start()` again
    keep the port and the persisted sessions, as a broker restart does."""

    def __init__(self, folder, port=None, listener_conf="", anonymous=True):
        self.listener_conf = listener_conf
        self.anonymous = anonymous
        self.folder = pathlib.Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc = None
        self.lines = None

    def start(self):
        conf = self.folder / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"{self.listener_conf}"
            f"allow_anonymous {'true' if self.anonymous else 'false'}\n"
            "persistence true\n"
            f"persistence_location {self.folder}/\n"
            f"user {os.environ.get('USER') or subprocess.run(['id', '-un'], capture_output=True, text=True).stdout.strip()}\n"
            "max_queued_messages 0\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        )
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = Lines(self.proc.stderr)
        self.lines.wait_for(r"running")
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass  # killed below
            finally:
                stop(self.proc)
            self.proc = None


class Subscriber:
    """An MQTT client that keeps every message it receives, in order; waits wake on each one.
    `session` makes it a persistent session (clean_session False) under that client ID, so the
    broker keeps its QoS 1 messages while it is away."""

    def __init__(self, port, topics, session=None, qos=1, tls_ca=None, credentials=None):
        self.cond = threading.Condition()
        self.messages = []  # (topic, payload bytes, retain)
        self.dups = []  # (topic, payload) of the messages the broker marked as sent again
        self.dup = []  # the DUP flag of each message, beside self.messages
        self.qos = qos
        self.connects = 0
        kwargs = {"client_id": session, "clean_session": False} if session else {}
        self.client = mqtt.Client(**kwargs)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca))
        if credentials:
            self.client.username_pw_set(*credentials)
        self.topics = topics
        self.client.on_connect = self._connected
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        self.wait(lambda: self.connects >= 1, "connected")

    def _connected(self, client, userdata, flags, rc):
        for t in self.topics:
            client.subscribe(t, qos=self.qos)
        with self.cond:
            self.connects += 1
            self.cond.notify_all()

    def _message(self, client, userdata, msg):
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload), msg.retain))
            self.dup.append(bool(msg.dup))
            if msg.dup:
                self.dups.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def wait(self, predicate, what, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"MQTT: no {what} within {timeout} s; got {[t for t, _, _ in self.messages][-20:]}")
                self.cond.wait(left)

    def on(self, topic_filter):
        """The messages so far whose topic matches `topic_filter` (MQTT wildcards)."""
        with self.cond:
            return [(t, p, r) for t, p, r in self.messages if mqtt.topic_matches_sub(topic_filter, t)]

    def dup_flags(self, topic_filter):
        """The DUP flags of the messages `on(topic_filter)` returns, in the same order."""
        with self.cond:
            return [d for (t, _, _), d in zip(self.messages, self.dup) if mqtt.topic_matches_sub(topic_filter, t)]

    def wait_on(self, topic_filter, count=1, timeout=TIMEOUT):
        self.wait(lambda: len(self.on(topic_filter)) >= count, f"{count} message(s) on {topic_filter}", timeout)
        return self.on(topic_filter)

    def json_on(self, topic_filter):
        return [json.loads(p) for _, p, _ in self.on(topic_filter)]

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def project(tmp_path, name, broker_port, mqtt_extra="", sim_config=None, sdl_port=None, startup=True):
    """The demo project, copied to tmp_path/name, on a free port, with `[gateway] name` and
    `[mqtt]` on the broker; `sim_config` (text) replaces the simulator's config. Without
    `startup`, the demo's onStartup (which starts the simulator's lot run) is replaced by one
    that only enables every event and logs "events enabled"."""
    folder = tmp_path / name
    shutil.copytree(DEMO, folder)
    if not startup:
        (folder / "handlers" / "onStartup.py").write_text(
            'import gem\n'
            'gem.send("Tool1", "S2F37", [{"format": "Bool", "value": True}, []])\n'
            'system.util.getLogger("test").info("events enabled")\n'
        )
    toml = folder / "project.toml"
    text = toml.read_text().replace("port = 5000", f"port = {sdl_port or free_port()}")
    text = text.replace("[gateway]\n", f'[gateway]\nname = "{name}"\n', 1)
    if sim_config is not None:
        (folder / "tool.toml").write_text(sim_config)
        text = text.replace('name = "Sim1"\n', 'name = "Sim1"\nconfig = "tool.toml"\n', 1)
    text += f'\n[mqtt]\nurl = "mqtt://127.0.0.1:{broker_port}"\n{mqtt_extra}\n'
    toml.write_text(text)
    return folder


class Gateway:
    """`secsgate run` of a project with its web console on a free port; its log lines are
    read as they come."""

    def __init__(self, secsgate_bin, folder, env=None):
        self.proc = subprocess.Popen(
            [secsgate_bin, "run", str(folder), "--web", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines = Lines(self.proc.stderr)
        line = self.lines.wait_for(r"web console at http://127\.0\.0\.1:\d+/")
        self.url = line[line.index("http://"):].split()[0].rstrip("/")

    def post(self, path, body=None):
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body or {}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return json.loads(r.read() or b"null")

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=TIMEOUT) as r:
            return r.read().decode()

    def start_run(self, run, simulator="Sim1"):
        return self.post(f"/api/simulators/{simulator}/runs/{run}")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        finally:
            stop(self.proc)
