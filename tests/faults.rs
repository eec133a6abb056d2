//! The fault matrix: every listener secsgate opens, against each way a peer can misbehave
//! on it. For each pair the test checks what the misbehaving peer receives, that exactly one
//! log line names the fault (and no other warning comes with it), and that the listener
//! recovers: a fresh, well-behaved peer connects, selects (or opens the line) and gets its
//! S1F1 answered.
//!
//! Listeners:
//! - the simulator's HSMS passive listener (`Simulator`);
//! - the gateway's passive equipment listener (`mode = "passive"` in project.toml);
//! - `secsgate send --passive`, run as the command (its log is its stderr, at its own level);
//! - the SECS-I listener (SECS-I over TCP, listening; the equipment end).
//!
//! The three HSMS listeners share the HSMS driver; each is tried whole, as it serves a peer.
//! They run on real sockets in real time: each test makes its own listener, with the timer
//! its fault waits for (T7, T8, T1 or T2) at 300 ms and every other timer at SEMI's default,
//! and every wait is for an event (the answer, the close, the log line), bounded. (tokio's
//! paused clock does not fit here: it jumps to the next timer whenever the runtime is idle,
//! also while the kernel is still delivering a loopback packet, which failed a run now and
//! then under load; the timers themselves are tested with explicit instants in
//! `hsms_protocol.rs` and `secs1_protocol.rs`.)
//!
//! HSMS faults (SEMI E37): bytes that are not HSMS (a length under the header size), a length
//! over the maximum, a frame that stops half-way (T8), a peer that connects and says nothing
//! (T7), a reset connection, an unknown SType or PType (Reject.req reasons 1 and 2, the
//! session stays), a data message before select (Reject.req reason 4, the connection stays
//! not selected). SECS-I faults (SEMI E4): noise instead of ENQ, a length byte outside
//! 10..=254, a block cut off (T1), no block after EOT (T2), a reset, a bad checksum (each
//! answered NAK where E4 says so), and a message for another device ID (S9F1).

mod logs;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use logs::Logs;
use secsgate::gem::{Host, HostConfig};
use secsgate::hsms::driver::{self, Mode, Settings};
use secsgate::hsms::frame::{self, Header, SType};
use secsgate::link::{Endpoint, Link, LinkState, Received};
use secsgate::secs1::block::{self, ACK, Block, ENQ, EOT, NAK};
use secsgate::secs1::driver::{self as secs1, Line};
use secsgate::secs2::{Item, Message, StreamFunction};
use secsgate::sim::{SimConfig, Simulator};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Bounds every wait for an event: a listener that goes wrong fails its test instead of
/// hanging it (nothing waits on this clock when all is well).
const WAIT: Duration = Duration::from_secs(60);

/// The timer a fault waits for, on a listener made for that fault (every other timer keeps
/// SEMI's default).
const SHORT: Duration = Duration::from_millis(300);

fn sf(stream: u8, function: u8) -> StreamFunction {
    StreamFunction::new(stream, function).unwrap()
}

/// A name no other test uses, for the listener's log lines.
fn unique(listener: &str, fault: Fault) -> String {
    format!("{listener}-{fault:?}")
}

// ---------------------------------------------------------------------------------------
// HSMS

/// A way an HSMS peer misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Bytes that are not HSMS: a length field of 2, under the 10-byte header.
    Garbage,
    /// A length field of 0xFFFFFFF0, over the maximum message size.
    Oversized,
    /// Selected, then half a frame and nothing more (T8).
    Stalled,
    /// Connects and sends nothing (T7).
    Silent,
    /// Selected, then a TCP reset.
    Reset,
    /// Selected, then a control message with SType 8 (unused).
    UnknownSType,
    /// Selected, then a message with PType 5.
    UnknownPType,
    /// A data message (S1F1 W) before Select.req.
    DataBeforeSelect,
    /// Selected (and communicating), then an S1F3 W whose body does not decode.
    MalformedBody,
}

