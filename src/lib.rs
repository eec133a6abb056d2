//! secsgate: a SECS/GEM gateway.
//!
//! The map, one layer per module, each talking only to its neighbours:
//!
//! - [`secs2`]: SECS-II data (SEMI E5): items, messages, the binary codec, SML and the JSON
//!   form of the scripting API. Pure data, no I/O.
//! - [`hsms`]: HSMS (SEMI E37): framing of SECS-II messages over TCP.
//! - [`gem`]: GEM (SEMI E30) equipment behaviour, sans-IO: model, state machines, every
//!   message of the GEM tool table, spooling.
//! - [`sim`]: the equipment simulator: a GEM equipment from a TOML file, over HSMS.
//! - [`store`]: durable storage: the equipment spool (SQLite), process programs (files).
//! - [`cli`]: the `secsgate` command line.
//!
//! Bytes flow `hsms::frame` -> `secs2::Message` -> the engine; the engine's replies flow back
//! the same way.

pub mod cli;
pub mod config;
pub mod gateway;
pub mod gem;
pub mod hsms;
pub mod link;
pub mod script;
pub mod secs2;
pub mod sim;
pub mod store;
