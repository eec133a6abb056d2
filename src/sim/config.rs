//! The simulator's config file (TOML): the equipment model, live variables and event runs.
//!
//! ```toml
//! [equipment]
//! mdln = "SECSGATE-SIM"
//! softrev = "1.0.0"
//! control_state = "online-remote"
//! spool = [5, 6]
//!
//! [[status_variable]]
//! id = 1
//! name = "ChamberTemperature"
//! units = "degC"
//! format = "F4"
//! value = 21.5
//! live = { kind = "random_walk", step = 0.5, min = 15, max = 30, every = "1s" }
//!
//! [[collection_event]]
//! id = 100
//! name = "LotStarted"
//!
//! [[event_run]]
//! name = "lot"
//! [[event_run.step]]
//! delay = "1s"
//! event = 100
//! ```
//!
//! The full list of tables and keys is in the README and in the shipped default,
//! `sdl/simulator.toml`. Every error names the file, the line and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::gem::equipment::answers;
use crate::gem::model::{
    Alarm, Constant, Event, Id, LimitCapability, Model, Parameter, RemoteCommand, Standard,
    Trigger, Variable, VariableClass,
};
use crate::sdl::{Key, Sdl};
use crate::secs2::{Format, Item, StreamFunction, sml};

/// The default config, shipped in `sdl/simulator.toml`.
pub const DEFAULT_CONFIG: &str = include_str!("../../sdl/simulator.toml");

/// A config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read simulator config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {key}: {message}")]
    Invalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
}

/// A loaded simulator configuration.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The equipment model.
    pub model: Model,
    /// Variables that change on their own.
    pub live: Vec<LiveVariable>,
    /// Event runs, by name.
    pub runs: Vec<EventRun>,
    /// Folder of the process programs (relative paths resolved against the config file's
    /// folder); `None` keeps them beside the spool.
    pub programs_dir: Option<PathBuf>,
    /// What loaded but was ignored (unknown keys of the SDL), each with its file, line and
    /// key: for the log.
    pub warnings: Vec<String>,
}

/// How a live variable changes.
#[derive(Clone, Debug, PartialEq)]
pub enum Live {
    /// Adds `step` every period (wrapping at the format's range).
    Counter { step: f64 },
    /// Adds a random amount in -step..=step every period, kept within min..=max.
    RandomWalk { step: f64, min: f64, max: f64 },
}

/// A variable the simulator changes every `every`.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveVariable {
    pub id: Id,
    pub every: Duration,
    pub kind: Live,
}

/// An ordered sequence of steps (usually S6F11 events with delays), started from the
/// config (`autostart`), by [`crate::sim::Simulator::start_event_run`], by a remote command,
/// or every `every`.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRun {
    pub name: String,
    pub autostart: bool,
    pub every: Option<Duration>,
    /// Times through the steps per start.
    pub repeat: u32,
    pub steps: Vec<Step>,
}

/// One step of an event run: after `delay`, set variables, then set/clear alarms, then
/// trigger the event.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Step {
    pub delay: Duration,
    pub set: Vec<(Id, Item)>,
    pub alarm_set: Option<Id>,
    pub alarm_clear: Option<Id>,
    pub event: Option<Id>,
}

impl SimConfig {
    /// Loads a config file.
    pub fn load(path: &Path) -> Result<SimConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        SimConfig::parse(&text, &path.display().to_string(), path.parent())
    }

    /// Parses config text; `file` names it in errors, `base` resolves relative paths.
    pub fn parse(text: &str, file: &str, base: Option<&Path>) -> Result<SimConfig, ConfigError> {
        let ctx = Ctx { text, file };
        let entries: FileEntry = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
        Builder::new(ctx, base).build(entries)
    }

    /// The config shipped in `sdl/simulator.toml`: `secsgate sim` with no `--config`.
    pub fn default_config() -> SimConfig {
        match SimConfig::parse(DEFAULT_CONFIG, "sdl/simulator.toml", None) {
            Ok(c) => c,
            // The shipped file is checked by the test suite; this cannot happen in a release.
            Err(e) => panic!("the shipped simulator config is invalid: {e}"),
        }
    }

    /// The device ID the config asks for.
    pub fn device_id(&self) -> u16 {
        self.model.device_id
    }

    /// The names of the event runs.
    pub fn run_names(&self) -> Vec<String> {
        self.runs.iter().map(|r| r.name.clone()).collect()
    }
}

// ---------------------------------------------------------------- file form

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    equipment: Option<Spanned<EquipmentEntry>>,
    #[serde(default)]
    standard_ids: Option<Spanned<BTreeMap<String, Id>>>,
    #[serde(default)]
    status_variable: Vec<Spanned<VariableEntry>>,
    #[serde(default)]
    data_variable: Vec<Spanned<VariableEntry>>,
    #[serde(default)]
    equipment_constant: Vec<Spanned<ConstantEntry>>,
    #[serde(default)]
    collection_event: Vec<Spanned<EventEntry>>,
    #[serde(default)]
    report: Vec<Spanned<ReportEntry>>,
    #[serde(default)]
    alarm: Vec<Spanned<AlarmEntry>>,
    #[serde(default)]
    remote_command: Vec<Spanned<CommandEntry>>,
    #[serde(default)]
    echo: Vec<Spanned<EchoEntry>>,
    #[serde(default)]
    event_run: Vec<Spanned<RunEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EquipmentEntry {
    mdln: String,
    softrev: String,
    device_id: u16,
    control_state: String,
    online_failed: String,
    establish_communications_timeout: u16,
    time_format: u8,
    enable_spooling: bool,
    overwrite_spool: bool,
    max_spool_transmit: u32,
    spool_capacity: usize,
    spool: Vec<SpoolEntry>,
    process_programs: Option<String>,
    max_process_program_size: usize,
    max_process_programs: usize,
    max_process_program_bytes: u64,
    max_traces: usize,
    max_reports: usize,
    sdl: Option<String>,
}

