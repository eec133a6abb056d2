//! `scripts/bench.sh fleet`: S6F11 event reports per second through one gateway to an MQTT
//! broker (QoS 0 and QoS 1) and into a PostgreSQL message store, beside the same gateway with
//! both off, in one run; and what the store-and-forward queue takes per 100,000 messages while
//! the broker is away.
//!
//! The equipment is a secsgate HSMS endpoint in the same process sending S6F11 W with 64 in
//! flight (the events made beforehand). Each case has its own gateway; each is measured
//! `ROUNDS` times in turns, its best rate counts. A case's time runs until its last event is
//! done where it goes: every S6F12 back (both off), every publish received by a subscriber on
//! the broker (MQTT), every row written (PostgreSQL).
//!
//! The broker and the server come from `FLEET_MQTT_PORT` and `FLEET_PG_URL` (bench.sh starts
//! them). Prints JSON lines.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secsgate::config::Project;
use secsgate::gateway::{Gateway, Status};
use secsgate::link::Link;
use secsgate::north::North;
use secsgate::secs2::Message;

const IN_FLIGHT: u64 = 64;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq)]
enum Case {
    Off,
    MqttQos0,
    MqttQos1,
    Postgres,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Off => "both_off",
            Case::MqttQos0 => "mqtt_qos0",
            Case::MqttQos1 => "mqtt_qos1",
            Case::Postgres => "postgres",
        }
    }
}

/// Sends `count` events with IN_FLIGHT outstanding; returns when every reply is back.
async fn blast(link: &Link, count: u64) {
    let events: Arc<Vec<Message>> = Arc::new((0..100).map(|n| common::event(n, 4001)).collect());
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (link, next, events) = (link.clone(), next.clone(), events.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    return;
                }
                let reply = link
                    .request(events[(n % 100) as usize].clone())
                    .await
                    .expect("S6F12");
                assert_eq!(reply.function, 12, "{reply}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A gateway of `case` with its publisher, connected to the equipment at `port`.
async fn start(dir: &Path, port: u16, case: Case, name: &str) -> (Gateway, Option<North>) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("handlers")).unwrap();
    let mut toml = format!(
        "[gateway]\nname = \"{name}\"\nworkers = 2\n\n[[equipment]]\nname = \"Tool1\"\nport = {port}\nrealtime = []\ntimers = {{ linktest = 0 }}\n"
    );
    match case {
        Case::Off => toml.push_str("\n[store]\nenabled = false\n"),
        Case::MqttQos0 | Case::MqttQos1 => {
            let broker = std::env::var("FLEET_MQTT_PORT").expect("FLEET_MQTT_PORT");
            let qos = if case == Case::MqttQos0 { 0 } else { 1 };
            toml.push_str(&format!(
                "\n[store]\nenabled = false\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{broker}\"\nqos = {qos}\nmessages = [\"S6F11\"]\n"
            ));
        }
        Case::Postgres => {
            let url = std::env::var("FLEET_PG_URL").expect("FLEET_PG_URL");
            toml.push_str(&format!("\n[store]\nurl = \"{url}\"\n"));
        }
    }
    let (g, north, _) = gateway(dir, &toml).await;
    (g, north)
}

/// A gateway of the project `toml` in `dir`, communicating with its equipment, and its
/// publisher if `[mqtt]` is on.
async fn gateway(dir: &Path, toml: &str) -> (Gateway, Option<North>, Project) {
    std::fs::write(dir.join("project.toml"), toml).unwrap();
    let p = Project::load(dir).unwrap_or_else(|e| panic!("{e:?}"));
    let g = Gateway::start(&p, false).await;
    let mut w = g.connection("Tool1").unwrap().watch_status();
    tokio::time::timeout(
        Duration::from_secs(10),
        w.wait_for(|s| *s == Status::Communicating),
    )
    .await
    .unwrap()
    .unwrap();
    let north = secsgate::north::start_if_on(&p.mqtt, &g).await.unwrap();
    (g, north, p)
}

