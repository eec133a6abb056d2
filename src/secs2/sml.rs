//! SML, the SECS Message Language notation used in logs, manuals and tools:
//! `S1F3 W <L [2] <U4 1> <U4 2>> .`
//!
//! Printing is stable (the same item always prints the same text) and re-parses to the same
//! bytes. `{}` prints on one line, `{:#}` indents nested lists one per line.
//!
//! Parsing is tolerant of the dialects in the field: `[n]` counts optional (checked when
//! present on lists and arrays of values, a hint on text: `<A[1] 'MDLN'>`), `"…"` strings
//! with backslash escapes and `'…'` strings taken literally (`'C:\recipes'`), both mixed with
//! byte values (`<A "line" 0x0A>`), `<BOOLEAN TRUE>`/`T`/`1`/`0x02`, numbers in decimal, `0x`
//! hex and `0b` binary, `<U4>` for empty, `//` and `/* */` comments, an optional `Name:` prefix
//! and an optional final `.`.
//!
//! Every byte survives printing and parsing back: `BOOLEAN` bytes other than 0 and 1 print as
//! `0x02`, a NaN other than the plain one as its bit pattern (`NaN=0x7FC00001`), and a decimal
//! float beyond its format's range is an error rather than infinity.
//!
//! Text mapping: `A` bytes are Latin-1 (one byte per character up to U+00FF); `J` is JIS X 0201
//! (`¥` is 0x5C, `‾` 0x7E, half-width katakana 0xA1-0xDF); `W` carries its Localized String
//! Header as `lsh=N` when it is not 2 (UTF-8).

use std::fmt::{self, Write as _};
use std::iter::Peekable;
use std::str::CharIndices;

use super::item::{Format, Item, LSH_UTF8};
use super::message::{Message, StreamFunction};

/// Deepest list nesting the parser accepts.
pub const MAX_DEPTH: usize = 256;

/// SML text could not be parsed; `line` and `column` count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct SmlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

// ---------------------------------------------------------------- printing

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        write_item(&mut out, self, f.alternate().then_some(0));
        f.write_str(&out)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.stream_function().to_string();
        if self.w_bit {
            out.push_str(" W");
        }
        match (&self.body, f.alternate()) {
            (Some(item), true) => {
                out.push('\n');
                write_item(&mut out, item, Some(0));
                out.push_str("\n.");
            }
            (Some(item), false) => {
                out.push(' ');
                write_item(&mut out, item, None);
                out.push_str(" .");
            }
            (None, _) => out.push_str(" ."),
        }
        f.write_str(&out)
    }
}

fn write_item(out: &mut String, item: &Item, indent: Option<usize>) {
    out.push('<');
    out.push_str(item.format().name());
    match item {
        Item::L(children) => {
            let _ = write!(out, " [{}]", children.len());
            for child in children {
                match indent {
                    Some(depth) => {
                        out.push('\n');
                        push_indent(out, depth + 1);
                        write_item(out, child, Some(depth + 1));
                    }
                    None => {
                        out.push(' ');
                        write_item(out, child, None);
                    }
                }
            }
            if let (Some(depth), false) = (indent, children.is_empty()) {
                out.push('\n');
                push_indent(out, depth);
            }
        }
        Item::B(v) => v.iter().for_each(|b| {
            let _ = write!(out, " 0x{b:02X}");
        }),
        Item::Boolean(v) => v.iter().for_each(|&b| match b {
            0 => out.push_str(" FALSE"),
            1 => out.push_str(" TRUE"),
            other => {
                let _ = write!(out, " 0x{other:02X}");
            }
        }),
        Item::A(bytes) => {
            out.push(' ');
            write_quoted(out, bytes.iter().map(|&b| Piece::from_latin1(b)));
        }
        Item::J(bytes) => {
            out.push(' ');
            write_quoted(
                out,
                bytes
                    .iter()
                    .map(|&b| jis8_char(b).map_or(Piece::Byte(b), Piece::Char)),
            );
        }
        Item::W { lsh, bytes } => {
            if *lsh != LSH_UTF8 {
                let _ = write!(out, " lsh={lsh}");
            }
            match decode_localized(*lsh, bytes) {
                Some(text) => {
                    out.push(' ');
                    write_quoted(out, text.chars().map(Piece::Char));
                }
                None => bytes.iter().for_each(|b| {
                    let _ = write!(out, " 0x{b:02X}");
                }),
            }
        }
        Item::I1(v) => write_numbers(out, v),
        Item::I2(v) => write_numbers(out, v),
        Item::I4(v) => write_numbers(out, v),
        Item::I8(v) => write_numbers(out, v),
        Item::U1(v) => write_numbers(out, v),
        Item::U2(v) => write_numbers(out, v),
        Item::U4(v) => write_numbers(out, v),
        Item::U8(v) => write_numbers(out, v),
        Item::F4(v) => write_floats(out, v),
        Item::F8(v) => write_floats(out, v),
    }
    out.push('>');
}

fn push_indent(out: &mut String, depth: usize) {
    out.extend(std::iter::repeat_n("  ", depth));
}

fn write_numbers<T: fmt::Display>(out: &mut String, values: &[T]) {
    for v in values {
        let _ = write!(out, " {v}");
    }
}

fn write_floats<T: Float>(out: &mut String, values: &[T]) {
    for &v in values {
        out.push(' ');
        out.push_str(&float_text(v));
    }
}

