//! The web console's HTTP API against a running gateway (an equipment played by a secsgate
//! HSMS endpoint, and an in-process simulator), over plain HTTP/1.1 on 127.0.0.1: the
//! overview, sending from the console, the message log, tags, handlers, simulators, metrics,
//! credentials and the loopback Host rule, and a live stream whose reader never reads while
//! a burst goes through the connection (the burst is not slowed, and every message of the
//! stream is either shown or counted as skipped).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secsgate::config::{Project, WebSettings};
use secsgate::gateway::{Gateway, Status};
use secsgate::hsms::driver::{self, Endpoint, Mode, Settings};
use secsgate::link::{Incoming, Link, Received};
use secsgate::secs2::{Message, sml};
use secsgate::web::{self, Source, Web};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn project(name: &str, toml: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("secsgate-web-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("handlers")).unwrap();
    std::fs::write(dir.join("project.toml"), toml).unwrap();
    for (path, text) in files {
        std::fs::write(dir.join(path), text).unwrap();
    }
    dir
}

/// A free TCP port on 127.0.0.1 (bound, then released for the simulator to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The equipment: a passive endpoint answering S1F13 and S1F3.
async fn equipment() -> (Link, u16) {
    let mut settings = Settings::new(Mode::Passive("127.0.0.1:0".into()));
    settings.protocol.t3 = Duration::from_secs(5);
    let Endpoint {
        link,
        incoming,
        local_addr,
    } = driver::start(settings).await.unwrap();
    tokio::spawn(serve(link.clone(), incoming));
    (link, local_addr.unwrap().port())
}

async fn serve(link: Link, mut incoming: Incoming) {
    while let Some(Received::Message(m)) = incoming.recv().await {
        let body = match (m.stream, m.function) {
            (1, 13) => "<L [2] <B 0> <L [2] <A \"EQ\"> <A \"1.0\">>>",
            (1, 3) => "<L [2] <U4 23> <A \"LOT-1\">>",
            _ => continue,
        };
        let _ = link.reply(&m, Some(sml::parse_item(body).unwrap())).await;
    }
}

async fn start(dir: &Path, web_settings: WebSettings) -> (Gateway, Web) {
    let project = Project::load(dir).unwrap_or_else(|e| panic!("{e:?}"));
    let gateway = Gateway::start(&project, false).await;
    let conn = gateway.connection("Tool1").unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        conn.watch_status()
            .wait_for(|s| *s == Status::Communicating),
    )
    .await
    .expect("communicating")
    .unwrap();
    let web = web::start(&web_settings, Source::Gateway(gateway.clone()))
        .await
        .unwrap();
    (gateway, web)
}

fn loopback() -> WebSettings {
    WebSettings {
        address: "127.0.0.1:0".into(),
        ..WebSettings::default()
    }
}

/// One HTTP/1.1 exchange (`Connection: close`): status, body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        request.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    request.push_str("\r\n");
    if let Some(b) = body {
        request.push_str(b);
    }
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http(addr, "GET", path, &[], None).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

