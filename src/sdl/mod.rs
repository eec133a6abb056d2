//! SECS Definition Language: a JSON file naming an equipment's messages and items.
//!
//! ```json
//! {
//!   "doc": ["Etch tool, firmware 3.2"],
//!   "defaults": {"reply": false, "realtime": false},
//!   "items": {
//!     "A": {"ACKC6": {"doc": "ACKC6, Acknowledge Code", "format": "B",
//!                     "codes": {"0": "Accepted", ">0": "Error, not accepted"}}},
//!     "S": {"SVID": {"doc": "SVID, Status Variable ID", "format": ["U4", "U2", "A"]}}
//!   },
//!   "messages": {
//!     "S1": {"F3": {"doc": "Selected Equipment Status Request", "direction": "h->e",
//!                   "reply": true, "body": "SVID*"}},
//!     "S6": {"F11": {"doc": "Event Report Send", "direction": "h<-e", "reply": true,
//!                    "realtime": true, "body": ["DATAID", "CEID", {"L*": ["RPTID", "V*"]}]}}
//!   }
//! }
//! ```
//!
//! Items may also be listed flat (`"items": {"ACKC6": {...}}`). A body is an item name, a JSON
//! array (a list of exactly those elements), `{"L?": [...]}` (those elements or an empty
//! list), `"NAME*"` or `{"L*": spec}` (a list of any number of that element), `"ANY"` (any
//! one item), or absent/`null` (no body). An item's
//! `format` is one format, a list of them, or a group (`U`, `I`, `F`: every size); absent
//! means any. `codes` keys are a value (`"0"`), `">N"`, `"<N"`, a range `"1-63"`, or `"*"`.
//!
//! An SDL is used to check the messages scripts send and those the equipment sends, to pick
//! the messages that reach `onSecsGemRealtimeUpdate`, and to add `doc` and `codeDesc` to the
//! JSON form scripts see.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::secs2::{Format, Item, Message, StreamFunction};

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

/// A named item.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemDef {
    pub name: String,
    pub doc: Option<String>,
    /// Allowed formats; empty allows any.
    pub formats: Vec<Format>,
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
    /// A named item.
    Item(String),
    /// A list of exactly these elements.
    List(Vec<Spec>),
    /// A list of any number of this element.
    Repeat(Box<Spec>),
    /// A list of exactly these elements, or an empty list (E5's "L,n or L,0").
    ListOrEmpty(Vec<Spec>),
    /// Any one item.
    Any,
}

/// A message definition.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageDef {
    pub doc: Option<String>,
    pub direction: Direction,
    pub reply: bool,
    pub realtime: bool,
    /// `None`: header only.
    pub body: Option<Spec>,
}

/// A loaded SDL file.
#[derive(Clone, Debug, PartialEq)]
pub struct Sdl {
    pub file: PathBuf,
    pub doc: Vec<String>,
    pub items: HashMap<String, ItemDef>,
    pub messages: BTreeMap<StreamFunction, MessageDef>,
}

/// An SDL file could not be used; `line` is 0 when the problem is not at one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), if *line > 0 { format!(":{line}") } else { String::new() })]
pub struct SdlError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

/// A message does not match its definition: where (`body[2][0]`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Mismatch {
    pub path: String,
    pub message: String,
}

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

/// The standard catalogue shipped in `sdl/messages.sdl` (`sdl = "standard"`).
const STANDARD: &str = include_str!("../../sdl/messages.sdl");

/// The name that selects the standard catalogue in project.toml.
pub const STANDARD_NAME: &str = "standard";

impl Sdl {
    /// The standard SDL: the SEMI E5 messages of the GEM tool table (streams 1, 2, 5, 6, 7, 9,
    /// 10) with their items and code tables.
    pub fn standard() -> Sdl {
        let value: Value = match serde_json::from_str(STANDARD) {
            Ok(v) => v,
            Err(e) => panic!("the shipped sdl/messages.sdl is not JSON: {e}"),
        };
        match Sdl::from_value(Path::new("sdl/messages.sdl"), &value) {
            Ok(sdl) => sdl,
            Err(e) => panic!("the shipped sdl/messages.sdl is invalid: {e}"),
        }
    }

