//! Matching a message to its definition: which of the SDL's definitions of an S/F a message
//! is, or why none is and how to answer it.
//!
//! The definitions of the message's S/F are tried in file order and the first that matches
//! names the message ([`Matched`]). A definition going the other way is skipped (a host's
//! `h->e` definition is never matched against what the equipment sends). A definition
//! matches when:
//!
//! 1. its keys match: every element with a `key` is there and equals it (a definition
//!    without keys is its S/F's catch-all, put last);
//! 2. the rest of the body matches its structure: formats (`ANY`: any item), lengths, lists
//!    (open-ended in a named definition unless `"exact_length": true`; exact in an unnamed
//!    one);
//! 3. for a remote command (S2F41, S2F49), the parameters: each CPNAME the host sends is one
//!    of the definition's, in any order, with a CPVAL matching its structure, and every
//!    required one is there.
//!
//! When none matches ([`Rejection`]):
//!
//! - the SDL defines no message of the stream: S9F3 ([`Rejected::UnknownStream`]);
//! - it defines the stream but not the function, or no definition's keys matched: S9F5
//!   ([`Rejected::UnknownFunction`]);
//! - a definition's keys matched (or it has none) but the rest did not: S9F7
//!   ([`Rejected::IllegalData`]), or, for a remote command, the S2F42/S2F50 reply with HCACK 3
//!   and the CPACK of each bad parameter ([`Rejected::RemoteCommand`]): 1 the CPNAME does not
//!   exist, 2 the value is not allowed (also for a required parameter that is missing: E5 has
//!   no code of its own for that), 3 the value has the wrong format. The last definition
//!   whose key matched answers (a keyed one before a catch-all);
//! - a remote command whose RCMD is the key of no definition: HCACK 1 (no such command);
//! - every definition goes the other way: S9F7, as for a message sent the wrong way.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

use super::{MessageDef, Mismatch, Sdl, Spec};
use crate::secs2::{Item, Message, StreamFunction};

/// HCACK 1: the command does not exist.
const HCACK_NO_SUCH_COMMAND: u8 = 1;
/// HCACK 3: at least one parameter is invalid.
const HCACK_BAD_PARAMETER: u8 = 3;
/// CPACK 1: the CPNAME does not exist.
const CPACK_NO_SUCH_NAME: u8 = 1;
/// CPACK 2: illegal value for CPVAL (also a required parameter that is missing).
const CPACK_BAD_VALUE: u8 = 2;
/// CPACK 3: illegal format for CPVAL.
const CPACK_BAD_FORMAT: u8 = 3;

/// The value a key element must equal (`"key": 7502`, `"key": "START"`).
#[derive(Clone, Debug, PartialEq)]
pub enum Key {
    /// Text: an `A`, `J` or `W` item with exactly this text.
    Text(String),
    /// Integers: an integer item (or `B`) with exactly these values; a float item with the
    /// same values.
    Int(Vec<i128>),
    /// Numbers with a fraction: a float item with these values (compared at the item's
    /// precision).
    Float(Vec<f64>),
    /// Booleans: a `BOOLEAN` item with these values.
    Bool(Vec<bool>),
}

impl Key {
    /// The key a JSON value writes: a string, a number, a boolean, or an array of numbers or
    /// booleans (an item of several values). `None` for anything else.
    pub fn from_json(value: &Value) -> Option<Key> {
        let int = |v: &Value| {
            v.as_i64()
                .map(i128::from)
                .or_else(|| v.as_u64().map(i128::from))
        };
        match value {
            Value::String(s) => Some(Key::Text(s.clone())),
            Value::Bool(b) => Some(Key::Bool(vec![*b])),
            Value::Number(_) => match int(value) {
                Some(n) => Some(Key::Int(vec![n])),
                None => value.as_f64().map(|f| Key::Float(vec![f])),
            },
            Value::Array(values) if !values.is_empty() => {
                if let Some(ints) = values.iter().map(int).collect::<Option<Vec<_>>>() {
                    return Some(Key::Int(ints));
                }
                if let Some(floats) = values.iter().map(Value::as_f64).collect::<Option<_>>() {
                    return Some(Key::Float(floats));
                }
                values
                    .iter()
                    .map(Value::as_bool)
                    .collect::<Option<_>>()
                    .map(Key::Bool)
            }
            _ => None,
        }
    }

