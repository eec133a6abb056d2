//! The SECS-II binary form (SEMI E5 §9): format byte, 1-3 length bytes, data.
//!
//! Encoding writes the minimal number of length bytes into a caller's buffer, so a buffer that
//! is reused allocates nothing once it has grown. Decoding takes [`DecodeLimits`] and never
//! panics or allocates by a length it has not yet seen the bytes for.

use super::item::{Format, Item};

/// The largest length a 3-byte length field holds: 16,777,215.
pub const MAX_LENGTH: usize = 0xFF_FFFF;

/// An item could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The item's length field would exceed 3 bytes.
    #[error(
        "{format} item is {length} {unit} long; SECS-II allows at most 16777215 (split the data)"
    )]
    TooLong {
        format: Format,
        length: usize,
        unit: &'static str,
    },
}

/// Limits a decoder enforces on data from outside (set from configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest encoded body accepted, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of lists accepted (a flat list is depth 1).
    pub max_depth: usize,
    /// Most items (lists and leaves together) accepted in one body.
    pub max_items: usize,
}

impl Default for DecodeLimits {
    /// 16 MiB, 64 levels, one million items.
    fn default() -> Self {
        DecodeLimits {
            max_bytes: 16 * 1024 * 1024,
            max_depth: 64,
            max_items: 1_000_000,
        }
    }
}

/// Why a body failed to decode; the equipment side answers these with S9F7 (illegal data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    #[error("format byte 0x{format_byte:02x} has 0 length bytes (1 to 3 are allowed)")]
    NoLengthBytes { format_byte: u8 },
    #[error("format byte 0x{format_byte:02x} has unknown format code 0o{code:02o}")]
    UnknownFormat { format_byte: u8, code: u8 },
    #[error("item header needs {needed} bytes but only {available} remain")]
    HeaderPastEnd { needed: usize, available: usize },
    #[error("{format} item declares {declared} bytes but only {available} remain")]
    LengthPastEnd {
        format: Format,
        declared: usize,
        available: usize,
    },
    #[error("list declares {declared} items but only {present} are present")]
    MissingChildren { declared: usize, present: usize },
    #[error("{count} trailing bytes after the root item")]
    TrailingBytes { count: usize },
    #[error("{format} item length {length} is not a multiple of its element size {size}")]
    NotMultiple {
        format: Format,
        length: usize,
        size: usize,
    },
    #[error("W item length 1 is too short for its 2-byte localized string header")]
    ShortLocalized,
    #[error("body is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("lists nest deeper than the limit of {limit}")]
    TooDeep { limit: usize },
    #[error("more than the limit of {limit} items")]
    TooManyItems { limit: usize },
}

/// A body failed to decode at `offset` (bytes from the start of the body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal SECS-II data at byte {offset}: {kind}")]
pub struct DecodeError {
    pub offset: usize,
    pub kind: DecodeErrorKind,
}

/// Appends an item header (format byte and minimal length bytes) for an item of `length`
/// (children for `L`, bytes otherwise).
pub fn encode_header(buf: &mut Vec<u8>, format: Format, length: usize) -> Result<(), EncodeError> {
    let code = format.code() << 2;
    if length <= 0xFF {
        buf.extend_from_slice(&[code | 1, length as u8]);
    } else if length <= 0xFFFF {
        buf.extend_from_slice(&[code | 2, (length >> 8) as u8, length as u8]);
    } else if length <= MAX_LENGTH {
        buf.extend_from_slice(&[
            code | 3,
            (length >> 16) as u8,
            (length >> 8) as u8,
            length as u8,
        ]);
    } else {
        return Err(EncodeError::TooLong {
            format,
            length,
            unit: if format == Format::List {
                "items"
            } else {
                "bytes"
            },
        });
    }
    Ok(())
}

/// Writes numbers big-endian: one resize, then fixed-size stores the compiler can vectorise.
fn put_numbers<const N: usize, T: Copy>(
    buf: &mut Vec<u8>,
    values: &[T],
    to: impl Fn(T) -> [u8; N],
) {
    if let [one] = values {
        buf.extend_from_slice(&to(*one));
        return;
    }
    let start = buf.len();
    buf.resize(start + values.len() * N, 0);
    let (chunks, _) = buf[start..].as_chunks_mut::<N>();
    for (dst, &v) in chunks.iter_mut().zip(values) {
        *dst = to(v);
    }
}

