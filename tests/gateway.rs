//! The gateway with real handler scripts against an equipment played by a secsgate HSMS
//! endpoint on 127.0.0.1: custom responses, realtime updates, sendRequest/getResponse,
//! hot reload, failing and runaway handlers, Python-2 scripts, equipment management.
//!
//! The embedded interpreter is process-wide, but each gateway's script engine talks to its
//! own gateway, so these tests run in parallel. They wait on the engine's events (jobs
//! finished, files reloaded), not on the clock.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use secsgate::config::Project;
use secsgate::gateway::{Gateway, Status};
use secsgate::hsms::driver::{self, Endpoint, Mode, Settings};
use secsgate::link::{Incoming, Link, Received};
use secsgate::script::ScriptEngine;
use secsgate::secs2::{Item, Message, sml};
use serde_json::Value;

/// A fresh project folder with `project.toml` and handler/lib files.
fn project(name: &str, toml: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("secsgate-gw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("handlers")).unwrap();
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("project.toml"), toml).unwrap();
    for (path, text) in files {
        write_atomically(&dir.join(path), text);
    }
    dir
}

/// Writes as editors do: a temporary file renamed over the old one.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("py.tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits for a handler to have written `out/NAME.json` (checked each time the engine finishes
/// jobs) and returns it (removing it).
async fn output(engine: &ScriptEngine, dir: &Path, name: &str, within: Duration) -> Value {
    let path = dir.join("out").join(format!("{name}.json"));
    let mut done = engine.watch_completed();
    let until = tokio::time::Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(v) = serde_json::from_str(&text)
        {
            let _ = std::fs::remove_file(&path);
            return v;
        }
        tokio::time::timeout_at(until, done.changed())
            .await
            .unwrap_or_else(|_| panic!("no {} within {within:?}", path.display()))
            .expect("the engine is running");
    }
}

/// Saves `script` as a handler, runs it once, and returns what it emitted as `name`.
async fn run_once(gateway: &Gateway, dir: &Path, script: &str, name: &str) -> Value {
    let path = dir.join("handlers/onCheck.py");
    write_atomically(&path, script);
    gateway.engine().reload_path(&path);
    gateway
        .engine()
        .post("test", "onCheck", secsgate::script::Payload::default())
        .await;
    output(gateway.engine(), dir, name, Duration::from_secs(10)).await
}

/// Waits until the engine has finished `count` jobs in all.
async fn completed(engine: &ScriptEngine, count: u64) {
    let mut done = engine.watch_completed();
    tokio::time::timeout(Duration::from_secs(10), done.wait_for(|n| *n >= count))
        .await
        .unwrap_or_else(|_| panic!("{count} jobs not finished within 10 s"))
        .expect("the engine is running");
}

/// Waits for the hot reload to process the next file.
async fn next_reload(reloads: &mut tokio::sync::watch::Receiver<u64>) {
    tokio::time::timeout(Duration::from_secs(10), reloads.changed())
        .await
        .expect("a reload within 10 s")
        .expect("the engine is running");
}

/// A handler line that writes a JSON value to out/NAME.json (atomically).
fn emit(name: &str, expr: &str) -> String {
    format!(
        "import json as _j, os as _o\n_p = _o.path.join(_o.path.dirname(_o.path.dirname(__file__)), 'out', '{name}.json')\nopen(_p + '.tmp', 'w').write(_j.dumps({expr}))\n_o.replace(_p + '.tmp', _p)\n"
    )
}

/// The equipment: a passive endpoint that answers S1F13, S1F3 and S2F13 itself.
struct Equipment {
    link: Link,
    port: u16,
    /// Messages the gateway sent that the equipment did not answer itself.
    others: tokio::sync::mpsc::UnboundedReceiver<Message>,
}

async fn equipment(reply_delay: Duration) -> Equipment {
    let mut settings = Settings::new(Mode::Passive("127.0.0.1:0".into()));
    settings.protocol.t3 = Duration::from_secs(5);
    let Endpoint {
        link,
        incoming,
        local_addr,
    } = driver::start(settings).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(serve(link.clone(), incoming, tx, reply_delay));
    Equipment {
        link,
        port: local_addr.unwrap().port(),
        others: rx,
    }
}

async fn serve(
    link: Link,
    mut incoming: Incoming,
    others: tokio::sync::mpsc::UnboundedSender<Message>,
    delay: Duration,
) {
    while let Some(Received::Message(m)) = incoming.recv().await {
        let body = match (m.stream, m.function) {
            (1, 13) => {
                Some(sml::parse_item("<L [2] <B 0> <L [2] <A \"EQ\"> <A \"1.0\">>>").unwrap())
            }
            (1, 3) => {
                tokio::time::sleep(delay).await;
                Some(sml::parse_item("<L [2] <U4 23> <A \"LOT-1\">>").unwrap())
            }
            _ => {
                let _ = others.send(m);
                continue;
            }
        };
        let _ = link.reply(&m, body).await;
    }
}

fn toml(port: u16, extra: &str) -> String {
    format!(
        "[gateway]\nhandler_timeout = 1\ncustom_response_timeout = 3\nstartup_wait = 5\n\n[[equipment]]\nname = \"Tool1\"\nport = {port}\ntimers = {{ t3 = 5, t5 = 0.2 }}\n{extra}\n"
    )
}

async fn start(dir: &Path) -> Gateway {
    let project = Project::load(dir).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = Gateway::start(&project, true).await;
    let conn = gateway.connection("Tool1").unwrap();
    let mut watch = conn.watch_status();
    tokio::time::timeout(
        Duration::from_secs(10),
        watch.wait_for(|s| *s == Status::Communicating),
    )
    .await
    .expect("communicating")
    .unwrap();
    gateway
}

