//! Reading an SDL file: sections, items, messages and body structures, with every unknown key
//! a warning and every wrong value an error, each at its file, line and key path.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::{Map, Value};

use super::locate::Lines;
use super::matching::{Key, KeyIndex, ParameterDef, RemoteCommandDef, key_paths, remote_layout};
use super::{
    Block, CodeKey, Direction, ItemDef, MessageDef, Sdl, SdlError, SdlWarning, Spec, format_group,
};
use crate::secs2::{Format, StreamFunction};

const TOP_KEYS: &[&str] = &["doc", "formats", "items", "defaults", "messages"];
const MESSAGE_KEYS: &[&str] = &[
    "doc",
    "direction",
    "reply",
    "block",
    "body",
    "realtime",
    "SQLTags",
    "CommonID",
    "name",
    "remote_command",
];
const REMOTE_COMMAND_KEYS: &[&str] = &["RCMD", "parameters", "optional"];
const ITEM_KEYS: &[&str] = &["doc", "format", "length", "codes", "name"];
const LIST_KEYS: &[&str] = &["L", "L*", "L?"];

/// Message keys a `defaults` section may set.
#[derive(Default)]
struct Defaults {
    doc: Option<String>,
    direction: Option<Direction>,
    reply: Option<bool>,
    block: Option<Block>,
    realtime: Option<bool>,
    sql_tags: Option<bool>,
    common_id: Option<Vec<String>>,
}

pub(super) struct Loader<'a> {
    file: &'a Path,
    lines: Lines,
    warnings: Vec<SdlWarning>,
    /// Lists are open-ended unless they say `"exact_length": true` (in a named definition).
    open_lists: bool,
    /// Inside a repeated list (`L*`, `"NAME*"`), where a key cannot be.
    in_repeat: usize,
    /// Inside a remote command's parameter, where a key cannot be (RCMD is the key).
    in_parameter: bool,
    /// Named definitions: name -> S/F, place, and the key path that named it.
    names: HashMap<String, (StreamFunction, usize, String)>,
}