    /// Reads and checks an SDL file: JSON syntax (with its line), the sections, every
    /// message body's item names.
    pub fn load(path: &Path) -> Result<Sdl, SdlError> {
        let err = |line: usize, message: String| SdlError {
            file: path.to_path_buf(),
            line,
            message,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| err(0, format!("cannot read: {e}")))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| err(e.line(), e.to_string()))?;
        Sdl::from_value(path, &value).map_err(|m| err(0, m))
    }

    /// Builds an SDL from its JSON.
    pub fn from_value(file: &Path, value: &Value) -> Result<Sdl, String> {
        let root = value.as_object().ok_or("the SDL must be a JSON object")?;
        let doc = match root.get("doc") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|d| d.as_str().map(str::to_owned))
                .collect(),
            Some(_) => return Err("doc: expected a string or an array of strings".into()),
        };
        let defaults = root.get("defaults").and_then(Value::as_object);
        let default_bool = |key: &str| {
            defaults
                .and_then(|d| d.get(key))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let mut items = HashMap::new();
        if let Some(section) = root.get("items") {
            let section = section.as_object().ok_or("items: expected an object")?;
            collect_items(section, "items", &mut items)?;
        }
        let mut messages = BTreeMap::new();
        if let Some(section) = root.get("messages") {
            let section = section
                .as_object()
                .ok_or("messages: expected an object of streams (\"S1\": {...})")?;
            for (stream, functions) in section {
                let functions = functions.as_object().ok_or_else(|| {
                    format!("messages.{stream}: expected an object of functions (\"F1\": {{...}})")
                })?;
                for (function, def) in functions {
                    let key = format!("messages.{stream}.{function}");
                    let sf: StreamFunction = format!("{stream}{function}")
                        .parse()
                        .map_err(|e| format!("{key}: {e}"))?;
                    let def = def
                        .as_object()
                        .ok_or_else(|| format!("{key}: expected an object"))?;
                    let direction = match def
                        .get("direction")
                        .and_then(Value::as_str)
                        .map(str::to_ascii_lowercase)
                        .as_deref()
                    {
                        None | Some("h<->e") | Some("both") => Direction::Both,
                        Some("h->e") => Direction::ToEquipment,
                        Some("h<-e") | Some("e->h") => Direction::ToHost,
                        Some(other) => {
                            return Err(format!(
                                "{key}.direction: '{other}' is not h->e, h<-e or h<->e"
                            ));
                        }
                    };
                    let body = match def.get("body") {
                        None | Some(Value::Null) => None,
                        Some(spec) => Some(parse_spec(spec, &format!("{key}.body"), &items)?),
                    };
                    messages.insert(
                        sf,
                        MessageDef {
                            doc: def.get("doc").and_then(Value::as_str).map(str::to_owned),
                            direction,
                            reply: def
                                .get("reply")
                                .and_then(Value::as_bool)
                                .unwrap_or_else(|| default_bool("reply")),
                            realtime: def
                                .get("realtime")
                                .and_then(Value::as_bool)
                                .unwrap_or_else(|| default_bool("realtime")),
                            body,
                        },
                    );
                }
            }
        }
        Ok(Sdl {
            file: file.to_path_buf(),
            doc,
            items,
            messages,
        })
    }

    /// The definition of a message.
    pub fn message(&self, sf: StreamFunction) -> Option<&MessageDef> {
        self.messages.get(&sf)
    }

    /// Whether a message the equipment sends goes to the realtime handler.
    pub fn realtime(&self, sf: StreamFunction) -> bool {
        self.message(sf).is_some_and(|m| m.realtime)
    }

    /// Checks a message against its definition. `sent_by_host` says which way it goes.
    pub fn check(&self, message: &Message, sent_by_host: bool) -> Result<(), Mismatch> {
        let sf = message.stream_function();
        let top = |m: String| Mismatch {
            path: sf.to_string(),
            message: m,
        };
        let def = self
            .message(sf)
            .ok_or_else(|| top(format!("not defined in the SDL {}", self.file.display())))?;
        match (def.direction, sent_by_host) {
            (Direction::ToHost, true) => {
                return Err(top(
                    "the SDL says the equipment sends it, not the host".into()
                ));
            }
            (Direction::ToEquipment, false) => {
                return Err(top(
                    "the SDL says the host sends it, not the equipment".into()
                ));
            }
            _ => {}
        }
        match (&def.body, &message.body) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(top("has no body in the SDL, but one was given".into())),
            (Some(_), None) => Err(top("needs a body (see the SDL)".into())),
            (Some(spec), Some(item)) => self.match_spec(spec, item, "body"),
        }
    }

    fn match_spec(&self, spec: &Spec, item: &Item, path: &str) -> Result<(), Mismatch> {
        let fail = |m: String| {
            Err(Mismatch {
                path: path.to_string(),
                message: m,
            })
        };
        match spec {
            Spec::Any => Ok(()),
            Spec::Item(name) => {
                let Some(def) = self.items.get(name) else {
                    return fail(format!("item {name} is not defined in the SDL"));
                };
                if !def.formats.is_empty() && !def.formats.contains(&item.format()) {
                    let allowed: Vec<&str> = def.formats.iter().map(|f| f.name()).collect();
                    return fail(format!(
                        "{name} must be {}, not {}",
                        allowed.join(" or "),
                        item.format()
                    ));
                }
                Ok(())
            }
            Spec::List(specs) => match item {
                Item::L(children) if children.len() == specs.len() => {
                    for (i, (s, c)) in specs.iter().zip(children).enumerate() {
                        self.match_spec(s, c, &format!("{path}[{i}]"))?;
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
            Spec::Repeat(inner) => match item {
                Item::L(children) => {
                    for (i, c) in children.iter().enumerate() {
                        self.match_spec(inner, c, &format!("{path}[{i}]"))?;
                    }
                    Ok(())
                }
                other => fail(format!("expected a list, found {}", other.format())),
            },
            Spec::ListOrEmpty(specs) => match item {
                Item::L(children) if children.is_empty() => Ok(()),
                _ => self.match_spec(&Spec::List(specs.clone()), item, path),
            },
        }
    }

    /// Adds `doc` (to the header and to items) and `codeDesc` (to coded values) to the JSON
    /// form of a message, where the SDL describes them.
    pub fn annotate(&self, message: &Message, json: &mut Value) {
        let Some(def) = self.message(message.stream_function()) else {
            return;
        };
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
            (Spec::Item(name), item, Value::Object(obj)) => {
                let Some(def) = self.items.get(name) else {
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
            (
                Spec::List(specs) | Spec::ListOrEmpty(specs),
                Item::L(children),
                Value::Array(values),
            ) => {
                for ((s, c), v) in specs.iter().zip(children).zip(values.iter_mut()) {
                    self.annotate_item(s, c, v);
                }
            }
            (Spec::Repeat(inner), Item::L(children), Value::Array(values)) => {
                for (c, v) in children.iter().zip(values.iter_mut()) {
                    self.annotate_item(inner, c, v);
                }
            }
            _ => {}
        }
    }
}

/// An item definition (rather than a group of them): it has a definition's keys, or none at
/// all (an item of any format).
fn is_item_def(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.is_empty() || o.contains_key("format") || o.contains_key("doc") || o.contains_key("codes")
    })
}

fn collect_items(
    section: &Map<String, Value>,
    key: &str,
    items: &mut HashMap<String, ItemDef>,
) -> Result<(), String> {
    for (name, value) in section {
        let k = format!("{key}.{name}");
        if is_item_def(value) {
            items.insert(name.clone(), parse_item_def(name, value, &k)?);
        } else if let Some(group) = value.as_object() {
            // Items grouped by their first letter.
            collect_items(group, &k, items)?;
        } else {
            return Err(format!(
                "{k}: expected an item definition or a group of them"
            ));
        }
    }
    Ok(())
}

fn parse_item_def(name: &str, value: &Value, key: &str) -> Result<ItemDef, String> {
    let obj = value
        .as_object()
        .ok_or_else(|| format!("{key}: expected an object"))?;
    let one = |f: &str| -> Result<Vec<Format>, String> {
        if let Some(group) = format_group(f) {
            return Ok(group);
        }
        f.parse::<Format>()
            .map(|f| vec![f])
            .map_err(|e| format!("{key}.format: {e}"))
    };
    let formats = match obj.get("format") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(f)) => one(f)?,
        Some(Value::Array(list)) => {
            let mut out = Vec::new();
            for f in list {
                out.extend(one(f
                    .as_str()
                    .ok_or_else(|| format!("{key}.format: expected format names"))?)?);
            }
            out
        }
        Some(_) => {
            return Err(format!(
                "{key}.format: expected a format name or a list of them"
            ));
        }
    };
    let mut codes = Vec::new();
    if let Some(c) = obj.get("codes") {
        let c = c
            .as_object()
            .ok_or_else(|| format!("{key}.codes: expected an object of value -> description"))?;
        for (k, v) in c {
            let code = CodeKey::parse(k)
                .ok_or_else(|| format!("{key}.codes: '{k}' is not a value, >N, <N, N-M or *"))?;
            let desc = v
                .as_str()
                .ok_or_else(|| format!("{key}.codes.{k}: expected a description string"))?;
            codes.push((code, desc.to_string()));
        }
        // Exact values win over ranges and comparisons, which win over "*".
        codes.sort_by_key(|(k, _)| match k {
            CodeKey::Eq(_) => 0,
            CodeKey::Range(..) => 1,
            CodeKey::Gt(_) | CodeKey::Lt(_) => 2,
            CodeKey::Any => 3,
        });
    }
    Ok(ItemDef {
        name: name.to_string(),
        doc: obj.get("doc").and_then(Value::as_str).map(str::to_owned),
        formats,
        codes,
    })
}

