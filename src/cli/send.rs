//! `secsgate send`: select over HSMS (or open a SECS-I line), send messages, print the
//! replies, separate.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::{EXIT_BAD_INPUT, SendArgs};
use crate::gem;
use crate::hsms::driver::{Mode, Settings};
use crate::link::{Link, LinkError, Received};
use crate::secs1::driver::{self as secs1, Line, SerialSettings};
use crate::secs2::{Message, json, sml};
use crate::transport::Transport;

/// Exit code for a failed exchange: no connection, a timeout, a reject, an S9Fx or SxF0.
pub const EXIT_FAILED: i32 = 1;

/// Reject.req reason "entity not selected".
const NOT_SELECTED: u8 = crate::hsms::protocol::reject_reason::NOT_SELECTED;

/// How long to wait for the link to select again after the peer lost track of the session.
const RESELECT_WAIT: Duration = Duration::from_secs(10);

/// One thing to send.
enum Step {
    Message(Message),
    Linktest,
}

/// Reads messages: `linktest`, a JSON message (text starting with `{`), or SML.
fn parse_steps(text: &str) -> Result<Vec<Step>, String> {
    if text.trim().eq_ignore_ascii_case("linktest") {
        return Ok(vec![Step::Linktest]);
    }
    if text.trim_start().starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let message = json::message_from_json(&value).map_err(|e| format!("JSON {e}"))?;
        return Ok(vec![Step::Message(message)]);
    }
    sml::parse_messages(text)
        .map(|ms| ms.into_iter().map(Step::Message).collect())
        .map_err(|e| format!("SML {e}"))
}

fn seconds(value: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("--{what} must be a positive number of seconds, not {value}"))
}