/// Which HSMS listener a fault is tried on: they answer a malformed body differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listener {
    Simulator,
    Gateway,
    Send,
}

impl Fault {
    /// What the one log line about it says on `listener`.
    fn needle(self, listener: Listener) -> &'static str {
        match self {
            Fault::MalformedBody => match listener {
                Listener::Simulator => "malformed message from the host",
                Listener::Gateway => "malformed message from the equipment; answered S9F7",
                Listener::Send => "received malformed S1F3",
            },
            Fault::Garbage => "bad frame: length field 2 is less than the 10-byte header",
            Fault::Oversized => "message length 4294967280 exceeds the maximum",
            Fault::Stalled => "T8: a message stalled mid-way",
            Fault::Silent => "T7: not selected within the timeout",
            Fault::Reset => "Connection reset by peer",
            Fault::UnknownSType => {
                "sent Reject.req: reason 1 (SType not supported); the rejected message's SType is 8"
            }
            Fault::UnknownPType => {
                "sent Reject.req: reason 2 (PType not supported); the rejected message's PType is 5"
            }
            Fault::DataBeforeSelect => "sent Reject.req: reason 4 (entity not selected)",
        }
    }

    /// T7 and T8 of a listener this fault is tried on: short where the fault waits for one,
    /// SEMI's defaults otherwise.
    fn timers(self) -> (Duration, Duration) {
        match self {
            Fault::Silent => (SHORT, Duration::from_secs(5)),
            Fault::Stalled => (Duration::from_secs(10), SHORT),
            _ => (Duration::from_secs(10), Duration::from_secs(5)),
        }
    }
}

/// Reads one frame; `None` once the connection is closed (or reset).
async fn read_frame(stream: &mut TcpStream) -> Option<(Header, Vec<u8>)> {
    let read = async {
        let mut length = [0u8; 4];
        stream.read_exact(&mut length).await.ok()?;
        let mut rest = vec![0u8; u32::from_be_bytes(length) as usize];
        stream.read_exact(&mut rest).await.ok()?;
        let header = Header::from_bytes(rest[..10].try_into().unwrap());
        Some((header, rest[10..].to_vec()))
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a frame, or the end of the connection")
}

/// Reads frames up to the control message of `stype`, passing over data messages (the
/// listener's own S1F13).
async fn control(stream: &mut TcpStream, stype: SType) -> Header {
    loop {
        match read_frame(stream).await {
            Some((h, _)) if h.stype == stype => return h,
            Some((h, _)) if h.stype == SType::Data => continue,
            other => panic!("expected {stype:?}, got {:?}", other.map(|(h, _)| h)),
        }
    }
}

/// Reads until the listener closes the connection; returns the control messages it sent
/// meanwhile (data messages are its own S1F13: passed over).
async fn until_closed(stream: &mut TcpStream) -> Vec<Header> {
    let mut controls = Vec::new();
    while let Some((h, _)) = read_frame(stream).await {
        if h.stype != SType::Data {
            controls.push(h);
        }
    }
    controls
}

/// Reads until the listener closes the connection and checks it sent not one byte.
async fn closed_without_a_byte(stream: &mut TcpStream) {
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut got)).await;
    let read = read.expect("the listener closes the connection");
    // A reset (the listener closed with our bytes unread) is a close too.
    assert!(read.is_ok() || got.is_empty(), "{read:?}");
    assert!(got.is_empty(), "the listener sent {got:02x?}");
}

fn control_frame(stype: SType, system_bytes: u32) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode_control(&Header::control(stype, system_bytes), &mut out);
    out
}

async fn select(stream: &mut TcpStream) {
    stream
        .write_all(&control_frame(SType::SelectReq, 0x51))
        .await
        .unwrap();
    let rsp = control(stream, SType::SelectRsp).await;
    assert_eq!((rsp.byte3, rsp.system_bytes), (0, 0x51), "selected");
}

