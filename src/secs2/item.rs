//! The SECS-II data item (SEMI E5 §9): a list of items, or an array of values of one format.

use std::fmt;
use std::str::FromStr;

/// A SECS-II format code: the upper six bits of an item's format byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// `L` (octal 00): a list; its length counts child items.
    List,
    /// `B` (octal 10): binary bytes.
    Binary,
    /// `BOOLEAN` (octal 11): one byte per value, zero is false and any other value true.
    Boolean,
    /// `A` (octal 20): ASCII text, kept as raw bytes.
    Ascii,
    /// `J` (octal 21): JIS-8 (JIS X 0201) text, kept as raw bytes.
    Jis8,
    /// `W` (octal 22): 2-byte / localized character string, a 2-byte header then bytes.
    Localized,
    /// `I8` (octal 30).
    I8,
    /// `I1` (octal 31).
    I1,
    /// `I2` (octal 32).
    I2,
    /// `I4` (octal 34).
    I4,
    /// `F8` (octal 40): IEEE-754 double.
    F8,
    /// `F4` (octal 44): IEEE-754 single.
    F4,
    /// `U8` (octal 50).
    U8,
    /// `U1` (octal 51).
    U1,
    /// `U2` (octal 52).
    U2,
    /// `U4` (octal 54).
    U4,
}

impl Format {
    /// Every format, in format-code order.
    pub const ALL: [Format; 16] = [
        Format::List,
        Format::Binary,
        Format::Boolean,
        Format::Ascii,
        Format::Jis8,
        Format::Localized,
        Format::I8,
        Format::I1,
        Format::I2,
        Format::I4,
        Format::F8,
        Format::F4,
        Format::U8,
        Format::U1,
        Format::U2,
        Format::U4,
    ];

    /// The 6-bit format code (octal in the standard: `U4` is 0o54).
    pub const fn code(self) -> u8 {
        match self {
            Format::List => 0o00,
            Format::Binary => 0o10,
            Format::Boolean => 0o11,
            Format::Ascii => 0o20,
            Format::Jis8 => 0o21,
            Format::Localized => 0o22,
            Format::I8 => 0o30,
            Format::I1 => 0o31,
            Format::I2 => 0o32,
            Format::I4 => 0o34,
            Format::F8 => 0o40,
            Format::F4 => 0o44,
            Format::U8 => 0o50,
            Format::U1 => 0o51,
            Format::U2 => 0o52,
            Format::U4 => 0o54,
        }
    }

    /// The format for a 6-bit code, or `None` for a code E5 does not assign.
    pub const fn from_code(code: u8) -> Option<Format> {
        Some(match code {
            0o00 => Format::List,
            0o10 => Format::Binary,
            0o11 => Format::Boolean,
            0o20 => Format::Ascii,
            0o21 => Format::Jis8,
            0o22 => Format::Localized,
            0o30 => Format::I8,
            0o31 => Format::I1,
            0o32 => Format::I2,
            0o34 => Format::I4,
            0o40 => Format::F8,
            0o44 => Format::F4,
            0o50 => Format::U8,
            0o51 => Format::U1,
            0o52 => Format::U2,
            0o54 => Format::U4,
            _ => return None,
        })
    }

    /// Bytes per element (1 for lists' purposes of text and binary formats; 0 for `L`).
    pub const fn element_size(self) -> usize {
        match self {
            Format::List => 0,
            Format::Binary
            | Format::Boolean
            | Format::Ascii
            | Format::Jis8
            | Format::Localized
            | Format::I1
            | Format::U1 => 1,
            Format::I2 | Format::U2 => 2,
            Format::I4 | Format::U4 | Format::F4 => 4,
            Format::I8 | Format::U8 | Format::F8 => 8,
        }
    }

