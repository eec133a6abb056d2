//! HSMS over real sockets on 127.0.0.1 with ephemeral ports: two secsgate endpoints under
//! load, and misbehaving raw peers (closing mid-frame, garbage, oversized lengths, silence,
//! restarts).

use std::time::{Duration, Instant};

use secsgate::hsms::driver::{self, Endpoint, Mode, Settings};
use secsgate::hsms::frame::{self, Header, SType};
use secsgate::link::{Link, LinkError, LinkState, Received};
use secsgate::secs2::{Item, Message, StreamFunction};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn fast(mode: Mode) -> Settings {
    let mut s = Settings::new(mode);
    s.protocol.t3 = Duration::from_secs(5);
    s.protocol.t5 = Duration::from_millis(100);
    s.protocol.t6 = Duration::from_secs(2);
    s.protocol.t7 = Duration::from_secs(2);
    s.protocol.t8 = Duration::from_secs(2);
    s.protocol.linktest = None;
    s.reconnect_max = Duration::from_millis(400);
    s
}

fn msg(sf: &str, w: bool, body: Option<Item>) -> Message {
    Message::new(sf.parse::<StreamFunction>().unwrap(), w, body)
}

/// A passive endpoint that echoes every W-bit primary's body in its reply. Stop it with
/// `link.shutdown()`.
async fn echo_server(settings: Settings) -> (Link, String) {
    let Endpoint {
        link,
        mut incoming,
        local_addr,
    } = driver::start(settings).await.unwrap();
    let replier = link.clone();
    tokio::spawn(async move {
        while let Some(received) = incoming.recv().await {
            if let Received::Message(m) = received
                && m.w_bit
            {
                let _ = replier.reply(&m, m.body.clone()).await;
            }
        }
    });
    (link, local_addr.unwrap().to_string())
}

async fn selected(link: &Link) {
    link.wait_selected(Duration::from_secs(5))
        .await
        .expect("selected within 5 s");
}

async fn wait_state(link: &Link, want: LinkState, within: Duration) {
    let mut watch = link.watch_state();
    tokio::time::timeout(within, watch.wait_for(|s| *s == want))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "state {want:?} not reached within {within:?}; is {:?}",
                link.state()
            )
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_with_64_in_flight() {
    let (_server, addr) = echo_server(fast(Mode::Passive("127.0.0.1:0".into()))).await;
    let client = driver::start(fast(Mode::Active(addr))).await.unwrap();
    selected(&client.link).await;
    let mut tasks = Vec::new();
    for worker in 0..64u32 {
        let link = client.link.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            let mut n = worker;
            while n < 10_000 {
                let body = Item::L(vec![
                    Item::U4(vec![n]),
                    Item::A(format!("msg {n}").into_bytes()),
                ]);
                let reply = link
                    .request(msg("S2F25", true, Some(body.clone())))
                    .await
                    .unwrap();
                assert_eq!((reply.stream, reply.function), (2, 26));
                assert_eq!(reply.body, Some(body));
                done += 1;
                n += 64;
            }
            done
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 10_000);
    assert_eq!(client.link.state(), LinkState::Selected);
}

#[tokio::test]
async fn sending_when_not_selected_fails_at_once() {
    // Nothing listens on this port: the link stays disconnected.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let client = driver::start(fast(Mode::Active(addr.clone())))
        .await
        .unwrap();
    let started = Instant::now();
    let err = client
        .link
        .request(msg("S1F1", true, None))
        .await
        .unwrap_err();
    assert_eq!(err, LinkError::NotReady(LinkState::Disconnected));
    assert!(started.elapsed() < Duration::from_millis(500));
    // The failed connection attempt is recorded as the link's problem.
    let mut problems = client.link.watch_problem();
    tokio::time::timeout(Duration::from_secs(5), problems.wait_for(Option::is_some))
        .await
        .expect("a connection attempt failed")
        .unwrap();
    let problem = client.link.last_problem().unwrap();
    assert!(problem.contains(&addr), "{problem}");
}

