//! SECS-I round-trip benchmark (`cargo bench --bench secs1`; `scripts/bench.sh secs1` prints
//! it beside secsgem 0.3.0's figure and the line's own limit).
//!
//! A secsgate SECS-I host sends `S1F1 W` one at a time (SECS-I is half duplex) to the
//! simulator (`secsgate sim`'s equipment, in process) and waits for its `S1F2`. The two ends
//! talk over:
//!
//! 1. `paced_9600`, `paced_115200`: two pseudo-terminals joined by a relay in this process
//!    that delivers each byte only after the time the line needs to carry it (10 bits a
//!    character, 8N1): a serial cable at that baud rate, as a pty pair alone does not pace.
//!    The relay counts the bytes each way, so the line's limit (round trips/s if the line
//!    were never idle: baud / 10 / bytes per round trip) is printed from what really crossed.
//! 2. `pty`: the same relay without pacing: the protocol's own cost per round trip.
//! 3. `tcp`: SECS-I over TCP on 127.0.0.1.
//!
//! The secsgem 0.3.0 figure (`python/bench/secsgem_secs1.py`, run when `SECS1_BENCH_PYTHON`
//! names a Python with secsgem, as `scripts/bench.sh` does): its host on an unpaced cable made
//! by the same relay, against the same simulator.
//!
//! Stdout carries one JSON object per figure. Run without `--bench` (as `cargo test
//! --all-targets` does) it only checks that each figure works, with a few round trips.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secsgate::link::{Endpoint, Link};
use secsgate::secs1::driver::{self as secs1, Line, SerialSettings};
use secsgate::secs1::protocol::Config;
use secsgate::secs2::sml::parse_message;
use secsgate::sim::{SimConfig, Simulator};
use secsgate::transport::Transport;

/// One pseudo-terminal: the master this process relays through, and the device path an
/// endpoint opens.
struct Pty {
    master: File,
    path: String,
    /// Held open so the master never reads EIO while the endpoint reopens the device.
    _slave: OwnedFd,
}

fn open_pty() -> Pty {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    // SAFETY: openpty writes two descriptors it opened; name, termios and winsize may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are fresh and owned by nobody else.
    let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // Raw mode on the device side, so the line discipline neither echoes nor edits.
    // SAFETY: termios calls on a descriptor this function owns.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        libc::tcgetattr(slave.as_raw_fd(), &mut t);
        libc::cfmakeraw(&mut t);
        libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t);
    }
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: ptsname_r writes a NUL-terminated name into the buffer it is given.
    let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
    assert_eq!(rc, 0, "ptsname_r");
    // SAFETY: ptsname_r succeeded, so the buffer holds a C string.
    let path = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Pty {
        master,
        path,
        _slave: slave,
    }
}

/// Two ptys joined as a cable: what one end's device writes comes out of the other's, after
/// the time the bytes take at `baud` (no pacing when `None`). Counts the bytes relayed.
struct Cable {
    a: String,
    b: String,
    bytes: Arc<AtomicU64>,
    /// The device sides, open while the cable lives.
    _devices: [OwnedFd; 2],
}

fn cable(baud: Option<u32>) -> Cable {
    let (pa, pb) = (open_pty(), open_pty());
    let bytes = Arc::new(AtomicU64::new(0));
    let (a, b) = (pa.path.clone(), pb.path.clone());
    let (ra, rb) = (
        pa.master.try_clone().unwrap(),
        pb.master.try_clone().unwrap(),
    );
    relay(ra, pb.master, baud, bytes.clone());
    relay(rb, pa.master, baud, bytes.clone());
    Cable {
        a,
        b,
        bytes,
        _devices: [pa._slave, pb._slave],
    }
}

