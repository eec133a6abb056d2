//! `project.toml`: the gateway settings and equipment connections of a project folder.
//!
//! ```toml
//! [gateway]
//! name = "fab1-bay3"             # default: the project folder's name; names the gateway in
//!                                # the store's Gateway column (and MQTT topics): at most 64
//!                                # characters, no '/', '+', '#' or control characters
//! workers = 4                    # Python worker threads
//! handler_timeout = 30           # seconds before a running handler is interrupted
//! queue_limit = 1024             # handler jobs one equipment may have waiting
//! queue_bytes = 33554432         # bytes of messages they may hold
//!
//! [[equipment]]
//! name = "Tool1"
//! mode = "active"                # active | passive | alternating
//! address = "127.0.0.1"
//! port = 5000
//! device_id = 0
//! timers = { t3 = 45, linktest = 60, write = 30 }  # write: drop a peer that reads nothing
//!
//! table_prefix = "SECSGEM_"     # message store tables: SECSGEM_Messages, SECSGEM_Errors
//!
//! [store]                        # the message store (every message sent and received)
//! enabled = true
//! path = "data/secsgate.sqlite"  # relative to the project folder
//! # url = "postgres://secsgate@db.fab:5432/secsgate"  # PostgreSQL instead of the file (not
//! #                              # with path); password in the URL or from PGPASSWORD
//! retention_days = 30            # delete rows older than this (absent: kept for ever)
//! retention_rows = 1000000       # keep at most this many rows per table (absent: no limit)
//!
//! [[equipment.custom_response]]
//! stream_function = "S6F11"
//! handler = "onEventReport"      # handlers/onEventReport.py
//!
//! [[equipment.custom_response]]
//! message = "LotStarted"         # a named definition of the equipment's SDL
//! handler = "onLotStarted"
//!
//! [[equipment.handler]]          # gets the messages, as onSecsGemRealtimeUpdate does
//! message = "AlarmReport"        # or stream_function = "S5F1"
//! handler = "onAlarm"
//! ```
//!
//! Every problem is reported with its file, line and key; [`Project::load`] collects all of
//! them rather than stopping at the first.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::hsms::driver::{Mode, Settings};
use crate::sdl::Sdl;
use crate::secs1::driver::{self as secs1, FlowControl, Line, Parity, SerialSettings};
use crate::secs2::StreamFunction;
use crate::transport::Transport;

/// File name of the project settings inside a project folder.
pub const PROJECT_FILE: &str = "project.toml";

/// One problem in a project's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, 0 when the problem is not at one place in the file.
    pub line: usize,
    /// The TOML key path, e.g. `equipment[0].port`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Gateway-wide settings (`[gateway]`).
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    /// The gateway's name (`[gateway] name`, default: the project folder's name): written in
    /// the store's `Gateway` column, so that several gateways can share one database.
    pub name: String,
    /// Python worker threads running handlers.
    pub workers: usize,
    /// A handler running longer than this is interrupted.
    pub handler_timeout: Duration,
    /// A custom response handler that has not called `sendResponse` by then is answered
    /// for with the default reply.
    pub custom_response_timeout: Duration,
    /// How long a reply stays retrievable by `getResponse` after it arrived.
    pub response_retention: Duration,
    /// How long `onStartup` waits for the enabled equipment to be communicating.
    pub startup_wait: Duration,
    /// Handler jobs one equipment may have queued (or running); beyond that the gateway stops
    /// reading its messages until its handlers catch up.
    pub queue_limit: usize,
    /// Bytes of messages one equipment's handler jobs may hold (queued or running); beyond
    /// that, too, the gateway stops reading its messages.
    pub queue_bytes: usize,
    /// Most process programs kept from the tools' S7F3 (ACKC7 3 for one more).
    pub tool_program_limit: usize,
    /// Most bytes of process programs kept from the tools' S7F3 (ACKC7 3 past it).
    pub tool_program_bytes: u64,
}

impl GatewaySettings {
    /// The quota on the programs kept from the tools' S7F3.
    pub fn tool_program_quota(&self) -> crate::gem::programs::Quota {
        crate::gem::programs::Quota {
            count: self.tool_program_limit,
            bytes: self.tool_program_bytes,
        }
    }
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            name: DEFAULT_GATEWAY_NAME.to_string(),
            workers: 4,
            handler_timeout: Duration::from_secs(30),
            custom_response_timeout: Duration::from_secs(10),
            response_retention: Duration::from_secs(600),
            startup_wait: Duration::from_secs(10),
            queue_limit: crate::script::DEFAULT_QUEUE_LIMIT,
            queue_bytes: crate::script::DEFAULT_QUEUE_BYTES,
            tool_program_limit: 1000,
            tool_program_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The gateway's name when neither `[gateway] name` nor the project folder gives one.
pub const DEFAULT_GATEWAY_NAME: &str = "secsgate";

/// Longest `[gateway] name`.
pub const GATEWAY_NAME_MAX: usize = 64;

/// Why a text cannot be a gateway name (it becomes an MQTT topic level and a Sparkplug edge
/// node ID), or `None` if it can.
pub fn gateway_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.chars().count() > GATEWAY_NAME_MAX {
        return Some(format!("longer than {GATEWAY_NAME_MAX} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '+' | '#') || c.is_control())
    {
        return Some(format!(
            "'{}' may not be in a gateway name (no '/', '+', '#' or control characters)",
            c.escape_default()
        ));
    }
    None
}

/// The default gateway name of a project folder: its file name, with the characters a gateway
/// name may not hold replaced by '_' and cut to 64 characters.
pub fn default_gateway_name(dir: &Path) -> String {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| {
            dir.canonicalize()
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .unwrap_or_default();
    let name: String = name
        .chars()
        .map(|c| {
            if matches!(c, '/' | '+' | '#') || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .take(GATEWAY_NAME_MAX)
        .collect();
    if name.is_empty() {
        DEFAULT_GATEWAY_NAME.to_string()
    } else {
        name
    }
}

/// What a handler mapping takes: the received messages of an S/F, or those that matched a
/// named definition of the equipment's SDL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `stream_function = "S6F11"`.
    StreamFunction(StreamFunction),
    /// `message = "LotStarted"`: a definition's name, and the S/F it defines.
    Message {
        name: String,
        stream_function: StreamFunction,
    },
}

impl Selector {
    /// The S/F of the messages it takes.
    pub fn stream_function(&self) -> StreamFunction {
        match self {
            Selector::StreamFunction(sf) => *sf,
            Selector::Message {
                stream_function, ..
            } => *stream_function,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::StreamFunction(sf) => write!(f, "{sf}"),
            Selector::Message {
                name,
                stream_function,
            } => write!(f, "{name} ({stream_function})"),
        }
    }
}

/// A custom response: a received primary is answered by a handler script
/// (`[[equipment.custom_response]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomResponse {
    /// The primaries it answers.
    pub selector: Selector,
    /// Handler name: `handlers/<handler>.py`.
    pub handler: String,
}

/// A handler that gets received messages as `onSecsGemRealtimeUpdate` does, after the reply
/// went out (`[[equipment.handler]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHandler {
    /// The messages it gets.
    pub selector: Selector,
    /// Handler name: `handlers/<handler>.py`.
    pub handler: String,
}

/// Which received primaries reach `onSecsGemRealtimeUpdate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Realtime {
    /// Every primary the equipment sends.
    All,
    /// Only these.
    Only(Vec<StreamFunction>),
    /// Those the equipment's SDL marks `"realtime": true`.
    Sdl,
}

impl Realtime {
    /// Whether a received primary of this S/F goes to the realtime handler (`sdl` answers
    /// for [`Realtime::Sdl`]).
    pub fn includes(&self, sf: StreamFunction, sdl: Option<&Sdl>) -> bool {
        match self {
            Realtime::All => true,
            Realtime::Only(list) => list.contains(&sf),
            Realtime::Sdl => sdl.is_some_and(|s| s.realtime(sf)),
        }
    }

    /// [`Realtime::includes`] for a message that matched SDL definition `def` (if any): with
    /// [`Realtime::Sdl`], that definition's `realtime` says.
    pub fn includes_matched(
        &self,
        sf: StreamFunction,
        sdl: Option<&Sdl>,
        def: Option<&crate::sdl::MessageDef>,
    ) -> bool {
        match (self, def) {
            (Realtime::Sdl, Some(def)) => def.realtime,
            _ => self.includes(sf, sdl),
        }
    }
}

/// The `[[equipment.handler]]`s of an equipment, in file order, indexed by what they take
/// (a message is routed with two lookups, however many there are). Derefs to the list.
#[derive(Debug, Clone, Default)]
pub struct MessageHandlers {
    list: Vec<MessageHandler>,
    /// S/F -> places in `list` of the handlers mapped to it, ascending.
    by_sf: HashMap<StreamFunction, Vec<usize>>,
    /// Definition name -> places in `list` of the handlers mapped to it, ascending.
    by_name: HashMap<String, Vec<usize>>,
}

impl MessageHandlers {
    pub fn new(list: Vec<MessageHandler>) -> MessageHandlers {
        let mut handlers = MessageHandlers::default();
        for (i, h) in list.iter().enumerate() {
            match &h.selector {
                Selector::StreamFunction(sf) => handlers.by_sf.entry(*sf).or_default().push(i),
                Selector::Message { name, .. } => {
                    handlers.by_name.entry(name.clone()).or_default().push(i)
                }
            }
        }
        handlers.list = list;
        handlers
    }

    /// The handlers that take a message of `sf` that matched the definition named `name`,
    /// in file order: those mapped to the name and those mapped to the S/F.
    pub fn taking(&self, sf: StreamFunction, name: Option<&str>) -> Vec<&MessageHandler> {
        let mut a: &[usize] = self.by_sf.get(&sf).map_or(&[], Vec::as_slice);
        let mut b: &[usize] = name
            .and_then(|n| self.by_name.get(n))
            .map_or(&[], Vec::as_slice);
        let mut out = Vec::with_capacity(a.len() + b.len());
        loop {
            let list = match (a.first(), b.first()) {
                (Some(x), Some(y)) if x < y => &mut a,
                (Some(_), None) => &mut a,
                (_, Some(_)) => &mut b,
                (None, None) => return out,
            };
            if let Some((first, rest)) = list.split_first() {
                out.extend(self.list.get(*first));
                *list = rest;
            }
        }
    }
}

impl std::ops::Deref for MessageHandlers {
    type Target = [MessageHandler];

    fn deref(&self) -> &[MessageHandler] {
        &self.list
    }
}

impl PartialEq for MessageHandlers {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list
    }
}

/// One equipment connection (`[[equipment]]`).
#[derive(Debug, Clone)]
pub struct EquipmentConfig {
    pub name: String,
    pub description: String,
    pub enabled: bool,
    /// HSMS or SECS-I settings (mode or line, address, device ID, timers).
    pub transport: Transport,
    /// Send S1F13 when selected, and count the equipment communicating only after S1F14.
    pub establish_communication: bool,
    /// What to do with a primary from the equipment that does not match its SDL.
    pub on_invalid: OnInvalid,
    pub realtime: Realtime,
    pub custom_responses: Vec<CustomResponse>,
    /// `[[equipment.handler]]`s, in file order.
    pub handlers: MessageHandlers,
    /// The equipment's SDL: what it sends and accepts. No `sdl` key: the standard catalogue
    /// (`sdl/messages.sdl`); `sdl = "none"`: `None`, which checks nothing.
    pub sdl: Option<Arc<Sdl>>,
    /// Prefix of its message store tables (`<prefix>Messages`, `<prefix>Errors`); several
    /// equipment may share one.
    pub table_prefix: String,
}

impl EquipmentConfig {
    /// The custom response that answers a received primary of `sf` that matched the
    /// definition named `name`: the one mapped to that name, else the one mapped to its S/F.
    pub fn custom_response(
        &self,
        sf: StreamFunction,
        name: Option<&str>,
    ) -> Option<&CustomResponse> {
        let by_name = name.and_then(|n| {
            self.custom_responses
                .iter()
                .find(|c| matches!(&c.selector, Selector::Message { name, .. } if name == n))
        });
        by_name.or_else(|| {
            self.custom_responses
                .iter()
                .find(|c| c.selector == Selector::StreamFunction(sf))
        })
    }

