//! Burst benchmark (`cargo bench --bench burst`; `scripts/bench.sh burst` prints it beside the
//! 64-in-flight figure of the HSMS benchmark from the same run).
//!
//! The `secsgate` binary runs as its own process, as a user runs it; this program plays the
//! peer over 127.0.0.1 with a plain socket and pipelines 100,000 W-bit primaries without
//! waiting for any reply, then reads every reply, checking that each is there and in order:
//!
//! 1. `sim_s1f1`: S1F1 W to `secsgate sim`, answered S1F2.
//! 2. `gateway_plain`: S6F11 W to `secsgate run` (this program is the equipment), answered with
//!    the GEM host's default S6F12.
//! 3. `gateway_realtime`: the same with an `onSecsGemRealtimeUpdate` that reads the payload.
//! 4. `gateway_custom`: the same with a custom response handler that answers each S6F11 with
//!    `sendResponse`.
//!
//! With `BURST_CASES=store` it measures the message store instead: case 2 with `[store]
//! enabled = false` and with the store on, in turns (best of 3; `STORE_ROUNDS` changes it),
//! the CPU time per message of each, the same two with the S6F11 sent at 50,000/s (the
//! target's case: throughput and CPU at that offered rate), and the database bytes per stored
//! S6F11.
//!
//! Each line of stdout is one JSON object: messages/s from the first byte sent to the last
//! reply read, and the secsgate process's peak RSS (VmHWM) at the end. The binary is
//! `SECSGATE_BIN` or `target/release/secsgate`. Run without `--bench` (as `cargo test
//! --all-targets` does) it does nothing, since it needs the release binary.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secsgate::hsms::frame::{self, Header, SType};
use secsgate::secs2::{Item, Message, StreamFunction};

const BURST: u32 = 100_000;

/// The rate the store's target names: a tool offering 50,000 S6F11/s.
const PACED: f64 = 50_000.0;

fn sf(stream: u8, function: u8) -> StreamFunction {
    StreamFunction::new(stream, function).expect("valid S/F")
}

/// A process stopped (SIGTERM, then waited for) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        // SIGTERM to the child's own PID: it separates and exits as on Ctrl-C.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

impl Process {
    /// CPU time (user + system) the process has used, in seconds (clock ticks of 1/100 s).
    fn cpu_seconds(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/stat", self.0.id()))
            .ok()
            .and_then(|s| {
                // Fields after the command name (which is in parentheses): utime is the 12th.
                let rest = s.rsplit_once(") ")?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                let utime: f64 = f.get(11)?.parse().ok()?;
                let stime: f64 = f.get(12)?.parse().ok()?;
                Some((utime + stime) / 100.0)
            })
            .unwrap_or(0.0)
    }

    fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

fn binary() -> PathBuf {
    std::env::var_os("SECSGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/secsgate"))
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn read_frame(rd: &mut impl Read) -> std::io::Result<(Header, Option<Message>)> {
    let mut length = [0u8; 4];
    rd.read_exact(&mut length)?;
    let mut bytes = vec![0u8; u32::from_be_bytes(length) as usize + 4];
    bytes[..4].copy_from_slice(&length);
    rd.read_exact(&mut bytes[4..])?;
    let (header, body) = frame::split_frame(&bytes).map_err(std::io::Error::other)?;
    if header.stype != SType::Data {
        return Ok((header, None));
    }
    let body = Item::decode_body(body, &Default::default()).map_err(std::io::Error::other)?;
    Ok((header, Some(header.into_message(body))))
}

fn write_message(wr: &mut TcpStream, m: &Message) {
    let mut out = Vec::new();
    frame::encode_message(m, &mut out).expect("encode");
    wr.write_all(&out).expect("write");
}

/// Reads until the next data message.
fn next_data(rd: &mut impl Read) -> Message {
    loop {
        if let (_, Some(m)) = read_frame(rd).expect("read") {
            return m;
        }
    }
}

/// Establishes communication: sends S1F13 and answers the peer's own S1F13 until S1F14 comes.
fn establish(rd: &mut impl Read, wr: &mut TcpStream) {
    let mut s1f13 = Message::new(sf(1, 13), true, Some(Item::L(vec![])));
    s1f13.system_bytes = 0xFFFF_0002;
    write_message(wr, &s1f13);
    loop {
        let m = next_data(rd);
        if m.stream_function() == sf(1, 13) {
            let ack = Item::L(vec![Item::B(vec![0]), Item::L(vec![])]);
            write_message(wr, &m.reply_with(Some(ack)));
        } else if m.stream_function() == sf(1, 14) {
            return;
        }
    }
}

/// Pipelines the burst from a thread while this one reads the replies; returns messages/s.
/// With `pace` (messages/s) the messages leave on a schedule at that rate instead of all at
/// once: the rate a tool offers, which the other side either keeps up with or not.
fn burst(
    rd: &mut impl Read,
    wr: &TcpStream,
    make: fn(u32) -> Message,
    reply_sf: StreamFunction,
    pace: Option<f64>,
) -> f64 {
    let mut wr = wr.try_clone().expect("clone");
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut out = Vec::with_capacity(1 << 20);
        for i in 1..=BURST {
            if let Some(rate) = pace {
                // Message i is due at i / rate; what is due leaves in one write, and the
                // writer sleeps until the next is due (at most one write a millisecond).
                let due = started + Duration::from_secs_f64(f64::from(i) / rate);
                let now = Instant::now();
                if due > now + Duration::from_millis(1) {
                    wr.write_all(&out).expect("write");
                    out.clear();
                    std::thread::sleep(due - now);
                }
            }
            frame::encode_message(&make(i), &mut out).expect("encode");
            if out.len() >= 1 << 20 {
                wr.write_all(&out).expect("write");
                out.clear();
            }
        }
        wr.write_all(&out).expect("write");
    });
    let mut expected = 1;
    while expected <= BURST {
        let m = next_data(rd);
        if m.stream_function() != reply_sf {
            continue;
        }
        assert_eq!(m.system_bytes, expected, "replies in order");
        expected += 1;
    }
    let elapsed = started.elapsed();
    writer.join().expect("writer");
    f64::from(BURST) / elapsed.as_secs_f64()
}

