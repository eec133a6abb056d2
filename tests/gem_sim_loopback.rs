//! The simulator over real sockets on 127.0.0.1 with ephemeral ports, driven by a secsgate
//! HSMS host: every message of the GEM tool table with correct and incorrect input, events,
//! alarms and event runs reaching the host, stream 9 (device ID, malformed body, T3), and a
//! spool that survives a restart of the simulator.

mod gem_common;

use std::path::Path;
use std::time::Duration;

use secsgate::hsms::driver::{self, Mode, Settings};
use secsgate::hsms::frame::{self, Header, SType};
use secsgate::link::{Link, LinkError, Received};
use secsgate::secs2::sml::{parse_item, parse_message};
use secsgate::secs2::{Item, Message};
use secsgate::sim::{Operation, SimConfig, SimError, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

fn fast(mode: Mode) -> Settings {
    let mut s = Settings::new(mode);
    s.protocol.t3 = Duration::from_secs(3);
    s.protocol.t5 = Duration::from_millis(100);
    s.protocol.t6 = Duration::from_secs(2);
    s.protocol.t7 = Duration::from_secs(2);
    s.protocol.linktest = None;
    s.reconnect_max = Duration::from_millis(300);
    s
}

async fn simulator(dir: &Path, t3: Duration) -> Simulator {
    let config = SimConfig::parse(gem_common::TEST_CONFIG, "test.toml", None).unwrap();
    let mut settings = fast(Mode::Passive("127.0.0.1:0".into()));
    settings.protocol.t3 = t3;
    Simulator::start("tester".into(), config, settings, dir.to_path_buf())
        .await
        .expect("simulator starts")
}

/// A host: answers the equipment's primaries (unless told not to) and records them.
struct Host {
    link: Link,
    primaries: mpsc::UnboundedReceiver<Message>,
}

async fn host(sim: &Simulator, device_id: u16, answer: bool) -> Host {
    let addr = sim.local_addr().unwrap().to_string();
    let mut settings = fast(Mode::Active(addr));
    settings.device_id = device_id;
    let endpoint = driver::start(settings).await.unwrap();
    endpoint.link.wait_selected(WAIT).await.unwrap();
    let (tx, primaries) = mpsc::unbounded_channel();
    let replier = endpoint.link.clone();
    let mut incoming = endpoint.incoming;
    tokio::spawn(async move {
        while let Some(Received::Message(m)) = incoming.recv().await {
            if m.w_bit && (answer || (m.stream, m.function) == (1, 13)) {
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
    Host {
        link: endpoint.link,
        primaries,
    }
}

impl Host {
    /// Establishes communication (host-initiated S1F13).
    async fn establish(&self) {
        let reply = self.request("S1F13 W <L>").await.unwrap();
        assert_eq!(reply.function, 14);
    }

    async fn request(&self, sml: &str) -> Result<Message, LinkError> {
        let m = parse_message(sml).unwrap_or_else(|e| panic!("{sml}: {e}"));
        self.link.request(m).await
    }

    async fn ask(&self, sml: &str) -> Option<Item> {
        match self.request(sml).await {
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

fn item(sml: &str) -> Item {
    parse_item(sml).unwrap_or_else(|e| panic!("{sml}: {e}"))
}

/// What a request should get: a reply body, or a stream 9 error.
enum Expect {
    Body(&'static str),
    S9(u8),
    Abort,
}

/// Every request of the GEM tool table, correct and incorrect, with the answer it must get.
const TABLE: &[(&str, Expect)] = &[
    ("S1F1 W", Expect::Body(r#"<L [2] <A "TESTER"> <A "9.9">>"#)),
    (
        "S1F3 W <L [2] <U4 1> <U4 999>>",
        Expect::Body("<L [2] <F4 20> <L>>"),
    ),
    ("S1F3 W <U4 1>", Expect::S9(7)),
    (
        "S1F11 W <L [1] <U4 3>>",
        Expect::Body(r#"<L [1] <L [3] <U4 3> <A "Lot"> <A>>>"#),
    ),
    (
        "S1F11 W <L [1] <U4 9>>",
        Expect::Body("<L [1] <L [3] <U4 9> <A> <A>>>"),
    ),
    (
        "S1F13 W <L>",
        Expect::Body(r#"<L [2] <B 0> <L [2] <A "TESTER"> <A "9.9">>>"#),
    ),
    (
        "S1F21 W <L [1] <U4 10>>",
        Expect::Body(r#"<L [1] <L [3] <U4 10> <A "Wafer"> <A>>>"#),
    ),
    ("S1F21 W <B 1>", Expect::S9(7)),
    (
        "S1F23 W <L [1] <U4 31>>",
        Expect::Body(r#"<L [1] <L [3] <U4 31> <A "CountFive"> <L>>>"#),
    ),
    (
        "S2F13 W <L [2] <U4 21> <U4 5>>",
        Expect::Body(r#"<L [2] <A "T1"> <L>>"#),
    ),
    (
        "S2F15 W <L [1] <L [2] <U4 20> <F4 100>>>",
        Expect::Body("<B 0>"),
    ),
    (
        "S2F15 W <L [1] <L [2] <U4 20> <F4 1000>>>",
        Expect::Body("<B 3>"),
    ),
    (
        "S2F15 W <L [1] <L [2] <U4 1234> <F4 1>>>",
        Expect::Body("<B 1>"),
    ),
    ("S2F15 W <L [1] <U4 20>>", Expect::S9(7)),
    ("S2F13 W <L [1] <U4 20>>", Expect::Body("<L [1] <F4 100>>")),
    ("S2F25 W <B 9 8 7>", Expect::Body("<B 9 8 7>")),
    (
        "S2F29 W <L [1] <U4 21>>",
        Expect::Body(r#"<L [1] <L [6] <U4 21> <A "Name"> <A> <A> <A "T1"> <A>>>"#),
    ),
    (r#"S2F31 W <A "2031020304050600">"#, Expect::Body("<B 0>")),
    (r#"S2F31 W <A "not a time">"#, Expect::Body("<B 1>")),
    (
        r#"S2F23 W <L [5] <U4 1> <A "000000"> <U4 1> <U4 1> <L [1] <U4 1>>>"#,
        Expect::Body("<B 3>"),
    ),
    (
        r#"S2F23 W <L [5] <U4 1> <A "000010"> <U4 1> <U4 1> <L [1] <U4 99>>>"#,
        Expect::Body("<B 4>"),
    ),
    (
        "S2F33 W <L [2] <U4 1> <L [1] <L [2] <U4 7> <L [2] <U4 1> <U4 10>>>>>",
        Expect::Body("<B 0>"),
    ),
    (
        "S2F33 W <L [2] <U4 1> <L [1] <L [2] <U4 8> <L [1] <U4 999>>>>>",
        Expect::Body("<B 4>"),
    ),
    (
        "S2F35 W <L [2] <U4 1> <L [1] <L [2] <U4 32> <L [1] <U4 7>>>>>",
        Expect::Body("<B 0>"),
    ),
    (
        "S2F35 W <L [2] <U4 1> <L [1] <L [2] <U4 32> <L [1] <U4 7>>>>>",
        Expect::Body("<B 3>"),
    ),
    (
        "S2F37 W <L [2] <BOOLEAN TRUE> <L [1] <U4 32>>>",
        Expect::Body("<B 0>"),
    ),
    (
        "S2F37 W <L [2] <BOOLEAN TRUE> <L [1] <U4 4444>>>",
        Expect::Body("<B 1>"),
    ),
    (
        r#"S2F41 W <L [2] <A "STOP"> <L>>"#,
        Expect::Body("<L [2] <B 0> <L>>"),
    ),
    (
        r#"S2F41 W <L [2] <A "JUMP"> <L>>"#,
        Expect::Body("<L [2] <B 1> <L>>"),
    ),
    (
        "S2F43 W <L [1] <L [2] <U1 1> <L>>>",
        Expect::Body("<L [2] <B 1> <L [1] <L [3] <U1 1> <B 1> <L>>>>"),
    ),
    (
        "S2F43 W <L [1] <L [2] <U1 6> <L>>>",
        Expect::Body("<L [2] <B 0> <L>>"),
    ),
    (
        "S2F45 W <L [2] <U4 1> <L [1] <L [2] <U4 1> <L [1] <L [2] <U1 1> <L [2] <F4 50> <F4 40>>>>>>>",
        Expect::Body("<L [2] <B 0> <L>>"),
    ),
    (
        "S2F45 W <L [2] <U4 1> <L [1] <L [2] <U4 3> <L>>>>",
        Expect::Body("<L [2] <B 1> <L [1] <L [3] <U4 3> <B 2> <L>>>>"),
    ),
    (
        "S2F47 W <L [1] <U4 3>>",
        Expect::Body("<L [1] <L [2] <U4 3> <L>>>"),
    ),
    (
        r#"S2F49 W <L [4] <U4 1> <A ""> <A "STOP"> <L>>"#,
        Expect::Body("<L [2] <B 0> <L>>"),
    ),
    (r#"S2F49 W <L [1] <A "STOP">>"#, Expect::S9(7)),
    ("S5F3 W <L [2] <B 128> <U4 1>>", Expect::Body("<B 0>")),
    ("S5F3 W <L [2] <B 128> <U4 77>>", Expect::Body("<B 1>")),
    (
        "S5F5 W <U4 1>",
        Expect::Body(r#"<L [1] <L [3] <B 2> <U4 1> <A "too hot">>>"#),
    ),
    (
        "S5F7 W",
        Expect::Body(
            r#"<L [2] <L [3] <B 2> <U4 1> <A "too hot">> <L [3] <B 7> <U4 2> <A "door open">>>"#,
        ),
    ),
    (
        "S6F15 W <U4 31>",
        Expect::Body("<L [3] <U4 1> <U4 31> <L>>"),
    ),
    ("S6F15 W <U4 9999>", Expect::Body("<L>")),
    ("S6F17 W <U4 9999>", Expect::Body("<L>")),
    (
        "S6F19 W <U4 7>",
        Expect::Body(r#"<L [2] <F4 20> <A "W1">>"#),
    ),
    (
        "S6F21 W <U4 7>",
        Expect::Body(r#"<L [2] <L [2] <U4 1> <F4 20>> <L [2] <U4 10> <A "W1">>>"#),
    ),
    ("S6F23 W <U1 0>", Expect::Body("<B 2>")),
    ("S6F23 W <L>", Expect::S9(7)),
    (r#"S7F1 W <L [2] <A "R1"> <U4 5>>"#, Expect::Body("<B 0>")),
    (
        r#"S7F3 W <L [2] <A "R1"> <A "HEAT">>"#,
        Expect::Body("<B 0>"),
    ),
    (
        r#"S7F5 W <A "R1">"#,
        Expect::Body(r#"<L [2] <A "R1"> <A "HEAT">>"#),
    ),
    (r#"S7F5 W <A "R2">"#, Expect::Body("<L>")),
    ("S7F19 W", Expect::Body(r#"<L [1] <A "R1">>"#)),
    (r#"S7F17 W <L [1] <A "R2">>"#, Expect::Body("<B 4>")),
    (r#"S7F17 W <L [1] <A "R1">>"#, Expect::Body("<B 0>")),
    (r#"S7F1 W <L [2] <A ""> <U4 5>>"#, Expect::Body("<B 3>")),
    (r#"S7F3 W <L [2] <A "R1"> <F4 1.0>>"#, Expect::S9(7)),
    ("S5F5 W <F4 1.0>", Expect::S9(7)),
    ("S2F47 W <A \"x\">", Expect::S9(7)),
    ("S2F29 W <U4 1>", Expect::S9(7)),
    ("S2F25 W <L>", Expect::S9(7)),
    ("S1F23 W <L [1] <L>>", Expect::S9(7)),
    ("S1F11 W", Expect::S9(7)),
    (
        "S6F17 W <U4 31>",
        Expect::Body("<L [3] <U4 2> <U4 31> <L>>"),
    ),
    ("S6F21 W <U4 999>", Expect::Body("<L>")),
    ("S2F37 W <L [1] <BOOLEAN TRUE>>", Expect::S9(7)),
    ("S2F41 W <A \"STOP\">", Expect::S9(7)),
    ("S10F3 W <L [2] <B 0> <A \"hello\">>", Expect::Body("<B 0>")),
    ("S99F1 W", Expect::S9(3)),
    ("S1F99 W", Expect::S9(5)),
    ("S1F15 W", Expect::Body("<B 0>")),
    ("S1F3 W <L>", Expect::Abort),
    ("S1F17 W", Expect::Body("<B 0>")),
    ("S1F17 W", Expect::Body("<B 2>")),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_of_the_gem_tool_table() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), Duration::from_secs(3)).await;
    let host = host(&sim, 0, true).await;
    host.establish().await;
    // Every reply also matches the standard SDL the gateway ships.
    let standard = secsgate::sdl::Sdl::standard();
    for (request, expect) in TABLE {
        let got = host.request(request).await;
        match (expect, got) {
            (Expect::Body(body), Ok(reply)) => {
                assert_eq!(reply.function % 2, 0, "{request}: {reply}");
                assert_ne!(reply.function, 0, "{request}: aborted");
                assert_eq!(reply.body, Some(item(body)), "{request}");
                if let Err(e) = standard.check(&reply, false) {
                    panic!("{request} -> {reply}: does not match sdl/messages.sdl: {e}");
                }
            }
            (Expect::S9(f), Err(LinkError::StreamNine { function, .. })) => {
                assert_eq!(function, *f, "{request}")
            }
            (Expect::Abort, Ok(reply)) => assert_eq!(reply.function, 0, "{request}: {reply}"),
            (_, got) => panic!("{request}: unexpected {got:?}"),
        }
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_alarms_traces_and_runs_reach_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), Duration::from_secs(3)).await;
    let mut host = host(&sim, 0, true).await;
    host.establish().await;
    let ack = |b: Option<Item>| b.and_then(|i| i.as_int());
    let define = "S2F33 W <L [2] <U4 1> <L [1] <L [2] <U4 7> <L [2] <U4 10> <U4 3>>>>>";
    assert_eq!(ack(host.ask(define).await), Some(0));
    let link = "S2F35 W <L [2] <U4 1> <L [1] <L [2] <U4 32> <L [1] <U4 7>>>>>";
    assert_eq!(ack(host.ask(link).await), Some(0));
    assert_eq!(
        ack(host.ask("S2F37 W <L [2] <BOOLEAN TRUE> <L>>").await),
        Some(0)
    );
    // An event run started by name.
    sim.start_event_run("go").unwrap();
    let m = host.next(6, 11).await;
    assert_eq!(
        m.body.unwrap().as_list().unwrap()[1..],
        [
            item("<U4 32>"),
            item(r#"<L [1] <L [2] <U4 7> <L [2] <A "W1"> <A "L1">>>>"#)
        ]
    );
    // ... and by a remote command (HCACK 4: completion signalled by the event).
    let reply = host
        .ask(r#"S2F41 W <L [2] <A "START"> <L [1] <L [2] <A "LOTID"> <A "L2">>>>"#)
        .await;
    assert_eq!(reply, Some(item("<L [2] <B 4> <L>>")));
    host.next(6, 11).await;
    host.next(6, 11).await;
    // Alarms: S5F1 with its set event.
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
    // A trace: two S6F1 of one sample.
    let trace = r#"S2F23 W <L [5] <U4 5> <A "00000005"> <U4 2> <U4 1> <L [1] <U4 2>>>"#;
    assert_eq!(ack(host.ask(trace).await), Some(0));
    for n in 1..=2u32 {
        let m = host.next(6, 1).await;
        let parts = m.body.unwrap();
        assert_eq!(parts.as_list().unwrap()[1], Item::U4(vec![n]));
    }
    // Operator switches.
    sim.operate(Operation::Remote(false)).await.unwrap();
    let reply = host.ask(r#"S2F41 W <L [2] <A "STOP"> <L>>"#).await;
    assert_eq!(
        reply,
        Some(item("<L [2] <B 2> <L>>")),
        "LOCAL refuses commands"
    );
    // Errors from the API.
    assert!(matches!(
        sim.start_event_run("nope"),
        Err(SimError::UnknownRun { .. })
    ));
    assert!(sim.operate(Operation::TriggerEvent(4242)).await.is_err());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s9f1_for_a_wrong_device_id() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), Duration::from_secs(3)).await;
    let host = host(&sim, 7, true).await;
    // S1F13 with device ID 7: the equipment is device 0.
    match host.request("S1F13 W <L>").await {
        Err(LinkError::StreamNine { function: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
    sim.shutdown().await;
}

/// Reads one HSMS frame: (header, body bytes).
async fn read_frame(stream: &mut TcpStream) -> (Header, Vec<u8>) {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.unwrap();
    let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut rest).await.unwrap();
    let mut whole = len.to_vec();
    whole.extend_from_slice(&rest);
    let (header, body) = frame::split_frame(&whole).unwrap();
    (header, body.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s9f7_for_a_body_that_does_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), Duration::from_secs(3)).await;
    let mut tcp = TcpStream::connect(sim.local_addr().unwrap()).await.unwrap();
    let mut out = Vec::new();
    frame::encode_control(&Header::control(SType::SelectReq, 1), &mut out);
    let s1f13 = Message {
        system_bytes: 2,
        ..parse_message("S1F13 W <L>").unwrap()
    };
    frame::encode_message(&s1f13, &mut out).unwrap();
    // S1F3 W whose body says "A, 5 bytes" but holds 1.
    let header = Header::data(&Message {
        system_bytes: 3,
        ..parse_message("S1F3 W").unwrap()
    });
    let body = [0x41u8, 0x05, b'a'];
    out.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&body);
    tcp.write_all(&out).await.unwrap();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let (h, body) = read_frame(&mut tcp).await;
            if h.stype == SType::Data && h.stream() == 9 {
                return (h, body);
            }
        }
    })
    .await
    .expect("S9F7 within 5 s");
    let (h, body) = found;
    assert_eq!(h.function(), 7);
    let mut expected = vec![0x21, 0x0a];
    expected.extend_from_slice(&header.to_bytes());
    assert_eq!(body, expected, "MHEAD is the offending header");
    drop(tcp);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s9f9_when_the_host_leaves_an_event_unanswered() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), Duration::from_millis(300)).await;
    let mut host = host(&sim, 0, false).await;
    host.establish().await;
    assert_eq!(
        host.ask("S2F35 W <L [2] <U4 1> <L [1] <L [2] <U4 31> <L [1] <U4 100>>>>>")
            .await,
        Some(Item::B(vec![0]))
    );
    host.ask("S2F37 W <L [2] <BOOLEAN TRUE> <L [1] <U4 31>>>")
        .await;
    sim.operate(Operation::TriggerEvent(31)).await.unwrap();
    let event = host.next(6, 11).await;
    let s9 = host.next(9, 9).await;
    let Some(Item::B(shead)) = s9.body else {
        panic!("S9F9 without SHEAD")
    };
    assert_eq!(&shead[2..4], &[0x86, 11], "SHEAD names S6F11 W");
    assert_eq!(
        u32::from_be_bytes([shead[6], shead[7], shead[8], shead[9]]),
        event.system_bytes
    );
    // T3 is a communication failure: the equipment asks to establish communication again.
    host.next(1, 13).await;
    sim.shutdown().await;
}

/// Waits until the simulator's spool holds `want` messages and no event run is under way.
async fn wait_for(sim: &Simulator, want: usize) {
    let mut status = sim.watch_status();
    tokio::time::timeout(
        WAIT,
        status.wait_for(|s| s.spool_count == want && s.runs_active == 0),
    )
    .await
    .unwrap_or_else(|_| panic!("the spool never held {want} messages"))
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_survives_a_restart_and_is_sent_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), Duration::from_secs(3)).await;
    let host1 = host(&sim, 0, true).await;
    host1.establish().await;
    host1
        .ask("S2F35 W <L [2] <U4 1> <L [1] <L [2] <U4 32> <L [1] <U4 100>>>>>")
        .await;
    host1
        .ask("S2F37 W <L [2] <BOOLEAN TRUE> <L [1] <U4 32>>>")
        .await;
    // The host goes away; five events are spooled (the spool holds three: no overwrite).
    host1.link.shutdown().await;
    sim.start_event_run("burst").unwrap();
    wait_for(&sim, 3).await;
    sim.shutdown().await;
    // A new simulator process on the same spool folder finds the three messages.
    let sim = simulator(dir.path(), Duration::from_secs(3)).await;
    let mut host2 = host(&sim, 0, true).await;
    host2.establish().await;
    assert_eq!(
        host2.ask("S1F3 W <L [2] <U4 2013> <U4 2017>>").await,
        Some(item("<L [2] <U4 3> <U1 3>>"))
    );
    assert_eq!(host2.ask("S6F23 W <U1 0>").await, Some(Item::B(vec![0])));
    for data_id in 1..=3u32 {
        let m = host2.next(6, 11).await;
        let body = m.body.unwrap();
        assert_eq!(body.as_list().unwrap()[0], Item::U4(vec![data_id]));
        assert_eq!(body.as_list().unwrap()[1], Item::U4(vec![32]));
    }
    wait_for(&sim, 0).await;
    assert_eq!(host2.ask("S6F23 W <U1 0>").await, Some(Item::B(vec![2])));
    sim.shutdown().await;
}

/// A host that answers the simulator's S1F13 and sends its S1F1 right behind the S1F14 (in
/// the same write) gets the S1F1 answered: the simulator handles the reply and the primary
/// in the order they came, so it is communicating when the S1F1 is seen. Then it goes and
/// comes back at once, 50 times: each new connection gets its own S1F13, even when it is
/// selected before the simulator saw the last one end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_right_behind_the_s1f14_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(dir.path(), Duration::from_secs(3)).await;
    for round in 0..50u32 {
        let mut tcp = TcpStream::connect(sim.local_addr().unwrap()).await.unwrap();
        let mut out = Vec::new();
        frame::encode_control(&Header::control(SType::SelectReq, 1), &mut out);
        tcp.write_all(&out).await.unwrap();
        let (s1f13, _) = tokio::time::timeout(WAIT, async {
            loop {
                let (h, body) = read_frame(&mut tcp).await;
                if h.stype == SType::Data && (h.stream(), h.function()) == (1, 13) {
                    return (h, body);
                }
            }
        })
        .await
        .expect("the simulator's S1F13");
        out.clear();
        let s1f14 = Message {
            system_bytes: s1f13.system_bytes,
            ..parse_message("S1F14 <L [2] <B 0> <L>>").unwrap()
        };
        frame::encode_message(&s1f14, &mut out).unwrap();
        let s1f1 = Message {
            system_bytes: 1000 + round,
            ..parse_message("S1F1 W").unwrap()
        };
        frame::encode_message(&s1f1, &mut out).unwrap();
        tcp.write_all(&out).await.unwrap();
        let (h, _) = tokio::time::timeout(WAIT, async {
            loop {
                let (h, body) = read_frame(&mut tcp).await;
                if h.stype == SType::Data && h.function() % 2 == 0 {
                    return (h, body);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: the S1F1 was not answered"));
        assert_eq!(
            (h.stream(), h.function(), h.system_bytes),
            (1, 2, 1000 + round)
        );
        // Gone, and the next one comes at once: it may be selected before the simulator saw
        // this one end, and must still be asked for communication (S1F13) anew.
        drop(tcp);
    }
    sim.shutdown().await;
}