    /// Whether `item` equals the key.
    pub fn matches(&self, item: &Item) -> bool {
        fn ints<T: Copy + Into<i128>>(v: &[T], key: &[i128]) -> bool {
            v.len() == key.len() && v.iter().zip(key).all(|(a, b)| (*a).into() == *b)
        }
        fn floats<T: Copy + Into<f64>>(v: &[T], key: &[f64], narrow: bool) -> bool {
            v.len() == key.len()
                && v.iter().zip(key).all(|(a, b)| {
                    let want = if narrow { f64::from(*b as f32) } else { *b };
                    (*a).into() == want
                })
        }
        match (self, item) {
            (Key::Text(text), Item::A(bytes) | Item::J(bytes)) => {
                text.chars().count() == bytes.len()
                    && text
                        .chars()
                        .zip(bytes)
                        .all(|(c, b)| u32::from(c) == u32::from(*b))
            }
            (Key::Text(text), Item::W { bytes, .. }) => text.as_bytes() == bytes.as_slice(),
            (Key::Int(key), Item::B(v) | Item::U1(v)) => ints(v, key),
            (Key::Int(key), Item::U2(v)) => ints(v, key),
            (Key::Int(key), Item::U4(v)) => ints(v, key),
            (Key::Int(key), Item::U8(v)) => ints(v, key),
            (Key::Int(key), Item::I1(v)) => ints(v, key),
            (Key::Int(key), Item::I2(v)) => ints(v, key),
            (Key::Int(key), Item::I4(v)) => ints(v, key),
            (Key::Int(key), Item::I8(v)) => ints(v, key),
            (Key::Int(key), Item::F4(v)) => {
                let key: Vec<f64> = key.iter().map(|&n| n as f64).collect();
                floats(v, &key, true)
            }
            (Key::Int(key), Item::F8(v)) => {
                let key: Vec<f64> = key.iter().map(|&n| n as f64).collect();
                floats(v, &key, false)
            }
            (Key::Float(key), Item::F4(v)) => floats(v, key, true),
            (Key::Float(key), Item::F8(v)) => floats(v, key, false),
            (Key::Bool(key), Item::Boolean(v)) => {
                v.len() == key.len() && v.iter().zip(key).all(|(a, b)| (*a != 0) == *b)
            }
            _ => false,
        }
    }

    /// Whether an item of format `format` can ever equal the key (checked when the SDL
    /// loads: a key that can never match is a mistake).
    pub fn fits(&self, format: crate::secs2::Format) -> bool {
        use crate::secs2::Format as F;
        match self {
            Key::Text(_) => matches!(format, F::Ascii | F::Jis8 | F::Localized),
            Key::Int(_) => !matches!(
                format,
                F::List | F::Ascii | F::Jis8 | F::Localized | F::Boolean
            ),
            Key::Float(_) => matches!(format, F::F4 | F::F8),
            Key::Bool(_) => format == F::Boolean,
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, v: &[T]) -> fmt::Result {
            match v {
                [one] => write!(f, "{one}"),
                many => {
                    let parts: Vec<String> = many.iter().map(ToString::to_string).collect();
                    write!(f, "[{}]", parts.join(", "))
                }
            }
        }
        match self {
            Key::Text(t) => write!(f, "{t:?}"),
            Key::Int(v) => list(f, v),
            Key::Float(v) => list(f, v),
            Key::Bool(v) => list(f, v),
        }
    }
}

/// The definitions of one S/F that have a key at the same place, by the key's value: what
/// lets a message skip, without looking at them, the definitions whose key it cannot equal.
/// Only single integers and ASCII text are indexed (other keys' definitions are always
/// tried); the file order of the candidates is kept.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct KeyIndex {
    /// The place of the indexed keys (list positions from the root).
    path: Vec<usize>,
    /// Integer key -> the definitions keyed with it there, in file order.
    ints: HashMap<i128, Vec<usize>>,
    /// ASCII text key -> the definitions keyed with it there, in file order.
    texts: HashMap<Vec<u8>, Vec<usize>>,
    /// The definitions without an indexed key there: tried whatever the value.
    others: Vec<usize>,
}

/// Fewer definitions than this are scanned; the index pays from here.
const INDEX_FROM: usize = 4;

/// A key's value as the index holds it.
enum Indexed<'a> {
    Int(i128),
    Text(&'a [u8]),
}

fn indexed_key(key: &Key) -> Option<Indexed<'_>> {
    match key {
        Key::Int(v) if v.len() == 1 => Some(Indexed::Int(v[0])),
        Key::Text(t) if t.is_ascii() => Some(Indexed::Text(t.as_bytes())),
        _ => None,
    }
}

/// What the index can say of the item at its place.
enum Probe<'a> {
    /// It is this value: the definitions keyed with it, and the others.
    Value(Indexed<'a>),
    /// It can equal no indexed key (a list, a boolean, several values...): the others only.
    NoIndexedKey,
    /// It cannot be told (a float may equal an integer key; the place is not there): every
    /// definition.
    Scan,
}

fn probe(item: Option<&Item>) -> Probe<'_> {
    fn one<T: Copy + Into<i128>>(v: &[T]) -> Probe<'static> {
        match v {
            [x] => Probe::Value(Indexed::Int((*x).into())),
            _ => Probe::NoIndexedKey,
        }
    }
    match item {
        None => Probe::Scan,
        Some(Item::B(v) | Item::U1(v)) => one(v),
        Some(Item::U2(v)) => one(v),
        Some(Item::U4(v)) => one(v),
        Some(Item::U8(v)) => one(v),
        Some(Item::I1(v)) => one(v),
        Some(Item::I2(v)) => one(v),
        Some(Item::I4(v)) => one(v),
        Some(Item::I8(v)) => one(v),
        // Key::Text compares A and J bytes one to one with its characters, W bytes with its
        // UTF-8: for an ASCII key both are its bytes.
        Some(Item::A(b) | Item::J(b) | Item::W { bytes: b, .. }) => Probe::Value(Indexed::Text(b)),
        Some(Item::F4(_) | Item::F8(_)) => Probe::Scan,
        Some(Item::L(_) | Item::Boolean(_)) => Probe::NoIndexedKey,
    }
}

