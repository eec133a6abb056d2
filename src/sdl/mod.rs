//! SECS Definition Language: a JSON file naming an equipment's messages and items, in the
//! shape Ignition's SECS/GEM module uses (`messages.sdl`).
//!
//! ```json
//! {
//!   "doc": ["Etch tool, firmware 3.2"],
//!   "formats": {"U4": {"doc": "Unsigned Integer Four Bytes"}, "U": {"doc": "Any unsigned"}},
//!   "defaults": {"reply": false, "realtime": false, "block": "single"},
//!   "items": {
//!     "A": {"ACKC6": {"doc": "ACKC6, Acknowledge Code", "format": "B", "length": 1,
//!                     "codes": {"0": "Accepted", ">0": "Error, not accepted"}}},
//!     "S": {"SVID": {"doc": "SVID, Status Variable ID", "format": ["U4", "U2", "A"]}}
//!   },
//!   "messages": {
//!     "S1": {"F3": {"doc": "Selected Equipment Status Request", "direction": "h->e",
//!                   "reply": true, "body": "SVID*"}},
//!     "S6": {"F11": {"doc": "Event Report Send", "direction": "h<-e", "reply": "true",
//!                    "block": "multiple", "realtime": true, "SQLTags": false,
//!                    "CommonID": ["CEID"],
//!                    "body": ["DATAID", "CEID", {"L*": ["RPTID", "V*"]}]}}
//!   }
//! }
//! ```
//!
//! - Sections: `doc` (a string or an array of strings), `formats` (by format code, each with
//!   `doc`; codes are L, B, Bool, A, J, Local, B64, I1-I8, U1-U8, F4, F8 and the groups I, U,
//!   F), `items` (flat, or grouped by letter), `defaults` (values for message keys a message
//!   leaves out) and `messages` (`"S1": {"F11": {...}}`, or flat `"S1F11": {...}`).
//! - A message has `doc`, `direction` (`h->e`, `h<-e`, `h<->e`), `reply`, `block` (`single` or
//!   `multiple`), `body`, `realtime`, `SQLTags` and `CommonID` (a list of item names).
//!   Booleans may be written as strings (`"true"`, `"False"`).
//! - An item has `doc`, `format` (one, a list, or a group: `U` is every unsigned size),
//!   `length` (at most N values: `120`; or a range `"1-120"`) and `codes` (value ->
//!   description; keys are a value `"0"`, `">N"`, `"<N"`, a range `"1-63"` or `"*"`).
//! - A body is an item name (`"SVID"`), `"NAME*"` (a list of any number of them), a JSON array
//!   or `{"L": [...]}` (a list of exactly those elements), `{"L*": spec}` (a list of any
//!   number of that element), `{"L?": [...]}` (those elements or an empty list), `"ANY"` (any
//!   one item), a bare format code (`"U4"`: an unnamed item of that format), an item object
//!   (`{"name": "SVID"}` refers to an item; with `format`, `codes` or `length` it defines one
//!   in place), or absent/`null` (header only).
//!
//! Several definitions may share an S/F: write an array of them (`"F11": [{...}, {...}]`).
//! A definition may have a `name` (`"LotStarted"`, unique in the file), which handlers are
//! mapped to; a named definition follows the matching rules of [`matching`]: lists are
//! open-ended (more elements may follow those written) unless the list says
//! `"exact_length": true`, and an item object may have a `key` (`{"name": "CEID", "key":
//! 7502}`), the value it must equal. An unnamed definition keeps exact list lengths, so an
//! SDL with one unnamed definition per S/F checks exactly what it always did. For S2F41 and
//! S2F49 a definition may be a `remote_command` (`{"RCMD": "START", "parameters": {"LOTID":
//! "A"}, "optional": [...]}`) instead of a `body`: RCMD is its key and the parameters are
//! matched by CPNAME, in any order.
//!
//! A key the loader does not know is a [`SdlWarning`] with its file, line and key path; a
//! value of the wrong type is an [`SdlError`] the same way. Known keys match without regard to
//! case (`sqltags` is `SQLTags`).
//!
//! An SDL checks the messages scripts send and those the equipment sends, picks the messages
//! that reach `onSecsGemRealtimeUpdate` (`realtime`) and the tag provider (`SQLTags`), names
//! the CommonID that links related messages, and adds `doc` and `codeDesc` to the JSON form
//! scripts see.

mod load;
mod locate;
pub mod matching;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};

use crate::secs2::{Format, Item, Message, StreamFunction};

pub use matching::{Key, Matched, ParameterDef, Rejected, Rejection, RemoteCommandDef};

/// Who sends a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Host to equipment (`h->e`).
    ToEquipment,
    /// Equipment to host (`h<-e`).
    ToHost,
    /// Either (`h<->e`).
    Both,
}

impl Direction {
    /// Whether a message going this way may be sent by the host (`true`) or by the equipment
    /// (`false`).
    pub fn allows(self, sent_by_host: bool) -> bool {
        match self {
            Direction::Both => true,
            Direction::ToEquipment => sent_by_host,
            Direction::ToHost => !sent_by_host,
        }
    }
}

/// Whether a message may span several SECS-I blocks (`"block": "multiple"`): E5's multi-block
/// messages, which a sender may have to announce with an inquire/grant pair first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Block {
    /// Fits in one block (`"single"`, the default).
    #[default]
    Single,
    /// May span several blocks (`"multiple"`).
    Multiple,
}

