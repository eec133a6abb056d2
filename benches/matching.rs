//! `scripts/bench.sh matching`: S6F11 event reports per second through the gateway when
//! they are routed among 100 keyed SDL definitions (one per CEID, each mapped to its handler
//! by name), beside the same events with one S/F-level definition and mapping, in one run.
//! Target: routing by content costs under 10% of the S/F-level rate.
//!
//! Two pairs of cases: with a handler (`[[equipment.handler]]`, reading `Equipment`,
//! `StreamFunction` and `MessageName`) and with no handler at all (only the matching, the
//! default reply and the CommonID), so the cost is seen with and without Python in the way.
//! Each case is measured `ROUNDS` times in turns, each round starting at another case
//! (`EVENTS` events each, 64 in flight, the CEIDs cycling through all 100 keys); its best
//! rate and its least CPU time per event (the whole process) count. The message store is
//! off and the events are made beforehand, so neither hides what matching costs. Also prints
//! the time of `Sdl::matching` alone (`MATCHING_CASES=a,b` runs only those cases, and not
//! that).
//!
//! The equipment is a secsgate HSMS endpoint in the same process. Prints JSON lines.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secsgate::config::Project;
use secsgate::gateway::{Gateway, Status};
use secsgate::link::Link;
use secsgate::sdl::Sdl;
use secsgate::secs2::Message;

const EVENTS: u64 = 50_000;
const IN_FLIGHT: u64 = 64;
/// Measurements per case, taken in turns; the best counts.
const ROUNDS: usize = 5;
/// Keyed definitions: CEIDs 4001..=4100.
const KEYED: u64 = 100;
const FIRST_CEID: u64 = 4001;

const ITEMS: &str = r#""items": {
    "ACKC6": {"doc": "ACKC6, Acknowledge Code", "format": "B"},
    "CEID": {"doc": "CEID, Collected Event ID", "format": ["U4", "U2"]},
    "DATAID": {"doc": "DATAID, Data ID", "format": "U4"},
    "RPTID": {"doc": "RPTID, Report ID", "format": "U4"},
    "V": {"doc": "V, Variable Data"}
  }"#;

const REPLY: &str = r#""F12": {"direction": "h->e", "body": "ACKC6"}"#;

/// One S6F11 definition, as the standard catalogue has it.
fn sdl_sf() -> String {
    format!(
        r#"{{{ITEMS}, "messages": {{"S6": {{"F11": {{"direction": "h<-e", "reply": true, "CommonID": ["CEID"], "body": ["DATAID", "CEID", {{"L*": ["RPTID", "V*"]}}]}}, {REPLY}}}}}}}"#
    )
}

/// 100 named S6F11 definitions, keyed on CEID.
fn sdl_keyed() -> String {
    let mut defs = String::new();
    for i in 0..KEYED {
        let ceid = FIRST_CEID + i;
        if i > 0 {
            defs.push_str(",\n");
        }
        let _ = write!(
            defs,
            r#"{{"name": "Event{ceid}", "direction": "h<-e", "reply": true, "CommonID": ["CEID"], "body": ["DATAID", {{"name": "CEID", "key": {ceid}}}, {{"L*": ["RPTID", "V*"]}}]}}"#
        );
    }
    format!(r#"{{{ITEMS}, "messages": {{"S6": {{"F11": [{defs}], {REPLY}}}}}}}"#)
}

/// A case: its name, whether it routes by content, and whether handlers run.
struct Case {
    name: &'static str,
    keyed: bool,
    handler: bool,
}

const CASES: [Case; 4] = [
    Case {
        name: "sf_handler",
        keyed: false,
        handler: true,
    },
    Case {
        name: "keyed_handler",
        keyed: true,
        handler: true,
    },
    Case {
        name: "sf_no_handler",
        keyed: false,
        handler: false,
    },
    Case {
        name: "keyed_no_handler",
        keyed: true,
        handler: false,
    },
];

const HANDLER: &str =
    "e = payload['Equipment']\nsf = payload['StreamFunction']\nname = payload['MessageName']\n";

fn project(dir: &Path, port: u16, case: &Case) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("handlers")).unwrap();
    let mut toml = format!(
        "[gateway]\nworkers = 2\n\n[store]\nenabled = false\n\n[[equipment]]\nname = \"Tool1\"\nport = {port}\nsdl = \"tool.sdl\"\nrealtime = []\ntimers = {{ linktest = 0 }}\n"
    );
    if case.handler {
        std::fs::write(dir.join("handlers/onEvent.py"), HANDLER).unwrap();
        if case.keyed {
            for i in 0..KEYED {
                let _ = write!(
                    toml,
                    "\n[[equipment.handler]]\nmessage = \"Event{}\"\nhandler = \"onEvent\"\n",
                    FIRST_CEID + i
                );
            }
        } else {
            toml.push_str(
                "\n[[equipment.handler]]\nstream_function = \"S6F11\"\nhandler = \"onEvent\"\n",
            );
        }
    }
    std::fs::write(dir.join("project.toml"), toml).unwrap();
    let sdl = if case.keyed { sdl_keyed() } else { sdl_sf() };
    std::fs::write(dir.join("tool.sdl"), sdl).unwrap();
}

