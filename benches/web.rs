//! `scripts/bench.sh web`: the web console with 1,000 connections and 10,000 messages/s.
//!
//! One gateway in this process with 1,000 in-process simulators and 1,000 equipment
//! connections to them (message store off). The console's figures are measured twice in the
//! same run: idle (every connection Communicating, no traffic) as the baseline, then while
//! each simulator sends 10 S6F11 W a second (10,000 S6F11/s, 20,000 messages/s with the
//! S6F12 replies) with three live readers attached (the overview events, and the streams of
//! two connections, one of them never read):
//!
//! - `GET /api/overview` latency (median and worst of 20) and size;
//! - the gap between `overview` events on `/api/live` (median and worst of 5);
//! - the S6F11/s the gateway received during the measurement.
//!
//! Prints one JSON object per line on stdout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use secsgate::config::{Project, WebSettings};
use secsgate::gateway::{Gateway, Status};
use secsgate::web::{self, Source};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 1000;

/// S6F11 each simulator sends per second.
const PER_SECOND: usize = 10;

const SIM_CONFIG: &str = r#"
[equipment]
enable_spooling = false

[[status_variable]]
id = 10
name = "Temperature"
format = "U4"
value = 23

[[report]]
id = 1
variables = [10]

[[collection_event]]
id = 5000
name = "Tick"
reports = [1]
enabled = true

[[event_run]]
name = "pace"
repeat = 1000000

[[event_run.step]]
delay = "100ms"
event = 5000
"#;

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

fn project(dir: &std::path::Path) -> Project {
    std::fs::create_dir_all(dir.join("handlers")).expect("mkdir");
    std::fs::write(dir.join("sim.toml"), SIM_CONFIG).expect("sim config");
    let mut toml = String::from("[store]\nenabled = false\n\n");
    for (i, port) in free_ports(CONNECTIONS).into_iter().enumerate() {
        toml.push_str(&format!(
            "[[simulator]]\nname = \"S{i:04}\"\nport = {port}\nconfig = \"sim.toml\"\n\n[[equipment]]\nname = \"T{i:04}\"\nport = {port}\nsdl = \"none\"\ntimers = {{ t5 = 0.2, linktest = 0 }}\n\n"
        ));
    }
    std::fs::write(dir.join("project.toml"), toml).expect("project.toml");
    Project::load(dir).unwrap_or_else(|e| panic!("{e:?}"))
}

async fn get(addr: SocketAddr, path: &str) -> (Duration, usize) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("request");
    let mut body = Vec::new();
    stream.read_to_end(&mut body).await.expect("response");
    assert!(
        body.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&body[..body.len().min(200)])
    );
    (started.elapsed(), body.len())
}

/// Opens an SSE response and returns its line reader.
async fn events(addr: SocketAddr, path: &str) -> tokio::io::Lines<BufReader<TcpStream>> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("request");
    BufReader::new(stream).lines()
}

/// Waits for `n` `overview` events and returns the gaps between them.
async fn overview_gaps(
    lines: &mut tokio::io::Lines<BufReader<TcpStream>>,
    n: usize,
) -> Vec<Duration> {
    let mut gaps = Vec::new();
    let mut last: Option<Instant> = None;
    while gaps.len() < n {
        let line = lines.next_line().await.expect("read").expect("open");
        if line == "event: overview" {
            let now = Instant::now();
            if let Some(l) = last {
                gaps.push(now - l);
            }
            last = Some(now);
        }
    }
    gaps
}

fn median(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    (
        v[v.len() / 2].as_secs_f64() * 1000.0,
        v[v.len() - 1].as_secs_f64() * 1000.0,
    )
}

fn received(gateway: &Gateway) -> u64 {
    gateway
        .connections()
        .iter()
        .map(|c| c.monitor().counts().received)
        .sum()
}

async fn measure(case: &str, gateway: &Gateway, addr: SocketAddr) {
    let mut live = events(addr, "/api/live").await;
    let before = received(gateway);
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let (took, bytes) = get(addr, "/api/overview").await;
        latencies.push(took);
        size = bytes;
    }
    let gaps = overview_gaps(&mut live, 5).await;
    let rate = (received(gateway) - before) as f64 / started.elapsed().as_secs_f64();
    let (p50, max) = median(latencies);
    let (g50, gmax) = median(gaps);
    println!(
        "{}",
        serde_json::json!({
            "bench": case,
            "connections": CONNECTIONS,
            "overview_ms_median": p50,
            "overview_ms_max": max,
            "overview_bytes": size,
            "live_gap_ms_median": g50,
            "live_gap_ms_max": gmax,
            "received_per_second": rate,
        })
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(secsgate::sim::MAX_SIMULATORS + 512)
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = project(dir.path());
        let gateway = Gateway::start(&project, false).await;
        for c in gateway.connections() {
            let mut w = c.watch_status();
            tokio::time::timeout(
                Duration::from_secs(120),
                w.wait_for(|s| *s == Status::Communicating),
            )
            .await
            .expect("every connection communicating within 120 s")
            .expect("status");
        }
        let web = web::start(
            &WebSettings {
                address: "127.0.0.1:0".into(),
                ..WebSettings::default()
            },
            Source::Gateway(gateway.clone()),
        )
        .await
        .expect("web console");
        let addr = web.local_addr();
        measure("idle", &gateway, addr).await;

        for sim in gateway.simulators() {
            sim.start_event_run("pace").expect("start run");
        }
        // One stream read, one never read, during the measurement.
        let mut read = events(addr, "/api/connections/T0000/stream").await;
        let _unread = events(addr, "/api/connections/T0001/stream").await;
        let reader = tokio::spawn(async move { while let Ok(Some(_)) = read.next_line().await {} });
        // The runs ramp up over their first step.
        let mut w = gateway.connection("T0999").expect("T0999").watch_status();
        let _ = w.wait_for(|s| *s == Status::Communicating).await;
        let start = received(&gateway);
        while received(&gateway) < start + (CONNECTIONS * PER_SECOND) as u64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        measure("traffic", &gateway, addr).await;
        reader.abort();
        web.shutdown().await;
        gateway.shutdown().await;
    });
}
