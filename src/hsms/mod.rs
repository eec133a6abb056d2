//! HSMS (SEMI E37): SECS messages over TCP.
//!
//! - [`frame`]: the 4-byte length, the 10-byte header, and the body.

pub mod driver;
pub mod frame;
pub mod protocol;