    /// The name used in SML and in the JSON form: `L`, `B`, `BOOLEAN`, `A`, `J`, `W`, `U4`...
    pub const fn name(self) -> &'static str {
        match self {
            Format::List => "L",
            Format::Binary => "B",
            Format::Boolean => "BOOLEAN",
            Format::Ascii => "A",
            Format::Jis8 => "J",
            Format::Localized => "W",
            Format::I8 => "I8",
            Format::I1 => "I1",
            Format::I2 => "I2",
            Format::I4 => "I4",
            Format::F8 => "F8",
            Format::F4 => "F4",
            Format::U8 => "U8",
            Format::U1 => "U1",
            Format::U2 => "U2",
            Format::U4 => "U4",
        }
    }

    /// True for the integer and floating point formats.
    pub const fn is_numeric(self) -> bool {
        matches!(
            self,
            Format::I1
                | Format::I2
                | Format::I4
                | Format::I8
                | Format::U1
                | Format::U2
                | Format::U4
                | Format::U8
                | Format::F4
                | Format::F8
        )
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The format name was not one SML or the JSON form knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown SECS-II format '{0}' (expected L, B, BOOLEAN, A, J, W, I1, I2, I4, I8, U1, U2, U4, U8, F4 or F8)"
)]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    /// Case-insensitive; also takes the aliases seen in the field (`Bool`, `Boolean`, `List`,
    /// `Binary`, `ASCII`, `JIS8`, `C2`, `Unicode`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.to_ascii_uppercase();
        Ok(match upper.as_str() {
            "L" | "LIST" => Format::List,
            "B" | "BINARY" => Format::Binary,
            "BOOLEAN" | "BOOL" => Format::Boolean,
            "A" | "ASCII" => Format::Ascii,
            "J" | "JIS8" | "JIS-8" => Format::Jis8,
            "W" | "C2" | "UNICODE" => Format::Localized,
            "I1" => Format::I1,
            "I2" => Format::I2,
            "I4" => Format::I4,
            "I8" => Format::I8,
            "U1" => Format::U1,
            "U2" => Format::U2,
            "U4" => Format::U4,
            "U8" => Format::U8,
            "F4" => Format::F4,
            "F8" => Format::F8,
            _ => return Err(UnknownFormat(s.to_string())),
        })
    }
}

/// Localized String Header value for UTF-8 (SEMI E5 table of LSH codes).
pub const LSH_UTF8: u16 = 2;

/// One SECS-II item. Every non-list item is an array of zero, one or many values.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// `L`: child items.
    L(Vec<Item>),
    /// `B`: binary bytes.
    B(Vec<u8>),
    /// `BOOLEAN`: one byte per value, kept as sent (zero is false, any other value true; 1 is
    /// what [`Item::boolean`] writes for true). See [`Item::as_bools`].
    Boolean(Vec<u8>),
    /// `A`: ASCII text as raw bytes (any byte value is kept).
    A(Vec<u8>),
    /// `J`: JIS-8 text as raw bytes.
    J(Vec<u8>),
    /// `W`: localized string; `lsh` is the 2-byte Localized String Header (2 = UTF-8) and
    /// `bytes` the encoded characters after it.
    W { lsh: u16, bytes: Vec<u8> },
    /// `I1`.
    I1(Vec<i8>),
    /// `I2`.
    I2(Vec<i16>),
    /// `I4`.
    I4(Vec<i32>),
    /// `I8`.
    I8(Vec<i64>),
    /// `U1`.
    U1(Vec<u8>),
    /// `U2`.
    U2(Vec<u16>),
    /// `U4`.
    U4(Vec<u32>),
    /// `U8`.
    U8(Vec<u64>),
    /// `F4`.
    F4(Vec<f32>),
    /// `F8`.
    F8(Vec<f64>),
}

impl Item {
    /// The item's format.
    pub fn format(&self) -> Format {
        match self {
            Item::L(_) => Format::List,
            Item::B(_) => Format::Binary,
            Item::Boolean(_) => Format::Boolean,
            Item::A(_) => Format::Ascii,
            Item::J(_) => Format::Jis8,
            Item::W { .. } => Format::Localized,
            Item::I1(_) => Format::I1,
            Item::I2(_) => Format::I2,
            Item::I4(_) => Format::I4,
            Item::I8(_) => Format::I8,
            Item::U1(_) => Format::U1,
            Item::U2(_) => Format::U2,
            Item::U4(_) => Format::U4,
            Item::U8(_) => Format::U8,
            Item::F4(_) => Format::F4,
            Item::F8(_) => Format::F8,
        }
    }

