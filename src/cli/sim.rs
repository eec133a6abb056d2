//! `secsgate sim`: run a simulated GEM equipment on a passive HSMS port (or a SECS-I serial
//! port, or SECS-I over TCP) until SIGINT or SIGTERM.

use std::path::PathBuf;

use clap::Args;

use super::EXIT_BAD_INPUT;
use crate::hsms::driver::{Mode, Settings};
use crate::secs1::driver::{self as secs1, Line, SerialSettings};
use crate::sim::{SimConfig, Simulator};
use crate::transport::Transport;

/// Exit code when the simulator cannot start (port in use, spool unreadable).
const EXIT_FAILED: i32 = 1;

/// Arguments of `secsgate sim`.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// HSMS: TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 5000, conflicts_with_all = ["serial", "secs1_tcp"])]
    port: u16,
    /// Speak SECS-I over this serial port (a device such as /dev/ttyUSB0, or a pty) instead
    /// of HSMS.
    #[arg(long, value_name = "PATH", conflicts_with = "secs1_tcp")]
    serial: Option<String>,
    /// Speak SECS-I over TCP, listening on this port (0 picks a free one), instead of HSMS.
    #[arg(long, value_name = "PORT")]
    secs1_tcp: Option<u16>,
    /// Baud rate of --serial (8 data bits, no parity, 1 stop bit).
    #[arg(long, default_value_t = 9600)]
    baud_rate: u32,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// Device ID (HSMS session ID); default: the config's `equipment.device_id`.
    #[arg(long)]
    device_id: Option<u16>,
    /// Simulator config file (TOML); default: the shipped sdl/simulator.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Folder of the durable spool (and of the process programs unless the config names
    /// another).
    #[arg(long, value_name = "DIR", default_value = ".secsgate/sim")]
    spool_dir: PathBuf,
    /// Simulator name: names the spool file and the log lines.
    #[arg(long, default_value = "sim")]
    name: String,
    /// Event runs to start once the simulator listens (repeatable).
    #[arg(long = "run", value_name = "RUN")]
    runs: Vec<String>,
    /// T3 reply timeout in seconds for the primaries the simulator sends.
    #[arg(long, default_value_t = 45.0)]
    t3: f64,
    /// Address of the web console (port 0, the default, picks a free port; the URL is
    /// printed). Any address but loopback needs SECSGATE_WEB_PASSWORD.
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:0")]
    web: String,
    /// Do not serve the web console.
    #[arg(long)]
    no_web: bool,
}

/// Runs the command and returns the exit code.
pub(super) fn run(args: SimArgs) -> i32 {
    // Warnings, and every connection opened or closed with its reason.
    super::init_logging("warn,secsgate::hsms::driver=info,secsgate::secs1::driver=info");
    let config = match &args.config {
        Some(path) => match SimConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("secsgate: {e}");
                return EXIT_BAD_INPUT;
            }
        },
        None => SimConfig::default_config(),
    };
    for w in &config.warnings {
        eprintln!("secsgate: warning: {w}");
    }
    let Some(t3) = std::time::Duration::try_from_secs_f64(args.t3)
        .ok()
        .filter(|d| !d.is_zero())
    else {
        eprintln!("secsgate: --t3 must be a positive number of seconds");
        return EXIT_BAD_INPUT;
    };
    for run in &args.runs {
        if !config.runs.iter().any(|r| r.name == *run) {
            eprintln!(
                "secsgate: --run {run}: no such event run (the config has: {})",
                config.run_names().join(", ")
            );
            return EXIT_BAD_INPUT;
        }
    }
    let runtime = match super::server_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("secsgate: {e}");
            return EXIT_FAILED;
        }
    };
    runtime.block_on(serve(args, config, t3))
}

async fn serve(args: SimArgs, config: SimConfig, t3: std::time::Duration) -> i32 {
    let device_id = args.device_id.unwrap_or(config.device_id());
    let (mut transport, address) = match (&args.serial, args.secs1_tcp) {
        (Some(path), _) => {
            let line = Line::Serial(SerialSettings::new(path.clone(), args.baud_rate));
            let protocol = crate::secs1::protocol::Config::equipment(device_id);
            (
                Transport::Secs1(secs1::Settings::new(line, protocol)),
                path.clone(),
            )
        }
        (None, Some(port)) => {
            let address = format!("{}:{port}", args.address);
            let line = Line::TcpListen(address.clone());
            let protocol = crate::secs1::protocol::Config::equipment(device_id);
            (
                Transport::Secs1(secs1::Settings::new(line, protocol)),
                address,
            )
        }
        (None, None) => {
            let address = format!("{}:{}", args.address, args.port);
            let settings = Settings::new(Mode::Passive(address.clone()));
            (Transport::Hsms(settings), address)
        }
    };
    transport.set_device_id(device_id);
    transport.set_t3(t3);
    let description = transport.to_string();
    let web_settings = crate::config::WebSettings {
        address: args.web.clone(),
        address_at: Some("--web".into()),
        ..crate::config::WebSettings::default()
    };
    if !args.no_web
        && let Err(e) = crate::web::check(&web_settings)
    {
        eprintln!("secsgate: {e}");
        return EXIT_BAD_INPUT;
    }
    let simulator = match Simulator::start(args.name, config, transport, args.spool_dir).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("secsgate: cannot start the simulator ({description}): {e}");
            return EXIT_FAILED;
        }
    };
    match (simulator.local_addr(), &args.serial) {
        (_, Some(path)) => eprintln!("secsgate: simulator on SECS-I serial port {path}"),
        (Some(addr), None) => eprintln!("secsgate: simulator listening on {addr}"),
        (None, None) => eprintln!("secsgate: simulator listening on {address}"),
    }
    let web = if args.no_web {
        None
    } else {
        match crate::web::start(
            &web_settings,
            crate::web::Source::Simulator(simulator.handle()),
        )
        .await
        {
            Ok(w) => {
                eprintln!("secsgate: web console at http://{}/", w.local_addr());
                Some(w)
            }
            Err(e) => {
                eprintln!("secsgate: {e} (--no-web runs the simulator without it)");
                simulator.shutdown().await;
                return EXIT_BAD_INPUT;
            }
        }
    };
    for run in &args.runs {
        if let Err(e) = simulator.start_event_run(run) {
            eprintln!("secsgate: {e}");
        }
    }
    super::wait_for_stop().await;
    if let Some(web) = web {
        web.shutdown().await;
    }
    simulator.shutdown().await;
    0
}