/// Runs the command and returns the exit code.
pub(super) fn run(args: SendArgs) -> i32 {
    super::init_logging("warn");
    let timers = (
        seconds(args.timeout, "timeout"),
        seconds(args.wait, "wait"),
        seconds(args.t7, "t7"),
        seconds(args.t8, "t8"),
    );
    let (t3, wait, t7, t8) = match timers {
        (Ok(t3), Ok(wait), Ok(t7), Ok(t8)) => (t3, wait, t7, t8),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
            eprintln!("secsgate: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    // Messages on the command line are all checked before connecting.
    let mut steps = Vec::new();
    for text in &args.messages {
        match parse_steps(text) {
            Ok(mut s) => steps.append(&mut s),
            Err(e) => {
                eprintln!("secsgate: {e}");
                return EXIT_BAD_INPUT;
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("secsgate: cannot start the runtime: {e}");
            return EXIT_FAILED;
        }
    };
    runtime.block_on(session(args, steps, Timers { t3, t7, t8 }, wait))
}

/// The timers the command line sets.
struct Timers {
    /// T3, for every transport.
    t3: Duration,
    /// HSMS T7 and T8.
    t7: Duration,
    t8: Duration,
}

/// The transport the arguments name (clap makes sure exactly one of `--connect`, `--serial`
/// and `--secs1-tcp` is given), and the peer's name for messages.
fn transport(args: &SendArgs, timers: &Timers) -> (Transport, String) {
    let secs1_line = match (&args.serial, &args.secs1_tcp) {
        (Some(path), _) => Some(Line::Serial(SerialSettings::new(
            path.clone(),
            args.baud_rate,
        ))),
        (None, Some(addr)) if args.passive => Some(Line::TcpListen(addr.clone())),
        (None, Some(addr)) => Some(Line::TcpConnect(addr.clone())),
        (None, None) => None,
    };
    if let Some(line) = secs1_line {
        let protocol = if args.equipment {
            crate::secs1::protocol::Config::equipment(args.device_id)
        } else {
            crate::secs1::protocol::Config::host(args.device_id)
        };
        let peer = line.to_string();
        let mut settings = secs1::Settings::new(line, protocol);
        settings.name = peer.clone();
        return (Transport::Secs1(settings), peer);
    }
    let connect = args.connect.clone().unwrap_or_default();
    let mode = if args.passive {
        Mode::Passive(connect.clone())
    } else {
        Mode::Active(connect.clone())
    };
    let mut settings = Settings::new(mode);
    settings.protocol.linktest = None;
    settings.protocol.t7 = timers.t7;
    settings.protocol.t8 = timers.t8;
    settings.name = connect.clone();
    (Transport::Hsms(settings), connect)
}

async fn session(args: SendArgs, steps: Vec<Step>, timers: Timers, wait: Duration) -> i32 {
    let (mut transport, peer) = transport(&args, &timers);
    let secs1 = matches!(transport, Transport::Secs1(_));
    transport.set_device_id(args.device_id);
    transport.set_t3(timers.t3);
    let endpoint = match transport.start().await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("secsgate: cannot listen on {peer}: {e}");
            return EXIT_FAILED;
        }
    };
    if let Some(addr) = endpoint.local_addr {
        eprintln!("secsgate: listening on {addr}");
    }
    let link = endpoint.link;
    if let Err(e) = link.wait_selected(wait).await {
        let why = link.last_problem().unwrap_or_else(|| e.to_string());
        let what = if secs1 {
            "line not open"
        } else {
            "not selected"
        };
        eprintln!("secsgate: {what} within {wait:?} ({peer}): {why}");
        return EXIT_FAILED;
    }
    if secs1 {
        eprintln!("secsgate: SECS-I line open ({peer})");
    }
    // Primaries the peer sends meanwhile are shown on stderr, and answered as a GEM host
    // answers them (S1F14 to S1F13, S6F12 to S6F11, SxF0 to what a host does not handle),
    // so a tool waiting for its reply does not run into T3. Replies are queued without
    // waiting: this task never holds up the connection.
    let mut incoming = endpoint.incoming;
    let answering = link.clone();
    tokio::spawn(async move {
        let host = gem::Host::new(
            gem::HostConfig::default(),
            std::time::Instant::now(),
            std::time::SystemTime::now(),
        );
        while let Some(received) = incoming.recv().await {
            match received {
                Received::Message(m) => {
                    eprintln!("secsgate: received {m}");
                    if let Some(reply) = host.default_reply(&m, std::time::Instant::now()) {
                        eprintln!("secsgate: answered {reply}");
                        let _ = answering.post_reply(reply).await;
                    }
                }
                Received::Malformed {
                    stream_function,
                    error,
                    ..
                } => eprintln!("secsgate: received malformed {stream_function}: {error}"),
            }
        }
    });
    let as_json = args.json;
    let run_steps = |steps: Vec<Step>| {
        let link = link.clone();
        async move {
            for step in steps {
                let code = exchange(&link, step, as_json).await;
                if code != 0 {
                    return code;
                }
            }
            0
        }
    };
    let code = if args.messages.is_empty() {
        from_stdin(&run_steps).await
    } else {
        run_steps(steps).await
    };
    link.separate().await;
    code
}

/// Reads messages from stdin as they come. A message ends at its `.`; one written without
/// the `.` ends where the next line starts something other than an item (`<`, `>`), or at the
/// end of the input.
async fn from_stdin<F, Fut>(run_steps: &F) -> i32
where
    F: Fn(Vec<Step>) -> Fut,
    Fut: std::future::Future<Output = i32>,
{
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut pending = String::new();
    let mut first_line = 1usize;
    let mut line_no = 0usize;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                eprintln!("secsgate: cannot read standard input: {e}");
                return EXIT_FAILED;
            }
        };
        line_no += 1;
        let continues = line.trim_start().starts_with(['<', '>', '.']);
        if !pending.trim().is_empty()
            && !continues
            && let Ok(steps) = parse_steps(&pending)
        {
            // The pending message was complete without a '.': send it first.
            pending.clear();
            let code = run_steps(steps).await;
            if code != 0 {
                return code;
            }
        }
        if pending.trim().is_empty() {
            pending.clear();
            first_line = line_no;
        }
        pending.push_str(&line);
        pending.push('\n');
        let trimmed = pending.trim_end();
        let ended = trimmed.ends_with('.')
            || trimmed.ends_with('}')
            || trimmed.eq_ignore_ascii_case("linktest");
        if !ended {
            continue;
        }
        match parse_steps(&pending) {
            Ok(steps) => {
                pending.clear();
                let code = run_steps(steps).await;
                if code != 0 {
                    return code;
                }
            }
            // Not complete yet: a list still open, a string not closed, JSON not ended.
            Err(e)
                if e.contains("end of the text")
                    || e.contains("unterminated")
                    || e.contains("EOF") => {}
            Err(e) => {
                eprintln!("secsgate: stdin message starting at line {first_line}: {e}");
                return EXIT_BAD_INPUT;
            }
        }
    }
    if pending.trim().is_empty() {
        return 0;
    }
    match parse_steps(&pending) {
        Ok(steps) => run_steps(steps).await,
        Err(e) => {
            eprintln!("secsgate: stdin message starting at line {first_line}: {e}");
            EXIT_BAD_INPUT
        }
    }
}

/// Sends one step and prints its answer; returns the exit code so far.
async fn exchange(link: &Link, step: Step, as_json: bool) -> i32 {
    let message = match step {
        Step::Linktest => {
            return match link.linktest().await {
                Ok(()) => {
                    println!("Linktest.rsp");
                    0
                }
                Err(e) => {
                    eprintln!("secsgate: linktest failed: {e}");
                    EXIT_FAILED
                }
            };
        }
        Step::Message(m) => m,
    };
    let sf = message.stream_function();
    if !(message.w_bit && sf.is_primary()) {
        return match link.send(message).await {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("secsgate: cannot send {sf}: {e}");
                EXIT_FAILED
            }
        };
    }
    let mut result = link.request(message.clone()).await;
    if let Err(LinkError::Rejected {
        reason: NOT_SELECTED,
        ..
    }) = result
    {
        // The peer lost track of the session; the link selects again: send once more.
        eprintln!(
            "secsgate: the peer rejected {sf} as not selected; selecting again and resending"
        );
        result = match link.wait_selected(RESELECT_WAIT).await {
            Ok(()) => link.request(message).await,
            Err(e) => Err(e),
        };
    }
    match result {
        Ok(reply) => {
            if as_json {
                println!("{}", json::message_to_json(&reply));
            } else {
                println!("{reply:#}");
            }
            if reply.function == 0 {
                eprintln!(
                    "secsgate: {sf} was aborted by the peer (S{}F0)",
                    reply.stream
                );
                return EXIT_FAILED;
            }
            0
        }
        Err(e) => {
            eprintln!("secsgate: {e}");
            EXIT_FAILED
        }
    }
}