async fn post_json(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = http(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(body),
    )
    .await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_connections_sends_and_searches() {
    let (_eq, port) = equipment().await;
    let sim_port = free_port();
    let dir = project(
        "api",
        &format!(
            "[[equipment]]\nname = \"Tool1\"\nport = {port}\ntimers = {{ t3 = 5, t5 = 0.2 }}\n\n[[simulator]]\nname = \"Sim1\"\nport = {sim_port}\n"
        ),
        &[("handlers/onSecsGemRealtimeUpdate.py", "pass\n")],
    );
    let (gateway, web) = start(&dir, loopback()).await;
    let addr = web.local_addr();

    let overview = get_json(addr, "/api/overview").await;
    assert_eq!(overview["kind"], "gateway");
    let rows = overview["connections"].as_array().unwrap();
    let tool = rows.iter().find(|r| r["name"] == "Tool1").unwrap();
    assert_eq!(tool["status"], "Communicating");
    assert_eq!(tool["kind"], "equipment");
    assert_eq!(tool["protocol"], "HSMS");
    assert!(tool["received"].as_u64().unwrap() >= 1, "{tool}"); // the S1F14 at least
    let sim = rows.iter().find(|r| r["name"] == "Sim1").unwrap();
    assert_eq!(sim["kind"], "simulator");
    assert_eq!(sim["address"], format!("127.0.0.1:{sim_port}"));

    // Send from the console, in SML and in JSON; the reply comes back.
    let (status, sent) = post_json(
        addr,
        "/api/connections/Tool1/send",
        r#"{"text": "S1F3 W <L [1] <U4 1>>"}"#,
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["reply"]["sf"], "S1F4");
    assert_eq!(sent["reply"]["sml"], "S1F4 <L [2] <U4 23> <A \"LOT-1\">> .");
    let txid = sent["txid"].as_u64().unwrap();
    let (status, sent) = post_json(
        addr,
        "/api/connections/Tool1/send",
        r#"{"format": "json", "text": "{\"header\": {\"stream\": 1, \"function\": 3, \"reply\": true}, \"body\": []}"}"#,
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["reply"]["json"]["body"][1]["value"], "LOT-1");
    // Bad input is a clear error, and nothing is sent.
    let (status, e) = post_json(
        addr,
        "/api/connections/Tool1/send",
        r#"{"text": "S1F3 W <L"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(e["error"].as_str().unwrap().starts_with("SML"), "{e}");
    let (status, e) = post_json(
        addr,
        "/api/connections/Tool1/send",
        r#"{"text": "S1F3 W <A 'x'>"}"#,
    )
    .await;
    assert_eq!(status, 409);
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("does not match its SDL"),
        "{e}"
    );
    let (status, _) = post_json(addr, "/api/connections/Nope/send", r#"{"text": "S1F1 W"}"#).await;
    assert_eq!(status, 404);

    // The message log finds the S1F3 and its reply by CommonID (the TxID).
    gateway.store().unwrap().flush().await;
    let found = get_json(
        addr,
        &format!("/api/messages?equipment=Tool1&common_id={txid}"),
    )
    .await;
    let sfs: Vec<&str> = found["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["sf"].as_str().unwrap())
        .collect();
    assert_eq!(sfs, ["S1F4", "S1F3"], "{found}");
    let (status, _) = http(addr, "GET", "/api/messages?since=yesterday", &[], None).await;
    assert_eq!(status, 400);

    // The connection, its SDL, tags, handlers, simulators.
    let conn = get_json(addr, "/api/connections/Tool1").await;
    assert_eq!(conn["sdl"], "sdl/messages.sdl");
    let sdl = get_json(addr, "/api/connections/Tool1/sdl").await;
    assert!(
        sdl["text"]
            .as_str()
            .unwrap()
            .contains("secsgate standard SDL")
    );
    assert!(
        sdl["messages"].as_u64().unwrap() > 100,
        "{}",
        sdl["messages"]
    );
    let tags = get_json(addr, "/api/tags").await;
    assert!(
        tags["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["path"] == "[SECSGEM]Tool1/Status" && t["value"] == "Communicating"),
        "{tags}"
    );
    let handlers = get_json(addr, "/api/handlers").await;
    assert_eq!(handlers["handlers"][0]["name"], "onSecsGemRealtimeUpdate");
    assert_eq!(handlers["handlers"][0]["version"], 1);
    let sims = get_json(addr, "/api/simulators").await;
    let sim = &sims["simulators"][0];
    assert_eq!(sim["name"], "Sim1");
    assert!(sim["runs"].as_array().unwrap().iter().any(|r| r == "lot"));
    assert!(
        sim["variables"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "Clock"),
        "{sim}"
    );
    let (status, started) = post_json(addr, "/api/simulators/Sim1/runs/lot", "{}").await;
    assert_eq!((status, &started["started"]), (200, &Value::Bool(true)));
    let (status, e) = post_json(addr, "/api/simulators/Sim1/runs/nope", "{}").await;
    assert_eq!(status, 409);
    assert!(
        e["error"].as_str().unwrap().contains("no event run 'nope'"),
        "{e}"
    );

    // Metrics in the Prometheus text format.
    let (status, metrics) = http(addr, "GET", "/metrics", &[], None).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("# TYPE secsgate_messages_sent_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "secsgate_connection_state{kind=\"equipment\",name=\"Tool1\",state=\"Communicating\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("secsgate_handler_calls_total{handler=\"onSecsGemRealtimeUpdate\"}"),
        "{metrics}"
    );

    // Disable and enable from the console.
    let (status, _) = post_json(
        addr,
        "/api/connections/Tool1/enabled",
        r#"{"enabled": false}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        gateway.connection("Tool1").unwrap().status(),
        Status::Disabled
    );
    let (status, _) = post_json(
        addr,
        "/api/connections/Tool1/enabled",
        r#"{"enabled": true}"#,
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::timeout(
        Duration::from_secs(10),
        gateway
            .connection("Tool1")
            .unwrap()
            .watch_status()
            .wait_for(|s| *s == Status::Communicating),
    )
    .await
    .expect("communicating again")
    .unwrap();
    let overview = get_json(addr, "/api/overview").await;
    let tool = &overview["connections"][0];
    assert_eq!(tool["reconnects"], 1, "{tool}");

    web.shutdown().await;
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_need_json_and_loopback_names_and_the_password_when_set() {
    let (_eq, port) = equipment().await;
    let dir = project(
        "auth",
        &format!("[[equipment]]\nname = \"Tool1\"\nport = {port}\ntimers = {{ t5 = 0.2 }}\n"),
        &[],
    );
    let settings = WebSettings {
        password: Some("s3cret".into()),
        ..loopback()
    };
    let (gateway, web) = start(&dir, loopback()).await;
    let open = web.local_addr();
    // A page elsewhere cannot post a form (not JSON), nor reach it under another name.
    let (status, _) = http(
        open,
        "POST",
        "/api/connections/Tool1/enabled",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some("enabled=false"),
    )
    .await;
    assert_eq!(status, 415);
    let (status, _) = http(
        open,
        "GET",
        "/api/overview",
        &[("Host", "evil.example:8088")],
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        gateway.connection("Tool1").unwrap().status(),
        Status::Communicating
    );

    let protected = web::start(&settings, Source::Gateway(gateway.clone()))
        .await
        .unwrap();
    let addr = protected.local_addr();
    let (status, _) = http(addr, "GET", "/api/overview", &[], None).await;
    assert_eq!(status, 401);
    let (status, _) = http(
        addr,
        "GET",
        "/api/overview",
        &[("Authorization", "Bearer wrong")],
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = http(
        addr,
        "GET",
        "/api/overview",
        &[("Authorization", "Bearer s3cret")],
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Basic with any user name (what a browser's prompt sends): "ops:s3cret".
    let (status, _) = http(
        addr,
        "GET",
        "/metrics",
        &[
            ("Authorization", "Basic b3BzOnMzY3JldA=="),
            ("Host", "gateway.fab.example"),
        ],
        None,
    )
    .await;
    assert_eq!(status, 200);
    // A non-loopback address without a password does not start.
    let e = web::start(
        &WebSettings {
            address: "0.0.0.0:0".into(),
            ..WebSettings::default()
        },
        Source::Gateway(gateway.clone()),
    )
    .await;
    if std::env::var(web::PASSWORD_ENV).is_err() {
        assert!(matches!(e, Err(web::WebError::NoCredentials { .. })));
    }
    protected.shutdown().await;
    web.shutdown().await;
    gateway.shutdown().await;
}

/// Reads SSE events (`event:` and `data:` lines) from a raw HTTP response.
struct Events {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

impl Events {
    async fn open(addr: SocketAddr, path: &str) -> Events {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut lines = BufReader::new(stream).lines();
        let status = lines.next_line().await.unwrap().unwrap();
        assert!(status.contains(" 200 "), "{status}");
        Events { lines }
    }

    /// The next event: (name, data).
    async fn next(&mut self) -> (String, Value) {
        let mut name = String::new();
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .unwrap()
                .expect("the stream is open");
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                return (name, serde_json::from_str(d).unwrap());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reader_that_never_reads_does_not_hold_up_a_burst() {
    const BURST: usize = 3000;
    let (eq, port) = equipment().await;
    let dir = project(
        "burst",
        &format!(
            "[[equipment]]\nname = \"Tool1\"\nport = {port}\ntimers = {{ t3 = 30, t5 = 0.2 }}\n\n[store]\nenabled = false\n"
        ),
        &[],
    );
    let (gateway, web) = start(&dir, loopback()).await;
    let addr = web.local_addr();
    let overview = Events::open(addr, "/api/live").await;
    let mut stream = Events::open(
        addr,
        "/api/connections/Tool1/stream?sf=S6F11&direction=received",
    )
    .await;
    // The subscription is made when the response starts: the first event proves it.
    let (_, first) = {
        eq.request(sml::parse_message("S6F11 W <L [3] <U4 0> <U4 1> <L>>").unwrap())
            .await
            .unwrap();
        stream.next().await
    };
    assert_eq!(first["sf"], "S6F11");

    // The burst, pipelined 64 at a time, while neither stream is read.
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..BURST {
        if pending.len() >= 64 {
            pending.join_next().await.unwrap().unwrap();
        }
        let link = eq.clone();
        pending.spawn(async move {
            let m: Message =
                sml::parse_message(&format!("S6F11 W <L [3] <U4 {i}> <U4 4000> <L>>")).unwrap();
            let reply = link.request(m).await.expect("every S6F11 is answered");
            assert_eq!(reply.function, 12);
        });
    }
    while let Some(r) = pending.join_next().await {
        r.unwrap();
    }
    let counts = gateway.connection("Tool1").unwrap().monitor().counts();
    assert!(counts.received as usize > BURST, "{counts:?}");

    // Now read: every S6F11 of the burst was shown or counted as skipped, or the stream's
    // reader lost it (counted too, with the messages of other kinds it lost).
    let (mut shown, mut skipped, mut lost) = (0usize, 0usize, 0usize);
    while shown + skipped + lost < BURST {
        match stream.next().await {
            (name, m) if name == "message" => {
                assert_eq!(m["sf"], "S6F11");
                shown += 1;
            }
            (name, s) if name == "skipped" => {
                skipped += s["skipped"].as_u64().unwrap() as usize;
                lost += s["lost"].as_u64().unwrap() as usize;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(shown + skipped <= BURST, "{shown} shown, {skipped} skipped");
    // Stopping does not wait for the browsers (both streams are still open).
    web.shutdown().await;
    gateway.shutdown().await;
    drop((overview, stream));
}