impl Item {
    /// Appends the item's encoding to `buf`. On error `buf` is left as it was.
    pub fn encode_into(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = buf.len();
        let result = self.encode_unchecked(buf);
        if result.is_err() {
            buf.truncate(start);
        }
        result
    }

    /// The item's encoding in a new buffer.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut buf)?;
        Ok(buf)
    }

    /// The exact number of bytes [`Item::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let length = self.length();
        let header = match length {
            0..=0xFF => 2,
            0x100..=0xFFFF => 3,
            _ => 4,
        };
        match self {
            Item::L(children) => header + children.iter().map(Item::encoded_len).sum::<usize>(),
            _ => header + length,
        }
    }

    fn encode_unchecked(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_header(buf, self.format(), self.length())?;
        match self {
            Item::L(children) => {
                for child in children {
                    child.encode_unchecked(buf)?;
                }
            }
            Item::B(v) | Item::A(v) | Item::J(v) | Item::U1(v) | Item::Boolean(v) => {
                buf.extend_from_slice(v)
            }
            Item::W { lsh, bytes } => {
                buf.extend_from_slice(&lsh.to_be_bytes());
                buf.extend_from_slice(bytes);
            }
            Item::I1(v) => buf.extend(v.iter().map(|&x| x as u8)),
            Item::I2(v) => put_numbers(buf, v, i16::to_be_bytes),
            Item::I4(v) => put_numbers(buf, v, i32::to_be_bytes),
            Item::I8(v) => put_numbers(buf, v, i64::to_be_bytes),
            Item::U2(v) => put_numbers(buf, v, u16::to_be_bytes),
            Item::U4(v) => put_numbers(buf, v, u32::to_be_bytes),
            Item::U8(v) => put_numbers(buf, v, u64::to_be_bytes),
            Item::F4(v) => put_numbers(buf, v, f32::to_be_bytes),
            Item::F8(v) => put_numbers(buf, v, f64::to_be_bytes),
        }
        Ok(())
    }

    /// Decodes exactly one root item that fills `bytes` (trailing bytes are an error).
    pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Item, DecodeError> {
        Decoder {
            bytes,
            limits,
            pos: 0,
            items: 0,
        }
        .run()
    }

    /// Decodes a message body: no bytes is no body (`None`), otherwise one root item.
    pub fn decode_body(bytes: &[u8], limits: &DecodeLimits) -> Result<Option<Item>, DecodeError> {
        if bytes.is_empty() {
            Ok(None)
        } else {
            Item::decode(bytes, limits).map(Some)
        }
    }
}

/// Encodes an optional body (`None` writes nothing).
pub fn encode_body(body: Option<&Item>, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
    match body {
        Some(item) => item.encode_into(buf),
        None => Ok(()),
    }
}

/// A list being filled while decoding.
struct OpenList {
    offset: usize,
    declared: usize,
    children: Vec<Item>,
}

struct Decoder<'a> {
    bytes: &'a [u8],
    limits: &'a DecodeLimits,
    pos: usize,
    items: usize,
}

fn numbers<const N: usize, T>(data: &[u8], from: impl Fn([u8; N]) -> T) -> Vec<T> {
    let (chunks, _) = data.as_chunks::<N>();
    chunks.iter().map(|c| from(*c)).collect()
}