    /// The `[[equipment.handler]]`s a received message of `sf` that matched the definition
    /// named `name` goes to, in file order: those mapped to the name and those mapped to the
    /// S/F.
    pub fn handlers_for(&self, sf: StreamFunction, name: Option<&str>) -> Vec<&MessageHandler> {
        self.handlers.taking(sf, name)
    }
}

/// What the gateway does with a primary from the equipment that fails its SDL check
/// (`on_invalid` in `[[equipment]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalid {
    /// Answer S9F7 (illegal data) naming its header; no handler runs and it is not acked
    /// as accepted. The default.
    S9F7,
    /// Log the mismatch and handle the message as if it matched.
    Accept,
}

/// An in-process simulator (`[[simulator]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatorConfig {
    pub name: String,
    pub enabled: bool,
    /// Where it listens (HSMS passive, SECS-I over TCP listening, or a serial port) and its
    /// device ID.
    pub transport: Transport,
    /// The simulator's own config file (relative paths are resolved against the project);
    /// `None` uses the built-in default.
    pub config: Option<PathBuf>,
    /// Where its spool lives.
    pub spool_dir: PathBuf,
}

/// `[store]`: the message store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    /// Whether messages are stored at all.
    pub enabled: bool,
    /// The database file (default `<project>/data/secsgate.sqlite`), when `url` is not set.
    pub path: PathBuf,
    /// A PostgreSQL database instead of the file (`postgres://user@host:port/db`).
    pub url: Option<String>,
    /// Rows older than this are deleted.
    pub retention: Option<Duration>,
    /// At most this many rows are kept per table (the oldest go).
    pub retention_rows: Option<u64>,
    /// Records the queue to the writer holds before the gateway waits.
    pub queue: usize,
    /// Most records written in one transaction.
    pub batch: usize,
}

impl StoreSettings {
    /// The defaults for a project in `dir`.
    pub fn default_for(dir: &Path) -> StoreSettings {
        StoreSettings {
            enabled: true,
            path: dir.join("data").join(crate::store::messages::DEFAULT_FILE),
            url: None,
            retention: None,
            retention_rows: None,
            queue: 8192,
            batch: 1024,
        }
    }
}

/// A loaded project folder.
#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    pub gateway: GatewaySettings,
    pub store: StoreSettings,
    pub equipment: Vec<EquipmentConfig>,
    pub simulators: Vec<SimulatorConfig>,
    /// Named SQLite databases for `system.db` (`[[database]] name, path`).
    pub databases: Vec<DatabaseConfig>,
    /// The web console (`[web]`).
    pub web: WebSettings,
    /// The MQTT publisher (`[mqtt]`).
    pub mqtt: MqttSettings,
    /// Things that were ignored but loaded, such as unknown keys in an SDL file, each with
    /// its file, line and key. `secsgate check` prints them; the project still runs.
    pub warnings: Vec<ConfigError>,
}

/// The web console's settings (`[web]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSettings {
    /// Whether the gateway serves it (`--no-web` turns it off too).
    pub enabled: bool,
    /// Where it listens (default `127.0.0.1:8088`; port 0 picks a free port).
    pub address: String,
    /// The password (or token) every request needs, if set; the environment variable
    /// `SECSGATE_WEB_PASSWORD` takes precedence. Required on any address but loopback.
    pub password: Option<String>,
    /// Where `address` was written (file:line), for the error when it is not loopback and
    /// there is no password.
    pub address_at: Option<String>,
}

/// The MQTT publisher's settings (`[mqtt]`); off unless the section is there.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    /// On when `[mqtt]` is there (`enabled = false` turns it off again).
    pub enabled: bool,
    pub url: MqttUrl,
    /// The MQTT client ID (default `secsgate-<gateway name>`).
    pub client_id: Option<String>,
    /// The broker user; its password comes from `SECSGATE_MQTT_PASSWORD`.
    pub username: Option<String>,
    /// QoS of every publish: 0 (at most once) or 1 (at least once, kept until the broker
    /// acknowledges it).
    pub qos: u8,
    pub keep_alive: Duration,
    /// The longest wait between attempts to reach the broker (the wait starts at 1 s and
    /// doubles).
    pub reconnect_max: Duration,
    /// The first topic levels (default `secsgate`): `<prefix>/<gateway>/<equipment>/<SxFy>`.
    pub topic_prefix: String,
    /// The messages published (either direction); empty: every message the equipment sends
    /// that its SDL marks `realtime` or `SQLTags`.
    pub messages: Vec<StreamFunction>,
    /// TLS (mqtts://): the CA certificates (PEM) the broker's certificate is checked against
    /// (default: the system's roots), and a client certificate and key (PEM).
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The store-and-forward queue's file (default `<project>/data/forward.sqlite`).
    pub forward_path: PathBuf,
    /// Most messages it keeps; past it the oldest are dropped (counted and logged).
    pub forward_limit: u64,
    /// Most bytes of payload it keeps; past it the oldest are dropped.
    pub forward_bytes: u64,
    /// Requests on `<prefix>/<gateway>/<equipment>/request` are sent to the tool.
    pub commands: bool,
    /// The password every request carries; `SECSGATE_MQTT_COMMAND_PASSWORD` takes
    /// precedence. Required unless the broker is on loopback.
    pub command_password: Option<String>,
    /// How long a request waits for the tool's reply (when its JSON names no timeout).
    pub command_timeout: Duration,
    pub sparkplug: SparkplugSettings,
    /// Where `url` was written (file:line), for errors about it.
    pub url_at: Option<String>,
}

/// `[mqtt.sparkplug]`: the tags as Sparkplug B metrics, one device per equipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparkplugSettings {
    pub enabled: bool,
    /// The Sparkplug group (default `secsgate`).
    pub group_id: String,
    /// The edge node (default: the gateway's name).
    pub edge_node_id: Option<String>,
}

impl MqttSettings {
    /// The defaults for a project in `dir` (off).
    pub fn default_for(dir: &Path) -> MqttSettings {
        MqttSettings {
            enabled: false,
            url: MqttUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1883,
            },
            client_id: None,
            username: None,
            qos: 1,
            keep_alive: Duration::from_secs(30),
            reconnect_max: Duration::from_secs(30),
            topic_prefix: "secsgate".into(),
            messages: Vec::new(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            forward_path: dir.join("data").join("forward.sqlite"),
            forward_limit: 1_000_000,
            forward_bytes: 1 << 30,
            commands: false,
            command_password: None,
            command_timeout: Duration::from_secs(30),
            sparkplug: SparkplugSettings {
                enabled: false,
                group_id: "secsgate".into(),
                edge_node_id: None,
            },
            url_at: None,
        }
    }
}

/// A broker's address: `mqtt://host:port` (default port 1883) or `mqtts://host:port` (TLS,
/// default port 8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl MqttUrl {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (`tcp://` and `ssl://` too).
    pub fn parse(text: &str) -> Result<MqttUrl, String> {
        let text = text.trim();
        let (tls, rest) = if let Some(r) =
            text.strip_prefix("mqtt://").or(text.strip_prefix("tcp://"))
        {
            (false, r)
        } else if let Some(r) = text
            .strip_prefix("mqtts://")
            .or(text.strip_prefix("ssl://"))
        {
            (true, r)
        } else {
            return Err(format!(
                "'{text}' is not a broker url such as mqtt://127.0.0.1:1883 or mqtts://broker:8883"
            ));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('@') {
            return Err(
                "put no credentials in the url: use username and SECSGATE_MQTT_PASSWORD".into(),
            );
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| format!("'{p}' is not a port"))?;
                (h, port)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(format!("'{text}' names no broker host"));
        }
        Ok(MqttUrl {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// Whether the broker is on this machine (a loopback address or `localhost`).
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Whether a name can be one MQTT topic level (an equipment, gateway or Sparkplug ID): not
/// empty, at most 128 bytes, no `/`, `+`, `#` or control characters.
pub fn check_topic_level(text: &str) -> Result<(), String> {
    if text.is_empty() || text.len() > 128 {
        return Err("must hold 1 to 128 characters".into());
    }
    if let Some(c) = text
        .chars()
        .find(|c| matches!(c, '/' | '+' | '#') || c.is_control())
    {
        return Err(format!(
            "'{}' holds '{}', which an MQTT topic level cannot",
            text.escape_default(),
            c.escape_default()
        ));
    }
    Ok(())
}

/// The web console's default address.
pub const DEFAULT_WEB_ADDRESS: &str = "127.0.0.1:8088";

impl Default for WebSettings {
    fn default() -> WebSettings {
        WebSettings {
            enabled: true,
            address: DEFAULT_WEB_ADDRESS.to_string(),
            password: None,
            address_at: None,
        }
    }
}

/// A named database scripts reach with `system.db` (`database="name"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    pub name: String,
    /// Where it is.
    pub location: DatabaseLocation,
}

/// Where a database is (defined by the store, which opens it).
pub use crate::store::DatabaseLocation;

/// Why a `postgres://` URL cannot be used, or `None` if it can.
pub fn postgres_url_problem(url: &str) -> Option<String> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("postgres" | "postgresql")) {
        return Some(format!(
            "'{}' is not a PostgreSQL URL; write postgres://user@host:port/database",
            crate::store::postgres::redact(url)
        ));
    }
    crate::store::postgres::parse_url(url).err()
}

/// The project's own SQLite database (the message store's file), relative to the project:
/// `system.db` uses it when no database is named.
pub const DEFAULT_DATABASE: &str = "data/secsgate.sqlite";

impl Project {
    /// `handlers/` of the project.
    pub fn handlers_dir(&self) -> PathBuf {
        self.dir.join("handlers")
    }

    /// `lib/` of the project.
    pub fn lib_dir(&self) -> PathBuf {
        self.dir.join("lib")
    }

    /// Reads and validates `DIR/project.toml`, returning every problem found.
    pub fn load(dir: &Path) -> Result<Project, Vec<ConfigError>> {
        let file = dir.join(PROJECT_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| {
            vec![ConfigError {
                file: file.clone(),
                line: 0,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }]
        })?;
        Project::parse(dir, &file, &text)
    }

