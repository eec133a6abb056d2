//! The hostile peers and careless scripts of issue 14, each as a test on real sockets
//! (127.0.0.1, ephemeral ports): what bounds the memory when a peer does not read or a handler
//! is slow, the status after a reset, where a copied equipment listens, and the answer to a
//! primary that does not decode.
//!
//! Memory is checked on what bounds it, not on the process's RSS: the link's and the script
//! engine's counters of the bytes they hold, against their caps.

mod logs;

use std::path::PathBuf;
use std::time::Duration;

use logs::Logs;
use secsgate::hsms::driver::{self, MAX_QUEUED_WRITE, Mode, Settings};
use secsgate::hsms::frame::{self, Header, SType};
use secsgate::link::{LinkState, QUEUE_BYTES};
use secsgate::secs2::{Item, Message, StreamFunction};
use secsgate::sim::{SimConfig, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

const MIB: usize = 1024 * 1024;

/// Bounds each wait for an event: a test that goes wrong fails instead of hanging (nothing
/// waits on this clock when all is well).
const WAIT: Duration = Duration::from_secs(60);

fn sf(stream: u8, function: u8) -> StreamFunction {
    StreamFunction::new(stream, function).unwrap()
}

/// Reads one frame: its header and its body bytes.
async fn read_frame(rd: &mut OwnedReadHalf) -> (Header, Vec<u8>) {
    let read = async {
        let mut length = [0u8; 4];
        rd.read_exact(&mut length).await?;
        let mut rest = vec![0u8; u32::from_be_bytes(length) as usize];
        rd.read_exact(&mut rest).await?;
        Ok::<_, std::io::Error>(rest)
    };
    let rest = tokio::time::timeout(WAIT, read)
        .await
        .expect("a frame in time")
        .expect("the connection is open");
    let header = Header::from_bytes(rest[..10].try_into().unwrap());
    (header, rest[10..].to_vec())
}

/// A whole HSMS frame of `message`.
fn encoded(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_message(message, &mut out).unwrap();
    out
}

/// A raw peer selected with an HSMS endpoint at `addr`, communicating (its S1F13 answered).
async fn selected_peer(addr: &str) -> (OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut out = Vec::new();
    frame::encode_control(&Header::control(SType::SelectReq, 0xFFFF_0001), &mut out);
    wr.write_all(&out).await.unwrap();
    let (header, _) = read_frame(&mut rd).await;
    assert_eq!((header.stype, header.byte3), (SType::SelectRsp, 0));
    let mut s1f13 = Message::new(sf(1, 13), true, Some(Item::L(vec![])));
    s1f13.system_bytes = 0xFFFF_0002;
    wr.write_all(&encoded(&s1f13)).await.unwrap();
    loop {
        let (header, _) = read_frame(&mut rd).await;
        if header.stype == SType::Data && (header.stream(), header.function()) == (1, 14) {
            return (rd, wr);
        }
    }
}

fn spool() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("secsgate-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A peer that sends 4 MiB loopback diagnostics (S2F25) to the simulator and never reads the
/// 4 MiB answers. What the simulator holds stays under its link's caps however many come:
/// the received ones waiting for the equipment at most the incoming queue's bytes and one
/// message, the answers waiting to be written at most the write cap and one answer; it stops
/// reading the peer instead. The peer is dropped after the write timeout with one log line,
/// and the next host is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_mib_loopbacks_to_a_peer_that_never_reads_stay_within_the_caps() {
    let logs = Logs::capture();
    let mut settings = Settings::new(Mode::Passive("127.0.0.1:0".into()));
    settings.write_timeout = Duration::from_secs(1);
    settings.protocol.linktest = None;
    let sim = Simulator::start(
        "FourMiB".into(),
        SimConfig::default_config(),
        settings,
        spool(),
    )
    .await
    .unwrap();
    let addr = sim.local_addr().unwrap().to_string();

    let (rd, mut wr) = selected_peer(&addr).await;
    const SENT: u32 = 64; // 256 MiB, if the simulator took them all
    let flood = tokio::spawn(async move {
        let mut m = Message::new(sf(2, 25), true, Some(Item::B(vec![0x5A; 4 * MIB])));
        for i in 1..=SENT {
            m.system_bytes = i;
            // Fails once the simulator has dropped the connection.
            if wr.write_all(&encoded(&m)).await.is_err() {
                return i - 1;
            }
        }
        SENT
    });

    logs.wait_for(&["FourMiB", "connection closed", "write stalled"], WAIT)
        .await;
    assert_eq!(
        logs.lines_with(&["FourMiB", "connection closed"]).len(),
        1,
        "one log line for the drop"
    );
    let written = tokio::time::timeout(WAIT, flood).await.unwrap().unwrap();
    assert!(
        written < SENT,
        "the simulator stopped taking the flood ({written} of {SENT} written)"
    );
    drop(rd);

    // One S2F25 weighs its body (4 MiB and a 4-byte item header) and its header in the
    // incoming queue; one S2F26 frame is that and the 4-byte length.
    let message = 10 + 4 * MIB + 4;
    let stats = sim.link_stats();
    eprintln!("link of the simulator: {stats:?}");
    assert!(
        stats.incoming_peak <= QUEUE_BYTES + message,
        "incoming queue held {} bytes (cap {QUEUE_BYTES} and one message)",
        stats.incoming_peak
    );
    assert!(
        stats.unwritten_peak <= MAX_QUEUED_WRITE + message + 4,
        "{} bytes waited to be written (cap {MAX_QUEUED_WRITE} and one message)",
        stats.unwritten_peak
    );
    assert!(stats.unwritten_peak >= 4 * MIB, "the answers did pile up");

    // The next host is served.
    let host = driver::start(Settings::new(Mode::Active(addr)))
        .await
        .unwrap();
    host.link.wait_selected(WAIT).await.unwrap();
    let s1f14 = host
        .link
        .request(Message::new(sf(1, 13), true, Some(Item::L(vec![]))))
        .await
        .unwrap();
    assert_eq!(s1f14.stream_function(), sf(1, 14));
    let reply = host
        .link
        .request(Message::new(sf(1, 1), true, None))
        .await
        .unwrap();
    assert_eq!(reply.stream_function(), sf(1, 2));
    assert_eq!(host.link.state(), LinkState::Selected);
    host.link.shutdown().await;
    sim.shutdown().await;
}

/// A project in a fresh folder: `project.toml` and handler or library files.
fn project(name: &str, toml: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("secsgate-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["handlers", "lib", "out"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("project.toml"), toml).unwrap();
    for (path, text) in files {
        std::fs::write(dir.join(path), text).unwrap();
    }
    dir
}

/// Plays the equipment for a gateway that connects to `listener`: answers its Select.req and
/// its S1F13, so that it is communicating.
async fn equipment_side(
    listener: tokio::net::TcpListener,
) -> (OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf) {
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("the gateway connects")
        .unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let (header, _) = read_frame(&mut rd).await;
    assert_eq!(header.stype, SType::SelectReq);
    let mut out = Vec::new();
    frame::encode_control(
        &Header::control(SType::SelectRsp, header.system_bytes),
        &mut out,
    );
    wr.write_all(&out).await.unwrap();
    let (header, _) = read_frame(&mut rd).await;
    assert_eq!((header.stream(), header.function()), (1, 13));
    let mut s1f14 = Message::new(
        sf(1, 14),
        false,
        Some(Item::L(vec![Item::B(vec![0]), Item::L(vec![])])),
    );
    s1f14.system_bytes = header.system_bytes;
    wr.write_all(&encoded(&s1f14)).await.unwrap();
    (rd, wr)
}

/// The realtime handler: waits at a gate the test opens, then notes the message's TxID; at
/// the last one it writes what it saw to out/seen.json.
const GATED_HANDLER: &str = "import gate14\ngate14.handle(payload)\n";
const GATE: &str = "\
import json, os, threading
opened = threading.Event()
seen = []
def handle(payload):
    opened.wait()
    seen.append(payload['TxID'])
    if len(seen) == EXPECTED:
        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'out', 'seen.json')
        open(path + '.tmp', 'w').write(json.dumps(seen))
        os.replace(path + '.tmp', path)
";

/// 400 S6F11 of 256 KiB sent without pause to a gateway whose realtime handler is held at a
/// gate: the handler jobs hold at most `queue_bytes`, the link's incoming queue at most its
/// cap and one message; the gateway stops reading the socket (back-pressure: the tool's
/// writes wait) instead of taking more or dropping any. Once the gate opens every message is
/// answered and reaches the handler, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_behind_a_slow_realtime_handler_push_back_and_none_is_lost() {
    const EVENTS: u32 = 400;
    const QUEUE: usize = 2 * MIB;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let toml = format!(
        "[gateway]\nhandler_timeout = 600\nstartup_wait = 1\nqueue_bytes = {QUEUE}\n\n[store]\nenabled = false\n\n\
         [[equipment]]\nname = \"Gated\"\nport = {port}\nsdl = \"none\"\nrealtime = [\"S6F11\"]\n\
         timers = {{ t3 = 600, t5 = 0.2, linktest = 0 }}\n"
    );
    let gate = GATE.replace("EXPECTED", &EVENTS.to_string());
    let dir = project(
        "gated",
        &toml,
        &[
            ("handlers/onSecsGemRealtimeUpdate.py", GATED_HANDLER),
            ("lib/gate14.py", &gate),
        ],
    );
    let loaded = secsgate::config::Project::load(&dir).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = secsgate::gateway::Gateway::start(&loaded, false).await;
    let (mut rd, mut wr) = equipment_side(listener).await;
    let conn = gateway.connection("Gated").unwrap();
    let link = conn.link().unwrap();
    let mut holds = link.meter().watch_input_holds();

    // The tool: every S6F11 at once, then every S6F12 read, checked in order.
    let event = |i: u32| {
        let report = Item::L(vec![
            Item::U4(vec![1]),
            Item::L(vec![Item::B(vec![i as u8; 256 * 1024])]),
        ]);
        let body = Item::L(vec![
            Item::U4(vec![i]),
            Item::U4(vec![100]),
            Item::L(vec![report]),
        ]);
        let mut m = Message::new(sf(6, 11), true, Some(body));
        m.system_bytes = i;
        m
    };
    let weight = 10 + event(1).body.as_ref().unwrap().encoded_len();
    let writer = tokio::spawn(async move {
        for i in 1..=EVENTS {
            wr.write_all(&encoded(&event(i))).await.unwrap();
        }
        wr
    });
    let reader = tokio::spawn(async move {
        for i in 1..=EVENTS {
            let (header, body) = read_frame(&mut rd).await;
            assert_eq!((header.stream(), header.function()), (6, 12));
            assert_eq!(header.system_bytes, i, "the replies come in order");
            assert_eq!(body, [0x21, 0x01, 0x00], "S6F12 ACKC6 0");
        }
        rd
    });

    // The handler jobs fill up (no room for one more event), and then the link's queue: the
    // link stops reading the tool. Each time the link's queue fills (the receive loop took one
    // more message while the jobs still had room), it says so; once the jobs are full, the
    // loop takes one more message, waits for room, and the link fills a last time.
    let full = |jobs: &Option<secsgate::script::QueueStats>| {
        jobs.is_some_and(|j| j.peak_bytes + weight > QUEUE)
    };
    let jobs = tokio::time::timeout(WAIT, async {
        loop {
            holds.changed().await.unwrap();
            let jobs = gateway.engine().queue_stats("Gated");
            if full(&jobs) {
                return jobs.unwrap();
            }
        }
    })
    .await
    .expect("the handler jobs and then the link's queue fill up");
    assert!(!writer.is_finished(), "the tool's writes wait");
    eprintln!("while held: jobs {jobs:?}, link {:?}", link.stats());
    assert_eq!(jobs.limit_bytes, QUEUE);

    // Open the gate: everything goes through.
    pyo3::Python::attach(|py| -> pyo3::PyResult<()> {
        use pyo3::types::PyAnyMethods;
        py.import("gate14")?
            .getattr("opened")?
            .call_method0("set")?;
        Ok(())
    })
    .unwrap();
    let _wr = tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
    let _rd = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    let seen = output(&gateway, &dir, "seen").await;
    let txids: Vec<u64> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(
        txids.len(),
        EVENTS as usize,
        "every event reached the handler"
    );
    assert!(
        txids.windows(2).all(|w| w[0] < w[1]),
        "in the order they came"
    );

    let jobs = gateway.engine().queue_stats("Gated").unwrap();
    let stats = link.stats();
    eprintln!("after: jobs {jobs:?}, link {stats:?}");
    assert!(
        jobs.peak_bytes <= QUEUE,
        "handler jobs held {} bytes (cap {QUEUE})",
        jobs.peak_bytes
    );
    assert!(
        stats.incoming_peak <= QUEUE_BYTES + weight,
        "the link's incoming queue held {} bytes (cap {QUEUE_BYTES} and one message)",
        stats.incoming_peak
    );
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits for a handler to have written `out/NAME.json` (checked each time the engine finishes
/// jobs) and returns it.
async fn output(
    gateway: &secsgate::gateway::Gateway,
    dir: &std::path::Path,
    name: &str,
) -> serde_json::Value {
    let path = dir.join("out").join(format!("{name}.json"));
    let mut done = gateway.engine().watch_completed();
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(v) = serde_json::from_str(&text)
        {
            return v;
        }
        tokio::time::timeout_at(until, done.changed())
            .await
            .unwrap_or_else(|_| panic!("no {} in time", path.display()))
            .expect("the engine is running");
    }
}

/// `copyEquipment` with only a passive port (no address) listens on 127.0.0.1, as every
/// listener does unless an address is configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_equipment_with_only_a_passive_port_listens_on_loopback() {
    // A port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let startup = format!(
        "system.secsgem.copyEquipment('Source', 'Copy', True, '', 0, '', {port}, 0)\n\
         import json, os\n\
         path = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'out', 'copied.json')\n\
         open(path + '.tmp', 'w').write(json.dumps(True))\n\
         os.replace(path + '.tmp', path)\n"
    );
    let dir = project(
        "copy-passive",
        "[gateway]\nstartup_wait = 1\n\n[store]\nenabled = false\n\n\
         [[equipment]]\nname = \"Source\"\nenabled = false\nport = 1\n",
        &[("handlers/onStartup.py", &startup)],
    );
    let loaded = secsgate::config::Project::load(&dir).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = secsgate::gateway::Gateway::start(&loaded, false).await;
    assert_eq!(output(&gateway, &dir, "copied").await, true);
    let copy = gateway.connection("Copy").expect("the copy exists");
    let addr = copy.local_addr().expect("the copy listens");
    assert_eq!(addr.to_string(), format!("127.0.0.1:{port}"));
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A primary from the tool whose body does not decode is answered S9F7 (illegal data) by the
/// gateway, its header as MHEAD, so the tool does not wait out T3; the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_does_not_decode_gets_s9f7_from_the_gateway() {
    let logs = Logs::capture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = project(
        "malformed",
        &format!(
            "[gateway]\nstartup_wait = 1\n\n[store]\nenabled = false\n\n\
             [[equipment]]\nname = \"Garbled\"\nport = {port}\ntimers = {{ t3 = 600, linktest = 0 }}\n"
        ),
        &[],
    );
    let loaded = secsgate::config::Project::load(&dir).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = secsgate::gateway::Gateway::start(&loaded, false).await;
    let (mut rd, mut wr) = equipment_side(listener).await;
    // S6F11 W whose body says "list of 3" and ends after one item.
    let mut header = Header::data(&Message::new(sf(6, 11), true, None));
    header.system_bytes = 0x77;
    let body = [0x01u8, 0x03, 0xA5, 0x01, 0x01];
    let mut out = ((10 + body.len()) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(&body);
    wr.write_all(&out).await.unwrap();
    let (s9, mhead) = loop {
        let (h, body) = read_frame(&mut rd).await;
        if h.stype == SType::Data && h.stream() == 9 {
            break (h, body);
        }
    };
    assert_eq!(
        (s9.function(), s9.w_bit()),
        (7, false),
        "S9F7, no reply expected"
    );
    let mut expected = vec![0x21, 0x0A];
    expected.extend_from_slice(&header.to_bytes());
    assert_eq!(
        mhead, expected,
        "MHEAD is the header of the malformed message"
    );
    // One line says it, and nothing else warns about it.
    let naming = logs.lines_with(&["Garbled", "malformed message from the equipment", "S9F7"]);
    assert_eq!(naming.len(), 1, "{naming:#?}");
    let warned: Vec<String> = logs
        .lines_with(&["Garbled"])
        .into_iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert_eq!(warned, naming, "no other warning for it");
    // The connection goes on: a good S1F1 is answered.
    let mut s1f1 = Message::new(sf(1, 1), true, None);
    s1f1.system_bytes = 0x78;
    wr.write_all(&encoded(&s1f1)).await.unwrap();
    let (h, _) = read_frame(&mut rd).await;
    assert_eq!((h.stream(), h.function(), h.system_bytes), (1, 2, 0x78));
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