/// Closes a socket with a TCP reset (SO_LINGER 0).
fn reset(stream: TcpStream) {
    use std::os::fd::AsRawFd;
    let stream = stream.into_std().unwrap();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this function owns, with a correctly sized value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

/// Plays the misbehaving peer against the HSMS listener at `addr` and checks what it
/// receives.
async fn misbehave(addr: &str, fault: Fault, listener: Listener) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    match fault {
        Fault::MalformedBody => {
            select(&mut stream).await;
            if listener == Listener::Simulator {
                // The equipment answers nothing but S1F13 until it communicates (E30).
                communicate(&mut stream).await;
            }
            // S1F3 W whose body says "A, 5 bytes" and holds 1.
            let mut header = Header::data(&Message::new(sf(1, 3), true, None));
            header.system_bytes = 0x56;
            let body = [0x41u8, 0x05, b'a'];
            let mut out = ((10 + body.len()) as u32).to_be_bytes().to_vec();
            out.extend_from_slice(&header.to_bytes());
            out.extend_from_slice(&body);
            stream.write_all(&out).await.unwrap();
            if listener != Listener::Send {
                // Equipment and gateway answer S9F7 naming it (a host like `send` answers
                // no stream 9 message).
                let (s9, mhead) = loop {
                    match read_frame(&mut stream).await {
                        Some((h, body)) if h.stype == SType::Data && h.stream() == 9 => {
                            break (h, body);
                        }
                        Some(_) => continue,
                        None => panic!("closed before S9F7"),
                    }
                };
                assert_eq!(s9.function(), 7, "S9F7, illegal data");
                let mut expected = vec![0x21, 0x0A];
                expected.extend_from_slice(&header.to_bytes());
                assert_eq!(mhead, expected, "MHEAD is the malformed message's header");
            }
            still_selected(&mut stream).await;
        }
        Fault::Garbage => {
            stream.write_all(b"\x00\x00\x00\x02GARBAGE").await.unwrap();
            // E37: not HSMS, so the connection is closed, with no answer.
            closed_without_a_byte(&mut stream).await;
        }
        Fault::Oversized => {
            stream.write_all(&[0xFF, 0xFF, 0xFF, 0xF0]).await.unwrap();
            // Closed as soon as the length is read, without waiting for (or reading) a body.
            closed_without_a_byte(&mut stream).await;
        }
        Fault::Silent => {
            // Nothing: T7 closes it, with no answer.
            closed_without_a_byte(&mut stream).await;
        }
        Fault::Stalled => {
            select(&mut stream).await;
            // The length and header of an S1F1 W with a 10-byte body, then 3 body bytes.
            let mut m = Message::new(sf(1, 1), true, Some(Item::B(vec![7; 8])));
            m.system_bytes = 0x52;
            let mut out = Vec::new();
            frame::encode_message(&m, &mut out).unwrap();
            stream.write_all(&out[..4 + 10 + 3]).await.unwrap();
            // T8 closes it: no Reject.req, no Separate.req, nothing but the end.
            assert_eq!(until_closed(&mut stream).await, Vec::new());
        }
        Fault::Reset => {
            select(&mut stream).await;
            reset(stream);
        }
        Fault::UnknownSType => {
            select(&mut stream).await;
            let mut h = Header::control(SType::LinktestReq, 0x53);
            h.stype = SType::from_code(8);
            let mut out = Vec::new();
            frame::encode_control(&h, &mut out);
            stream.write_all(&out).await.unwrap();
            let rej = control(&mut stream, SType::RejectReq).await;
            assert_eq!(
                (rej.byte2, rej.byte3, rej.system_bytes),
                (8, 1, 0x53),
                "Reject.req reason 1 naming SType 8"
            );
            still_selected(&mut stream).await;
        }
        Fault::UnknownPType => {
            select(&mut stream).await;
            let mut m = Message::new(sf(1, 1), true, None);
            m.system_bytes = 0x54;
            let mut out = Vec::new();
            frame::encode_message(&m, &mut out).unwrap();
            out[4 + 4] = 5; // PType
            stream.write_all(&out).await.unwrap();
            let rej = control(&mut stream, SType::RejectReq).await;
            assert_eq!(
                (rej.byte2, rej.byte3, rej.system_bytes),
                (5, 2, 0x54),
                "Reject.req reason 2 naming PType 5"
            );
            still_selected(&mut stream).await;
        }
        Fault::DataBeforeSelect => {
            let mut m = Message::new(sf(1, 1), true, None);
            m.system_bytes = 0x55;
            let mut out = Vec::new();
            frame::encode_message(&m, &mut out).unwrap();
            stream.write_all(&out).await.unwrap();
            let rej = control(&mut stream, SType::RejectReq).await;
            assert_eq!(
                (rej.byte2, rej.byte3, rej.system_bytes),
                (0, 4, 0x55),
                "Reject.req reason 4 for a data message"
            );
            // The connection stays, not selected: a select still works on it.
            select(&mut stream).await;
            still_selected(&mut stream).await;
        }
    }
}