fn connect(port: u16) -> TcpStream {
    for _ in 0..500 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("secsgate did not listen on port {port}");
}

fn select(rd: &mut impl Read, wr: &mut TcpStream) {
    let mut out = Vec::new();
    frame::encode_control(&Header::control(SType::SelectReq, 0xFFFF_0001), &mut out);
    wr.write_all(&out).expect("write");
    let (h, _) = read_frame(rd).expect("Select.rsp");
    assert_eq!((h.stype, h.byte3), (SType::SelectRsp, 0));
}

fn print(bench: &str, rate: f64, rss: u64) {
    println!(
        r#"{{"bench":"{bench}","messages":{BURST},"per_second":{rate:.0},"peak_rss_kib":{rss}}}"#
    );
}

fn sim_s1f1() {
    let port = free_port();
    let spool = tempfile::tempdir().expect("tempdir");
    let process = Process(
        Command::new(binary())
            .args(["sim", "--port", &port.to_string(), "--spool-dir"])
            .arg(spool.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start secsgate sim"),
    );
    let mut wr = connect(port);
    wr.set_nodelay(true).expect("nodelay");
    let mut rd = BufReader::with_capacity(1 << 16, wr.try_clone().expect("clone"));
    select(&mut rd, &mut wr);
    establish(&mut rd, &mut wr);
    let rate = burst(
        &mut rd,
        &wr,
        |i| {
            let mut m = Message::new(sf(1, 1), true, None);
            m.system_bytes = i;
            m
        },
        sf(1, 2),
        None,
    );
    print("sim_s1f1", rate, process.peak_rss_kib());
}

fn s6f11(i: u32) -> Message {
    let body = Item::L(vec![
        Item::U4(vec![i]),
        Item::U4(vec![100]),
        Item::L(vec![Item::L(vec![
            Item::U4(vec![9000]),
            Item::L(vec![Item::A(b"LOT-1".to_vec()), Item::U4(vec![i])]),
        ])]),
    ]);
    let mut m = Message::new(sf(6, 11), true, Some(body));
    m.system_bytes = i;
    m
}

fn project(dir: &Path, port: u16, extra: &str, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir.join("handlers")).expect("mkdir");
    std::fs::write(
        dir.join("project.toml"),
        format!(
            "[gateway]\nworkers = 2\nhandler_timeout = 30\ncustom_response_timeout = 60\nstartup_wait = 1\n\n\
             [[equipment]]\nname = \"Tool1\"\nport = {port}\ntimers = {{ t3 = 60, t5 = 0.2, linktest = 0 }}\n{extra}\n"
        ),
    )
    .expect("write project.toml");
    for (path, text) in files {
        std::fs::write(dir.join(path), text).expect("write handler");
    }
}

fn gateway(bench: &str, extra: &str, files: &[(&str, &str)]) {
    let (rate, rss, _cpu, _dir) = gateway_run(extra, files, None);
    print(bench, rate, rss);
}