/// How a code value is matched.
#[derive(Clone, Debug, PartialEq)]
enum CodeKey {
    Eq(i128),
    Gt(i128),
    Lt(i128),
    Range(i128, i128),
    Any,
}

impl CodeKey {
    fn parse(text: &str) -> Option<CodeKey> {
        let t = text.trim();
        let int = |s: &str| crate::secs2::sml::parse_int::<i128>(s.trim()).ok();
        if t == "*" {
            return Some(CodeKey::Any);
        }
        if let Some(n) = t.strip_prefix('>') {
            return int(n).map(CodeKey::Gt);
        }
        if let Some(n) = t.strip_prefix('<') {
            return int(n).map(CodeKey::Lt);
        }
        if let Some((a, b)) = t.split_once('-').filter(|(a, _)| !a.trim().is_empty()) {
            return Some(CodeKey::Range(int(a)?, int(b)?));
        }
        int(t).map(CodeKey::Eq)
    }

    fn matches(&self, v: i128) -> bool {
        match self {
            CodeKey::Eq(n) => v == *n,
            CodeKey::Gt(n) => v > *n,
            CodeKey::Lt(n) => v < *n,
            CodeKey::Range(a, b) => (*a..=*b).contains(&v),
            CodeKey::Any => true,
        }
    }
}

/// An item definition: named in `items`, or written in place inside a body.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemDef {
    /// The item's name (`SVID`); empty for an unnamed item written in place.
    pub name: String,
    pub doc: Option<String>,
    /// Allowed formats; empty allows any.
    pub formats: Vec<Format>,
    /// Allowed number of values, `(min, max)` (`"length": 120` is `(0, 120)`).
    pub length: Option<(usize, usize)>,
    codes: Vec<(CodeKey, String)>,
}

impl ItemDef {
    /// The description of a coded value (`codeDesc`).
    pub fn code_desc(&self, value: i128) -> Option<&str> {
        self.codes
            .iter()
            .find(|(k, _)| k.matches(value))
            .map(|(_, d)| d.as_str())
    }
}

/// The structure of a body.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    /// An item defined in `items`, by name.
    Item(String),
    /// An item defined in place in the body.
    Inline(Box<ItemDef>),
    /// A list of exactly these elements.
    List(Vec<Spec>),
    /// A list of any number of this element.
    Repeat(Box<Spec>),
    /// A list of exactly these elements, or an empty list (E5's "L,n or L,0").
    ListOrEmpty(Vec<Spec>),
    /// A list whose first elements are these; any more may follow (a list of a named
    /// definition, unless it says `"exact_length": true`). `or_empty`: an empty list matches
    /// too (`L?`).
    Open { elements: Vec<Spec>, or_empty: bool },
    /// An element that must equal a value (`{"name": "CEID", "key": 7502}`): what picks one
    /// definition of an S/F over another. The matching checks keys before the rest.
    Key(Box<Spec>, Key),
    /// Any one item.
    Any,
}

impl Spec {
    /// Whether the structure contains an item of this name anywhere.
    pub fn names(&self, name: &str) -> bool {
        match self {
            Spec::Item(n) => n == name,
            Spec::Inline(def) => def.name == name,
            Spec::List(specs)
            | Spec::ListOrEmpty(specs)
            | Spec::Open {
                elements: specs, ..
            } => specs.iter().any(|s| s.names(name)),
            Spec::Repeat(inner) | Spec::Key(inner, _) => inner.names(name),
            Spec::Any => false,
        }
    }

    /// The elements of a list of fixed elements (exact, open-ended or "or empty"); `None`
    /// for any other structure.
    fn elements(&self) -> Option<&[Spec]> {
        match self {
            Spec::List(specs)
            | Spec::ListOrEmpty(specs)
            | Spec::Open {
                elements: specs, ..
            } => Some(specs),
            _ => None,
        }
    }
}

/// A message definition.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageDef {
    /// The definition's name (`"LotStarted"`), unique in its SDL: what handlers are mapped to
    /// and what a matched message is named by. `None` for an unnamed definition.
    pub name: Option<String>,
    pub doc: Option<String>,
    pub direction: Direction,
    /// The W-bit: a reply is expected.
    pub reply: bool,
    /// Single- or multi-block.
    pub block: Block,
    /// Received from the equipment, it goes to `onSecsGemRealtimeUpdate`.
    pub realtime: bool,
    /// Received from the equipment, its data becomes tags in the realtime tag provider.
    pub sql_tags: bool,
    /// The items whose values make the message's CommonID, in order.
    pub common_id: Vec<String>,
    /// `None`: header only.
    pub body: Option<Spec>,
    /// S2F41 and S2F49 only: a remote command, matched by RCMD and by CPNAME whatever the
    /// order of the parameters (`body` then holds the command's general structure).
    pub remote_command: Option<RemoteCommandDef>,
    /// Where the body's keys are (list positions from the root) and what they must equal.
    keys: Vec<(Vec<usize>, Key)>,
}