fn parse_spec(spec: &Value, key: &str, items: &HashMap<String, ItemDef>) -> Result<Spec, String> {
    let named = |name: &str| -> Result<Spec, String> {
        if name.eq_ignore_ascii_case("ANY") {
            return Ok(Spec::Any);
        }
        if items.contains_key(name) {
            Ok(Spec::Item(name.to_string()))
        } else {
            Err(format!("{key}: item '{name}' is not defined in items"))
        }
    };
    match spec {
        Value::String(s) => match s.strip_suffix('*') {
            Some(name) => Ok(Spec::Repeat(Box::new(named(name)?))),
            None => named(s),
        },
        Value::Array(elements) => elements
            .iter()
            .enumerate()
            .map(|(i, e)| parse_spec(e, &format!("{key}[{i}]"), items))
            .collect::<Result<_, _>>()
            .map(Spec::List),
        Value::Object(obj) if obj.len() == 1 => {
            let (k, v) = obj.iter().next().ok_or("empty")?;
            match k.as_str() {
                "L*" => Ok(Spec::Repeat(Box::new(parse_spec(
                    v,
                    &format!("{key}.L*"),
                    items,
                )?))),
                "L?" => match parse_spec(v, &format!("{key}.L?"), items)? {
                    Spec::List(specs) => Ok(Spec::ListOrEmpty(specs)),
                    _ => Err(format!("{key}.L?: expected an array of elements")),
                },
                "L" => match v {
                    Value::Array(_) => parse_spec(v, &format!("{key}.L"), items),
                    other => Ok(Spec::Repeat(Box::new(parse_spec(
                        other,
                        &format!("{key}.L"),
                        items,
                    )?))),
                },
                other => Err(format!(
                    "{key}: '{other}' is not a body form (use an item name, an array, \"NAME*\", {{\"L*\": ...}} or {{\"L?\": [...]}})"
                )),
            }
        }
        other => Err(format!(
            "{key}: {other} is not a body form (use an item name, an array, \"NAME*\", {{\"L*\": ...}} or {{\"L?\": [...]}})"
        )),
    }
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
            (json!({"messages": {"X1": {"F3": {}}}}), "messages.X1.F3"),
            (
                json!({"items": {"X": {"format": "Q9"}}}),
                "items.X.format: unknown SECS-II format 'Q9'",
            ),
            (
                json!({"items": {"X": {"format": "B", "codes": {"abc": "?"}}}}),
                "items.X.codes: 'abc'",
            ),
            (json!([1]), "must be a JSON object"),
        ];
        for (v, expect) in bad {
            let e = Sdl::from_value(Path::new("t.sdl"), &v).unwrap_err();
            assert!(e.contains(expect), "{e}");
        }
        let dir = std::env::temp_dir().join(format!("secsgate-sdl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.sdl");
        std::fs::write(
            &path,
            "{\n  \"items\": {\n    \"X\": {\"format\": \"B\",}\n  }\n}\n",
        )
        .unwrap();
        let e = Sdl::load(&path).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }
}
