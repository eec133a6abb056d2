//! The equipment simulator: a GEM equipment ([`crate::gem::Equipment`]) described by a TOML
//! config file, served over a passive HSMS link, with live variables, event runs, a durable
//! spool and process programs kept in a folder.
//!
//! - [`config`]: the config file ([`SimConfig`]); the default ships in `sdl/simulator.toml`.
//! - [`runtime`]: the tokio task ([`Simulator`]).
//! - [`runs`]: event runs and live variables, driven by the instants they are given.
//!
//! `secsgate sim` runs one on its own; the gateway runs the `[[simulator]]`s of a project
//! beside its connections.

pub mod config;
pub mod runs;
pub mod runtime;

pub use config::{ConfigError, EventRun, SimConfig};
/// Most simulators one process is built to run at once (each holds a blocking-pool thread:
/// runtimes that start simulators allow this many blocking threads and more).
pub const MAX_SIMULATORS: usize = 4096;

pub use runtime::{
    Operation, SimError, SimHandle, SimStatus, Simulator, VariableValue, spool_file,
};