/// A subscriber counting the publishes on `secsgate/<name>/Tool1/S6F11`.
async fn subscriber(name: &str) -> Arc<tokio::sync::watch::Sender<u64>> {
    let port: u16 = std::env::var("FLEET_MQTT_PORT").unwrap().parse().unwrap();
    let mut o = rumqttc::MqttOptions::new(format!("bench-{name}"), "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(o, 16);
    client
        .subscribe(
            format!("secsgate/{name}/Tool1/S6F11"),
            rumqttc::QoS::AtMostOnce,
        )
        .await
        .unwrap();
    let count = Arc::new(tokio::sync::watch::Sender::new(0u64));
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let c = count.clone();
    tokio::spawn(async move {
        let _client = client;
        let mut subscribed_tx = Some(subscribed_tx);
        while let Ok(e) = events.poll().await {
            match e {
                rumqttc::Event::Incoming(rumqttc::Incoming::SubAck(_)) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                rumqttc::Event::Incoming(rumqttc::Incoming::Publish(_)) => {
                    c.send_modify(|n| *n += 1);
                }
                _ => {}
            }
        }
    });
    subscribed.await.unwrap();
    count
}

/// Events per second of one round: `count` events until they are all where the case puts them.
async fn round(
    eq: &Link,
    g: &Gateway,
    case: Case,
    received: Option<&tokio::sync::watch::Sender<u64>>,
    count: u64,
) -> f64 {
    let before = received.map_or(0, |r| *r.borrow());
    let written = g.store().map_or(0, |s| s.written());
    let t = Instant::now();
    blast(eq, count).await;
    match case {
        Case::Off => {}
        Case::MqttQos0 | Case::MqttQos1 => {
            let mut rx = received.unwrap().subscribe();
            rx.wait_for(|n| *n >= before + count).await.unwrap();
        }
        Case::Postgres => {
            let store = g.store().unwrap();
            store.flush().await;
            assert!(
                store.written() >= written + count,
                "every S6F11 and S6F12 written"
            );
        }
    }
    count as f64 / t.elapsed().as_secs_f64()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn file_bytes(path: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(Path::new(&p)).map_or(0, |m| m.len())
        })
        .sum()
}

/// 100,000 events while the broker is away (a port nobody listens on): the forward queue's
/// bytes on disk per message, and the process's resident memory before and after, beside a
/// gateway with MQTT off taking the same events.
async fn forward_queue(root: &Path, count: u64) {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for away in [false, true] {
        let (eq, port) = common::equipment().await;
        let dir = root.join(if away { "away" } else { "away-baseline" });
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("handlers")).unwrap();
        let mut toml = format!(
            "[gateway]\nname = \"away\"\nworkers = 2\n\n[store]\nenabled = false\n\n[[equipment]]\nname = \"Tool1\"\nport = {port}\nrealtime = []\ntimers = {{ linktest = 0 }}\n"
        );
        if away {
            toml.push_str(&format!(
                "\n[mqtt]\nurl = \"mqtt://127.0.0.1:{closed}\"\nmessages = [\"S6F11\"]\nforward_limit = 10000000\n"
            ));
        }
        let (g, north, p) = gateway(&dir, &toml).await;
        blast(&eq, 1000).await;
        let rss0 = rss_kib();
        let t = Instant::now();
        blast(&eq, count).await;
        let rate = count as f64 / t.elapsed().as_secs_f64();
        let rss1 = rss_kib();
        // Stopping the publisher puts what it still holds in memory on disk too.
        let (queued, disk) = match north {
            Some(n) => {
                n.shutdown().await;
                let q = secsgate::north::forward::ForwardQueue::open(
                    &p.mqtt.forward_path,
                    p.mqtt.forward_limit,
                    p.mqtt.forward_bytes,
                )
                .unwrap();
                (q.len(), file_bytes(&p.mqtt.forward_path))
            }
            None => (0, 0),
        };
        println!(
            "{{\"case\":\"{}\",\"events\":{count},\"events_per_s\":{rate:.0},\"rss_before_kib\":{rss0},\"rss_after_kib\":{rss1},\"queued\":{queued},\"disk_bytes\":{disk}}}",
            if away {
                "broker_away"
            } else {
                "broker_away_baseline"
            }
        );
        g.shutdown().await;
        drop(eq);
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events = env_u64("FLEET_EVENTS", 50_000);
    let rounds = env_u64("FLEET_ROUNDS", 3) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let root = std::env::temp_dir().join(format!("secsgate-fleet-bench-{}", std::process::id()));
        let cases = [Case::Off, Case::MqttQos0, Case::MqttQos1, Case::Postgres];
        let mut setups = Vec::new();
        for case in cases {
            let (eq, port) = common::equipment().await;
            let name = format!("bench{}{}", std::process::id(), case.name().replace('_', ""));
            let received = match case {
                Case::MqttQos0 | Case::MqttQos1 => Some(subscriber(&name).await),
                _ => None,
            };
            let (g, north) = start(&root.join(case.name()), port, case, &name).await;
            // Warm-up: connections, tables, the broker session.
            round(&eq, &g, case, received.as_deref(), 1000).await;
            setups.push((case, eq, g, north, received, Vec::new()));
        }
        for r in 0..rounds {
            for i in 0..setups.len() {
                let k = (i + r) % setups.len();
                let (case, eq, g, _, received, rates) = &mut setups[k];
                let rate = round(eq, g, *case, received.as_deref(), events).await;
                rates.push(rate);
            }
        }
        for (case, _, g, north, _, rates) in setups {
            let best = rates.iter().copied().fold(0.0, f64::max);
            let all: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
            println!(
                "{{\"case\":\"{}\",\"events\":{events},\"events_per_s\":{best:.0},\"rounds\":[{}]}}",
                case.name(),
                all.join(",")
            );
            if let Some(n) = north {
                n.shutdown().await;
            }
            g.shutdown().await;
        }
        forward_queue(&root, env_u64("FLEET_AWAY_EVENTS", 100_000)).await;
        let _ = std::fs::remove_dir_all(&root);
    });
}