fn msg(text: &str) -> Message {
    sml::parse_message(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_response_handler_answers_and_failures_fall_back() {
    let eq = equipment(Duration::ZERO).await;
    let handler = format!(
        "{}system.secsgem.sendResponse(payload['TxID'], payload['SystemBytes'], 'S6F12', '{{\"format\": \"B\", \"value\": 7, \"doc\": \"ACKC6\"}}', payload['Equipment'])\n",
        emit("custom", "payload")
    );
    let dir = project(
        "custom",
        &toml(
            eq.port,
            "[[equipment.custom_response]]\nstream_function = \"S6F11\"\nhandler = \"onEvent\"\n\n[[equipment.custom_response]]\nstream_function = \"S5F1\"\nhandler = \"broken\"\n\n[[equipment.custom_response]]\nstream_function = \"S10F1\"\nhandler = \"runaway\"\n\n[[equipment.custom_response]]\nstream_function = \"S6F13\"\nhandler = \"silent\"\n",
        ),
        &[
            ("handlers/onEvent.py", &handler),
            ("handlers/broken.py", "x = {}\nx['missing']\n"),
            (
                "handlers/runaway.py",
                "n = 0\nwhile True:\n    try:\n        n += 1\n    except Exception:\n        pass\n",
            ),
            ("handlers/silent.py", "pass\n"),
        ],
    );
    let gateway = start(&dir).await;

    let reply = eq
        .link
        .request(msg("S6F11 W <L [3] <U4 1> <U4 4001> <L>>"))
        .await
        .unwrap();
    assert_eq!(reply.to_string(), "S6F12 <B 0x07> .");
    let payload = output(gateway.engine(), &dir, "custom", Duration::from_secs(5)).await;
    assert_eq!(payload["Equipment"], "Tool1");
    assert_eq!(payload["StreamFunction"], "S6F11");
    assert!(payload["TxID"].as_u64().unwrap() > 0);
    assert!(payload["SystemBytes"].is_u64());
    let message: Value = serde_json::from_str(payload["Message"].as_str().unwrap()).unwrap();
    // No `sdl` key: the standard catalogue adds the docs.
    assert_eq!(
        message["header"],
        serde_json::json!({"doc": "Event Report Send", "stream": 6, "function": 11, "reply": true})
    );
    assert_eq!(
        message["body"][1],
        serde_json::json!({"doc": "CEID, Collected Event ID", "format": "U4", "value": 4001})
    );

    // A handler that raises: the default reply goes out at once, not after the timeout.
    let started = Instant::now();
    let reply = eq
        .link
        .request(msg("S5F1 W <L [3] <B 0x81> <U4 7> <A \"overheat\">>"))
        .await
        .unwrap();
    assert_eq!(reply.to_string(), "S5F2 <B 0x00> .");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A handler that finishes without replying: the default reply.
    let reply = eq
        .link
        .request(msg("S6F13 W <L [3] <U4 1> <U4 2> <L>>"))
        .await
        .unwrap();
    assert_eq!(reply.to_string(), "S6F14 <B 0x00> .");

    // A runaway handler is interrupted at handler_timeout (1 s) and the default reply follows.
    let started = Instant::now();
    let reply = eq
        .link
        .request(msg("S10F1 W <L [2] <B 0> <A \"hello\">>"))
        .await
        .unwrap();
    assert_eq!(reply.to_string(), "S10F2 <B 0x00> .");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // The gateway keeps going: the custom handler still answers.
    let reply = eq
        .link
        .request(msg("S6F11 W <L [3] <U4 2> <U4 4002> <L>>"))
        .await
        .unwrap();
    assert_eq!(reply.to_string(), "S6F12 <B 0x07> .");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_handler_gets_every_received_primary_in_order() {
    let eq = equipment(Duration::ZERO).await;
    let handler = "import json, os\np = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'out', 'realtime.log')\nwith open(p, 'a') as f:\n    f.write(json.dumps(payload) + '\\n')\n";
    let dir = project(
        "realtime",
        &toml(eq.port, "realtime = [\"S6F11\", \"S5F1\"]"),
        &[("handlers/onSecsGemRealtimeUpdate.py", handler)],
    );
    let gateway = start(&dir).await;
    for i in 0..20u32 {
        let reply = eq
            .link
            .request(msg(&format!("S6F11 W <L [3] <U4 {i}> <U4 4001> <L>>")))
            .await
            .unwrap();
        assert_eq!(reply.to_string(), "S6F12 <B 0x00> .");
    }
    eq.link
        .request(msg("S5F1 W <L [3] <B 0x81> <U4 7> <A \"x\">>"))
        .await
        .unwrap();
    eq.link.request(msg("S1F1 W")).await.unwrap(); // not in `realtime`
    // The last one: Tool1's jobs run in order, so an S1F1 job would have run before it.
    eq.link
        .request(msg("S6F11 W <L [3] <U4 99> <U4 4001> <L>>"))
        .await
        .unwrap();
    completed(gateway.engine(), 22).await;
    let lines: Vec<Value> = std::fs::read_to_string(dir.join("out/realtime.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 22, "{lines:#?}");
    assert_eq!(lines[21]["StreamFunction"], "S6F11");
    assert_eq!(gateway.engine().completed(), 22);
    let keys = [
        "CommonID",
        "Equipment",
        "Direction",
        "RequestResponse",
        "TxID",
        "Reply",
        "Message",
        "StreamFunction",
        "SystemBytes",
        "Timestamp",
    ];
    for (i, p) in lines.iter().take(20).enumerate() {
        for k in keys {
            assert!(p.get(k).is_some(), "payload lacks {k}: {p}");
        }
        let m: Value = serde_json::from_str(p["Message"].as_str().unwrap()).unwrap();
        assert_eq!(m["body"][0]["value"], i as u64, "out of order");
        assert_eq!(p["Reply"], true);
        assert_eq!(p["Direction"], "Received");
    }
    assert_eq!(lines[20]["StreamFunction"], "S5F1");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripting_api_from_a_handler() {
    let mut eq = equipment(Duration::from_millis(1500)).await;
    let handler = r#"
import json
out = {}
sg = system.secsgem
tx = sg.sendRequest("S1F3", True, '[{"format": "U4", "value": 10}]', "Tool1")
out["txid"] = tx
out["early"] = sg.getResponse(tx, "Tool1", 0.2)          # the equipment takes 1.5 s
out["late"] = sg.getResponse(tx, "Tool1", 5)             # still retrievable
out["again"] = sg.getResponse(tx, "Tool1")               # and again
tx2 = sg.sendRequest("S2F41", "True", [{"format": "A", "value": "START"}, []], "Tool1")
out["timeout"] = sg.getResponse(tx2, "Tool1", 0.3)       # the equipment never answers
tx3 = sg.sendRequest("S10F3", False, {"format": "A", "value": "note"}, "Tool1")
out["noreply"] = sg.getResponse(tx3, "Tool1", 0.1)
errors = {}
for name, call in [
    ("unknown_equipment", lambda: sg.sendRequest("S1F1", True, "", "Nope")),
    ("none_body", lambda: sg.sendRequest("S1F1", True, None, "Tool1")),
    ("bad_sf", lambda: sg.sendRequest("S1X1", True, "", "Tool1")),
    ("bad_body", lambda: sg.sendRequest("S1F3", True, [{"format": "U1", "value": 300}], "Tool1")),
    ("unknown_tx", lambda: sg.getResponse(999999, "Tool1", 0.1)),
    ("send_response_unknown", lambda: sg.sendResponse(999999, 1, "S6F12", "", "Tool1")),
    ("sim_unknown", lambda: sg.startSimEventRun("Nope", "lot")),
]:
    try:
        call()
        errors[name] = None
    except Exception as e:
        errors[name] = type(e).__name__ + ": " + str(e)
out["errors"] = errors
ds = sg.toDataSet({"header": {"stream": 100, "function": 100, "reply": "False"},
                   "body": [{"doc": "FirstItem, my first item", "format": "U4", "value": 1234}, [{"format": "A", "value": "x"}]]})
out["dataset"] = {"columns": ds.getColumnNames(), "rows": [list(r) for r in ds], "count": ds.getRowCount(),
                  "at": ds.getValueAt(1, "doc"), "at2": ds.getValueAt(3, 3)}
tree = sg.toTreeDataset(ds)
out["tree"] = {"columns": tree.getColumnNames(), "rows": [list(r)[:2] for r in tree]}
out["json"] = system.util.jsonDecode(system.util.jsonEncode({"a": [1, 2.5, None, True]}))
out["pretty"] = system.util.jsonEncode({"a": 1}, 2)
log = system.util.getLogger("api-test")
log.info("info"); log.debug("debug"); log.warn("warn"); log.error("error"); log.trace("trace")
log.infof("%s=%d", "x", 3); log.warnf("plain")
out["logger"] = log.getName()
out["disable"] = sg.enableDisableEquipment(False, ["Tool1", "Ghost"])
"#;
    // Header-only S1F3 and S10F3 with one item are not the standard bodies: no SDL here.
    let settings =
        toml(eq.port, "sdl = \"none\"").replace("handler_timeout = 1\n", "handler_timeout = 30\n");
    let dir = project(
        "api",
        &settings,
        &[(
            "handlers/onStartup.py",
            &format!("{handler}\n{}", emit("api", "out")),
        )],
    );
    let gateway = start(&dir).await;
    let out = output(gateway.engine(), &dir, "api", Duration::from_secs(20)).await;
    assert_eq!(out["early"], Value::Null);
    let late = &out["late"];
    assert_eq!(
        late["header"],
        serde_json::json!({"stream": 1, "function": 4, "reply": false})
    );
    assert_eq!(
        late["body"],
        serde_json::json!([{"format": "U4", "value": 23}, {"format": "A", "value": "LOT-1"}])
    );
    assert_eq!(out["again"], *late);
    assert_eq!(out["timeout"], Value::Null);
    assert_eq!(out["noreply"], Value::Null);
    let errors = &out["errors"];
    assert!(
        errors["unknown_equipment"]
            .as_str()
            .unwrap()
            .contains("SecsGemError: unknown equipment 'Nope' (known: Tool1)"),
        "{errors}"
    );
    assert!(
        errors["none_body"].as_str().unwrap().contains("pass \"\""),
        "{errors}"
    );
    assert!(
        errors["bad_sf"].as_str().unwrap().contains("ValueError"),
        "{errors}"
    );
    assert!(
        errors["bad_body"]
            .as_str()
            .unwrap()
            .contains("body[0].value: 300 is out of range for U1"),
        "{errors}"
    );
    // An unknown TxID gives None (and a warning), as Ignition's getResponse does.
    assert_eq!(errors["unknown_tx"], Value::Null, "{errors}");
    assert!(
        errors["send_response_unknown"]
            .as_str()
            .unwrap()
            .contains("not a message received"),
        "{errors}"
    );
    assert!(
        errors["sim_unknown"]
            .as_str()
            .unwrap()
            .contains("unknown simulator 'Nope' (running: none)"),
        "{errors}"
    );
    let ds = &out["dataset"];
    assert_eq!(
        ds["columns"],
        serde_json::json!(["path", "doc", "format", "value", "codeDesc"])
    );
    assert_eq!(ds["count"], 4);
    assert_eq!(
        ds["rows"][1],
        serde_json::json!(["0/0", "FirstItem, my first item", "U4", 1234, ""])
    );
    assert_eq!(ds["at"], "FirstItem, my first item");
    assert_eq!(ds["at2"], "x");
    assert_eq!(out["tree"]["columns"].as_array().unwrap().len(), 13);
    assert_eq!(
        out["tree"]["rows"][1],
        serde_json::json!(["0: L [2]", "0: U4 1234 (FirstItem, my first item)"])
    );
    assert_eq!(out["json"], serde_json::json!({"a": [1, 2.5, null, true]}));
    assert_eq!(out["pretty"], "{\n  \"a\": 1\n}");
    assert_eq!(out["logger"], "api-test");
    assert_eq!(
        out["disable"],
        serde_json::json!(["unknown equipment 'Ghost' (known: Tool1)"])
    );
    // The equipment saw the S2F41 and the S10F3 the script sent.
    let first = tokio::time::timeout(Duration::from_secs(2), eq.others.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.to_string(), "S2F41 W <L [2] <A \"START\"> <L [0]>> .");
    let second = tokio::time::timeout(Duration::from_secs(2), eq.others.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.to_string(), "S10F3 <A \"note\"> .");
    assert_eq!(
        gateway.connection("Tool1").unwrap().status(),
        Status::Disabled
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_of_handlers_and_library() {
    let eq = equipment(Duration::ZERO).await;
    let v1 = format!(
        "import versions\n{}",
        emit("reload", "{'handler': 'v1', 'lib': versions.VERSION}")
    );
    let dir = project(
        "reload",
        &toml(
            eq.port,
            "[[equipment.custom_response]]\nstream_function = \"S6F11\"\nhandler = \"onEvent\"\n",
        ),
        &[
            ("handlers/onEvent.py", &v1),
            ("lib/versions.py", "VERSION = 'lib1'\n"),
        ],
    );
    let gateway = start(&dir).await;
    let engine = gateway.engine().clone();
    let event = || msg("S6F11 W <L [3] <U4 1> <U4 1> <L>>");
    let fire = |expect: Value| {
        let link = eq.link.clone();
        let dir = dir.clone();
        let engine = engine.clone();
        async move {
            link.request(event()).await.unwrap();
            let got = output(&engine, &dir, "reload", Duration::from_secs(5)).await;
            assert_eq!(got, expect);
        }
    };
    fire(serde_json::json!({"handler": "v1", "lib": "lib1"})).await;
    let mut reloads = engine.watch_reloads();
    reloads.borrow_and_update();

    // Save a new version (by rename, as editors do): the next event runs it.
    write_atomically(
        &dir.join("handlers/onEvent.py"),
        &v1.replace("'v1'", "'v2'"),
    );
    while engine.handler_version("onEvent") != Some(2) {
        next_reload(&mut reloads).await;
    }
    fire(serde_json::json!({"handler": "v2", "lib": "lib1"})).await;

    // A syntax error is refused; v2 keeps serving.
    reloads.borrow_and_update();
    write_atomically(&dir.join("handlers/onEvent.py"), "def broken(:\n    pass\n");
    next_reload(&mut reloads).await;
    assert_eq!(engine.handler_version("onEvent"), Some(2));
    fire(serde_json::json!({"handler": "v2", "lib": "lib1"})).await;

    // The library module reloads too.
    reloads.borrow_and_update();
    write_atomically(&dir.join("lib/versions.py"), "VERSION = 'lib2'\n");
    next_reload(&mut reloads).await;
    fire(serde_json::json!({"handler": "v2", "lib": "lib2"})).await;

    // A Jython-style handler (print statement, old except syntax) runs after the rewrite.
    let jython = format!(
        "import versions\ntry:\n    raise ValueError, 'x'\nexcept ValueError, e:\n    print 'caught', e\n{}",
        emit(
            "reload",
            "{'handler': 'jython', 'lib': versions.VERSION, 'n': 10L}"
        )
    );
    write_atomically(&dir.join("handlers/onEvent.py"), &jython);
    while engine.handler_version("onEvent") != Some(3) {
        next_reload(&mut reloads).await;
    }
    fire(serde_json::json!({"handler": "jython", "lib": "lib2", "n": 10})).await;
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_and_enable_equipment_from_a_script() {
    let eq = equipment(Duration::ZERO).await;
    let eq2 = equipment(Duration::ZERO).await;
    let handler = format!(
        r#"
import time
sg = system.secsgem
sg.copyEquipment("Tool1", "Tool2", True, "127.0.0.1", {port2}, "", 0, 0)
for _ in range(200):
    try:
        tx = sg.sendRequest("S1F3", True, "", "Tool2")
        break
    except Exception:
        time.sleep(0.05)
reply = sg.getResponse(tx, "Tool2", 5)
dup = None
try:
    sg.copyEquipment("Tool1", "Tool2", True, "127.0.0.1", {port2}, "", 0, 0)
except Exception as e:
    dup = str(e)
disabled = sg.enableDisableEquipment(False, ("Tool2",))
not_comm = None
try:
    sg.sendRequest("S1F1", True, "", "Tool2")
except Exception as e:
    not_comm = str(e)
enabled = sg.enableDisableEquipment(True, ["Tool2"])
{emit}"#,
        port2 = eq2.port,
        emit = emit(
            "copy",
            "{'reply': reply, 'dup': dup, 'disabled': disabled, 'not_comm': not_comm, 'enabled': enabled}"
        )
    );
    // Header-only S1F3 and S10F3 with one item are not the standard bodies: no SDL here.
    let settings =
        toml(eq.port, "sdl = \"none\"").replace("handler_timeout = 1\n", "handler_timeout = 30\n");
    let dir = project("copy", &settings, &[("handlers/onStartup.py", &handler)]);
    let gateway = start(&dir).await;
    let out = output(gateway.engine(), &dir, "copy", Duration::from_secs(20)).await;
    assert_eq!(out["reply"]["header"]["function"], 4);
    assert!(
        out["dup"].as_str().unwrap().contains("already exists"),
        "{out}"
    );
    assert_eq!(out["disabled"], serde_json::json!([]));
    assert!(
        out["not_comm"]
            .as_str()
            .unwrap()
            .contains("not communicating (status: Disabled)"),
        "{out}"
    );
    assert_eq!(out["enabled"], serde_json::json!([]));
    let conn = gateway.connection("Tool2").unwrap();
    let mut w = conn.watch_status();
    tokio::time::timeout(
        Duration::from_secs(10),
        w.wait_for(|s| *s == Status::Communicating),
    )
    .await
    .unwrap()
    .unwrap();
    gateway.shutdown().await;
    drop(eq2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_in_one_process_each_reach_their_own_equipment() {
    let mut eqs = [
        equipment(Duration::ZERO).await,
        equipment(Duration::ZERO).await,
    ];
    let mut gateways = Vec::new();
    for (who, eq) in ["A", "B"].iter().zip(&eqs) {
        let startup = format!(
            "system.secsgem.sendRequest('S10F3', False, {{'format': 'A', 'value': 'from {who}'}}, 'Tool1')\n"
        );
        let dir = project(
            &format!("two-{who}"),
            &toml(eq.port, "sdl = \"none\""),
            &[("handlers/onStartup.py", &startup)],
        );
        gateways.push(start(&dir).await);
    }
    for (who, eq) in ["A", "B"].iter().zip(&mut eqs) {
        let got = tokio::time::timeout(Duration::from_secs(10), eq.others.recv())
            .await
            .expect("the equipment got its message")
            .unwrap();
        assert_eq!(got.to_string(), format!("S10F3 <A \"from {who}\"> ."));
    }
    for g in gateways {
        completed(g.engine(), 1).await;
        g.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_falling_behind_hold_back_the_equipment() {
    let eq = equipment(Duration::ZERO).await;
    let settings = toml(eq.port, "realtime = [\"S6F11\"]").replace(
        "handler_timeout = 1\n",
        "handler_timeout = 30\nqueue_limit = 2\n",
    );
    let dir = project(
        "backpressure",
        &settings,
        &[
            (
                "lib/secsgate_bp_gate.py",
                "import threading\nopen_ = threading.Event()\n",
            ),
            (
                "handlers/onSecsGemRealtimeUpdate.py",
                "import secsgate_bp_gate as g\ng.open_.wait(30)\n",
            ),
        ],
    );
    let gateway = start(&dir).await;
    let event = |n: u32| msg(&format!("S6F11 W <L [3] <U4 {n}> <U4 1> <L>>"));
    // Two jobs fill Tool1's queue (one held at the gate, one waiting); the third event is
    // answered, then the gateway waits for room to queue its job...
    for n in 0..3 {
        let reply = eq.link.request(event(n)).await.unwrap();
        assert_eq!(reply.to_string(), "S6F12 <B 0x00> .");
    }
    // ... so the fourth is not taken in (nor answered) while the handlers are behind.
    let mut fourth = tokio::spawn({
        let link = eq.link.clone();
        async move { link.request(event(3)).await }
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut fourth)
            .await
            .is_err(),
        "the fourth event was answered while the queue was full"
    );
    tokio::task::spawn_blocking(|| {
        use pyo3::types::PyAnyMethods;
        pyo3::Python::attach(|py| {
            py.import("secsgate_bp_gate")
                .and_then(|g| g.getattr("open_"))
                .and_then(|ev| ev.call_method0("set"))
                .map(|_| ())
        })
    })
    .await
    .unwrap()
    .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), fourth)
        .await
        .expect("answered once the handlers caught up")
        .unwrap()
        .unwrap();
    assert_eq!(reply.to_string(), "S6F12 <B 0x00> .");
    completed(gateway.engine(), 4).await;
    gateway.shutdown().await;
}

#[test]
fn check_lists_config_and_script_problems() {
    let dir = project(
        "check",
        "[[equipment]]\nname = \"T\"\nport = 99999\n\n[[equipment.custom_response]]\nstream_function = \"S6F11\"\nhandler = \"missing\"\n",
        &[
            ("handlers/bad.py", "def f(:\n  pass\n"),
            ("lib/badlib.py", "x = (\n"),
        ],
    );
    let mut problems: Vec<String> = Project::load(&dir)
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
    problems.extend(secsgate::script::check_scripts(&dir).problems);
    let all = problems.join("\n");
    assert!(
        all.contains("project.toml:3: equipment[0].port: 99999 is out of range"),
        "{all}"
    );
    assert!(all.contains("project.toml:7: equipment[0].custom_response[0].handler: handlers/missing.py does not exist"), "{all}");
    assert!(all.contains("bad.py\", line 1"), "{all}");
    assert!(all.contains("badlib.py\", line 1"), "{all}");
    assert_eq!(problems.len(), 4, "{all}");
    let _ = Item::L(vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdl_checks_what_scripts_send_routes_realtime_and_annotates() {
    let eq = equipment(Duration::ZERO).await;
    let sdl = serde_json::json!({
        "doc": ["test tool"],
        "items": {
            "ACKC6": {"doc": "ACKC6, Acknowledge Code", "format": "B", "codes": {"0": "Accepted", ">0": "Error, not accepted"}},
            "SVID": {"doc": "SVID, Status Variable ID", "format": ["U4", "A"]},
            "SV": {"doc": "SV, Status Variable Value"},
            "DATAID": {"format": "U"}, "CEID": {"doc": "CEID, Collected Event ID", "format": "U"},
            "RPTID": {"format": "U"}, "V": {}, "ALCD": {"format": "B"}, "ALID": {"format": "U"}, "ALTX": {"format": "A"}
        },
        "messages": {
            "S1": {"F3": {"doc": "Selected Equipment Status Request", "direction": "h->e", "reply": true, "body": "SVID*"},
                   "F4": {"doc": "Selected Equipment Status Data", "direction": "h<-e", "body": "SV*"}},
            "S5": {"F1": {"doc": "Alarm Report Send", "direction": "h<-e", "reply": true, "body": ["ALCD", "ALID", "ALTX"]}},
            "S6": {"F11": {"doc": "Event Report Send", "direction": "h<-e", "reply": true, "realtime": true,
                           "body": ["DATAID", "CEID", {"L*": ["RPTID", "V*"]}]},
                   "F12": {"doc": "Event Report Acknowledge", "direction": "h->e", "body": "ACKC6"}}
        }
    });
    let realtime = "import json, os\np = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'out', 'rt.log')\nwith open(p, 'a') as f:\n    f.write(payload['Message'] + '\\n')\n";
    let startup = format!(
        r#"
sg = system.secsgem
out = {{}}
tx = sg.sendRequest("S1F3", True, [{{"format": "U4", "value": 10}}], "Tool1")
out["reply"] = sg.getResponse(tx, "Tool1", 5)
for name, body, sf in [("undefined", "", "S2F41"), ("format", [{{"format": "I4", "value": 1}}], "S1F3"), ("direction", [], "S6F11")]:
    try:
        sg.sendRequest(sf, True, body, "Tool1")
        out[name] = None
    except Exception as e:
        out[name] = str(e)
{}"#,
        emit("sdl", "out")
    );
    let dir = project(
        "sdl",
        &toml(eq.port, "sdl = \"tool.sdl\"")
            .replace("handler_timeout = 1\n", "handler_timeout = 30\n"),
        &[
            ("handlers/onStartup.py", &startup),
            ("handlers/onSecsGemRealtimeUpdate.py", realtime),
        ],
    );
    std::fs::write(
        dir.join("tool.sdl"),
        serde_json::to_string_pretty(&sdl).unwrap(),
    )
    .unwrap();
    let gateway = start(&dir).await;
    let out = output(gateway.engine(), &dir, "sdl", Duration::from_secs(10)).await;
    assert_eq!(
        out["reply"]["header"]["doc"],
        "Selected Equipment Status Data"
    );
    assert_eq!(
        out["reply"]["body"][0],
        serde_json::json!({"doc": "SV, Status Variable Value", "format": "U4", "value": 23})
    );
    assert!(
        out["undefined"]
            .as_str()
            .unwrap()
            .contains("S2F41 for 'Tool1' does not match its SDL: S2F41: not defined in the SDL"),
        "{out}"
    );
    assert!(
        out["format"]
            .as_str()
            .unwrap()
            .contains("body[0]: SVID must be U4 or A, not I4"),
        "{out}"
    );
    assert!(
        out["direction"]
            .as_str()
            .unwrap()
            .contains("the SDL says the equipment sends it"),
        "{out}"
    );

    // Only S6F11 is realtime in the SDL: the S5F1 does not reach the handler.
    eq.link
        .request(msg("S5F1 W <L [3] <B 0x81> <U4 7> <A \"hot\">>"))
        .await
        .unwrap();
    let reply = eq
        .link
        .request(msg(
            "S6F11 W <L [3] <U4 1> <U4 4001> <L [1] <L [2] <U4 9> <L [1] <U4 5>>>>>",
        ))
        .await
        .unwrap();
    assert_eq!(reply.to_string(), "S6F12 <B 0x00> .");
    // onStartup, then the realtime job (an S5F1 job would have run before it: Tool1's jobs
    // run in order).
    completed(gateway.engine(), 2).await;
    let log = dir.join("out/rt.log");
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["header"]["doc"], "Event Report Send");
    assert_eq!(
        lines[0]["body"][1],
        serde_json::json!({"doc": "CEID, Collected Event ID", "format": "U4", "value": 4001})
    );
    gateway.shutdown().await;
}

#[test]
fn sdl_errors_are_config_errors_with_the_sdl_line() {
    let dir = project(
        "sdlbad",
        "[[equipment]]\nname = \"T\"\nport = 5000\nsdl = \"tool.sdl\"\n",
        &[],
    );
    std::fs::write(
        dir.join("tool.sdl"),
        "{\n  \"messages\": {\n    \"S1\": {\"F3\": {\"body\": \"NOPE\"}}\n  }\n}\n",
    )
    .unwrap();
    let errors = Project::load(&dir).unwrap_err();
    let text = errors[0].to_string();
    assert!(text.contains("project.toml:4: equipment[0].sdl:"), "{text}");
    assert!(
        text.contains("messages.S1.F3.body: item 'NOPE' is not defined"),
        "{text}"
    );
    std::fs::write(dir.join("tool.sdl"), "{\n  \"items\": {,\n}\n").unwrap();
    let text = Project::load(&dir).unwrap_err()[0].to_string();
    assert!(text.contains("tool.sdl:2:"), "{text}");
}

/// Replies to a script's requests reach `onSecsGemRealtimeUpdate` too (`RequestResponse`
/// "Response", sharing the request's CommonID), and every payload value has the type an
/// Ignition script expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_sees_replies_with_ignition_types() {
    let eq = equipment(Duration::ZERO).await;
    let realtime = format!(
        "{}\n{}",
        "types = dict((k, type(v).__name__) for k, v in payload.items())\nseen = dict(payload)\nseen['types'] = types",
        emit("realtime", "seen")
    );
    let startup = format!(
        "tx = system.secsgem.sendRequest('S1F3', True, [{{'format': 'U4', 'value': 1}}], 'Tool1')\nr = system.secsgem.getResponse(tx, 'Tool1', 5)\n{}",
        emit("startup", "{'tx': tx, 'reply': r}")
    );
    let dir = project(
        "realtime-replies",
        &toml(eq.port, "realtime = [\"S1F4\"]"),
        &[
            ("handlers/onSecsGemRealtimeUpdate.py", &realtime),
            ("handlers/onStartup.py", &startup),
        ],
    );
    let gateway = start(&dir).await;
    let started = output(gateway.engine(), &dir, "startup", Duration::from_secs(10)).await;
    let seen = output(gateway.engine(), &dir, "realtime", Duration::from_secs(10)).await;
    let tx = started["tx"].as_u64().unwrap();
    assert_eq!(seen["RequestResponse"], "Response");
    assert_eq!(seen["Direction"], "Received");
    assert_eq!(seen["StreamFunction"], "S1F4");
    assert_eq!(seen["Reply"], false);
    assert_eq!(seen["TxID"], tx);
    assert_eq!(
        seen["CommonID"],
        tx.to_string(),
        "no SDL CommonID: the TxID as text"
    );
    let message: Value = serde_json::from_str(seen["Message"].as_str().unwrap()).unwrap();
    assert_eq!(
        message, started["reply"],
        "the same JSON form getResponse gives"
    );
    let types = &seen["types"];
    for (key, ty) in [
        ("CommonID", "str"),
        ("Equipment", "str"),
        ("Direction", "str"),
        ("RequestResponse", "str"),
        ("TxID", "int"),
        ("SystemBytes", "int"),
        ("Reply", "bool"),
        ("Message", "str"),
        ("StreamFunction", "str"),
        ("Timestamp", "str"),
    ] {
        assert_eq!(types[key], ty, "payload['{key}'] in {types}");
    }
    gateway.shutdown().await;
}

/// A primary that fails the SDL is answered S9F7 naming its header, reaches no handler and is
/// not acked; with `on_invalid = "accept"` it is handled as usual. A body that does not even
/// decode is answered S9F7 as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_primaries_get_s9f7() {
    let mut eq = equipment(Duration::ZERO).await;
    let realtime = emit("realtime", "payload['StreamFunction']");
    let dir = project(
        "s9f7",
        &toml(eq.port, "realtime = [\"S6F11\"]\nsdl = \"standard\""),
        &[("handlers/onSecsGemRealtimeUpdate.py", &realtime)],
    );
    let gateway = start(&dir).await;
    // S6F11 is <L [3] DATAID CEID <L ...>>: a bare U4 is illegal.
    let pending = eq.link.send_request(msg("S6F11 W <U4 1>")).await.unwrap();
    let sb = pending.system_bytes;
    let s9 = tokio::time::timeout(Duration::from_secs(10), eq.others.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((s9.stream, s9.function, s9.w_bit), (9, 7, false), "{s9}");
    let Some(Item::B(mhead)) = &s9.body else {
        panic!("S9F7 without MHEAD: {s9}")
    };
    assert_eq!(mhead.len(), 10);
    assert_eq!(
        u32::from_be_bytes([mhead[6], mhead[7], mhead[8], mhead[9]]),
        sb
    );
    assert_eq!((mhead[2] & 0x7F, mhead[3]), (6, 11));
    // The S9F7 names the request: it ends at once rather than at T3.
    match pending.wait().await {
        Err(secsgate::link::LinkError::StreamNine { function: 7, .. }) => {}
        other => panic!("expected the S9F7 to end the transaction: {other:?}"),
    }
    // A valid one still goes through, and only it reaches the realtime handler.
    let reply = eq
        .link
        .request(msg("S6F11 W <L [3] <U4 1> <U4 4001> <L>>"))
        .await
        .unwrap();
    assert_eq!(reply.to_string(), "S6F12 <B 0x00> .");
    let seen = output(gateway.engine(), &dir, "realtime", Duration::from_secs(10)).await;
    assert_eq!(seen, "S6F11");
    assert_eq!(
        gateway.engine().completed(),
        1,
        "the invalid one ran no handler"
    );
    gateway.shutdown().await;

    // on_invalid = "accept": logged, handled, acked.
    let eq = equipment(Duration::ZERO).await;
    let dir = project(
        "s9f7-accept",
        &toml(eq.port, "sdl = \"standard\"\non_invalid = \"accept\""),
        &[],
    );
    let gateway = start(&dir).await;
    let reply = eq.link.request(msg("S6F11 W <U4 1>")).await.unwrap();
    assert_eq!(reply.to_string(), "S6F12 <B 0x00> .");
    gateway.shutdown().await;
}

/// S7F3 from the tool is stored and acked; scripts read, list and delete the programs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_programs_from_s7f3() {
    let eq = equipment(Duration::ZERO).await;
    let dir = project("programs", &toml(eq.port, "sdl = \"none\""), &[]);
    let gateway = start(&dir).await;
    for text in [
        "S7F3 W <L [2] <A \"ETCH-1\"> <A \"step 1; step 2\">>",
        "S7F3 W <L [2] <A \"BIN\"> <B 0x00 0x01 0xFF>>",
    ] {
        let reply = eq.link.request(msg(text)).await.unwrap();
        assert_eq!(reply.to_string(), "S7F4 <B 0x00> .", "{text}");
    }
    let reply = eq
        .link
        .request(msg("S7F3 W <L [1] <A \"X\">>"))
        .await
        .unwrap();
    assert_eq!(
        reply.to_string(),
        "S7F4 <B 0x01> .",
        "a malformed S7F3 is refused"
    );
    let script = format!(
        "sg = system.secsgem\nt = sg.getToolProgram('ETCH-1')\nb = sg.getToolProgram('BIN')\nds = sg.getToolProgramDataset()\nrows = [list(r) for r in ds]\nsg.deleteToolProgram('BIN')\nsg.deleteToolProgram('nothing')\nafter = sg.getToolProgram('BIN')\n{}",
        emit(
            "programs",
            "{'t': t, 'b': b, 'columns': ds.getColumnNames(), 'rows': rows, 'after': after}"
        )
    );
    let out = run_once(&gateway, &dir, &script, "programs").await;
    assert_eq!(out["t"]["ppid"], "ETCH-1");
    assert_eq!(out["t"]["ppbody"], "step 1; step 2");
    assert_eq!(out["t"]["ppBody"], "step 1; step 2");
    assert_eq!(out["t"]["bodyFormat"], "A");
    assert!(
        out["t"]["editDate"].as_str().unwrap().starts_with("20"),
        "{out}"
    );
    assert_eq!(out["b"]["ppbody"], serde_json::json!([0, 1, 255]));
    assert_eq!(out["b"]["bodyFormat"], "B");
    assert_eq!(
        out["columns"],
        serde_json::json!(["ppid", "editDate", "bodyFormat"])
    );
    let rows = out["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0][0].as_str(), rows[0][2].as_str()),
        (Some("BIN"), Some("B"))
    );
    assert_eq!(
        (rows[1][0].as_str(), rows[1][2].as_str()),
        (Some("ETCH-1"), Some("A"))
    );
    assert_eq!(out["after"], Value::Null);
    gateway.shutdown().await;
}

/// The programs kept from S7F3 have a quota: past it, ACKC7 3 (matrix overflow); replacing
/// a program with one no larger still fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_programs_over_the_quota_are_refused() {
    let eq = equipment(Duration::ZERO).await;
    let text = toml(eq.port, "sdl = \"none\"").replace(
        "[gateway]\n",
        "[gateway]\ntool_program_limit = 1\ntool_program_bytes = 10\n",
    );
    let dir = project("program-quota", &text, &[]);
    let gateway = start(&dir).await;
    for (text, ackc7) in [
        ("S7F3 W <L [2] <A \"P1\"> <A \"12345\">>", 0),
        ("S7F3 W <L [2] <A \"P2\"> <A \"1\">>", 3),
        ("S7F3 W <L [2] <A \"P1\"> <A \"1234\">>", 0),
        ("S7F3 W <L [2] <A \"P1\"> <A \"12345678901\">>", 3),
        ("S7F3 W <L [2] <A \"P1\"> <A \"1234567890\">>", 0),
    ] {
        let reply = eq.link.request(msg(text)).await.unwrap();
        assert_eq!(
            reply.to_string(),
            format!("S7F4 <B 0x0{ackc7}> ."),
            "{text}"
        );
    }
    gateway.shutdown().await;
}

/// `sendResponse` answers only with the reply of the request (same stream, function + 1),
/// and only a request that wants one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_response_refuses_what_is_not_the_reply() {
    let eq = equipment(Duration::ZERO).await;
    let handler = format!(
        "sg = system.secsgem\nerrors = {{}}\nfor name, sf in [('wrong_function', 'S6F14'), ('wrong_stream', 'S5F12')]:\n    try:\n        sg.sendResponse(payload['TxID'], payload['SystemBytes'], sf, {{'format': 'B', 'value': 0}}, payload['Equipment'])\n        errors[name] = None\n    except Exception as e:\n        errors[name] = str(e)\ntry:\n    sg.sendResponse(payload['TxID'], payload['SystemBytes'], 'S6F12', {{'format': 'B', 'value': 0}}, payload['Equipment'])\n    errors['right'] = None\nexcept Exception as e:\n    errors['right'] = str(e)\n{}",
        emit("respond", "errors")
    );
    let dir = project(
        "respond",
        &toml(
            eq.port,
            "[[equipment.custom_response]]\nstream_function = \"S6F11\"\nhandler = \"onEvent\"\n",
        ),
        &[("handlers/onEvent.py", &handler)],
    );
    let gateway = start(&dir).await;
    let reply = eq
        .link
        .request(msg("S6F11 W <L [3] <U4 1> <U4 4001> <L>>"))
        .await
        .unwrap();
    assert_eq!(reply.to_string(), "S6F12 <B 0x00> .");
    let errors = output(gateway.engine(), &dir, "respond", Duration::from_secs(10)).await;
    assert!(
        errors["wrong_function"]
            .as_str()
            .unwrap()
            .contains("S6F14 is not the reply to S6F11; answer it with S6F12"),
        "{errors}"
    );
    assert!(
        errors["wrong_stream"]
            .as_str()
            .unwrap()
            .contains("not the reply"),
        "{errors}"
    );
    assert_eq!(errors["right"], Value::Null, "{errors}");
    // Without W-bit the equipment wants no reply: sendResponse refuses.
    eq.link
        .send(msg("S6F11 <L [3] <U4 2> <U4 4001> <L>>"))
        .await
        .unwrap();
    let errors = output(gateway.engine(), &dir, "respond", Duration::from_secs(10)).await;
    for key in ["wrong_function", "right"] {
        assert!(
            errors[key]
                .as_str()
                .unwrap()
                .contains("without W-bit: the equipment wants no reply"),
            "{errors}"
        );
    }
    gateway.shutdown().await;
}

/// Waits for the next configuration reload (applied or refused).
async fn next_config(reloads: &mut tokio::sync::watch::Receiver<u64>) {
    tokio::time::timeout(Duration::from_secs(10), reloads.changed())
        .await
        .expect("a configuration reload within 10 s")
        .expect("the gateway is running");
}

async fn communicating(gateway: &Gateway, name: &str) {
    let conn = gateway.connection(name).unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        conn.watch_status()
            .wait_for(|s| *s == Status::Communicating),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} communicating"))
    .unwrap();
}

/// Saving project.toml applies each kind of change while running, and an invalid edit is
/// refused with the running configuration kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_toml_changes_apply_while_running() {
    let eq_a = equipment(Duration::ZERO).await;
    let eq_b = equipment(Duration::ZERO).await;
    let eq_c = equipment(Duration::ZERO).await;
    let answering = "system.secsgem.sendResponse(payload['TxID'], payload['SystemBytes'], 'S6F12', {'format': 'B', 'value': 7}, payload['Equipment'])\n";
    let realtime = emit("realtime", "payload['StreamFunction']");
    let dir = project(
        "live",
        &toml(eq_a.port, "realtime = [\"S5F1\"]"),
        &[
            ("handlers/onEvent.py", answering),
            ("handlers/onSecsGemRealtimeUpdate.py", &realtime),
        ],
    );
    let gateway = start(&dir).await;
    let s6f11 = || msg("S6F11 W <L [3] <U4 1> <U4 4001> <L>>");
    let reply = eq_a.link.request(s6f11()).await.unwrap();
    assert_eq!(
        reply.to_string(),
        "S6F12 <B 0x00> .",
        "the default reply first"
    );
    let mut reloads = gateway.watch_config_reloads();
    let tool2 = format!(
        "\n[[equipment]]\nname = \"Tool2\"\nport = {}\ntimers = {{ t3 = 5, t5 = 0.2 }}\n",
        eq_b.port
    );

    // A custom response, a realtime list, and a second equipment.
    let edit = toml(
        eq_a.port,
        "realtime = [\"S6F11\"]\n[[equipment.custom_response]]\nstream_function = \"S6F11\"\nhandler = \"onEvent\"\n",
    ) + &tool2;
    write_atomically(&dir.join("project.toml"), &edit);
    next_config(&mut reloads).await;
    let reply = eq_a.link.request(s6f11()).await.unwrap();
    assert_eq!(
        reply.to_string(),
        "S6F12 <B 0x07> .",
        "the handler answers now"
    );
    let seen = output(gateway.engine(), &dir, "realtime", Duration::from_secs(10)).await;
    assert_eq!(seen, "S6F11");
    communicating(&gateway, "Tool2").await;

    // Tool1 moves to another port: it alone reconnects.
    let mut tool2_status = gateway.connection("Tool2").unwrap().watch_status();
    tool2_status.borrow_and_update();
    let edit = toml(
        eq_c.port,
        "realtime = [\"S6F11\"]\n[[equipment.custom_response]]\nstream_function = \"S6F11\"\nhandler = \"onEvent\"\n",
    ) + &tool2;
    write_atomically(&dir.join("project.toml"), &edit);
    next_config(&mut reloads).await;
    communicating(&gateway, "Tool1").await;
    let reply = eq_c.link.request(s6f11()).await.unwrap();
    assert_eq!(reply.to_string(), "S6F12 <B 0x07> .");
    assert!(
        !tool2_status.has_changed().unwrap(),
        "Tool2 was not touched"
    );

    // An invalid edit is refused: everything stays as it runs.
    write_atomically(
        &dir.join("project.toml"),
        &edit.replace("t3 = 5", "t3 = \"soon\""),
    );
    next_config(&mut reloads).await;
    let reply = eq_c.link.request(s6f11()).await.unwrap();
    assert_eq!(reply.to_string(), "S6F12 <B 0x07> .");
    assert_eq!(
        gateway.connection("Tool2").unwrap().status(),
        Status::Communicating
    );

    // Tool2 disabled, then removed; the custom response removed.
    write_atomically(
        &dir.join("project.toml"),
        &(toml(eq_c.port, "") + &tool2.replace("timers", "enabled = false\ntimers")),
    );
    next_config(&mut reloads).await;
    assert_eq!(
        gateway.connection("Tool2").unwrap().status(),
        Status::Disabled
    );
    let reply = eq_c.link.request(s6f11()).await.unwrap();
    assert_eq!(
        reply.to_string(),
        "S6F12 <B 0x00> .",
        "the default reply again"
    );
    write_atomically(&dir.join("project.toml"), &toml(eq_c.port, ""));
    next_config(&mut reloads).await;
    assert!(gateway.connection("Tool2").is_none());
    gateway.shutdown().await;
}

/// Messages the SDL marks SQLTags (S6F1 in the standard catalogue) become read-only tags keyed
/// by their CommonID; status tags follow the connection; handlers read and browse them with
/// `system.tag`, and writing raises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqltags_messages_become_tags_for_system_tag() {
    let eq = equipment(Duration::ZERO).await;
    let dir = project("tags", &toml(eq.port, "realtime = [\"S6F1\"]"), &[]);
    let gateway = start(&dir).await;
    let reply = eq
        .link
        .request(msg(
            "S6F1 W <L [4] <U4 5> <U4 2> <A \"20261203100000\"> <L [2] <U4 23> <F4 1.5>>>",
        ))
        .await
        .unwrap();
    assert_eq!(reply.to_string(), "S6F2 <B 0x00> .");
    let script = format!(
        "r = system.tag.readBlocking(['[SECSGEM]Tool1/Messages/S6F1/5/Body/0/3/0', 'Tool1/Status', '[SECSGEM]Tool1/Messages/S6F1/5/TxID', 'Tool1/Nope'])\nvalues = [q.value for q in r]\nqualities = [str(q.quality) for q in r]\ngood = r[0].quality.isGood()\nbrowsed = [(b['name'], b['hasChildren']) for b in system.tag.browse('[SECSGEM]Tool1').getResults()]\ntry:\n    system.tag.writeBlocking(['Tool1/Status'], ['x'])\n    write = None\nexcept Exception as e:\n    write = type(e).__name__ + ': ' + str(e)\n{}",
        emit(
            "tags",
            "{'values': values, 'qualities': qualities, 'good': good, 'browsed': browsed, 'write': write}"
        )
    );
    let out = run_once(&gateway, &dir, &script, "tags").await;
    assert_eq!(out["values"][0], 23);
    assert_eq!(out["values"][1], "Communicating");
    assert!(out["values"][2].as_u64().is_some(), "{out}");
    assert_eq!(out["values"][3], Value::Null);
    assert_eq!(
        out["qualities"],
        serde_json::json!(["Good", "Good", "Good", "Bad_NotFound"])
    );
    assert_eq!(out["good"], true);
    assert_eq!(
        out["browsed"],
        serde_json::json!([
            ["Enabled", false],
            ["Messages", true],
            ["MessagesReceived", false],
            ["MessagesSent", false],
            ["Status", false]
        ])
    );
    assert!(
        out["write"]
            .as_str()
            .unwrap()
            .starts_with("TagWriteError: the SECS/GEM realtime tags are read-only"),
        "{out}"
    );
    gateway.shutdown().await;
}

/// A handler writes with `system.db.runPrepUpdate` and another reads it back with
/// `runPrepQuery`, against the project's own database and a named one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_db_writes_and_reads_back() {
    let eq = equipment(Duration::ZERO).await;
    let writer = "db = system.db\ndb.runUpdateQuery('CREATE TABLE IF NOT EXISTS lots (id INTEGER PRIMARY KEY, lot TEXT, qty INTEGER, t REAL)')\nkey = db.runPrepUpdate('INSERT INTO lots (lot, qty, t) VALUES (?, ?, ?)', ['LOT-1', 25, 1.5], getKey=True)\nn = db.runPrepUpdate('UPDATE lots SET qty = ? WHERE lot = ?', [24, 'LOT-1'])\ndb.runUpdateQuery('CREATE TABLE IF NOT EXISTS notes (x TEXT)', 'notes')\ndb.runPrepUpdate('INSERT INTO notes VALUES (?)', ['hello'], 'notes')\n";
    let reader = format!(
        "db = system.db\nds = db.runPrepQuery('SELECT lot, qty, t FROM lots WHERE qty < ?', [100])\nrows = [list(r) for r in ds]\nnotes = db.runQuery('SELECT x FROM notes', 'notes')\ntry:\n    db.runQuery('SELECT 1', 'nope')\n    unknown = None\nexcept Exception as e:\n    unknown = str(e)\ntry:\n    db.runQuery('SELEC nothing')\n    bad = None\nexcept Exception as e:\n    bad = type(e).__name__\n{}",
        emit(
            "db",
            "{'columns': ds.getColumnNames(), 'rows': rows, 'notes': notes.getValueAt(0, 'x'), 'unknown': unknown, 'bad': bad}"
        )
    );
    let dir = project(
        "db",
        &format!(
            "{}\n[[database]]\nname = \"notes\"\npath = \"data/notes.sqlite\"\n",
            toml(eq.port, "")
        ),
        &[
            ("handlers/onWrite.py", writer),
            ("handlers/onRead.py", &reader),
        ],
    );
    let gateway = start(&dir).await;
    // One equipment key: the reader runs after the writer.
    gateway
        .engine()
        .post("Tool1", "onWrite", secsgate::script::Payload::default())
        .await;
    gateway
        .engine()
        .post("Tool1", "onRead", secsgate::script::Payload::default())
        .await;
    let out = output(gateway.engine(), &dir, "db", Duration::from_secs(10)).await;
    assert_eq!(out["columns"], serde_json::json!(["lot", "qty", "t"]));
    assert_eq!(out["rows"], serde_json::json!([["LOT-1", 24, 1.5]]));
    assert_eq!(out["notes"], "hello");
    assert!(
        out["unknown"]
            .as_str()
            .unwrap()
            .contains("unknown database 'nope' (defined: notes)"),
        "{out}"
    );
    assert_eq!(out["bad"], "DatabaseError");
    assert!(dir.join("data/secsgate.sqlite").is_file());
    gateway.shutdown().await;
}

/// Ignition's worked example: an SDL marks S2F14 realtime with `CommonID: ["ECV"]`; the reply
/// to a script's S2F13 reaches `onSecsGemRealtimeUpdate` with the ECVs as its CommonID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2f14_realtime_with_common_id_from_its_ecvs() {
    let mut eq = equipment(Duration::ZERO).await;
    let sdl = r#"{
  "doc": ["Test tool"],
  "items": {
    "E": {"ECID": {"doc": "ECID, Equipment Constant ID", "format": ["U4", "A"]},
          "ECV": {"doc": "ECV, Equipment Constant Value"}}
  },
  "messages": {
    "S1": {"F13": {"direction": "h<->e", "reply": true, "body": "ANY"},
           "F14": {"direction": "h<->e", "body": "ANY"}},
    "S2": {"F13": {"doc": "Equipment Constant Request", "direction": "h->e", "reply": "true", "body": "ECID*"},
           "F14": {"doc": "Equipment Constant Data", "direction": "h<-e", "realtime": "true", "CommonID": ["ECV"], "body": "ECV*"}}
  }
}"#;
    let realtime = emit("realtime", "dict(payload)");
    let startup = "system.secsgem.sendRequest('S2F13', True, [{'format': 'U4', 'value': 200}, {'format': 'U4', 'value': 201}], 'Tool1')\n";
    let dir = project(
        "s2f14",
        &toml(eq.port, "sdl = \"tool.sdl\""),
        &[
            ("tool.sdl", sdl),
            ("handlers/onSecsGemRealtimeUpdate.py", &realtime),
            ("handlers/onStartup.py", startup),
        ],
    );
    let gateway = start(&dir).await;
    let s2f13 = tokio::time::timeout(Duration::from_secs(10), eq.others.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s2f13.to_string(), "S2F13 W <L [2] <U4 200> <U4 201>> .");
    eq.link
        .reply(
            &s2f13,
            Some(sml::parse_item("<L [2] <U4 80> <F4 1.5>>").unwrap()),
        )
        .await
        .unwrap();
    let seen = output(gateway.engine(), &dir, "realtime", Duration::from_secs(10)).await;
    assert_eq!(seen["StreamFunction"], "S2F14");
    assert_eq!(seen["RequestResponse"], "Response");
    assert_eq!(seen["CommonID"], "80,1.5");
    let message: Value = serde_json::from_str(seen["Message"].as_str().unwrap()).unwrap();
    assert_eq!(message["header"]["doc"], "Equipment Constant Data");
    gateway.shutdown().await;
}

/// Saving the equipment's SDL file applies it while the connection stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdl_changes_apply_while_running() {
    let eq = equipment(Duration::ZERO).await;
    let sdl = |realtime: bool| {
        format!(
            r#"{{"messages": {{
  "S1": {{"F13": {{"direction": "h<->e", "reply": true, "body": "ANY"}},
          "F14": {{"direction": "h<->e", "body": "ANY"}}}},
  "S6": {{"F11": {{"doc": "Event Report Send", "direction": "h<-e", "reply": true, "realtime": {realtime}, "body": "ANY"}},
          "F12": {{"direction": "h->e", "body": "ANY"}}}}
}}}}"#
        )
    };
    let realtime = emit(
        "realtime",
        "system.util.jsonDecode(payload['Message'])['header']['doc']",
    );
    let dir = project(
        "live-sdl",
        &toml(eq.port, "sdl = \"tool.sdl\""),
        &[
            ("tool.sdl", &sdl(false)),
            ("handlers/onSecsGemRealtimeUpdate.py", &realtime),
        ],
    );
    let gateway = start(&dir).await;
    let s6f11 = || msg("S6F11 W <L [3] <U4 1> <U4 4001> <L>>");
    eq.link.request(s6f11()).await.unwrap();
    assert_eq!(gateway.engine().completed(), 0, "S6F11 is not realtime yet");
    let mut reloads = gateway.watch_config_reloads();
    write_atomically(&dir.join("tool.sdl"), &sdl(true));
    next_config(&mut reloads).await;
    eq.link.request(s6f11()).await.unwrap();
    let doc = output(gateway.engine(), &dir, "realtime", Duration::from_secs(10)).await;
    assert_eq!(doc, "Event Report Send");
    // A broken SDL is refused; the one in force stays.
    write_atomically(&dir.join("tool.sdl"), "{\"messages\": [");
    next_config(&mut reloads).await;
    eq.link.request(s6f11()).await.unwrap();
    let doc = output(gateway.engine(), &dir, "realtime", Duration::from_secs(10)).await;
    assert_eq!(doc, "Event Report Send");
    gateway.shutdown().await;
}
