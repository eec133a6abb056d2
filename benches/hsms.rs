//! HSMS round-trip benchmark (`cargo bench --bench hsms`; `scripts/bench.sh hsms` prints it
//! beside secsgem 0.3.0's figure).
//!
//! Two secsgate endpoints over 127.0.0.1, as two programs would run them: the passive
//! ("equipment") endpoint on one OS thread with its own current-thread tokio runtime (as the
//! `secsgate` CLI runs), the active ("host") endpoint on another. The equipment's incoming
//! loop answers every S1F1 with S1F2 `<L [2] <A "MDLN"> <A "1.0">>` through `link.reply`.
//! Figures:
//!
//! 1. `secsgate_sequential`: one S1F1 W / S1F2 round trip at a time (`link.request` in a loop).
//! 2. `secsgate_in_flight_64`: 64 tasks each looping `link.request` on the same connection;
//!    each completed round trip (S1F1 sent, its S1F2 received) counts as one message.
//! 3. `raw_tcp_pingpong`: the physical limit: blocking `std::net::TcpStream`s with
//!    `TCP_NODELAY`, one thread each side, the client writing the 14-byte S1F1 frame and
//!    reading exactly the S1F2 frame, the server the reverse. Same frames, byte for byte.
//!
//! Each figure has a warm-up, then counts what completes in a fixed time (3 s). Figures 1
//! and 3 are measured in alternating slices so that other load on the machine hits both
//! alike.
//!
//! A ping-pong's rate depends on where the scheduler puts the two sides: on one core a round
//! trip is two context switches; on two cores it is two cross-core wake-ups, which on a
//! virtual machine cost more. So everything is measured under three placements:
//! `free` (the scheduler decides, as a user would run it), `split` (host side pinned to core
//! 0, equipment side to core 1) and `same` (both on core 0: the pure CPU cost). Each JSON line
//! names its placement. `HSMS_BENCH_PLACEMENTS=free,same` picks some.
//!
//! Stdout carries one JSON object per figure and placement, and nothing else. Run without
//! `--bench` (as `cargo test --all-targets` does) it only checks that each figure works, in a
//! fraction of a second.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secsgate::hsms::driver::{self, Mode, Settings};
use secsgate::hsms::frame;
use secsgate::link::{Link, Received};
use secsgate::secs2::{Item, Message, StreamFunction};

/// Requests kept in flight for figure 2.
const IN_FLIGHT: usize = 64;
/// Alternating slices of figures 1 and 3.
const ROUNDS: u32 = 6;

#[derive(Clone, Copy)]
struct Timing {
    warmup: Duration,
    measure: Duration,
}

/// Where the two sides run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Placement {
    Free,
    Split,
    Same,
}

/// The two sides of every figure.
#[derive(Clone, Copy)]
enum Side {
    Host,
    Equipment,
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Placement::Free => "free",
            Placement::Split => "split",
            Placement::Same => "same",
        }
    }

    /// Pins the calling thread for `side` (nothing for `Free`).
    fn pin(self, side: Side) {
        let cpu = match (self, side) {
            (Placement::Free, _) => return,
            (Placement::Split, Side::Equipment) => 1,
            _ => 0,
        };
        // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity only read
        // and write that local set, and pid 0 is the calling thread.
        let ok = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        };
        assert!(ok, "cannot pin a thread to CPU {cpu}");
    }
}

fn s1f1() -> Message {
    Message::new(
        StreamFunction {
            stream: 1,
            function: 1,
        },
        true,
        None,
    )
}

fn s1f2_body() -> Item {
    Item::L(vec![Item::ascii("MDLN"), Item::ascii("1.0")])
}