/// Event `n`: its CEID cycles through the 100 keys.
fn event(n: u64) -> Message {
    common::event(n, FIRST_CEID + n % KEYED)
}

/// Sends `count` events with IN_FLIGHT outstanding; returns when every reply is back. The
/// events are made beforehand (one per CEID), so the equipment's side costs little.
async fn blast(link: &Link, count: u64) {
    let events: Arc<Vec<Message>> = Arc::new((0..KEYED).map(event).collect());
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
                let e = events[(n % KEYED) as usize].clone();
                let reply = link.request(e).await.expect("S6F12");
                assert_eq!(reply.function, 12, "{reply}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn start(dir: &Path) -> Gateway {
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
    g
}

/// CPU time the process has used (every thread, user and system), in microseconds.
fn cpu_us() -> f64 {
    // SAFETY: getrusage writes the struct it is given and nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// Events per second through one gateway, and the process's CPU time per event (the
/// equipment's side included; the other gateways are idle meanwhile): `count` events,
/// until their handlers (if any) finished.
async fn rate(eq: &Link, g: &Gateway, handled: bool, count: u64) -> (f64, f64) {
    let engine = g.engine().clone();
    let before = engine.completed();
    let cpu = cpu_us();
    let t = Instant::now();
    blast(eq, count).await;
    if handled {
        let mut done = engine.watch_completed();
        done.wait_for(|n| *n >= before + count).await.unwrap();
    }
    (
        count as f64 / t.elapsed().as_secs_f64(),
        (cpu_us() - cpu) / count as f64,
    )
}

/// Nanoseconds per `Sdl::matching` of the events (CEIDs cycling through the keys).
fn matching_ns(sdl: &Sdl) -> f64 {
    let events: Vec<Message> = (0..KEYED).map(event).collect();
    let rounds = 20_000;
    let t = Instant::now();
    for _ in 0..rounds {
        for e in &events {
            let m = sdl.matching(std::hint::black_box(e), false).unwrap();
            std::hint::black_box(m.index);
        }
    }
    t.elapsed().as_nanos() as f64 / (rounds as f64 * events.len() as f64)
}

fn main() {
    let only = std::env::var("MATCHING_CASES").ok();
    if only.is_none() {
        let sf = Sdl::parse(Path::new("sf.sdl"), &sdl_sf()).unwrap().0;
        let keyed = Sdl::parse(Path::new("keyed.sdl"), &sdl_keyed()).unwrap().0;
        println!(
            "{{\"case\": \"matching_ns\", \"sf\": {:.0}, \"keyed\": {:.0}}}",
            matching_ns(&sf),
            matching_ns(&keyed)
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let base: PathBuf =
            std::env::temp_dir().join(format!("secsgate-bench-matching-{}", std::process::id()));
        let cases: Vec<&Case> = CASES
            .iter()
            .filter(|c| {
                only.as_deref()
                    .is_none_or(|o| o.split(',').any(|n| n == c.name))
            })
            .collect();
        let mut running = Vec::new();
        for case in &cases {
            let (eq, port) = common::equipment().await;
            let dir = base.join(case.name);
            project(&dir, port, case);
            let g = start(&dir).await;
            let _ = rate(&eq, &g, case.handler, 5_000).await; // warm-up
            running.push((eq, g));
        }
        // MATCHING_EVENTS and MATCHING_ROUNDS change the size of the run (for a profiler).
        let knob = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (events, rounds) = (
            knob("MATCHING_EVENTS", EVENTS),
            knob("MATCHING_ROUNDS", ROUNDS as u64),
        );
        let mut best = vec![0.0f64; cases.len()];
        let mut least_cpu = vec![f64::MAX; cases.len()];
        for round in 0..rounds as usize {
            // Each round starts at another case, so none is always first after a pause.
            for k in 0..running.len() {
                let i = (round + k) % running.len();
                let (eq, g) = &running[i];
                let (per_s, cpu) = rate(eq, g, cases[i].handler, events).await;
                best[i] = best[i].max(per_s);
                least_cpu[i] = least_cpu[i].min(cpu);
            }
        }
        for (i, case) in cases.iter().enumerate() {
            println!(
                "{{\"case\": \"{}\", \"events_per_s\": {:.0}, \"cpu_us\": {:.2}}}",
                case.name, best[i], least_cpu[i]
            );
        }
        for (eq, g) in running {
            g.shutdown().await;
            eq.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&base);
    });
}
