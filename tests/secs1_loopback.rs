//! SECS-I end to end: the simulator driven by a secsgate SECS-I host over TCP on 127.0.0.1
//! and over a socat pty pair (a GEM walk with multi-block messages both ways), the gateway
//! with a custom response handler and a realtime handler over SECS-I, the gateway and an
//! in-process simulator over a serial line from project.toml, and a serial port that
//! vanishes and comes back.
//!
//! Tests wait on events (link states, replies, socat's own report of its ptys), never on
//! the clock; every socat started is stopped by its PID.

mod gem_common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use secsgate::config::Project;
use secsgate::gateway::{Gateway, Status};
use secsgate::link::{Endpoint, Link, LinkError, LinkState, Received};
use secsgate::secs1::driver::{self as secs1, Line, SerialSettings};
use secsgate::secs1::protocol::Config;
use secsgate::secs2::sml::{parse_item, parse_message};
use secsgate::secs2::{Item, Message};
use secsgate::sim::{Operation, SimConfig, Simulator};
use secsgate::transport::Transport;
use serde_json::Value;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn item(sml: &str) -> Item {
    parse_item(sml).unwrap_or_else(|e| panic!("{sml}: {e}"))
}

/// SECS-I settings with E4's timers, but a short T3 and a quick reopen for tests.
fn settings(line: Line, equipment: bool, device_id: u16) -> secs1::Settings {
    let mut protocol = if equipment {
        Config::equipment(device_id)
    } else {
        Config::host(device_id)
    };
    protocol.t3 = Duration::from_secs(5);
    let mut s = secs1::Settings::new(line, protocol);
    s.reopen_min = Duration::from_millis(50);
    s.reopen_max = Duration::from_millis(200);
    s
}

/// A pty pair joined by socat: bytes written to one end come out of the other, as over a
/// null-modem cable. Stopped (by PID) when dropped.
struct PtyPair {
    child: Child,
    a: PathBuf,
    b: PathBuf,
}

impl PtyPair {
    /// Starts socat with the two ends linked at `dir/a` and `dir/b`, and waits until socat
    /// reports both ptys ready.
    fn start(dir: &Path) -> PtyPair {
        let (a, b) = (dir.join("a"), dir.join("b"));
        let mut child = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("socat is installed (scripts/setup.sh installs it)");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut ptys = 0;
        // "starting data transfer loop" follows once both ends exist.
        for line in lines.by_ref() {
            let line = line.expect("socat's report");
            if line.contains("PTY is") {
                ptys += 1;
            }
            if line.contains("starting data transfer loop") {
                break;
            }
        }
        assert_eq!(ptys, 2, "socat made two ptys");
        // Keep reading socat's stderr so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        PtyPair { child, a, b }
    }

    fn stop(&mut self) {
        // SAFETY: kill(2) on the PID of the child this struct started.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serial(path: &Path) -> Line {
    Line::Serial(SerialSettings::new(path.display().to_string(), 115_200))
}

async fn simulator(dir: &Path, line: Line) -> Simulator {
    let config = SimConfig::parse(gem_common::TEST_CONFIG, "test.toml", None).unwrap();
    Simulator::start(
        "tester".into(),
        config,
        Transport::Secs1(settings(line, true, 0)),
        dir.to_path_buf(),
    )
    .await
    .expect("simulator starts")
}

/// A SECS-I host: answers the equipment's W-bit primaries and records them.
struct Host {
    link: Link,
    primaries: mpsc::UnboundedReceiver<Message>,
}

async fn host(line: Line) -> Host {
    let Endpoint { link, incoming, .. } = secs1::start(settings(line, false, 0)).await.unwrap();
    link.wait_selected(WAIT).await.expect("the line opens");
    let (tx, primaries) = mpsc::unbounded_channel();
    let replier = link.clone();
    let mut incoming = incoming;
    tokio::spawn(async move {
        while let Some(Received::Message(m)) = incoming.recv().await {
            if m.w_bit {
                let body = match (m.stream, m.function) {
                    (1, 13) => parse_item("<L [2] <B 0> <L>>").ok(),
                    (1, 1) => Some(Item::L(vec![])),
                    _ => Some(Item::B(vec![0])),
                };
                let _ = replier.reply(&m, body).await;
            }
            if tx.send(m).is_err() {
                break;
            }
        }
    });
    Host { link, primaries }
}

impl Host {
    async fn ask(&self, sml: &str) -> Option<Item> {
        let m = parse_message(sml).unwrap_or_else(|e| panic!("{sml}: {e}"));
        match self.link.request(m).await {
            Ok(reply) => reply.body,
            Err(e) => panic!("{sml}: {e}"),
        }
    }