/// Establishes communication: S1F13 W, up to its S1F14.
async fn communicate(stream: &mut TcpStream) {
    let mut m = Message::new(sf(1, 13), true, Some(Item::L(vec![])));
    m.system_bytes = 0x57;
    let mut out = Vec::new();
    frame::encode_message(&m, &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    loop {
        match read_frame(stream).await {
            Some((h, _)) if h.stype == SType::Data && h.system_bytes == 0x57 => {
                assert_eq!((h.stream(), h.function()), (1, 14));
                return;
            }
            Some(_) => continue,
            None => panic!("closed before S1F14"),
        }
    }
}

/// The session is still up: a linktest is answered. Then the peer leaves with a plain close
/// (its end first, then reading what is left, so that no unread byte turns it into a reset).
async fn still_selected(stream: &mut TcpStream) {
    stream
        .write_all(&control_frame(SType::LinktestReq, 0x60))
        .await
        .unwrap();
    let rsp = control(stream, SType::LinktestRsp).await;
    assert_eq!(rsp.system_bytes, 0x60);
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest))
        .await
        .expect("the listener closes its end too");
}

/// A well-behaved host: an HSMS active endpoint that answers what the listener sends as a
/// GEM host does (S1F14 to its S1F13, S1F2 to S1F1...).
async fn good_peer(addr: &str) -> Link {
    let mut settings = Settings::new(Mode::Active(addr.to_string()));
    settings.protocol.linktest = None;
    settings.name = "good-peer".into();
    let Endpoint { link, incoming, .. } = driver::start(settings).await.unwrap();
    tokio::spawn(answer(link.clone(), incoming));
    tokio::time::timeout(WAIT, link.wait_selected(WAIT))
        .await
        .expect("selected")
        .expect("selected");
    link
}

/// Answers each primary with a GEM host's default reply.
async fn answer(link: Link, mut incoming: secsgate::link::Incoming) {
    let host = Host::new(HostConfig::default(), Instant::now(), SystemTime::now());
    while let Some(received) = incoming.recv().await {
        if let Received::Message(m) = received
            && let Some(reply) = host.default_reply(&m, Instant::now())
        {
            let _ = link.post_reply(reply).await;
        }
    }
}

/// The listener recovered: a fresh peer connects, selects, establishes communication and
/// gets S1F1 answered.
async fn recover(addr: &str) {
    let link = good_peer(addr).await;
    let s1f14 = link
        .request(Message::new(sf(1, 13), true, Some(Item::L(vec![]))))
        .await
        .expect("S1F13 answered");
    assert_eq!(s1f14.stream_function(), sf(1, 14));
    let s1f2 = link
        .request(Message::new(sf(1, 1), true, None))
        .await
        .expect("S1F1 answered");
    assert_eq!(s1f2.stream_function(), sf(1, 2));
    link.shutdown().await;
}