impl<'a> Loader<'a> {
    pub(super) fn new(file: &'a Path, text: Option<&str>) -> Loader<'a> {
        Loader {
            file,
            lines: text.map(Lines::scan).unwrap_or_default(),
            warnings: Vec::new(),
            open_lists: false,
            in_repeat: 0,
            in_parameter: false,
            names: HashMap::new(),
        }
    }

    fn err(&self, key: &str, message: impl Into<String>) -> SdlError {
        SdlError {
            file: self.file.to_path_buf(),
            line: self.lines.line(key),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn warn(&mut self, key: &str, message: impl Into<String>) {
        self.warnings.push(SdlWarning {
            file: self.file.to_path_buf(),
            line: self.lines.line(key),
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Warns about a key that is not one of `known` (compared without regard to case) and
    /// returns the known spelling of one that is.
    fn known_key(
        &mut self,
        parent: &str,
        key: &str,
        known: &[&'static str],
    ) -> Option<&'static str> {
        if let Some(k) = known.iter().find(|k| k.eq_ignore_ascii_case(key)) {
            return Some(k);
        }
        let path = join(parent, key);
        let hint = known
            .iter()
            .find(|k| edit_distance(&k.to_ascii_lowercase(), &key.to_ascii_lowercase()) <= 2)
            .map(|k| format!("; did you mean '{k}'?"))
            .unwrap_or_else(|| format!("; the keys here are {}", known.join(", ")));
        self.warn(&path, format!("unknown key, ignored{hint}"));
        None
    }

    /// Builds the SDL from its parsed JSON; `self` keeps the warnings.
    pub(super) fn sdl(mut self, value: &Value) -> Result<(Sdl, Vec<SdlWarning>), SdlError> {
        let root = value.as_object().ok_or_else(|| {
            self.err(
                "",
                "the SDL must be a JSON object with doc, formats, items, defaults and messages",
            )
        })?;
        let mut sections: HashMap<&'static str, (&str, &Value)> = HashMap::new();
        for (key, v) in root {
            if let Some(k) = self.known_key("", key, TOP_KEYS) {
                sections.insert(k, (key.as_str(), v));
            }
        }
        let doc = match sections.get("doc") {
            Some((k, v)) => self.doc_lines(k, v)?,
            None => Vec::new(),
        };
        let formats = match sections.get("formats") {
            Some((k, v)) => self.formats(k, v)?,
            None => BTreeMap::new(),
        };
        let mut items = HashMap::new();
        if let Some((k, v)) = sections.get("items") {
            let obj = v
                .as_object()
                .ok_or_else(|| self.err(k, "expected an object of items (\"ALTX\": {...}) or of letters (\"A\": {\"ALTX\": {...}})"))?;
            self.items(k, obj, true, &mut items)?;
        }
        let defaults = match sections.get("defaults") {
            Some((k, v)) => self.defaults(k, v)?,
            None => Defaults::default(),
        };
        let mut messages: BTreeMap<StreamFunction, Vec<MessageDef>> = BTreeMap::new();
        if let Some((k, v)) = sections.get("messages") {
            let obj = v.as_object().ok_or_else(|| {
                self.err(k, "expected an object of streams (\"S1\": {\"F1\": {...}})")
            })?;
            for (stream, functions) in obj {
                let skey = join(k, stream);
                if let Ok(sf) = stream.parse::<StreamFunction>() {
                    // A message written flat: "S1F1": {...}.
                    let defs = messages.entry(sf).or_default();
                    self.definitions(&skey, sf, functions, &defaults, &items, defs)?;
                    continue;
                }
                let is_stream = stream
                    .strip_prefix(['S', 's'])
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if !is_stream {
                    return Err(self.err(
                        &skey,
                        format!("'{stream}' is not a stream: write \"S1\": {{\"F1\": {{...}}}}"),
                    ));
                }
                let functions = functions.as_object().ok_or_else(|| {
                    self.err(&skey, "expected an object of functions (\"F1\": {...})")
                })?;
                for (function, def) in functions {
                    let fkey = join(&skey, function);
                    let sf: StreamFunction =
                        format!("{stream}{function}").parse().map_err(|e| {
                            self.err(
                                &fkey,
                                format!("{e}: write functions as \"F1\", \"F2\", ..."),
                            )
                        })?;
                    let defs = messages.entry(sf).or_default();
                    self.definitions(&fkey, sf, def, &defaults, &items, defs)?;
                }
            }
        }
        messages.retain(|_, defs| !defs.is_empty());
        let names = self
            .names
            .drain()
            .map(|(name, (sf, index, _))| (name, (sf, index)))
            .collect();
        let indices = messages
            .iter()
            .filter_map(|(sf, defs)| KeyIndex::build(defs).map(|i| (*sf, i)))
            .collect();
        let sdl = Sdl {
            file: self.file.to_path_buf(),
            doc,
            formats,
            items,
            messages,
            names,
            indices,
        };
        Ok((sdl, self.warnings))
    }

    /// `doc`: a string or an array of strings.
    fn doc_lines(&self, key: &str, v: &Value) -> Result<Vec<String>, SdlError> {
        match v {
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    d.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| self.err(&format!("{key}[{i}]"), "expected a string"))
                })
                .collect(),
            Value::Null => Ok(Vec::new()),
            _ => Err(self.err(key, "expected a string or an array of strings")),
        }
    }

    fn doc(&self, key: &str, v: &Value) -> Result<Option<String>, SdlError> {
        let lines = self.doc_lines(key, v)?;
        Ok((!lines.is_empty()).then(|| lines.join(" ")))
    }

    fn formats(&mut self, key: &str, v: &Value) -> Result<BTreeMap<String, String>, SdlError> {
        let obj = v.as_object().ok_or_else(|| {
            self.err(
                key,
                "expected an object of format codes (\"U4\": {\"doc\": ...})",
            )
        })?;
        let mut out = BTreeMap::new();
        for (code, def) in obj {
            let k = join(key, code);
            if format_group(code).is_none() && code.parse::<Format>().is_err() {
                self.warn(
                    &k,
                    "not a SECS-II format code (L, B, Bool, A, J, Local, B64, I1-I8, U1-U8, F4, F8, or the groups I, U, F), ignored",
                );
                continue;
            }
            let def = def
                .as_object()
                .ok_or_else(|| self.err(&k, "expected an object such as {\"doc\": \"...\"}"))?;
            let mut doc = None;
            for (dk, dv) in def {
                if self.known_key(&k, dk, &["doc"]).is_some() {
                    doc = self.doc(&join(&k, dk), dv)?;
                }
            }
            out.insert(code.clone(), doc.unwrap_or_default());
        }
        Ok(out)
    }

    /// Item definitions, flat or grouped by letter (one level of groups).
    fn items(
        &mut self,
        key: &str,
        section: &Map<String, Value>,
        groups_allowed: bool,
        items: &mut HashMap<String, ItemDef>,
    ) -> Result<(), SdlError> {
        for (name, value) in section {
            let k = join(key, name);
            let group = value.as_object().filter(|o| {
                groups_allowed
                    && !o.is_empty()
                    // Exact case here: a letter group "L" holds an item "LENGTH".
                    && !o.keys().any(|x| ITEM_KEYS.contains(&x.as_str()))
                    && o.values().all(Value::is_object)
            });
            if let Some(group) = group {
                self.items(&k, group, false, items)?;
                continue;
            }
            let def = self.item_def(&k, name, value)?;
            if items.insert(name.clone(), def).is_some() {
                self.warn(
                    &k,
                    format!("item {name} is defined twice; this later definition is used"),
                );
            }
        }
        Ok(())
    }

    fn item_def(&mut self, key: &str, name: &str, value: &Value) -> Result<ItemDef, SdlError> {
        let obj = value.as_object().ok_or_else(|| {
            self.err(key, "expected an item definition such as {\"doc\": \"ALTX, Alarm Text\", \"format\": \"A\"}")
        })?;
        let def = ItemDef {
            name: name.to_string(),
            doc: None,
            formats: Vec::new(),
            length: None,
            codes: Vec::new(),
        };
        self.item_keys(key, def, obj)
    }

    /// Applies an item object's keys over `def`.
    fn item_keys(
        &mut self,
        key: &str,
        mut def: ItemDef,
        obj: &Map<String, Value>,
    ) -> Result<ItemDef, SdlError> {
        for (k, v) in obj {
            let path = join(key, k);
            match self.known_key(key, k, ITEM_KEYS) {
                Some("doc") => def.doc = self.doc(&path, v)?,
                Some("format") => def.formats = self.formats_of(&path, v)?,
                Some("length") => def.length = Some(self.length(&path, v)?),
                Some("codes") => def.codes = self.codes(&path, v)?,
                Some("name") => match v.as_str() {
                    Some(n) if def.name.is_empty() => def.name = n.to_string(),
                    Some(n) if n.trim() == def.name => {}
                    Some(n) => self.warn(
                        &path,
                        format!(
                            "the item is named {} by its key; name '{n}' is ignored",
                            def.name
                        ),
                    ),
                    None => return Err(self.err(&path, "expected the item's name as a string")),
                },
                _ => {}
            }
        }
        Ok(def)
    }

    fn formats_of(&self, key: &str, v: &Value) -> Result<Vec<Format>, SdlError> {
        let one = |f: &str, k: &str| -> Result<Vec<Format>, SdlError> {
            if let Some(group) = format_group(f) {
                return Ok(group);
            }
            f.parse::<Format>().map(|f| vec![f]).map_err(|e| {
                self.err(k, format!("{e}: use L, B, Bool, A, J, Local, B64, I1, I2, I4, I8, U1, U2, U4, U8, F4, F8 or a group I, U, F"))
            })
        };
        match v {
            Value::Null => Ok(Vec::new()),
            Value::String(f) => one(f, key),
            Value::Array(list) => {
                let mut out = Vec::new();
                for (i, f) in list.iter().enumerate() {
                    let k = format!("{key}[{i}]");
                    let f = f
                        .as_str()
                        .ok_or_else(|| self.err(&k, "expected a format name such as \"U4\""))?;
                    for x in one(f, &k)? {
                        if !out.contains(&x) {
                            out.push(x);
                        }
                    }
                }
                Ok(out)
            }
            _ => Err(self.err(key, "expected a format name (\"U4\") or a list of them")),
        }
    }

    /// `length`: at most N values (`120`, `"120"`), or between N and M (`"1-120"`).
    fn length(&self, key: &str, v: &Value) -> Result<(usize, usize), SdlError> {
        let bad = || {
            self.err(
                key,
                "expected a number of values (at most N: 120) or a range (\"1-120\")",
            )
        };
        let num = |s: &str| s.trim().parse::<usize>().map_err(|_| bad());
        match v {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(|n| (0, n))
                .ok_or_else(bad),
            Value::String(s) => match s.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if a > b {
                        return Err(bad());
                    }
                    Ok((a, b))
                }
                None => Ok((0, num(s)?)),
            },
            _ => Err(bad()),
        }
    }

    fn codes(&self, key: &str, v: &Value) -> Result<Vec<(CodeKey, String)>, SdlError> {
        let c = v.as_object().ok_or_else(|| {
            self.err(
                key,
                "expected an object of value -> description (\"0\": \"Accepted\")",
            )
        })?;
        let mut codes = Vec::new();
        for (k, v) in c {
            let path = join(key, k);
            let code = CodeKey::parse(k).ok_or_else(|| {
                self.err(&path, format!("'{k}' is not a value, >N, <N, N-M or *"))
            })?;
            let desc = v
                .as_str()
                .ok_or_else(|| self.err(&path, "expected a description string"))?;
            codes.push((code, desc.to_string()));
        }
        // Exact values win over ranges and comparisons, which win over "*".
        codes.sort_by_key(|(k, _)| match k {
            CodeKey::Eq(_) => 0,
            CodeKey::Range(..) => 1,
            CodeKey::Gt(_) | CodeKey::Lt(_) => 2,
            CodeKey::Any => 3,
        });
        Ok(codes)
    }

    fn boolean(&self, key: &str, v: &Value) -> Result<bool, SdlError> {
        match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
            Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
            other => Err(self.err(key, format!("expected true or false, found {other}"))),
        }
    }