    /// The next primary from the equipment with this stream/function, skipping others.
    async fn next(&mut self, stream: u8, function: u8) -> Message {
        let wait = async {
            loop {
                let m = self.primaries.recv().await.expect("host running");
                if (m.stream, m.function) == (stream, function) {
                    return m;
                }
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("no S{stream}F{function} within {WAIT:?}"))
    }
}

/// A GEM walk over whatever line `host` and `sim` share: establish communication, are you
/// there, status variables, a multi-block primary from the host (S10F3 with 1,000 characters),
/// reports defined and linked, a multi-block S6F11 from the equipment (a 2,000-character
/// variable), a remote command and its event, an alarm.
async fn gem_walk(mut host: Host, sim: &Simulator) {
    let ack = |b: Option<Item>| b.and_then(|i| i.as_int());
    assert_eq!(
        host.ask("S1F13 W <L>").await,
        Some(item(r#"<L [2] <B 0> <L [2] <A "TESTER"> <A "9.9">>>"#))
    );
    assert_eq!(
        host.ask("S1F1 W").await,
        Some(item(r#"<L [2] <A "TESTER"> <A "9.9">>"#))
    );
    assert_eq!(
        host.ask("S1F3 W <L [1] <U4 3>>").await,
        Some(item(r#"<L [1] <A "L1">>"#))
    );
    let text = "x".repeat(1000);
    assert_eq!(
        host.ask(&format!(r#"S10F3 W <L [2] <B 0> <A "{text}">>"#))
            .await,
        Some(item("<B 0>"))
    );
    let define = "S2F33 W <L [2] <U4 1> <L [1] <L [2] <U4 7> <L [2] <U4 10> <U4 3>>>>>";
    assert_eq!(ack(host.ask(define).await), Some(0));
    let link = "S2F35 W <L [2] <U4 1> <L [1] <L [2] <U4 32> <L [1] <U4 7>>>>>";
    assert_eq!(ack(host.ask(link).await), Some(0));
    assert_eq!(
        ack(host.ask("S2F37 W <L [2] <BOOLEAN TRUE> <L>>").await),
        Some(0)
    );
    let lot = "L".repeat(2000);
    sim.operate(Operation::SetVariable(3, Item::A(lot.clone().into_bytes())))
        .await
        .unwrap();
    let reply = host
        .ask(r#"S2F41 W <L [2] <A "START"> <L [1] <L [2] <A "LOTID"> <A "L2">>>>"#)
        .await;
    assert_eq!(reply, Some(item("<L [2] <B 4> <L>>")));
    let m = host.next(6, 11).await;
    assert_eq!(
        m.body.unwrap().as_list().unwrap()[1..],
        [
            item("<U4 32>"),
            Item::L(vec![Item::L(vec![
                Item::U4(vec![7]),
                Item::L(vec![Item::A(b"W1".to_vec()), Item::A(lot.into_bytes())]),
            ])])
        ]
    );
    assert_eq!(
        ack(host.ask("S5F3 W <L [2] <B 128> <U4 1>>").await),
        Some(0)
    );
    sim.operate(Operation::SetAlarm(1, true)).await.unwrap();
    let m = host.next(5, 1).await;
    assert_eq!(
        m.body,
        Some(item(r#"<L [3] <B 0x82> <U4 1> <A "too hot">>"#))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gem_walk_over_secs1_on_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), Line::TcpListen("127.0.0.1:0".into())).await;
    let addr = sim.local_addr().expect("listening").to_string();
    let host = host(Line::TcpConnect(addr)).await;
    gem_walk(host, &sim).await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gem_walk_over_a_serial_pty_pair() {
    let dir = tempfile::tempdir().unwrap();
    let pty = PtyPair::start(dir.path());
    let sim = simulator(dir.path(), serial(&pty.a)).await;
    let host = host(serial(&pty.b)).await;
    gem_walk(host, &sim).await;
    sim.shutdown().await;
    drop(pty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), Line::TcpListen("127.0.0.1:0".into())).await;
    let addr = sim.local_addr().unwrap().to_string();
    let mut s = settings(Line::TcpConnect(addr), false, 0);
    s.protocol.max_message_size = 1024;
    let Endpoint { link, .. } = secs1::start(s).await.unwrap();
    link.wait_selected(WAIT).await.unwrap();
    let big = parse_message(&format!(
        r#"S10F3 W <L [2] <B 0> <A "{}">>"#,
        "y".repeat(2000)
    ))
    .unwrap();
    match link.request(big).await {
        Err(LinkError::Invalid(why)) => assert!(why.contains("1024"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The line still works (communication first: E30 equipment answers only S1F13 before).
    let reply = link
        .request(parse_message("S1F13 W <L>").unwrap())
        .await
        .unwrap();
    assert_eq!(reply.function, 14);
    let reply = link
        .request(parse_message("S1F1 W").unwrap())
        .await
        .unwrap();
    assert_eq!(reply.function, 2);
    sim.shutdown().await;
}

/// A serial port that vanishes (the adapter unplugged: socat gone) is one state change; the
/// driver opens it again by itself once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_serial_port_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let mut pty = PtyPair::start(dir.path());
    let sim = simulator(dir.path(), serial(&pty.a)).await;
    let mut host = host(serial(&pty.b)).await;
    host.ask("S1F13 W <L>").await;
    assert_eq!(
        host.ask("S1F1 W").await.unwrap().as_list().unwrap().len(),
        2
    );
    let mut state = host.link.watch_state();
    pty.stop();
    tokio::time::timeout(WAIT, state.wait_for(|s| *s == LinkState::Disconnected))
        .await
        .expect("the host sees the line go")
        .unwrap();
    assert!(
        host.link.last_problem().is_some(),
        "the link says why it is down"
    );
    // What the equipment sent before is of the old line.
    while host.primaries.try_recv().is_ok() {}
    let pty = PtyPair::start(dir.path());
    tokio::time::timeout(WAIT, state.wait_for(|s| *s == LinkState::Selected))
        .await
        .expect("the host opens the port again")
        .unwrap();
    // The simulator opens its end again too, and establishes communication anew.
    host.next(1, 13).await;
    let reply = host
        .link
        .request(parse_message("S1F1 W").unwrap())
        .await
        .unwrap();
    assert_eq!(reply.function, 2);
    sim.shutdown().await;
    drop(pty);
}

/// A fresh project folder with `project.toml` and handlers.
fn project(name: &str, toml: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("secsgate-secs1-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("handlers")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(dir.join("project.toml"), toml).unwrap();
    for (path, text) in files {
        std::fs::write(dir.join(path), text).unwrap();
    }
    dir
}

/// Waits for a handler to have written `out/NAME.json` (checked each time the engine
/// finishes jobs) and returns it.
async fn output(gateway: &Gateway, dir: &Path, name: &str) -> Value {
    let path = dir.join("out").join(format!("{name}.json"));
    let mut done = gateway.engine().watch_completed();
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(v) = serde_json::from_str(&text)
        {
            let _ = std::fs::remove_file(&path);
            return v;
        }
        tokio::time::timeout_at(until, done.changed())
            .await
            .unwrap_or_else(|_| panic!("no {} within {WAIT:?}", path.display()))
            .expect("the engine is running");
    }
}

/// A handler line that writes a JSON value to out/NAME.json (atomically).
fn emit(name: &str, expr: &str) -> String {
    format!(
        "import json as _j, os as _o\n_p = _o.path.join(_o.path.dirname(_o.path.dirname(__file__)), 'out', '{name}.json')\nopen(_p + '.tmp', 'w').write(_j.dumps({expr}))\n_o.replace(_p + '.tmp', _p)\n"
    )
}

async fn communicating(gateway: &Gateway, name: &str) {
    let conn = gateway.connection(name).unwrap();
    tokio::time::timeout(
        WAIT,
        conn.watch_status()
            .wait_for(|s| *s == Status::Communicating),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} communicating"))
    .unwrap();
}

/// The gateway as a SECS-I host over TCP: establishes communication, answers a multi-block
/// S6F11 with its custom response handler, hands it to the realtime handler, and a script's
/// sendRequest gets its reply over the same line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_custom_response_and_realtime_over_secs1() {
    let Endpoint {
        link,
        incoming,
        local_addr,
    } = secs1::start(settings(Line::TcpListen("127.0.0.1:0".into()), true, 3))
        .await
        .unwrap();
    let port = local_addr.unwrap().port();
    // The equipment answers S1F13 and S1F3 itself.
    let answering = link.clone();
    tokio::spawn(async move {
        let mut incoming = incoming;
        while let Some(Received::Message(m)) = incoming.recv().await {
            let body = match (m.stream, m.function) {
                (1, 13) => item(r#"<L [2] <B 0> <L [2] <A "EQ"> <A "1.0">>>"#),
                (1, 3) => item(r#"<L [2] <U4 23> <A "LOT-1">>"#),
                _ => continue,
            };
            let _ = answering.reply(&m, Some(body)).await;
        }
    });
    let custom = format!(
        "{}system.secsgem.sendResponse(payload['TxID'], payload['SystemBytes'], 'S6F12', '{{\"format\": \"B\", \"value\": 0}}', payload['Equipment'])\n",
        emit("custom", "payload")
    );
    let realtime = emit("realtime", "payload");
    let ask = format!(
        "tx = system.secsgem.sendRequest('S1F3', True, '{{\"format\": \"L\", \"value\": []}}', 'Tool1')\nreply = system.secsgem.getResponse(tx, 'Tool1', 5)\n{}",
        emit("ask", "reply")
    );
    let dir = project(
        "gateway",
        &format!(
            "[gateway]\nhandler_timeout = 5\nstartup_wait = 5\n\n[[equipment]]\nname = \"Tool1\"\nprotocol = \"secs1\"\nport = {port}\ndevice_id = 3\nrealtime = [\"S6F11\"]\ntimers = {{ t3 = 5 }}\n\n[[equipment.custom_response]]\nstream_function = \"S6F11\"\nhandler = \"onEvent\"\n"
        ),
        &[
            ("handlers/onEvent.py", &custom),
            ("handlers/onSecsGemRealtimeUpdate.py", &realtime),
            ("handlers/onAsk.py", &ask),
        ],
    );
    let project = Project::load(&dir).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = Gateway::start(&project, false).await;
    communicating(&gateway, "Tool1").await;

    let text = "E".repeat(1500);
    let event = parse_message(&format!(
        r#"S6F11 W <L [3] <U4 1> <U4 4001> <L [1] <L [2] <U4 7> <L [1] <A "{text}">>>>>"#
    ))
    .unwrap();
    let reply = link.request(event).await.unwrap();
    assert_eq!(reply.to_string(), "S6F12 <B 0x00> .");
    let payload = output(&gateway, &dir, "custom").await;
    assert_eq!(payload["StreamFunction"], "S6F11");
    let message: Value = serde_json::from_str(payload["Message"].as_str().unwrap()).unwrap();
    assert_eq!(
        message["body"][2][0][1][0]["value"].as_str().map(str::len),
        Some(1500)
    );
    let realtime = output(&gateway, &dir, "realtime").await;
    assert_eq!(realtime["StreamFunction"], "S6F11");

    gateway
        .engine()
        .post("test", "onAsk", secsgate::script::Payload::default())
        .await;
    let answer = output(&gateway, &dir, "ask").await;
    let text = answer.to_string();
    assert!(text.contains("LOT-1"), "{text}");
    gateway.shutdown().await;
    link.shutdown().await;
}

/// project.toml: an in-process simulator and an equipment connection over the two ends of
/// a serial line; the gateway reaches Communicating and a script reads the simulator's
/// variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_simulator_over_a_serial_line_from_project_toml() {
    let ptys = tempfile::tempdir().unwrap();
    let pty = PtyPair::start(ptys.path());
    let ask = format!(
        "tx = system.secsgem.sendRequest('S1F1', True, '', 'Tool1')\nreply = system.secsgem.getResponse(tx, 'Tool1', 5)\n{}",
        emit("ask", "reply")
    );
    let dir = project(
        "serial",
        &format!(
            "[gateway]\nstartup_wait = 5\n\n[[simulator]]\nname = \"sim\"\nprotocol = \"secs1\"\nserial_port = \"{}\"\nbaud_rate = 19200\n\n[[equipment]]\nname = \"Tool1\"\nprotocol = \"secs1\"\nserial_port = \"{}\"\nbaud_rate = 19200\ntimers = {{ t1 = 0.5, t2 = 10, t3 = 5, t4 = 45 }}\nretry_limit = 3\n",
            pty.a.display(),
            pty.b.display()
        ),
        &[("handlers/onAsk.py", &ask)],
    );
    let project = Project::load(&dir).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(project.warnings.is_empty(), "{:?}", project.warnings);
    let gateway = Gateway::start(&project, false).await;
    communicating(&gateway, "Tool1").await;
    gateway
        .engine()
        .post("test", "onAsk", secsgate::script::Payload::default())
        .await;
    let answer = output(&gateway, &dir, "ask").await.to_string();
    assert!(
        answer.contains(r#""function":2"#) && answer.contains("SECSGATE-SIM"),
        "{answer}"
    );
    gateway.shutdown().await;
    drop(pty);
}

#[tokio::test]
async fn secs1_tcp_peers_outside_the_allow_list_get_no_byte() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = settings(Line::TcpListen("127.0.0.1:0".into()), true, 0);
    s.allow = secsgate::peers::Allowlist::parse(&["10.0.0.0/8"]).unwrap();
    let endpoint = secs1::start(s).await.unwrap();
    let addr = endpoint.local_addr.unwrap();
    for _ in 0..2 {
        let mut peer = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = peer.write_all(&[0x05]).await; // ENQ: no EOT comes back
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(WAIT, peer.read(&mut buf))
            .await
            .expect("closed within the wait");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert_eq!(endpoint.link.state(), LinkState::Disconnected);

    // The same endpoint settings allowing 127.0.0.1 open the line.
    let mut s = settings(Line::TcpListen("127.0.0.1:0".into()), true, 0);
    s.allow = secsgate::peers::Allowlist::parse(&["127.0.0.1"]).unwrap();
    let endpoint = secs1::start(s).await.unwrap();
    let _peer = tokio::net::TcpStream::connect(endpoint.local_addr.unwrap())
        .await
        .unwrap();
    let mut state = endpoint.link.watch_state();
    tokio::time::timeout(WAIT, state.wait_for(|s| *s == LinkState::Selected))
        .await
        .unwrap()
        .unwrap();
}

/// Messages sent faster than the line carries them wait in the link's queue: the session
/// takes no more once 1 MiB waits to be sent (one message may pass it), however many are
/// queued at once. The peer here never answers ENQ, so each one fails after T2 (no retry)
/// and the next is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_past_the_byte_cap_wait_in_the_queue() {
    let mut protocol = Config::equipment(0);
    protocol.t2 = Duration::from_millis(50);
    protocol.retry = 0;
    let Endpoint {
        link, local_addr, ..
    } = secs1::start(secs1::Settings::new(
        Line::TcpListen("127.0.0.1:0".into()),
        protocol,
    ))
    .await
    .unwrap();
    let peer = tokio::net::TcpStream::connect(local_addr.unwrap())
        .await
        .unwrap();
    link.wait_selected(WAIT).await.unwrap();
    const SIZE: usize = 512 * 1024;
    let sends: Vec<_> = (0..16)
        .map(|_| {
            let link = link.clone();
            tokio::spawn(async move {
                let body = Item::B(vec![0x5A; SIZE]);
                let m = Message::new(
                    secsgate::secs2::StreamFunction::new(10, 1).unwrap(),
                    false,
                    Some(body),
                );
                link.send(m).await
            })
        })
        .collect();
    // Each send returns once the session took it.
    for s in sends {
        tokio::time::timeout(WAIT, s)
            .await
            .expect("taken in turn")
            .unwrap()
            .expect("queued on the line");
    }
    let stats = link.stats();
    let message = SIZE + 4;
    assert!(
        stats.unwritten_peak <= secs1::MAX_QUEUED_BYTES + message,
        "{} bytes waited to be sent (cap {} and one message)",
        stats.unwritten_peak,
        secs1::MAX_QUEUED_BYTES
    );
    assert!(stats.unwritten_peak >= secs1::MAX_QUEUED_BYTES, "{stats:?}");
    link.shutdown().await;
    drop(peer);
}