/// The log lines of `name` that are warnings or errors.
fn warnings(logs: &Logs, name: &str) -> Vec<String> {
    logs.lines_with(&[name])
        .into_iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

/// After the fault and the recovery: one line names the fault, and it is the only warning.
fn one_line(logs: &Logs, name: &str, fault: Fault, listener: Listener) {
    let naming = logs.lines_with(&[name, fault.needle(listener)]);
    assert_eq!(naming.len(), 1, "one line names {fault:?}: {naming:#?}");
    let warned = warnings(logs, name);
    assert_eq!(warned, naming, "no other warning for {fault:?}");
}

/// The simulator's listener.
async fn simulator(fault: Fault) {
    let logs = Logs::capture();
    let name = unique("sim", fault);
    let (t7, t8) = fault.timers();
    let mut settings = Settings::new(Mode::Passive("127.0.0.1:0".into()));
    settings.protocol.t7 = t7;
    settings.protocol.t8 = t8;
    settings.protocol.linktest = None;
    let spool = tempfile::tempdir().unwrap();
    let sim = Simulator::start(
        name.clone(),
        SimConfig::default_config(),
        settings,
        spool.path().to_path_buf(),
    )
    .await
    .unwrap();
    let addr = sim.local_addr().unwrap().to_string();
    misbehave(&addr, fault, Listener::Simulator).await;
    let needle = fault.needle(Listener::Simulator);
    logs.wait_for(&[&name, needle], WAIT).await;
    recover(&addr).await;
    one_line(&logs, &name, fault, Listener::Simulator);
    sim.shutdown().await;
}

/// The gateway's passive equipment listener.
async fn gateway(fault: Fault) {
    let logs = Logs::capture();
    let name = unique("gw", fault);
    let (t7, t8) = fault.timers();
    let dir = std::env::temp_dir().join(format!("secsgate-faults-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("project.toml"),
        format!(
            "[gateway]\nstartup_wait = 1\n\n[store]\nenabled = false\n\n[[equipment]]\nname = \"{name}\"\n\
             mode = \"passive\"\nport = 0\ntimers = {{ t7 = {}, t8 = {}, linktest = 0 }}\n",
            t7.as_secs_f64(),
            t8.as_secs_f64()
        ),
    )
    .unwrap();
    let project = secsgate::config::Project::load(&dir).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = secsgate::gateway::Gateway::start(&project, false).await;
    let conn = gateway.connection(&name).unwrap();
    let addr = conn.local_addr().unwrap().to_string();
    misbehave(&addr, fault, Listener::Gateway).await;
    let needle = fault.needle(Listener::Gateway);
    logs.wait_for(&[&name, needle], WAIT).await;
    recover(&addr).await;
    one_line(&logs, &name, fault, Listener::Gateway);
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a child process wrote on a pipe, line by line, and a watch that ticks per line.
#[derive(Clone)]
struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    tick: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Lines {
    fn read(pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Lines {
        let lines = Lines {
            lines: Default::default(),
            tick: Arc::new(tokio::sync::watch::channel(0).0),
        };
        let out = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Ok(mut l) = out.lines.lock() {
                    l.push(line);
                }
                out.tick.send_modify(|n| *n += 1);
            }
        });
        lines
    }

    fn with(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().filter(|l| l.contains(needle)).cloned().collect())
            .unwrap_or_default()
    }

    /// Waits for a line holding `needle` and returns it.
    async fn wait_for(&self, needle: &str) -> String {
        let mut tick = self.tick.subscribe();
        let found = async {
            loop {
                if let Some(line) = self.with(needle).pop() {
                    return line;
                }
                if tick.changed().await.is_err() {
                    // The reader ended: look once more.
                    return self.with(needle).pop().unwrap_or_default();
                }
            }
        };
        let line = tokio::time::timeout(WAIT, found)
            .await
            .unwrap_or_else(|_| panic!("no line with {needle:?}"));
        assert!(!line.is_empty(), "no line with {needle:?}");
        line
    }
}