/// Copies `from` to `to` on a thread, each chunk delivered once the line has carried it.
fn relay(mut from: File, mut to: File, baud: Option<u32>, bytes: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut line_free = Instant::now();
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            bytes.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(baud) = baud {
                // 10 bits a character: start, 8 data, stop.
                let carry = Duration::from_secs_f64(n as f64 * 10.0 / f64::from(baud));
                line_free = line_free.max(Instant::now()) + carry;
                let wait = line_free.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
}

fn settings(line: Line, equipment: bool) -> secs1::Settings {
    let protocol = if equipment {
        Config::equipment(0)
    } else {
        Config::host(0)
    };
    let mut s = secs1::Settings::new(line, protocol);
    s.reopen_min = Duration::from_millis(20);
    s
}

fn serial(path: &str, baud: u32) -> Line {
    Line::Serial(SerialSettings::new(path, baud))
}

async fn simulator(line: Line, dir: &std::path::Path) -> Simulator {
    Simulator::start(
        "bench".into(),
        SimConfig::default_config(),
        Transport::Secs1(settings(line, true)),
        dir.to_path_buf(),
    )
    .await
    .expect("simulator starts")
}

async fn host(line: Line) -> (Link, tokio::task::JoinHandle<()>) {
    let Endpoint { link, incoming, .. } = secs1::start(settings(line, false)).await.unwrap();
    link.wait_selected(Duration::from_secs(10)).await.unwrap();
    // Answer the simulator's own primaries (its S1F13) as a host does.
    let replier = link.clone();
    let answering = tokio::spawn(async move {
        let mut incoming = incoming;
        let host = secsgate::gem::Host::new(
            secsgate::gem::HostConfig::default(),
            Instant::now(),
            std::time::SystemTime::now(),
        );
        while let Some(secsgate::link::Received::Message(m)) = incoming.recv().await {
            if let Some(reply) = host.default_reply(&m, Instant::now()) {
                let _ = replier.post_reply(reply).await;
            }
        }
    });
    // E30: the equipment answers nothing but S1F13 until communication is established.
    let reply = link
        .request(parse_message("S1F13 W <L>").unwrap())
        .await
        .expect("S1F14");
    assert_eq!(reply.function, 14);
    (link, answering)
}

/// Sequential S1F1 round trips for `measure` (or `count` when quick): (round trips/s,
/// round trips).
async fn round_trips(link: &Link, measure: Duration, count: Option<u64>) -> (f64, u64) {
    let s1f1 = parse_message("S1F1 W").unwrap();
    // Warm-up: the simulator's S1F13 and our first exchange are out of the way.
    link.request(s1f1.clone()).await.expect("S1F2");
    let started = Instant::now();
    let mut done = 0u64;
    while count.map_or(started.elapsed() < measure, |c| done < c) {
        let reply = link.request(s1f1.clone()).await.expect("S1F2");
        assert_eq!(reply.function, 2);
        done += 1;
    }
    (done as f64 / started.elapsed().as_secs_f64(), done)
}

fn print(bench: &str, rate: f64, trips: u64, bytes: Option<u64>, baud: Option<u32>) {
    let mut line =
        format!(r#"{{"bench":"{bench}","round_trips_per_second":{rate:.1},"round_trips":{trips}"#);
    if let Some(bytes) = bytes {
        line.push_str(&format!(r#","bytes_per_round_trip":{bytes}"#));
    }
    if let Some(baud) = baud {
        line.push_str(&format!(r#","baud":{baud}"#));
    }
    line.push('}');
    println!("{line}");
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let measure = Duration::from_secs(if quick { 0 } else { 5 });
    let count = quick.then_some(3);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for baud in [Some(9600), Some(115_200), None] {
            let cable = cable(baud);
            let nominal = baud.unwrap_or(115_200);
            let sim = simulator(serial(&cable.a, nominal), dir.path()).await;
            let (link, answering) = host(serial(&cable.b, nominal)).await;
            // Bytes of one round trip, counted on the line.
            link.request(parse_message("S1F1 W").unwrap())
                .await
                .unwrap();
            let before = cable.bytes.load(Ordering::Relaxed);
            link.request(parse_message("S1F1 W").unwrap())
                .await
                .unwrap();
            let per_trip = cable.bytes.load(Ordering::Relaxed) - before;
            let (rate, trips) = round_trips(&link, measure, count).await;
            let name = match baud {
                Some(b) => format!("paced_{b}"),
                None => "pty".into(),
            };
            print(&name, rate, trips, Some(per_trip), baud);
            link.shutdown().await;
            answering.abort();
            sim.shutdown().await;
        }
        // SECS-I over TCP.
        let sim = simulator(Line::TcpListen("127.0.0.1:0".into()), dir.path()).await;
        let addr = sim.local_addr().unwrap().to_string();
        let (link, answering) = host(Line::TcpConnect(addr)).await;
        let (rate, trips) = round_trips(&link, measure, count).await;
        print("tcp", rate, trips, None, None);
        link.shutdown().await;
        answering.abort();
        sim.shutdown().await;
        // The baseline's pty: the simulator listens on one end; the Python host opens the
        // other (its path printed for scripts/bench.sh), which signals its end on stdin.
        if let Ok(python) = std::env::var("SECS1_BENCH_PYTHON") {
            let cable = cable(None);
            let sim = simulator(serial(&cable.a, 115_200), dir.path()).await;
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/bench/secsgem_secs1.py");
            let (path, seconds) = (cable.b.clone(), measure.as_secs_f64().to_string());
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new(python)
                    .arg(script)
                    .arg(path)
                    .arg(seconds)
                    .stderr(std::process::Stdio::inherit())
                    .output()
            })
            .await
            .unwrap()
            .expect("the baseline runs");
            print!("{}", String::from_utf8_lossy(&out.stdout));
            sim.shutdown().await;
        }
    });
}
