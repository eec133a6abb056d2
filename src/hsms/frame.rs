//! HSMS framing (SEMI E37 §8): a 4-byte big-endian length, a 10-byte header, then the body.
//!
//! ```text
//! length u32 | session u16 | byte2 | byte3 | PType | SType | system bytes u32 | body
//! ```
//! For a data message byte 2 is the W-bit and stream, byte 3 the function. Control messages
//! use byte 2 and 3 for status and reason codes.

use crate::secs2::{EncodeError, Item, Message};

/// Bytes in the header that follows the length field.
pub const HEADER_LEN: usize = 10;

/// Bytes in the length field.
pub const LENGTH_LEN: usize = 4;

/// Session ID that HSMS-SS control messages carry.
pub const CONTROL_SESSION: u16 = 0xFFFF;

/// SType: what an HSMS frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SType {
    /// 0: a SECS-II data message.
    Data,
    /// 1: Select.req, asks to start communication.
    SelectReq,
    /// 2: Select.rsp, byte 3 is the select status.
    SelectRsp,
    /// 3: Deselect.req.
    DeselectReq,
    /// 4: Deselect.rsp, byte 3 is the deselect status.
    DeselectRsp,
    /// 5: Linktest.req, a keep-alive.
    LinktestReq,
    /// 6: Linktest.rsp.
    LinktestRsp,
    /// 7: Reject.req, byte 2 the rejected SType (or PType), byte 3 the reason.
    RejectReq,
    /// 9: Separate.req: the sender closes the connection.
    SeparateReq,
    /// Any other value; answered with Reject.req reason 1.
    Other(u8),
}

impl SType {
    /// The SType byte.
    pub fn code(self) -> u8 {
        match self {
            SType::Data => 0,
            SType::SelectReq => 1,
            SType::SelectRsp => 2,
            SType::DeselectReq => 3,
            SType::DeselectRsp => 4,
            SType::LinktestReq => 5,
            SType::LinktestRsp => 6,
            SType::RejectReq => 7,
            SType::SeparateReq => 9,
            SType::Other(c) => c,
        }
    }

    /// The SType for a byte.
    pub fn from_code(code: u8) -> SType {
        match code {
            0 => SType::Data,
            1 => SType::SelectReq,
            2 => SType::SelectRsp,
            3 => SType::DeselectReq,
            4 => SType::DeselectRsp,
            5 => SType::LinktestReq,
            6 => SType::LinktestRsp,
            7 => SType::RejectReq,
            9 => SType::SeparateReq,
            c => SType::Other(c),
        }
    }
}

/// The 10-byte HSMS message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Session ID: the device ID for data messages, 0xFFFF for HSMS-SS control messages.
    pub session_id: u16,
    /// Data: W-bit (bit 7) and stream. Reject.req: the rejected SType or PType.
    pub byte2: u8,
    /// Data: function. Select.rsp/Deselect.rsp: status. Reject.req: reason.
    pub byte3: u8,
    /// Presentation type; 0 is SECS-II.
    pub ptype: u8,
    /// Session type.
    pub stype: SType,
    /// Identifies the transaction; a reply copies its request's.
    pub system_bytes: u32,
}

impl Header {
    /// The header of a data message.
    pub fn data(message: &Message) -> Header {
        Header {
            session_id: message.device_id,
            byte2: (u8::from(message.w_bit) << 7) | (message.stream & 0x7F),
            byte3: message.function,
            ptype: 0,
            stype: SType::Data,
            system_bytes: message.system_bytes,
        }
    }

    /// A control message header (session 0xFFFF).
    pub fn control(stype: SType, system_bytes: u32) -> Header {
        Header {
            session_id: CONTROL_SESSION,
            byte2: 0,
            byte3: 0,
            ptype: 0,
            stype,
            system_bytes,
        }
    }

