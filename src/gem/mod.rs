//! SEMI E30 (GEM) behaviour, sans-IO: no sockets, no clock of its own.
//!
//! - [`host`]: [`Host`], the host side: communication state (S1F13/S1F14, WAIT CRA, WAIT
//!   DELAY) and the replies a host gives by itself.
//!
//! The equipment side:
//!
//! - [`model`]: what a GEM tool holds — variables, constants, events, reports, alarms,
//!   remote commands — with the standard GEM objects.
//! - [`state`]: the communication and control state models.
//! - [`equipment`]: [`Equipment`], which answers every message of the GEM tool table, sends
//!   events, alarms and traces, and reports what to send as [`Action`]s.
//! - [`spool`]: spooling while communication is down; [`programs`]: process programs.
//! - [`clock`]: the TIME formats.
//!
//! The message handlers live beside the capability they serve: [`status`] (stream 1, ECs,
//! clock), [`reports`] (event reports), [`trace`], [`limits`], [`alarms`], [`remote`],
//! [`spooling`] and [`programs`].

pub mod alarms;
pub mod clock;
pub mod equipment;
pub mod host;
pub mod items;
pub mod limits;
pub mod model;
pub mod programs;
pub mod remote;
pub mod reports;
pub mod spool;
pub mod spooling;
pub mod state;
pub mod status;
pub mod trace;

pub use equipment::{Action, Equipment, GemError, Outcome, Tag, hsms_header};
pub use host::{Host, HostConfig};
pub use model::{Id, Model, Standard};
pub use programs::{MemoryPrograms, ProgramStore};
pub use spool::{MemorySpool, SpoolStore};
pub use state::{CommunicationState, ControlState};