impl Default for EquipmentEntry {
    fn default() -> Self {
        EquipmentEntry {
            mdln: "SECSGATE-SIM".into(),
            softrev: env!("CARGO_PKG_VERSION").into(),
            device_id: 0,
            control_state: "online-remote".into(),
            online_failed: "host-offline".into(),
            establish_communications_timeout: 10,
            time_format: 1,
            enable_spooling: true,
            overwrite_spool: false,
            max_spool_transmit: 0,
            spool_capacity: 10_000,
            spool: Vec::new(),
            process_programs: None,
            max_process_program_size: 4 * 1024 * 1024,
            max_process_programs: 1000,
            max_process_program_bytes: 64 * 1024 * 1024,
            max_traces: 16,
            max_reports: 1000,
            sdl: None,
        }
    }
}

/// `6` (every function of stream 6) or `{ stream = 6, functions = [11] }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum SpoolEntry {
    Stream(u8),
    Functions { stream: u8, functions: Vec<u8> },
}

/// An integer or a float.
#[derive(Clone, Copy, Debug)]
struct Num(f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum N {
            I(i64),
            F(f64),
        }
        Ok(Num(match N::deserialize(d)? {
            N::I(i) => i as f64,
            N::F(f) => f,
        }))
    }
}

/// A duration: seconds as a number, or text like "500ms", "2s", "1.5m", "1h".
#[derive(Clone, Copy, Debug)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum V {
            N(Num),
            T(String),
        }
        let parsed = match V::deserialize(d)? {
            V::N(Num(s)) => Duration::try_from_secs_f64(s).ok(),
            V::T(t) => parse_duration(&t),
        };
        parsed.map(Dur).ok_or_else(|| {
            serde::de::Error::custom(
                "expected a duration: seconds, or text such as \"500ms\", \"2s\", \"1m\", \"1h\"",
            )
        })
    }
}