/// The S1F1 W frame and its S1F2 reply frame, exactly as the driver encodes them.
fn frames() -> (Vec<u8>, Vec<u8>) {
    let mut request = s1f1();
    request.system_bytes = 1;
    let mut req = Vec::new();
    frame::encode_message(&request, &mut req).expect("S1F1 encodes");
    let mut rsp = Vec::new();
    frame::encode_message(&request.reply_with(Some(s1f2_body())), &mut rsp).expect("S1F2 encodes");
    (req, rsp)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The passive endpoint on its own thread and runtime, answering S1F1 with S1F2 until
/// `stop` fires. Returns its address and the thread.
fn start_equipment(
    placement: Placement,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("equipment".into())
        .spawn(move || {
            placement.pin(Side::Equipment);
            current_thread().block_on(async move {
                let endpoint = driver::start(Settings::new(Mode::Passive("127.0.0.1:0".into())))
                    .await
                    .expect("passive endpoint starts");
                addr_tx
                    .send(endpoint.local_addr.expect("bound address"))
                    .expect("address sent");
                let (link, mut incoming) = (endpoint.link, endpoint.incoming);
                let body = s1f2_body();
                // A spawned task, not the block_on future: tokio wakes a block_on future
                // through the I/O driver (an eventfd write per wake), a task in place.
                let serve = tokio::spawn(async move {
                    while let Some(received) = incoming.recv().await {
                        if let Received::Message(msg) = received
                            && msg.stream == 1
                            && msg.function == 1
                        {
                            // The host may separate while replies are still queued.
                            let _ = link.reply(&msg, Some(body.clone())).await;
                        }
                    }
                });
                let _ = stop.await;
                serve.abort();
                let _ = serve.await;
            });
        })
        .expect("equipment thread");
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("equipment endpoint address");
    (addr, thread)
}

async fn round_trip(link: &Link) {
    let reply = link.request(s1f1()).await.expect("S1F1 answered");
    assert_eq!(
        (reply.stream, reply.function),
        (1, 2),
        "S1F1 answered with S1F2"
    );
}

/// Figure 1 on `rt`, in a spawned task (see `start_equipment`).
fn sequential_on(rt: &tokio::runtime::Runtime, link: &Link, measure: Duration) -> (u64, Duration) {
    let link = link.clone();
    rt.block_on(async move {
        tokio::spawn(async move { sequential(&link, measure).await })
            .await
            .expect("sequential task")
    })
}

/// Figure 1: sequential round trips for `measure`.
async fn sequential(link: &Link, measure: Duration) -> (u64, Duration) {
    let start = Instant::now();
    let until = start + measure;
    let mut count = 0u64;
    let mut now = start;
    while now < until {
        round_trip(link).await;
        count += 1;
        now = Instant::now();
    }
    (count, now - start)
}

/// Figure 2: `IN_FLIGHT` tasks each looping `request`; completed round trips per second.
async fn in_flight(link: &Link, timing: Timing) -> (u64, Duration) {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (link, done, stop) = (link.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    round_trip(&link).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(timing.warmup).await;
    let (c0, t0) = (done.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(timing.measure).await;
    let (c1, t1) = (done.load(Ordering::Relaxed), Instant::now());
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("requester task");
    }
    (c1 - c0, t1 - t0)
}

/// Figure 3's client end: blocking TCP ping-pong with the same frames as the driver sends,
/// against a server thread that reads exactly a request frame and writes the reply frame.
struct RawPingPong {
    stream: TcpStream,
    request: Vec<u8>,
    reply: Vec<u8>,
    buf: Vec<u8>,
    server: std::thread::JoinHandle<()>,
}

impl RawPingPong {
    fn start(placement: Placement, request: Vec<u8>, reply: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (req_len, reply_frame) = (request.len(), reply.clone());
        let server = std::thread::Builder::new()
            .name("raw-server".into())
            .spawn(move || {
                placement.pin(Side::Equipment);
                let (mut stream, _) = listener.accept().expect("accept");
                stream.set_nodelay(true).expect("nodelay");
                let mut buf = vec![0u8; req_len];
                while stream.read_exact(&mut buf).is_ok() {
                    stream.write_all(&reply_frame).expect("write reply");
                }
            })
            .expect("raw server thread");
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let buf = vec![0u8; reply.len()];
        RawPingPong {
            stream,
            request,
            reply,
            buf,
            server,
        }
    }

    /// Round trips for `measure`.
    fn run(&mut self, measure: Duration) -> (u64, Duration) {
        let start = Instant::now();
        let until = start + measure;
        let mut count = 0u64;
        let mut now = start;
        while now < until {
            self.stream.write_all(&self.request).expect("write request");
            self.stream.read_exact(&mut self.buf).expect("read reply");
            count += 1;
            now = Instant::now();
        }
        assert_eq!(self.buf, self.reply, "the reply frame arrived intact");
        (count, now - start)
    }

    fn stop(self) {
        drop(self.stream);
        self.server.join().expect("raw server thread");
    }
}

fn add(a: (u64, Duration), b: (u64, Duration)) -> (u64, Duration) {
    (a.0 + b.0, a.1 + b.1)
}

struct Figures {
    sequential: (u64, Duration),
    in_flight: (u64, Duration),
    raw: (u64, Duration),
}

/// All three figures under one placement, the host side on this thread.
fn run(placement: Placement, timing: Timing, request: Vec<u8>, reply: Vec<u8>) -> Figures {
    placement.pin(Side::Host);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let (addr, equipment) = start_equipment(placement, stop_rx);
    let host_rt = current_thread();
    let host = host_rt.block_on(async {
        let host = driver::start(Settings::new(Mode::Active(addr.to_string())))
            .await
            .expect("active endpoint starts");
        host.link
            .wait_selected(Duration::from_secs(10))
            .await
            .expect("host and equipment select");
        host
    });
    let mut raw = RawPingPong::start(placement, request, reply);

    sequential_on(&host_rt, &host.link, timing.warmup);
    raw.run(timing.warmup);
    let slice = timing.measure / ROUNDS;
    let (mut seq_total, mut raw_total) = ((0, Duration::ZERO), (0, Duration::ZERO));
    for _ in 0..ROUNDS {
        seq_total = add(seq_total, sequential_on(&host_rt, &host.link, slice));
        raw_total = add(raw_total, raw.run(slice));
    }
    raw.stop();

    let par = host_rt.block_on(in_flight(&host.link, timing));
    host_rt.block_on(host.link.separate());
    drop(host);
    drop(host_rt);
    let _ = stop_tx.send(());
    equipment.join().expect("equipment thread");
    Figures {
        sequential: seq_total,
        in_flight: par,
        raw: raw_total,
    }
}

fn line(
    bench: &str,
    placement: Placement,
    count_name: &str,
    (count, elapsed): (u64, Duration),
    extra: &str,
) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "{{\"bench\":\"{bench}\",\"placement\":\"{}\",\"{count_name}\":{count},\"seconds\":{seconds:.6},\"per_second\":{:.1}{extra}}}",
        placement.name(),
        count as f64 / seconds
    );
}