impl MessageDef {
    /// The name a message matched by this definition carries (`MessageName`): its name, or
    /// `""` when it has none.
    pub fn name_or_empty(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    /// Whether the definition has keys (a definition without is its S/F's catch-all).
    pub fn is_keyed(&self) -> bool {
        !self.keys.is_empty()
    }
}

/// A loaded SDL file.
#[derive(Clone, Debug, PartialEq)]
pub struct Sdl {
    pub file: PathBuf,
    pub doc: Vec<String>,
    /// The `formats` section: format code -> its doc.
    pub formats: BTreeMap<String, String>,
    pub items: HashMap<String, ItemDef>,
    /// The definitions of each S/F, in file order (at least one each).
    pub messages: BTreeMap<StreamFunction, Vec<MessageDef>>,
    /// Named definitions: name -> S/F and place among that S/F's definitions.
    names: HashMap<String, (StreamFunction, usize)>,
    /// The key index of each S/F with enough keyed definitions.
    indices: HashMap<StreamFunction, matching::KeyIndex>,
}

/// An SDL file could not be used: where (`line` is 0 when the problem is not at one place,
/// `key` is the key path such as `messages.S6.F11.reply`) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", place(file, *line, key, message))]
pub struct SdlError {
    pub file: PathBuf,
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// Something in an SDL file that was ignored, such as an unknown key: the file still loads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", place(file, *line, key, message))]
pub struct SdlWarning {
    pub file: PathBuf,
    pub line: usize,
    pub key: String,
    pub message: String,
}

/// `file:line: key: message`, leaving out what is unknown.
fn place(file: &Path, line: usize, key: &str, message: &str) -> String {
    let mut s = file.display().to_string();
    if line > 0 {
        s.push_str(&format!(":{line}"));
    }
    if !key.is_empty() {
        s.push_str(&format!(": {key}"));
    }
    s.push_str(&format!(": {message}"));
    s
}

/// A message does not match its definition: where (`body[2][0]`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Mismatch {
    pub path: String,
    pub message: String,
}

/// The formats a group code stands for (`U`: every unsigned size), or `None` for a single
/// format code.
fn format_group(name: &str) -> Option<Vec<Format>> {
    Some(match name.to_ascii_uppercase().as_str() {
        "U" => vec![Format::U1, Format::U2, Format::U4, Format::U8],
        "I" => vec![Format::I1, Format::I2, Format::I4, Format::I8],
        "F" => vec![Format::F4, Format::F8],
        "LOCAL" => vec![Format::Localized],
        "B64" => vec![Format::Binary],
        _ => return None,
    })
}

/// The standard catalogue shipped in `sdl/messages.sdl`: what an equipment with no `sdl` key
/// (or `sdl = "standard"`) uses.
pub const STANDARD: &str = include_str!("../../sdl/messages.sdl");

/// The file name the standard catalogue carries.
pub const STANDARD_FILE: &str = "sdl/messages.sdl";

/// The name that selects the standard catalogue in project.toml.
pub const STANDARD_NAME: &str = "standard";

/// The name that switches SDL checking off in project.toml (`sdl = "none"`).
pub const NONE_NAME: &str = "none";

/// Separates the values of one CommonID item (`ECV` of S2F14: `"80,1.5"`).
pub const COMMON_ID_VALUE_SEPARATOR: &str = ",";

/// Separates the parts of a CommonID naming several items (`["DATAID", "CEID"]`: `"7_4000"`).
pub const COMMON_ID_ITEM_SEPARATOR: &str = "_";

impl Sdl {
    /// The standard SDL: the SEMI E5 messages of streams 1-21 the GEM references define, with
    /// their items and code tables (`sdl/messages.sdl`).
    pub fn standard() -> Sdl {
        match Sdl::parse(Path::new(STANDARD_FILE), STANDARD) {
            Ok((sdl, warnings)) if warnings.is_empty() => sdl,
            Ok((_, warnings)) => panic!("the shipped sdl/messages.sdl has warnings: {warnings:?}"),
            Err(e) => panic!("the shipped sdl/messages.sdl is invalid: {e}"),
        }
    }

    /// The standard SDL, loaded once and shared by every equipment that uses it.
    pub fn standard_shared() -> Arc<Sdl> {
        static STANDARD_SDL: OnceLock<Arc<Sdl>> = OnceLock::new();
        STANDARD_SDL
            .get_or_init(|| Arc::new(Sdl::standard()))
            .clone()
    }

