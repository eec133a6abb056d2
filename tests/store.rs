//! The message store with a running gateway: a GEM walk against the built-in simulator
//! (every message and reply in `SECSGEM_Messages` with the right columns), an invalid
//! message and a T3 timeout in `SECSGEM_Errors`, `kill -9` during a burst, `secsgate log`,
//! and the file watch ignoring the data folder.
//!
//! They wait on events (handler jobs finished, the store flushed, acks counted), not on the
//! clock.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::Connection;
use secsgate::config::Project;
use secsgate::gateway::{Gateway, Status};
use secsgate::hsms::driver::{self, Endpoint, Mode, Settings};
use secsgate::link::{Incoming, Link, Received};
use secsgate::secs2::{Message, sml};
use secsgate::sim::{SimConfig, Simulator};
use secsgate::store::messages::{
    self, DEFAULT_PREFIX, Direction, MessageRecord, MessageStore, Record, RequestResponse,
    SqliteStore,
};

fn project(name: &str, toml: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("secsgate-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("handlers")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("project.toml"), toml).unwrap();
    for (path, text) in files {
        std::fs::write(dir.join(path), text).unwrap();
    }
    dir
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

/// Waits until the engine has finished `count` jobs in all.
async fn completed(gateway: &Gateway, count: u64) {
    let mut done = gateway.engine().watch_completed();
    tokio::time::timeout(Duration::from_secs(20), done.wait_for(|n| *n >= count))
        .await
        .unwrap_or_else(|_| panic!("{count} jobs not finished within 20 s"))
        .expect("the engine is running");
}

#[derive(Debug, Clone)]
struct Row {
    sf: String,
    direction: String,
    rr: String,
    common_id: String,
    txid: i64,
    system_bytes: i64,
    reply: bool,
    json: String,
    sml: String,
    raw: Vec<u8>,
}

fn rows(db: &Path) -> Vec<Row> {
    let c = Connection::open(db).unwrap();
    let mut stmt = c
        .prepare("SELECT StreamFunction, Direction, RequestResponse, CommonID, TxID, SystemBytes, Reply, Message, SML, Raw FROM SECSGEM_Messages ORDER BY ID")
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Row {
            sf: r.get(0)?,
            direction: r.get(1)?,
            rr: r.get(2)?,
            common_id: r.get(3)?,
            txid: r.get(4)?,
            system_bytes: r.get(5)?,
            reply: r.get(6)?,
            json: r.get(7)?,
            sml: r.get(8)?,
            raw: r.get(9)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn find<'a>(rows: &'a [Row], sf: &str, direction: &str) -> Vec<&'a Row> {
    rows.iter()
        .filter(|r| r.sf == sf && r.direction == direction)
        .collect()
}

/// A request the gateway sent and its reply: same TxID, CommonID and system bytes.
fn pair<'a>(rows: &'a [Row], request: &str, reply: &str) -> (&'a Row, &'a Row) {
    let q = *find(rows, request, "Sent")
        .first()
        .unwrap_or_else(|| panic!("no {request} sent in {rows:#?}"));
    let a = *find(rows, reply, "Received")
        .iter()
        .find(|r| r.system_bytes == q.system_bytes)
        .unwrap_or_else(|| panic!("no {reply} received for {q:?}"));
    assert_eq!((q.rr.as_str(), a.rr.as_str()), ("Request", "Response"));
    assert_eq!((q.reply, a.reply), (true, false));
    assert_eq!(q.txid, a.txid);
    assert_eq!(q.common_id, a.common_id);
    (q, a)
}

/// S1F13, S1F3, S2F33/35/37 from a handler, then an event run: every message in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gem_walk_is_stored_message_by_message() {
    let spool = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(Mode::Passive("127.0.0.1:0".into()));
    settings.device_id = 0;
    let sim = Simulator::start(
        "Sim".into(),
        SimConfig::default_config(),
        settings,
        spool.path().to_path_buf(),
    )
    .await
    .unwrap();
    let port = sim.local_addr().unwrap().port();
    let walk = r#"
import json, os
sg = system.secsgem
out = {}
for sf, body in [
    ("S1F3", [{"format": "U4", "value": 2001}]),
    ("S2F33", [{"format": "U4", "value": 1}, [[{"format": "U4", "value": 10}, [{"format": "U4", "value": 2001}]]]]),
    ("S2F35", [{"format": "U4", "value": 2}, [[{"format": "U4", "value": 100}, [{"format": "U4", "value": 10}]]]]),
    ("S2F37", [{"format": "Bool", "value": True}, []]),
]:
    tx = sg.sendRequest(sf, True, body, "Tool1")
    out[sf] = [tx, sg.getResponse(tx, "Tool1", 10)["header"]["function"]]
p = os.path.join(os.path.dirname(os.path.dirname(__file__)), "out", "walk.json")
open(p, "w").write(json.dumps(out))
"#;
    let dir = project(
        "walk",
        &format!(
            "[gateway]\nstartup_wait = 10\n\n[[equipment]]\nname = \"Tool1\"\nport = {port}\nrealtime = [\"S6F11\"]\n"
        ),
        &[
            ("handlers/onStartup.py", walk),
            ("handlers/onSecsGemRealtimeUpdate.py", "pass\n"),
        ],
    );
    let gateway = start(&dir).await;
    completed(&gateway, 1).await;
    let out: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/walk.json")).unwrap()).unwrap();
    assert_eq!(out["S2F37"][1], 38, "{out}");
    // The lot run reports six events (S6F11 each); the realtime handler sees each.
    sim.start_event_run("lot").unwrap();
    completed(&gateway, 7).await;
    let store = gateway.store().expect("the store is on by default");
    store.flush().await;
    let db = dir.join("data/secsgate.sqlite");
    let all = rows(&db);

    // S1F13 (whichever side sent it first) and its S1F14, both stored.
    let s1f13 = all.iter().find(|r| r.sf == "S1F13").expect("S1F13 stored");
    let s1f14 = all
        .iter()
        .find(|r| r.sf == "S1F14" && r.system_bytes == s1f13.system_bytes)
        .expect("S1F14 stored");
    assert_ne!(s1f13.direction, s1f14.direction);
    assert_eq!(s1f14.rr, "Response");
    // The script's requests and their replies share TxID and CommonID.
    for (q, a) in [
        ("S1F3", "S1F4"),
        ("S2F33", "S2F34"),
        ("S2F35", "S2F36"),
        ("S2F37", "S2F38"),
    ] {
        let (req, rep) = pair(&all, q, a);
        assert_eq!(req.txid, out[q][0].as_i64().unwrap());
        assert!(!req.common_id.is_empty());
        assert!(rep.sml.starts_with(a), "{rep:?}");
    }
    // Each S6F11 was received as a request and answered with S6F12 (TxID, system bytes).
    let events = find(&all, "S6F11", "Received");
    assert!(events.len() >= 6, "{} S6F11", events.len());
    for e in &events {
        assert_eq!((e.rr.as_str(), e.reply), ("Request", true));
        assert!(e.txid > 0);
        assert!(e.sml.starts_with("S6F11 W <L [3]"), "{}", e.sml);
        assert_eq!(e.raw[0] >> 2, 0, "a list item: {:?}", e.raw);
        let json: serde_json::Value = serde_json::from_str(&e.json).unwrap();
        // The standard SDL's CommonID of S6F11 is its CEID.
        assert_eq!(e.common_id, json["body"][1]["value"].to_string(), "{json}");
        assert_eq!(json["header"]["stream"], 6);
        assert_eq!(json["header"]["function"], 11);
        let acks = find(&all, "S6F12", "Sent");
        let ack = acks
            .iter()
            .find(|a| a.system_bytes == e.system_bytes)
            .unwrap_or_else(|| panic!("no S6F12 for {e:?}"));
        assert_eq!((ack.rr.as_str(), ack.reply), ("Response", false));
        assert_eq!((ack.txid, &ack.common_id), (e.txid, &e.common_id));
    }
    // Nothing was received twice: one row per message.
    let c = Connection::open(&db).unwrap();
    let status: (String, String) = c
        .query_row(
            "SELECT Prefix, Status FROM SECSGEM_EquipmentInfo WHERE Equipment = 'Tool1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, (DEFAULT_PREFIX.to_string(), "Communicating".into()));
    gateway.shutdown().await;
    // The stop wrote the last status.
    let status: String = c
        .query_row(
            "SELECT Status FROM SECSGEM_EquipmentInfo WHERE Equipment = 'Tool1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "Disabled");
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An equipment played by a passive HSMS endpoint: answers S1F13, drops the rest.
async fn equipment() -> (Link, u16, tokio::sync::watch::Receiver<u32>) {
    let mut settings = Settings::new(Mode::Passive("127.0.0.1:0".into()));
    settings.protocol.t3 = Duration::from_secs(5);
    let Endpoint {
        link,
        incoming,
        local_addr,
    } = driver::start(settings).await.unwrap();
    let (established, rx) = tokio::sync::watch::channel(0);
    tokio::spawn(serve(link.clone(), incoming, established));
    (link, local_addr.unwrap().port(), rx)
}

/// Answers S1F13 (counting them in `established`), drops the rest.
async fn serve(link: Link, mut incoming: Incoming, established: tokio::sync::watch::Sender<u32>) {
    while let Some(Received::Message(m)) = incoming.recv().await {
        if (m.stream, m.function) == (1, 13) {
            let body = sml::parse_item("<L [2] <B 0> <L [2] <A \"EQ\"> <A \"1.0\">>>").unwrap();
            let _ = link.reply(&m, Some(body)).await;
            established.send_modify(|n| *n += 1);
        }
    }
}

fn msg(text: &str) -> Message {
    sml::parse_message(text).unwrap()
}

/// An S6F11 that does not match the standard SDL and a script's request that meets T3 are
/// kept in SECSGEM_Errors; the invalid message and its S9F7 in SECSGEM_Messages too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_and_timeouts_are_errors() {
    let (eq, port, _) = equipment().await;
    let t3 = r#"
sg = system.secsgem
tx = sg.sendRequest("S2F41", True, [{"format": "A", "value": "START"}, []], "Tool1")
try:
    sg.getResponse(tx, "Tool1", 10)
except Exception:
    pass
"#;
    let dir = project(
        "errors",
        &format!(
            "[gateway]\nstartup_wait = 10\n\n[[equipment]]\nname = \"Tool1\"\nport = {port}\nsdl = \"standard\"\ntimers = {{ t3 = 0.5 }}\ntable_prefix = \"Fab_\"\n"
        ),
        &[("handlers/onStartup.py", t3)],
    );
    let gateway = start(&dir).await;
    let pending = eq.send_request(msg("S6F11 W <U4 1>")).await.unwrap();
    // The S9F7 ends the equipment's transaction: the gateway has handled the message.
    assert!(pending.wait().await.is_err());
    completed(&gateway, 1).await;
    let store = gateway.store().unwrap();
    store.flush().await;
    let c = Connection::open(dir.join("data/secsgate.sqlite")).unwrap();
    let mut stmt = c
        .prepare("SELECT Kind, Reason, StreamFunction, SML FROM Fab_Errors ORDER BY ID")
        .unwrap();
    let errors: Vec<(String, String, Option<String>, Option<String>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let validation = errors
        .iter()
        .find(|e| e.0 == "validation")
        .unwrap_or_else(|| panic!("{errors:#?}"));
    assert_eq!(validation.2.as_deref(), Some("S6F11"));
    assert_eq!(validation.3.as_deref(), Some("S6F11 W <U4 1> ."));
    assert!(validation.1.contains("SDL"), "{}", validation.1);
    let timeout = errors
        .iter()
        .find(|e| e.0 == "timeout")
        .unwrap_or_else(|| panic!("{errors:#?}"));
    assert_eq!(timeout.2.as_deref(), Some("S2F41"));
    assert!(timeout.1.contains("T3"), "{}", timeout.1);
    let sfs: Vec<(String, String)> = c
        .prepare("SELECT StreamFunction, Direction FROM Fab_Messages ORDER BY ID")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for expected in [("S6F11", "Received"), ("S9F7", "Sent"), ("S2F41", "Sent")] {
        assert!(
            sfs.iter()
                .any(|(s, d)| (s.as_str(), d.as_str()) == expected),
            "{expected:?} not in {sfs:?}"
        );
    }
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kill -9` in the middle of a burst: the database opens clean and holds every acked S6F11
/// but at most `queue + batch` of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_at_most_the_queue_and_one_batch() {
    const QUEUE: u64 = 64;
    const BATCH: u64 = 32;
    const KILL_AFTER: u64 = 3000;
    let (eq, port, mut established) = equipment().await;
    let dir = project(
        "kill9",
        &format!(
            "[store]\nqueue = {QUEUE}\nbatch = {BATCH}\n\n[[equipment]]\nname = \"Tool1\"\nport = {port}\ntimers = {{ t5 = 0.2 }}\n"
        ),
        &[],
    );
    let bin = std::env::var("SECSGATE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_secsgate").to_string());
    let mut child = Command::new(bin)
        .arg("run")
        .arg(&dir)
        .arg("--no-reload")
        .arg("--no-web")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start secsgate run");
    let pid = child.id();
    // Communicating: the gateway's S1F13 was answered.
    tokio::time::timeout(Duration::from_secs(20), established.wait_for(|n| *n > 0))
        .await
        .expect("the gateway connects and establishes communication")
        .unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let (reached, mut reached_rx) = tokio::sync::watch::channel(false);
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (eq, acked, reached) = (eq.clone(), acked.clone(), reached.clone());
        senders.spawn(async move {
            loop {
                let m = msg("S6F11 W <L [3] <U4 1> <U4 4001> <L [1] <L [2] <U4 10> <L [1] <A \"LOT-1\">>>>> .");
                match eq.request(m).await {
                    Ok(_) => {
                        if acked.fetch_add(1, Ordering::SeqCst) + 1 >= KILL_AFTER {
                            let _ = reached.send(true);
                        }
                    }
                    Err(_) => return,
                }
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(60), reached_rx.wait_for(|r| *r))
        .await
        .expect("acks within 60 s")
        .unwrap();
    // SIGKILL by PID, then wait for the process to be gone.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let acked = acked.load(Ordering::SeqCst);
    eq.shutdown().await;
    senders.shutdown().await;

    let db = dir.join("data/secsgate.sqlite");
    let c = Connection::open(&db).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let stored: u64 = c
        .query_row(
            "SELECT COUNT(*) FROM SECSGEM_Messages WHERE StreamFunction = 'S6F11' AND Direction = 'Received'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        stored + QUEUE + BATCH >= acked,
        "{stored} stored of {acked} acked (bound: queue {QUEUE} + batch {BATCH})"
    );
    assert!(stored <= acked + 64, "{stored} stored, {acked} acked");
    let _ = std::fs::remove_dir_all(&dir);
}

fn record(time_ms: i64, equipment: &str, text: &str, direction: Direction, txid: u32) -> Record {
    let m = msg(text);
    Record::Message(MessageRecord {
        time_ms,
        gateway: "gw".into(),
        equipment: equipment.into(),
        prefix: DEFAULT_PREFIX.into(),
        direction,
        request_response: RequestResponse::of(&m),
        common_id: format!("C{txid}"),
        txid,
        message_name: None,
        message: Arc::new(m),
    })
}

fn log(dir: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_secsgate"))
        .arg("log")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn secsgate_log_filters_and_json() {
    let dir = project("log", "[[equipment]]\nname = \"Tool1\"\nport = 1\n", &[]);
    let now = messages::now_ms();
    let mut store = SqliteStore::open(&dir.join("data/secsgate.sqlite")).unwrap();
    store
        .write(&[
            record(now - 3 * 3_600_000, "Tool1", "S1F1 W .", Direction::Sent, 1),
            record(
                now - 3 * 3_600_000,
                "Tool1",
                "S1F2 <L [0]> .",
                Direction::Received,
                1,
            ),
            record(
                now - 60_000,
                "Tool1",
                "S6F11 W <L [3] <U4 1> <U4 7> <L [0]>> .",
                Direction::Received,
                2,
            ),
            record(
                now - 60_000,
                "Tool1",
                "S6F12 <B 0x00> .",
                Direction::Sent,
                2,
            ),
            record(
                now - 1000,
                "Tool2",
                "S6F11 W <L [3] <U4 2> <U4 8> <L [0]>> .",
                Direction::Received,
                3,
            ),
        ])
        .unwrap();
    assert_eq!(log(&dir, &[]).len(), 5);
    let s6f11 = log(&dir, &["--sf", "s6f11"]);
    assert_eq!(s6f11.len(), 2);
    assert!(
        s6f11[0].contains("Tool1 Received Request TxID=2 CommonID=C2 S6F11 W <L [3]"),
        "{}",
        s6f11[0]
    );
    assert_eq!(log(&dir, &["--equipment", "Tool2"]).len(), 1);
    assert_eq!(log(&dir, &["--direction", "sent"]).len(), 2);
    assert_eq!(log(&dir, &["--common-id", "C1"]).len(), 2);
    assert_eq!(log(&dir, &["--since", "2h"]).len(), 3);
    assert_eq!(log(&dir, &["--until", "2h"]).len(), 2);
    let last = log(&dir, &["--limit", "1"]);
    assert_eq!(last.len(), 1);
    assert!(last[0].contains("Tool2"), "{}", last[0]);
    let json = log(&dir, &["--json", "--sf", "S6F12"]);
    let v: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert_eq!(v["StreamFunction"], "S6F12");
    assert_eq!(v["Direction"], "Sent");
    assert_eq!(v["RequestResponse"], "Response");
    assert_eq!(v["TxID"], 2);
    assert_eq!(v["Message"]["header"]["function"], 12);
    // --follow: the existing newest line, then each message as it is stored.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_secsgate"))
        .arg("log")
        .arg(&dir)
        .args(["--follow", "--limit", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = follow.id();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a line within 10 s")
    };
    assert!(next().contains("Tool2"));
    store
        .write(&[record(
            now,
            "Tool3",
            "S5F1 W <L [0]> .",
            Direction::Received,
            4,
        )])
        .unwrap();
    let line = next();
    assert!(line.contains("Tool3 Received Request TxID=4"), "{line}");
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = follow.wait();

    let bad = Command::new(env!("CARGO_BIN_EXE_secsgate"))
        .args(["log"])
        .arg(&dir)
        .args(["--since", "10 parsecs"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Files written under data/ (the store, spools, logs) reload nothing; a saved handler
/// reloads once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_in_the_data_folder_reload_nothing() {
    let (_eq, port, _) = equipment().await;
    let dir = project(
        "watch",
        &format!("[[equipment]]\nname = \"Tool1\"\nport = {port}\n"),
        &[("handlers/h.py", "x = 1\n")],
    );
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let gateway = start(&dir).await;
    let mut reloads = gateway.engine().watch_reloads();
    let before = *reloads.borrow_and_update();
    std::fs::write(dir.join("data/notes.py"), "y = 2\n").unwrap();
    std::fs::write(dir.join("data/gateway.log"), "trace\n").unwrap();
    std::fs::write(dir.join("handlers/h.py"), "x = 2\n").unwrap();
    tokio::time::timeout(Duration::from_secs(10), reloads.changed())
        .await
        .expect("a reload within 10 s")
        .unwrap();
    // Save once more and wait for that reload too: by then any reload the data/ files
    // caused (written first) has been counted.
    std::fs::write(dir.join("handlers/h.py"), "x = 3\n").unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        reloads.wait_for(|n| *n >= before + 2),
    )
    .await
    .expect("a second reload within 10 s")
    .unwrap();
    assert_eq!(
        *reloads.borrow_and_update(),
        before + 2,
        "only the handler reloads"
    );
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// At `RUST_LOG=debug` each message, sent or received, replies included, is logged once as
/// SML.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_each_message_once() {
    let (eq, port, mut established) = equipment().await;
    let dir = project(
        "debuglog",
        &format!(
            "[store]\nenabled = false\n\n[[equipment]]\nname = \"Tool1\"\nport = {port}\ntimers = {{ t5 = 0.2 }}\n"
        ),
        &[],
    );
    let child = Command::new(env!("CARGO_BIN_EXE_secsgate"))
        .arg("run")
        .arg(&dir)
        .arg("--no-reload")
        .arg("--no-web")
        .env("RUST_LOG", "secsgate=debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start secsgate run");
    let pid = child.id();
    tokio::time::timeout(Duration::from_secs(20), established.wait_for(|n| *n > 0))
        .await
        .expect("the gateway establishes communication")
        .unwrap();
    for i in 0..3 {
        let m = msg(&format!("S6F11 W <L [3] <U4 {i}> <U4 4001> <L [0]>> ."));
        eq.request(m).await.unwrap();
    }
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("S6F11 W <L [3]"), 3, "{log}");
    assert_eq!(count("S6F12 <B 0x00>"), 3, "{log}");
    assert_eq!(count("S1F13 W"), 1, "{log}");
    assert_eq!(count("S1F14 <L [2]"), 1, "{log}");
    eq.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
