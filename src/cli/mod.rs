//! The `secsgate` command line.
//!
//! - `secsgate sml encode [TEXT]`: SML (or JSON with `--json`) to hex, of the item or, with
//!   `--frame`, of the whole HSMS frame.
//! - `secsgate sml decode [HEX]`: hex of an item (or, with `--frame`, of an HSMS frame) to
//!   SML, or to JSON with `--json`.
//!
//! - `secsgate send --connect HOST:PORT [--passive] 'S1F1 W' ...`: select, send each message
//!   (or each one read from stdin), print each reply, separate.
//!
//! - `secsgate log DIR [--equipment E] [--sf S6F11] [--direction sent|received]
//!   [--common-id ID] [--since 10m] [--until T] [--limit N] [--json] [--follow]`: the
//!   messages in the project's message store.
//!
//! Bad input exits with code 2 and one line on stderr saying where and why; a failed
//! exchange (connection, timeout, reject, S9Fx) exits with code 1.

use std::io::Read;

use clap::{Args, Parser, Subcommand};

use crate::hsms::frame::{self, SType};
use crate::secs2::{DecodeLimits, Item, Message, json, sml};

/// Exit code for input the command could not use.
pub const EXIT_BAD_INPUT: i32 = 2;

#[derive(Parser, Debug)]
#[command(name = "secsgate", version, about = "SECS/GEM gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert between SML, the JSON form and SECS-II bytes.
    #[command(subcommand)]
    Sml(SmlCommand),
    /// Connect over HSMS, send messages and print the replies.
    Send(SendArgs),
    /// Run a simulated GEM equipment on a passive HSMS port.
    Sim(sim::SimArgs),
    /// Run the gateway for a project folder (project.toml, handlers/, lib/).
    Run {
        /// The project folder.
        dir: std::path::PathBuf,
        /// Do not watch the project for script changes.
        #[arg(long)]
        no_reload: bool,
        /// Do not serve the web console.
        #[arg(long)]
        no_web: bool,
        /// Serve the web console on this address instead of [web] address (port 0 picks a
        /// free port).
        #[arg(long, value_name = "ADDRESS", conflicts_with = "no_web")]
        web: Option<String>,
    },
    /// Print the messages the gateway stored (filters; SML or --json; --follow).
    Log(log::LogArgs),
    /// Validate a project folder: configuration and scripts; lists every problem.
    Check {
        /// The project folder.
        dir: std::path::PathBuf,
    },
    /// Print the realtime tag tree of a project's gateway.
    Tags {
        /// The project folder.
        dir: std::path::PathBuf,
        /// Print the snapshot as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("peer").required(true).args(["connect", "serial", "secs1_tcp"])))]
struct SendArgs {
    /// HSMS: HOST:PORT to connect to (or, with --passive, to listen on; port 0 picks a free
    /// one).
    #[arg(long, value_name = "HOST:PORT")]
    connect: Option<String>,
    /// SECS-I over this serial port (a device such as /dev/ttyUSB0, or a pty).
    #[arg(long, value_name = "PATH")]
    serial: Option<String>,
    /// SECS-I over TCP: HOST:PORT to connect to (or, with --passive, to listen on).
    #[arg(long, value_name = "HOST:PORT")]
    secs1_tcp: Option<String>,
    /// Baud rate of --serial (8 data bits, no parity, 1 stop bit).
    #[arg(long, default_value_t = 9600)]
    baud_rate: u32,
    /// SECS-I: speak as the equipment (R-bit 1, master of the line) instead of the host.
    #[arg(long)]
    equipment: bool,
    /// Listen and wait for the peer to connect, instead of connecting.
    #[arg(long)]
    passive: bool,
    /// Device ID (HSMS session ID) of the data messages sent.
    #[arg(long, default_value_t = 0)]
    device_id: u16,
    /// Seconds to wait for each reply (T3).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Seconds to wait for the connection to be selected.
    #[arg(long, default_value_t = 30.0)]
    wait: f64,
    /// Print replies in the JSON form, one line each.
    #[arg(long)]
    json: bool,
    /// Messages in SML, e.g. 'S1F3 W <L [1] <U4 1>> .', in the JSON form (starting with `{`),
    /// or the word `linktest`. Read from stdin (one after another, each ending at its '.' or
    /// its line) when absent.
    messages: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum SmlCommand {
    /// Encode SML (or JSON) to lower-case hex.
    Encode(EncodeArgs),
    /// Decode hex to SML (or JSON).
    Decode(DecodeArgs),
}

#[derive(Args, Debug)]
struct EncodeArgs {
    /// SML text: an item (`<U4 1>`) or a message (`S1F3 W <L [1] <U4 1>> .`). Read from stdin
    /// when absent.
    text: Option<String>,
    /// Read the JSON form instead of SML: a message `{"header":…,"body":…}` or a bare body.
    #[arg(long)]
    json: bool,
    /// Print the whole HSMS frame (length, header, body) instead of the item alone.
    #[arg(long)]
    frame: bool,
    /// Device ID written in the frame header.
    #[arg(long, default_value_t = 0)]
    device_id: u16,
    /// System bytes written in the frame header.
    #[arg(long, default_value_t = 1)]
    system_bytes: u32,
}

#[derive(Args, Debug)]
struct DecodeArgs {
    /// Hex bytes (spaces and a 0x prefix allowed). Read from stdin when absent.
    hex: Option<String>,
    /// Print the JSON form instead of SML.
    #[arg(long)]
    json: bool,
    /// The hex is a whole HSMS frame (length, header, body), not an item.
    #[arg(long)]
    frame: bool,
    /// Print on one line.
    #[arg(long)]
    compact: bool,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sml(SmlCommand::Encode(args)) => encode(args),
        Command::Sml(SmlCommand::Decode(args)) => decode(args),
        Command::Send(args) => return send::run(args),
        Command::Sim(args) => return sim::run(args),
        Command::Run {
            dir,
            no_reload,
            no_web,
            web,
        } => {
            return run::run(
                &dir,
                !no_reload,
                run::WebChoice {
                    off: no_web,
                    address: web,
                },
            );
        }
        Command::Check { dir } => return run::check(&dir),
        Command::Log(args) => return log::run(args),
        Command::Tags { dir, json } => return tags::run(&dir, json),
    };
    match result {
        Ok(out) => {
            println!("{out}");
            0
        }
        Err(message) => {
            eprintln!("secsgate: {message}");
            EXIT_BAD_INPUT
        }
    }
}

mod log;
mod run;
mod send;
mod sim;
mod tags;

/// The multi-threaded runtime the long-running commands (`run`, `sim`) use: tokio's default
/// worker count (one per core). Storage and Python run on threads of their own.
fn server_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Each running simulator holds a blocking-pool thread for its life (its spool writes
        // are synchronous); tokio's default of 512 would leave the 513th simulator waiting.
        .max_blocking_threads(crate::sim::MAX_SIMULATORS + 512)
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Logs to stderr through `tracing`; `RUST_LOG` overrides the default level.
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn argument_or_stdin(arg: Option<String>) -> Result<String, String> {
    match arg {
        Some(text) => Ok(text),
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            Ok(text)
        }
    }
}

/// A message, or a bare item, from the encode command's input.
enum Parsed {
    Message(Message),
    Item(Option<Item>),
}

fn encode(args: EncodeArgs) -> Result<String, String> {
    let text = argument_or_stdin(args.text)?;
    let parsed = if args.json {
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))?;
        if value.get("header").is_some() {
            Parsed::Message(json::message_from_json(&value).map_err(|e| format!("JSON {e}"))?)
        } else {
            Parsed::Item(json::body_from_json(&value).map_err(|e| format!("JSON {e}"))?)
        }
    } else {
        match sml::parse_message_or_item(&text).map_err(|e| format!("SML {e}"))? {
            sml::Either::Message(m) => Parsed::Message(m),
            sml::Either::Item(i) => Parsed::Item(Some(i)),
        }
    };
    let mut buf = Vec::new();
    match (parsed, args.frame) {
        (Parsed::Message(mut message), true) => {
            message.device_id = args.device_id;
            message.system_bytes = args.system_bytes;
            frame::encode_message(&message, &mut buf).map_err(|e| e.to_string())?;
        }
        (Parsed::Item(_), true) => {
            return Err("--frame needs a whole message (starting with SxFy), not an item".into());
        }
        (Parsed::Message(Message { body, .. }), false) | (Parsed::Item(body), false) => {
            if let Some(item) = body {
                item.encode_into(&mut buf).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(to_hex(&buf))
}

fn decode(args: DecodeArgs) -> Result<String, String> {
    let text = argument_or_stdin(args.hex)?;
    let bytes = from_hex(&text)?;
    let limits = DecodeLimits::default();
    if args.frame {
        let (header, body) = frame::split_frame(&bytes).map_err(|e| format!("bad frame: {e}"))?;
        if header.stype != SType::Data {
            if args.json {
                return Err(format!(
                    "{} is a control message and has no JSON form",
                    describe_control(&header)
                ));
            }
            return Ok(describe_control(&header));
        }
        let body = Item::decode_body(body, &limits).map_err(|e| {
            format!(
                "{e} (counting from the first body byte, frame byte {})",
                14 + e.offset
            )
        })?;
        let message = header.into_message(body);
        return Ok(if args.json {
            render_json(&json::message_to_json(&message), args.compact)
        } else if args.compact {
            format!(
                "{message} // device {} system 0x{:08x}",
                message.device_id, message.system_bytes
            )
        } else {
            format!(
                "// device {} system 0x{:08x}\n{message:#}",
                message.device_id, message.system_bytes
            )
        });
    }
    let body = Item::decode_body(&bytes, &limits).map_err(|e| e.to_string())?;
    Ok(match (body, args.json) {
        (body, true) => render_json(&json::body_to_json(body.as_ref()), args.compact),
        (None, false) => String::new(),
        (Some(item), false) if args.compact => item.to_string(),
        (Some(item), false) => format!("{item:#}"),
    })
}

fn render_json(value: &serde_json::Value, compact: bool) -> String {
    if compact {
        value.to_string()
    } else {
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    }
}

/// A one-line description of a control frame, e.g. `Select.rsp session 0xffff status 0 system 123`.
pub fn describe_control(header: &frame::Header) -> String {
    let name = match header.stype {
        SType::Data => "Data",
        SType::SelectReq => "Select.req",
        SType::SelectRsp => "Select.rsp",
        SType::DeselectReq => "Deselect.req",
        SType::DeselectRsp => "Deselect.rsp",
        SType::LinktestReq => "Linktest.req",
        SType::LinktestRsp => "Linktest.rsp",
        SType::RejectReq => "Reject.req",
        SType::SeparateReq => "Separate.req",
        SType::Other(_) => "unknown SType",
    };
    format!(
        "{name} (SType {}) session 0x{:04x} byte2 {} byte3 {} PType {} system {}",
        header.stype.code(),
        header.session_id,
        header.byte2,
        header.byte3,
        header.ptype,
        header.system_bytes
    )
}

/// Lower-case hex with no separators.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Reads hex digits, ignoring white space, `:`/`-` separators and `0x` prefixes.
pub fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let mut digits = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'0' && matches!(bytes.get(i + 1), Some(b'x' | b'X')) {
            i += 2;
            continue;
        }
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b':' | b'-' | b',' => {}
            _ => match char::from(c).to_digit(16) {
                Some(d) => digits.push((d as u8, i)),
                None => {
                    return Err(format!(
                        "hex input: character {:?} at position {} is not a hex digit",
                        text[i..].chars().next().unwrap_or('?'),
                        i + 1
                    ));
                }
            },
        }
        i += 1;
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "hex input has an odd number of digits ({})",
            digits.len()
        ));
    }
    Ok(digits
        .chunks_exact(2)
        .map(|p| (p[0].0 << 4) | p[1].0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        assert_eq!(from_hex("0x01 0A:ff").unwrap(), vec![1, 10, 255]);
        assert_eq!(to_hex(&[1, 10, 255]), "010aff");
        assert!(from_hex("abc").unwrap_err().contains("odd"));
        assert!(from_hex("zz").unwrap_err().contains("position 1"));
    }
}