/// `secsgate send --passive`: its listener is the HSMS driver the others use; here it runs
/// as the command does, its log on stderr at the command's own level. It reads its message
/// from stdin, written once the good peer is selected.
async fn send_passive(fault: Fault) {
    let (t7, t8) = fault.timers();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_secsgate"))
        .args([
            "send",
            "--passive",
            "--connect",
            "127.0.0.1:0",
            "--wait",
            "60",
        ])
        .args(["--t7", &t7.as_secs_f64().to_string()])
        .args(["--t8", &t8.as_secs_f64().to_string()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = Lines::read(child.stderr.take().unwrap());
    let stdout = Lines::read(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let listening = stderr.wait_for("listening on").await;
    let addr = listening.rsplit(' ').next().unwrap().to_string();

    misbehave(&addr, fault, Listener::Send).await;
    let needle = fault.needle(Listener::Send);
    stderr.wait_for(needle).await;

    // Recovery: a good peer selects; the command sends its S1F1 to it and prints the reply.
    let link = good_peer(&addr).await;
    stdin.write_all(b"S1F1 W .\n").await.unwrap();
    stdout.wait_for("S1F2").await;
    drop(stdin);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("send ends once stdin does")
        .unwrap();
    assert!(status.success(), "{status}: {:#?}", stderr.with(""));
    // It separated: the good peer's session ends.
    tokio::time::timeout(
        WAIT,
        link.watch_state()
            .wait_for(|s| *s == LinkState::Disconnected),
    )
    .await
    .expect("send separated")
    .unwrap();
    let naming = stderr.with(needle);
    assert_eq!(naming.len(), 1, "one line names {fault:?}: {naming:#?}");
    // Warnings, and the command's own lines about what the peer sent.
    let warned: Vec<String> = stderr
        .with("")
        .into_iter()
        .filter(|l| {
            l.contains(" WARN ") || l.contains(" ERROR ") || l.contains("secsgate: received")
        })
        .collect();
    assert_eq!(warned, naming, "no other warning for {fault:?}");
    link.shutdown().await;
}

/// One test per listener and fault: `matrix! { #[runtime] listener(Kind): test: Fault, ... }`.
macro_rules! matrix {
    (#[$runtime:meta] $listener:ident($kind:ident): $($test:ident: $fault:ident),* $(,)?) => {
        $(
            #[$runtime]
            async fn $test() {
                $listener($kind::$fault).await;
            }
        )*
    };
}

matrix! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    simulator(Fault):
    simulator_garbage: Garbage,
    simulator_oversized_length: Oversized,
    simulator_stalled_frame_t8: Stalled,
    simulator_silent_peer_t7: Silent,
    simulator_reset: Reset,
    simulator_unknown_stype: UnknownSType,
    simulator_unknown_ptype: UnknownPType,
    simulator_data_before_select: DataBeforeSelect,
    simulator_malformed_body_s9f7: MalformedBody,
}

matrix! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    gateway(Fault):
    gateway_garbage: Garbage,
    gateway_oversized_length: Oversized,
    gateway_stalled_frame_t8: Stalled,
    gateway_silent_peer_t7: Silent,
    gateway_reset: Reset,
    gateway_unknown_stype: UnknownSType,
    gateway_unknown_ptype: UnknownPType,
    gateway_data_before_select: DataBeforeSelect,
    gateway_malformed_body_s9f7: MalformedBody,
}

matrix! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    send_passive(Fault):
    send_passive_garbage: Garbage,
    send_passive_oversized_length: Oversized,
    send_passive_stalled_frame_t8: Stalled,
    send_passive_silent_peer_t7: Silent,
    send_passive_reset: Reset,
    send_passive_unknown_stype: UnknownSType,
    send_passive_unknown_ptype: UnknownPType,
    send_passive_data_before_select: DataBeforeSelect,
    send_passive_malformed_body: MalformedBody,
}

// ---------------------------------------------------------------------------------------
// SECS-I

