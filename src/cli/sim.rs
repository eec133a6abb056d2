//! `secsgate sim`: run a simulated GEM equipment on a passive HSMS port until SIGINT or
//! SIGTERM.

use std::path::PathBuf;

use clap::Args;

use super::EXIT_BAD_INPUT;
use crate::hsms::driver::{Mode, Settings};
use crate::sim::{SimConfig, Simulator};

/// Exit code when the simulator cannot start (port in use, spool unreadable).
const EXIT_FAILED: i32 = 1;

/// Arguments of `secsgate sim`.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 5000)]
    port: u16,
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
}

/// Runs the command and returns the exit code.
pub(super) fn run(args: SimArgs) -> i32 {
    super::init_logging("warn");
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
    let address = format!("{}:{}", args.address, args.port);
    let mut settings = Settings::new(Mode::Passive(address.clone()));
    settings.device_id = args.device_id.unwrap_or(config.device_id());
    settings.protocol.t3 = t3;
    let simulator = match Simulator::start(args.name, config, settings, args.spool_dir).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("secsgate: cannot start the simulator on {address}: {e}");
            return EXIT_FAILED;
        }
    };
    match simulator.local_addr() {
        Some(addr) => eprintln!("secsgate: simulator listening on {addr}"),
        None => eprintln!("secsgate: simulator listening on {address}"),
    }
    for run in &args.runs {
        if let Err(e) = simulator.start_event_run(run) {
            eprintln!("secsgate: {e}");
        }
    }
    super::wait_for_stop().await;
    simulator.shutdown().await;
    0
}
