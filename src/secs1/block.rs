//! SECS-I blocks (SEMI E4 §7): the unit the line carries between an ENQ/EOT handshake and
//! the receiver's ACK.
//!
//! ```text
//! length u8 | header (10 bytes) | data (0..=244 bytes) | checksum u16 (big-endian)
//! header: R-bit | device ID (15 bits) | W-bit | stream | function | E-bit | block number
//!         (15 bits) | system bytes u32
//! ```
//! The length byte counts header and data (10..=254). The checksum is the sum of the header
//! and data bytes modulo 65536; the length byte is not part of it.

/// Bytes in a block header.
pub const HEADER_LEN: usize = 10;

/// Most data bytes one block carries.
pub const MAX_DATA: usize = 244;

/// Smallest value of the length byte (a header with no data).
pub const MIN_LENGTH: u8 = HEADER_LEN as u8;

/// Largest value of the length byte (a header with 244 data bytes).
pub const MAX_LENGTH: u8 = (HEADER_LEN + MAX_DATA) as u8;

/// Highest block number (15 bits): a message has at most this many blocks.
pub const MAX_BLOCKS: usize = 0x7FFF;

/// Largest encoded message body SECS-I can carry: 32767 blocks of 244 bytes.
pub const MAX_BODY: usize = MAX_BLOCKS * MAX_DATA;

/// ENQ: request to send.
pub const ENQ: u8 = 0x05;
/// EOT: ready to receive.
pub const EOT: u8 = 0x04;
/// ACK: the block was received correctly.
pub const ACK: u8 = 0x06;
/// NAK: the block was not received correctly.
pub const NAK: u8 = 0x15;

/// The 10-byte SECS-I block header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// R-bit: the direction. `false` host to equipment, `true` equipment to host.
    pub r_bit: bool,
    /// Device ID, 15 bits (0..=32767).
    pub device_id: u16,
    /// W-bit: the sender expects a reply.
    pub w_bit: bool,
    /// Stream, 7 bits.
    pub stream: u8,
    /// Function.
    pub function: u8,
    /// E-bit: this is the last block of its message.
    pub e_bit: bool,
    /// Block number, 15 bits; 1 for the first block (a single-block message may carry 0).
    pub block_number: u16,
    /// System bytes: identify the transaction; by E4 convention bytes 0-1 are the source ID
    /// and bytes 2-3 the transaction ID. A reply copies its primary's.
    pub system_bytes: u32,
}

impl Header {
    /// The header as bytes on the wire. Device ID, stream and block number are cut to their
    /// field widths.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let device = self.device_id.to_be_bytes();
        let block = self.block_number.to_be_bytes();
        let sb = self.system_bytes.to_be_bytes();
        [
            (u8::from(self.r_bit) << 7) | (device[0] & 0x7F),
            device[1],
            (u8::from(self.w_bit) << 7) | (self.stream & 0x7F),
            self.function,
            (u8::from(self.e_bit) << 7) | (block[0] & 0x7F),
            block[1],
            sb[0],
            sb[1],
            sb[2],
            sb[3],
        ]
    }

    /// Reads a header from its 10 bytes (every bit pattern is a header).
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Header {
        let b = bytes;
        Header {
            r_bit: b[0] & 0x80 != 0,
            device_id: u16::from_be_bytes([b[0] & 0x7F, b[1]]),
            w_bit: b[2] & 0x80 != 0,
            stream: b[2] & 0x7F,
            function: b[3],
            e_bit: b[4] & 0x80 != 0,
            block_number: u16::from_be_bytes([b[4] & 0x7F, b[5]]),
            system_bytes: u32::from_be_bytes([b[6], b[7], b[8], b[9]]),
        }
    }

    /// The message's stream and function.
    pub fn stream_function(&self) -> crate::secs2::StreamFunction {
        crate::secs2::StreamFunction {
            stream: self.stream,
            function: self.function,
        }
    }
}

/// One block: its header and up to [`MAX_DATA`] bytes of the message body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The header, repeated in every block of a message.
    pub header: Header,
    /// This block's share of the encoded body, at most [`MAX_DATA`] bytes.
    pub data: Vec<u8>,
}

impl Block {
    /// Appends the block as on the wire to `out`: length byte, header, data and the
    /// big-endian checksum. The data must not exceed [`MAX_DATA`] bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_frame(&self.header.encode(), &self.data, out);
    }

    /// Reads a whole frame as on the wire (length byte first, checksum last).
    pub fn decode(frame: &[u8]) -> Result<Block, BlockError> {
        let Some((&length, rest)) = frame.split_first() else {
            return Err(BlockError::Short { needed: 1, got: 0 });
        };
        if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
            return Err(BlockError::BadLength(length));
        }
        let needed = 1 + usize::from(length) + 2;
        if frame.len() < needed {
            return Err(BlockError::Short {
                needed,
                got: frame.len(),
            });
        }
        if frame.len() > needed {
            return Err(BlockError::TrailingBytes(frame.len() - needed));
        }
        let (content, sum) = rest.split_at(usize::from(length));
        let expected = u16::from_be_bytes([sum[0], sum[1]]);
        let got = checksum(content);
        if expected != got {
            return Err(BlockError::Checksum { expected, got });
        }
        let (header, data) = content
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(BlockError::BadLength(length))?;
        Ok(Block {
            header: Header::decode(header),
            data: data.to_vec(),
        })
    }
}