fn placements() -> Vec<Placement> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let wanted =
        std::env::var("HSMS_BENCH_PLACEMENTS").unwrap_or_else(|_| "free,split,same".into());
    wanted
        .split(',')
        .filter_map(|p| match p.trim() {
            "free" => Some(Placement::Free),
            "split" if cores >= 2 => Some(Placement::Split),
            "same" => Some(Placement::Same),
            _ => None,
        })
        .collect()
}

fn main() {
    // `cargo bench` passes --bench; anything else (cargo test --all-targets) is a smoke run.
    let timing = if std::env::args().any(|a| a == "--bench") {
        Timing {
            warmup: Duration::from_millis(500),
            measure: Duration::from_secs(3),
        }
    } else {
        Timing {
            warmup: Duration::from_millis(20),
            measure: Duration::from_millis(60),
        }
    };
    let (request, reply) = frames();
    for placement in placements() {
        // A fresh host thread per placement: a pinned thread's children inherit its mask.
        let (req, rsp) = (request.clone(), reply.clone());
        let figures = std::thread::Builder::new()
            .name("host".into())
            .spawn(move || run(placement, timing, req, rsp))
            .expect("host thread")
            .join()
            .expect("host side");
        line(
            "secsgate_sequential",
            placement,
            "round_trips",
            figures.sequential,
            "",
        );
        line(
            "secsgate_in_flight_64",
            placement,
            "messages",
            figures.in_flight,
            &format!(
                ",\"in_flight\":{IN_FLIGHT},\"counting\":\"each completed S1F1/S1F2 round trip once\""
            ),
        );
        line(
            "raw_tcp_pingpong",
            placement,
            "round_trips",
            figures.raw,
            &format!(
                ",\"request_bytes\":{},\"reply_bytes\":{}",
                request.len(),
                reply.len()
            ),
        );
    }
}
