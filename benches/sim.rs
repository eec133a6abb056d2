//! `scripts/bench.sh sim`: S6F11 events per second that simulators deliver to hosts that only
//! acknowledge them, and the memory a simulator takes.
//!
//! 1. Memory: process RSS before and after starting 100 idle simulators (listening, no host).
//! 2. One simulator, one host: an event run of `EVENTS` S6F11 (one report of one SV each,
//!    W-bit, up to 256 in flight), timed from its start to the host's last S6F12.
//! 3. 100 simulators in this process, each with its own host: the same, `EVENTS / 100` each,
//!    all at once.
//!
//! Hosts are secsgate HSMS endpoints in this same process (they share its CPU). Prints one
//! JSON object per line on stdout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use secsgate::hsms::driver::{self, Mode, Settings};
use secsgate::link::{Link, Received};
use secsgate::secs2::sml::parse_message;
use secsgate::secs2::{Item, Message};
use secsgate::sim::{SimConfig, Simulator};
use tokio::sync::Notify;

const EVENTS: usize = 100_000;
const SIMULATORS: usize = 100;

fn config(events: usize) -> SimConfig {
    let text = format!(
        r#"
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
name = "Bench"
reports = [1]
enabled = true

[[event_run]]
name = "flood"
repeat = {events}

[[event_run.step]]
event = 5000
"#
    );
    match SimConfig::parse(&text, "bench.toml", None) {
        Ok(c) => c,
        Err(e) => panic!("bench config: {e}"),
    }
}

fn settings(mode: Mode) -> Settings {
    let mut s = Settings::new(mode);
    s.protocol.linktest = None;
    s.protocol.t5 = Duration::from_millis(100);
    s
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn start_sim(dir: &std::path::Path, name: String, events: usize) -> Simulator {
    Simulator::start(
        name,
        config(events),
        settings(Mode::Passive("127.0.0.1:0".into())),
        dir.to_path_buf(),
    )
    .await
    .expect("simulator starts")
}

/// A host that acknowledges every S6F11 and counts them; `done` is notified at `want`.
async fn host(sim: &Simulator, want: usize, done: Arc<Notify>) -> Link {
    let addr = sim.local_addr().expect("listening").to_string();
    let endpoint = driver::start(settings(Mode::Active(addr)))
        .await
        .expect("host starts");
    endpoint
        .link
        .wait_selected(Duration::from_secs(10))
        .await
        .expect("selected");
    let link = endpoint.link.clone();
    let mut incoming = endpoint.incoming;
    let count = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Some(Received::Message(m)) = incoming.recv().await {
            let body = match (m.stream, m.function) {
                (1, 13) => Some(Item::L(vec![Item::B(vec![0]), Item::L(vec![])])),
                _ => Some(Item::B(vec![0])),
            };
            if m.w_bit {
                let _ = link.reply(&m, body).await;
            }
            if (m.stream, m.function) == (6, 11)
                && count.fetch_add(1, Ordering::Relaxed) + 1 == want
            {
                done.notify_one();
            }
        }
    });
    let s1f13: Message = parse_message("S1F13 W <L>").expect("SML");
    endpoint.link.request(s1f13).await.expect("S1F14");
    endpoint.link
}

/// Runs `sims` simulators with one host each, `per_sim` events each; returns events/s.
async fn throughput(dir: &std::path::Path, sims: usize, per_sim: usize) -> f64 {
    let mut pairs = Vec::new();
    for i in 0..sims {
        let sim = start_sim(dir, format!("bench-{sims}-{i}"), per_sim).await;
        let done = Arc::new(Notify::new());
        let link = host(&sim, per_sim, done.clone()).await;
        pairs.push((sim, link, done));
    }
    let started = Instant::now();
    for (sim, _, _) in &pairs {
        sim.start_event_run("flood").expect("run exists");
    }
    for (_, _, done) in &pairs {
        tokio::time::timeout(Duration::from_secs(300), done.notified())
            .await
            .expect("all events within 300 s");
    }
    let seconds = started.elapsed().as_secs_f64();
    for (sim, link, _) in pairs {
        link.shutdown().await;
        sim.shutdown().await;
    }
    (sims * per_sim) as f64 / seconds
}

fn main() {
    // `cargo bench` passes --bench; there is nothing to filter.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    runtime.block_on(async {
        let before = rss_kib();
        let mut idle = Vec::new();
        for i in 0..SIMULATORS {
            idle.push(start_sim(dir.path(), format!("idle-{i}"), 1).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = rss_kib();
        println!(
            "{{\"bench\": \"sim_memory\", \"simulators\": {SIMULATORS}, \"rss_before_kib\": {before}, \"rss_after_kib\": {after}, \"per_simulator_kib\": {:.1}}}",
            (after.saturating_sub(before)) as f64 / SIMULATORS as f64
        );
        for sim in idle {
            sim.shutdown().await;
        }
        // Warm-up, then one simulator.
        throughput(dir.path(), 1, 5_000).await;
        let one = throughput(dir.path(), 1, EVENTS).await;
        println!("{{\"bench\": \"sim_one\", \"events\": {EVENTS}, \"per_second\": {one:.0}}}");
        let many = throughput(dir.path(), SIMULATORS, EVENTS / SIMULATORS).await;
        println!(
            "{{\"bench\": \"sim_hundred\", \"simulators\": {SIMULATORS}, \"events\": {EVENTS}, \"per_second\": {many:.0}}}"
        );
    });
}
