//! The gateway's GEM host over a real HSMS connection on 127.0.0.1, against an equipment the
//! test plays by hand: S1F13 refused, the retry after the retry delay (T5 clamped to 1 s),
//! the equipment's own S1F13, the default replies, and a lost link. The connection's status
//! is derived from the link state and the GEM state at every step.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use secsgate::config::Project;
use secsgate::gateway::{Connection, Gateway, Status};
use secsgate::gem::CommunicationState;
use secsgate::hsms::driver::{self, Endpoint, Mode, Settings};
use secsgate::link::{Incoming, Link, LinkState, Received};
use secsgate::secs2::{Message, sml};

const WAIT: Duration = Duration::from_secs(10);

fn msg(text: &str) -> Message {
    sml::parse_message(text).unwrap()
}

/// A project with one equipment connection to `port` (T5 0.2 s: a retry delay of 1 s).
fn project(port: u16) -> PathBuf {
    project_with(port, "host", "")
}

fn project_with(port: u16, name: &str, extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("secsgate-gw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("handlers")).unwrap();
    std::fs::write(
        dir.join("project.toml"),
        format!(
            "[gateway]\nstartup_wait = 1\n\n[[equipment]]\nname = \"Tool1\"\nport = {port}\ntimers = {{ t3 = 5, t5 = 0.2 }}\n{extra}\n"
        ),
    )
    .unwrap();
    dir
}

/// The next primary from the gateway.
async fn next(incoming: &mut Incoming) -> Message {
    match tokio::time::timeout(WAIT, incoming.recv()).await {
        Ok(Some(Received::Message(m))) => m,
        other => panic!("expected a message from the gateway, got {other:?}"),
    }
}

async fn wait_status(conn: &Connection, want: Status) {
    let mut watch = conn.watch_status();
    tokio::time::timeout(WAIT, watch.wait_for(|s| *s == want))
        .await
        .unwrap_or_else(|_| panic!("status {want} not reached; it is {}", conn.status()))
        .unwrap();
}

/// Sends a primary to the gateway and returns its reply, as SML.
async fn ask(link: &Link, text: &str) -> String {
    tokio::time::timeout(WAIT, link.request(msg(text)))
        .await
        .expect("reply in time")
        .expect("reply")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gem_host_establishes_communication_and_follows_the_link() {
    let mut settings = Settings::new(Mode::Passive("127.0.0.1:0".into()));
    settings.protocol.t3 = Duration::from_secs(5);
    let Endpoint {
        link,
        mut incoming,
        local_addr,
    } = driver::start(settings).await.unwrap();
    let dir = project(local_addr.unwrap().port());
    let project = Project::load(&dir).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = Gateway::start(&project, false).await;
    let conn = gateway.connection("Tool1").unwrap();

    // Selected: the host's S1F13 <L[0]>. Refused with COMMACK 1: WAIT DELAY.
    let first = next(&mut incoming).await;
    let refused_at = Instant::now();
    assert_eq!(first.to_string(), "S1F13 W <L [0]> .");
    link.reply(&first, Some(sml::parse_item("<L [2] <B 1> <L>>").unwrap()))
        .await
        .unwrap();
    wait_status(&conn, Status::Selected).await;
    assert_eq!(conn.link_state(), Some(LinkState::Selected));

    // The next S1F13 after the retry delay: T5 (0.2 s) clamped to 1 s.
    let second = next(&mut incoming).await;
    assert_eq!(second.to_string(), "S1F13 W <L [0]> .");
    let waited = refused_at.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}"
    );
    assert_eq!(conn.communication_state(), CommunicationState::WaitCra);

    // Left unanswered: the equipment's own S1F13 makes the host COMMUNICATING.
    assert_eq!(
        ask(&link, r#"S1F13 W <L [2] <A "EQ"> <A "1.0">> ."#).await,
        "S1F14 <L [2] <B 0x00> <L [0]>> ."
    );
    wait_status(&conn, Status::Communicating).await;
    assert_eq!(
        conn.communication_state(),
        CommunicationState::Communicating
    );
    // The late refusal of the host's S1F13 changes nothing.
    link.reply(&second, Some(sml::parse_item("<L [2] <B 1> <L>>").unwrap()))
        .await
        .unwrap();

    // The host's default replies.
    assert_eq!(ask(&link, "S1F1 W .").await, "S1F2 <L [0]> .");
    assert_eq!(
        ask(&link, "S6F11 W <L [3] <U4 1> <U4 2> <L>> .").await,
        "S6F12 <B 0x00> ."
    );
    assert_eq!(
        ask(&link, "S5F1 W <L [3] <B 0x84> <U4 7> <A \"hot\">> .").await,
        "S5F2 <B 0x00> ."
    );
    let time = ask(&link, "S2F17 W .").await;
    assert!(
        time.starts_with("S2F18 <A \"20") && time.len() == "S2F18 <A \"2026120308000000\"> .".len(),
        "{time}"
    );
    // Not in the standard SDL: S9F3 (unknown stream) names it; the request ends at once.
    match link.request(msg("S64F1 W .")).await {
        Err(secsgate::link::LinkError::StreamNine { function: 3, .. }) => {}
        other => panic!("expected S9F3, got {other:?}"),
    }
    match link.request(msg("S1F99 W .")).await {
        Err(secsgate::link::LinkError::StreamNine { function: 5, .. }) => {}
        other => panic!("expected S9F5, got {other:?}"),
    }
    assert_eq!(conn.status(), Status::Communicating);

    // The equipment goes away: the link state and the GEM state change together, so the
    // status never reads "Communicating" while the link is down.
    link.shutdown().await;
    wait_status(&conn, Status::NotConnected).await;
    assert_eq!(conn.link_state(), Some(LinkState::Disconnected));
    assert_eq!(conn.communication_state(), CommunicationState::WaitCra);

    gateway.shutdown().await;
    assert_eq!(conn.status(), Status::Disabled);
    assert_eq!(conn.link_state(), None);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A message for another device ID gets S9F1 from the gateway and reaches nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_device_id_gets_s9f1() {
    let mut settings = Settings::new(Mode::Passive("127.0.0.1:0".into()));
    settings.protocol.t3 = Duration::from_secs(5);
    let Endpoint {
        link,
        mut incoming,
        local_addr,
    } = driver::start(settings).await.unwrap();
    // The gateway expects device 5; this equipment sends as device 0.
    let dir = project_with(local_addr.unwrap().port(), "device", "device_id = 5");
    let project = Project::load(&dir).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = Gateway::start(&project, false).await;
    let s1f13 = next(&mut incoming).await;
    assert_eq!(s1f13.device_id, 5);
    match link.request(msg("S1F1 W .")).await {
        Err(secsgate::link::LinkError::StreamNine {
            function: 1,
            message,
            ..
        }) => {
            assert_eq!(message.device_id, 5, "the gateway answers as itself");
        }
        other => panic!("expected S9F1, got {other:?}"),
    }
    let conn = gateway.connection("Tool1").unwrap();
    assert_ne!(
        conn.status(),
        Status::Communicating,
        "the GEM host ignored it"
    );
    gateway.shutdown().await;
}

/// Connects to the gateway's passive port, selects, and reads up to its S1F13.
async fn select_and_take_s1f13(addr: &str) -> (tokio::net::TcpStream, u32) {
    use secsgate::hsms::frame::{self, Header, SType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    frame::encode_control(&Header::control(SType::SelectReq, 1), &mut out);
    stream.write_all(&out).await.unwrap();
    let read = async {
        loop {
            let mut length = [0u8; 4];
            stream.read_exact(&mut length).await.unwrap();
            let mut rest = vec![0u8; u32::from_be_bytes(length) as usize];
            stream.read_exact(&mut rest).await.unwrap();
            let header = Header::from_bytes(rest[..10].try_into().unwrap());
            if header.stype == SType::SelectRsp {
                assert_eq!(header.byte3, 0, "selected");
            }
            if header.stype == SType::Data && (header.stream(), header.function()) == (1, 13) {
                return header.system_bytes;
            }
        }
    };
    let sb = tokio::time::timeout(WAIT, read)
        .await
        .expect("the gateway asks for communication (S1F13) on every new connection");
    (stream, sb)
}

/// Answers the gateway's S1F13 with COMMACK 0 and then resets the connection at once.
async fn answer_and_reset(mut stream: tokio::net::TcpStream, sb: u32) {
    use tokio::io::AsyncWriteExt;
    let s1f14 = Message {
        system_bytes: sb,
        ..msg("S1F14 <L [2] <B 0> <L>>")
    };
    let mut out = Vec::new();
    secsgate::hsms::frame::encode_message(&s1f14, &mut out).unwrap();
    stream.write_all(&out).await.unwrap();
    let std = stream.into_std().unwrap();
    socket2_reset(std);
}

/// Closes a socket with a TCP reset (SO_LINGER 0).
fn socket2_reset(stream: std::net::TcpStream) {
    use std::os::fd::AsRawFd;
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

/// The equipment answers the gateway's S1F13 (COMMACK 0) and resets the connection at once,
/// then comes back at once, 30 times: every new connection gets the gateway's S1F13 (the
/// GEM host saw each session end, even one that ended before it looked), and after the last
/// reset the status is "Not Connected", never "Communicating" while the link is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1f14_then_a_reset_leaves_the_status_not_connected() {
    // Port 0: the system picks the passive port; the running connection says which.
    let dir = project_with(0, "reset", "mode = \"passive\"");
    let project = Project::load(&dir).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = Gateway::start(&project, false).await;
    let conn = gateway.connection("Tool1").unwrap();
    let addr = conn.local_addr().expect("listening").to_string();
    for _ in 0..30 {
        let (stream, sb) = select_and_take_s1f13(&addr).await;
        answer_and_reset(stream, sb).await;
    }
    wait_status(&conn, Status::NotConnected).await;
    assert_eq!(conn.link_state(), Some(LinkState::Disconnected));
    // Once more, staying: communicating, then the reset is seen.
    let (stream, sb) = select_and_take_s1f13(&addr).await;
    {
        use tokio::io::AsyncWriteExt;
        let s1f14 = Message {
            system_bytes: sb,
            ..msg("S1F14 <L [2] <B 0> <L>>")
        };
        let mut out = Vec::new();
        secsgate::hsms::frame::encode_message(&s1f14, &mut out).unwrap();
        let mut stream = stream;
        stream.write_all(&out).await.unwrap();
        wait_status(&conn, Status::Communicating).await;
        socket2_reset(stream.into_std().unwrap());
    }
    wait_status(&conn, Status::NotConnected).await;
    assert_ne!(conn.status(), Status::Communicating);
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