/// SEMI's own T3 (45 s) on real sockets, in simulated time: the driver takes its clock from
/// tokio, so the runtime's paused clock jumps to the deadline once nothing else can happen.
#[tokio::test(start_paused = true)]
async fn t3_timeout_names_the_message_and_keeps_the_connection() {
    let settings = Settings::new(Mode::Passive("127.0.0.1:0".into()));
    // This server never replies.
    let server = driver::start(settings.clone()).await.unwrap();
    let client_settings = Settings::new(Mode::Active(server.local_addr.unwrap().to_string()));
    let client = driver::start(client_settings).await.unwrap();
    selected(&client.link).await;
    let wall = std::time::Instant::now();
    let started = tokio::time::Instant::now();
    let err = client
        .link
        .request(msg("S1F3", true, Some(Item::L(vec![]))))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        LinkError::Timeout {
            stream_function, ..
        } => assert_eq!(stream_function.to_string(), "S1F3"),
        other => panic!("expected a T3 timeout, got {other}"),
    }
    assert!(
        err.to_string()
            .contains("no reply to S1F3 (system bytes 0x"),
        "{err}"
    );
    assert!(
        elapsed >= Duration::from_secs(45) && elapsed < Duration::from_secs(46),
        "{elapsed:?}"
    );
    assert!(
        wall.elapsed() < Duration::from_secs(5),
        "{:?}",
        wall.elapsed()
    );
    // The linktests of the two ends (every 60 s) went on meanwhile and keep going.
    client.link.linktest().await.unwrap();
    assert_eq!(client.link.state(), LinkState::Selected);
    drop(server);
}

/// A raw TCP peer: accepts one connection and answers the Select.req by hand.
async fn raw_selected_peer() -> (String, tokio::task::JoinHandle<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let header = read_frame(&mut stream).await.0;
        assert_eq!(header.stype, SType::SelectReq);
        let mut out = Vec::new();
        frame::encode_control(
            &Header::control(SType::SelectRsp, header.system_bytes),
            &mut out,
        );
        stream.write_all(&out).await.unwrap();
        stream
    });
    (addr, handle)
}

async fn read_frame(stream: &mut TcpStream) -> (Header, Vec<u8>) {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.unwrap();
    let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut rest).await.unwrap();
    let header = Header::from_bytes(rest[..10].try_into().unwrap());
    (header, rest[10..].to_vec())
}