impl Decoder<'_> {
    fn fail(&self, offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError { offset, kind }
    }

    fn run(mut self) -> Result<Item, DecodeError> {
        if self.bytes.len() > self.limits.max_bytes {
            return Err(self.fail(
                0,
                DecodeErrorKind::TooLarge {
                    size: self.bytes.len(),
                    limit: self.limits.max_bytes,
                },
            ));
        }
        let mut stack: Vec<OpenList> = Vec::new();
        loop {
            let offset = self.pos;
            let (format, length) = match self.header() {
                Ok(h) => h,
                Err(e) => {
                    // Running out of bytes inside a list is best reported as missing children.
                    if self.pos >= self.bytes.len()
                        && let Some(open) = stack.last()
                    {
                        return Err(self.fail(
                            open.offset,
                            DecodeErrorKind::MissingChildren {
                                declared: open.declared,
                                present: open.children.len(),
                            },
                        ));
                    }
                    return Err(e);
                }
            };
            self.items += 1;
            if self.items > self.limits.max_items {
                return Err(self.fail(
                    offset,
                    DecodeErrorKind::TooManyItems {
                        limit: self.limits.max_items,
                    },
                ));
            }
            let mut item = if format == Format::List {
                if length > 0 {
                    if stack.len() >= self.limits.max_depth {
                        return Err(self.fail(
                            offset,
                            DecodeErrorKind::TooDeep {
                                limit: self.limits.max_depth,
                            },
                        ));
                    }
                    // Every child takes at least 2 bytes: never reserve more than could be there.
                    let room = (self.bytes.len() - self.pos) / 2;
                    stack.push(OpenList {
                        offset,
                        declared: length,
                        children: Vec::with_capacity(length.min(room)),
                    });
                    continue;
                }
                if stack.len() >= self.limits.max_depth {
                    return Err(self.fail(
                        offset,
                        DecodeErrorKind::TooDeep {
                            limit: self.limits.max_depth,
                        },
                    ));
                }
                Item::L(Vec::new())
            } else {
                self.leaf(offset, format, length)?
            };
            // Hand the finished item to its parent, closing every list it completes.
            loop {
                match stack.last_mut() {
                    None => {
                        let rest = self.bytes.len() - self.pos;
                        if rest > 0 {
                            return Err(
                                self.fail(self.pos, DecodeErrorKind::TrailingBytes { count: rest })
                            );
                        }
                        return Ok(item);
                    }
                    Some(open) => {
                        open.children.push(item);
                        if open.children.len() < open.declared {
                            break;
                        }
                        let done = stack.pop().map(|o| o.children).unwrap_or_default();
                        item = Item::L(done);
                    }
                }
            }
        }
    }

    /// Reads a format byte and its length field.
    fn header(&mut self) -> Result<(Format, usize), DecodeError> {
        let offset = self.pos;
        let rest = &self.bytes[self.pos..];
        let Some(&format_byte) = rest.first() else {
            return Err(self.fail(
                offset,
                DecodeErrorKind::HeaderPastEnd {
                    needed: 2,
                    available: 0,
                },
            ));
        };
        let nlb = usize::from(format_byte & 3);
        let code = format_byte >> 2;
        if nlb == 0 {
            return Err(self.fail(offset, DecodeErrorKind::NoLengthBytes { format_byte }));
        }
        let Some(format) = Format::from_code(code) else {
            return Err(self.fail(offset, DecodeErrorKind::UnknownFormat { format_byte, code }));
        };
        if rest.len() < 1 + nlb {
            return Err(self.fail(
                offset,
                DecodeErrorKind::HeaderPastEnd {
                    needed: 1 + nlb,
                    available: rest.len(),
                },
            ));
        }
        let length = rest[1..=nlb]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        self.pos += 1 + nlb;
        Ok((format, length))
    }

    /// Reads the data of a non-list item whose header ended at `self.pos`.
    fn leaf(&mut self, offset: usize, format: Format, length: usize) -> Result<Item, DecodeError> {
        let available = self.bytes.len() - self.pos;
        if length > available {
            return Err(self.fail(
                offset,
                DecodeErrorKind::LengthPastEnd {
                    format,
                    declared: length,
                    available,
                },
            ));
        }
        let size = format.element_size();
        if !length.is_multiple_of(size) {
            return Err(self.fail(
                offset,
                DecodeErrorKind::NotMultiple {
                    format,
                    length,
                    size,
                },
            ));
        }
        let data = &self.bytes[self.pos..self.pos + length];
        let item = match format {
            Format::List => unreachable!("lists are handled by the caller"),
            Format::Binary => Item::B(data.to_vec()),
            Format::Boolean => Item::Boolean(data.to_vec()),
            Format::Ascii => Item::A(data.to_vec()),
            Format::Jis8 => Item::J(data.to_vec()),
            Format::Localized => match data {
                [] => Item::W {
                    lsh: 0,
                    bytes: Vec::new(),
                },
                [_] => return Err(self.fail(offset, DecodeErrorKind::ShortLocalized)),
                [a, b, rest @ ..] => Item::W {
                    lsh: u16::from_be_bytes([*a, *b]),
                    bytes: rest.to_vec(),
                },
            },
            Format::I1 => Item::I1(data.iter().map(|&b| b as i8).collect()),
            Format::U1 => Item::U1(data.to_vec()),
            Format::I2 => Item::I2(numbers(data, i16::from_be_bytes)),
            Format::I4 => Item::I4(numbers(data, i32::from_be_bytes)),
            Format::I8 => Item::I8(numbers(data, i64::from_be_bytes)),
            Format::U2 => Item::U2(numbers(data, u16::from_be_bytes)),
            Format::U4 => Item::U4(numbers(data, u32::from_be_bytes)),
            Format::U8 => Item::U8(numbers(data, u64::from_be_bytes)),
            Format::F4 => Item::F4(numbers(data, f32::from_be_bytes)),
            Format::F8 => Item::F8(numbers(data, f64::from_be_bytes)),
        };
        self.pos += length;
        Ok(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn minimal_length_bytes() {
        assert_eq!(hex(&Item::U1(vec![0; 255]).encode().unwrap()[..2]), "a5ff");
        assert_eq!(
            hex(&Item::U1(vec![0; 256]).encode().unwrap()[..3]),
            "a60100"
        );
        assert_eq!(
            hex(&Item::U1(vec![0; 65536]).encode().unwrap()[..4]),
            "a7010000"
        );
    }

    #[test]
    fn too_long_is_refused_and_buffer_restored() {
        let mut buf = vec![9];
        let big = Item::L(vec![Item::B(vec![0; MAX_LENGTH + 1])]);
        let err = big.encode_into(&mut buf).unwrap_err();
        assert!(matches!(err, EncodeError::TooLong { length, .. } if length == MAX_LENGTH + 1));
        assert_eq!(buf, vec![9]);
    }

    #[test]
    fn rejects_with_offsets() {
        let limits = DecodeLimits::default();
        let cases: &[(&[u8], usize, &str)] = &[
            (&[0x40], 0, "0 length bytes"),
            (&[0xfd, 0x01, 0x00], 0, "unknown format code 0o77"),
            (&[0xb1, 0x03, 0, 0, 1], 0, "not a multiple"),
            (
                &[0x01, 0x02, 0xa5, 0x01, 0x01],
                0,
                "declares 2 items but only 1",
            ),
            (&[0x41, 0x01, 0x61, 0x00], 3, "1 trailing bytes"),
            (
                &[0x01, 0x01, 0x41, 0x05, 0x61],
                2,
                "declares 5 bytes but only 1",
            ),
            (&[0x01, 0x01, 0x42, 0x00], 2, "needs 3 bytes but only 2"),
            (&[0x49, 0x01, 0x00], 0, "too short"),
        ];
        for (bytes, offset, reason) in cases {
            let err = Item::decode(bytes, &limits).unwrap_err();
            assert_eq!(err.offset, *offset, "{err}");
            assert!(err.to_string().contains(reason), "{err} lacks {reason}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let nested = [0x01, 0x01, 0x01, 0x01, 0x01, 0x00];
        let tight = DecodeLimits {
            max_depth: 2,
            ..DecodeLimits::default()
        };
        let err = Item::decode(&nested, &tight).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::TooDeep { limit: 2 });
        assert!(
            Item::decode(
                &nested,
                &DecodeLimits {
                    max_depth: 3,
                    ..tight
                }
            )
            .is_ok()
        );

        let few = DecodeLimits {
            max_items: 2,
            ..DecodeLimits::default()
        };
        let err = Item::decode(&[0x01, 0x02, 0xa5, 0x00, 0xa5, 0x00], &few).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::TooManyItems { limit: 2 });
        assert_eq!(err.offset, 4);

        let small = DecodeLimits {
            max_bytes: 3,
            ..DecodeLimits::default()
        };
        let err = Item::decode(&[0x41, 0x02, 0x61, 0x62], &small).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::TooLarge { size: 4, limit: 3 });
    }

    #[test]
    fn huge_declared_list_allocates_only_what_is_there() {
        // L with 16M children but 2 bytes of data: must fail fast without a giant reservation.
        let err = Item::decode(
            &[0x03, 0xff, 0xff, 0xff, 0x01, 0x00],
            &DecodeLimits::default(),
        )
        .unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::MissingChildren {
                declared: 0xFF_FFFF,
                present: 1
            }
        ));
    }

    #[test]
    fn absent_body_differs_from_empty_list() {
        let limits = DecodeLimits::default();
        assert_eq!(Item::decode_body(&[], &limits).unwrap(), None);
        assert_eq!(
            Item::decode_body(&[0x01, 0x00], &limits).unwrap(),
            Some(Item::L(vec![]))
        );
    }
}