    /// The item's length field: child count for `L`, byte count for every other format.
    pub fn length(&self) -> usize {
        match self {
            Item::L(v) => v.len(),
            Item::B(v) | Item::A(v) | Item::J(v) | Item::U1(v) => v.len(),
            Item::Boolean(v) => v.len(),
            Item::W { bytes, .. } => bytes.len() + 2,
            Item::I1(v) => v.len(),
            Item::I2(v) => v.len() * 2,
            Item::I4(v) => v.len() * 4,
            Item::I8(v) => v.len() * 8,
            Item::U2(v) => v.len() * 2,
            Item::U4(v) => v.len() * 4,
            Item::U8(v) => v.len() * 8,
            Item::F4(v) => v.len() * 4,
            Item::F8(v) => v.len() * 8,
        }
    }

    /// Number of values (children for `L`, characters' bytes for text).
    pub fn len(&self) -> usize {
        match self {
            Item::W { bytes, .. } => bytes.len(),
            other => other.length() / other.format().element_size().max(1),
        }
    }

    /// True when the item holds no values (a zero-length item, which GEM reads as "all").
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty item of the given format (`<U4>`, `<L [0]>`, `<A "">`...).
    pub fn empty(format: Format) -> Item {
        match format {
            Format::List => Item::L(Vec::new()),
            Format::Binary => Item::B(Vec::new()),
            Format::Boolean => Item::Boolean(Vec::new()),
            Format::Ascii => Item::A(Vec::new()),
            Format::Jis8 => Item::J(Vec::new()),
            Format::Localized => Item::W {
                lsh: LSH_UTF8,
                bytes: Vec::new(),
            },
            Format::I1 => Item::I1(Vec::new()),
            Format::I2 => Item::I2(Vec::new()),
            Format::I4 => Item::I4(Vec::new()),
            Format::I8 => Item::I8(Vec::new()),
            Format::U1 => Item::U1(Vec::new()),
            Format::U2 => Item::U2(Vec::new()),
            Format::U4 => Item::U4(Vec::new()),
            Format::U8 => Item::U8(Vec::new()),
            Format::F4 => Item::F4(Vec::new()),
            Format::F8 => Item::F8(Vec::new()),
        }
    }

    /// `<A "text">` from a Rust string (Latin-1 characters beyond ASCII become one byte each;
    /// anything wider is replaced by `?`).
    pub fn ascii(text: &str) -> Item {
        Item::A(
            text.chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
                .collect(),
        )
    }

    /// `<BOOLEAN TRUE>` or `<BOOLEAN FALSE>`: one value, written as 1 or 0.
    pub fn boolean(value: bool) -> Item {
        Item::Boolean(vec![u8::from(value)])
    }

    /// The values of a `BOOLEAN` item read as booleans (any non-zero byte is true), or `None`
    /// for any other format.
    pub fn as_bools(&self) -> Option<Vec<bool>> {
        match self {
            Item::Boolean(v) => Some(v.iter().map(|&b| b != 0).collect()),
            _ => None,
        }
    }

    /// `<W "text">`, UTF-8 encoded.
    pub fn localized(text: &str) -> Item {
        Item::W {
            lsh: LSH_UTF8,
            bytes: text.as_bytes().to_vec(),
        }
    }

    /// The children of an `L`, or `None` for any other format.
    pub fn as_list(&self) -> Option<&[Item]> {
        match self {
            Item::L(v) => Some(v),
            _ => None,
        }
    }

    /// The text of an `A`, `J` or `W` item, read leniently (bytes beyond ASCII as Latin-1 for
    /// `A` and `J`, UTF-8 for `W`).
    pub fn as_text(&self) -> Option<String> {
        match self {
            Item::A(b) | Item::J(b) => Some(b.iter().map(|&c| char::from(c)).collect()),
            Item::W { bytes, .. } => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }

    /// The single value of a one-element integer item (any signedness, and B/BOOLEAN), as i128
    /// so every SECS-II integer fits. `None` for lists, text, floats or a count other than 1.
    pub fn as_int(&self) -> Option<i128> {
        fn one<T: Copy + Into<i128>>(v: &[T]) -> Option<i128> {
            match v {
                [x] => Some((*x).into()),
                _ => None,
            }
        }
        match self {
            Item::B(v) | Item::U1(v) => one(v),
            Item::Boolean(v) => match v.as_slice() {
                [x] => Some(i128::from(*x != 0)),
                _ => None,
            },
            Item::I1(v) => one(v),
            Item::I2(v) => one(v),
            Item::I4(v) => one(v),
            Item::I8(v) => one(v),
            Item::U2(v) => one(v),
            Item::U4(v) => one(v),
            Item::U8(v) => one(v),
            _ => None,
        }
    }
}