/// Runs `secsgate run` on a project with `extra` settings, bursts S6F11 W at it and stops it
/// (SIGTERM: the message store flushes); returns messages/s, peak RSS, the CPU seconds the
/// burst took and the project folder. `pace`: see [`burst`].
fn gateway_run(
    extra: &str,
    files: &[(&str, &str)],
    pace: Option<f64>,
) -> (f64, u64, f64, tempfile::TempDir) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    project(dir.path(), port, extra, files);
    let process = Process(
        Command::new(binary())
            .args(["run", "--no-reload", "--no-web"])
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start secsgate run"),
    );
    let (mut wr, _) = listener.accept().expect("the gateway connects");
    wr.set_nodelay(true).expect("nodelay");
    let mut rd = BufReader::with_capacity(1 << 16, wr.try_clone().expect("clone"));
    let (h, _) = read_frame(&mut rd).expect("Select.req");
    assert_eq!(h.stype, SType::SelectReq);
    let mut out = Vec::new();
    frame::encode_control(&Header::control(SType::SelectRsp, h.system_bytes), &mut out);
    wr.write_all(&out).expect("write");
    let s1f13 = next_data(&mut rd);
    assert_eq!(s1f13.stream_function(), sf(1, 13));
    let ack = Item::L(vec![Item::B(vec![0]), Item::L(vec![])]);
    write_message(&mut wr, &s1f13.reply_with(Some(ack)));
    let cpu_before = process.cpu_seconds();
    let rate = burst(&mut rd, &wr, s6f11, sf(6, 12), pace);
    // At the last reply (the store's writer may have up to a queue's worth left to write).
    let cpu = process.cpu_seconds() - cpu_before;
    let rss = process.peak_rss_kib();
    drop(process);
    (rate, rss, cpu, dir)
}

/// The message store's cost: the same burst with `[store] enabled = false` and with the
/// store on (the default), in turns, best of 3 each; and the database bytes per stored S6F11
/// (file + WAL after a clean stop, divided by the S6F11 rows).
fn store() {
    let mut best = [0f64; 2];
    let mut rss = [0u64; 2];
    let mut cpu = [f64::MAX; 2];
    let mut bytes_per = 0f64;
    let rounds = std::env::var("STORE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    for _ in 0..rounds {
        for (i, extra) in ["[store]\nenabled = false\n", ""].into_iter().enumerate() {
            let (rate, peak, seconds, dir) = gateway_run(extra, &[], None);
            cpu[i] = cpu[i].min(seconds);
            if rate > best[i] {
                best[i] = rate;
                rss[i] = peak;
            }
            if i == 1 {
                let db = dir.path().join("data/secsgate.sqlite");
                let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
                let total = size(&db) + size(&db.with_extension("sqlite-wal"));
                let rows: u64 = rusqlite::Connection::open(&db)
                    .and_then(|c| {
                        c.query_row(
                            "SELECT COUNT(*) FROM SECSGEM_Messages WHERE StreamFunction = 'S6F11'",
                            [],
                            |r| r.get(0),
                        )
                    })
                    .expect("count the stored S6F11");
                assert!(rows >= u64::from(BURST), "{rows} S6F11 stored of {BURST}");
                // Each S6F11 row comes with its S6F12 row: bytes per S6F11 include its reply.
                bytes_per = total as f64 / rows as f64;
            }
        }
    }
    print("store_off", best[0], rss[0]);
    print("store_on", best[1], rss[1]);
    // The target's case: a tool offering 50,000 S6F11/s. Throughput (messages/s from the
    // first sent to the last reply) and CPU, store off and on, in turns, best of the rounds.
    let mut paced = [0f64; 2];
    let mut paced_cpu = [f64::MAX; 2];
    for _ in 0..rounds {
        for (i, extra) in ["[store]\nenabled = false\n", ""].into_iter().enumerate() {
            let (rate, _, seconds, _dir) = gateway_run(extra, &[], Some(PACED));
            paced[i] = paced[i].max(rate);
            paced_cpu[i] = paced_cpu[i].min(seconds);
        }
    }
    for (i, name) in ["paced_store_off", "paced_store_on"]
        .into_iter()
        .enumerate()
    {
        let us = paced_cpu[i] * 1e6 / f64::from(BURST);
        println!(
            r#"{{"bench":"{name}","offered_per_second":{PACED:.0},"per_second":{:.0},"cpu_us_per_message":{us:.2}}}"#,
            paced[i]
        );
    }
    println!(r#"{{"bench":"store_bytes_per_s6f11","bytes":{bytes_per:.0}}}"#);
    for (i, name) in ["store_off", "store_on"].into_iter().enumerate() {
        let us = cpu[i] * 1e6 / f64::from(BURST);
        println!(r#"{{"bench":"{name}_cpu","cpu_us_per_message":{us:.2}}}"#);
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if std::env::var("BURST_CASES").as_deref() == Ok("store") {
        store();
        return;
    }
    sim_s1f1();
    gateway("gateway_plain", "", &[]);
    gateway(
        "gateway_realtime",
        "realtime = [\"S6F11\"]",
        &[(
            "handlers/onSecsGemRealtimeUpdate.py",
            "equipment = payload['Equipment']\nsf = payload['StreamFunction']\ntxid = payload['TxID']\n",
        )],
    );
    gateway(
        "gateway_custom",
        "[[equipment.custom_response]]\nstream_function = \"S6F11\"\nhandler = \"onEvent\"\n",
        &[(
            "handlers/onEvent.py",
            "system.secsgem.sendResponse(payload['TxID'], payload['SystemBytes'], 'S6F12', {'format': 'B', 'value': 0}, payload['Equipment'])\n",
        )],
    );
}