/// A way a SECS-I peer misbehaves on the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LineFault {
    /// Noise where ENQ should be.
    Garbage,
    /// ENQ, then a length byte of 255 (outside 10..=254).
    BadLength,
    /// ENQ, then a block cut off after 6 of its bytes (T1).
    Stalled,
    /// ENQ, then nothing after our EOT (T2).
    Silent,
    /// ENQ, then a TCP reset.
    Reset,
    /// ENQ, then a whole block whose checksum is one off.
    BadChecksum,
    /// A good S1F1 W for device 5 (the listener is device 0).
    WrongDevice,
}

impl LineFault {
    /// T1 and T2 of a listener this fault is tried on: short where the fault waits for one,
    /// E4's defaults otherwise.
    fn timers(self) -> (Duration, Duration) {
        match self {
            LineFault::Silent => (Duration::from_millis(500), SHORT),
            LineFault::Stalled | LineFault::BadLength | LineFault::BadChecksum => {
                (SHORT, Duration::from_secs(10))
            }
            _ => (Duration::from_millis(500), Duration::from_secs(10)),
        }
    }

    fn needle(self) -> &'static str {
        match self {
            LineFault::Garbage => "skipping noise on the line: 0x6e while the line is idle",
            LineFault::BadLength => "block length byte 255 is outside 10..=254",
            LineFault::Stalled => "T1: the line went quiet after 6 of 13 block bytes; sent NAK",
            LineFault::Silent => "T2: no block after our EOT; sent NAK",
            LineFault::Reset => "Connection reset by peer",
            LineFault::BadChecksum => "block checksum mismatch",
            LineFault::WrongDevice => "message for another device ID discarded",
        }
    }
}

/// One block from the host side (R-bit 0): S1F1 W for `device_id`, system bytes 0x61.
fn host_block(device_id: u16) -> (Block, Vec<u8>) {
    let b = Block {
        header: block::Header {
            r_bit: false,
            device_id,
            w_bit: true,
            stream: 1,
            function: 1,
            e_bit: true,
            block_number: 1,
            system_bytes: 0x61,
        },
        data: Vec::new(),
    };
    let mut out = Vec::new();
    b.encode(&mut out);
    (b, out)
}

async fn read_byte(stream: &mut TcpStream) -> u8 {
    let mut b = [0u8; 1];
    tokio::time::timeout(WAIT, stream.read_exact(&mut b))
        .await
        .expect("a byte from the line")
        .expect("the line is open");
    b[0]
}

/// Bids for the line: ENQ, and the listener's EOT.
async fn bid(stream: &mut TcpStream) {
    stream.write_all(&[ENQ]).await.unwrap();
    assert_eq!(read_byte(stream).await, EOT, "EOT answers our ENQ");
}