impl KeyIndex {
    /// The index of an S/F's definitions, if enough of them share a key place.
    pub(super) fn build(defs: &[MessageDef]) -> Option<KeyIndex> {
        if defs.len() < INDEX_FROM {
            return None;
        }
        let mut counts: HashMap<&[usize], usize> = HashMap::new();
        for def in defs {
            for (path, key) in &def.keys {
                if indexed_key(key).is_some() {
                    *counts.entry(path.as_slice()).or_default() += 1;
                }
            }
        }
        // The most shared place (the first in file order among equals).
        let mut best: Option<(&[usize], usize)> = None;
        for def in defs {
            for (path, _) in &def.keys {
                let n = counts.get(path.as_slice()).copied().unwrap_or(0);
                if best.is_none_or(|(_, m)| n > m) {
                    best = Some((path.as_slice(), n));
                }
            }
        }
        let (path, n) = best?;
        if n < INDEX_FROM / 2 {
            return None;
        }
        let mut index = KeyIndex {
            path: path.to_vec(),
            ..KeyIndex::default()
        };
        for (i, def) in defs.iter().enumerate() {
            let key = def
                .keys
                .iter()
                .filter(|(p, _)| p.as_slice() == path)
                .find_map(|(_, k)| indexed_key(k));
            match key {
                Some(Indexed::Int(v)) => index.ints.entry(v).or_default().push(i),
                Some(Indexed::Text(t)) => index.texts.entry(t.to_vec()).or_default().push(i),
                None => index.others.push(i),
            }
        }
        Some(index)
    }

    /// The definitions a message may match, in file order.
    fn candidates<'a>(&'a self, body: Option<&'a Item>) -> Order<'a> {
        let mut at = body;
        for &i in &self.path {
            at = at.and_then(Item::as_list).and_then(|c| c.get(i));
        }
        let keyed: &[usize] = match probe(at) {
            Probe::Scan => return Order::All(0..usize::MAX),
            Probe::NoIndexedKey => &[],
            Probe::Value(Indexed::Int(v)) => self.ints.get(&v).map_or(&[], Vec::as_slice),
            Probe::Value(Indexed::Text(t)) => self.texts.get(t).map_or(&[], Vec::as_slice),
        };
        Order::Merge {
            a: &self.others,
            b: keyed,
        }
    }
}

/// The places of the definitions to try, in file order.
enum Order<'a> {
    /// Every one (bounded by the caller).
    All(std::ops::Range<usize>),
    /// Two ascending lists merged.
    Merge { a: &'a [usize], b: &'a [usize] },
}

impl Iterator for Order<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            Order::All(range) => range.next(),
            Order::Merge { a, b } => {
                let take_a = match (a.first(), b.first()) {
                    (Some(x), Some(y)) => x < y,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => return None,
                };
                let list = if take_a { a } else { b };
                let (first, rest) = list.split_first()?;
                *list = rest;
                Some(*first)
            }
        }
    }
}

/// A remote command definition (S2F41, S2F49): its RCMD and its parameters by CPNAME.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteCommandDef {
    /// The command this definition is for (its key); `None`: any command.
    pub rcmd: Option<Key>,
    /// The parameters, by CPNAME, in the order the SDL lists them.
    pub parameters: Vec<ParameterDef>,
}

/// One parameter of a remote command definition.
#[derive(Clone, Debug, PartialEq)]
pub struct ParameterDef {
    /// CPNAME.
    pub name: String,
    /// The structure of its value (CPVAL, or CEPVAL for S2F49).
    pub value: Spec,
    /// Whether the host must send it (`false` when listed in `optional`).
    pub required: bool,
}

/// The definition a message matched.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Matched<'a> {
    pub definition: &'a MessageDef,
    /// Its place among the definitions of its S/F.
    pub index: usize,
}

/// Why a message matched none of its S/F's definitions, and how to answer it.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub kind: Rejected,
    /// Where and why, for the log and the Errors table.
    pub mismatch: Mismatch,
    /// The definition whose keys matched but whose body did not, if one did (`""` for an
    /// unnamed one).
    pub definition: Option<String>,
}

/// What a [`Rejection`] is answered with.
#[derive(Clone, Debug, PartialEq)]
pub enum Rejected {
    /// S9F3: the SDL defines no message of this stream.
    UnknownStream,
    /// S9F5: the SDL defines the stream but not this function, or none of the function's
    /// definitions' keys matched.
    UnknownFunction,
    /// S9F7: a definition's keys matched (or it has none) but the rest of the body did not,
    /// or the message goes the wrong way.
    IllegalData,
    /// A remote command refused: the S2F42 (S2F50) `<L[2] <B HCACK> <L[n] <L[2] CPNAME <B
    /// CPACK>>…>>`: HCACK 1 (no such command) or 3 (and each bad parameter's CPACK).
    RemoteCommand {
        hcack: u8,
        parameters: Vec<(Item, u8)>,
    },
}

impl Rejection {
    /// The stream 9 function that answers it (3, 5 or 7); `None` for a remote command, which
    /// is answered with its reply ([`Rejection::reply_body`]).
    pub fn stream_nine(&self) -> Option<u8> {
        match self.kind {
            Rejected::UnknownStream => Some(3),
            Rejected::UnknownFunction => Some(5),
            Rejected::IllegalData => Some(7),
            Rejected::RemoteCommand { .. } => None,
        }
    }

    /// The body of the S2F42/S2F50 that refuses a remote command; `None` otherwise.
    pub fn reply_body(&self) -> Option<Item> {
        let Rejected::RemoteCommand { hcack, parameters } = &self.kind else {
            return None;
        };
        let errors = parameters
            .iter()
            .map(|(name, cpack)| Item::L(vec![name.clone(), Item::B(vec![*cpack])]))
            .collect();
        Some(Item::L(vec![Item::B(vec![*hcack]), Item::L(errors)]))
    }
}