/// A float as SML writes it: the shortest decimal that reads back as the same value (`-0`,
/// `inf`, `-inf` and `NaN` included), or `NaN=0x7FC00001`, the whole bit pattern in hex, for a
/// NaN other than the one `NaN` reads as (another payload, or the sign bit set).
pub fn float_text<T: Float>(v: T) -> String {
    if v.is_nan() && v.bits() != T::NAN.bits() {
        format!("NaN=0x{:0width$X}", v.bits(), width = T::HEX_DIGITS)
    } else {
        v.to_string()
    }
}

/// `f32` and `f64` as SML and the JSON form read and write them.
pub trait Float: Copy + fmt::Display + std::str::FromStr {
    /// The SECS-II format name (`F4`, `F8`).
    const FORMAT: Format;
    /// Hex digits in the bit pattern (8 for `F4`, 16 for `F8`).
    const HEX_DIGITS: usize;
    /// The NaN that `NaN` reads as.
    const NAN: Self;
    /// The largest finite value, named in out-of-range errors.
    const MAX: Self;
    fn is_nan(self) -> bool;
    fn is_infinite(self) -> bool;
    /// The IEEE-754 bit pattern, widened to 64 bits.
    fn bits(self) -> u64;
    /// The value of a bit pattern, or `None` when it is wider than the format.
    fn from_bits_checked(bits: u64) -> Option<Self>;
    /// The nearest value to `v` (infinite when `v` is beyond the format's range).
    fn from_f64(v: f64) -> Self;
}

impl Float for f32 {
    const FORMAT: Format = Format::F4;
    const HEX_DIGITS: usize = 8;
    const NAN: Self = f32::NAN;
    const MAX: Self = f32::MAX;
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn is_infinite(self) -> bool {
        f32::is_infinite(self)
    }
    fn bits(self) -> u64 {
        u64::from(self.to_bits())
    }
    fn from_bits_checked(bits: u64) -> Option<Self> {
        u32::try_from(bits).ok().map(f32::from_bits)
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Float for f64 {
    const FORMAT: Format = Format::F8;
    const HEX_DIGITS: usize = 16;
    const NAN: Self = f64::NAN;
    const MAX: Self = f64::MAX;
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn is_infinite(self) -> bool {
        f64::is_infinite(self)
    }
    fn bits(self) -> u64 {
        self.to_bits()
    }
    fn from_bits_checked(bits: u64) -> Option<Self> {
        Some(f64::from_bits(bits))
    }
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// One unit of a quoted string: a character, or a raw byte written as `\xNN`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Piece {
    Char(char),
    Byte(u8),
}

impl Piece {
    fn from_latin1(b: u8) -> Piece {
        if (0x20..0x7F).contains(&b) || b == b'\n' || b == b'\r' || b == b'\t' {
            Piece::Char(char::from(b))
        } else {
            Piece::Byte(b)
        }
    }
}

fn write_quoted(out: &mut String, pieces: impl Iterator<Item = Piece>) {
    out.push('"');
    for piece in pieces {
        match piece {
            Piece::Char('"') => out.push_str("\\\""),
            Piece::Char('\\') => out.push_str("\\\\"),
            Piece::Char('\n') => out.push_str("\\n"),
            Piece::Char('\r') => out.push_str("\\r"),
            Piece::Char('\t') => out.push_str("\\t"),
            Piece::Char(c) if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            Piece::Char(c) => out.push(c),
            Piece::Byte(b) => {
                let _ = write!(out, "\\x{b:02X}");
            }
        }
    }
    out.push('"');
}

/// The character a JIS X 0201 byte stands for, or `None` for a byte it leaves unassigned.
pub fn jis8_char(b: u8) -> Option<char> {
    match b {
        0x5C => Some('¥'),
        0x7E => Some('‾'),
        0x00..=0x7F => Some(char::from(b)),
        0xA1..=0xDF => char::from_u32(0xFF61 + u32::from(b - 0xA1)),
        _ => None,
    }
}

/// The JIS X 0201 byte for a character, or `None` when the character set has none.
pub fn jis8_byte(c: char) -> Option<u8> {
    match c {
        '¥' => Some(0x5C),
        '‾' => Some(0x7E),
        '\\' | '~' => None,
        '\0'..='\x7F' => Some(c as u8),
        '\u{FF61}'..='\u{FF9F}' => Some((u32::from(c) - 0xFF61 + 0xA1) as u8),
        _ => None,
    }
}

/// The text of a localized string, decoded by its header, or `None` when it cannot be shown
/// as text that encodes back to the same bytes.
pub fn decode_localized(lsh: u16, bytes: &[u8]) -> Option<String> {
    match lsh {
        0 | 2 => std::str::from_utf8(bytes).ok().map(str::to_owned),
        1 => {
            let (units, rest) = bytes.as_chunks::<2>();
            if !rest.is_empty() {
                return None;
            }
            let units: Vec<u16> = units.iter().map(|u| u16::from_be_bytes(*u)).collect();
            // Only UCS-2 proper: surrogates would not survive a re-encode as pairs reliably.
            if units.iter().any(|u| (0xD800..0xE000).contains(u)) {
                return None;
            }
            String::from_utf16(&units).ok()
        }
        3 => bytes
            .is_ascii()
            .then(|| bytes.iter().map(|&b| char::from(b)).collect()),
        4 => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        _ => None,
    }
}

/// Encodes one character for a localized string with the given header; `None` when that
/// encoding has no such character (or the header names an encoding only byte values can fill).
pub fn encode_localized_char(lsh: u16, c: char, out: &mut Vec<u8>) -> Option<()> {
    match lsh {
        0 | 2 => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        1 => {
            let mut buf = [0u16; 2];
            let units = c.encode_utf16(&mut buf);
            if units.len() != 1 {
                return None;
            }
            out.extend_from_slice(&units[0].to_be_bytes());
        }
        3 if c.is_ascii() => out.push(c as u8),
        4 => out.push(u8::try_from(u32::from(c)).ok()?),
        _ => return None,
    }
    Some(())
}

// ---------------------------------------------------------------- parsing

/// Parses one item: `<L [2] <U4 1> <A "x">>`.
pub fn parse_item(text: &str) -> Result<Item, SmlError> {
    let mut p = Parser::new(text);
    let item = p.item(0)?;
    p.expect_end()?;
    Ok(item)
}

/// Parses one message: `[Name:] S1F3 [W] [item] [.]`.
pub fn parse_message(text: &str) -> Result<Message, SmlError> {
    let mut p = Parser::new(text);
    let message = p.message()?;
    p.expect_end()?;
    Ok(message)
}

/// Parses a sequence of messages, each ended by `.` (the last one's `.` may be left out).
pub fn parse_messages(text: &str) -> Result<Vec<Message>, SmlError> {
    let mut p = Parser::new(text);
    let mut out = Vec::new();
    while p.peek()?.is_some() {
        out.push(p.message()?);
    }
    Ok(out)
}

/// Parses either a message (text starting with `SxFy` or `Name:`) or a bare item.
pub fn parse_message_or_item(text: &str) -> Result<Either, SmlError> {
    let mut p = Parser::new(text);
    let parsed = match p.peek()? {
        Some(Token {
            kind: Tok::Open, ..
        }) => Either::Item(p.item(0)?),
        _ => Either::Message(p.message()?),
    };
    p.expect_end()?;
    Ok(parsed)
}

/// What [`parse_message_or_item`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Either {
    Message(Message),
    Item(Item),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    LBracket,
    RBracket,
    Comma,
    Colon,
    Dot,
    Word(String),
    Str(Vec<Piece>),
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    kind: Tok,
    line: usize,
    column: usize,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Open => "'<'".into(),
            Tok::Close => "'>'".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::Comma => "','".into(),
            Tok::Colon => "':'".into(),
            Tok::Dot => "'.'".into(),
            Tok::Word(w) => format!("'{w}'"),
            Tok::Str(_) => "a quoted string".into(),
        }
    }
}

