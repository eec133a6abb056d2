//! Bursts on real sockets (127.0.0.1, ephemeral ports): a peer that pipelines 100,000 W-bit
//! primaries without waiting for any reply, against the simulator and against the gateway
//! (no handler, a realtime handler, a custom response handler). Every one must be answered,
//! in order. The peer is a plain TCP socket speaking HSMS through `hsms::frame`, as a tool or
//! a test rig would, so nothing of the engine's own client path helps it.
//!
//! Each test prints its time and the process's peak RSS (the figures to compare live in
//! `scripts/bench.sh burst`, built with optimisations).

mod logs;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use logs::Logs;
use secsgate::config::Project;
use secsgate::gateway::{Gateway, Status};
use secsgate::hsms::driver::{Mode, Settings};
use secsgate::hsms::frame::{self, Header, SType};
use secsgate::secs2::{Item, Message, StreamFunction};
use secsgate::sim::{SimConfig, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// How many primaries each burst sends.
const BURST: u32 = 100_000;

/// Bounds each wait for the peer's next frame: a stalled connection fails the test instead of
/// hanging it (nothing waits on this clock when all is well).
const STALL: Duration = Duration::from_secs(60);

fn sf(stream: u8, function: u8) -> StreamFunction {
    StreamFunction::new(stream, function).unwrap()
}

/// One frame read from the socket: a control message, or a data message.
enum Frame {
    Control(Header),
    Data(Message),
}

async fn read_frame(rd: &mut BufReader<OwnedReadHalf>) -> Frame {
    let read = async {
        let mut length = [0u8; 4];
        rd.read_exact(&mut length).await?;
        let mut bytes = vec![0u8; u32::from_be_bytes(length) as usize + 4];
        bytes[..4].copy_from_slice(&length);
        rd.read_exact(&mut bytes[4..]).await?;
        Ok::<_, std::io::Error>(bytes)
    };
    let bytes = tokio::time::timeout(STALL, read)
        .await
        .expect("the connection stalled: no frame within a minute")
        .expect("the connection closed");
    let (header, body) = frame::split_frame(&bytes).unwrap();
    if header.stype != SType::Data {
        return Frame::Control(header);
    }
    let body = Item::decode_body(body, &Default::default()).unwrap();
    Frame::Data(header.into_message(body))
}

/// Reads the next frame, which must be a data message (linktests are off).
async fn next_data(rd: &mut BufReader<OwnedReadHalf>) -> Message {
    match read_frame(rd).await {
        Frame::Data(m) => m,
        Frame::Control(h) => panic!("unexpected control message {:?}", h.stype),
    }
}

async fn write_message(wr: &mut OwnedWriteHalf, message: &Message) {
    let mut out = Vec::new();
    frame::encode_message(message, &mut out).unwrap();
    wr.write_all(&out).await.unwrap();
}

/// Writes `BURST` primaries made by `make(i)` (system bytes i, from 1) in large writes,
/// without reading anything.
fn pipeline(mut wr: OwnedWriteHalf, make: fn(u32) -> Message) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut out = Vec::with_capacity(1 << 20);
        for i in 1..=BURST {
            frame::encode_message(&make(i), &mut out).unwrap();
            if out.len() >= 1 << 20 {
                wr.write_all(&out).await.unwrap();
                out.clear();
            }
        }
        wr.write_all(&out).await.unwrap();
        // Keep the write half open until the test ends (closing it would be a half-close).
        std::future::pending::<()>().await;
    })
}