    fn direction(&self, key: &str, v: &Value) -> Result<Direction, SdlError> {
        let text = v.as_str().ok_or_else(|| {
            self.err(
                key,
                format!("expected \"h->e\", \"h<-e\" or \"h<->e\", found {v}"),
            )
        })?;
        let t: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        match t.as_str() {
            "h->e" | "e<-h" => Ok(Direction::ToEquipment),
            "h<-e" | "e->h" => Ok(Direction::ToHost),
            "h<->e" | "e<->h" | "both" => Ok(Direction::Both),
            _ => Err(self.err(
                key,
                format!(
                    "'{text}' is not h->e (host sends), h<-e (equipment sends) or h<->e (either)"
                ),
            )),
        }
    }

    fn block(&self, key: &str, v: &Value) -> Result<Block, SdlError> {
        match v.as_str().map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            Some("single") => Ok(Block::Single),
            Some("multiple") | Some("multi") => Ok(Block::Multiple),
            _ => Err(self.err(
                key,
                format!("expected \"single\" or \"multiple\", found {v}"),
            )),
        }
    }

    fn common_id(&self, key: &str, v: &Value) -> Result<Vec<String>, SdlError> {
        match v {
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    n.as_str().map(str::to_owned).ok_or_else(|| {
                        self.err(
                            &format!("{key}[{i}]"),
                            "expected an item name such as \"CEID\"",
                        )
                    })
                })
                .collect(),
            Value::Null => Ok(Vec::new()),
            _ => Err(self.err(key, "expected a list of item names, e.g. [\"CEID\"]")),
        }
    }

    fn defaults(&mut self, key: &str, v: &Value) -> Result<Defaults, SdlError> {
        let obj = v.as_object().ok_or_else(|| {
            self.err(
                key,
                "expected an object of message keys (\"reply\": false, ...)",
            )
        })?;
        let mut d = Defaults::default();
        for (k, v) in obj {
            let path = join(key, k);
            match self.known_key(key, k, MESSAGE_KEYS) {
                Some("doc") => d.doc = self.doc(&path, v)?,
                Some("direction") => d.direction = Some(self.direction(&path, v)?),
                Some("reply") => d.reply = Some(self.boolean(&path, v)?),
                Some("block") => d.block = Some(self.block(&path, v)?),
                Some("realtime") => d.realtime = Some(self.boolean(&path, v)?),
                Some("SQLTags") => d.sql_tags = Some(self.boolean(&path, v)?),
                Some("CommonID") => d.common_id = Some(self.common_id(&path, v)?),
                Some(k) => self.warn(&path, format!("{k} has no default, ignored")),
                None => {}
            }
        }
        Ok(d)
    }

    /// The definitions of one S/F: a definition object, or an array of them (tried in this
    /// order), appended to `defs`.
    fn definitions(
        &mut self,
        key: &str,
        sf: StreamFunction,
        v: &Value,
        defaults: &Defaults,
        items: &HashMap<String, ItemDef>,
        defs: &mut Vec<MessageDef>,
    ) -> Result<(), SdlError> {
        match v {
            Value::Array(list) => {
                if list.is_empty() {
                    self.warn(
                        key,
                        "an empty array of definitions defines nothing, ignored",
                    );
                }
                for (i, one) in list.iter().enumerate() {
                    let def =
                        self.message(&format!("{key}[{i}]"), sf, defs.len(), one, defaults, items)?;
                    defs.push(def);
                }
            }
            one => {
                let def = self.message(key, sf, defs.len(), one, defaults, items)?;
                defs.push(def);
            }
        }
        Ok(())
    }

    fn message(
        &mut self,
        key: &str,
        sf: StreamFunction,
        index: usize,
        v: &Value,
        defaults: &Defaults,
        items: &HashMap<String, ItemDef>,
    ) -> Result<MessageDef, SdlError> {
        let obj = v.as_object().ok_or_else(|| {
            self.err(key, "expected a message definition such as {\"doc\": ..., \"direction\": \"h->e\", \"reply\": true, \"body\": ...}, or an array of them")
        })?;
        // The name first: it decides how the body's lists are read.
        let name = match obj.iter().find(|(k, _)| k.eq_ignore_ascii_case("name")) {
            None => None,
            Some((k, Value::String(n))) if !n.trim().is_empty() => {
                let n = n.trim().to_string();
                let path = join(key, k);
                if let Some((other_sf, _, other)) = self.names.get(&n) {
                    return Err(self.err(
                        &path,
                        format!("the name '{n}' is already used by {other_sf} ({other}); names must differ"),
                    ));
                }
                self.names.insert(n.clone(), (sf, index, path));
                Some(n)
            }
            Some((k, other)) => {
                return Err(self.err(
                    &join(key, k),
                    format!("expected the definition's name as a non-empty string, found {other}"),
                ));
            }
        };
        self.open_lists = name.is_some();
        let mut def = MessageDef {
            name,
            doc: defaults.doc.clone(),
            direction: defaults.direction.unwrap_or(Direction::Both),
            reply: defaults.reply.unwrap_or(false),
            block: defaults.block.unwrap_or(Block::Single),
            realtime: defaults.realtime.unwrap_or(false),
            sql_tags: defaults.sql_tags.unwrap_or(false),
            common_id: defaults.common_id.clone().unwrap_or_default(),
            body: None,
            remote_command: None,
            keys: Vec::new(),
        };
        let mut common_id_key = None;
        let mut body_key = None;
        for (k, v) in obj {
            let path = join(key, k);
            match self.known_key(key, k, MESSAGE_KEYS) {
                Some("doc") => def.doc = self.doc(&path, v)?,
                Some("direction") => def.direction = self.direction(&path, v)?,
                Some("reply") => def.reply = self.boolean(&path, v)?,
                Some("block") => def.block = self.block(&path, v)?,
                Some("realtime") => def.realtime = self.boolean(&path, v)?,
                Some("SQLTags") => def.sql_tags = self.boolean(&path, v)?,
                Some("CommonID") => {
                    def.common_id = self.common_id(&path, v)?;
                    common_id_key = Some(path);
                }
                Some("body") => {
                    def.body = match v {
                        Value::Null => None,
                        spec => Some(self.spec(&path, spec, items)?),
                    };
                    body_key = Some(path);
                }
                Some("remote_command") => {
                    if remote_layout(sf).is_none() {
                        return Err(self.err(
                            &path,
                            format!(
                                "{sf} is not a remote command: only S2F41 and S2F49 may be one"
                            ),
                        ));
                    }
                    def.remote_command = Some(self.remote_command(&path, v, items)?);
                }
                _ => {}
            }
        }
        if let Some(command) = &def.remote_command {
            if let Some(body_key) = body_key {
                return Err(self.err(
                    &body_key,
                    "a remote command definition has no body: its structure is the command's, its parameters are in remote_command",
                ));
            }
            def.body = Some(remote_body(sf, items));
            if let (Some(rcmd), Some((at, _))) = (&command.rcmd, remote_layout(sf)) {
                def.keys.push((vec![at], rcmd.clone()));
            }
        }
        if let Some(body) = &def.body {
            key_paths(body, &mut Vec::new(), &mut def.keys);
        }
        self.open_lists = false;
        if let Some(where_) = common_id_key {
            for name in &def.common_id {
                if def.body.as_ref().is_some_and(|b| b.names(name)) {
                    continue;
                }
                self.warn(
                    &where_,
                    format!("names {name}, which the body does not contain, so its CommonID part is always empty"),
                );
            }
        }
        Ok(def)
    }

    /// A body structure; see the module documentation for the forms.
    fn spec(
        &mut self,
        key: &str,
        v: &Value,
        items: &HashMap<String, ItemDef>,
    ) -> Result<Spec, SdlError> {
        match v {
            Value::String(s) => {
                let t = s.trim();
                match t.strip_suffix('*') {
                    Some(name) if !name.is_empty() => {
                        Ok(Spec::Repeat(Box::new(self.named(key, name, items)?)))
                    }
                    _ => self.named(key, t, items),
                }
            }
            Value::Array(_) => {
                let elements = self.elements(key, v, items)?;
                Ok(self.fixed_list(elements, None, false))
            }
            Value::Object(obj) => {
                let list_key = obj.keys().find(|k| LIST_KEYS.contains(&k.as_str()));
                match list_key {
                    Some(lk) => self.list(key, lk, obj, items),
                    None => self.inline_item(key, obj, items),
                }
            }
            other => Err(self.err(
                key,
                format!("{other} is not a body form: use an item name (\"SVID\"), \"SVID*\", an array, {{\"L\": [...]}}, {{\"L*\": ...}}, {{\"L?\": [...]}} or an item object {{\"name\": \"SVID\", \"format\": \"U4\"}}"),
            )),
        }
    }

    fn named(
        &self,
        key: &str,
        name: &str,
        items: &HashMap<String, ItemDef>,
    ) -> Result<Spec, SdlError> {
        if name.eq_ignore_ascii_case("ANY") {
            return Ok(Spec::Any);
        }
        if items.contains_key(name) {
            return Ok(Spec::Item(name.to_string()));
        }
        // A bare format code ("U4") is an unnamed item of that format.
        if let Some(formats) =
            format_group(name).or_else(|| name.parse::<Format>().ok().map(|f| vec![f]))
        {
            return Ok(Spec::Inline(Box::new(ItemDef {
                name: String::new(),
                doc: None,
                formats,
                length: None,
                codes: Vec::new(),
            })));
        }
        Err(self.err(
            key,
            format!("item '{name}' is not defined in items: define it there, or write it inline as {{\"name\": \"{name}\", \"format\": \"U4\"}}"),
        ))
    }

    /// The elements of a list written as an array.
    fn elements(
        &mut self,
        key: &str,
        v: &Value,
        items: &HashMap<String, ItemDef>,
    ) -> Result<Vec<Spec>, SdlError> {
        let Value::Array(elements) = v else {
            return Err(self.err(key, "expected an array of elements"));
        };
        elements
            .iter()
            .enumerate()
            .map(|(i, e)| self.spec(&format!("{key}[{i}]"), e, items))
            .collect()
    }

    /// A list of fixed elements: exact or open-ended as `exact_length` says, or as the
    /// definition's default (open-ended in a named definition, exact otherwise).
    fn fixed_list(&self, elements: Vec<Spec>, exact_length: Option<bool>, or_empty: bool) -> Spec {
        match (exact_length.unwrap_or(!self.open_lists), or_empty) {
            (true, false) => Spec::List(elements),
            (true, true) => Spec::ListOrEmpty(elements),
            (false, or_empty) => Spec::Open { elements, or_empty },
        }
    }

    fn list(
        &mut self,
        key: &str,
        list_key: &str,
        obj: &Map<String, Value>,
        items: &HashMap<String, ItemDef>,
    ) -> Result<Spec, SdlError> {
        let mut exact_length = None;
        for (k, v) in obj {
            if k != list_key && !["name", "doc"].contains(&k.as_str()) {
                let path = join(key, k);
                if LIST_KEYS.contains(&k.as_str()) {
                    return Err(self.err(
                        &path,
                        format!("a list has one of L, L* or L?, not both {list_key} and {k}"),
                    ));
                }
                if k.eq_ignore_ascii_case("exact_length") {
                    exact_length = Some(self.boolean(&path, v)?);
                    continue;
                }
                if k.eq_ignore_ascii_case("key") {
                    return Err(self.err(
                        &path,
                        "a key is the value of an item; a list cannot have one (put the key on an item inside it)",
                    ));
                }
                self.warn(&path, "unknown key in a list, ignored; a list has L, L* or L?, and may have name, doc and exact_length");
            }
        }
        let path = join(key, list_key);
        let Some(v) = obj.get(list_key) else {
            return Err(self.err(&path, "missing"));
        };
        let repeated = list_key == "L*" || !matches!(v, Value::Array(_));
        if repeated && exact_length.is_some() {
            self.warn(
                &join(key, "exact_length"),
                "a repeated list (L*) has any number of elements; exact_length has no effect, ignored",
            );
        }
        match (list_key, v) {
            ("L*", v) => self.repeat(&path, v, items),
            ("L?", Value::Array(_)) => {
                let elements = self.elements(&path, v, items)?;
                Ok(self.fixed_list(elements, exact_length, true))
            }
            ("L?", _) => Err(self.err(&path, "expected an array of elements")),
            (_, Value::Array(_)) => {
                let elements = self.elements(&path, v, items)?;
                Ok(self.fixed_list(elements, exact_length, false))
            }
            (_, other) => self.repeat(&path, other, items),
        }
    }

    /// A list of any number of the element `v`.
    fn repeat(
        &mut self,
        key: &str,
        v: &Value,
        items: &HashMap<String, ItemDef>,
    ) -> Result<Spec, SdlError> {
        self.in_repeat += 1;
        let inner = self.spec(key, v, items);
        self.in_repeat -= 1;
        Ok(Spec::Repeat(Box::new(inner?)))
    }

    /// `{"name": "SVID"}` refers to an item; other keys (`doc`, `format`, `codes`, `length`)
    /// change that item in this place only, or define an item in place when the name is not
    /// in `items` (or absent).
    fn inline_item(
        &mut self,
        key: &str,
        obj: &Map<String, Value>,
        items: &HashMap<String, ItemDef>,
    ) -> Result<Spec, SdlError> {
        if let Some((k, v)) = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case("key")) {
            let path = join(key, k);
            let rest: Map<String, Value> = obj
                .iter()
                .filter(|(other, _)| *other != k)
                .map(|(a, b)| (a.clone(), b.clone()))
                .collect();
            let inner = self.inline_item(key, &rest, items)?;
            let value = self.key(&path, v, &inner, items)?;
            return Ok(Spec::Key(Box::new(inner), value));
        }
        let name = match obj.get("name") {
            None => None,
            Some(Value::String(n)) => Some(n.trim().to_string()),
            Some(_) => {
                return Err(self.err(&join(key, "name"), "expected the item's name as a string"));
            }
        };
        let base = name.as_ref().and_then(|n| items.get(n));
        if let (Some(n), Some(base)) = (&name, base) {
            if obj.keys().all(|k| k == "name") {
                return Ok(Spec::Item(n.clone()));
            }
            let def = self.item_keys(key, base.clone(), obj)?;
            return Ok(Spec::Inline(Box::new(def)));
        }
        let def = self.item_def(
            key,
            name.as_deref().unwrap_or(""),
            &Value::Object(obj.clone()),
        )?;
        Ok(Spec::Inline(Box::new(def)))
    }

    /// The value of an element's `key`, checked against the element it is on.
    fn key(
        &self,
        path: &str,
        v: &Value,
        element: &Spec,
        items: &HashMap<String, ItemDef>,
    ) -> Result<Key, SdlError> {
        if self.in_repeat > 0 {
            return Err(self.err(
                path,
                "a key cannot be inside a repeated list (L* or NAME*): it must be at one place of the body",
            ));
        }
        if self.in_parameter {
            return Err(self.err(
                path,
                "a remote command's key is its RCMD; its parameters cannot have keys",
            ));
        }
        let key = Key::from_json(v).ok_or_else(|| {
            self.err(
                path,
                format!("expected the value the item must equal: text, a number, true/false, or an array of numbers or booleans; found {v}"),
            )
        })?;
        let formats = match element {
            Spec::Item(name) => items
                .get(name)
                .map(|d| d.formats.clone())
                .unwrap_or_default(),
            Spec::Inline(def) => def.formats.clone(),
            _ => Vec::new(),
        };
        if !formats.is_empty() && !formats.iter().any(|f| key.fits(*f)) {
            let names: Vec<&str> = formats.iter().map(|f| f.name()).collect();
            return Err(self.err(
                path,
                format!(
                    "key {key} can never equal an item of format {}",
                    names.join(" or ")
                ),
            ));
        }
        Ok(key)
    }

    /// `remote_command`: `{"RCMD": "START", "parameters": {"LOTID": "A", ...}, "optional":
    /// ["QTY"]}`.
    fn remote_command(
        &mut self,
        key: &str,
        v: &Value,
        items: &HashMap<String, ItemDef>,
    ) -> Result<RemoteCommandDef, SdlError> {
        let obj = v.as_object().ok_or_else(|| {
            self.err(
                key,
                "expected {\"RCMD\": \"START\", \"parameters\": {\"LOTID\": \"A\", ...}, \"optional\": [...]}",
            )
        })?;
        let mut command = RemoteCommandDef {
            rcmd: None,
            parameters: Vec::new(),
        };
        let mut optional: Vec<(String, String)> = Vec::new();
        for (k, v) in obj {
            let path = join(key, k);
            match self.known_key(key, k, REMOTE_COMMAND_KEYS) {
                Some("RCMD") => {
                    command.rcmd = match v {
                        Value::Null => None,
                        Value::String(_) | Value::Number(_) => Key::from_json(v),
                        other => {
                            return Err(self.err(
                                &path,
                                format!("expected the command as text (\"START\") or a number, found {other}"),
                            ));
                        }
                    }
                }
                Some("parameters") => {
                    let params = v.as_object().ok_or_else(|| {
                        self.err(
                            &path,
                            "expected an object of CPNAME -> value structure ({\"LOTID\": \"A\", \"QTY\": \"U4\"})",
                        )
                    })?;
                    for (name, spec) in params {
                        self.in_parameter = true;
                        let value = self.spec(&join(&path, name), spec, items);
                        self.in_parameter = false;
                        command.parameters.push(ParameterDef {
                            name: name.clone(),
                            value: value?,
                            required: true,
                        });
                    }
                }
                Some("optional") => {
                    let list = v.as_array().ok_or_else(|| {
                        self.err(&path, "expected a list of CPNAMEs, e.g. [\"QTY\"]")
                    })?;
                    for (i, n) in list.iter().enumerate() {
                        let p = format!("{path}[{i}]");
                        let n = n
                            .as_str()
                            .ok_or_else(|| self.err(&p, "expected a CPNAME as a string"))?;
                        optional.push((n.to_string(), p));
                    }
                }
                _ => {}
            }
        }
        for (name, path) in optional {
            match command.parameters.iter_mut().find(|p| p.name == name) {
                Some(p) => p.required = false,
                None => {
                    return Err(self.err(&path, format!("'{name}' is not one of the parameters")));
                }
            }
        }
        Ok(command)
    }
}

/// The structure of a remote command's body: S2F41 `<L[2] RCMD <L[n] <L[2] CPNAME CPVAL>…>>`,
/// S2F49 `<L[4] DATAID OBJSPEC RCMD <L[n] <L[2] CPNAME CEPVAL>…>>`; the items as the SDL
/// defines them if it does (any format otherwise), the values checked per parameter.
fn remote_body(sf: StreamFunction, items: &HashMap<String, ItemDef>) -> Spec {
    let item = |name: &str| {
        if items.contains_key(name) {
            Spec::Item(name.to_string())
        } else {
            Spec::Inline(Box::new(ItemDef {
                name: name.to_string(),
                doc: None,
                formats: Vec::new(),
                length: None,
                codes: Vec::new(),
            }))
        }
    };
    let parameters = Spec::Repeat(Box::new(Spec::List(vec![item("CPNAME"), Spec::Any])));
    if (sf.stream, sf.function) == (2, 49) {
        Spec::List(vec![
            item("DATAID"),
            item("OBJSPEC"),
            item("RCMD"),
            parameters,
        ])
    } else {
        Spec::List(vec![item("RCMD"), parameters])
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Levenshtein distance, for "did you mean" hints on misspelt keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
