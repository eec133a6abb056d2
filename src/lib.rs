//! secsgate: a SECS/GEM gateway.
//!
//! The map, one layer per module, each talking only to its neighbours:
//!
//! - [`secs2`]: SECS-II data (SEMI E5): items, messages, the binary codec, SML and the JSON
//!   form of the scripting API. Pure data, no I/O.
//! - [`hsms`]: HSMS (SEMI E37): framing of SECS-II messages over TCP.
//! - [`cli`]: the `secsgate` command line.
//!
//! Bytes flow `hsms::frame` -> `secs2::Message` -> the engine; the engine's replies flow back
//! the same way.

pub mod cli;
pub mod config;
pub mod gateway;
pub mod hsms;
pub mod link;
pub mod script;
pub mod secs2;