/// Sends a request to a raw peer, lets the peer misbehave, and checks the request fails and the
/// link reports exactly one loss.
async fn misbehave(bytes: Vec<u8>, close_after: bool) -> LinkError {
    let (addr, peer) = raw_selected_peer().await;
    let mut settings = fast(Mode::Active(addr));
    settings.protocol.max_message_size = 1024 * 1024;
    settings.reconnect_max = Duration::from_secs(30);
    settings.protocol.t5 = Duration::from_secs(30); // no reconnect during the test
    let client = driver::start(settings).await.unwrap();
    selected(&client.link).await;
    let mut watch = client.link.watch_state();
    watch.borrow_and_update();
    let pending = client
        .link
        .send_request(msg("S1F1", true, None))
        .await
        .unwrap();
    let mut stream = peer.await.unwrap();
    let (header, _) = read_frame(&mut stream).await;
    assert_eq!((header.stream(), header.function()), (1, 1));
    stream.write_all(&bytes).await.unwrap();
    if close_after {
        drop(stream);
    } else {
        // Keep the socket open: the client must close it by itself.
        tokio::spawn(async move {
            let mut sink = [0u8; 64];
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
    let err = tokio::time::timeout(Duration::from_secs(3), pending.wait())
        .await
        .expect("the request ends when the connection is lost")
        .unwrap_err();
    wait_state(
        &client.link,
        LinkState::Disconnected,
        Duration::from_secs(3),
    )
    .await;
    // One loss is one state change: nothing flaps afterwards. The driver records why the
    // connection closed once the session is over (and T5 keeps it from reconnecting here).
    let mut problems = client.link.watch_problem();
    let closed = |p: &Option<String>| p.as_deref().is_some_and(|p| p.contains("closed"));
    tokio::time::timeout(Duration::from_secs(5), problems.wait_for(closed))
        .await
        .expect("the session is over")
        .unwrap();
    let mut changes = 0;
    while watch.has_changed().unwrap_or(false) {
        watch.borrow_and_update();
        changes += 1;
    }
    assert!(changes <= 1, "{changes} state changes after one loss");
    assert_eq!(client.link.state(), LinkState::Disconnected);
    err
}

#[tokio::test]
async fn peer_closing_mid_frame_is_a_connection_loss() {
    // Half of an S1F2 reply frame, then close.
    let err = misbehave(vec![0, 0, 0, 20, 0, 0, 1, 2, 0], true).await;
    assert!(matches!(err, LinkError::ConnectionLost { .. }), "{err}");
}

#[tokio::test]
async fn garbage_closes_the_connection() {
    // A length field under the header size is not HSMS.
    let err = misbehave(b"\x00\x00\x00\x02GARBAGE".to_vec(), false).await;
    assert!(matches!(err, LinkError::ConnectionLost { .. }), "{err}");
}

#[tokio::test]
async fn oversized_length_is_refused_without_reading_it() {
    let err = misbehave(vec![0xFF, 0xFF, 0xFF, 0xF0], false).await;
    assert!(matches!(err, LinkError::ConnectionLost { .. }), "{err}");
}

#[tokio::test]
async fn silent_peer_is_detected_by_linktest() {
    let (addr, peer) = raw_selected_peer().await;
    let mut settings = fast(Mode::Active(addr));
    settings.protocol.linktest = Some(Duration::from_millis(200));
    settings.protocol.t6 = Duration::from_millis(300);
    settings.protocol.t5 = Duration::from_secs(30);
    let client = driver::start(settings).await.unwrap();
    selected(&client.link).await;
    let stream = peer.await.unwrap(); // kept open, never answers: a half-open peer
    let started = Instant::now();
    wait_state(
        &client.link,
        LinkState::Disconnected,
        Duration::from_secs(3),
    )
    .await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    let problem = client.link.last_problem().unwrap();
    assert!(problem.contains("T6"), "{problem}");
    drop(stream);
}

#[tokio::test]
async fn reconnects_after_the_peer_restarts() {
    let (server, addr) = echo_server(fast(Mode::Passive("127.0.0.1:0".into()))).await;
    let client = driver::start(fast(Mode::Active(addr.clone())))
        .await
        .unwrap();
    selected(&client.link).await;
    client.link.request(msg("S1F1", true, None)).await.unwrap();

    server.shutdown().await; // separates and stops listening
    assert!(matches!(
        server.send(msg("S1F1", false, None)).await,
        Err(LinkError::Shutdown)
    ));
    wait_state(
        &client.link,
        LinkState::Disconnected,
        Duration::from_secs(3),
    )
    .await;
    assert!(matches!(
        client.link.request(msg("S1F1", true, None)).await,
        Err(LinkError::NotReady(_))
    ));
    // A few failed attempts meanwhile.
    let mut problems = client.link.watch_problem();
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), problems.changed())
            .await
            .expect("another connection attempt")
            .unwrap();
    }

    let (restarted, _) = echo_server(fast(Mode::Passive(addr))).await;
    selected(&client.link).await;
    let reply = client.link.request(msg("S1F1", true, None)).await.unwrap();
    assert_eq!(reply.function, 2);
    restarted.shutdown().await;
}

#[tokio::test]
async fn stream_nine_answer_fails_the_request_at_once() {
    let server = driver::start(fast(Mode::Passive("127.0.0.1:0".into())))
        .await
        .unwrap();
    let Endpoint {
        link: server_link,
        mut incoming,
        local_addr,
    } = server;
    tokio::spawn(async move {
        while let Some(Received::Message(m)) = incoming.recv().await {
            // Answer like equipment that does not know the function: S9F5 with MHEAD.
            let mhead = Header::data(&m).to_bytes().to_vec();
            let _ = server_link
                .send(msg("S9F5", false, Some(Item::B(mhead))))
                .await;
        }
    });
    let client = driver::start(fast(Mode::Active(local_addr.unwrap().to_string())))
        .await
        .unwrap();
    selected(&client.link).await;
    let started = Instant::now();
    let err = client
        .link
        .request(msg("S1F99", true, None))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(err, LinkError::StreamNine { function: 5, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("unrecognized function"), "{err}");
}

#[tokio::test]
async fn second_connection_gets_select_status_3() {
    let (_server, addr) = echo_server(fast(Mode::Passive("127.0.0.1:0".into()))).await;
    let client = driver::start(fast(Mode::Active(addr.clone())))
        .await
        .unwrap();
    selected(&client.link).await;

    let mut second = TcpStream::connect(&addr).await.unwrap();
    let mut out = Vec::new();
    frame::encode_control(&Header::control(SType::SelectReq, 77), &mut out);
    second.write_all(&out).await.unwrap();
    let (header, _) = tokio::time::timeout(Duration::from_secs(3), read_frame(&mut second))
        .await
        .unwrap();
    assert_eq!(header.stype, SType::SelectRsp);
    assert_eq!(header.byte3, 3);
    assert_eq!(header.system_bytes, 77);
    // The first session is untouched.
    client.link.request(msg("S1F1", true, None)).await.unwrap();
}

#[tokio::test]
async fn separate_ends_the_session_and_the_active_side_reconnects() {
    let (_server, addr) = echo_server(fast(Mode::Passive("127.0.0.1:0".into()))).await;
    let client = driver::start(fast(Mode::Active(addr))).await.unwrap();
    selected(&client.link).await;
    client.link.separate().await;
    assert_ne!(client.link.state(), LinkState::Selected);
    // After T5 the active side connects and selects again.
    selected(&client.link).await;
    client.link.linktest().await.unwrap();
}

/// A host that separates (or resets) and reconnects at once is selected every time: the new
/// connection may arrive while the old session is still ending, and must not get status 3
/// for a session that is already over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_right_after_separate_or_reset_is_accepted() {
    let (_server, addr) = echo_server(fast(Mode::Passive("127.0.0.1:0".into()))).await;
    let mut refused = 0;
    for round in 0..100u32 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let mut out = Vec::new();
        frame::encode_control(&Header::control(SType::SelectReq, round), &mut out);
        stream.write_all(&out).await.unwrap();
        let (header, _) = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut stream))
            .await
            .expect("Select.rsp");
        assert_eq!(header.stype, SType::SelectRsp);
        if header.byte3 != 0 {
            refused += 1;
            continue;
        }
        if round % 2 == 0 {
            // Separate.req, then close and reconnect at once.
            out.clear();
            frame::encode_control(&Header::control(SType::SeparateReq, round), &mut out);
            stream.write_all(&out).await.unwrap();
            drop(stream);
        } else {
            // A reset: close with RST (linger 0).
            let std = stream.into_std().unwrap();
            socket_reset(std);
        }
    }
    assert_eq!(refused, 0, "{refused} of 100 reconnections were refused");
}