/// "500ms", "2s", "1.5m", "1h" (or bare seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VariableEntry {
    id: Id,
    name: String,
    #[serde(default)]
    units: String,
    format: Option<String>,
    value: Option<toml::Value>,
    sml: Option<String>,
    live: Option<LiveEntry>,
    limits: Option<LimitsEntry>,
    #[serde(default)]
    triggers: Vec<TriggerEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveEntry {
    kind: String,
    every: Dur,
    step: Option<Num>,
    min: Option<Num>,
    max: Option<Num>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsEntry {
    min: Num,
    max: Num,
    event: Id,
    #[serde(default = "two")]
    count: u8,
}

fn two() -> u8 {
    2
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerEntry {
    event: Id,
    value: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConstantEntry {
    id: Id,
    name: String,
    #[serde(default)]
    units: String,
    format: Option<String>,
    value: Option<toml::Value>,
    sml: Option<String>,
    min: Option<toml::Value>,
    max: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventEntry {
    id: Id,
    name: String,
    #[serde(default)]
    data_variables: Vec<Id>,
    #[serde(default)]
    reports: Vec<Id>,
    #[serde(default)]
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportEntry {
    id: Id,
    variables: Vec<Id>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmEntry {
    id: Id,
    #[serde(default)]
    name: String,
    text: String,
    #[serde(default = "one")]
    category: u8,
    #[serde(default)]
    enabled: bool,
    set_event: Option<Id>,
    clear_event: Option<Id>,
}

fn one() -> u8 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandEntry {
    name: String,
    #[serde(default)]
    ack: u8,
    event: Option<Id>,
    run: Option<String>,
    #[serde(default)]
    parameters: Vec<ParameterEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParameterEntry {
    name: String,
    format: Option<String>,
    #[serde(default)]
    values: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoEntry {
    request: Option<String>,
    message: Option<String>,
    reply: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunEntry {
    name: String,
    #[serde(default)]
    autostart: bool,
    every: Option<Dur>,
    #[serde(default = "one_u32")]
    repeat: u32,
    #[serde(default)]
    step: Vec<StepEntry>,
}

fn one_u32() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepEntry {
    delay: Option<Dur>,
    event: Option<Id>,
    #[serde(default)]
    set: BTreeMap<String, toml::Value>,
    alarm_set: Option<Id>,
    alarm_clear: Option<Id>,
}

// ---------------------------------------------------------------- errors with lines

/// The text being read, for turning byte offsets into lines in error messages.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    text: &'a str,
    file: &'a str,
}

impl Ctx<'_> {
    /// `offset` moved back to the start of a character (spans come from outside this code).
    fn boundary(&self, offset: usize) -> usize {
        let mut o = offset.min(self.text.len());
        while !self.text.is_char_boundary(o) {
            o -= 1;
        }
        o
    }

    fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The line of `key = ...` in the entry starting at `span` (up to the next table
    /// header).
    fn line_of_key(&self, span: &Range<usize>, key: &str) -> Option<usize> {
        let start = self.boundary(span.start);
        let mut offset = start;
        for (i, line) in self.text[start..].split_inclusive('\n').enumerate() {
            let t = line.trim_start();
            if i > 0 && t.starts_with('[') && !t.starts_with("[[event_run.step") {
                break;
            }
            if let Some(rest) = t.strip_prefix(key)
                && rest.trim_start().starts_with('=')
            {
                return Some(self.line_at(offset));
            }
            offset += line.len();
        }
        None
    }

    fn invalid(&self, span: &Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        // The innermost part of the key written as `part = ...` in the entry.
        let line = key
            .rsplit('.')
            .find_map(|part| self.line_of_key(span, part))
            .unwrap_or_else(|| self.line_at(span.start));
        ConfigError::Invalid {
            file: self.file.to_string(),
            line,
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// A TOML syntax or type error, with the key read off the line it points at.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let offset = e.span().map_or(0, |s| s.start);
        let line = self.line_at(offset);
        ConfigError::Invalid {
            file: self.file.to_string(),
            line,
            key: self.key_near(offset),
            message: e.message().trim().to_string(),
        }
    }

    /// `table.key` for the line holding `offset`: the nearest `[table]` header above and the
    /// word before `=` on that line.
    fn key_near(&self, offset: usize) -> String {
        let offset = self.boundary(offset);
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        let line = &self.text[line_start..line_end];
        let key = line
            .split_once('=')
            .map(|(k, _)| k.trim().to_string())
            .unwrap_or_default();
        let table = self.text[..line_start]
            .lines()
            .rev()
            .chain(std::iter::once(line))
            .find_map(|l| {
                let t = l.trim();
                t.starts_with('[')
                    .then(|| t.trim_matches(['[', ']']).trim().to_string())
            })
            .unwrap_or_default();
        match (table.is_empty(), key.is_empty()) {
            (true, true) => "(top level)".into(),
            (true, false) => key,
            (false, true) => table,
            (false, false) => format!("{table}.{key}"),
        }
    }
}

// ---------------------------------------------------------------- values

fn format_named(name: &str) -> Result<Format, String> {
    name.parse::<Format>().map_err(|e| e.to_string())
}

/// A TOML value as an item of `format` (inferred from the value when `None`): numbers,
/// booleans, text, or an array of them for a multi-valued item.
pub fn item_from_toml(value: &toml::Value, format: Option<Format>) -> Result<Item, String> {
    use toml::Value as V;
    let format = match format {
        Some(f) => f,
        None => infer_format(value)?,
    };
    let values: Vec<&V> = match value {
        V::Array(a) => a.iter().collect(),
        v => vec![v],
    };
    match format {
        Format::List => Err("a list value is written with `sml = \"<L ...>\"`".into()),
        Format::Ascii | Format::Jis8 | Format::Localized => match value {
            V::String(s) => Ok(match format {
                Format::Ascii => Item::ascii(s),
                Format::Jis8 => Item::J(s.bytes().collect()),
                _ => Item::localized(s),
            }),
            other => Err(format!("{format} needs a string, not {}", other.type_str())),
        },
        _ => {
            let mut words = Vec::with_capacity(values.len());
            for v in values {
                words.push(match v {
                    V::Integer(i) => i.to_string(),
                    V::Float(f) => format!("{f:?}"),
                    V::Boolean(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
                    other => {
                        return Err(format!(
                            "{format} needs numbers or booleans, not {}",
                            other.type_str()
                        ));
                    }
                });
            }
            sml::parse_item(&format!("<{} {}>", format.name(), words.join(" ")))
                .map_err(|e| e.message)
        }
    }
}

fn infer_format(value: &toml::Value) -> Result<Format, String> {
    use toml::Value as V;
    Ok(match value {
        V::Integer(i) if *i < 0 => Format::I4,
        V::Integer(_) => Format::U4,
        V::Float(_) => Format::F8,
        V::Boolean(_) => Format::Boolean,
        V::String(_) => Format::Ascii,
        V::Array(a) => match a.first() {
            Some(first) => infer_format(first)?,
            None => return Err("an empty array needs a `format`".into()),
        },
        other => return Err(format!("cannot make an item of a {}", other.type_str())),
    })
}

/// A variable's or constant's initial value from `format` + `value` or `sml`.
fn initial_value(
    format: Option<&str>,
    value: Option<&toml::Value>,
    sml_text: Option<&str>,
) -> Result<Item, (&'static str, String)> {
    let format = format
        .map(format_named)
        .transpose()
        .map_err(|e| ("format", e))?;
    match (value, sml_text) {
        (Some(_), Some(_)) => Err(("sml", "give `value` or `sml`, not both".into())),
        (None, Some(text)) => {
            let item = sml::parse_item(text).map_err(|e| ("sml", e.to_string()))?;
            match format {
                Some(f) if f != item.format() => {
                    Err(("sml", format!("the item is {}, not {f}", item.format())))
                }
                _ => Ok(item),
            }
        }
        (Some(v), None) => item_from_toml(v, format).map_err(|e| ("value", e)),
        (None, None) => Ok(Item::empty(format.unwrap_or(Format::U4))),
    }
}

fn control_state_settings(name: &str) -> Option<(u8, u8, u8)> {
    // (InitControlState, OffLineSubstate, OnLineSubstate)
    Some(match name {
        "equipment-offline" => (1, 1, 5),
        "attempt-online" => (1, 2, 5),
        "host-offline" => (1, 3, 5),
        "online-local" => (2, 3, 4),
        "online-remote" => (2, 3, 5),
        _ => return None,
    })
}

// ---------------------------------------------------------------- building

struct Builder<'a> {
    ctx: Ctx<'a>,
    base: Option<&'a Path>,
    model: Model,
    programs_dir: Option<PathBuf>,
    warnings: Vec<String>,
    /// The `[equipment]` entry, where `sdl` is.
    equipment_span: Range<usize>,
}

impl<'a> Builder<'a> {
    fn new(ctx: Ctx<'a>, base: Option<&'a Path>) -> Self {
        Builder {
            ctx,
            base,
            model: Model::new("", ""),
            programs_dir: None,
            warnings: Vec::new(),
            equipment_span: 0..0,
        }
    }

    fn build(mut self, f: FileEntry) -> Result<SimConfig, ConfigError> {
        self.equipment(f.equipment)?;
        if let Some(ids) = &f.standard_ids {
            self.standard_ids(ids)?;
        }
        for v in &f.status_variable {
            self.variable(v, VariableClass::Status, "status_variable")?;
        }
        for v in &f.data_variable {
            self.variable(v, VariableClass::Data, "data_variable")?;
        }
        for c in &f.equipment_constant {
            self.constant(c)?;
        }
        for e in &f.collection_event {
            self.event(e)?;
        }
        for r in &f.report {
            self.report(r)?;
        }
        for e in &f.collection_event {
            self.event_links(e)?;
        }
        for a in &f.alarm {
            self.alarm(a)?;
        }
        let run_names: BTreeSet<&str> = f
            .event_run
            .iter()
            .map(|r| r.get_ref().name.as_str())
            .collect();
        for c in &f.remote_command {
            self.command(c, &run_names)?;
        }
        for e in &f.echo {
            self.echo(e)?;
        }
        self.remote_command_definitions()?;
        for v in f.status_variable.iter().chain(&f.data_variable) {
            self.variable_references(v)?;
        }
        let live = f
            .status_variable
            .iter()
            .chain(&f.data_variable)
            .filter_map(|v| self.live(v).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        let mut runs = Vec::new();
        let mut seen = BTreeSet::new();
        for r in &f.event_run {
            if !seen.insert(r.get_ref().name.clone()) {
                return Err(self.ctx.invalid(
                    &r.span(),
                    "event_run.name",
                    format!("event run '{}' is defined twice", r.get_ref().name),
                ));
            }
            runs.push(self.run(r)?);
        }
        Ok(SimConfig {
            model: self.model,
            live,
            runs,
            programs_dir: self.programs_dir,
            warnings: self.warnings,
        })
    }

    fn equipment(&mut self, entry: Option<Spanned<EquipmentEntry>>) -> Result<(), ConfigError> {
        let (span, e) = match entry {
            Some(s) => (s.span(), s.into_inner()),
            None => (0..0, EquipmentEntry::default()),
        };
        let bad =
            |key: &str, msg: String| self.ctx.invalid(&span, &format!("equipment.{key}"), msg);
        for (key, value) in [("mdln", &e.mdln), ("softrev", &e.softrev)] {
            if value.len() > 20 {
                return Err(bad(key, format!("'{value}' is longer than 20 characters")));
            }
        }
        let (init, offline, online) = control_state_settings(&e.control_state).ok_or_else(|| {
            bad(
                "control_state",
                format!(
                    "'{}' is not one of equipment-offline, attempt-online, host-offline, online-local, online-remote",
                    e.control_state
                ),
            )
        })?;
        let online_failed = match e.online_failed.as_str() {
            "equipment-offline" => 1,
            "host-offline" => 3,
            other => {
                return Err(bad(
                    "online_failed",
                    format!("'{other}' is not equipment-offline or host-offline"),
                ));
            }
        };
        if e.time_format > 2 {
            return Err(bad(
                "time_format",
                "must be 0 (12 characters), 1 (16) or 2 (extended)".into(),
            ));
        }
        if e.establish_communications_timeout == 0 {
            return Err(bad(
                "establish_communications_timeout",
                "must be at least 1 second".into(),
            ));
        }
        let m = &mut self.model;
        m.mdln = e.mdln.clone();
        m.softrev = e.softrev.clone();
        m.device_id = e.device_id;
        let u1 = |v: u8| Item::U1(vec![v]);
        m.set_standard_constant(Standard::InitControlState, u1(init));
        m.set_standard_constant(Standard::OffLineSubstate, u1(offline));
        m.set_standard_constant(Standard::OnLineSubstate, u1(online));
        m.set_standard_constant(Standard::OnLineFailed, u1(online_failed));
        m.set_standard_constant(
            Standard::EstablishCommunicationsTimeout,
            Item::U2(vec![e.establish_communications_timeout]),
        );
        m.set_standard_constant(Standard::TimeFormat, u1(e.time_format));
        m.set_standard_constant(Standard::EnableSpooling, Item::boolean(e.enable_spooling));
        m.set_standard_constant(Standard::OverWriteSpool, Item::boolean(e.overwrite_spool));
        m.set_standard_constant(
            Standard::MaxSpoolTransmit,
            Item::U4(vec![e.max_spool_transmit]),
        );
        m.capacities.spool = e.spool_capacity.max(1);
        m.capacities.process_program = e.max_process_program_size;
        m.capacities.process_programs = e.max_process_programs;
        m.capacities.process_program_bytes = e.max_process_program_bytes;
        m.capacities.traces = e.max_traces;
        m.capacities.reports = e.max_reports;
        for s in &e.spool {
            let (stream, functions) = match s {
                SpoolEntry::Stream(s) => (*s, Vec::new()),
                SpoolEntry::Functions { stream, functions } => (*stream, functions.clone()),
            };
            let known = crate::gem::equipment::SPOOLABLE_STREAMS;
            if !known.contains(&stream) {
                return Err(self.ctx.invalid(
                    &span,
                    "equipment.spool",
                    format!("stream {stream} cannot be spooled (spoolable: 5, 6)"),
                ));
            }
            self.model
                .spool_streams
                .insert(stream, functions.into_iter().collect());
        }
        self.programs_dir = e.process_programs.as_ref().map(|p| match self.base {
            Some(base) if Path::new(p).is_relative() => base.join(p),
            _ => PathBuf::from(p),
        });
        self.equipment_span = span.clone();
        if let Some(file) = &e.sdl {
            let path = match self.base {
                Some(base) if Path::new(file).is_relative() => base.join(file),
                _ => PathBuf::from(file),
            };
            let (sdl, warnings) = Sdl::load(&path).map_err(|err| bad("sdl", err.to_string()))?;
            self.warnings
                .extend(warnings.iter().map(ToString::to_string));
            self.model.sdl = Some(Arc::new(sdl));
        }
        Ok(())
    }

    /// Every remote command the SDL defines for a command name must be carried out by a
    /// `[[remote_command]]` of that name or answered by an `[[echo]]` of the definition's
    /// name; otherwise the host's command would only ever get HCACK 1.
    fn remote_command_definitions(&self) -> Result<(), ConfigError> {
        let Some(sdl) = &self.model.sdl else {
            return Ok(());
        };
        for (sf, defs) in &sdl.messages {
            for def in defs {
                let Some(Key::Text(rcmd)) =
                    def.remote_command.as_ref().and_then(|c| c.rcmd.as_ref())
                else {
                    continue;
                };
                let echoed = def
                    .name
                    .as_ref()
                    .is_some_and(|n| self.model.named_echoes.contains_key(n));
                if !echoed && !self.model.remote_commands.contains_key(rcmd) {
                    return Err(self.ctx.invalid(
                        &self.equipment_span,
                        "equipment.sdl",
                        format!(
                            "{}: the {sf} definition {} of command {rcmd:?} has neither a [[remote_command]] named {rcmd} nor an [[echo]] with message = {:?}; the host's {rcmd} would only get HCACK 1",
                            sdl.file.display(),
                            def.name.as_deref().unwrap_or("(unnamed)"),
                            def.name.as_deref().unwrap_or("NAME"),
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn standard_ids(&mut self, ids: &Spanned<BTreeMap<String, Id>>) -> Result<(), ConfigError> {
        for (name, id) in ids.get_ref() {
            let key = format!("standard_ids.{name}");
            let s = Standard::from_name(name).ok_or_else(|| {
                self.ctx.invalid(
                    &ids.span(),
                    &key,
                    format!("'{name}' is not a standard GEM object"),
                )
            })?;
            self.model
                .move_standard(s, *id)
                .map_err(|e| self.ctx.invalid(&ids.span(), &key, e.to_string()))?;
        }
        Ok(())
    }

    fn variable(
        &mut self,
        entry: &Spanned<VariableEntry>,
        class: VariableClass,
        table: &str,
    ) -> Result<(), ConfigError> {
        let (span, v) = (entry.span(), entry.get_ref());
        let value = initial_value(v.format.as_deref(), v.value.as_ref(), v.sml.as_deref())
            .map_err(|(key, msg)| self.ctx.invalid(&span, &format!("{table}.{key}"), msg))?;
        let limits = v.limits.as_ref().map(|l| LimitCapability {
            min: l.min.0,
            max: l.max.0,
            event: l.event,
            count: l.count,
        });
        if let Some(l) = &limits
            && (l.min > l.max || l.count == 0)
        {
            return Err(self.ctx.invalid(
                &span,
                &format!("{table}.limits"),
                "needs min <= max and count >= 1",
            ));
        }
        let mut triggers = Vec::new();
        for t in &v.triggers {
            let value = t
                .value
                .as_ref()
                .map(|x| item_from_toml(x, Some(value.format())))
                .transpose()
                .map_err(|e| self.ctx.invalid(&span, &format!("{table}.triggers"), e))?;
            triggers.push(Trigger {
                event: t.event,
                value,
            });
        }
        self.model
            .add_variable(Variable {
                id: v.id,
                name: v.name.clone(),
                units: v.units.clone(),
                class,
                value,
                standard: None,
                limits,
                triggers,
            })
            .map_err(|e| {
                self.ctx
                    .invalid(&span, &format!("{table}.id"), e.to_string())
            })
    }

    /// Events named by a variable's limits and triggers must exist.
    fn variable_references(&self, entry: &Spanned<VariableEntry>) -> Result<(), ConfigError> {
        let (span, v) = (entry.span(), entry.get_ref());
        let events = v
            .limits
            .iter()
            .map(|l| ("limits", l.event))
            .chain(v.triggers.iter().map(|t| ("triggers", t.event)));
        for (key, ceid) in events {
            self.need_event(&span, &format!("variable {}: {key}", v.id), key, ceid)?;
        }
        Ok(())
    }

    fn need_event(
        &self,
        span: &Range<usize>,
        owner: &str,
        key: &str,
        ceid: Id,
    ) -> Result<(), ConfigError> {
        if self.model.events.contains_key(&ceid) {
            return Ok(());
        }
        Err(self.ctx.invalid(
            span,
            key,
            format!("{owner}: collection event {ceid} is not defined"),
        ))
    }

    fn live(&self, entry: &Spanned<VariableEntry>) -> Result<Option<LiveVariable>, ConfigError> {
        let (span, v) = (entry.span(), entry.get_ref());
        let Some(l) = &v.live else {
            return Ok(None);
        };
        let bad = |msg: String| self.ctx.invalid(&span, "live", msg);
        let numeric = self
            .model
            .variables
            .get(&v.id)
            .is_some_and(|x| x.value.format().is_numeric());
        if !numeric {
            return Err(bad(format!(
                "variable {} needs a numeric format to be live",
                v.id
            )));
        }
        if l.every.0.is_zero() {
            return Err(bad("`every` must be more than zero".into()));
        }
        let step = l.step.map_or(1.0, |s| s.0);
        let kind = match l.kind.as_str() {
            "counter" => Live::Counter { step },
            "random_walk" => {
                let (min, max) = (
                    l.min.map_or(f64::MIN, |m| m.0),
                    l.max.map_or(f64::MAX, |m| m.0),
                );
                if min > max {
                    return Err(bad("min is above max".into()));
                }
                Live::RandomWalk { step, min, max }
            }
            other => return Err(bad(format!("kind '{other}' is not counter or random_walk"))),
        };
        Ok(Some(LiveVariable {
            id: v.id,
            every: l.every.0,
            kind,
        }))
    }

    fn constant(&mut self, entry: &Spanned<ConstantEntry>) -> Result<(), ConfigError> {
        let (span, c) = (entry.span(), entry.get_ref());
        let key = |k: &str| format!("equipment_constant.{k}");
        let value = initial_value(c.format.as_deref(), c.value.as_ref(), c.sml.as_deref())
            .map_err(|(k, msg)| self.ctx.invalid(&span, &key(k), msg))?;
        let bound = |v: &Option<toml::Value>, k: &str| {
            v.as_ref()
                .map(|x| item_from_toml(x, Some(value.format())))
                .transpose()
                .map_err(|e| self.ctx.invalid(&span, &key(k), e))
        };
        let (min, max) = (bound(&c.min, "min")?, bound(&c.max, "max")?);
        let constant = Constant {
            id: c.id,
            name: c.name.clone(),
            units: c.units.clone(),
            default: value.clone(),
            value,
            min,
            max,
            standard: None,
        };
        self.model
            .add_constant(constant)
            .map_err(|e| self.ctx.invalid(&span, &key("id"), e.to_string()))
    }

    fn event(&mut self, entry: &Spanned<EventEntry>) -> Result<(), ConfigError> {
        let (span, e) = (entry.span(), entry.get_ref());
        for dv in &e.data_variables {
            if !self.model.has_vid(*dv) {
                return Err(self.ctx.invalid(
                    &span,
                    "collection_event.data_variables",
                    format!("event {}: variable {dv} is not defined", e.id),
                ));
            }
        }
        self.model
            .add_event(Event {
                id: e.id,
                name: e.name.clone(),
                data_variables: e.data_variables.clone(),
                standard: None,
            })
            .map_err(|err| {
                self.ctx
                    .invalid(&span, "collection_event.id", err.to_string())
            })?;
        if e.enabled {
            self.model.enabled_events.insert(e.id);
        }
        Ok(())
    }

    fn report(&mut self, entry: &Spanned<ReportEntry>) -> Result<(), ConfigError> {
        let (span, r) = (entry.span(), entry.get_ref());
        if let Some(v) = r.variables.iter().find(|v| !self.model.has_vid(**v)) {
            return Err(self.ctx.invalid(
                &span,
                "report.variables",
                format!("report {}: variable {v} is not defined", r.id),
            ));
        }
        self.model
            .add_report(r.id, r.variables.clone())
            .map_err(|e| self.ctx.invalid(&span, "report.id", e.to_string()))
    }

    fn event_links(&mut self, entry: &Spanned<EventEntry>) -> Result<(), ConfigError> {
        let (span, e) = (entry.span(), entry.get_ref());
        if e.reports.is_empty() {
            return Ok(());
        }
        if let Some(r) = e
            .reports
            .iter()
            .find(|r| !self.model.reports.contains_key(r))
        {
            return Err(self.ctx.invalid(
                &span,
                "collection_event.reports",
                format!("event {}: report {r} is not defined", e.id),
            ));
        }
        self.model.links.insert(e.id, e.reports.clone());
        Ok(())
    }

    fn alarm(&mut self, entry: &Spanned<AlarmEntry>) -> Result<(), ConfigError> {
        let (span, a) = (entry.span(), entry.get_ref());
        for (key, ceid) in [("set_event", a.set_event), ("clear_event", a.clear_event)] {
            if let Some(ceid) = ceid {
                self.need_event(
                    &span,
                    &format!("alarm {}", a.id),
                    &format!("alarm.{key}"),
                    ceid,
                )?;
            }
        }
        if a.category == 0 || a.category > 127 {
            return Err(self.ctx.invalid(&span, "alarm.category", "must be 1..=127"));
        }
        self.model
            .add_alarm(Alarm {
                id: a.id,
                name: a.name.clone(),
                text: a.text.clone(),
                category: a.category,
                set_event: a.set_event,
                clear_event: a.clear_event,
            })
            .map_err(|e| self.ctx.invalid(&span, "alarm.id", e.to_string()))?;
        if a.enabled {
            self.model.enabled_alarms.insert(a.id);
        }
        Ok(())
    }

    fn command(
        &mut self,
        entry: &Spanned<CommandEntry>,
        runs: &BTreeSet<&str>,
    ) -> Result<(), ConfigError> {
        let (span, c) = (entry.span(), entry.get_ref());
        if let Some(ceid) = c.event {
            self.need_event(
                &span,
                &format!("remote command {}", c.name),
                "remote_command.event",
                ceid,
            )?;
        }
        if let Some(run) = &c.run
            && !runs.contains(run.as_str())
        {
            return Err(self.ctx.invalid(
                &span,
                "remote_command.run",
                format!("event run '{run}' is not defined"),
            ));
        }
        if !(c.ack == 0 || c.ack == 4) {
            return Err(self.ctx.invalid(
                &span,
                "remote_command.ack",
                "must be 0 (performed) or 4 (completion signalled later)",
            ));
        }
        let mut parameters = Vec::new();
        for p in &c.parameters {
            let bad = |msg: String| self.ctx.invalid(&span, "remote_command.parameters", msg);
            let format = p
                .format
                .as_deref()
                .map(format_named)
                .transpose()
                .map_err(&bad)?;
            let values = p
                .values
                .iter()
                .map(|v| item_from_toml(v, format))
                .collect::<Result<Vec<_>, _>>()
                .map_err(&bad)?;
            parameters.push(Parameter {
                name: p.name.clone(),
                format,
                values,
            });
        }
        self.model
            .add_remote_command(RemoteCommand {
                name: c.name.clone(),
                parameters,
                ack: c.ack,
                event: c.event,
                run: c.run.clone(),
            })
            .map_err(|e| {
                self.ctx
                    .invalid(&span, "remote_command.name", e.to_string())
            })
    }

    fn echo(&mut self, entry: &Spanned<EchoEntry>) -> Result<(), ConfigError> {
        let (span, e) = (entry.span(), entry.get_ref());
        let reply = match e.reply.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(
                sml::parse_item(text)
                    .map_err(|err| self.ctx.invalid(&span, "echo.reply", err.to_string()))?,
            ),
        };
        let request = match (&e.request, &e.message) {
            (Some(r), None) => r,
            (None, Some(name)) => return self.named_echo(&span, name, reply),
            (Some(_), Some(_)) => {
                return Err(self.ctx.invalid(
                    &span,
                    "echo.message",
                    "give request (an S/F) or message (an SDL definition's name), not both",
                ));
            }
            (None, None) => {
                return Err(self.ctx.invalid(
                    &span,
                    "echo",
                    "needs request (\"S10F3\") or message (the name of a definition in the equipment's sdl)",
                ));
            }
        };
        let sf: StreamFunction =
            request
                .parse()
                .map_err(|err: crate::secs2::message::StreamFunctionError| {
                    self.ctx.invalid(&span, "echo.request", err.to_string())
                })?;
        if !sf.is_primary() || sf.stream == 9 {
            return Err(self.ctx.invalid(
                &span,
                "echo.request",
                format!("{sf} is not a primary the host can send"),
            ));
        }
        if answers(sf) {
            return Err(self.ctx.invalid(
                &span,
                "echo.request",
                format!("{sf} is answered by the GEM engine; remove this echo"),
            ));
        }
        if self.model.echoes.insert(sf, reply).is_some() {
            return Err(self
                .ctx
                .invalid(&span, "echo.request", format!("{sf} has two echoes")));
        }
        Ok(())
    }

    /// `[[echo]] message = "Stop"`: the reply to a message that matched the SDL definition
    /// of that name (any primary the host sends, also one the GEM engine answers).
    fn named_echo(
        &mut self,
        span: &Range<usize>,
        name: &str,
        reply: Option<Item>,
    ) -> Result<(), ConfigError> {
        let Some(sdl) = &self.model.sdl else {
            return Err(self.ctx.invalid(
                span,
                "echo.message",
                format!("'{name}' names an SDL definition, but [equipment] has no sdl"),
            ));
        };
        let Some((sf, def)) = sdl.named(name) else {
            let names = sdl.names();
            return Err(self.ctx.invalid(
                span,
                "echo.message",
                format!(
                    "no definition named '{name}' in {} ({})",
                    sdl.file.display(),
                    if names.is_empty() {
                        "it names none".to_string()
                    } else {
                        format!("its names: {}", names.join(", "))
                    }
                ),
            ));
        };
        if !sf.is_primary() || sf.stream == 9 || !def.direction.allows(true) {
            return Err(self.ctx.invalid(
                span,
                "echo.message",
                format!("'{name}' is {sf}, not a primary the host sends"),
            ));
        }
        if self
            .model
            .named_echoes
            .insert(name.to_string(), reply)
            .is_some()
        {
            return Err(self
                .ctx
                .invalid(span, "echo.message", format!("'{name}' has two echoes")));
        }
        Ok(())
    }

    fn run(&self, entry: &Spanned<RunEntry>) -> Result<EventRun, ConfigError> {
        let (span, r) = (entry.span(), entry.get_ref());
        let owner = format!("event run '{}'", r.name);
        if r.repeat == 0 {
            return Err(self
                .ctx
                .invalid(&span, "event_run.repeat", "must be at least 1"));
        }
        if r.every.is_some_and(|d| d.0.is_zero()) {
            return Err(self
                .ctx
                .invalid(&span, "event_run.every", "must be more than zero"));
        }
        let mut steps = Vec::new();
        for s in &r.step {
            if let Some(ceid) = s.event {
                self.need_event(&span, &owner, "event_run.step.event", ceid)?;
            }
            for (key, alid) in [("alarm_set", s.alarm_set), ("alarm_clear", s.alarm_clear)] {
                if let Some(alid) = alid
                    && !self.model.alarms.contains_key(&alid)
                {
                    return Err(self.ctx.invalid(
                        &span,
                        &format!("event_run.step.{key}"),
                        format!("{owner}: alarm {alid} is not defined"),
                    ));
                }
            }
            let mut set = Vec::new();
            for (name, value) in &s.set {
                let bad = |msg: String| {
                    self.ctx.invalid(
                        &span,
                        &format!("event_run.step.set.{name}"),
                        format!("{owner}: {msg}"),
                    )
                };
                let v = self
                    .variable_named(name)
                    .ok_or_else(|| bad(format!("no variable with ID or name '{name}'")))?;
                if v.standard.is_some() {
                    return Err(bad(format!("'{}' is a standard variable", v.name)));
                }
                let item = item_from_toml(value, Some(v.value.format())).map_err(&bad)?;
                set.push((v.id, item));
            }
            steps.push(Step {
                delay: s.delay.map_or(Duration::ZERO, |d| d.0),
                set,
                alarm_set: s.alarm_set,
                alarm_clear: s.alarm_clear,
                event: s.event,
            });
        }
        Ok(EventRun {
            name: r.name.clone(),
            autostart: r.autostart,
            every: r.every.map(|d| d.0),
            repeat: r.repeat,
            steps,
        })
    }

    fn variable_named(&self, name: &str) -> Option<&Variable> {
        match name.parse::<Id>() {
            Ok(id) => self.model.variables.get(&id),
            Err(_) => self.model.variables.values().find(|v| v.name == name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("3 fortnights"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn values_from_toml() {
        let v = |s: &str| -> toml::Value {
            toml::from_str::<toml::Table>(&format!("v = {s}")).unwrap()["v"].clone()
        };
        assert_eq!(item_from_toml(&v("5"), None), Ok(Item::U4(vec![5])));
        assert_eq!(item_from_toml(&v("-5"), None), Ok(Item::I4(vec![-5])));
        assert_eq!(
            item_from_toml(&v("[1, 2]"), Some(Format::U1)),
            Ok(Item::U1(vec![1, 2]))
        );
        assert_eq!(
            item_from_toml(&v("1.5"), Some(Format::F4)),
            Ok(Item::F4(vec![1.5]))
        );
        assert_eq!(item_from_toml(&v("true"), None), Ok(Item::boolean(true)));
        assert_eq!(item_from_toml(&v("\"x\""), None), Ok(Item::ascii("x")));
        assert!(item_from_toml(&v("300"), Some(Format::U1)).is_err());
        assert!(item_from_toml(&v("\"x\""), Some(Format::U4)).is_err());
    }

    #[test]
    fn the_default_config_loads() {
        let c = SimConfig::default_config();
        assert!(!c.runs.is_empty());
        assert!(!c.live.is_empty());
        assert!(!c.model.remote_commands.is_empty());
    }
}