/// Reads until `BURST` replies of `reply_sf` came, checking they come in the order sent and
/// that `check` accepts each body; other data messages go to `other`. Returns nothing: the
/// asserts are the result.
async fn collect_replies(
    rd: &mut BufReader<OwnedReadHalf>,
    reply_sf: StreamFunction,
    check: impl Fn(&Message),
    mut other: impl FnMut(Message),
) {
    let mut expected = 1u32;
    while expected <= BURST {
        let m = next_data(rd).await;
        if m.stream_function() != reply_sf {
            other(m);
            continue;
        }
        assert_eq!(
            m.system_bytes, expected,
            "replies come in the order the primaries were sent"
        );
        check(&m);
        expected += 1;
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn report(what: &str, started: Instant) {
    let elapsed = started.elapsed();
    eprintln!(
        "{what}: {BURST} answered in {:.2} s ({:.0}/s), peak RSS {} KiB",
        elapsed.as_secs_f64(),
        f64::from(BURST) / elapsed.as_secs_f64(),
        peak_rss_kib()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_answers_a_burst_of_100k_pipelined_s1f1() {
    let spool = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(Mode::Passive("127.0.0.1:0".into()));
    settings.protocol.linktest = None;
    let sim = Simulator::start(
        "Burst".into(),
        SimConfig::default_config(),
        settings,
        spool.path().to_path_buf(),
    )
    .await
    .unwrap();
    let stream = TcpStream::connect(sim.local_addr().unwrap()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(1 << 16, rd);
    let mut select = Vec::new();
    frame::encode_control(&Header::control(SType::SelectReq, 0xFFFF_0001), &mut select);
    wr.write_all(&select).await.unwrap();
    match read_frame(&mut rd).await {
        Frame::Control(h) => assert_eq!((h.stype, h.byte3), (SType::SelectRsp, 0)),
        Frame::Data(m) => panic!("expected Select.rsp, got {m}"),
    }
    // Establish communication (the equipment answers S1F1 only when communicating); answer
    // its own S1F13 if it sends one meanwhile.
    let mut s1f13 = Message::new(sf(1, 13), true, Some(Item::L(vec![])));
    s1f13.system_bytes = 0xFFFF_0002;
    write_message(&mut wr, &s1f13).await;
    loop {
        let m = next_data(&mut rd).await;
        if m.stream_function() == sf(1, 13) {
            let ack = Item::L(vec![Item::B(vec![0]), Item::L(vec![])]);
            write_message(&mut wr, &m.reply_with(Some(ack))).await;
        } else if m.stream_function() == sf(1, 14) {
            assert_eq!(m.system_bytes, 0xFFFF_0002);
            break;
        }
    }

    let started = Instant::now();
    let writer = pipeline(wr, |i| {
        let mut m = Message::new(sf(1, 1), true, None);
        m.system_bytes = i;
        m
    });
    collect_replies(&mut rd, sf(1, 2), |_| {}, |_| {}).await;
    report("simulator, S1F1 W", started);
    writer.abort();
    sim.shutdown().await;
}

/// A project in a fresh folder: one equipment connecting to `port`, and handler files.
fn project(name: &str, port: u16, extra: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("secsgate-burst-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("handlers")).unwrap();
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(
        dir.join("project.toml"),
        format!(
            "[gateway]\nworkers = 2\nhandler_timeout = 30\ncustom_response_timeout = 60\nstartup_wait = 1\n\n\
             [[equipment]]\nname = \"Tool1\"\nport = {port}\ntimers = {{ t3 = 60, t5 = 0.2, linktest = 0 }}\n{extra}\n"
        ),
    )
    .unwrap();
    for (path, text) in files {
        std::fs::write(dir.join(path), text).unwrap();
    }
    dir
}

/// Accepts the gateway's connection and plays the equipment up to COMMUNICATING: answers its
/// Select.req and its S1F13.
async fn equipment_side(
    listener: TcpListener,
    dir: &Path,
) -> (Gateway, BufReader<OwnedReadHalf>, OwnedWriteHalf) {
    let project = Project::load(dir).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = Gateway::start(&project, false).await;
    let (stream, _) = listener.accept().await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(1 << 16, rd);
    match read_frame(&mut rd).await {
        Frame::Control(h) if h.stype == SType::SelectReq => {
            let mut out = Vec::new();
            frame::encode_control(&Header::control(SType::SelectRsp, h.system_bytes), &mut out);
            wr.write_all(&out).await.unwrap();
        }
        _ => panic!("expected Select.req"),
    }
    let s1f13 = next_data(&mut rd).await;
    assert_eq!(s1f13.stream_function(), sf(1, 13));
    let body = Item::L(vec![Item::B(vec![0]), Item::L(vec![])]);
    write_message(&mut wr, &s1f13.reply_with(Some(body))).await;
    let conn = gateway.connection("Tool1").unwrap();
    conn.watch_status()
        .wait_for(|s| *s == Status::Communicating)
        .await
        .unwrap();
    (gateway, rd, wr)
}

/// S6F11 W number `i`: DATAID i, CEID 100, no reports.
fn s6f11(i: u32) -> Message {
    let body = Item::L(vec![
        Item::U4(vec![i]),
        Item::U4(vec![100]),
        Item::L(vec![]),
    ]);
    let mut m = Message::new(sf(6, 11), true, Some(body));
    m.system_bytes = i;
    m
}

async fn gateway_burst(name: &str, extra: &str, files: &[(&str, &str)], ack: u8) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = project(name, port, extra, files);
    let (gateway, mut rd, wr) = equipment_side(listener, &dir).await;
    let started = Instant::now();
    let writer = pipeline(wr, s6f11);
    let check = |m: &Message| assert_eq!(m.body, Some(Item::B(vec![ack])), "S6F12 {m}");
    collect_replies(&mut rd, sf(6, 12), check, |m| panic!("unexpected {m}")).await;
    report(&format!("gateway, S6F11 W, {name}"), started);
    writer.abort();
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_a_burst_of_100k_s6f11_with_no_handler() {
    gateway_burst("plain", "", &[], 0).await;
}

/// The realtime handler reads the payload and counts what it sees; at the last message of the
/// burst it sends the count to the equipment as an S1F3 SVID, so the test knows every message
/// went through it.
const COUNTING_HANDLER: &str = "\
import counter
counter.seen += 1
if payload['StreamFunction'] == 'S6F11' and counter.seen == counter.expected:
    system.secsgem.sendRequest('S1F3', False, [{'format': 'U4', 'value': counter.seen}], payload['Equipment'])
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_a_burst_of_100k_s6f11_with_a_realtime_handler() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let counter = format!("seen = 0\nexpected = {BURST}\n");
    let dir = project(
        "realtime",
        port,
        "realtime = [\"S6F11\"]",
        &[
            ("handlers/onSecsGemRealtimeUpdate.py", COUNTING_HANDLER),
            ("lib/counter.py", &counter),
        ],
    );
    let (gateway, mut rd, wr) = equipment_side(listener, &dir).await;
    let started = Instant::now();
    let writer = pipeline(wr, s6f11);
    let mut count = None;
    collect_replies(
        &mut rd,
        sf(6, 12),
        |m| assert_eq!(m.body, Some(Item::B(vec![0]))),
        |m| {
            assert_eq!(m.stream_function(), sf(1, 3), "unexpected {m}");
            count = Some(m.body);
        },
    )
    .await;
    // The handler runs behind the replies: its report may come after the last S6F12.
    let count = match count {
        Some(body) => body,
        None => next_data(&mut rd).await.body,
    };
    assert_eq!(
        count,
        Some(Item::L(vec![Item::U4(vec![BURST])])),
        "the handler saw every S6F11"
    );
    report("gateway, S6F11 W, realtime handler", started);
    writer.abort();
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A custom response handler answers each S6F11 itself, with an ACKC6 the default reply never
/// uses, so the test sees that every reply came from the handler.
const ANSWERING_HANDLER: &str = "\
system.secsgem.sendResponse(payload['TxID'], payload['SystemBytes'], 'S6F12', {'format': 'B', 'value': 7}, payload['Equipment'])
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_a_burst_of_100k_s6f11_with_a_custom_response_handler() {
    gateway_burst(
        "custom",
        "[[equipment.custom_response]]\nstream_function = \"S6F11\"\nhandler = \"onEvent\"\n",
        &[("handlers/onEvent.py", ANSWERING_HANDLER)],
        7,
    )
    .await;
}

/// A peer that sends 64 KiB loopback diagnostics (S2F25) to a simulator and never reads the
/// answers: that connection is dropped by its write timeout, with one log line, while another
/// simulator in the same process goes on answering requests and linktests, and T3 fires on a
/// third connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_dropped_and_others_carry_on() {
    let logs = Logs::capture();
    let spool = tempfile::tempdir().unwrap();
    let start = |name: &str, write_timeout: Duration| {
        let mut settings = Settings::new(Mode::Passive("127.0.0.1:0".into()));
        settings.write_timeout = write_timeout;
        settings.protocol.linktest = None;
        Simulator::start(
            name.into(),
            SimConfig::default_config(),
            settings,
            spool.path().to_path_buf(),
        )
    };
    let stalled = start("NeverReads", Duration::from_secs(2)).await.unwrap();
    let healthy = start("Healthy", Duration::from_secs(2)).await.unwrap();

    // The bad peer: select, establish communication, then write without ever reading again.
    let stream = TcpStream::connect(stalled.local_addr().unwrap())
        .await
        .unwrap();
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut out = Vec::new();
    frame::encode_control(&Header::control(SType::SelectReq, 0xFFFF_0001), &mut out);
    wr.write_all(&out).await.unwrap();
    assert!(matches!(read_frame(&mut rd).await, Frame::Control(h) if h.stype == SType::SelectRsp));
    let mut s1f13 = Message::new(sf(1, 13), true, Some(Item::L(vec![])));
    s1f13.system_bytes = 0xFFFF_0002;
    write_message(&mut wr, &s1f13).await;
    loop {
        let m = next_data(&mut rd).await;
        if m.stream_function() == sf(1, 14) {
            break;
        }
    }
    let flood = tokio::spawn(async move {
        let body = Item::B(vec![0x5A; 64 * 1024]);
        for i in 1..=2_000u32 {
            let mut m = Message::new(sf(2, 25), true, Some(body.clone()));
            m.system_bytes = i;
            let mut out = Vec::new();
            frame::encode_message(&m, &mut out).unwrap();
            // Fails once the simulator has dropped the connection.
            if wr.write_all(&out).await.is_err() {
                return i;
            }
        }
        2_000
    });

    // Meanwhile the other simulator answers a host as usual.
    let host = secsgate::hsms::driver::start(Settings::new(Mode::Active(
        healthy.local_addr().unwrap().to_string(),
    )))
    .await
    .unwrap();
    host.link
        .wait_selected(Duration::from_secs(10))
        .await
        .unwrap();
    host.link
        .request(Message::new(sf(1, 13), true, Some(Item::L(vec![]))))
        .await
        .unwrap();
    for _ in 0..200 {
        let reply = host
            .link
            .request(Message::new(sf(1, 1), true, None))
            .await
            .unwrap();
        assert_eq!(reply.stream_function(), sf(1, 2));
        host.link.linktest().await.unwrap();
    }

    // And T3 fires on a third connection, whose peer never answers.
    let silent = secsgate::hsms::driver::start(Settings::new(Mode::Passive("127.0.0.1:0".into())))
        .await
        .unwrap();
    let mut asking = Settings::new(Mode::Active(silent.local_addr.unwrap().to_string()));
    asking.protocol.t3 = Duration::from_secs(1);
    let asking = secsgate::hsms::driver::start(asking).await.unwrap();
    asking
        .link
        .wait_selected(Duration::from_secs(10))
        .await
        .unwrap();
    let unanswered = asking
        .link
        .request(Message::new(sf(1, 3), true, Some(Item::L(vec![]))))
        .await;
    assert!(
        matches!(unanswered, Err(secsgate::link::LinkError::Timeout { .. })),
        "{unanswered:?}"
    );

    // The stalled connection is dropped by its write timeout: one line says why.
    logs.wait_for(&["NeverReads", "connection closed", "write stalled"], STALL)
        .await;
    assert_eq!(
        logs.lines_with(&["NeverReads", "connection closed"]).len(),
        1,
        "one log line for the drop"
    );
    // The flood ends because its connection is gone, well before all of it was taken.
    let sent = flood.await.unwrap();
    assert!(
        sent < 2_000,
        "the simulator stopped taking the flood ({sent})"
    );
    // The healthy one is still there.
    host.link.linktest().await.unwrap();
    host.link.shutdown().await;
    asking.link.shutdown().await;
    silent.link.shutdown().await;
    stalled.shutdown().await;
    healthy.shutdown().await;
}

/// A mosquitto (Debian's package) on 127.0.0.1:`port`, with its files in `dir`; ready once its
/// log says it runs. Killed by its PID on drop.
struct Mosquitto(std::process::Child);

impl Mosquitto {
    fn start(dir: &Path, port: u16) -> Mosquitto {
        use std::io::BufRead;
        let conf = dir.join("mosquitto.conf");
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\nuser {user}\nlog_dest stderr\nlog_type information\n"),
        )
        .unwrap();
        let mut child = std::process::Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto (scripts/setup.sh installs it)");
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("mosquitto stopped").unwrap();
            if line.contains(" running") {
                break;
            }
        }
        // Keep reading its log so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Mosquitto(child)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// 100,000 S6F11 through a gateway that publishes them on MQTT while the broker is away: the
/// equipment gets every reply as fast as without MQTT (the SECS side never waits on the broker),
/// the publishes wait on disk, and a later run sends them all, in order, once the broker is
/// there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_a_burst_of_100k_s6f11_while_the_mqtt_broker_is_away() {
    let broker_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mqtt = format!(
        "\n[mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\nmessages = [\"S6F11\"]\nreconnect_max = 0.5\n\n[store]\nenabled = false\n"
    );
    let dir = project("mqtt", port, &mqtt, &[]);
    let (gateway, mut rd, wr) = equipment_side(listener, &dir).await;
    let project = Project::load(&dir).unwrap();
    let north = secsgate::north::start_if_on(&project.mqtt, &gateway)
        .await
        .unwrap()
        .expect("[mqtt] is on");
    let stats = gateway.feed_stats().unwrap();
    let started = Instant::now();
    let writer = pipeline(wr, s6f11);
    let check = |m: &Message| assert_eq!(m.body, Some(Item::B(vec![0])), "S6F12 {m}");
    collect_replies(&mut rd, sf(6, 12), check, |m| panic!("unexpected {m}")).await;
    report("gateway, S6F11 W, MQTT broker away", started);
    writer.abort();
    gateway.shutdown().await;
    // Stopping the publisher puts everything still in memory on disk.
    north.shutdown().await;
    let queue = secsgate::north::forward::ForwardQueue::open(
        &project.mqtt.forward_path,
        project.mqtt.forward_limit,
        project.mqtt.forward_bytes,
    )
    .unwrap();
    let waiting = queue.len();
    drop(queue);
    assert!(
        waiting > u64::from(BURST),
        "every S6F11 and the statuses wait on disk: {waiting}"
    );
    assert_eq!(
        stats.published.load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // The broker is there for the next run: a subscriber, then the publisher again, which
    // sends what waited, in order.
    let broker_dir = tempfile::tempdir().unwrap();
    let _broker = Mosquitto::start(broker_dir.path(), broker_port);
    let mut options = rumqttc::MqttOptions::new("burst-checker", "127.0.0.1", broker_port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(options, 16);
    client
        .subscribe("secsgate/+/Tool1/S6F11", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Incoming::SubAck(_)) = events.poll().await.unwrap()
        {
            break;
        }
    }
    let project = Project::load(&dir).unwrap();
    let resent = Instant::now();
    let gateway = Gateway::start(&project, false).await;
    let north = secsgate::north::start_if_on(&project.mqtt, &gateway)
        .await
        .unwrap()
        .expect("[mqtt] is on");
    // As a consumer does, repeats are told by `seq` (QoS 1 is at least once: a publish whose
    // acknowledgement was lost to a reconnect comes again); what is new must be the next
    // S6F11, none missing.
    let mut expected = 1u32;
    let mut last_seq = None;
    let mut repeats = 0u32;
    while expected <= BURST {
        let event = tokio::time::timeout(STALL, events.poll())
            .await
            .expect("the publishes stalled")
            .unwrap();
        if let rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)) = event {
            let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
            let seq = v["seq"].as_u64().unwrap();
            if last_seq.is_some_and(|last| seq <= last) {
                repeats += 1;
                continue;
            }
            last_seq = Some(seq);
            assert_eq!(
                v["message"]["body"][0]["value"], expected,
                "every S6F11, in the order received"
            );
            expected += 1;
        }
    }
    report("MQTT, the forward queue sent by the next run", resent);
    eprintln!("({repeats} repeats dropped by seq)");
    north.shutdown().await;
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