/// Closes a socket with a TCP reset (SO_LINGER 0).
fn socket_reset(stream: std::net::TcpStream) {
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

/// Connects to `addr`, sends a Select.req and reads until the endpoint closes the socket;
/// returns every byte it sent back (none, for a refused peer).
async fn select_until_closed(addr: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    frame::encode_control(&Header::control(SType::SelectReq, 5), &mut out);
    // The endpoint may already have closed the socket: a failed write is part of the refusal.
    let _ = stream.write_all(&out).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the refused connection is closed within 5 s")
        {
            Ok(0) | Err(_) => return got, // closed (a reset, if our Select.req was unread)
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_peer_outside_the_allow_list_is_closed_before_select() {
    let mut settings = fast(Mode::Passive("127.0.0.1:0".into()));
    settings.allow = secsgate::peers::Allowlist::parse(&["10.1.2.3"]).unwrap();
    let (server, addr) = echo_server(settings).await;
    for _ in 0..3 {
        assert_eq!(select_until_closed(&addr).await, Vec::<u8>::new());
    }
    assert_eq!(server.state(), LinkState::Disconnected);
}

#[tokio::test]
async fn a_peer_inside_the_allow_list_is_selected() {
    let mut settings = fast(Mode::Passive("127.0.0.1:0".into()));
    settings.allow = secsgate::peers::Allowlist::parse(&["10.1.2.3", "127.0.0.1/8"]).unwrap();
    let (_server, addr) = echo_server(settings).await;
    let client = driver::start(fast(Mode::Active(addr))).await.unwrap();
    selected(&client.link).await;
    client.link.request(msg("S1F1", true, None)).await.unwrap();
}

#[tokio::test]
async fn an_active_end_closes_a_connection_to_a_peer_outside_its_allow_list() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut settings = fast(Mode::Active(addr));
    settings.allow = secsgate::peers::Allowlist::parse(&["::1"]).unwrap();
    let client = driver::start(settings).await.unwrap();
    let (mut stream, _) = listener.accept().await.unwrap();
    // No Select.req: the connection is closed at once.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    let mut problem = client.link.watch_problem();
    let problem = tokio::time::timeout(
        Duration::from_secs(5),
        problem.wait_for(|p| p.as_deref().is_some_and(|p| p.contains("allow list"))),
    )
    .await
    .unwrap()
    .unwrap()
    .clone()
    .unwrap();
    assert!(
        problem.contains("127.0.0.1 is not in the allow list [::1]"),
        "{problem}"
    );
    assert_ne!(client.link.state(), LinkState::Selected);
}

/// Connects a raw peer to `addr` and selects.
async fn raw_select(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = Vec::new();
    frame::encode_control(&Header::control(SType::SelectReq, 1), &mut out);
    stream.write_all(&out).await.unwrap();
    let (header, _) = read_frame(&mut stream).await;
    assert_eq!((header.stype, header.byte3), (SType::SelectRsp, 0));
    stream
}

/// A reply the engine makes after the connection that brought its primary was lost is not
/// sent on the next connection (whose peer never sent that primary, though it may use the
/// same system bytes): the send fails, and the next peer gets only the replies to its own.
#[tokio::test]
async fn a_reply_to_a_primary_of_a_lost_connection_is_not_sent_on_the_next() {
    let Endpoint {
        link,
        mut incoming,
        local_addr,
    } = driver::start(fast(Mode::Passive("127.0.0.1:0".into())))
        .await
        .unwrap();
    let addr = local_addr.unwrap().to_string();
    let mut s1f1 = msg("S1F1", true, None);
    s1f1.system_bytes = 7;
    let mut frame_out = Vec::new();
    frame::encode_message(&s1f1, &mut frame_out).unwrap();

    // The first peer asks, and goes before the answer.
    let mut first = raw_select(&addr).await;
    first.write_all(&frame_out).await.unwrap();
    let Some(Received::Message(old)) = incoming.recv().await else {
        panic!("the first S1F1")
    };
    drop(first);
    wait_state(&link, LinkState::Disconnected, Duration::from_secs(5)).await;

    // The next peer selects; the answer to the first one's S1F1 comes only now.
    let mut second = raw_select(&addr).await;
    wait_state(&link, LinkState::Selected, Duration::from_secs(5)).await;
    let err = link.send(old.reply_with(None)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("answers a primary of a connection since lost"),
        "{err}"
    );
    // Its own S1F1, with the same system bytes, is answered: that is the first data message
    // it gets.
    second.write_all(&frame_out).await.unwrap();
    let Some(Received::Message(new)) = incoming.recv().await else {
        panic!("the second S1F1")
    };
    link.reply(&new, Some(Item::L(vec![]))).await.unwrap();
    let (header, body) = read_frame(&mut second).await;
    assert_eq!(
        (header.stream(), header.function(), header.system_bytes),
        (1, 2, 7)
    );
    assert_eq!(body, [0x01, 0x00], "the answer to its own S1F1");
    link.shutdown().await;
}

/// Replies queued faster than a peer reads them wait in the link's command queue: the
/// session takes no more once `MAX_QUEUED_WRITE` bytes wait to be written (one message may
/// pass it), however many are queued at once.
#[tokio::test]
async fn replies_past_the_write_cap_wait_in_the_queue() {
    let Endpoint {
        link,
        mut incoming,
        local_addr,
    } = driver::start(Settings {
        write_timeout: Duration::from_millis(100),
        ..fast(Mode::Passive("127.0.0.1:0".into()))
    })
    .await
    .unwrap();
    let mut peer = raw_select(&local_addr.unwrap().to_string()).await;
    // 16 primaries; the peer then reads nothing.
    let mut out = Vec::new();
    for sb in 1..=16 {
        let mut m = msg("S2F25", true, Some(Item::B(vec![1])));
        m.system_bytes = sb;
        frame::encode_message(&m, &mut out).unwrap();
    }
    peer.write_all(&out).await.unwrap();
    let mut primaries = Vec::new();
    while primaries.len() < 16 {
        match incoming.recv().await {
            Some(Received::Message(m)) => primaries.push(m),
            other => panic!("{other:?}"),
        }
    }
    // 16 MiB of answers, queued at once.
    let body = Item::B(vec![0x5A; 1024 * 1024]);
    for m in &primaries {
        link.reply(m, Some(body.clone())).await.unwrap();
    }
    // The peer's socket fills up; the write timeout then drops it.
    let mut problem = link.watch_problem();
    tokio::time::timeout(
        Duration::from_secs(10),
        problem.wait_for(|p| p.as_deref().is_some_and(|p| p.contains("write stalled"))),
    )
    .await
    .expect("the write timeout drops the peer")
    .unwrap();
    let stats = link.stats();
    let message = 4 + 10 + 4 + 1024 * 1024;
    assert!(
        stats.unwritten_peak <= driver::MAX_QUEUED_WRITE + message,
        "{} bytes waited to be written (cap {} and one message)",
        stats.unwritten_peak,
        driver::MAX_QUEUED_WRITE
    );
    link.shutdown().await;
    drop(peer);
}
