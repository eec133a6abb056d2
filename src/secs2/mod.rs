//! SECS-II (SEMI E5): the data items and messages every transport carries. Pure data, no I/O.
//!
//! - [`item`]: the item model ([`Item`], [`Format`]).
//! - [`codec`]: the binary form, with decode limits.
//! - [`sml`]: the SML text notation, printed and parsed.
//! - [`json`]: the JSON form the scripting API uses.
//! - [`message`]: a message with its header fields ([`Message`], [`StreamFunction`]).

pub mod codec;
pub mod item;
pub mod json;
pub mod message;
pub mod sml;
pub mod testdata;

pub use codec::{DecodeError, DecodeErrorKind, DecodeLimits, EncodeError};
pub use item::{Format, Item};
pub use message::{Message, StreamFunction, stream_nine_mhead};
pub use sml::SmlError;