/// Plays the misbehaving peer against the SECS-I listener and checks what it receives.
async fn misbehave_on_the_line(stream: &mut TcpStream, fault: LineFault) {
    match fault {
        LineFault::Garbage => stream.write_all(b"noise\r\n").await.unwrap(),
        LineFault::BadLength => {
            bid(stream).await;
            stream.write_all(&[255, 1, 2, 3]).await.unwrap();
            assert_eq!(read_byte(stream).await, NAK, "NAK once the line is quiet");
        }
        LineFault::Stalled => {
            bid(stream).await;
            let (_, bytes) = host_block(0);
            stream.write_all(&bytes[..6]).await.unwrap();
            assert_eq!(read_byte(stream).await, NAK, "NAK after T1");
        }
        LineFault::Silent => {
            bid(stream).await;
            assert_eq!(read_byte(stream).await, NAK, "NAK after T2");
        }
        LineFault::Reset => {}
        LineFault::BadChecksum => {
            bid(stream).await;
            let (_, mut bytes) = host_block(0);
            let last = bytes.len() - 1;
            bytes[last] = bytes[last].wrapping_add(1);
            stream.write_all(&bytes).await.unwrap();
            assert_eq!(read_byte(stream).await, NAK, "NAK once the line is quiet");
        }
        LineFault::WrongDevice => {
            bid(stream).await;
            let (block, bytes) = host_block(5);
            stream.write_all(&bytes).await.unwrap();
            assert_eq!(read_byte(stream).await, ACK, "a good block is acknowledged");
            // The equipment then bids to send S9F1 naming the message.
            assert_eq!(read_byte(stream).await, ENQ, "the listener bids for S9F1");
            stream.write_all(&[EOT]).await.unwrap();
            let length = read_byte(stream).await;
            let mut rest = vec![0u8; usize::from(length) + 2];
            tokio::time::timeout(WAIT, stream.read_exact(&mut rest))
                .await
                .unwrap()
                .unwrap();
            let mut frame = vec![length];
            frame.extend_from_slice(&rest);
            let s9 = Block::decode(&frame).expect("a valid block");
            stream.write_all(&[ACK]).await.unwrap();
            assert_eq!(
                (s9.header.stream, s9.header.function, s9.header.r_bit),
                (9, 1, true)
            );
            let mut mhead = vec![0x21, 0x0A];
            mhead.extend_from_slice(&block.header.encode());
            assert_eq!(s9.data, mhead, "S9F1's MHEAD is the message's header");
        }
    }
}

/// The SECS-I listener: the equipment end of SECS-I over TCP, answering what it is sent.
async fn secs1_listener(fault: LineFault) {
    let logs = Logs::capture();
    let name = format!("secs1-{fault:?}");
    let mut protocol = secsgate::secs1::protocol::Config::equipment(0);
    (protocol.t1, protocol.t2) = fault.timers();
    let mut settings = secs1::Settings::new(Line::TcpListen("127.0.0.1:0".into()), protocol);
    settings.name = name.clone();
    let Endpoint {
        link,
        mut incoming,
        local_addr,
    } = secs1::start(settings).await.unwrap();
    let replier = link.clone();
    tokio::spawn(async move {
        while let Some(received) = incoming.recv().await {
            if let Received::Message(m) = received
                && m.w_bit
            {
                let _ = replier.reply(&m, Some(Item::L(vec![]))).await;
            }
        }
    });
    let addr = local_addr.unwrap().to_string();

    let mut stream = TcpStream::connect(&addr).await.unwrap();
    misbehave_on_the_line(&mut stream, fault).await;
    if fault == LineFault::Reset {
        bid(&mut stream).await;
        reset(stream);
    } else {
        logs.wait_for(&[&name, fault.needle()], WAIT).await;
        drop(stream);
    }
    logs.wait_for(&[&name, "SECS-I line closed"], WAIT).await;

    // A fresh host opens the line and is answered.
    let mut host = secs1::Settings::new(
        Line::TcpConnect(addr.clone()),
        secsgate::secs1::protocol::Config::host(0),
    );
    host.name = "good-host".into();
    let host = secs1::start(host).await.unwrap();
    host.link.wait_selected(WAIT).await.expect("the line opens");
    let reply = host
        .link
        .request(Message::new(sf(1, 1), true, None))
        .await
        .expect("S1F1 answered");
    assert_eq!(reply.stream_function(), sf(1, 2));
    host.link.shutdown().await;

    let naming = logs.lines_with(&[&name, fault.needle()]);
    assert_eq!(naming.len(), 1, "one line names {fault:?}: {naming:#?}");
    assert_eq!(
        warnings(&logs, &name),
        naming,
        "no other warning for {fault:?}"
    );
    link.shutdown().await;
}

matrix! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    secs1_listener(LineFault):
    secs1_garbage_instead_of_enq: Garbage,
    secs1_length_byte_out_of_range: BadLength,
    secs1_block_cut_off_t1: Stalled,
    secs1_silent_after_eot_t2: Silent,
    secs1_reset: Reset,
    secs1_bad_checksum: BadChecksum,
    secs1_wrong_device_id_s9f1: WrongDevice,
}