    /// Reads an SDL file. Unknown keys come back as warnings (the file still loads); JSON
    /// syntax errors and values of the wrong type are errors, each with its line and key.
    pub fn load(path: &Path) -> Result<(Sdl, Vec<SdlWarning>), SdlError> {
        let text = std::fs::read_to_string(path).map_err(|e| SdlError {
            file: path.to_path_buf(),
            line: 0,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Sdl::parse(path, &text)
    }

    /// Parses SDL text as found in `file` (which names it in errors and warnings).
    pub fn parse(file: &Path, text: &str) -> Result<(Sdl, Vec<SdlWarning>), SdlError> {
        let value: Value = serde_json::from_str(text).map_err(|e| SdlError {
            file: file.to_path_buf(),
            line: e.line(),
            key: String::new(),
            message: format!("not valid JSON: {e}"),
        })?;
        load::Loader::new(file, Some(text)).sdl(&value)
    }

    /// Builds an SDL from its JSON (no line numbers: there is no text). Warnings are dropped;
    /// use [`Sdl::parse`] to see them.
    pub fn from_value(file: &Path, value: &Value) -> Result<Sdl, String> {
        load::Loader::new(file, None)
            .sdl(value)
            .map(|(sdl, _)| sdl)
            .map_err(|e| e.to_string())
    }

    /// The first definition of a message (its only one, unless the SDL names several).
    pub fn message(&self, sf: StreamFunction) -> Option<&MessageDef> {
        self.messages.get(&sf).and_then(|defs| defs.first())
    }

    /// Every definition of a message, in file order (empty when the SDL has none).
    pub fn definitions(&self, sf: StreamFunction) -> &[MessageDef] {
        self.messages.get(&sf).map_or(&[], Vec::as_slice)
    }

    /// The definition named `name`, with its S/F.
    pub fn named(&self, name: &str) -> Option<(StreamFunction, &MessageDef)> {
        let (sf, index) = self.names.get(name)?;
        Some((*sf, self.messages.get(sf)?.get(*index)?))
    }

    /// The names of the named definitions, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.names.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The definition a message matches ([`Sdl::matching`]), or else the first of its S/F:
    /// what annotates it and names its CommonID.
    fn best_definition(
        &self,
        message: &Message,
        sent_by_host: Option<bool>,
    ) -> Option<&MessageDef> {
        let sf = message.stream_function();
        let defs = self.definitions(sf);
        if defs.len() > 1 {
            let by_host = [sent_by_host.unwrap_or(false), sent_by_host.unwrap_or(true)];
            for way in by_host {
                if let Ok(m) = self.matching(message, way) {
                    return Some(m.definition);
                }
            }
        }
        defs.first()
    }

    /// Whether a message the equipment sends goes to the realtime handler
    /// (`onSecsGemRealtimeUpdate`): `"realtime": true` (on any of its definitions; the
    /// gateway asks the definition a message matched).
    pub fn realtime(&self, sf: StreamFunction) -> bool {
        self.definitions(sf).iter().any(|m| m.realtime)
    }

    /// Whether a message the equipment sends becomes tags in the realtime tag provider:
    /// `"SQLTags": true` (on any of its definitions; the gateway asks the definition a
    /// message matched).
    pub fn sql_tags(&self, sf: StreamFunction) -> bool {
        self.definitions(sf).iter().any(|m| m.sql_tags)
    }

    /// The item names whose values make the message's CommonID (as its first definition
    /// says); empty when the SDL names none.
    pub fn common_id(&self, sf: StreamFunction) -> &[String] {
        self.message(sf).map_or(&[], |m| m.common_id.as_slice())
    }

    /// Single- or multi-block, as the SDL says (multi-block if any of its definitions is);
    /// `None` when the message is not defined.
    pub fn block(&self, sf: StreamFunction) -> Option<Block> {
        let defs = self.definitions(sf);
        if defs.is_empty() {
            return None;
        }
        Some(if defs.iter().any(|m| m.block == Block::Multiple) {
            Block::Multiple
        } else {
            Block::Single
        })
    }

    /// The message's description (`"Event Report Send"`), the header `doc` scripts see.
    pub fn doc(&self, sf: StreamFunction) -> Option<&str> {
        self.message(sf).and_then(|m| m.doc.as_deref())
    }

    /// The CommonID string of a message: the values of the items its `CommonID` list names,
    /// found by walking the body against the SDL's body structure. The values of one item
    /// (several occurrences, or a vector item) are joined with `","`
    /// ([`COMMON_ID_VALUE_SEPARATOR`]); the items, in the list's order, with `"_"`
    /// ([`COMMON_ID_ITEM_SEPARATOR`]). Text is taken as it is, numbers in decimal, booleans as
    /// `true`/`false`. S6F11 with `["CEID"]` gives `"4000"`; S2F14 with `["ECV"]` and two
    /// constants `"80,1.5"`; `["DATAID", "CEID"]` gives `"7_4000"`. An item the message does
    /// not carry contributes an empty part. `None` when the SDL names no CommonID for the
    /// message (or does not define it). With several definitions of its S/F, the one it
    /// matches says.
    pub fn common_id_value(&self, message: &Message) -> Option<String> {
        let def = self.best_definition(message, None)?;
        self.common_id_by(def, message)
    }

    /// [`Sdl::common_id_value`] as definition `def` (the one the message matched) says.
    pub fn common_id_by(&self, def: &MessageDef, message: &Message) -> Option<String> {
        if def.common_id.is_empty() {
            return None;
        }
        let mut found: Vec<(&str, &Item)> = Vec::new();
        if let (Some(spec), Some(body)) = (&def.body, &message.body) {
            self.collect_named(spec, body, &mut found);
        }
        let parts: Vec<String> = def
            .common_id
            .iter()
            .map(|name| {
                found
                    .iter()
                    .filter(|(n, _)| n == name)
                    .filter_map(|(_, item)| value_text(item))
                    .collect::<Vec<_>>()
                    .join(COMMON_ID_VALUE_SEPARATOR)
            })
            .collect();
        Some(parts.join(COMMON_ID_ITEM_SEPARATOR))
    }

    /// Every item of `item` that the structure names, in body order.
    fn collect_named<'a>(
        &'a self,
        spec: &'a Spec,
        item: &'a Item,
        out: &mut Vec<(&'a str, &'a Item)>,
    ) {
        match (spec, item) {
            (Spec::Item(name), item) => out.push((name.as_str(), item)),
            (Spec::Inline(def), item) if !def.name.is_empty() => {
                out.push((def.name.as_str(), item))
            }
            (Spec::Key(inner, _), item) => self.collect_named(inner, item, out),
            (Spec::Repeat(inner), Item::L(children)) => {
                for c in children {
                    self.collect_named(inner, c, out);
                }
            }
            (spec, Item::L(children)) => {
                for (s, c) in spec.elements().unwrap_or(&[]).iter().zip(children) {
                    self.collect_named(s, c, out);
                }
            }
            _ => {}
        }
    }

    /// The item definition a structure element stands for.
    fn item_def<'a>(&'a self, spec: &'a Spec) -> Option<&'a ItemDef> {
        match spec {
            Spec::Item(name) => self.items.get(name),
            Spec::Inline(def) => Some(def),
            Spec::Key(inner, _) => self.item_def(inner),
            _ => None,
        }
    }

    /// Checks a message against its definitions ([`Sdl::matching`]): `Ok` if one matches.
    /// `sent_by_host` says which way it goes.
    pub fn check(&self, message: &Message, sent_by_host: bool) -> Result<(), Mismatch> {
        self.matching(message, sent_by_host)
            .map(|_| ())
            .map_err(|r| r.mismatch)
    }

    /// Checks an item against a structure. On a mismatch, the path is relative to `item`
    /// (`[2][0]`; empty for `item` itself): it is made only when something does not match.
    fn match_spec(&self, spec: &Spec, item: &Item) -> Result<(), Mismatch> {
        let fail = |m: String| {
            Err(Mismatch {
                path: String::new(),
                message: m,
            })
        };
        let within = |i: usize, r: Result<(), Mismatch>| {
            r.map_err(|mut e| {
                e.path = format!("[{i}]{}", e.path);
                e
            })
        };
        match spec {
            Spec::Any => Ok(()),
            Spec::Key(inner, _) => self.match_spec(inner, item),
            Spec::Item(_) | Spec::Inline(_) => {
                let Some(def) = self.item_def(spec) else {
                    return fail("the item is not defined in the SDL".to_string());
                };
                let name = if def.name.is_empty() {
                    "the item"
                } else {
                    def.name.as_str()
                };
                if !def.formats.is_empty() && !def.formats.contains(&item.format()) {
                    let allowed: Vec<&str> = def.formats.iter().map(|f| f.name()).collect();
                    return fail(format!(
                        "{name} must be {}, not {}",
                        allowed.join(" or "),
                        item.format()
                    ));
                }
                if let Some((min, max)) = def.length
                    && !(min..=max).contains(&item.len())
                {
                    return fail(format!(
                        "{name} must have {} values, not {}",
                        if min == 0 {
                            format!("at most {max}")
                        } else {
                            format!("{min} to {max}")
                        },
                        item.len()
                    ));
                }
                Ok(())
            }
            Spec::List(specs) | Spec::ListOrEmpty(specs) => match item {
                Item::L(children)
                    if children.is_empty() && matches!(spec, Spec::ListOrEmpty(_)) =>
                {
                    Ok(())
                }
                Item::L(children) if children.len() == specs.len() => {
                    for (i, (s, c)) in specs.iter().zip(children).enumerate() {
                        within(i, self.match_spec(s, c))?;
                    }
                    Ok(())
                }
                Item::L(children) => fail(format!(
                    "expected a list of {} items, found {}",
                    specs.len(),
                    children.len()
                )),
                other => fail(format!(
                    "expected a list of {} items, found {}",
                    specs.len(),
                    other.format()
                )),
            },
            Spec::Open { elements, or_empty } => match item {
                Item::L(children) if children.is_empty() && *or_empty => Ok(()),
                Item::L(children) if children.len() >= elements.len() => {
                    for (i, (s, c)) in elements.iter().zip(children).enumerate() {
                        within(i, self.match_spec(s, c))?;
                    }
                    Ok(())
                }
                Item::L(children) => fail(format!(
                    "expected a list of at least {} items, found {}",
                    elements.len(),
                    children.len()
                )),
                other => fail(format!(
                    "expected a list of at least {} items, found {}",
                    elements.len(),
                    other.format()
                )),
            },
            Spec::Repeat(inner) => match item {
                Item::L(children) => {
                    for (i, c) in children.iter().enumerate() {
                        within(i, self.match_spec(inner, c))?;
                    }
                    Ok(())
                }
                other => fail(format!("expected a list, found {}", other.format())),
            },
        }
    }

    /// Adds `doc` (to the header and to items) and `codeDesc` (to coded values) to the JSON
    /// form of a message, where the SDL describes them (with several definitions of its S/F,
    /// as the one it matches does).
    pub fn annotate(&self, message: &Message, json: &mut Value) {
        if let Some(def) = self.best_definition(message, None) {
            self.annotate_by(def, message, json);
        }
    }

    /// [`Sdl::annotate`] as definition `def` (the one the message matched) describes it.
    pub fn annotate_by(&self, def: &MessageDef, message: &Message, json: &mut Value) {
        if let (Some(doc), Some(header)) = (
            &def.doc,
            json.get_mut("header").and_then(Value::as_object_mut),
        ) {
            let mut with_doc = Map::new();
            with_doc.insert("doc".into(), Value::String(doc.clone()));
            with_doc.extend(std::mem::take(header));
            *header = with_doc;
        }
        if let (Some(spec), Some(item), Some(body)) =
            (&def.body, &message.body, json.get_mut("body"))
        {
            self.annotate_item(spec, item, body);
        }
    }

    fn annotate_item(&self, spec: &Spec, item: &Item, json: &mut Value) {
        match (spec, item, json) {
            (Spec::Key(inner, _), item, json) => self.annotate_item(inner, item, json),
            (Spec::Item(_) | Spec::Inline(_), item, Value::Object(obj)) => {
                let Some(def) = self.item_def(spec) else {
                    return;
                };
                let mut out = Map::new();
                if let Some(doc) = &def.doc {
                    out.insert("doc".into(), Value::String(doc.clone()));
                }
                out.extend(std::mem::take(obj));
                if let Some(desc) = item.as_int().and_then(|v| def.code_desc(v)) {
                    out.insert("codeDesc".into(), Value::String(desc.to_string()));
                }
                *obj = out;
            }
            (Spec::Repeat(inner), Item::L(children), Value::Array(values)) => {
                for (c, v) in children.iter().zip(values.iter_mut()) {
                    self.annotate_item(inner, c, v);
                }
            }
            (spec, Item::L(children), Value::Array(values)) => {
                for ((s, c), v) in spec
                    .elements()
                    .unwrap_or(&[])
                    .iter()
                    .zip(children)
                    .zip(values.iter_mut())
                {
                    self.annotate_item(s, c, v);
                }
            }
            _ => {}
        }
    }
}

/// The value of a scalar item as CommonID text; `None` for a list.
fn value_text(item: &Item) -> Option<String> {
    fn join<T: ToString>(v: &[T]) -> String {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(COMMON_ID_VALUE_SEPARATOR)
    }
    Some(match item {
        Item::L(_) => return None,
        Item::A(_) | Item::J(_) | Item::W { .. } => item.as_text()?,
        Item::B(v) | Item::U1(v) => join(v),
        Item::Boolean(_) => join(&item.as_bools()?),
        Item::I1(v) => join(v),
        Item::I2(v) => join(v),
        Item::I4(v) => join(v),
        Item::I8(v) => join(v),
        Item::U2(v) => join(v),
        Item::U4(v) => join(v),
        Item::U8(v) => join(v),
        Item::F4(v) => join(v),
        Item::F8(v) => join(v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secs2::{json, sml};
    use serde_json::json;

    fn sdl() -> Sdl {
        Sdl::from_value(
            Path::new("t.sdl"),
            &json!({
                "doc": ["test"],
                "items": {
                    "A": {"ACKC6": {"doc": "ACKC6, Acknowledge Code", "format": "B",
                                    "codes": {"0": "Accepted", ">0": "Error, not accepted"}}},
                    "CEID": {"doc": "CEID, Collected Event ID", "format": "U"},
                    "DATAID": {"format": ["U4", "U2"]},
                    "RPTID": {"format": "U"},
                    "V": {"doc": "V, Variable Data"},
                    "SVID": {"doc": "SVID, Status Variable ID", "format": ["U4", "A"]}
                },
                "messages": {
                    "S1": {"F3": {"doc": "Selected Equipment Status Request", "direction": "h->e", "reply": true, "body": "SVID*"},
                           "F1": {"direction": "h<->e", "reply": true}},
                    "S6": {"F11": {"doc": "Event Report Send", "direction": "h<-e", "reply": true, "realtime": true,
                                   "body": ["DATAID", "CEID", {"L*": ["RPTID", "V*"]}]},
                           "F12": {"doc": "Event Report Acknowledge", "direction": "h->e", "body": "ACKC6"}}
                }
            }),
        )
        .unwrap()
    }

    fn m(text: &str) -> Message {
        sml::parse_message(text).unwrap()
    }

    #[test]
    fn checks_messages() {
        let s = sdl();
        assert!(s.check(&m("S1F3 W <L [2] <U4 1> <A \"x\">>"), true).is_ok());
        assert!(s.check(&m("S6F11 W <L [3] <U4 1> <U2 4001> <L [1] <L [2] <U4 7> <L [2] <F4 1.5> <A \"L\">>>>>"), false).is_ok());
        let cases = [
            (
                "S1F3 W <L [1] <I4 1>>",
                true,
                "body[0]: SVID must be U4 or A, not I4",
            ),
            ("S1F3 W", true, "S1F3: needs a body"),
            ("S1F1 W <L>", true, "S1F1: has no body in the SDL"),
            (
                "S6F11 W <L [3] <U4 1> <U4 2> <L [1] <U4 3>>>",
                false,
                "body[2][0]: expected a list of 2 items, found U4",
            ),
            (
                "S6F11 W <L [2] <U4 1> <U4 2>>",
                false,
                "body: expected a list of 3 items, found 2",
            ),
            (
                "S6F11 W <L [3] <U4 1> <U4 2> <L>>",
                true,
                "S6F11: the SDL says the equipment sends it",
            ),
            ("S2F41 W <L>", true, "S2F41: not defined in the SDL t.sdl"),
        ];
        for (text, by_host, expect) in cases {
            let e = s.check(&m(text), by_host).unwrap_err().to_string();
            assert!(e.contains(expect), "{text}: {e}");
        }
        assert!(s.realtime("S6F11".parse().unwrap()));
        assert!(!s.realtime("S1F3".parse().unwrap()));
    }

    #[test]
    fn annotates_doc_and_code_desc() {
        let s = sdl();
        let reply = m("S6F12 <B 0x00>");
        let mut v = json::message_to_json(&reply);
        s.annotate(&reply, &mut v);
        assert_eq!(
            v,
            json!({"header": {"doc": "Event Report Acknowledge", "stream": 6, "function": 12, "reply": false},
                   "body": {"doc": "ACKC6, Acknowledge Code", "format": "B", "value": 0, "codeDesc": "Accepted"}})
        );
        let nak = m("S6F12 <B 0x03>");
        let mut v = json::message_to_json(&nak);
        s.annotate(&nak, &mut v);
        assert_eq!(v["body"]["codeDesc"], "Error, not accepted");
        let req = m("S1F3 W <L [1] <U4 5>>");
        let mut v = json::message_to_json(&req);
        s.annotate(&req, &mut v);
        assert_eq!(
            v["body"][0],
            json!({"doc": "SVID, Status Variable ID", "format": "U4", "value": 5})
        );
    }

    #[test]
    fn the_standard_catalogue_describes_gem_traffic() {
        let s = Sdl::standard();
        let host = [
            "S1F1 W",
            "S1F3 W <L [2] <U4 1> <A \"SV2\">>",
            "S1F11 W <L>",
            "S1F13 W <L>",
            "S1F15 W",
            "S1F17 W",
            "S2F13 W <L [1] <U2 5>>",
            "S2F15 W <L [1] <L [2] <U4 20> <F4 80.5>>>",
            "S2F17 W",
            "S2F23 W <L [5] <U4 1> <A \"000010\"> <U4 10> <U4 1> <L [1] <U4 1>>>",
            "S2F31 W <A \"2026112300000000\">",
            "S2F33 W <L [2] <U4 1> <L [1] <L [2] <U4 9000> <L [2] <U4 1> <U4 2>>>>>",
            "S2F35 W <L [2] <U4 1> <L [1] <L [2] <U4 100> <L [1] <U4 9000>>>>>",
            "S2F37 W <L [2] <BOOLEAN TRUE> <L>>",
            "S2F41 W <L [2] <A \"START\"> <L [1] <L [2] <A \"LOTID\"> <A \"L1\">>>>",
            "S2F43 W <L [1] <L [2] <U1 6> <L [1] <U1 11>>>>",
            "S2F45 W <L [2] <U4 1> <L [1] <L [2] <U4 1> <L [1] <L [2] <B 0x01> <L [2] <F4 90> <F4 80>>>>>>>",
            "S2F49 W <L [4] <U4 1> <A \"OBJ\"> <A \"START\"> <L>>",
            "S5F3 W <L [2] <B 0x80> <U4 1>>",
            "S5F5 W <U4>",
            "S5F7 W",
            "S6F12 <B 0x00>",
            "S6F15 W <U4 100>",
            "S6F19 W <U4 9000>",
            "S6F23 W <U1 0>",
            "S7F1 W <L [2] <A \"P\"> <U4 10>>",
            "S7F3 W <L [2] <A \"P\"> <B 0x01 0x02>>",
            "S7F17 W <L>",
            "S7F19 W",
            "S10F3 W <L [2] <B 0x00> <A \"hi\">>",
        ];
        let equipment = [
            "S1F2 <L [2] <A \"MDLN\"> <A \"1.0\">>",
            "S1F4 <L [2] <U4 23> <L>>",
            "S1F12 <L [1] <L [3] <U4 1> <A \"T\"> <A \"C\">>>",
            "S1F14 <L [2] <B 0x00> <L [2] <A \"M\"> <A \"1\">>>",
            "S1F16 <B 0x00>",
            "S1F18 <B 0x00>",
            "S2F14 <L [1] <F4 80>>",
            "S2F16 <B 0x00>",
            "S2F18 <A \"2026112300000000\">",
            "S2F30 <L [1] <L [6] <U4 20> <A \"Max\"> <F4 0> <F4 150> <F4 80> <A \"C\">>>",
            "S2F34 <B 0x00>",
            "S2F42 <L [2] <B 0x04> <L>>",
            "S2F44 <L [2] <B 0x00> <L>>",
            "S5F1 W <L [3] <B 0x82> <U4 1> <A \"hot\">>",
            "S5F6 <L [1] <L [3] <B 0x02> <U4 1> <A \"hot\">>>",
            "S6F1 W <L [4] <U4 1> <U4 1> <A \"2026\"> <L [1] <F4 1>>>",
            "S6F11 W <L [3] <U4 1> <U4 100> <L [1] <L [2] <U4 9000> <L [2] <A \"L\"> <U2 3>>>>>",
            "S6F20 <L>",
            "S6F24 <B 0x02>",
            "S7F6 <L [2] <A \"P\"> <A \"body\">>",
            "S7F20 <L [1] <A \"P\">>",
            "S9F5 <B 0x00 0x00 0x81 0x63 0x00 0x00 0x00 0x00 0x00 0x01>",
        ];
        for text in host {
            assert!(
                s.check(&m(text), true).is_ok(),
                "{text}: {:?}",
                s.check(&m(text), true)
            );
        }
        for text in equipment {
            assert!(
                s.check(&m(text), false).is_ok(),
                "{text}: {:?}",
                s.check(&m(text), false)
            );
        }
        let nak = m("S2F34 <B 0x04>");
        let mut v = json::message_to_json(&nak);
        s.annotate(&nak, &mut v);
        assert_eq!(
            v["body"]["codeDesc"],
            "Denied, at least one VID does not exist"
        );
        assert!(s.realtime("S6F11".parse().unwrap()) && s.realtime("S5F1".parse().unwrap()));
    }

    #[test]
    fn bad_files_say_where() {
        let bad = [
            (
                json!({"messages": {"S1": {"F3": {"body": "NOPE"}}}}),
                "messages.S1.F3.body: item 'NOPE' is not defined",
            ),
            (
                json!({"messages": {"S1": {"F3": {"direction": "up"}}}}),
                "messages.S1.F3.direction: 'up'",
            ),
            (
                json!({"messages": {"X1": {"F3": {}}}}),
                "messages.X1: 'X1' is not a stream",
            ),
            (json!({"messages": {"S1": {"G3": {}}}}), "messages.S1.G3: "),
            (
                json!({"items": {"X": {"format": "Q9"}}}),
                "items.X.format: unknown SECS-II format 'Q9'",
            ),
            (
                json!({"items": {"X": {"format": "B", "codes": {"abc": "?"}}}}),
                "items.X.codes.abc: 'abc' is not a value",
            ),
            (
                json!({"items": {"X": {"length": "many"}}}),
                "items.X.length: expected a number of values",
            ),
            (
                json!({"messages": {"S1": {"F1": {"reply": "yes"}}}}),
                "messages.S1.F1.reply: expected true or false, found \"yes\"",
            ),
            (
                json!({"messages": {"S1": {"F1": {"block": 2}}}}),
                "messages.S1.F1.block: expected \"single\" or \"multiple\"",
            ),
            (
                json!({"messages": {"S1": {"F1": {"CommonID": 7}}}}),
                "messages.S1.F1.CommonID: expected a list of item names",
            ),
            (
                json!({"defaults": {"realtime": 1}}),
                "defaults.realtime: expected true or false",
            ),
            (json!([1]), "must be a JSON object"),
        ];
        for (v, expect) in bad {
            let e = Sdl::from_value(Path::new("t.sdl"), &v).unwrap_err();
            assert!(e.contains(expect), "{e}");
        }
        let e = Sdl::parse(
            Path::new("bad.sdl"),
            "{\n  \"items\": {\n    \"X\": {\"format\": \"B\",}\n  }\n}\n",
        )
        .unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let e = Sdl::parse(
            Path::new("bad.sdl"),
            "{\n  \"messages\": {\n    \"S1\": {\n      \"F1\": {\n        \"reply\": 3\n      }\n    }\n  }\n}\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (5, "messages.S1.F1.reply"), "{e}");
        assert!(
            e.to_string()
                .starts_with("bad.sdl:5: messages.S1.F1.reply: expected true or false"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_warn_with_a_hint_and_still_load() {
        let text = "{\n \"doc\": \"x\",\n \"version\": 2,\n \"items\": {\"CEID\": {\"format\": \"U4\", \"unit\": \"s\"}},\n \"messages\": {\"S6\": {\"F11\": {\n  \"realtme\": true,\n  \"body\": [{\"name\": \"CEID\", \"colour\": \"red\"}],\n  \"CommonID\": [\"CEID\", \"DATAID\"]\n }}}\n}\n";
        let (sdl, warnings) = Sdl::parse(Path::new("w.sdl"), text).unwrap();
        let shown: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "w.sdl:3: version: unknown key, ignored; the keys here are doc, formats, items, defaults, messages",
                "w.sdl:4: items.CEID.unit: unknown key, ignored; the keys here are doc, format, length, codes, name",
                "w.sdl:6: messages.S6.F11.realtme: unknown key, ignored; did you mean 'realtime'?",
                "w.sdl:7: messages.S6.F11.body[0].colour: unknown key, ignored; the keys here are doc, format, length, codes, name",
                "w.sdl:8: messages.S6.F11.CommonID: names DATAID, which the body does not contain, so its CommonID part is always empty",
            ],
        );
        let sf = "S6F11".parse().unwrap();
        assert!(!sdl.realtime(sf), "a misspelt key means nothing");
        assert_eq!(sdl.common_id(sf), ["CEID", "DATAID"]);
    }

    #[test]
    fn inline_items_and_length_are_checked() {
        let s = Sdl::from_value(
            Path::new("t.sdl"),
            &json!({
                "items": {"ALTX": {"format": "A", "length": 5}},
                "messages": {"S5": {"F1": {"direction": "h<-e", "body": {"L": [
                    {"name": "ALCD", "format": "B", "length": "1-1", "codes": {"0": "Cleared", "128": "Set"}},
                    "U4",
                    {"name": "ALTX"}
                ]}}, "F3": {"body": {"name": "ALTX", "doc": "ALTX, Short Alarm Text", "length": 2}}}}
            }),
        )
        .unwrap();
        assert!(
            s.check(&m("S5F1 <L [3] <B 0x80> <U4 7> <A \"hot\">>"), false)
                .is_ok()
        );
        let cases = [
            (
                "S5F1 <L [3] <B 0x80 0x01> <U4 7> <A \"hot\">>",
                "body[0]: ALCD must have 1 to 1 values, not 2",
            ),
            (
                "S5F1 <L [3] <B 0x80> <U2 7> <A \"hot\">>",
                "body[1]: the item must be U4, not U2",
            ),
            (
                "S5F1 <L [3] <B 0x80> <U4 7> <A \"too hot\">>",
                "body[2]: ALTX must have at most 5 values, not 7",
            ),
        ];
        for (text, expect) in cases {
            let e = s.check(&m(text), false).unwrap_err().to_string();
            assert_eq!(e, expect, "{text}");
        }
        let msg = m("S5F1 <L [3] <B 0x80> <U4 7> <A \"hot\">>");
        let mut v = json::message_to_json(&msg);
        s.annotate(&msg, &mut v);
        assert_eq!(v["body"][0]["codeDesc"], "Set");
        // An item object naming a defined item changes it in that place only.
        let short = m("S5F3 <A \"ok\">");
        assert!(s.check(&short, true).is_ok());
        let mut v = json::message_to_json(&short);
        s.annotate(&short, &mut v);
        assert_eq!(v["body"]["doc"], "ALTX, Short Alarm Text");
        assert_eq!(
            s.check(&m("S5F3 <U1 1>"), true).unwrap_err().to_string(),
            "body: ALTX must be A, not U1"
        );
        assert!(s.check(&m("S5F3 <A \"long\">"), true).is_err());
        assert_eq!(s.items["ALTX"].length, Some((0, 5)));
    }
}