/// How one definition took a message.
enum Outcome {
    Matched,
    /// A key is absent or differs: try the next definition.
    KeyMissed,
    /// The keys matched but the rest did not.
    Failed(Rejected, Mismatch),
}

/// RCMD and CPNAME are text (A) or, on some tools, integers.
fn name_of(item: &Item) -> Option<String> {
    if let Some(t) = item.as_text() {
        return Some(t);
    }
    item.as_int().map(|v| v.to_string())
}

/// The place of RCMD in a remote command's body, and of its parameter list.
pub(super) fn remote_layout(sf: StreamFunction) -> Option<(usize, usize)> {
    match (sf.stream, sf.function) {
        (2, 41) => Some((0, 1)),
        (2, 49) => Some((2, 3)),
        _ => None,
    }
}

impl Sdl {
    /// The definition of its S/F that `message` matches (the first in file order), or why
    /// none does and how to answer it; see the [module documentation](self). `sent_by_host`
    /// says which way the message goes.
    pub fn matching(
        &self,
        message: &Message,
        sent_by_host: bool,
    ) -> Result<Matched<'_>, Rejection> {
        let sf = message.stream_function();
        let top = |kind: Rejected, m: String, definition: Option<String>| Rejection {
            kind,
            mismatch: Mismatch {
                path: sf.to_string(),
                message: m,
            },
            definition,
        };
        let Some(defs) = self.messages.get(&sf).filter(|d| !d.is_empty()) else {
            let kind = if self.messages.keys().any(|k| k.stream == sf.stream) {
                Rejected::UnknownFunction
            } else {
                Rejected::UnknownStream
            };
            return Err(top(
                kind,
                format!("not defined in the SDL {}", self.file.display()),
                None,
            ));
        };
        // The failure to report: the last keyed definition whose keys matched, else the last
        // keyless one.
        let mut keyed_failure: Option<(usize, Rejected, Mismatch)> = None;
        let mut keyless_failure: Option<(usize, Rejected, Mismatch)> = None;
        let order = match self.indices.get(&sf) {
            Some(index) => index.candidates(message.body.as_ref()),
            None => Order::All(0..defs.len()),
        };
        for index in order {
            let Some(def) = defs.get(index) else {
                break;
            };
            if !def.direction.allows(sent_by_host) {
                continue;
            }
            match self.match_definition(def, message) {
                Outcome::Matched => {
                    return Ok(Matched {
                        definition: def,
                        index,
                    });
                }
                Outcome::KeyMissed => {}
                Outcome::Failed(kind, mismatch) => {
                    let slot = if def.is_keyed() {
                        &mut keyed_failure
                    } else {
                        &mut keyless_failure
                    };
                    *slot = Some((index, kind, mismatch));
                }
            }
        }
        if !defs.iter().any(|d| d.direction.allows(sent_by_host)) {
            let why = if sent_by_host {
                "the SDL says the equipment sends it, not the host"
            } else {
                "the SDL says the host sends it, not the equipment"
            };
            return Err(top(Rejected::IllegalData, why.into(), None));
        }
        if let Some((index, kind, mismatch)) = keyed_failure.or(keyless_failure) {
            return Err(Rejection {
                kind,
                mismatch,
                definition: Some(defs[index].name_or_empty().to_string()),
            });
        }
        // No definition's keys matched.
        let names: Vec<&str> = defs
            .iter()
            .filter(|d| d.direction.allows(sent_by_host))
            .map(|d| d.name.as_deref().unwrap_or("(unnamed)"))
            .collect();
        let rcmd = remote_layout(sf).and_then(|(at, _)| match &message.body {
            Some(Item::L(children)) => children.get(at).and_then(name_of),
            _ => None,
        });
        if let Some(rcmd) = rcmd
            && defs.iter().any(|d| d.remote_command.is_some())
        {
            return Err(top(
                Rejected::RemoteCommand {
                    hcack: HCACK_NO_SUCH_COMMAND,
                    parameters: Vec::new(),
                },
                format!(
                    "no remote command {rcmd:?} among its definitions ({})",
                    names.join(", ")
                ),
                None,
            ));
        }
        Err(top(
            Rejected::UnknownFunction,
            format!(
                "matches none of its definitions ({}): no key matched",
                names.join(", ")
            ),
            None,
        ))
    }

    fn match_definition(&self, def: &MessageDef, message: &Message) -> Outcome {
        for (path, key) in &def.keys {
            let mut at = message.body.as_ref();
            for &i in path {
                at = at.and_then(Item::as_list).and_then(|c| c.get(i));
            }
            if !at.is_some_and(|item| key.matches(item)) {
                return Outcome::KeyMissed;
            }
        }
        let illegal = |m: String| {
            Outcome::Failed(
                Rejected::IllegalData,
                Mismatch {
                    path: message.stream_function().to_string(),
                    message: m,
                },
            )
        };
        let body = match (&def.body, &message.body) {
            (None, None) => return Outcome::Matched,
            (None, Some(_)) => return illegal("has no body in the SDL, but one was given".into()),
            (Some(_), None) => return illegal("needs a body (see the SDL)".into()),
            (Some(spec), Some(item)) => {
                if let Err(mut e) = self.match_spec(spec, item) {
                    e.path = format!("body{}", e.path);
                    return Outcome::Failed(Rejected::IllegalData, e);
                }
                item
            }
        };
        match (
            &def.remote_command,
            remote_layout(message.stream_function()),
        ) {
            (Some(command), Some((_, at))) => {
                let given = body
                    .as_list()
                    .and_then(|c| c.get(at))
                    .and_then(Item::as_list)
                    .unwrap_or(&[]);
                let bad = self.check_parameters(command, given);
                if bad.is_empty() {
                    return Outcome::Matched;
                }
                let names: Vec<String> = bad
                    .iter()
                    .map(|(n, c)| format!("{} CPACK {c}", name_of(n).unwrap_or_default()))
                    .collect();
                Outcome::Failed(
                    Rejected::RemoteCommand {
                        hcack: HCACK_BAD_PARAMETER,
                        parameters: bad,
                    },
                    Mismatch {
                        path: format!("body[{at}]"),
                        message: format!("invalid parameters ({})", names.join(", ")),
                    },
                )
            }
            _ => Outcome::Matched,
        }
    }

    /// The CPNAME and CPACK of each bad parameter: those the host sent in its order, then the
    /// required ones it did not send, in the definition's order.
    fn check_parameters(&self, command: &RemoteCommandDef, given: &[Item]) -> Vec<(Item, u8)> {
        let mut bad = Vec::new();
        let mut seen = vec![false; command.parameters.len()];
        for pair in given {
            // The structure was checked: each is <L[2] CPNAME CPVAL>.
            let Some([cpname, value]) = pair.as_list().and_then(|c| <&[Item; 2]>::try_from(c).ok())
            else {
                continue;
            };
            let found =
                name_of(cpname).and_then(|n| command.parameters.iter().position(|p| p.name == n));
            let Some(i) = found else {
                bad.push((cpname.clone(), CPACK_NO_SUCH_NAME));
                continue;
            };
            if std::mem::replace(&mut seen[i], true) {
                // Sent twice: the second value is not a legal one.
                bad.push((cpname.clone(), CPACK_BAD_VALUE));
                continue;
            }
            let spec = &command.parameters[i].value;
            if self.match_spec(spec, value).is_err() {
                let code = if self.format_fits(spec, value) {
                    CPACK_BAD_VALUE
                } else {
                    CPACK_BAD_FORMAT
                };
                bad.push((cpname.clone(), code));
            }
        }
        for (p, seen) in command.parameters.iter().zip(seen) {
            if p.required && !seen {
                bad.push((Item::ascii(&p.name), CPACK_BAD_VALUE));
            }
        }
        bad
    }

    /// Whether the item has a format the structure allows at its top (its values or
    /// elements may still not match).
    fn format_fits(&self, spec: &Spec, item: &Item) -> bool {
        match spec {
            Spec::Any => true,
            Spec::Key(inner, _) => self.format_fits(inner, item),
            Spec::Item(_) | Spec::Inline(_) => self
                .item_def(spec)
                .is_none_or(|d| d.formats.is_empty() || d.formats.contains(&item.format())),
            Spec::List(_) | Spec::ListOrEmpty(_) | Spec::Open { .. } | Spec::Repeat(_) => {
                matches!(item, Item::L(_))
            }
        }
    }
}

