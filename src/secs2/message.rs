//! A SECS-II message: stream, function, W-bit, device ID, system bytes and an optional body.

use std::fmt;
use std::str::FromStr;

use super::item::Item;

/// Highest stream number (7 bits in the header).
pub const MAX_STREAM: u8 = 127;

/// A stream/function pair such as `S1F13`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamFunction {
    pub stream: u8,
    pub function: u8,
}

impl StreamFunction {
    /// `SxFy`, checking that the stream fits in 7 bits.
    pub fn new(stream: u8, function: u8) -> Result<Self, StreamFunctionError> {
        if stream > MAX_STREAM {
            return Err(StreamFunctionError::StreamRange(u32::from(stream)));
        }
        Ok(StreamFunction { stream, function })
    }

    /// True for a primary message (odd function); F0 aborts a transaction and is not one.
    pub fn is_primary(self) -> bool {
        self.function % 2 == 1
    }

    /// The reply's stream/function: `S1F13` -> `S1F14`. `None` for a secondary message.
    pub fn reply(self) -> Option<StreamFunction> {
        self.is_primary().then(|| StreamFunction {
            stream: self.stream,
            function: self.function + 1,
        })
    }
}

impl fmt::Display for StreamFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S{}F{}", self.stream, self.function)
    }
}

/// A stream/function text was not `SxFy` with x in 0..=127 and y in 0..=255.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamFunctionError {
    #[error("'{0}' is not a stream/function; expected the form S1F13")]
    Syntax(String),
    #[error("stream {0} is out of range 0..=127")]
    StreamRange(u32),
    #[error("function {0} is out of range 0..=255")]
    FunctionRange(u32),
}

impl FromStr for StreamFunction {
    type Err = StreamFunctionError;

    /// Reads `S1F13` (case-insensitive, surrounding spaces ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let syntax = || StreamFunctionError::Syntax(s.to_string());
        let rest = t.strip_prefix(['S', 's']).ok_or_else(syntax)?;
        let f_at = rest.find(['F', 'f']).ok_or_else(syntax)?;
        let (stream, function) = (&rest[..f_at], &rest[f_at + 1..]);
        let digits = |d: &str| -> Result<u32, StreamFunctionError> {
            if d.is_empty() || d.len() > 6 || !d.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            d.parse().map_err(|_| syntax())
        };
        let stream = digits(stream)?;
        let function = digits(function)?;
        if stream > u32::from(MAX_STREAM) {
            return Err(StreamFunctionError::StreamRange(stream));
        }
        let function =
            u8::try_from(function).map_err(|_| StreamFunctionError::FunctionRange(function))?;
        Ok(StreamFunction {
            stream: stream as u8,
            function,
        })
    }
}

/// One SECS-II message with its header fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Stream, 0..=127.
    pub stream: u8,
    /// Function, 0..=255; odd for a primary, even for its reply.
    pub function: u8,
    /// W-bit: the sender expects a reply.
    pub w_bit: bool,
    /// Device ID (the HSMS session ID of a data message).
    pub device_id: u16,
    /// System bytes: identify the transaction; a reply copies its primary's.
    pub system_bytes: u32,
    /// The root item; `None` is a header-only message, which is not the same as `<L [0]>`.
    pub body: Option<Item>,
}

impl Message {
    /// A message with device ID and system bytes zero (the transport assigns them).
    pub fn new(sf: StreamFunction, w_bit: bool, body: Option<Item>) -> Self {
        Message {
            stream: sf.stream,
            function: sf.function,
            w_bit,
            device_id: 0,
            system_bytes: 0,
            body,
        }
    }

    /// The message's stream/function.
    pub fn stream_function(&self) -> StreamFunction {
        StreamFunction {
            stream: self.stream,
            function: self.function,
        }
    }

    /// The reply to this message with the given body: function + 1, same device ID and system
    /// bytes, no W-bit.
    pub fn reply_with(&self, body: Option<Item>) -> Message {
        Message {
            stream: self.stream,
            function: self.function.wrapping_add(1),
            w_bit: false,
            device_id: self.device_id,
            system_bytes: self.system_bytes,
            body,
        }
    }
}

/// The system bytes named by a stream 9 error message's MHEAD (`<B[10]>`, the header of the
/// message it answers: the HSMS header, or the SECS-I block header), for the S9Fx that carry
/// one (S9F1, S9F3, S9F5, S9F7, S9F9, S9F11). Both headers keep the system bytes in bytes 6-9.
pub fn stream_nine_mhead(message: &Message) -> Option<u32> {
    if message.stream != 9 || !matches!(message.function, 1 | 3 | 5 | 7 | 9 | 11) {
        return None;
    }
    match &message.body {
        Some(Item::B(mhead)) if mhead.len() == 10 => {
            Some(u32::from_be_bytes([mhead[6], mhead[7], mhead[8], mhead[9]]))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let sf: StreamFunction = "S1F13".parse().unwrap();
        assert_eq!((sf.stream, sf.function), (1, 13));
        assert_eq!(sf.to_string(), "S1F13");
        assert_eq!(
            "s127f255".parse::<StreamFunction>().unwrap().to_string(),
            "S127F255"
        );
        assert_eq!(sf.reply().unwrap().to_string(), "S1F14");
        assert_eq!("S1F14".parse::<StreamFunction>().unwrap().reply(), None);
    }

    #[test]
    fn rejects_bad_text() {
        for bad in ["", "S", "S1", "F1", "S1F", "SxF1", "S1F1W", "S-1F1", "1F1"] {
            assert!(
                matches!(
                    bad.parse::<StreamFunction>(),
                    Err(StreamFunctionError::Syntax(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            "S128F1".parse::<StreamFunction>(),
            Err(StreamFunctionError::StreamRange(128))
        );
        assert_eq!(
            "S1F256".parse::<StreamFunction>(),
            Err(StreamFunctionError::FunctionRange(256))
        );
    }
}