    /// The header as bytes on the wire.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let s = self.session_id.to_be_bytes();
        let sb = self.system_bytes.to_be_bytes();
        [
            s[0],
            s[1],
            self.byte2,
            self.byte3,
            self.ptype,
            self.stype.code(),
            sb[0],
            sb[1],
            sb[2],
            sb[3],
        ]
    }

    /// Reads a header from its 10 bytes.
    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            session_id: u16::from_be_bytes([b[0], b[1]]),
            byte2: b[2],
            byte3: b[3],
            ptype: b[4],
            stype: SType::from_code(b[5]),
            system_bytes: u32::from_be_bytes([b[6], b[7], b[8], b[9]]),
        }
    }

    /// Device ID of a data message: the session ID with its top bit masked, since some
    /// equipment sets it.
    pub fn device_id(&self) -> u16 {
        self.session_id & 0x7FFF
    }

    /// W-bit of a data message.
    pub fn w_bit(&self) -> bool {
        self.byte2 & 0x80 != 0
    }

    /// Stream of a data message.
    pub fn stream(&self) -> u8 {
        self.byte2 & 0x7F
    }

    /// Function of a data message.
    pub fn function(&self) -> u8 {
        self.byte3
    }

    /// A data message with this header and an already decoded body.
    pub fn into_message(self, body: Option<Item>) -> Message {
        Message {
            stream: self.stream(),
            function: self.function(),
            w_bit: self.w_bit(),
            device_id: self.device_id(),
            system_bytes: self.system_bytes,
            body,
        }
    }
}

/// Appends a whole frame (length, header, body) for a data message to `buf`. On error `buf`
/// is left as it was.
pub fn encode_message(message: &Message, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; LENGTH_LEN]);
    buf.extend_from_slice(&Header::data(message).to_bytes());
    if let Some(body) = &message.body
        && let Err(e) = body.encode_into(buf)
    {
        buf.truncate(start);
        return Err(e);
    }
    let length = (buf.len() - start - LENGTH_LEN) as u32;
    buf[start..start + LENGTH_LEN].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

/// Appends a control frame (header only) to `buf`.
pub fn encode_control(header: &Header, buf: &mut Vec<u8>) {
    buf.extend_from_slice(&(HEADER_LEN as u32).to_be_bytes());
    buf.extend_from_slice(&header.to_bytes());
}

/// A complete frame could not be split into header and body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame has {0} bytes; at least 14 (length and header) are needed")]
    Short(usize),
    #[error("length field says {declared} bytes but {actual} follow it")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("length field {0} is less than the 10-byte header")]
    LengthTooSmall(usize),
}

/// Splits one complete frame into its header and body bytes.
pub fn split_frame(bytes: &[u8]) -> Result<(Header, &[u8]), FrameError> {
    let Some((length, rest)) = bytes.split_first_chunk::<LENGTH_LEN>() else {
        return Err(FrameError::Short(bytes.len()));
    };
    let declared = u32::from_be_bytes(*length) as usize;
    if declared < HEADER_LEN {
        return Err(FrameError::LengthTooSmall(declared));
    }
    if declared != rest.len() {
        return Err(FrameError::LengthMismatch {
            declared,
            actual: rest.len(),
        });
    }
    let Some((header, body)) = rest.split_first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::Short(bytes.len()));
    };
    Ok((Header::from_bytes(header), body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secs2::StreamFunction;

    #[test]
    fn data_message_frame() {
        let mut msg = Message::new(
            StreamFunction::new(1, 1).unwrap(),
            true,
            Some(Item::A(b"text".to_vec())),
        );
        msg.device_id = 1;
        msg.system_bytes = 1;
        let mut buf = Vec::new();
        encode_message(&msg, &mut buf).unwrap();
        let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "0000001000018101000000000001410474657874");
        let (header, body) = split_frame(&buf).unwrap();
        assert_eq!(header.stype, SType::Data);
        assert_eq!(body, b"\x41\x04text");
    }

    #[test]
    fn split_rejects_bad_lengths() {
        assert_eq!(split_frame(&[0, 0, 0]), Err(FrameError::Short(3)));
        assert_eq!(
            split_frame(&[0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::LengthTooSmall(9))
        );
        assert_eq!(
            split_frame(&[0, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::LengthMismatch {
                declared: 11,
                actual: 10
            })
        );
    }
}