/// Where the keys of a body structure are: list positions from the root, and the key.
/// Keys under a repeated list (`L*`) are refused when the SDL loads.
pub(super) fn key_paths(spec: &Spec, path: &mut Vec<usize>, out: &mut Vec<(Vec<usize>, Key)>) {
    match spec {
        Spec::Key(inner, key) => {
            out.push((path.clone(), key.clone()));
            key_paths(inner, path, out);
        }
        other => {
            for (i, s) in other.elements().unwrap_or(&[]).iter().enumerate() {
                path.push(i);
                key_paths(s, path, out);
                path.pop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::secs2::sml;

    fn sdl(v: serde_json::Value) -> Sdl {
        Sdl::from_value(Path::new("t.sdl"), &v).unwrap()
    }

    fn m(text: &str) -> Message {
        sml::parse_message(text).unwrap()
    }

    /// The name of the definition a message the equipment sends matches, or the stream 9
    /// function (or `0` for a remote command's reply) of its rejection.
    fn matched(s: &Sdl, text: &str) -> Result<String, u8> {
        s.matching(&m(text), false)
            .map(|m| m.definition.name_or_empty().to_string())
            .map_err(|r| r.stream_nine().unwrap_or(0))
    }

    #[test]
    fn an_unnamed_definition_per_sf_loads_as_before() {
        let s = sdl(json!({
            "items": {"CEID": {"format": "U4"}},
            "messages": {"S6": {"F11": {"direction": "h<-e", "body": ["U4", "CEID", {"L": ["U4"]}]}}}
        }));
        let def = s.message("S6F11".parse().unwrap()).unwrap();
        assert_eq!(def.name, None);
        assert!(!def.is_keyed());
        assert_eq!(
            def.body,
            Some(Spec::List(vec![
                Spec::Inline(Box::new(crate::sdl::ItemDef {
                    name: String::new(),
                    doc: None,
                    formats: vec![crate::secs2::Format::U4],
                    length: None,
                    codes: Vec::new(),
                })),
                Spec::Item("CEID".into()),
                Spec::List(vec![Spec::Inline(Box::new(crate::sdl::ItemDef {
                    name: String::new(),
                    doc: None,
                    formats: vec![crate::secs2::Format::U4],
                    length: None,
                    codes: Vec::new(),
                }))]),
            ]))
        );
        // Exact lengths, as before: an extra element is S9F7.
        assert_eq!(
            matched(&s, "S6F11 W <L [3] <U4 1> <U4 2> <L [1] <U4 3>>>"),
            Ok(String::new())
        );
        assert_eq!(
            matched(&s, "S6F11 W <L [4] <U4 1> <U4 2> <L [1] <U4 3>> <U4 9>>"),
            Err(7)
        );
        assert_eq!(
            matched(&s, "S6F11 W <L [3] <U4 1> <U4 2> <L [2] <U4 3> <U4 4>>>"),
            Err(7)
        );
    }

    #[test]
    fn named_definitions_keep_file_order_and_open_lists() {
        let s = sdl(json!({
            "items": {"CEID": {"format": "U4"}, "DATAID": {"format": "U4"}},
            "messages": {"S6F11": [
                {"name": "Exact", "body": ["DATAID", {"name": "CEID", "key": 1}, {"L": ["U4"], "exact_length": true}]},
                {"name": "Open", "body": ["DATAID", {"name": "CEID", "key": 1}, {"L": ["U4"]}]},
                {"name": "Rest", "body": ["DATAID", "CEID"]}
            ]}
        }));
        assert_eq!(
            s.definitions("S6F11".parse().unwrap())
                .iter()
                .map(|d| d.name_or_empty())
                .collect::<Vec<_>>(),
            ["Exact", "Open", "Rest"]
        );
        assert_eq!(
            matched(&s, "S6F11 W <L [3] <U4 7> <U4 1> <L [1] <U4 3>>>"),
            Ok("Exact".into())
        );
        // One more element in the inner list: not the exact one, the open one.
        assert_eq!(
            matched(&s, "S6F11 W <L [3] <U4 7> <U4 1> <L [2] <U4 3> <U4 4>>>"),
            Ok("Open".into())
        );
        // The outer list is open in every named definition: four elements still match.
        assert_eq!(
            matched(&s, "S6F11 W <L [4] <U4 7> <U4 1> <L [1] <U4 3>> <A \"x\">>"),
            Ok("Exact".into())
        );
        assert_eq!(
            matched(&s, "S6F11 W <L [2] <U4 7> <U4 2>>"),
            Ok("Rest".into())
        );
        assert_eq!(
            s.named("Open")
                .map(|(sf, d)| (sf.to_string(), d.is_keyed())),
            Some(("S6F11".into(), true))
        );
        assert_eq!(s.names(), ["Exact", "Open", "Rest"]);
    }

    #[test]
    fn keys_compare_values_of_every_format() {
        let cases: &[(serde_json::Value, &str, bool)] = &[
            (json!(7502), "<U4 7502>", true),
            (json!(7502), "<U2 7502>", true),
            (json!(7502), "<I8 7502>", true),
            (json!(7502), "<U4 7503>", false),
            (json!(7502), "<U4 7502 1>", false),
            (json!(7502), "<A \"7502\">", false),
            (json!("START"), "<A \"START\">", true),
            (json!("START"), "<A \"start\">", false),
            (json!("START"), "<W \"START\">", true),
            (json!("START"), "<U1 1>", false),
            (json!(1.5), "<F4 1.5>", true),
            (json!(0.1), "<F4 0.1>", true),
            (json!(0.1), "<F8 0.1>", true),
            (json!(2), "<F8 2.0>", true),
            (json!(1.5), "<U4 1>", false),
            (json!(true), "<BOOLEAN TRUE>", true),
            (json!(true), "<BOOLEAN FALSE>", false),
            (json!([1, 2]), "<B 0x01 0x02>", true),
            (json!([1, 2]), "<B 0x01>", false),
            (json!([true, false]), "<BOOLEAN TRUE FALSE>", true),
            (json!(5), "<L [1] <U4 5>>", false),
        ];
        for (key, item, want) in cases {
            let k = Key::from_json(key).unwrap();
            let item = sml::parse_item(item).unwrap();
            assert_eq!(k.matches(&item), *want, "{key} vs {item}");
        }
        for bad in [
            json!(null),
            json!({}),
            json!([]),
            json!([1, "a"]),
            json!([[1]]),
        ] {
            assert_eq!(Key::from_json(&bad), None, "{bad}");
        }
    }

    #[test]
    fn mistakes_in_named_definitions_say_where() {
        let bad = [
            (
                json!({"messages": {"S6F11": [{"name": "A"}, {"name": "A"}]}}),
                "messages.S6F11[1].name: the name 'A' is already used by S6F11",
            ),
            (
                json!({"messages": {"S6F11": [{"name": "A"}], "S6F13": {"name": "A"}}}),
                "messages.S6F13.name: the name 'A' is already used by S6F11",
            ),
            (
                json!({"messages": {"S6F11": {"name": 3}}}),
                "messages.S6F11.name: expected the definition's name as a non-empty string",
            ),
            (
                json!({"messages": {"S6F11": {"name": "A", "body": {"L*": [{"format": "U4", "key": 1}]}}}}),
                "messages.S6F11.body.L*[0].key: a key cannot be inside a repeated list",
            ),
            (
                json!({"messages": {"S6F11": {"name": "A", "body": [{"format": "U4", "key": {"x": 1}}]}}}),
                "messages.S6F11.body[0].key: expected the value the item must equal",
            ),
            (
                json!({"messages": {"S6F11": {"name": "A", "body": [{"format": "U4", "key": "START"}]}}}),
                "messages.S6F11.body[0].key: key \"START\" can never equal an item of format U4",
            ),
            (
                json!({"messages": {"S6F11": {"name": "A", "body": {"L": ["U4"], "key": 1}}}}),
                "messages.S6F11.body.key: a key is the value of an item; a list cannot have one",
            ),
            (
                json!({"messages": {"S6F11": {"name": "A", "remote_command": {"RCMD": "X"}}}}),
                "messages.S6F11.remote_command: S6F11 is not a remote command",
            ),
            (
                json!({"messages": {"S2F41": {"name": "A", "body": "ANY", "remote_command": {"RCMD": "X"}}}}),
                "messages.S2F41.body: a remote command definition has no body",
            ),
            (
                json!({"messages": {"S2F41": {"name": "A", "remote_command": {"RCMD": "X", "parameters": {"P": "A"}, "optional": ["Q"]}}}}),
                "messages.S2F41.remote_command.optional[0]: 'Q' is not one of the parameters",
            ),
            (
                json!({"messages": {"S2F41": {"name": "A", "remote_command": {"RCMD": "X", "parameters": {"P": {"format": "A", "key": "v"}}}}}}),
                "messages.S2F41.remote_command.parameters.P.key: a remote command's key is its RCMD",
            ),
            (
                json!({"messages": {"S2F41": {"name": "A", "remote_command": {"RCMD": ["X"]}}}}),
                "messages.S2F41.remote_command.RCMD: expected the command as text",
            ),
        ];
        for (v, expect) in bad {
            let e = Sdl::from_value(Path::new("t.sdl"), &v).unwrap_err();
            assert!(e.contains(expect), "{e}\nexpected: {expect}");
        }
        // Lines and warnings.
        let text = "{\"messages\": {\"S6F11\": [\n  {\"name\": \"A\", \"body\": {\"L*\": [\"U4\"], \"exact_length\": true}},\n  {\"name\": \"B\", \"remote_commmand\": 1}\n]}}\n";
        let (_, warnings) = Sdl::parse(Path::new("w.sdl"), text).unwrap();
        let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "w.sdl:2: messages.S6F11[0].body.exact_length: a repeated list (L*) has any number of elements; exact_length has no effect, ignored",
                "w.sdl:3: messages.S6F11[1].remote_commmand: unknown key, ignored; did you mean 'remote_command'?",
            ]
        );
        let e = Sdl::parse(
            Path::new("e.sdl"),
            "{\"messages\": {\"S6F11\": [\n  {\"name\": \"A\"},\n  {\"name\": \"A\"}\n]}}\n",
        )
        .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (3, "messages.S6F11[1].name"),
            "{e}"
        );
    }

    /// The key index finds what a scan of every definition in file order finds.
    #[test]
    fn the_key_index_keeps_file_order_and_finds_what_a_scan_finds() {
        let mut defs = Vec::new();
        for ceid in 1..=6 {
            defs.push(json!({"name": format!("E{ceid}"), "body": ["U4", {"format": ["U4", "U2", "A", "F4"], "key": ceid}, "ANY*"]}));
        }
        // Interleaved: a text key, a float key, a key elsewhere, a second definition of
        // CEID 3 with a stricter body, a catch-all in the middle and one at the end.
        defs.insert(
            2,
            json!({"name": "Text", "body": ["U4", {"format": "A", "key": "START"}, "ANY*"]}),
        );
        defs.insert(
            3,
            json!({"name": "Float", "body": ["U4", {"format": "F4", "key": 2.5}, "ANY*"]}),
        );
        defs.insert(
            4,
            json!({"name": "DataSeven", "body": [{"format": "U4", "key": 7}, "ANY", "ANY*"]}),
        );
        defs.insert(5, json!({"name": "Three", "body": ["U4", {"format": "U4", "key": 3}, {"L": ["A"], "exact_length": true}]}));
        defs.insert(7, json!({"name": "Middle", "body": ["U4", "U2"]}));
        defs.push(json!({"name": "Last", "body": ["U4", "ANY"]}));
        let indexed = sdl(json!({"messages": {"S6F11": defs}}));
        assert!(indexed.indices.contains_key(&"S6F11".parse().unwrap()));
        let mut scanned = indexed.clone();
        scanned.indices.clear();
        let values = [
            "<U4 1>",
            "<U4 3>",
            "<U2 3>",
            "<U4 5>",
            "<U4 6>",
            "<U4 99>",
            "<A \"START\">",
            "<A \"STOP\">",
            "<F4 2.5>",
            "<F4 3>",
            "<U2 2>",
            "<BOOLEAN TRUE>",
            "<U4 3 4>",
            "<L>",
            "<B 0x01>",
            "<I1 -1>",
        ];
        let rests = ["", "<L [1] <A \"x\">>", "<U4 1>"];
        let mut checked = 0;
        for first in ["<U4 7>", "<U4 8>"] {
            for value in values {
                for rest in rests {
                    let text =
                        format!("S6F11 W <L <U4 0> {value} {rest}>").replace("<U4 0>", first);
                    let found = |s: &Sdl| {
                        s.matching(&m(&text), false)
                            .map(|m| m.index)
                            .map_err(|r| (r.kind, r.definition))
                    };
                    assert_eq!(found(&indexed), found(&scanned), "{text}");
                    checked += 1;
                }
            }
            assert_eq!(
                found_name(
                    &indexed,
                    &format!("S6F11 W <L {first} <U4 3> <L [1] <A \"x\">>>")
                ),
                if first == "<U4 7>" {
                    "DataSeven"
                } else {
                    "Three"
                }
            );
        }
        assert_eq!(checked, 96);
        assert_eq!(found_name(&indexed, "S6F11 W <L <U4 8> <U4 3> <L>>"), "E3");
        assert_eq!(
            found_name(&indexed, "S6F11 W <L <U4 8> <U4 3> <U4 1>>"),
            "Last"
        );
        assert_eq!(found_name(&indexed, "S6F11 W <L <U4 8> <U2 9>>"), "Middle");
        assert_eq!(found_name(&indexed, "S6F11 W <L <U4 8> <U4 9>>"), "Last");
        assert_eq!(
            found_name(&indexed, "S6F11 W <L <U4 8> <F4 2.5> <L>>"),
            "Float"
        );
    }

    fn found_name(s: &Sdl, text: &str) -> String {
        s.matching(&m(text), false)
            .map(|m| m.definition.name_or_empty().to_string())
            .unwrap_or_else(|r| panic!("{text}: {}", r.mismatch))
    }

    #[test]
    fn remote_commands_match_by_cpname_in_any_order() {
        let s = sdl(json!({
            "messages": {"S2": {"F41": [
                {"name": "Start", "direction": "h->e", "remote_command": {
                    "RCMD": "START",
                    "parameters": {"LOTID": {"format": "A", "length": "1-8"}, "PPID": "A", "QTY": "U4"},
                    "optional": ["QTY"]}},
                {"name": "Stop", "direction": "h->e", "remote_command": {"RCMD": "STOP"}}
            ], "F49": {"name": "Enhanced", "direction": "h->e", "remote_command": {"RCMD": "GO", "parameters": {"MODE": "U1"}}}}}
        }));
        let host = |text: &str| {
            s.matching(&m(text), true)
                .map(|m| m.definition.name_or_empty().to_string())
                .map_err(|r| (r.stream_nine(), r.reply_body().map(|b| b.to_string())))
        };
        let start = "S2F41 W <L [2] <A \"START\"> <L [2] <L [2] <A \"LOTID\"> <A \"L1\">> <L [2] <A \"PPID\"> <A \"R\">>>>";
        let shuffled = "S2F41 W <L [2] <A \"START\"> <L [3] <L [2] <A \"QTY\"> <U4 25>> <L [2] <A \"PPID\"> <A \"R\">> <L [2] <A \"LOTID\"> <A \"L1\">>>>";
        assert_eq!(host(start), Ok("Start".into()));
        assert_eq!(host(shuffled), Ok("Start".into()));
        assert_eq!(host("S2F41 W <L [2] <A \"STOP\"> <L>>"), Ok("Stop".into()));
        // A missing PPID (CPACK 2) and an unknown SPEED (CPACK 1); a QTY of the wrong format
        // (CPACK 3); a LOTID too long (CPACK 2).
        assert_eq!(
            host("S2F41 W <L [2] <A \"START\"> <L [2] <L [2] <A \"SPEED\"> <U4 3>> <L [2] <A \"LOTID\"> <A \"L1\">>>>"),
            Err((None, Some("<L [2] <B 0x03> <L [2] <L [2] <A \"SPEED\"> <B 0x01>> <L [2] <A \"PPID\"> <B 0x02>>>>".into())))
        );
        assert_eq!(
            host("S2F41 W <L [2] <A \"START\"> <L [3] <L [2] <A \"QTY\"> <A \"many\">> <L [2] <A \"PPID\"> <A \"R\">> <L [2] <A \"LOTID\"> <A \"LOT-000000001\">>>>"),
            Err((None, Some("<L [2] <B 0x03> <L [2] <L [2] <A \"QTY\"> <B 0x03>> <L [2] <A \"LOTID\"> <B 0x02>>>>".into())))
        );
        // STOP takes no parameters.
        assert_eq!(
            host("S2F41 W <L [2] <A \"STOP\"> <L [1] <L [2] <A \"NOW\"> <U1 1>>>>"),
            Err((
                None,
                Some("<L [2] <B 0x03> <L [1] <L [2] <A \"NOW\"> <B 0x01>>>>".into())
            ))
        );
        // No definition of PAUSE: HCACK 1.
        assert_eq!(
            host("S2F41 W <L [2] <A \"PAUSE\"> <L>>"),
            Err((None, Some("<L [2] <B 0x01> <L [0]>>".into())))
        );
        // Not a remote command's shape: no key can be read, S9F5.
        assert_eq!(host("S2F41 W <U4 1>"), Err((Some(5), None)));
        // S2F49: RCMD third, parameters fourth.
        assert_eq!(
            host(
                "S2F49 W <L [4] <U4 1> <A \"OBJ\"> <A \"GO\"> <L [1] <L [2] <A \"MODE\"> <U1 2>>>>"
            ),
            Ok("Enhanced".into())
        );
        assert_eq!(
            host("S2F49 W <L [4] <U4 1> <A \"OBJ\"> <A \"GO\"> <L>>"),
            Err((
                None,
                Some("<L [2] <B 0x03> <L [1] <L [2] <A \"MODE\"> <B 0x02>>>>".into())
            ))
        );
        // The equipment does not send S2F41 (h->e): as before, S9F7.
        assert_eq!(
            s.matching(&m(start), false)
                .map_err(|r| r.stream_nine())
                .err(),
            Some(Some(7))
        );
    }
}
