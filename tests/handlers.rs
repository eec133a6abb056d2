//! Handlers cannot stall their tool or end the gateway: a handler sleeping past
//! `handler_timeout` is woken at its limit, one that ignores the interrupt is abandoned (a new
//! worker takes that tool's next messages), `getResponse` is cut short at the limit, and
//! `os._exit`, `sys.exit` and the like end the handler, not the gateway.
//!
//! Each test runs a gateway against an equipment played by a secsgate HSMS endpoint on
//! 127.0.0.1, and waits on events (handler output, the engine's finished jobs, log lines),
//! never on the clock. The figures printed are the delays between the stalled handler's start
//! plus `handler_timeout` and the start of that tool's next handler.

mod logs;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use logs::Logs;
use secsgate::config::Project;
use secsgate::gateway::{Gateway, Status};
use secsgate::hsms::driver::{self, Endpoint, Mode, Settings};
use secsgate::link::{Incoming, Link, Received};
use secsgate::script::{Outcome, Payload, ScriptEngine};
use secsgate::secs2::{Message, sml};
use serde_json::Value;

/// The `handler_timeout` of every project here.
const LIMIT: f64 = 1.0;

/// A fresh project folder with `project.toml` and handler/lib files.
fn project(name: &str, toml: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("secsgate-hd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["handlers", "lib", "out"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("project.toml"), toml).unwrap();
    // project.toml names `stall`; a test that does not use it gets one that does nothing.
    std::fs::write(dir.join("handlers/stall.py"), "pass\n").unwrap();
    for (path, text) in files {
        std::fs::write(dir.join(path), text).unwrap();
    }
    dir
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

/// A handler line that writes a JSON value to out/NAME.json (atomically).
fn emit(name: &str, expr: &str) -> String {
    format!(
        "import json as _j, os as _o\n_p = _o.path.join(_o.path.dirname(_o.path.dirname(__file__)), 'out', '{name}.json')\nopen(_p + '.tmp', 'w').write(_j.dumps({expr}))\n_o.replace(_p + '.tmp', _p)\n"
    )
}

/// The equipment: a passive endpoint that answers S1F13 itself and nothing else.
struct Equipment {
    link: Link,
    port: u16,
}

async fn equipment() -> Equipment {
    let mut settings = Settings::new(Mode::Passive("127.0.0.1:0".into()));
    settings.protocol.t3 = Duration::from_secs(5);
    let Endpoint {
        link,
        incoming,
        local_addr,
    } = driver::start(settings).await.unwrap();
    tokio::spawn(serve(link.clone(), incoming));
    Equipment {
        link,
        port: local_addr.unwrap().port(),
    }
}

async fn serve(link: Link, mut incoming: Incoming) {
    while let Some(Received::Message(m)) = incoming.recv().await {
        if (m.stream, m.function) == (1, 13) {
            let body = sml::parse_item("<L [2] <B 0> <L [2] <A \"EQ\"> <A \"1.0\">>>").unwrap();
            let _ = link.reply(&m, Some(body)).await;
        }
    }
}

/// `project.toml`: one tool; its S10F1 goes to the handler `stall`, its S6F11 to `next`.
fn toml(port: u16) -> String {
    format!(
        "[gateway]\nhandler_timeout = {LIMIT}\ncustom_response_timeout = 30\nstartup_wait = 5\n\n[[equipment]]\nname = \"Tool1\"\nport = {port}\ntimers = {{ t3 = 5, t5 = 0.2 }}\n\n[[equipment.custom_response]]\nstream_function = \"S10F1\"\nhandler = \"stall\"\n\n[[equipment.custom_response]]\nstream_function = \"S6F11\"\nhandler = \"next\"\n"
    )
}

/// The handler of the tool's next message: records when it started.
fn next_handler() -> String {
    format!(
        "import time\n{}system.secsgem.sendResponse(payload['TxID'], payload['SystemBytes'], 'S6F12', '{{\"format\": \"B\", \"value\": 0}}', payload['Equipment'])\n",
        emit("next", "{'t': time.time()}")
    )
}

async fn start(dir: &Path) -> Gateway {
    let project = Project::load(dir).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = Gateway::start(&project, false).await;
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

/// The tool sends S10F1 (its handler `stall` stalls), then S6F11 while `stall` still runs.
/// Returns how long after `stall`'s start plus the limit `next` started, and how long the
/// S10F1 waited for its (default) reply.
async fn stall_then_next(eq: &Equipment, gateway: &Gateway, dir: &Path) -> (f64, Duration) {
    let link = eq.link.clone();
    let sent = Instant::now();
    let stalled = tokio::spawn(async move {
        let reply = link
            .request(msg("S10F1 W <L [2] <B 0> <A \"hello\">>"))
            .await
            .unwrap();
        (reply.to_string(), sent.elapsed())
    });
    let stall = output(gateway.engine(), dir, "stall", Duration::from_secs(5)).await;
    let link = eq.link.clone();
    let next = tokio::spawn(async move {
        link.request(msg("S6F11 W <L [3] <U4 1> <U4 4001> <L>>"))
            .await
            .unwrap()
            .to_string()
    });
    let started = output(gateway.engine(), dir, "next", Duration::from_secs(5)).await;
    let late = started["t"].as_f64().unwrap() - stall["t"].as_f64().unwrap() - LIMIT;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .unwrap()
            .unwrap(),
        "S6F12 <B 0x00> ."
    );
    let (reply, waited) = tokio::time::timeout(Duration::from_secs(5), stalled)
        .await
        .expect("the stalled handler's message got its default reply")
        .unwrap();
    assert_eq!(reply, "S10F2 <B 0x00> .");
    (late, waited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_handler_is_woken_at_its_limit_and_the_tool_goes_on() {
    let eq = equipment().await;
    let stall = format!(
        "import time\n{}time.sleep(60)\n",
        emit("stall", "{'t': time.time()}")
    );
    let dir = project(
        "sleep",
        &toml(eq.port),
        &[
            ("handlers/stall.py", &stall),
            ("handlers/next.py", &next_handler()),
        ],
    );
    let gateway = start(&dir).await;
    let (late, waited) = stall_then_next(&eq, &gateway, &dir).await;
    println!(
        "time.sleep(60): the next handler started {:.0} ms after the limit; the S10F1 reply came after {waited:?}",
        late * 1000.0
    );
    assert!((-0.05..0.5).contains(&late), "{late}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    // Woken, not abandoned.
    assert_eq!(gateway.engine().abandoned_handlers(), 0);

    // time.sleep itself works as before, in a handler and out of one.
    let check = format!(
        "import time\nt = time.monotonic()\ntime.sleep(0.05)\nslept = time.monotonic() - t\nerrors = []\nfor bad in (-1, 'x', float('nan')):\n    try:\n        time.sleep(bad)\n    except Exception as e:\n        errors.append(type(e).__name__)\n{}",
        emit(
            "check",
            "{'slept': slept, 'errors': errors, 'name': time.sleep.__name__}"
        )
    );
    std::fs::write(dir.join("handlers/check.py"), check).unwrap();
    gateway.engine().reload_path(&dir.join("handlers/check.py"));
    gateway
        .engine()
        .post("Tool1", "check", Payload::default())
        .await;
    let out = output(gateway.engine(), &dir, "check", Duration::from_secs(5)).await;
    assert!(out["slept"].as_f64().unwrap() >= 0.05, "{out}");
    assert_eq!(
        out["errors"],
        serde_json::json!(["ValueError", "TypeError", "ValueError"])
    );
    assert_eq!(out["name"], "sleep");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_catches_the_interrupt_is_abandoned_and_the_tool_goes_on() {
    let logs = Logs::capture();
    let eq = equipment().await;
    // Spins, swallowing every exception (the bare `except:` of Jython-era scripts) where it
    // spends its time, until the test lets it go.
    let stall = format!(
        "import time, secsgate_test_spin_gate as gate\n{}n = 0\nwhile not gate.released:\n    try:\n        while not gate.released:\n            n += 1\n    except:\n        pass\n",
        emit("stall", "{'t': time.time()}")
    );
    let dir = project(
        "spin",
        &toml(eq.port),
        &[
            ("lib/secsgate_test_spin_gate.py", "released = False\n"),
            ("handlers/stall.py", &stall),
            ("handlers/next.py", &next_handler()),
        ],
    );
    let gateway = start(&dir).await;
    let (late, waited) = stall_then_next(&eq, &gateway, &dir).await;
    println!(
        "BaseException loop: the next handler started {:.0} ms after the limit; the S10F1 reply came after {waited:?}",
        late * 1000.0
    );
    assert!((0.2..1.0).contains(&late), "{late}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    let engine = gateway.engine();
    assert_eq!(engine.abandoned_handlers(), 1);
    assert_eq!(engine.abandoned_threads(), 1);
    let abandoned = logs.lines_with(&["handler abandoned", "handler=stall", "WARN"]);
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    assert!(abandoned[0].contains("equipment=Tool1"), "{}", abandoned[0]);
    assert!(
        abandoned[0].contains("still running 1."),
        "{}",
        abandoned[0]
    );

    // The tool's handlers keep running on time while the abandoned thread spins.
    let link = eq.link.clone();
    let reply = link
        .request(msg("S6F11 W <L [3] <U4 2> <U4 4002> <L>>"))
        .await
        .unwrap();
    assert_eq!(reply.to_string(), "S6F12 <B 0x00> .");
    output(engine, &dir, "next", Duration::from_secs(5)).await;

    // Let it go: the abandoned thread ends and exits (it does not rejoin the pool).
    use pyo3::types::PyAnyMethods;
    pyo3::Python::attach(|py| {
        py.import("secsgate_test_spin_gate")
            .and_then(|g| g.setattr("released", true))
    })
    .unwrap();
    logs.wait_for(
        &["abandoned handler", "its thread exits", "handler=stall"],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(engine.abandoned_threads(), 0);
    assert_eq!(engine.abandoned_handlers(), 1);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_response_is_cut_short_at_the_limit() {
    let eq = equipment().await;
    // The equipment never answers S2F41.
    let waits = "tx = system.secsgem.sendRequest('S2F41', True, [{'format': 'A', 'value': 'START'}, []], 'Tool1')\nsystem.secsgem.getResponse(tx, 'Tool1', 60)\n";
    let dir = project(
        "response",
        &toml(eq.port),
        &[
            ("handlers/waits.py", waits),
            ("handlers/next.py", &next_handler()),
        ],
    );
    let gateway = start(&dir).await;
    let started = Instant::now();
    let outcome = gateway
        .engine()
        .submit("Tool1", "waits", Payload::default())
        .await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), outcome)
        .await
        .expect("getResponse(tx, eq, 60) ends at the limit")
        .unwrap();
    let took = started.elapsed();
    println!("getResponse(tx, eq, 60): the handler ended after {took:?}");
    assert_eq!(outcome, Outcome::TimedOut);
    assert!(
        took >= Duration::from_secs_f64(LIMIT) && took < Duration::from_secs_f64(LIMIT + 0.5),
        "{took:?}"
    );
    assert_eq!(gateway.engine().abandoned_handlers(), 0);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_in_a_handler_end_the_handler_not_the_gateway() {
    let eq = equipment().await;
    let tries = format!(
        "import os, posix, signal, sys\nerrors = {{}}\nfor name, call in [\n    ('os._exit', lambda: os._exit(1)),\n    ('posix._exit', lambda: posix._exit(1)),\n    ('os.abort', lambda: os.abort()),\n    ('os.kill', lambda: os.kill(os.getpid(), signal.SIGTERM)),\n    ('os.killpg', lambda: os.killpg(os.getpgrp(), signal.SIGCONT)),\n    ('os.execv', lambda: os.execv('/bin/false', ['false'])),\n    ('signal.raise_signal', lambda: signal.raise_signal(signal.SIGINT)),\n    ('exit', lambda: exit(3)),\n    ('quit', lambda: quit()),\n    ('sys.exit', lambda: sys.exit(4)),\n]:\n    try:\n        call()\n        errors[name] = None\n    except BaseException as e:\n        errors[name] = type(e).__name__ + ': ' + str(e)\nos.kill(os.getpid(), 0)\n{}",
        emit("tries", "errors")
    );
    let dir = project(
        "exits",
        &toml(eq.port),
        &[
            ("handlers/osexit.py", "import os\nos._exit(1)\n"),
            ("handlers/sysexit.py", "import sys\nsys.exit(1)\n"),
            ("handlers/tries.py", &tries),
            ("handlers/next.py", &next_handler()),
        ],
    );
    let gateway = start(&dir).await;
    let engine = gateway.engine();
    let run = |name: &'static str| async move {
        let outcome = engine.submit("Tool1", name, Payload::default()).await;
        tokio::time::timeout(Duration::from_secs(5), outcome)
            .await
            .unwrap()
            .unwrap()
    };
    match run("osexit").await {
        Outcome::Raised(tb) => assert!(
            tb.contains(
                "RuntimeError: os._exit is not allowed in a handler: it would end the gateway"
            ) && tb.contains("line 2"),
            "{tb}"
        ),
        other => panic!("{other:?}"),
    }
    match run("sysexit").await {
        Outcome::Raised(tb) => assert!(tb.contains("SystemExit: 1"), "{tb}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(run("tries").await, Outcome::Done);
    let errors = output(engine, &dir, "tries", Duration::from_secs(5)).await;
    for name in [
        "os._exit",
        "posix._exit",
        "os.abort",
        "os.kill",
        "os.killpg",
        "os.execv",
        "signal.raise_signal",
    ] {
        let text = errors[name].as_str().unwrap_or_default();
        assert!(
            text.starts_with(&format!("RuntimeError: {name} is not allowed in a handler")),
            "{name}: {text}"
        );
    }
    assert_eq!(errors["exit"], "SystemExit: 3");
    assert_eq!(errors["quit"], "SystemExit: None");
    assert_eq!(errors["sys.exit"], "SystemExit: 4");

    // The gateway and the tool go on.
    let reply = eq
        .link
        .request(msg("S6F11 W <L [3] <U4 1> <U4 4001> <L>>"))
        .await
        .unwrap();
    assert_eq!(reply.to_string(), "S6F12 <B 0x00> .");
    output(engine, &dir, "next", Duration::from_secs(5)).await;
    assert_eq!(
        gateway.connection("Tool1").unwrap().status(),
        Status::Communicating
    );
    gateway.shutdown().await;
}