struct Parser<'a> {
    chars: Peekable<CharIndices<'a>>,
    line: usize,
    column: usize,
    peeked: Option<Token>,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '=' | '$' | '#')
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            chars: text.char_indices().peekable(),
            line: 1,
            column: 1,
            peeked: None,
        }
    }

    fn error_at(line: usize, column: usize, message: impl Into<String>) -> SmlError {
        SmlError {
            line,
            column,
            message: message.into(),
        }
    }

    fn bump(&mut self) -> Option<char> {
        let (_, c) = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn peek_char(&mut self) -> Option<char> {
        self.chars.peek().map(|&(_, c)| c)
    }

    fn peek_second_char(&self) -> Option<char> {
        let mut it = self.chars.clone();
        it.next();
        it.next().map(|(_, c)| c)
    }

    fn skip_space_and_comments(&mut self) -> Result<(), SmlError> {
        loop {
            match self.peek_char() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('/') if self.peek_second_char() == Some('/') => {
                    while let Some(c) = self.bump() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                Some('/') if self.peek_second_char() == Some('*') => {
                    let (line, column) = (self.line, self.column);
                    self.bump();
                    self.bump();
                    let mut prev = '\0';
                    loop {
                        match self.bump() {
                            Some('/') if prev == '*' => break,
                            Some(c) => prev = c,
                            None => {
                                return Err(Self::error_at(
                                    line,
                                    column,
                                    "unterminated /* comment",
                                ));
                            }
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn lex(&mut self) -> Result<Option<Token>, SmlError> {
        self.skip_space_and_comments()?;
        let (line, column) = (self.line, self.column);
        let Some(c) = self.peek_char() else {
            return Ok(None);
        };
        let simple = match c {
            '<' => Some(Tok::Open),
            '>' => Some(Tok::Close),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            ',' => Some(Tok::Comma),
            ':' => Some(Tok::Colon),
            '.' if !self.peek_second_char().is_some_and(|d| d.is_ascii_digit()) => Some(Tok::Dot),
            _ => None,
        };
        let kind = if let Some(kind) = simple {
            self.bump();
            kind
        } else if c == '"' || c == '\'' {
            self.bump();
            Tok::Str(self.string(c, line, column)?)
        } else if is_word_char(c) || c == '.' {
            let mut word = String::new();
            let numeric = c.is_ascii_digit() || matches!(c, '-' | '+' | '.');
            while let Some(c) = self.peek_char() {
                let exponent_sign = matches!(c, '+' | '-') && word.ends_with(['e', 'E']) && numeric;
                if is_word_char(c) && (!matches!(c, '+' | '-') || word.is_empty() || exponent_sign)
                    || (c == '.' && numeric)
                {
                    word.push(c);
                    self.bump();
                } else {
                    break;
                }
            }
            Tok::Word(word)
        } else {
            return Err(Self::error_at(
                line,
                column,
                format!("unexpected character '{c}'"),
            ));
        };
        Ok(Some(Token { kind, line, column }))
    }

    fn string(&mut self, quote: char, line: usize, column: usize) -> Result<Vec<Piece>, SmlError> {
        let mut pieces = Vec::new();
        loop {
            let (el, ec) = (self.line, self.column);
            let Some(c) = self.bump() else {
                return Err(Self::error_at(line, column, "unterminated string"));
            };
            if c == quote {
                return Ok(pieces);
            }
            // Single quotes hold text as it is (`'C:\recipes'`); escapes are for double quotes.
            if c != '\\' || quote == '\'' {
                pieces.push(Piece::Char(c));
                continue;
            }
            let escape = self
                .bump()
                .ok_or_else(|| Self::error_at(line, column, "unterminated string"))?;
            let piece = match escape {
                'n' => Piece::Char('\n'),
                'r' => Piece::Char('\r'),
                't' => Piece::Char('\t'),
                '0' => Piece::Char('\0'),
                '\\' | '"' | '\'' => Piece::Char(escape),
                'x' => {
                    let hex: String = [self.bump(), self.bump()].into_iter().flatten().collect();
                    let byte = (hex.len() == 2)
                        .then(|| u8::from_str_radix(&hex, 16).ok())
                        .flatten()
                        .ok_or_else(|| {
                            Self::error_at(el, ec, "\\x must be followed by two hex digits")
                        })?;
                    Piece::Byte(byte)
                }
                'u' => {
                    let bad = || Self::error_at(el, ec, "\\u must be written \\u{hex}");
                    if self.bump() != Some('{') {
                        return Err(bad());
                    }
                    let mut hex = String::new();
                    loop {
                        match self.bump() {
                            Some('}') => break,
                            Some(d) if d.is_ascii_hexdigit() && hex.len() < 6 => hex.push(d),
                            _ => return Err(bad()),
                        }
                    }
                    let c = u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or_else(bad)?;
                    Piece::Char(c)
                }
                other => {
                    return Err(Self::error_at(
                        el,
                        ec,
                        format!("unknown escape '\\{other}'"),
                    ));
                }
            };
            pieces.push(piece);
        }
    }

    fn peek(&mut self) -> Result<Option<&Token>, SmlError> {
        if self.peeked.is_none() {
            self.peeked = self.lex()?;
        }
        Ok(self.peeked.as_ref())
    }

    fn next(&mut self) -> Result<Option<Token>, SmlError> {
        match self.peeked.take() {
            Some(t) => Ok(Some(t)),
            None => self.lex(),
        }
    }

    fn end_error(&self, wanted: &str) -> SmlError {
        Self::error_at(
            self.line,
            self.column,
            format!("expected {wanted}, found the end of the text"),
        )
    }

    fn next_or(&mut self, wanted: &str) -> Result<Token, SmlError> {
        self.next()?.ok_or_else(|| self.end_error(wanted))
    }

    fn expect_end(&mut self) -> Result<(), SmlError> {
        match self.next()? {
            None => Ok(()),
            Some(t) => Err(Self::error_at(
                t.line,
                t.column,
                format!("unexpected {} after the end", t.kind.describe()),
            )),
        }
    }

    fn message(&mut self) -> Result<Message, SmlError> {
        let first = self.next_or("a stream/function such as S1F1")?;
        let mut sf_token = first.clone();
        // Optional `Name:` prefix.
        if matches!(
            self.peek()?,
            Some(Token {
                kind: Tok::Colon,
                ..
            })
        ) {
            self.next()?;
            sf_token = self.next_or("a stream/function after the name")?;
        }
        let sf_text = match &sf_token.kind {
            Tok::Word(w) => w.clone(),
            Tok::Str(pieces) => pieces
                .iter()
                .map(|p| match p {
                    Piece::Char(c) => *c,
                    Piece::Byte(_) => '?',
                })
                .collect(),
            other => {
                return Err(Self::error_at(
                    sf_token.line,
                    sf_token.column,
                    format!(
                        "expected a stream/function such as S1F1, found {}",
                        other.describe()
                    ),
                ));
            }
        };
        let sf: StreamFunction = sf_text
            .parse()
            .map_err(|e| Self::error_at(sf_token.line, sf_token.column, format!("{e}")))?;
        let mut w_bit = false;
        if let Some(Token {
            kind: Tok::Word(w), ..
        }) = self.peek()?
            && w.eq_ignore_ascii_case("W")
        {
            w_bit = true;
            self.next()?;
        }
        let body = match self.peek()? {
            Some(Token {
                kind: Tok::Open, ..
            }) => Some(self.item(0)?),
            _ => None,
        };
        match self.next()? {
            None | Some(Token { kind: Tok::Dot, .. }) => {}
            Some(t) => {
                return Err(Self::error_at(
                    t.line,
                    t.column,
                    format!(
                        "expected an item, W or the final '.', found {}",
                        t.kind.describe()
                    ),
                ));
            }
        }
        Ok(Message::new(sf, w_bit, body))
    }

    fn item(&mut self, depth: usize) -> Result<Item, SmlError> {
        let open = self.next_or("'<'")?;
        if open.kind != Tok::Open {
            return Err(Self::error_at(
                open.line,
                open.column,
                format!(
                    "expected '<' to start an item, found {}",
                    open.kind.describe()
                ),
            ));
        }
        if depth >= MAX_DEPTH {
            return Err(Self::error_at(
                open.line,
                open.column,
                format!("lists nest deeper than {MAX_DEPTH}"),
            ));
        }
        let name = self.next_or("a format name such as U4")?;
        let Tok::Word(word) = &name.kind else {
            return Err(Self::error_at(
                name.line,
                name.column,
                format!(
                    "expected a format name such as U4, found {}",
                    name.kind.describe()
                ),
            ));
        };
        let format: Format = word
            .parse()
            .map_err(|e| Self::error_at(name.line, name.column, format!("{e}")))?;
        let declared = self.count()?;
        let item = match format {
            Format::List => {
                let mut children = Vec::new();
                loop {
                    match self.peek()? {
                        Some(Token {
                            kind: Tok::Close, ..
                        }) => break,
                        Some(_) => children.push(self.item(depth + 1)?),
                        None => return Err(self.end_error("'>' closing the list")),
                    }
                }
                Item::L(children)
            }
            _ => self.values(format)?,
        };
        let close = self.next_or("'>'")?;
        if close.kind != Tok::Close {
            return Err(Self::error_at(
                close.line,
                close.column,
                format!(
                    "expected '>' closing the {format} item, found {}",
                    close.kind.describe()
                ),
            ));
        }
        // A count on a text item is a hint: dialects count characters, bytes or strings
        // (`<A[1] 'MDLN'>`), so only lists and arrays of values are checked.
        let text = matches!(format, Format::Ascii | Format::Jis8 | Format::Localized);
        if let Some((count, line, column)) = declared.filter(|_| !text) {
            let actual = item.len();
            if count != actual {
                return Err(Self::error_at(
                    line,
                    column,
                    format!("{format} item declares [{count}] but holds {actual}"),
                ));
            }
        }
        Ok(item)
    }

    /// An optional `[n]` (or `,n`) count after the format name.
    fn count(&mut self) -> Result<Option<(usize, usize, usize)>, SmlError> {
        let closing = match self.peek()? {
            Some(Token {
                kind: Tok::LBracket,
                ..
            }) => Some(Tok::RBracket),
            Some(Token {
                kind: Tok::Comma, ..
            }) => None,
            _ => return Ok(None),
        };
        self.next()?;
        let t = self.next_or("a count")?;
        let (line, column) = (t.line, t.column);
        let count = match &t.kind {
            Tok::Word(w) => w.parse::<usize>().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            Self::error_at(
                line,
                column,
                format!("expected a count, found {}", t.kind.describe()),
            )
        })?;
        if let Some(closing) = closing {
            let t = self.next_or("']'")?;
            if t.kind != closing {
                return Err(Self::error_at(
                    t.line,
                    t.column,
                    format!("expected ']' after the count, found {}", t.kind.describe()),
                ));
            }
        }
        Ok(Some((count, line, column)))
    }

    fn values(&mut self, format: Format) -> Result<Item, SmlError> {
        let mut item = Item::empty(format);
        if format == Format::Localized
            && let Some(Token {
                kind: Tok::Word(w), ..
            }) = self.peek()?
            && let Some(n) = w.to_ascii_lowercase().strip_prefix("lsh=")
        {
            let (line, column) = self.peeked.as_ref().map_or((0, 0), |t| (t.line, t.column));
            let lsh = n.parse::<u16>().map_err(|_| {
                Self::error_at(line, column, format!("lsh={n} is not a number 0..=65535"))
            })?;
            self.next()?;
            item = Item::W {
                lsh,
                bytes: Vec::new(),
            };
        }
        loop {
            let token = match self.peek()? {
                Some(Token {
                    kind: Tok::Close, ..
                }) => return Ok(item),
                None => return Err(self.end_error(&format!("'>' closing the {format} item"))),
                Some(_) => self.next()?.ok_or_else(|| self.end_error("a value"))?,
            };
            let (line, column) = (token.line, token.column);
            let err = |m: String| Self::error_at(line, column, m);
            match (&mut item, token.kind) {
                (Item::A(bytes), Tok::Str(pieces)) => {
                    for p in pieces {
                        bytes.push(match p {
                            Piece::Byte(b) => b,
                            Piece::Char(c) => u8::try_from(u32::from(c)).map_err(|_| {
                                err(format!(
                                    "character '{c}' cannot be stored in an A item (one byte per character); use W"
                                ))
                            })?,
                        });
                    }
                }
                (Item::J(bytes), Tok::Str(pieces)) => {
                    for p in pieces {
                        bytes.push(match p {
                            Piece::Byte(b) => b,
                            Piece::Char(c) => jis8_byte(c).ok_or_else(|| {
                                err(format!("character '{c}' is not in JIS X 0201 (J item)"))
                            })?,
                        });
                    }
                }
                (Item::W { lsh, bytes }, Tok::Str(pieces)) => {
                    for p in pieces {
                        match p {
                            Piece::Byte(b) => bytes.push(b),
                            Piece::Char(c) => encode_localized_char(*lsh, c, bytes).ok_or_else(|| {
                                err(format!(
                                    "character '{c}' cannot be written with lsh={lsh}; use byte values"
                                ))
                            })?,
                        }
                    }
                }
                (Item::A(bytes) | Item::J(bytes) | Item::W { bytes, .. }, Tok::Word(w))
                | (Item::B(bytes), Tok::Word(w)) => {
                    bytes.push(parse_int::<u8>(&w).map_err(err)?);
                }
                (Item::Boolean(values), Tok::Word(w)) => values.push(parse_bool(&w).map_err(err)?),
                (Item::I1(v), Tok::Word(w)) => v.push(parse_int(&w).map_err(err)?),
                (Item::I2(v), Tok::Word(w)) => v.push(parse_int(&w).map_err(err)?),
                (Item::I4(v), Tok::Word(w)) => v.push(parse_int(&w).map_err(err)?),
                (Item::I8(v), Tok::Word(w)) => v.push(parse_int(&w).map_err(err)?),
                (Item::U1(v), Tok::Word(w)) => v.push(parse_int(&w).map_err(err)?),
                (Item::U2(v), Tok::Word(w)) => v.push(parse_int(&w).map_err(err)?),
                (Item::U4(v), Tok::Word(w)) => v.push(parse_int(&w).map_err(err)?),
                (Item::U8(v), Tok::Word(w)) => v.push(parse_int(&w).map_err(err)?),
                (Item::F4(v), Tok::Word(w)) => v.push(parse_float(&w).map_err(err)?),
                (Item::F8(v), Tok::Word(w)) => v.push(parse_float(&w).map_err(err)?),
                (_, kind) => {
                    return Err(err(format!(
                        "{} is not a value of a {format} item",
                        kind.describe()
                    )));
                }
            }
        }
    }
}

/// Parses an integer in decimal, `0x` hex or `0b` binary, with an optional sign, checking that
/// it fits the target type.
pub fn parse_int<T: TryFrom<i128>>(word: &str) -> Result<T, String> {
    let (negative, digits) = match word.as_bytes().first() {
        Some(b'-') => (true, &word[1..]),
        Some(b'+') => (false, &word[1..]),
        _ => (false, word),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, body) = if let Some(h) = lower.strip_prefix("0x") {
        (16, h)
    } else if let Some(b) = lower.strip_prefix("0b") {
        (2, b)
    } else {
        (10, lower.as_str())
    };
    let not_number = || format!("'{word}' is not an integer");
    if body.is_empty() || body.starts_with(['+', '-']) {
        return Err(not_number());
    }
    let magnitude = u128::from_str_radix(body, radix).map_err(|_| not_number())?;
    let value = i128::try_from(magnitude).map_err(|_| format!("{word} is out of range"))?;
    let value = if negative { -value } else { value };
    T::try_from(value).map_err(|_| {
        let bits = std::mem::size_of::<T>() * 8;
        format!("{word} is out of range for a {bits}-bit integer of this format")
    })
}

/// Parses a floating point value: decimal with optional exponent, `0x`/`0b` integers, `NaN`,
/// `inf`/`Infinity`, or `NaN=0x…`, a NaN's whole bit pattern (as [`float_text`] writes it).
/// A decimal beyond the format's range is an error, not infinity.
pub fn parse_float<T: Float>(word: &str) -> Result<T, String> {
    let not_number = || format!("'{word}' is not a number");
    let lower = word.to_ascii_lowercase();
    match lower.as_str() {
        "nan" | "+nan" | "-nan" => return Ok(T::NAN),
        "infinity" | "+infinity" | "inf" | "+inf" => return Ok(T::from_f64(f64::INFINITY)),
        "-infinity" | "-inf" => return Ok(T::from_f64(f64::NEG_INFINITY)),
        _ => {}
    }
    if let Some(pattern) = lower.strip_prefix("nan=") {
        let format = T::FORMAT;
        let digits = T::HEX_DIGITS;
        return pattern
            .strip_prefix("0x")
            .filter(|h| !h.is_empty() && h.len() <= digits)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .and_then(T::from_bits_checked)
            .filter(|v| v.is_nan())
            .ok_or_else(|| {
                format!(
                    "'{word}' is not a NaN of {format}: NaN=0x must be followed by up to \
                     {digits} hex digits of a NaN bit pattern (exponent all ones, fraction not zero)"
                )
            });
    }
    let value: T = if lower.contains(['x', 'b']) {
        let i = parse_int::<i64>(word).map_err(|_| not_number())?;
        i.to_string().parse().map_err(|_| not_number())?
    } else {
        word.parse().map_err(|_| not_number())?
    };
    if value.is_infinite() {
        return Err(format!(
            "{word} is out of range for {} (largest magnitude {}); write inf for infinity",
            T::FORMAT,
            T::MAX
        ));
    }
    Ok(value)
}

/// Parses a BOOLEAN value to its byte: `TRUE`/`T` is 1, `FALSE`/`F` is 0, and a number (`2`,
/// `0xFF`) is that byte, kept as it is.
pub fn parse_bool(word: &str) -> Result<u8, String> {
    match word.to_ascii_uppercase().as_str() {
        "TRUE" | "T" => Ok(1),
        "FALSE" | "F" => Ok(0),
        _ => parse_int::<u8>(word).map_err(|_| {
            format!("'{word}' is not a boolean (TRUE, FALSE, T, F or a byte value 0..=255)")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(text: &str) -> String {
        parse_item(text).unwrap().to_string()
    }

    #[test]
    fn prints_the_field_notation() {
        let msg = parse_message("S1F3 W <L [2] <U4 1> <U4 2>> .").unwrap();
        assert_eq!(msg.to_string(), "S1F3 W <L [2] <U4 1> <U4 2>> .");
        assert_eq!(
            format!("{msg:#}"),
            "S1F3 W\n<L [2]\n  <U4 1>\n  <U4 2>\n>\n."
        );
        assert_eq!(parse_message("S1F1 W").unwrap().to_string(), "S1F1 W .");
        assert_eq!(round("<L[0]>"), "<L [0]>");
        assert_eq!(round("<U4>"), "<U4>");
        assert_eq!(round("<A>"), "<A \"\">");
        assert_eq!(round("<B 1 0x02 0b11>"), "<B 0x01 0x02 0x03>");
        assert_eq!(
            round("<BOOLEAN T F 1 0 true 0xFF>"),
            "<BOOLEAN TRUE FALSE TRUE FALSE TRUE 0xFF>"
        );
        assert_eq!(round("<F4 2.5 -0 1e3>"), "<F4 2.5 -0 1000>");
        assert_eq!(round("<I2 -0x10 +7>"), "<I2 -16 7>");
    }

    #[test]
    fn strings_escape_and_mix_bytes() {
        assert_eq!(
            parse_item(r#"<A "a\"b\\c\n" 0x41>"#).unwrap(),
            Item::A(b"a\"b\\c\nA".to_vec())
        );
        assert_eq!(
            parse_item("<A 'single'>").unwrap(),
            Item::A(b"single".to_vec())
        );
        assert_eq!(round(r#"<A "\x01\xFF">"#), r#"<A "\x01\xFF">"#);
        assert_eq!(parse_item("<A \"µ\">").unwrap(), Item::A(vec![0xB5]));
        assert_eq!(parse_item("<J \"¥ｱ\">").unwrap(), Item::J(vec![0x5C, 0xB1]));
        assert_eq!(round("<J \"¥ｱ\">"), "<J \"¥ｱ\">");
        assert_eq!(round("<W \"日本\">"), "<W \"日本\">");
        assert_eq!(
            parse_item("<W lsh=3 \"ab\">").unwrap(),
            Item::W {
                lsh: 3,
                bytes: b"ab".to_vec()
            }
        );
        assert_eq!(round("<W lsh=1 \"ab\">"), "<W lsh=1 \"ab\">");
        assert_eq!(round("<W lsh=8 0x82 0xA0>"), "<W lsh=8 0x82 0xA0>");
    }

    #[test]
    fn comments_names_counts_and_dialects() {
        let text = "// leading\nName:'S2F41' W /* block */ <L,2 <A 'START'> <L [0]>> .";
        let msg = parse_message(text).unwrap();
        assert_eq!((msg.stream, msg.function, msg.w_bit), (2, 41, true));
        assert!(parse_message("S1F13 W.").unwrap().w_bit);
        let many = parse_messages("S1F1 W .\nS1F3 W <L> .\nS2F13 W <L [1] <U4 1>>").unwrap();
        assert_eq!(many.len(), 3);
    }

    #[test]
    fn errors_give_line_and_column() {
        let cases = [
            ("<U4 1 2", 1, 8, "'>'"),
            ("<L [3]\n  <U4 1>\n>", 1, 5, "declares [3] but holds 1"),
            ("<U1 256>", 1, 5, "out of range"),
            ("<X 1>", 1, 2, "unknown SECS-II format"),
            ("<A \"€\">", 1, 4, "cannot be stored in an A item"),
            ("<L\n <A \"open>", 2, 5, "unterminated string"),
            ("<U4 1> extra", 1, 8, "unexpected"),
            ("<BOOLEAN maybe>", 1, 10, "not a boolean"),
            ("<BOOLEAN 256>", 1, 10, "not a boolean"),
            ("<F4 1e39>", 1, 5, "1e39 is out of range for F4"),
            ("<F4 -1e39>", 1, 5, "-1e39 is out of range for F4"),
            ("<F8 1e309>", 1, 5, "1e309 is out of range for F8"),
            ("<F4 NaN=0x3F800000>", 1, 5, "not a NaN of F4"),
            ("<F4 NaN=0x7FF8000000000000>", 1, 5, "not a NaN of F4"),
            ("<F8 NaN=7FF8000000000001>", 1, 5, "not a NaN of F8"),
            ("<U4 [2] 1>", 1, 6, "U4 item declares [2] but holds 1"),
            ("<B [2] 1>", 1, 5, "B item declares [2] but holds 1"),
            ("<U4 \"x\">", 1, 5, "not a value of a U4"),
            (
                "S1F1 W <U4 1> <U4 2>",
                1,
                15,
                "expected an item, W or the final",
            ),
            ("S128F1", 1, 1, "stream 128"),
            ("<J \"\\\\\">", 1, 4, "not in JIS X 0201"),
        ];
        for (text, line, column, needle) in cases {
            let err = match parse_message_or_item(text) {
                Err(e) => e,
                Ok(v) => panic!("{text:?} parsed as {v:?}"),
            };
            assert_eq!((err.line, err.column), (line, column), "{text:?}: {err}");
            assert!(err.message.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = "<L ".repeat(MAX_DEPTH + 1) + &">".repeat(MAX_DEPTH + 1);
        let err = parse_item(&text).unwrap_err();
        assert!(err.message.contains("nest deeper"));
    }

    #[test]
    fn float_printing_round_trips() {
        for v in [0.1f32, f32::MIN_POSITIVE, f32::MAX, -1.234, f32::INFINITY] {
            let text = Item::F4(vec![v]).to_string();
            assert_eq!(parse_item(&text).unwrap(), Item::F4(vec![v]), "{text}");
        }
        let nan = parse_item(&Item::F8(vec![f64::NAN]).to_string()).unwrap();
        assert!(matches!(nan, Item::F8(v) if v[0].is_nan()));
    }

    /// The bytes of an item printed as SML and parsed back.
    fn reprinted_bytes(item: &Item) -> Vec<u8> {
        let text = item.to_string();
        parse_item(&text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .encode()
            .unwrap()
    }

    #[test]
    fn nan_payloads_zero_signs_and_infinities_keep_their_bits() {
        let f4 = [
            0x7FC0_0000u32, // the plain NaN
            0x7FC0_0001,    // another quiet payload
            0xFFC0_0000,    // sign bit set
            0x7F80_0001,    // signalling
            0xFFFF_FFFF,
            0x8000_0000, // -0.0
            0x7F80_0000, // inf
            0xFF80_0000, // -inf
        ];
        for bits in f4 {
            let item = Item::F4(vec![f32::from_bits(bits)]);
            assert_eq!(reprinted_bytes(&item), item.encode().unwrap(), "{item}");
        }
        let f8 = [
            0x7FF8_0000_0000_0000u64,
            0x7FF8_0000_0000_0001,
            0xFFF8_0000_0000_0000,
            0x7FF0_0000_0000_0001,
            0x8000_0000_0000_0000,
            0x7FF0_0000_0000_0000,
            0xFFF0_0000_0000_0000,
        ];
        for bits in f8 {
            let item = Item::F8(vec![f64::from_bits(bits)]);
            assert_eq!(reprinted_bytes(&item), item.encode().unwrap(), "{item}");
        }
        // Readable forms: ordinary values print as before, odd NaNs as their bit pattern.
        assert_eq!(
            Item::F4(vec![
                f32::NAN,
                f32::from_bits(0x7FC0_0001),
                -0.0,
                f32::NEG_INFINITY
            ])
            .to_string(),
            "<F4 NaN NaN=0x7FC00001 -0 -inf>"
        );
        assert_eq!(
            Item::F8(vec![f64::from_bits(0xFFF8_0000_0000_0000)]).to_string(),
            "<F8 NaN=0xFFF8000000000000>"
        );
        // Explicit infinities and the largest finite values are still accepted.
        assert_eq!(
            parse_item("<F4 inf -Infinity 3.4028235e38>").unwrap(),
            Item::F4(vec![f32::INFINITY, f32::NEG_INFINITY, f32::MAX])
        );
        assert_eq!(
            parse_item("<F8 1.7976931348623157e308 1e-400>").unwrap(),
            Item::F8(vec![f64::MAX, 0.0])
        );
    }

    #[test]
    fn booleans_keep_every_byte() {
        let item = Item::Boolean(vec![0, 1, 2, 0x7F, 0xFF]);
        assert_eq!(item.to_string(), "<BOOLEAN FALSE TRUE 0x02 0x7F 0xFF>");
        assert_eq!(parse_item(&item.to_string()).unwrap(), item);
        assert_eq!(
            parse_item("<BOOLEAN 2 T 0>").unwrap(),
            Item::Boolean(vec![2, 1, 0])
        );
        assert_eq!(item.as_bools(), Some(vec![false, true, true, true, true]));
    }

    #[test]
    fn single_quotes_keep_backslashes() {
        assert_eq!(
            parse_item(r"<A 'C:\recipes\new'>").unwrap(),
            Item::A(br"C:\recipes\new".to_vec())
        );
        assert_eq!(parse_item(r"<A 'C:\recipes\new'>").unwrap().len(), 14);
        assert_eq!(parse_item(r"<A 'a\'>").unwrap(), Item::A(br"a\".to_vec()));
        assert_eq!(
            parse_item(r"<A 'a\n\x41'>").unwrap(),
            Item::A(br"a\n\x41".to_vec())
        );
        // Double quotes keep their escapes.
        assert_eq!(
            parse_item(r#"<A "a\n\x41">"#).unwrap(),
            Item::A(b"a\nA".to_vec())
        );
        // And print back as double-quoted text that parses to the same bytes.
        let item = parse_item(r"<A 'C:\recipes\new'>").unwrap();
        assert_eq!(item.to_string(), r#"<A "C:\\recipes\\new">"#);
        assert_eq!(parse_item(&item.to_string()).unwrap(), item);
    }

    #[test]
    fn counts_on_text_items_are_hints() {
        assert_eq!(parse_item("<A[1] 'MDLN'>").unwrap(), Item::ascii("MDLN"));
        assert_eq!(parse_item("<A [4] \"MDLN\">").unwrap(), Item::ascii("MDLN"));
        assert_eq!(parse_item("<A,9 'x'>").unwrap(), Item::ascii("x"));
        assert_eq!(parse_item("<J[1] 'ab'>").unwrap(), Item::J(b"ab".to_vec()));
        assert_eq!(parse_item("<W[1] 'ab'>").unwrap(), Item::localized("ab"));
        // Lists and arrays of values are still checked.
        assert!(parse_item("<L[1]>").is_err());
        assert!(parse_item("<U1[1] 1 2>").is_err());
        assert!(parse_item("<BOOLEAN[2] T>").is_err());
    }
}