    /// Parses project text (as found in `file`, inside project folder `dir`).
    pub fn parse(dir: &Path, file: &Path, text: &str) -> Result<Project, Vec<ConfigError>> {
        let raw: RawProject = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            vec![ConfigError {
                file: file.to_path_buf(),
                line,
                key: String::new(),
                message: e.message().trim().to_string(),
            }]
        })?;
        let mut v = Validator {
            file,
            text,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let mut project = v.project(dir, raw);
        if v.errors.is_empty() {
            project.warnings = v.warnings;
            Ok(project)
        } else {
            Err(v.errors)
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    #[serde(default)]
    gateway: Option<Spanned<RawGateway>>,
    #[serde(default)]
    equipment: Vec<Spanned<RawEquipment>>,
    #[serde(default)]
    simulator: Vec<Spanned<RawSimulator>>,
    #[serde(default)]
    store: Option<Spanned<RawStore>>,
    #[serde(default)]
    database: Vec<Spanned<RawDatabase>>,
    #[serde(default)]
    web: Option<Spanned<RawWeb>>,
    #[serde(default)]
    mqtt: Option<Spanned<RawMqtt>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    enabled: Option<bool>,
    url: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    qos: Option<Spanned<i64>>,
    keep_alive: Option<Spanned<f64>>,
    reconnect_max: Option<Spanned<f64>>,
    topic_prefix: Option<Spanned<String>>,
    messages: Option<Vec<Spanned<String>>>,
    ca_file: Option<Spanned<String>>,
    client_cert: Option<Spanned<String>>,
    client_key: Option<Spanned<String>>,
    forward_path: Option<Spanned<String>>,
    forward_limit: Option<Spanned<i64>>,
    forward_bytes: Option<Spanned<i64>>,
    commands: Option<bool>,
    command_password: Option<Spanned<String>>,
    command_timeout: Option<Spanned<f64>>,
    sparkplug: Option<Spanned<RawSparkplug>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSparkplug {
    enabled: Option<bool>,
    group_id: Option<Spanned<String>>,
    edge_node_id: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    enabled: Option<bool>,
    address: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    enabled: Option<bool>,
    path: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    retention_days: Option<Spanned<f64>>,
    retention_rows: Option<Spanned<i64>>,
    control_messages: Option<Spanned<bool>>,
    queue: Option<Spanned<i64>>,
    batch: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    name: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    name: Option<Spanned<String>>,
    workers: Option<Spanned<i64>>,
    handler_timeout: Option<Spanned<f64>>,
    custom_response_timeout: Option<Spanned<f64>>,
    response_retention: Option<Spanned<f64>>,
    startup_wait: Option<Spanned<f64>>,
    queue_limit: Option<Spanned<i64>>,
    queue_bytes: Option<Spanned<i64>>,
    tool_program_limit: Option<Spanned<i64>>,
    tool_program_bytes: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEquipment {
    name: Option<Spanned<String>>,
    #[serde(default)]
    description: String,
    enabled: Option<bool>,
    protocol: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    address: Option<String>,
    port: Option<Spanned<i64>>,
    passive_address: Option<String>,
    passive_port: Option<Spanned<i64>>,
    device_id: Option<Spanned<i64>>,
    timers: Option<Spanned<RawTimers>>,
    max_message_size: Option<Spanned<i64>>,
    serial_port: Option<Spanned<String>>,
    baud_rate: Option<Spanned<i64>>,
    data_bits: Option<Spanned<i64>>,
    parity: Option<Spanned<String>>,
    stop_bits: Option<Spanned<i64>>,
    flow_control: Option<Spanned<String>>,
    master: Option<Spanned<bool>>,
    retry_limit: Option<Spanned<i64>>,
    duplicate_detection: Option<Spanned<bool>>,
    establish_communication: Option<bool>,
    on_invalid: Option<Spanned<String>>,
    realtime: Option<Spanned<Vec<Spanned<String>>>>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    sdl: Option<Spanned<String>>,
    table_prefix: Option<Spanned<String>>,
    #[serde(default)]
    custom_response: Vec<Spanned<RawCustomResponse>>,
    #[serde(default)]
    handler: Vec<Spanned<RawCustomResponse>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimers {
    t1: Option<Spanned<f64>>,
    t2: Option<Spanned<f64>>,
    t3: Option<Spanned<f64>>,
    t4: Option<Spanned<f64>>,
    t5: Option<Spanned<f64>>,
    t6: Option<Spanned<f64>>,
    t7: Option<Spanned<f64>>,
    t8: Option<Spanned<f64>>,
    linktest: Option<Spanned<f64>>,
    write: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustomResponse {
    stream_function: Option<Spanned<String>>,
    message: Option<Spanned<String>>,
    handler: Spanned<String>,
    enabled: Option<bool>,
}

/// Where a handler mapping is, for its errors, and the SDL its `message` names.
struct Mapping<'a> {
    /// `equipment[0].custom_response[1]`.
    key: String,
    span: Range<usize>,
    sdl: Option<&'a Sdl>,
    /// The `sdl` key is there but did not load (already an error).
    sdl_failed: bool,
    dir: &'a Path,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulator {
    name: Option<Spanned<String>>,
    enabled: Option<bool>,
    protocol: Option<Spanned<String>>,
    serial_port: Option<Spanned<String>>,
    baud_rate: Option<Spanned<i64>>,
    data_bits: Option<Spanned<i64>>,
    parity: Option<Spanned<String>>,
    stop_bits: Option<Spanned<i64>>,
    flow_control: Option<Spanned<String>>,
    master: Option<Spanned<bool>>,
    retry_limit: Option<Spanned<i64>>,
    duplicate_detection: Option<Spanned<bool>>,
    timers: Option<Spanned<RawTimers>>,
    address: Option<String>,
    port: Option<Spanned<i64>>,
    device_id: Option<Spanned<i64>>,
    config: Option<Spanned<String>>,
    spool_dir: Option<String>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
}

/// The SECS-I keys of `[[equipment]]` and `[[simulator]]` (the serial line and the block
/// protocol's settings).
#[derive(Default)]
struct RawSecs1 {
    serial_port: Option<Spanned<String>>,
    baud_rate: Option<Spanned<i64>>,
    data_bits: Option<Spanned<i64>>,
    parity: Option<Spanned<String>>,
    stop_bits: Option<Spanned<i64>>,
    flow_control: Option<Spanned<String>>,
    master: Option<Spanned<bool>>,
    retry_limit: Option<Spanned<i64>>,
    duplicate_detection: Option<Spanned<bool>>,
}

/// Moves the SECS-I keys of a raw entry into a [`RawSecs1`].
macro_rules! raw_secs1 {
    ($e:expr) => {
        RawSecs1 {
            serial_port: $e.serial_port.take(),
            baud_rate: $e.baud_rate.take(),
            data_bits: $e.data_bits.take(),
            parity: $e.parity.take(),
            stop_bits: $e.stop_bits.take(),
            flow_control: $e.flow_control.take(),
            master: $e.master.take(),
            retry_limit: $e.retry_limit.take(),
            duplicate_detection: $e.duplicate_detection.take(),
        }
    };
}

impl RawSecs1 {
    /// The first SECS-I key present, with its span: for a warning when the protocol is HSMS.
    fn first_key(&self) -> Option<(&'static str, Range<usize>)> {
        fn span<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
            v.as_ref().map(|v| v.span())
        }
        [
            ("serial_port", span(&self.serial_port)),
            ("baud_rate", span(&self.baud_rate)),
            ("data_bits", span(&self.data_bits)),
            ("parity", span(&self.parity)),
            ("stop_bits", span(&self.stop_bits)),
            ("flow_control", span(&self.flow_control)),
            ("master", span(&self.master)),
            ("retry_limit", span(&self.retry_limit)),
            ("duplicate_detection", span(&self.duplicate_detection)),
        ]
        .into_iter()
        .find_map(|(k, s)| s.map(|s| (k, s)))
    }
}

/// Which protocol an entry names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Hsms,
    Secs1,
}

struct Validator<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Validator<'_> {
    fn error(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: line_of(self.text, span.start),
            key: key.into(),
            message: message.into(),
        });
    }

    fn warning(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            file: self.file.to_path_buf(),
            line: line_of(self.text, span.start),
            key: key.into(),
            message: message.into(),
        });
    }

    /// `allow = ["10.1.2.3", "10.0.0.0/8", "fd00::/8"]`: the peers a TCP endpoint talks to.
    /// Each bad entry is an error at its own line; on a serial line the key is a warning.
    fn allow(
        &mut self,
        value: Option<Spanned<Vec<Spanned<String>>>>,
        key: String,
        transport: &mut Transport,
    ) {
        let Some(list) = value else { return };
        if let Transport::Secs1(s) = transport
            && matches!(s.line, Line::Serial(_))
        {
            self.warning(
                list.span(),
                key,
                "applies to TCP connections only (this entry uses a serial port): ignored",
            );
            return;
        }
        let list_span = list.span();
        let entries = list.into_inner();
        let mut nets = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            match entry.get_ref().parse::<crate::peers::Net>() {
                Ok(net) => nets.push(net),
                Err(message) => self.error(entry.span(), format!("{key}[{i}]"), message),
            }
        }
        if entries.is_empty() {
            self.warning(
                list_span,
                key,
                "empty: no peer can connect (leave the key out to allow every peer)",
            );
        }
        transport.set_allow(crate::peers::Allowlist::only(nets));
    }

    /// `protocol = "hsms"` (the default) or `"secs1"`.
    fn protocol(&mut self, value: &Option<Spanned<String>>, key: String) -> Protocol {
        let Some(v) = value else {
            return Protocol::Hsms;
        };
        match v.get_ref().trim().to_ascii_lowercase().as_str() {
            "hsms" => Protocol::Hsms,
            "secs1" | "secs-i" | "secsi" => Protocol::Secs1,
            other => {
                self.error(
                    v.span(),
                    key,
                    format!("'{other}' is not a protocol; use \"hsms\" or \"secs1\""),
                );
                Protocol::Hsms
            }
        }
    }

    /// SECS-I settings from an entry's keys. `tcp` is the TCP line when no `serial_port` is
    /// given (`None`: the entry names no port either, an error).
    #[allow(clippy::too_many_arguments)]
    fn secs1(
        &mut self,
        k: &dyn Fn(&str) -> String,
        span: Range<usize>,
        raw: &RawSecs1,
        timers: Option<&RawTimers>,
        tcp: Option<Line>,
        device_id: u16,
        equipment: bool,
    ) -> secs1::Settings {
        let mut protocol = if equipment {
            crate::secs1::protocol::Config::equipment(device_id)
        } else {
            crate::secs1::protocol::Config::host(device_id)
        };
        let line = match &raw.serial_port {
            Some(path) => {
                let text = path.get_ref().trim().to_string();
                if text.is_empty() {
                    self.error(path.span(), k("serial_port"), "must name a serial device");
                }
                let mut serial = SerialSettings::new(text, 9600);
                serial.baud_rate =
                    self.int(&raw.baud_rate, k("baud_rate"), 9600, 50, 4_000_000) as u32;
                serial.data_bits = self.int(&raw.data_bits, k("data_bits"), 8, 5, 8) as u8;
                serial.stop_bits = self.int(&raw.stop_bits, k("stop_bits"), 1, 1, 2) as u8;
                if let Some(p) = &raw.parity {
                    serial.parity = match p.get_ref().trim().to_ascii_lowercase().as_str() {
                        "none" | "n" => Parity::None,
                        "odd" | "o" => Parity::Odd,
                        "even" | "e" => Parity::Even,
                        other => {
                            self.error(
                                p.span(),
                                k("parity"),
                                format!("'{other}' is not a parity; use none, odd or even"),
                            );
                            Parity::None
                        }
                    };
                }
                if let Some(f) = &raw.flow_control {
                    serial.flow_control = match f.get_ref().trim().to_ascii_lowercase().as_str() {
                        "none" => FlowControl::None,
                        "software" | "xon/xoff" | "xonxoff" => FlowControl::Software,
                        "hardware" | "rts/cts" | "rtscts" => FlowControl::Hardware,
                        other => {
                            self.error(
                                    f.span(),
                                    k("flow_control"),
                                    format!(
                                        "'{other}' is not a flow control; use none, software or hardware"
                                    ),
                                );
                            FlowControl::None
                        }
                    };
                }
                Line::Serial(serial)
            }
            None => {
                for (key, present) in [
                    ("baud_rate", raw.baud_rate.as_ref().map(|v| v.span())),
                    ("data_bits", raw.data_bits.as_ref().map(|v| v.span())),
                    ("parity", raw.parity.as_ref().map(|v| v.span())),
                    ("stop_bits", raw.stop_bits.as_ref().map(|v| v.span())),
                    ("flow_control", raw.flow_control.as_ref().map(|v| v.span())),
                ] {
                    if let Some(s) = present {
                        self.warning(
                            s,
                            k(key),
                            "applies to a serial line only (no serial_port: SECS-I over TCP); ignored",
                        );
                    }
                }
                match tcp {
                    Some(line) => line,
                    None => {
                        self.error(
                            span,
                            k("serial_port"),
                            "missing (the serial device, or a port for SECS-I over TCP)",
                        );
                        Line::TcpConnect(String::new())
                    }
                }
            }
        };
        if let Some(m) = &raw.master {
            protocol.master = *m.get_ref();
        }
        protocol.retry = self.int(&raw.retry_limit, k("retry_limit"), 3, 0, 31) as u8;
        if let Some(d) = &raw.duplicate_detection {
            protocol.duplicate_detection = *d.get_ref();
        }
        if let Some(t) = timers {
            protocol.t1 = self.seconds(&t.t1, k("timers.t1"), protocol.t1, 0.1, 10.0);
            protocol.t2 = self.seconds(&t.t2, k("timers.t2"), protocol.t2, 0.2, 25.0);
            protocol.t3 = self.seconds(&t.t3, k("timers.t3"), protocol.t3, 0.01, 600.0);
            protocol.t4 = self.seconds(&t.t4, k("timers.t4"), protocol.t4, 0.01, 600.0);
            for (key, present) in [
                ("t5", t.t5.as_ref().map(|v| v.span())),
                ("t6", t.t6.as_ref().map(|v| v.span())),
                ("t7", t.t7.as_ref().map(|v| v.span())),
                ("t8", t.t8.as_ref().map(|v| v.span())),
                ("linktest", t.linktest.as_ref().map(|v| v.span())),
                ("write", t.write.as_ref().map(|v| v.span())),
            ] {
                if let Some(s) = present {
                    self.warning(
                        s,
                        k(&format!("timers.{key}")),
                        "an HSMS timer; this entry speaks SECS-I: ignored",
                    );
                }
            }
        }
        secs1::Settings::new(line, protocol)
    }

    fn seconds(
        &mut self,
        value: &Option<Spanned<f64>>,
        key: String,
        default: Duration,
        min: f64,
        max: f64,
    ) -> Duration {
        let Some(v) = value else {
            return default;
        };
        let secs = *v.get_ref();
        if !(min..=max).contains(&secs) {
            self.error(
                v.span(),
                key,
                format!("{secs} is out of range {min}..={max} seconds"),
            );
            return default;
        }
        Duration::from_secs_f64(secs)
    }

    fn int(
        &mut self,
        value: &Option<Spanned<i64>>,
        key: String,
        default: i64,
        min: i64,
        max: i64,
    ) -> i64 {
        let Some(v) = value else {
            return default;
        };
        let n = *v.get_ref();
        if !(min..=max).contains(&n) {
            self.error(v.span(), key, format!("{n} is out of range {min}..={max}"));
            return default;
        }
        n
    }

    fn project(&mut self, dir: &Path, raw: RawProject) -> Project {
        let named = raw
            .gateway
            .as_ref()
            .is_some_and(|g| g.get_ref().name.is_some());
        let mut gateway = raw
            .gateway
            .map(|g| self.gateway(g.into_inner()))
            .unwrap_or_default();
        if !named {
            gateway.name = default_gateway_name(dir);
        }
        let mut names = HashSet::new();
        let mut equipment = Vec::new();
        for (i, e) in raw.equipment.into_iter().enumerate() {
            let span = e.span();
            if let Some(eq) = self.equipment(dir, i, span.clone(), e.into_inner()) {
                if !names.insert(eq.name.clone()) {
                    self.error(
                        span,
                        format!("equipment[{i}].name"),
                        format!("equipment '{}' is defined twice", eq.name),
                    );
                }
                equipment.push(eq);
            }
        }
        let mut simulators = Vec::new();
        let mut sim_names = HashSet::new();
        for (i, s) in raw.simulator.into_iter().enumerate() {
            let span = s.span();
            if let Some(sim) = self.simulator(dir, i, span.clone(), s.into_inner()) {
                if !sim_names.insert(sim.name.clone()) {
                    self.error(
                        span,
                        format!("simulator[{i}].name"),
                        format!("simulator '{}' is defined twice", sim.name),
                    );
                }
                simulators.push(sim);
            }
        }
        let store = match raw.store {
            Some(st) => self.store(dir, st.into_inner()),
            None => StoreSettings::default_for(dir),
        };
        let mut databases: Vec<DatabaseConfig> = Vec::new();
        for (i, d) in raw.database.into_iter().enumerate() {
            let span = d.span();
            let d = d.into_inner();
            let k = |field: &str| format!("database[{i}].{field}");
            let name = self.name(d.name, span.clone(), k("name"));
            let path = match (d.path, d.url) {
                (Some(p), Some(_)) => {
                    self.error(
                        p.span(),
                        k("path"),
                        "path and url together: a database is an SQLite file (path) or a PostgreSQL server (url)",
                    );
                    None
                }
                (Some(p), None) if !p.get_ref().trim().is_empty() => {
                    Some(DatabaseLocation::Sqlite(dir.join(p.get_ref())))
                }
                (Some(p), None) => {
                    self.error(p.span(), k("path"), "must name an SQLite file");
                    None
                }
                (None, Some(u)) => self
                    .postgres_url(&u, k("url"))
                    .map(DatabaseLocation::Postgres),
                (None, None) => {
                    self.error(
                        span.clone(),
                        k("path"),
                        "missing (the SQLite file, or url = \"postgres://...\")",
                    );
                    None
                }
            };
            if let (Some(name), Some(location)) = (name, path) {
                if databases.iter().any(|x| x.name == name) {
                    self.error(
                        span,
                        k("name"),
                        format!("database '{name}' is defined twice"),
                    );
                } else {
                    databases.push(DatabaseConfig { name, location });
                }
            }
        }
        let web = match raw.web {
            Some(w) => self.web(w.into_inner()),
            None => WebSettings::default(),
        };
        let mqtt = match raw.mqtt {
            Some(m) => self.mqtt(dir, m.into_inner()),
            None => MqttSettings::default_for(dir),
        };
        Project {
            dir: dir.to_path_buf(),
            gateway,
            store,
            equipment,
            simulators,
            databases,
            web,
            mqtt,
            warnings: Vec::new(),
        }
    }

    /// A topic level (or Sparkplug ID): not empty, no `/`, `+`, `#` or control characters.
    fn topic_level(&mut self, value: &Spanned<String>, key: &str) -> Option<String> {
        let text = value.get_ref().trim();
        if let Err(why) = check_topic_level(text) {
            self.error(value.span(), key, why);
            return None;
        }
        Some(text.to_string())
    }

    fn mqtt(&mut self, dir: &Path, raw: RawMqtt) -> MqttSettings {
        let d = MqttSettings::default_for(dir);
        let url = match &raw.url {
            Some(u) => match MqttUrl::parse(u.get_ref()) {
                Ok(url) => url,
                Err(e) => {
                    self.error(u.span(), "mqtt.url", e);
                    d.url.clone()
                }
            },
            None => d.url.clone(),
        };
        let text = |v: &Option<Spanned<String>>| v.as_ref().map(|s| s.get_ref().trim().to_string());
        let file = |v: &Option<Spanned<String>>| v.as_ref().map(|s| dir.join(s.get_ref().trim()));
        let qos = self.int(&raw.qos, "mqtt.qos".into(), i64::from(d.qos), 0, 1) as u8;
        let mut messages = Vec::new();
        for (i, m) in raw.messages.iter().flatten().enumerate() {
            if let Some(sf) = self.stream_function(m, format!("mqtt.messages[{i}]")) {
                messages.push(sf);
            }
        }
        let topic_prefix = match &raw.topic_prefix {
            Some(t) => {
                let p = t.get_ref().trim().trim_matches('/').to_string();
                if p.is_empty() || p.contains(['+', '#']) || p.chars().any(char::is_control) {
                    self.error(
                        t.span(),
                        "mqtt.topic_prefix",
                        "must be a topic without '+', '#' or control characters, such as secsgate or fab1/secsgate",
                    );
                    d.topic_prefix.clone()
                } else {
                    p
                }
            }
            None => d.topic_prefix.clone(),
        };
        if raw.client_key.is_some() != raw.client_cert.is_some() {
            let span = raw
                .client_key
                .as_ref()
                .or(raw.client_cert.as_ref())
                .map(|s| s.span())
                .unwrap_or_default();
            self.error(
                span,
                "mqtt.client_cert",
                "client_cert and client_key go together (a client certificate and its key, PEM)",
            );
        }
        if !url.tls {
            for (v, key) in [
                (&raw.ca_file, "mqtt.ca_file"),
                (&raw.client_cert, "mqtt.client_cert"),
                (&raw.client_key, "mqtt.client_key"),
            ] {
                if let Some(v) = v {
                    self.error(
                        v.span(),
                        key,
                        "TLS settings need an mqtts:// url (the url is plain mqtt://)",
                    );
                }
            }
        }
        let command_password = match &raw.command_password {
            Some(p) if p.get_ref().is_empty() => {
                self.error(p.span(), "mqtt.command_password", "must not be empty");
                None
            }
            Some(p) => Some(p.get_ref().clone()),
            None => None,
        };
        let sparkplug = match raw.sparkplug {
            Some(sp) => {
                let sp = sp.into_inner();
                SparkplugSettings {
                    enabled: sp.enabled.unwrap_or(true),
                    group_id: sp
                        .group_id
                        .as_ref()
                        .and_then(|g| self.topic_level(g, "mqtt.sparkplug.group_id"))
                        .unwrap_or_else(|| d.sparkplug.group_id.clone()),
                    edge_node_id: sp
                        .edge_node_id
                        .as_ref()
                        .and_then(|g| self.topic_level(g, "mqtt.sparkplug.edge_node_id")),
                }
            }
            None => d.sparkplug.clone(),
        };
        let client_id = match &raw.client_id {
            Some(c) if c.get_ref().trim().is_empty() || c.get_ref().len() > 128 => {
                self.error(c.span(), "mqtt.client_id", "must hold 1 to 128 characters");
                None
            }
            c => text(c),
        };
        MqttSettings {
            enabled: raw.enabled.unwrap_or(true),
            url,
            client_id,
            username: text(&raw.username).filter(|u| !u.is_empty()),
            qos,
            keep_alive: self.seconds(
                &raw.keep_alive,
                "mqtt.keep_alive".into(),
                d.keep_alive,
                5.0,
                3600.0,
            ),
            reconnect_max: self.seconds(
                &raw.reconnect_max,
                "mqtt.reconnect_max".into(),
                d.reconnect_max,
                0.1,
                3600.0,
            ),
            topic_prefix,
            messages,
            ca_file: file(&raw.ca_file),
            client_cert: file(&raw.client_cert),
            client_key: file(&raw.client_key),
            forward_path: match &raw.forward_path {
                Some(p) if p.get_ref().trim().is_empty() => {
                    self.error(p.span(), "mqtt.forward_path", "must not be empty");
                    d.forward_path.clone()
                }
                Some(p) => dir.join(p.get_ref().trim()),
                None => d.forward_path.clone(),
            },
            forward_limit: self.int(
                &raw.forward_limit,
                "mqtt.forward_limit".into(),
                d.forward_limit as i64,
                100,
                1_000_000_000,
            ) as u64,
            forward_bytes: self.int(
                &raw.forward_bytes,
                "mqtt.forward_bytes".into(),
                d.forward_bytes as i64,
                1 << 20,
                1 << 40,
            ) as u64,
            commands: raw.commands.unwrap_or(false),
            command_password,
            command_timeout: self.seconds(
                &raw.command_timeout,
                "mqtt.command_timeout".into(),
                d.command_timeout,
                0.1,
                3600.0,
            ),
            sparkplug,
            url_at: raw.url.as_ref().map(|u| {
                format!(
                    "{}:{}",
                    self.file.display(),
                    line_of(self.text, u.span().start)
                )
            }),
        }
    }

    fn web(&mut self, raw: RawWeb) -> WebSettings {
        let d = WebSettings::default();
        let address = match &raw.address {
            Some(a) if a.get_ref().trim().parse::<std::net::SocketAddr>().is_err() => {
                self.error(
                    a.span(),
                    "web.address",
                    format!(
                        "'{}' is not an address and port such as 127.0.0.1:8088",
                        a.get_ref()
                    ),
                );
                d.address
            }
            Some(a) => a.get_ref().trim().to_string(),
            None => d.address,
        };
        let password = match &raw.password {
            Some(p) if p.get_ref().is_empty() => {
                self.error(p.span(), "web.password", "must not be empty");
                None
            }
            Some(p) => Some(p.get_ref().clone()),
            None => None,
        };
        WebSettings {
            enabled: raw.enabled.unwrap_or(d.enabled),
            address_at: raw.address.as_ref().map(|a| {
                format!(
                    "{}:{}",
                    self.file.display(),
                    line_of(self.text, a.span().start)
                )
            }),
            address,
            password,
        }
    }

    fn gateway(&mut self, g: RawGateway) -> GatewaySettings {
        let d = GatewaySettings::default();
        let name = match &g.name {
            Some(n) => match gateway_name_problem(n.get_ref()) {
                Some(problem) => {
                    self.error(n.span(), "gateway.name", problem);
                    String::new()
                }
                None => n.get_ref().clone(),
            },
            // Filled from the project folder's name.
            None => String::new(),
        };
        GatewaySettings {
            name,
            workers: self.int(
                &g.workers,
                "gateway.workers".into(),
                d.workers as i64,
                1,
                64,
            ) as usize,
            handler_timeout: self.seconds(
                &g.handler_timeout,
                "gateway.handler_timeout".into(),
                d.handler_timeout,
                0.01,
                86400.0,
            ),
            custom_response_timeout: self.seconds(
                &g.custom_response_timeout,
                "gateway.custom_response_timeout".into(),
                d.custom_response_timeout,
                0.01,
                3600.0,
            ),
            response_retention: self.seconds(
                &g.response_retention,
                "gateway.response_retention".into(),
                d.response_retention,
                1.0,
                86400.0,
            ),
            startup_wait: self.seconds(
                &g.startup_wait,
                "gateway.startup_wait".into(),
                d.startup_wait,
                0.0,
                3600.0,
            ),
            queue_limit: self.int(
                &g.queue_limit,
                "gateway.queue_limit".into(),
                d.queue_limit as i64,
                1,
                1_000_000,
            ) as usize,
            queue_bytes: self.int(
                &g.queue_bytes,
                "gateway.queue_bytes".into(),
                d.queue_bytes as i64,
                64 * 1024,
                1 << 40,
            ) as usize,
            tool_program_limit: self.int(
                &g.tool_program_limit,
                "gateway.tool_program_limit".into(),
                d.tool_program_limit as i64,
                0,
                10_000_000,
            ) as usize,
            tool_program_bytes: self.int(
                &g.tool_program_bytes,
                "gateway.tool_program_bytes".into(),
                d.tool_program_bytes as i64,
                0,
                1 << 40,
            ) as u64,
        }
    }

    fn store(&mut self, dir: &Path, raw: RawStore) -> StoreSettings {
        let d = StoreSettings::default_for(dir);
        if let Some(c) = &raw.control_messages
            && *c.get_ref()
        {
            self.error(
                c.span(),
                "store.control_messages",
                "not supported: HSMS control messages (select, linktest, separate) do not reach the gateway yet; remove the key or set it to false",
            );
        }
        let path = match &raw.path {
            Some(p) if p.get_ref().trim().is_empty() => {
                self.error(p.span(), "store.path", "must not be empty");
                d.path.clone()
            }
            Some(p) => dir.join(p.get_ref().trim()),
            None => d.path.clone(),
        };
        let url = match (&raw.url, &raw.path) {
            (Some(u), Some(_)) => {
                self.error(
                    u.span(),
                    "store.url",
                    "path and url together: the store is an SQLite file (path) or a PostgreSQL server (url)",
                );
                None
            }
            (Some(u), None) => self.postgres_url(u, "store.url".into()),
            (None, _) => None,
        };
        let retention = raw.retention_days.as_ref().map(|_| {
            self.seconds(
                &raw.retention_days,
                "store.retention_days".into(),
                Duration::ZERO,
                0.000_001,
                36_500.0,
            )
            .mul_f64(86_400.0)
        });
        let retention_rows = raw.retention_rows.as_ref().map(|_| {
            self.int(
                &raw.retention_rows,
                "store.retention_rows".into(),
                1,
                1,
                i64::MAX,
            ) as u64
        });
        StoreSettings {
            enabled: raw.enabled.unwrap_or(true),
            path,
            url,
            retention,
            retention_rows,
            queue: self.int(
                &raw.queue,
                "store.queue".into(),
                d.queue as i64,
                1,
                1_000_000,
            ) as usize,
            batch: self.int(&raw.batch, "store.batch".into(), d.batch as i64, 1, 100_000) as usize,
        }
    }

    /// A `postgres://` URL, checked (an error at its line if it cannot be used).
    fn postgres_url(&mut self, url: &Spanned<String>, key: String) -> Option<String> {
        let text = url.get_ref().trim();
        match postgres_url_problem(text) {
            Some(problem) => {
                self.error(url.span(), key, problem);
                None
            }
            None => Some(text.to_string()),
        }
    }

    fn name(
        &mut self,
        name: Option<Spanned<String>>,
        span: Range<usize>,
        key: String,
    ) -> Option<String> {
        let Some(name) = name else {
            self.error(span, key, "missing (every entry needs a name)");
            return None;
        };
        let n = name.get_ref().trim().to_string();
        if n.is_empty() {
            self.error(name.span(), key, "must not be empty");
            return None;
        }
        Some(n)
    }

    fn equipment(
        &mut self,
        dir: &Path,
        i: usize,
        span: Range<usize>,
        e: RawEquipment,
    ) -> Option<EquipmentConfig> {
        let k = |field: &str| format!("equipment[{i}].{field}");
        let mut e = e;
        let name = self.name(e.name.take(), span.clone(), k("name"));
        let protocol = self.protocol(&e.protocol, k("protocol"));
        let raw_secs1 = raw_secs1!(e);
        let address = e.address.take().unwrap_or_else(|| "127.0.0.1".into());
        let port = match &e.port {
            Some(_) => Some(self.int(&e.port, k("port"), 0, 0, 65535) as u16),
            None => None,
        };
        let device_id = self.int(&e.device_id, k("device_id"), 0, 0, 32767) as u16;
        let mode_text = e
            .mode
            .as_ref()
            .map_or("active".to_string(), |m| m.get_ref().to_ascii_lowercase());
        let mut transport = match protocol {
            Protocol::Secs1 => {
                let tcp = port.map(|port| match mode_text.as_str() {
                    "passive" => Line::TcpListen(format!("{address}:{port}")),
                    "active" => Line::TcpConnect(format!("{address}:{port}")),
                    other => {
                        let s = e.mode.as_ref().map_or(span.clone(), |m| m.span());
                        self.error(
                            s,
                            k("mode"),
                            format!(
                                "'{other}' is not a SECS-I over TCP mode; use active or passive"
                            ),
                        );
                        Line::TcpConnect(format!("{address}:{port}"))
                    }
                });
                if let Some(m) = &e.mode
                    && raw_secs1.serial_port.is_some()
                {
                    self.warning(
                        m.span(),
                        k("mode"),
                        "applies to SECS-I over TCP only (serial_port is set); ignored",
                    );
                }
                for (key, present) in [
                    (
                        "passive_address",
                        e.passive_address.is_some().then(|| span.clone()),
                    ),
                    ("passive_port", e.passive_port.as_ref().map(|v| v.span())),
                ] {
                    if let Some(s) = present {
                        self.warning(
                            s,
                            k(key),
                            "an HSMS alternating-mode key; this entry speaks SECS-I: ignored",
                        );
                    }
                }
                let timers = e.timers.as_ref().map(|t| t.get_ref());
                let mut s1 =
                    self.secs1(&k, span.clone(), &raw_secs1, timers, tcp, device_id, false);
                if e.max_message_size.is_some() {
                    s1.protocol.max_message_size = self.int(
                        &e.max_message_size,
                        k("max_message_size"),
                        0,
                        1024,
                        0x7FFF_FFFF,
                    ) as usize;
                }
                Transport::Secs1(s1)
            }
            Protocol::Hsms => {
                if let Some((key, s)) = raw_secs1.first_key() {
                    self.warning(s, k(key), "a SECS-I key; this entry speaks HSMS (set protocol = \"secs1\" to use it): ignored");
                }
                Transport::Hsms(self.hsms(&k, span.clone(), &e, address, port, &mode_text))
            }
        };
        transport.set_device_id(device_id);
        self.allow(e.allow.take(), k("allow"), &mut transport);
        let sdl = match &e.sdl {
            None => Some(Sdl::standard_shared()),
            Some(name)
                if name
                    .get_ref()
                    .trim()
                    .eq_ignore_ascii_case(crate::sdl::STANDARD_NAME) =>
            {
                Some(Sdl::standard_shared())
            }
            Some(name)
                if name
                    .get_ref()
                    .trim()
                    .eq_ignore_ascii_case(crate::sdl::NONE_NAME) =>
            {
                None
            }
            Some(path) => match Sdl::load(&dir.join(path.get_ref())) {
                Ok((sdl, warnings)) => {
                    self.warnings
                        .extend(warnings.into_iter().map(|w| ConfigError {
                            file: w.file,
                            line: w.line,
                            key: w.key,
                            message: w.message,
                        }));
                    Some(Arc::new(sdl))
                }
                Err(err) => {
                    self.error(path.span(), k("sdl"), err.to_string());
                    None
                }
            },
        };
        // Without an `sdl` key the standard catalogue checks and annotates, but the realtime
        // handler still gets every primary unless `realtime` or an explicit `sdl` says which.
        let realtime = match e.realtime {
            None if sdl.is_some() => Realtime::Sdl,
            None => Realtime::All,
            Some(list) => {
                let mut sfs = Vec::new();
                let mut all = false;
                for item in list.into_inner() {
                    if item.get_ref().trim() == "*" {
                        all = true;
                    } else if let Some(sf) = self.stream_function(&item, k("realtime")) {
                        sfs.push(sf);
                    }
                }
                if all {
                    Realtime::All
                } else {
                    Realtime::Only(sfs)
                }
            }
        };
        let sdl_failed = e.sdl.is_some() && sdl.is_none() && {
            let text = e.sdl.as_ref().map(|n| n.get_ref().trim().to_string());
            !text.is_some_and(|t| t.eq_ignore_ascii_case(crate::sdl::NONE_NAME))
        };
        let mut custom_responses: Vec<CustomResponse> = Vec::new();
        for (j, c) in e.custom_response.into_iter().enumerate() {
            let span = c.span();
            let c = c.into_inner();
            let ck = |f: &str| format!("equipment[{i}].custom_response[{j}].{f}");
            let at = Mapping {
                key: format!("equipment[{i}].custom_response[{j}]"),
                span: span.clone(),
                sdl: sdl.as_deref(),
                sdl_failed,
                dir,
            };
            let selector = self.selector(&at, &c);
            let handler = self.handler_name(dir, &c.handler, ck("handler"));
            let Some(selector) = selector else {
                continue;
            };
            let (field, span) = match (&selector, &c.message, &c.stream_function) {
                (Selector::Message { .. }, Some(m), _) => ("message", m.span()),
                (_, _, Some(f)) => ("stream_function", f.span()),
                _ => ("", span),
            };
            let sf = selector.stream_function();
            if !sf.is_primary() {
                self.error(
                    span,
                    ck(field),
                    format!(
                        "{selector} is a reply; custom responses intercept primaries (odd functions)"
                    ),
                );
            } else if custom_responses.iter().any(|o| o.selector == selector) {
                self.error(
                    span,
                    ck(field),
                    format!("{selector} has more than one custom response"),
                );
            }
            if c.enabled.unwrap_or(true) {
                custom_responses.push(CustomResponse { selector, handler });
            }
        }
        let mut handlers = Vec::new();
        for (j, h) in e.handler.into_iter().enumerate() {
            let span = h.span();
            let h = h.into_inner();
            let at = Mapping {
                key: format!("equipment[{i}].handler[{j}]"),
                span,
                sdl: sdl.as_deref(),
                sdl_failed,
                dir,
            };
            let selector = self.selector(&at, &h);
            let handler = self.handler_name(
                dir,
                &h.handler,
                format!("equipment[{i}].handler[{j}].handler"),
            );
            if let (Some(selector), true) = (selector, h.enabled.unwrap_or(true)) {
                handlers.push(MessageHandler { selector, handler });
            }
        }
        let on_invalid = match e.on_invalid.as_ref().map(|v| v.get_ref().as_str()) {
            None | Some("s9f7") => OnInvalid::S9F7,
            Some("accept") => OnInvalid::Accept,
            Some(other) => {
                let span = e.on_invalid.as_ref().map_or(0..0, |v| v.span());
                self.error(
                    span,
                    k("on_invalid"),
                    format!("'{other}' is not a choice; use \"s9f7\" or \"accept\""),
                );
                OnInvalid::S9F7
            }
        };
        let table_prefix = match &e.table_prefix {
            None => crate::store::messages::DEFAULT_PREFIX.to_string(),
            Some(p) => {
                let text = p.get_ref().trim().to_string();
                if !crate::store::messages::valid_prefix(&text) {
                    self.error(
                        p.span(),
                        k("table_prefix"),
                        format!(
                            "'{text}' may only hold letters, digits and '_' (it starts table names)"
                        ),
                    );
                }
                text
            }
        };
        let name = name?;
        transport.set_name(name.clone());
        Some(EquipmentConfig {
            name,
            description: e.description,
            enabled: e.enabled.unwrap_or(true),
            transport,
            establish_communication: e.establish_communication.unwrap_or(true),
            on_invalid,
            realtime,
            custom_responses,
            handlers: MessageHandlers::new(handlers),
            sdl,
            table_prefix,
        })
    }

    /// `stream_function = "S6F11"` or `message = "LotStarted"` (a definition the
    /// equipment's SDL names) of a handler mapping.
    fn selector(&mut self, at: &Mapping, c: &RawCustomResponse) -> Option<Selector> {
        let k = |f: &str| format!("{}.{f}", at.key);
        match (&c.stream_function, &c.message) {
            (Some(_), Some(m)) => {
                self.error(
                    m.span(),
                    k("message"),
                    "give stream_function or message, not both",
                );
                None
            }
            (None, None) => {
                self.error(
                    at.span.clone(),
                    at.key.clone(),
                    "needs stream_function (\"S6F11\") or message (the name of a definition in the equipment's SDL)",
                );
                None
            }
            (Some(sf), None) => self
                .stream_function(sf, k("stream_function"))
                .map(Selector::StreamFunction),
            (None, Some(m)) => {
                let name = m.get_ref().trim();
                let Some(sdl) = at.sdl else {
                    if !at.sdl_failed {
                        self.error(
                            m.span(),
                            k("message"),
                            format!("'{name}' names an SDL definition, but the equipment has no SDL (sdl = \"none\")"),
                        );
                    }
                    return None;
                };
                match sdl.named(name) {
                    Some((sf, _)) => Some(Selector::Message {
                        name: name.to_string(),
                        stream_function: sf,
                    }),
                    None => {
                        let file = sdl
                            .file
                            .strip_prefix(at.dir)
                            .unwrap_or(&sdl.file)
                            .display()
                            .to_string();
                        let names = sdl.names();
                        let known = match names.len() {
                            0 => "it names no definition".to_string(),
                            n if n <= 20 => format!("its names: {}", names.join(", ")),
                            n => format!("its names: {}, ... ({n} in all)", names[..20].join(", ")),
                        };
                        self.error(
                            m.span(),
                            k("message"),
                            format!("no definition named '{name}' in the SDL {file} ({known})"),
                        );
                        None
                    }
                }
            }
        }
    }

    /// A handler name (`handlers/<name>.py` must exist), without `.py`.
    fn handler_name(&mut self, dir: &Path, text: &Spanned<String>, key: String) -> String {
        let handler = text.get_ref().trim().trim_end_matches(".py").to_string();
        let path = dir.join("handlers").join(format!("{handler}.py"));
        if handler.is_empty() || handler.contains(['/', '\\']) {
            self.error(
                text.span(),
                key,
                "must be a handler name (a file in handlers/, without .py)",
            );
        } else if !path.is_file() {
            self.error(
                text.span(),
                key,
                format!("handlers/{handler}.py does not exist"),
            );
        }
        handler
    }

    /// HSMS settings of an `[[equipment]]` entry.
    fn hsms(
        &mut self,
        k: &dyn Fn(&str) -> String,
        span: Range<usize>,
        e: &RawEquipment,
        address: String,
        port: Option<u16>,
        mode_text: &str,
    ) -> Settings {
        let port = port.unwrap_or_else(|| {
            self.error(
                span.clone(),
                k("port"),
                "missing (the TCP port to connect to or listen on)",
            );
            0
        });
        let mode = match mode_text {
            "active" => Mode::Active(format!("{address}:{port}")),
            "passive" => Mode::Passive(format!("{address}:{port}")),
            "alternating" => {
                // The listening side binds loopback unless an address is configured.
                let passive_address = e
                    .passive_address
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1".into());
                let passive_port = match &e.passive_port {
                    Some(_) => self.int(&e.passive_port, k("passive_port"), 0, 0, 65535),
                    None => {
                        self.error(
                            span.clone(),
                            k("passive_port"),
                            "missing (alternating mode also listens)",
                        );
                        0
                    }
                };
                Mode::Alternating {
                    connect: format!("{address}:{port}"),
                    listen: format!("{passive_address}:{passive_port}"),
                }
            }
            other => {
                let s = e.mode.as_ref().map_or(span.clone(), |m| m.span());
                self.error(
                    s,
                    k("mode"),
                    format!("'{other}' is not a mode; use active, passive or alternating"),
                );
                Mode::Active(format!("{address}:{port}"))
            }
        };
        let mut hsms = Settings::new(mode);
        if let Some(t) = &e.timers {
            let t = t.get_ref();
            let p = &mut hsms.protocol;
            p.t3 = self.seconds(&t.t3, k("timers.t3"), p.t3, 0.01, 600.0);
            p.t5 = self.seconds(&t.t5, k("timers.t5"), p.t5, 0.01, 600.0);
            p.t6 = self.seconds(&t.t6, k("timers.t6"), p.t6, 0.01, 600.0);
            p.t7 = self.seconds(&t.t7, k("timers.t7"), p.t7, 0.01, 600.0);
            p.t8 = self.seconds(&t.t8, k("timers.t8"), p.t8, 0.01, 600.0);
            let link = self.seconds(
                &t.linktest,
                k("timers.linktest"),
                Duration::from_secs(60),
                0.0,
                86400.0,
            );
            p.linktest = (!link.is_zero()).then_some(link);
            hsms.write_timeout =
                self.seconds(&t.write, k("timers.write"), hsms.write_timeout, 0.1, 3600.0);
            for (key, present) in [
                ("t1", t.t1.as_ref().map(|v| v.span())),
                ("t2", t.t2.as_ref().map(|v| v.span())),
                ("t4", t.t4.as_ref().map(|v| v.span())),
            ] {
                if let Some(s) = present {
                    self.warning(
                        s,
                        k(&format!("timers.{key}")),
                        "a SECS-I timer; this entry speaks HSMS: ignored",
                    );
                }
            }
        }
        if e.max_message_size.is_some() {
            hsms.protocol.max_message_size = self.int(
                &e.max_message_size,
                k("max_message_size"),
                0,
                1024,
                0x7FFF_FFFF,
            ) as usize;
        }
        hsms
    }

    fn stream_function(&mut self, text: &Spanned<String>, key: String) -> Option<StreamFunction> {
        match text.get_ref().parse::<StreamFunction>() {
            Ok(sf) => Some(sf),
            Err(e) => {
                self.error(text.span(), key, e.to_string());
                None
            }
        }
    }

    fn simulator(
        &mut self,
        dir: &Path,
        i: usize,
        span: Range<usize>,
        s: RawSimulator,
    ) -> Option<SimulatorConfig> {
        let k = |field: &str| format!("simulator[{i}].{field}");
        let mut s = s;
        let name = self.name(s.name.take(), span.clone(), k("name"));
        let protocol = self.protocol(&s.protocol, k("protocol"));
        let raw_secs1 = raw_secs1!(s);
        let address = s.address.take().unwrap_or_else(|| "127.0.0.1".into());
        let port = s
            .port
            .is_some()
            .then(|| self.int(&s.port, k("port"), 0, 0, 65535) as u16);
        let device_id = self.int(&s.device_id, k("device_id"), 0, 0, 32767) as u16;
        let mut transport = match protocol {
            Protocol::Secs1 => {
                let tcp = port.map(|port| Line::TcpListen(format!("{address}:{port}")));
                let timers = s.timers.as_ref().map(|t| t.get_ref());
                Transport::Secs1(self.secs1(
                    &k,
                    span.clone(),
                    &raw_secs1,
                    timers,
                    tcp,
                    device_id,
                    true,
                ))
            }
            Protocol::Hsms => {
                if let Some((key, sp)) = raw_secs1.first_key() {
                    self.warning(sp, k(key), "a SECS-I key; this simulator speaks HSMS (set protocol = \"secs1\" to use it): ignored");
                }
                let port = port.unwrap_or_else(|| {
                    self.error(
                        span.clone(),
                        k("port"),
                        "missing (the port the simulator listens on)",
                    );
                    0
                });
                let mut hsms = Settings::new(Mode::Passive(format!("{address}:{port}")));
                if let Some(t) = &s.timers {
                    let t = t.get_ref();
                    hsms.protocol.t3 =
                        self.seconds(&t.t3, k("timers.t3"), hsms.protocol.t3, 0.01, 600.0);
                    if let Some((key, sp)) = [
                        ("t1", &t.t1),
                        ("t2", &t.t2),
                        ("t4", &t.t4),
                        ("t5", &t.t5),
                        ("t6", &t.t6),
                        ("t7", &t.t7),
                        ("t8", &t.t8),
                        ("linktest", &t.linktest),
                        ("write", &t.write),
                    ]
                    .into_iter()
                    .find_map(|(key, v)| v.as_ref().map(|v| (key, v.span())))
                    {
                        self.warning(
                            sp,
                            k(&format!("timers.{key}")),
                            "an HSMS simulator takes only timers.t3 (the rest are SEMI's defaults): ignored",
                        );
                    }
                }
                Transport::Hsms(hsms)
            }
        };
        transport.set_device_id(device_id);
        self.allow(s.allow.take(), k("allow"), &mut transport);
        let config = s.config.and_then(|c| {
            let path = dir.join(c.get_ref());
            if path.is_file() {
                Some(path)
            } else {
                self.error(
                    c.span(),
                    k("config"),
                    format!("{} does not exist", path.display()),
                );
                None
            }
        });
        let name = name?;
        transport.set_name(name.clone());
        let spool_dir = s
            .spool_dir
            .map_or_else(|| dir.join("spool").join(&name), |d| dir.join(d));
        Some(SimulatorConfig {
            name,
            enabled: s.enabled.unwrap_or(true),
            transport,
            config,
            spool_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Project, Vec<ConfigError>> {
        let dir = std::env::temp_dir();
        Project::parse(&dir, Path::new("project.toml"), text)
    }

    #[test]
    fn a_full_project() {
        let p = parse(
            r#"
[gateway]
workers = 2
handler_timeout = 1.5
queue_limit = 16

[[equipment]]
name = "Tool1"
mode = "passive"
port = 5000
device_id = 3
timers = { t3 = 2, linktest = 0, write = 4 }
realtime = ["S6F11", "S5F1"]

[[equipment]]
name = "Tool2"
port = 5001
enabled = false
"#,
        )
        .unwrap();
        assert_eq!(p.gateway.workers, 2);
        assert_eq!(p.gateway.handler_timeout, Duration::from_millis(1500));
        assert_eq!(p.gateway.queue_limit, 16);
        let t1 = &p.equipment[0];
        let h1 = hsms(t1);
        assert_eq!(h1.mode, Mode::Passive("127.0.0.1:5000".into()));
        assert_eq!(h1.device_id, 3);
        assert_eq!(h1.protocol.t3, Duration::from_secs(2));
        assert_eq!(h1.protocol.linktest, None);
        assert_eq!(h1.write_timeout, Duration::from_secs(4));
        assert_eq!(hsms(&p.equipment[1]).write_timeout, Duration::from_secs(30));
        assert!(t1.realtime.includes("S6F11".parse().unwrap(), None));
        assert!(!t1.realtime.includes("S1F1".parse().unwrap(), None));
        assert!(!p.equipment[1].enabled);
        assert_eq!(p.equipment[1].realtime, Realtime::Sdl);
    }

    fn hsms(e: &EquipmentConfig) -> &Settings {
        match &e.transport {
            Transport::Hsms(s) => s,
            other => panic!("not HSMS: {other}"),
        }
    }

    fn secs1(t: &Transport) -> &secs1::Settings {
        match t {
            Transport::Secs1(s) => s,
            other => panic!("not SECS-I: {other}"),
        }
    }

    #[test]
    fn secs1_equipment_and_simulators() {
        let p = parse(
            r#"
[[equipment]]
name = "Serial"
protocol = "secs1"
serial_port = "/dev/ttyUSB0"
baud_rate = 19200
data_bits = 7
parity = "even"
stop_bits = 2
flow_control = "hardware"
device_id = 5
timers = { t1 = 1, t2 = 5, t3 = 30, t4 = 20 }
retry_limit = 5
master = true
duplicate_detection = false

[[equipment]]
name = "OverTcp"
protocol = "SECS1"
mode = "passive"
port = 6000

[[simulator]]
name = "SimSerial"
protocol = "secs1"
serial_port = "/dev/ttyS1"
device_id = 2

[[simulator]]
name = "SimTcp"
protocol = "secs1"
port = 0
"#,
        )
        .unwrap();
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        let s = secs1(&p.equipment[0].transport);
        let Line::Serial(serial) = &s.line else {
            panic!("{:?}", s.line)
        };
        assert_eq!(serial.path, "/dev/ttyUSB0");
        assert_eq!(serial.baud_rate, 19200);
        assert_eq!(serial.data_bits, 7);
        assert_eq!(serial.parity, Parity::Even);
        assert_eq!(serial.stop_bits, 2);
        assert_eq!(serial.flow_control, FlowControl::Hardware);
        assert_eq!(s.protocol.device_id, 5);
        assert!(!s.protocol.equipment, "a connection is the host end");
        assert!(s.protocol.master);
        assert_eq!(s.protocol.t1, Duration::from_secs(1));
        assert_eq!(s.protocol.t2, Duration::from_secs(5));
        assert_eq!(s.protocol.t3, Duration::from_secs(30));
        assert_eq!(s.protocol.t4, Duration::from_secs(20));
        assert_eq!(s.protocol.retry, 5);
        assert!(!s.protocol.duplicate_detection);
        assert_eq!(s.name, "Serial");
        let tcp = secs1(&p.equipment[1].transport);
        assert_eq!(tcp.line, Line::TcpListen("127.0.0.1:6000".into()));
        // E4's defaults: the host end is not master; T1 0.5 s, T2 10 s, T3 45 s, T4 45 s, RTY 3.
        assert!(!tcp.protocol.master);
        assert_eq!(tcp.protocol.t1, Duration::from_millis(500));
        assert_eq!(tcp.protocol.t2, Duration::from_secs(10));
        assert_eq!(tcp.protocol.t3, Duration::from_secs(45));
        assert_eq!(tcp.protocol.t4, Duration::from_secs(45));
        assert_eq!(tcp.protocol.retry, 3);
        let sim = secs1(&p.simulators[0].transport);
        assert!(sim.protocol.equipment && sim.protocol.master);
        assert_eq!(sim.protocol.device_id, 2);
        assert!(
            matches!(&sim.line, Line::Serial(s) if s.path == "/dev/ttyS1" && s.baud_rate == 9600)
        );
        assert_eq!(
            secs1(&p.simulators[1].transport).line,
            Line::TcpListen("127.0.0.1:0".into())
        );
    }

    #[test]
    fn secs1_mistakes_are_reported_and_foreign_keys_warned() {
        let errors = parse(
            "[[equipment]]\nname = \"A\"\nprotocol = \"secs2\"\nport = 1\n\n[[equipment]]\nname = \"B\"\nprotocol = \"secs1\"\nparity = \"sideways\"\nserial_port = \"/dev/x\"\nretry_limit = 40\n\n[[equipment]]\nname = \"C\"\nprotocol = \"secs1\"\n",
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        for e in [
            "project.toml:3: equipment[0].protocol: 'secs2' is not a protocol",
            "project.toml:9: equipment[1].parity: 'sideways' is not a parity",
            "project.toml:11: equipment[1].retry_limit: 40 is out of range 0..=31",
            "equipment[2].serial_port: missing",
        ] {
            assert!(
                text.iter().any(|t| t.contains(e)),
                "missing {e:?} in {text:#?}"
            );
        }
        let p = parse(
            "[[equipment]]\nname = \"A\"\nport = 1\nbaud_rate = 9600\ntimers = { t3 = 5, t2 = 3 }\n\n[[equipment]]\nname = \"B\"\nprotocol = \"secs1\"\nport = 2\nparity = \"odd\"\ntimers = { t5 = 1 }\n",
        )
        .unwrap();
        let text: Vec<String> = p.warnings.iter().map(|e| e.to_string()).collect();
        for w in [
            "project.toml:4: equipment[0].baud_rate: a SECS-I key; this entry speaks HSMS",
            "project.toml:5: equipment[0].timers.t2: a SECS-I timer",
            "project.toml:11: equipment[1].parity: applies to a serial line only",
            "project.toml:12: equipment[1].timers.t5: an HSMS timer",
        ] {
            assert!(
                text.iter().any(|t| t.contains(w)),
                "missing {w:?} in {text:#?}"
            );
        }
    }

    #[test]
    fn alternating_mode_listens_on_loopback_unless_told() {
        let p = parse(
            "[[equipment]]\nname = \"A\"\nmode = \"alternating\"\nport = 1\npassive_port = 2\n",
        )
        .unwrap();
        assert_eq!(
            hsms(&p.equipment[0]).mode,
            Mode::Alternating {
                connect: "127.0.0.1:1".into(),
                listen: "127.0.0.1:2".into()
            }
        );
    }

    #[test]
    fn allow_lists_are_parsed_and_bad_entries_reported() {
        use std::net::IpAddr;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let p = parse(
            "[[equipment]]\nname = \"A\"\nport = 1\nallow = [\"10.1.2.3\", \"127.0.0.1/8\", \"fd00::/8\"]\n\n[[equipment]]\nname = \"B\"\nprotocol = \"secs1\"\nmode = \"passive\"\nport = 2\nallow = [\"::1\"]\n\n[[equipment]]\nname = \"C\"\nport = 3\n\n[[simulator]]\nname = \"S\"\nport = 4\nallow = [\"192.168.0.0/16\"]\n",
        )
        .unwrap();
        let a = p.equipment[0].transport.allow();
        assert!(
            a.permits(ip("10.1.2.3")) && a.permits(ip("127.9.9.9")) && a.permits(ip("fd12::1"))
        );
        assert!(!a.permits(ip("10.1.2.4")));
        let b = secs1(&p.equipment[1].transport);
        assert!(b.allow.permits(ip("::1")) && !b.allow.permits(ip("127.0.0.1")));
        assert!(!p.equipment[2].transport.allow().is_restricted());
        let s = p.simulators[0].transport.allow();
        assert!(s.permits(ip("192.168.4.5")) && !s.permits(ip("127.0.0.1")));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);

        let errors = parse(
            "[[equipment]]\nname = \"A\"\nport = 1\nallow = [\n  \"10.0.0.1\",\n  \"localhost\",\n  \"10.0.0.0/33\",\n]\n\n[[simulator]]\nname = \"S\"\nport = 4\nallow = [\"fd00::/129\"]\n",
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        for e in [
            "project.toml:6: equipment[0].allow[1]: 'localhost' is not an IP address",
            "project.toml:7: equipment[0].allow[2]: '10.0.0.0/33': the prefix length must be a number from 0 to 32",
            "project.toml:13: simulator[0].allow[0]: 'fd00::/129': the prefix length must be a number from 0 to 128",
        ] {
            assert!(
                text.iter().any(|t| t.contains(e)),
                "missing {e:?} in {text:#?}"
            );
        }
        let p = parse(
            "[[equipment]]\nname = \"A\"\nprotocol = \"secs1\"\nserial_port = \"/dev/x\"\nallow = [\"10.0.0.1\"]\n\n[[equipment]]\nname = \"B\"\nport = 1\nallow = []\n",
        )
        .unwrap();
        let text: Vec<String> = p.warnings.iter().map(|e| e.to_string()).collect();
        for w in [
            "project.toml:5: equipment[0].allow: applies to TCP connections only",
            "project.toml:10: equipment[1].allow: empty: no peer can connect",
        ] {
            assert!(
                text.iter().any(|t| t.contains(w)),
                "missing {w:?} in {text:#?}"
            );
        }
    }

    #[test]
    fn every_problem_has_file_line_and_key() {
        let errors = parse(
            "[[equipment]]\nname = \"A\"\nport = 70000\nmode = \"sideways\"\n\n[[equipment]]\nname = \"A\"\nport = 1\ndevice_id = -1\nrealtime = [\"S1\"]\n\n[[equipment.custom_response]]\nstream_function = \"S6F12\"\nhandler = \"nope\"\n",
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let expect = [
            "project.toml:3: equipment[0].port: 70000 is out of range 0..=65535",
            "project.toml:4: equipment[0].mode: 'sideways' is not a mode",
            "project.toml:9: equipment[1].device_id: -1 is out of range 0..=32767",
            "project.toml:10: equipment[1].realtime: 'S1' is not a stream/function",
            "project.toml:13: equipment[1].custom_response[0].stream_function: S6F12 is a reply",
            "project.toml:14: equipment[1].custom_response[0].handler: handlers/nope.py does not exist",
            "equipment[1].name: equipment 'A' is defined twice",
        ];
        for e in expect {
            assert!(
                text.iter().any(|t| t.contains(e)),
                "missing {e:?} in {text:#?}"
            );
        }
    }

    #[test]
    fn store_settings_and_table_prefixes() {
        let p = parse("[[equipment]]\nname = \"A\"\nport = 1\n").unwrap();
        assert_eq!(p.store, StoreSettings::default_for(&std::env::temp_dir()));
        assert!(p.store.path.ends_with("data/secsgate.sqlite"));
        assert_eq!(p.equipment[0].table_prefix, "SECSGEM_");
        let p = parse(
            "[store]\nenabled = false\npath = \"db/m.sqlite\"\nretention_days = 2\nretention_rows = 10\ncontrol_messages = false\n\n[[equipment]]\nname = \"A\"\nport = 1\ntable_prefix = \"Fab1_\"\n",
        )
        .unwrap();
        assert!(!p.store.enabled);
        assert_eq!(p.store.path, std::env::temp_dir().join("db/m.sqlite"));
        assert_eq!(p.store.retention, Some(Duration::from_secs(2 * 86_400)));
        assert_eq!(p.store.retention_rows, Some(10));
        assert_eq!(p.equipment[0].table_prefix, "Fab1_");
        let errors = parse(
            "[store]\nretention_rows = 0\ncontrol_messages = true\n\n[[equipment]]\nname = \"A\"\nport = 1\ntable_prefix = \"x; DROP\"\n",
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        for e in [
            "project.toml:2: store.retention_rows: 0 is out of range",
            "project.toml:3: store.control_messages: not supported",
            "project.toml:8: equipment[0].table_prefix: 'x; DROP' may only hold",
        ] {
            assert!(
                text.iter().any(|t| t.contains(e)),
                "missing {e:?} in {text:#?}"
            );
        }
    }

    #[test]
    fn mqtt_settings_and_their_errors() {
        let p = parse("[[equipment]]\nname = \"A\"\nport = 1\n").unwrap();
        assert!(!p.mqtt.enabled, "off without [mqtt]");
        let p = parse(
            "[mqtt]\nurl = \"mqtts://broker.fab:8884\"\nqos = 0\nmessages = [\"S6F11\", \"S2F41\"]\nca_file = \"ca.pem\"\ncommands = true\nreconnect_max = 5\n\n[mqtt.sparkplug]\ngroup_id = \"fab1\"\n",
        )
        .unwrap();
        let m = &p.mqtt;
        assert!(m.enabled && m.commands && m.sparkplug.enabled);
        assert_eq!(
            m.url,
            MqttUrl {
                tls: true,
                host: "broker.fab".into(),
                port: 8884
            }
        );
        assert!(!m.url.is_loopback());
        assert_eq!((m.qos, m.reconnect_max), (0, Duration::from_secs(5)));
        assert_eq!(m.messages.len(), 2);
        assert_eq!(m.sparkplug.group_id, "fab1");
        assert!(m.ca_file.as_ref().unwrap().ends_with("ca.pem"));
        assert_eq!(MqttUrl::parse("mqtt://localhost").unwrap().port, 1883);
        assert!(MqttUrl::parse("mqtt://[::1]:1884").unwrap().is_loopback());
        let errors = parse(
            "[mqtt]\nurl = \"http://broker\"\nqos = 2\nmessages = [\"S6F99x\"]\nca_file = \"ca.pem\"\ncolour = \"red\"\n",
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("project.toml:6") && t.contains("colour")),
            "an unknown key is named with its line: {text:#?}"
        );
        let errors = parse(
            "[mqtt]\nurl = \"http://broker\"\nqos = 2\nmessages = [\"S6F99x\"]\nca_file = \"ca.pem\"\n\n[mqtt.sparkplug]\ngroup_id = \"a/b\"\n",
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        for e in [
            "project.toml:2: mqtt.url: 'http://broker' is not a broker url",
            "project.toml:3: mqtt.qos: 2 is out of range 0..=1",
            "project.toml:4: mqtt.messages[0]",
            "project.toml:5: mqtt.ca_file: TLS settings need an mqtts:// url",
            "project.toml:8: mqtt.sparkplug.group_id",
        ] {
            assert!(
                text.iter().any(|t| t.contains(e)),
                "missing {e:?} in {text:#?}"
            );
        }
    }

    #[test]
    fn gateway_name_and_postgres_urls() {
        // The default: the project folder's name.
        let p = Project::parse(
            Path::new("/srv/fab1-bay3"),
            Path::new("project.toml"),
            "[[equipment]]\nname = \"A\"\nport = 1\n",
        )
        .unwrap();
        assert_eq!(p.gateway.name, "fab1-bay3");
        assert_eq!(default_gateway_name(Path::new("/srv/a#b+c")), "a_b_c");
        let p = parse("[gateway]\nname = \"gw-7\"\n\n[store]\nurl = \"postgres://sg@127.0.0.1:5433/fab\"\n\n[[database]]\nname = \"mes\"\nurl = \"postgresql://mes@db/mes\"\n").unwrap();
        assert_eq!(p.gateway.name, "gw-7");
        assert_eq!(
            p.store.url.as_deref(),
            Some("postgres://sg@127.0.0.1:5433/fab")
        );
        assert_eq!(
            p.databases[0].location,
            DatabaseLocation::Postgres("postgresql://mes@db/mes".into())
        );
        let long = "x".repeat(65);
        let errors = parse(&format!(
            "[gateway]\nname = \"{long}\"\n\n[store]\npath = \"a.sqlite\"\nurl = \"postgres://h/db\"\n\n[[database]]\nname = \"m\"\nurl = \"mysql://h/db\"\n"
        ))
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        for e in [
            "project.toml:2: gateway.name: longer than 64 characters",
            "project.toml:6: store.url: path and url together",
            "project.toml:10: database[0].url: 'mysql://h/db' is not a PostgreSQL URL",
        ] {
            assert!(
                text.iter().any(|t| t.contains(e)),
                "missing {e:?} in {text:#?}"
            );
        }
        for (name, problem) in [
            ("", "must not be empty"),
            ("a/b", "'/' may not be"),
            ("a+b", "'+' may not be"),
            ("a#b", "'#' may not be"),
            ("a\\tb", "'\\t' may not be"),
        ] {
            let e = &parse(&format!("[gateway]\nname = \"{name}\"\n")).unwrap_err()[0];
            assert_eq!(e.line, 2, "{e}");
            assert_eq!(e.key, "gateway.name", "{e}");
            assert!(e.message.contains(problem), "{name:?}: {e}");
        }
        let e = &parse("[store]\nurl = \"postgres://u@h:port/db\"\n").unwrap_err()[0];
        assert_eq!((e.line, e.key.as_str()), (2, "store.url"), "{e}");
    }

    #[test]
    fn syntax_and_unknown_keys_give_the_line() {
        let e = &parse("[[equipment]]\nname = \"A\"\nport = 1\nprot = 5\n").unwrap_err()[0];
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("unknown field `prot`"), "{e}");
        let e = &parse("[gateway]\nworkers = \n").unwrap_err()[0];
        assert_eq!(e.line, 2, "{e}");
        let e = &parse("[gateway]\nworkers = 2\nqueue_limit = 0\n").unwrap_err()[0];
        assert_eq!(
            e.to_string(),
            "project.toml:3: gateway.queue_limit: 0 is out of range 1..=1000000"
        );
    }
}
