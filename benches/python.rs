//! `scripts/bench.sh python`: S6F11 event reports per second through the gateway with an
//! `onSecsGemRealtimeUpdate` handler that reads the payload (`Equipment`, `StreamFunction`,
//! `TxID`), and one that also reads `Message` (the JSON text), beside the same events with no
//! handler, in one run; and the time from saving a handler to it handling the next message.
//! Target: the handler that reads the payload runs at >= 60% of the no-handler rate.
//! Each case is measured `ROUNDS` times in turns (50,000 events each) and its best counts.
//!
//! The equipment is a secsgate HSMS endpoint in the same process sending S6F11 W with 64 in
//! flight; the gateway answers S6F12 and runs the handler. Prints JSON lines.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secsgate::config::Project;
use secsgate::gateway::{Gateway, Status};
use secsgate::link::Link;
use secsgate::secs2::Message;

const EVENTS: u64 = 50_000;
const IN_FLIGHT: u64 = 64;

fn project(dir: &Path, port: u16, handler: Option<&str>) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("handlers")).unwrap();
    std::fs::create_dir_all(dir.join("out")).unwrap();
    std::fs::write(
        dir.join("project.toml"),
        format!("[gateway]\nworkers = 2\n\n[[equipment]]\nname = \"Tool1\"\nport = {port}\ntimers = {{ linktest = 0 }}\n"),
    )
    .unwrap();
    if let Some(h) = handler {
        std::fs::write(dir.join("handlers/onSecsGemRealtimeUpdate.py"), h).unwrap();
    }
}

/// Sends `count` events with IN_FLIGHT outstanding; returns when every reply is back.
async fn blast(link: &Link, count: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (link, next) = (link.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return;
                }
                link.request(common::event(n, 4001)).await.expect("S6F12");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn start(dir: &Path) -> Gateway {
    let p = Project::load(dir).unwrap();
    let g = Gateway::start(&p, true).await;
    let mut w = g.connection("Tool1").unwrap().watch_status();
    tokio::time::timeout(
        Duration::from_secs(10),
        w.wait_for(|s| *s == Status::Communicating),
    )
    .await
    .unwrap()
    .unwrap();
    g
}

/// The cases: name and handler (none for the baseline).
const CASES: [(&str, Option<&str>); 3] = [
    ("no_handler", None),
    (
        "realtime_handler",
        Some("e = payload['Equipment']\nsf = payload['StreamFunction']\ntx = payload['TxID']\n"),
    ),
    (
        "realtime_handler_message",
        Some("e = payload['Equipment']\nsf = payload['StreamFunction']\nm = payload['Message']\n"),
    ),
];

/// Measurements per case, taken in turns; the best counts (the machine is shared, and a
/// busy moment should not decide a ratio).
const ROUNDS: usize = 3;

/// Events per second through one gateway: `EVENTS` events, until their handlers (if any)
/// finished.
async fn rate(eq: &Link, g: &Gateway, handled: bool) -> f64 {
    let engine = g.engine().clone();
    let before = engine.completed();
    let t = Instant::now();
    blast(eq, EVENTS).await;
    while handled && engine.completed() < before + EVENTS {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    EVENTS as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let base: PathBuf =
            std::env::temp_dir().join(format!("secsgate-bench-python-{}", std::process::id()));
        let mut running = Vec::new();
        for (case, handler) in CASES {
            let (eq, port) = common::equipment().await;
            let dir = base.join(case);
            project(&dir, port, handler);
            let g = start(&dir).await;
            blast(&eq, 2_000).await; // warm-up
            while handler.is_some() && g.engine().completed() < 2_000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            running.push((eq, g, dir));
        }
        let mut best = [0.0f64; CASES.len()];
        for _ in 0..ROUNDS {
            for (i, (eq, g, _)) in running.iter().enumerate() {
                best[i] = best[i].max(rate(eq, g, CASES[i].1.is_some()).await);
            }
        }
        let plain = best[0];
        for (i, (case, _)) in CASES.iter().enumerate() {
            println!(
                "{{\"case\": \"{case}\", \"events_per_s\": {:.0}, \"of_no_handler\": {:.2}}}",
                best[i],
                best[i] / plain
            );
        }
        if let Some((eq, _, dir)) = running.last() {
            reload_latency(dir, eq).await;
        }
        for (eq, g, _) in running {
            g.shutdown().await;
            eq.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&base);
    });
}

/// Saves a new version of the handler; prints the time until it handles the next message
/// (events every 2 ms).
async fn reload_latency(dir: &Path, eq: &Link) {
    let mut samples = Vec::new();
    for round in 0..5 {
        let marker = dir.join("out").join(format!("v{round}"));
        let text = format!("open({:?}, 'w').write('x')\n", marker.display().to_string());
        let tmp = dir.join("handlers/.onSecsGemRealtimeUpdate.py.swp");
        std::fs::write(&tmp, text).unwrap();
        let saved = Instant::now();
        std::fs::rename(&tmp, dir.join("handlers/onSecsGemRealtimeUpdate.py")).unwrap();
        let mut n = 0;
        while !marker.exists() {
            let _ = eq
                .send(Message {
                    w_bit: false,
                    ..common::event(n, 4001)
                })
                .await;
            n += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
            assert!(
                saved.elapsed() < Duration::from_secs(10),
                "new handler never ran"
            );
        }
        samples.push(saved.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{{\"case\": \"reload\", \"median_ms\": {:.0}, \"max_ms\": {:.0}}}",
        samples[samples.len() / 2],
        samples[samples.len() - 1]
    );
}