/// Appends a frame for a raw header and data (at most [`MAX_DATA`] bytes).
pub(crate) fn encode_frame(header: &[u8; HEADER_LEN], data: &[u8], out: &mut Vec<u8>) {
    debug_assert!(data.len() <= MAX_DATA, "block data over 244 bytes");
    out.reserve(1 + HEADER_LEN + data.len() + 2);
    out.push((HEADER_LEN + data.len()) as u8);
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    let sum = checksum(header).wrapping_add(checksum(data));
    out.extend_from_slice(&sum.to_be_bytes());
}

/// The SECS-I checksum: the sum of the bytes (header and data) modulo 65536.
pub fn checksum(bytes: &[u8]) -> u16 {
    bytes
        .iter()
        .fold(0u16, |sum, &b| sum.wrapping_add(u16::from(b)))
}

/// Splits an encoded message body into blocks of at most [`MAX_DATA`] bytes. Every block
/// repeats `header` (whose `block_number` and `e_bit` are ignored) with block numbers from 1
/// and the E-bit on the last; an empty body is one block with no data.
pub fn split(header: Header, body: &[u8]) -> Vec<Block> {
    let count = block_count(body.len());
    (0..count)
        .map(|i| {
            let start = i * MAX_DATA;
            let end = (start + MAX_DATA).min(body.len());
            Block {
                header: Header {
                    block_number: (i + 1) as u16,
                    e_bit: i + 1 == count,
                    ..header
                },
                data: body[start..end].to_vec(),
            }
        })
        .collect()
}

/// How many blocks a body of `len` bytes takes (at least one).
pub fn block_count(len: usize) -> usize {
    len.div_ceil(MAX_DATA).max(1)
}

/// A frame is not a valid block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The length byte is outside 10..=254.
    #[error("block length byte {0} is outside 10..=254")]
    BadLength(u8),
    /// The checksum does not match the header and data.
    #[error(
        "block checksum mismatch: the block says 0x{expected:04x}, its bytes sum to 0x{got:04x}"
    )]
    Checksum { expected: u16, got: u16 },
    /// The frame ends before its length byte says it should.
    #[error("block frame has {got} bytes; its length byte needs {needed}")]
    Short { needed: usize, got: usize },
    /// Bytes follow the checksum.
    #[error("{0} bytes follow the block's checksum")]
    TrailingBytes(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn s1f1_vector() {
        let frame = hex("0A 000A 81 01 8001 000A0001 0118");
        let block = Block::decode(&frame).unwrap();
        assert_eq!(
            block.header,
            Header {
                r_bit: false,
                device_id: 10,
                w_bit: true,
                stream: 1,
                function: 1,
                e_bit: true,
                block_number: 1,
                system_bytes: 0x000A_0001,
            }
        );
        assert!(block.data.is_empty());
        let mut out = Vec::new();
        block.encode(&mut out);
        assert_eq!(out, frame);
    }

    #[test]
    fn rejects_bad_frames() {
        let good = hex("0C 800B 81 02 0002 000A0001 0100 011C");
        assert!(Block::decode(&good).is_ok());
        let mut bad = good.clone();
        *bad.last_mut().unwrap() = 0x1D;
        assert_eq!(
            Block::decode(&bad),
            Err(BlockError::Checksum {
                expected: 0x011D,
                got: 0x011C
            })
        );
        assert_eq!(
            Block::decode(&good[..good.len() - 1]),
            Err(BlockError::Short {
                needed: 15,
                got: 14
            })
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Block::decode(&long), Err(BlockError::TrailingBytes(1)));
        assert_eq!(Block::decode(&[9]), Err(BlockError::BadLength(9)));
        assert_eq!(Block::decode(&[255]), Err(BlockError::BadLength(255)));
        assert_eq!(
            Block::decode(&[]),
            Err(BlockError::Short { needed: 1, got: 0 })
        );
    }

    #[test]
    fn split_numbers_blocks_and_marks_the_last() {
        let header = Header::decode(&[0; HEADER_LEN]);
        let blocks = split(header, &[7; 314]);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].data.len(), 244);
        assert_eq!(blocks[1].data.len(), 70);
        assert_eq!(
            (blocks[0].header.block_number, blocks[0].header.e_bit),
            (1, false)
        );
        assert_eq!(
            (blocks[1].header.block_number, blocks[1].header.e_bit),
            (2, true)
        );
        let empty = split(header, &[]);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].data.is_empty() && empty[0].header.e_bit);
        assert_eq!(split(header, &[1; 244]).len(), 1);
        assert_eq!(split(header, &[1; 245]).len(), 2);
    }
}
