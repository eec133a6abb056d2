//! Sparkplug B (Eclipse Sparkplug 3.0, namespace `spBv1.0`), sans-IO: the protobuf payload,
//! the topics, and the edge node's session state. No socket and no clock here: the caller
//! hands in times as milliseconds since the Unix epoch and publishes the [`Publish`]es it gets
//! back, in the order given.
//!
//! In Sparkplug terms the gateway is one **edge node** (`edge_node_id`, by default the gateway's
//! name) in a **group** (`group_id`, by default `secsgate`), and each equipment is one
//! **device** under it (`device_id` = the equipment name). A device's **metrics** are its tags,
//! named by their path relative to the equipment folder (`Status`, `Enabled`,
//! `MessagesReceived`, `Messages/S6F11/4001/Body/0/1`, ...).
//!
//! The messages, on `spBv1.0/<group_id>/<TYPE>/<edge_node_id>[/<device_id>]`:
//!
//! | type   | meaning                                                                  | seq  |
//! |--------|--------------------------------------------------------------------------|------|
//! | NBIRTH | the node is online: its `bdSeq` and node metrics; opens the session      | 0    |
//! | NDEATH | the node is offline: the MQTT Last Will, carrying the same `bdSeq`       | none |
//! | NDATA  | a node metric changed (here `Properties/Equipment Count`)                | +1   |
//! | DBIRTH | a device is online: every one of its metrics, with datatype and value    | +1   |
//! | DDATA  | some of a device's metrics changed: only those                           | +1   |
//! | DDEATH | a device is offline (its metrics are stale)                              | +1   |
//! | NCMD   | a command to the node, subscribed to: `Node Control/Rebirth` = true asks for a new NBIRTH and every DBIRTH | |
//!
//! `seq` is 0 on NBIRTH and goes up by one (mod 256) on every later message of the session
//! (NDATA, DBIRTH, DDATA, DDEATH; a rebirth starts again at 0);
//! `bdSeq` goes up by one (mod 256) on every MQTT CONNECT, and the will of that CONNECT and the
//! NBIRTH after it carry the same value, which is how a host ties a death to its birth.
//! Sparkplug asks for QoS 0 and no retain on every message but the NDEATH will (QoS 1, no
//! retain), and a clean session.
//!
//! Life of a [`Node`]: [`Node::new`] with the bdSeq persisted by the last process;
//! [`Node::connecting`] before every CONNECT (its NDEATH is the will; persist
//! [`Node::next_bd_seq`]); [`Node::connected`] once the broker accepted it and the NCMD topic is
//! subscribed (NBIRTH, then a DBIRTH per device); [`Node::birth`], [`Node::update`] and
//! [`Node::death`] as equipment comes, changes and goes; [`Node::handle_ncmd`] for each NCMD;
//! [`Node::disconnected`] when the connection drops, then `connecting` again. While offline the
//! node keeps the devices' current values and publishes nothing: the births of the next session
//! carry them. So Sparkplug messages are not for a store-and-forward queue: one held across a
//! reconnect would carry a seq of a dead session, which a host reads as a gap and answers with a
//! rebirth request; the next session's births bring the current values instead.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use prost::Message as _;
use serde_json::Value;

/// The Sparkplug B topic namespace, the first topic level.
pub const NAMESPACE: &str = "spBv1.0";
/// The group ID used when the configuration names none.
pub const DEFAULT_GROUP_ID: &str = "secsgate";
/// NBIRTH/NDEATH metric: the birth/death sequence number of the MQTT session (UInt64, 0-255).
pub const METRIC_BD_SEQ: &str = "bdSeq";
/// NBIRTH metric (Boolean, false) a host writes true through NCMD to ask for a rebirth.
pub const METRIC_REBIRTH: &str = "Node Control/Rebirth";
/// NBIRTH metric: the secsgate version (String).
pub const METRIC_VERSION: &str = "Properties/Version";
/// NBIRTH (and NDATA on change) metric: how many devices (equipment) the node has (UInt64).
pub const METRIC_EQUIPMENT_COUNT: &str = "Properties/Equipment Count";

/// The Sparkplug B protobuf payload (`org.eclipse.tahu.protobuf.Payload`, proto2), written
/// with the same field numbers as the specification's schema. Fields secsgate neither sends
/// nor reads (metric metadata 8, properties 9, dataset 17, template 18, extensions) are left
/// out: a decoder skips them.
pub mod proto {
    /// One Sparkplug message body.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Payload {
        /// Time of sending, ms since the Unix epoch.
        #[prost(uint64, optional, tag = "1")]
        pub timestamp: Option<u64>,
        /// The metrics.
        #[prost(message, repeated, tag = "2")]
        pub metrics: Vec<Metric>,
        /// The session sequence number, 0-255 (absent on NDEATH and commands).
        #[prost(uint64, optional, tag = "3")]
        pub seq: Option<u64>,
        /// Schema identifier of the body.
        #[prost(string, optional, tag = "4")]
        pub uuid: Option<String>,
        /// Opaque body bypassing the metrics.
        #[prost(bytes = "vec", optional, tag = "5")]
        pub body: Option<Vec<u8>>,
    }

    /// One metric (tag): name, datatype, value and its time.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        /// The metric's name (always sent by secsgate, which uses no aliases).
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        /// Alias announced in a birth in place of the name.
        #[prost(uint64, optional, tag = "2")]
        pub alias: Option<u64>,
        /// Time the value was acquired, ms since the Unix epoch.
        #[prost(uint64, optional, tag = "3")]
        pub timestamp: Option<u64>,
        /// A [`super::DataType`] value.
        #[prost(uint32, optional, tag = "4")]
        pub datatype: Option<u32>,
        /// Historical data that should not update the live tag.
        #[prost(bool, optional, tag = "5")]
        pub is_historical: Option<bool>,
        /// Not to be stored as a tag by the host.
        #[prost(bool, optional, tag = "6")]
        pub is_transient: Option<bool>,
        /// The value is null (and `value` absent).
        #[prost(bool, optional, tag = "7")]
        pub is_null: Option<bool>,
        /// The value, in the field its datatype uses.
        #[prost(oneof = "metric::Value", tags = "10, 11, 12, 13, 14, 15, 16")]
        pub value: Option<metric::Value>,
    }

    /// The `value` oneof of [`Metric`].
    pub mod metric {
        /// Where a metric's value travels: Int8-32 and UInt8-32 in `IntValue`, Int64, UInt64
        /// and DateTime in `LongValue` (signed ones as two's complement), Float, Double,
        /// Boolean, String and Text, Bytes and File in theirs.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(uint32, tag = "10")]
            IntValue(u32),
            #[prost(uint64, tag = "11")]
            LongValue(u64),
            #[prost(float, tag = "12")]
            FloatValue(f32),
            #[prost(double, tag = "13")]
            DoubleValue(f64),
            #[prost(bool, tag = "14")]
            BooleanValue(bool),
            #[prost(string, tag = "15")]
            StringValue(String),
            #[prost(bytes = "vec", tag = "16")]
            BytesValue(Vec<u8>),
        }
    }
}

/// Sparkplug B metric datatypes, with the specification's numbers (`Metric.datatype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DataType {
    Unknown = 0,
    Int8 = 1,
    Int16 = 2,
    Int32 = 3,
    Int64 = 4,
    UInt8 = 5,
    UInt16 = 6,
    UInt32 = 7,
    UInt64 = 8,
    Float = 9,
    Double = 10,
    Boolean = 11,
    String = 12,
    DateTime = 13,
    Text = 14,
    Uuid = 15,
    DataSet = 16,
    Bytes = 17,
    File = 18,
    Template = 19,
    PropertySet = 20,
    PropertySetList = 21,
}

impl DataType {
    /// The datatype numbered `n`, if it is one of the scalar and structured types above.
    pub fn from_u32(n: u32) -> Option<DataType> {
        use DataType::*;
        const ALL: [DataType; 22] = [
            Unknown,
            Int8,
            Int16,
            Int32,
            Int64,
            UInt8,
            UInt16,
            UInt32,
            UInt64,
            Float,
            Double,
            Boolean,
            String,
            DateTime,
            Text,
            Uuid,
            DataSet,
            Bytes,
            File,
            Template,
            PropertySet,
            PropertySetList,
        ];
        ALL.get(usize::try_from(n).ok()?).copied()
    }
}

/// A metric value as secsgate publishes it, from a tag's JSON value ([`MetricValue::from_json`]).
#[derive(Clone, Debug, PartialEq)]
pub enum MetricValue {
    /// JSON null: sent as `is_null` with datatype String.
    Null,
    /// JSON true/false: Boolean.
    Boolean(bool),
    /// A JSON integer that fits i64 (negative ones too): Int64, two's complement in `long_value`.
    Int64(i64),
    /// A JSON integer above i64::MAX: UInt64.
    UInt64(u64),
    /// Any other JSON number: Double.
    Double(f64),
    /// A JSON string, or an array or object as its compact JSON text: String.
    String(String),
}

impl MetricValue {
    /// Maps a tag value: bool → Boolean; integer fitting i64 → Int64; larger integer → UInt64;
    /// other number → Double; string → String; null → null String; array or object → String
    /// holding the compact JSON text.
    pub fn from_json(value: &Value) -> MetricValue {
        match value {
            Value::Null => MetricValue::Null,
            Value::Bool(b) => MetricValue::Boolean(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    MetricValue::Int64(i)
                } else if let Some(u) = n.as_u64() {
                    MetricValue::UInt64(u)
                } else {
                    n.as_f64()
                        .map_or_else(|| MetricValue::String(n.to_string()), MetricValue::Double)
                }
            }
            Value::String(s) => MetricValue::String(s.clone()),
            Value::Array(_) | Value::Object(_) => MetricValue::String(value.to_string()),
        }
    }

    /// The Sparkplug datatype this value is announced with.
    pub fn datatype(&self) -> DataType {
        match self {
            MetricValue::Null | MetricValue::String(_) => DataType::String,
            MetricValue::Boolean(_) => DataType::Boolean,
            MetricValue::Int64(_) => DataType::Int64,
            MetricValue::UInt64(_) => DataType::UInt64,
            MetricValue::Double(_) => DataType::Double,
        }
    }

    /// The protobuf metric `name` = this value at `timestamp`.
    pub fn to_proto(&self, name: &str, timestamp: u64) -> proto::Metric {
        use proto::metric::Value as V;
        let value = match self {
            MetricValue::Null => None,
            MetricValue::Boolean(b) => Some(V::BooleanValue(*b)),
            // Two's complement, as the specification stores signed 64-bit values.
            MetricValue::Int64(i) => Some(V::LongValue(*i as u64)),
            MetricValue::UInt64(u) => Some(V::LongValue(*u)),
            MetricValue::Double(d) => Some(V::DoubleValue(*d)),
            MetricValue::String(s) => Some(V::StringValue(s.clone())),
        };
        proto::Metric {
            name: Some(name.to_string()),
            timestamp: Some(timestamp),
            datatype: Some(self.datatype() as u32),
            is_null: matches!(self, MetricValue::Null).then_some(true),
            value,
            ..Default::default()
        }
    }

    /// Reads back a metric of one of the datatypes secsgate sends (Boolean, Int64, UInt64,
    /// Double, String; a null of any datatype); `None` for other datatypes or a value that
    /// does not match its datatype.
    pub fn from_proto(metric: &proto::Metric) -> Option<MetricValue> {
        use proto::metric::Value as V;
        if metric.is_null == Some(true) {
            return Some(MetricValue::Null);
        }
        let datatype = DataType::from_u32(metric.datatype?)?;
        match (datatype, metric.value.as_ref()?) {
            (DataType::Boolean, V::BooleanValue(b)) => Some(MetricValue::Boolean(*b)),
            (DataType::Int64, V::LongValue(l)) => Some(MetricValue::Int64(*l as i64)),
            (DataType::UInt64, V::LongValue(l)) => Some(MetricValue::UInt64(*l)),
            (DataType::Double, V::DoubleValue(d)) => Some(MetricValue::Double(*d)),
            (DataType::String, V::StringValue(s)) => Some(MetricValue::String(s.clone())),
            _ => None,
        }
    }
}

/// What goes wrong in this module: a topic level that cannot be one, or an NCMD that is no
/// Sparkplug command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A group, edge node or device ID that cannot be an MQTT topic level.
    #[error("sparkplug {what} {value:?} {problem}")]
    InvalidId {
        /// `group_id`, `edge_node_id` or `device_id`.
        what: &'static str,
        /// The ID given.
        value: String,
        /// Why it cannot be used.
        problem: String,
    },
    /// The NCMD payload is not a Sparkplug B protobuf payload.
    #[error("NCMD payload is not a Sparkplug B payload: {0}")]
    Decode(String),
    /// The NCMD payload decodes but holds no metric, so commands nothing.
    #[error("NCMD payload holds no metric")]
    EmptyCommand,
}

/// Checks that `value` can be a Sparkplug topic level: not empty, UTF-8 (a `&str` is), and
/// without `/`, `+`, `#` (MQTT's level separator and wildcards) or NUL (not allowed in an MQTT
/// topic). IDs are rejected rather than escaped, so the name a host shows is the configured one.
pub fn validate_id(what: &'static str, value: &str) -> Result<(), Error> {
    let problem = if value.is_empty() {
        Some("is empty".to_string())
    } else {
        value.chars().find(|c| matches!(c, '/' | '+' | '#' | '\0')).map(|c| {
            format!(
                "contains {c:?}: a Sparkplug topic level may not hold '/', '+', '#' or NUL; rename it"
            )
        })
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(Error::InvalidId {
            what,
            value: value.to_string(),
            problem,
        }),
    }
}

/// The Sparkplug message types secsgate publishes or subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    NBirth,
    NDeath,
    NData,
    NCmd,
    DBirth,
    DData,
    DDeath,
}

impl MessageType {
    /// The topic level naming the type (`NBIRTH`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::NBirth => "NBIRTH",
            MessageType::NDeath => "NDEATH",
            MessageType::NData => "NDATA",
            MessageType::NCmd => "NCMD",
            MessageType::DBirth => "DBIRTH",
            MessageType::DData => "DDATA",
            MessageType::DDeath => "DDEATH",
        }
    }

    /// The MQTT QoS Sparkplug asks for: 1 for the NDEATH will, 0 for the rest (none of them
    /// retained).
    pub fn qos(self) -> u8 {
        match self {
            MessageType::NDeath => 1,
            _ => 0,
        }
    }

    /// Whether the type is about a device (has a `device_id` level).
    pub fn is_device(self) -> bool {
        matches!(
            self,
            MessageType::DBirth | MessageType::DData | MessageType::DDeath
        )
    }
}

/// The topics of one edge node: `spBv1.0/<group_id>/<TYPE>/<edge_node_id>[/<device_id>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    group_id: String,
    edge_node_id: String,
}

impl Topics {
    /// The topics of edge node `edge_node_id` in group `group_id`; both must pass
    /// [`validate_id`].
    pub fn new(group_id: &str, edge_node_id: &str) -> Result<Topics, Error> {
        validate_id("group_id", group_id)?;
        validate_id("edge_node_id", edge_node_id)?;
        Ok(Topics {
            group_id: group_id.to_string(),
            edge_node_id: edge_node_id.to_string(),
        })
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn edge_node_id(&self) -> &str {
        &self.edge_node_id
    }

    /// A node-level topic (`NBIRTH`, `NDEATH`, `NDATA`, `NCMD`); a device type is given
    /// without its device level.
    pub fn node(&self, kind: MessageType) -> String {
        format!(
            "{NAMESPACE}/{}/{}/{}",
            self.group_id,
            kind.as_str(),
            self.edge_node_id
        )
    }

    /// The NCMD topic the node subscribes to.
    pub fn ncmd(&self) -> String {
        self.node(MessageType::NCmd)
    }

    /// A device topic (`DBIRTH`, `DDATA`, `DDEATH`) of `device_id`, which must pass
    /// [`validate_id`].
    pub fn device(&self, kind: MessageType, device_id: &str) -> Result<String, Error> {
        validate_id("device_id", device_id)?;
        Ok(format!("{}/{device_id}", self.node(kind)))
    }
}

/// One MQTT message to publish: its type, topic and encoded payload.
#[derive(Clone, Debug, PartialEq)]
pub struct Publish {
    pub kind: MessageType,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// An NCMD, as [`parse_ncmd`] reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCommand {
    /// `Node Control/Rebirth` = true was among the metrics.
    pub rebirth: bool,
    /// The other metrics, which secsgate does not act on (their names, `alias N` for unnamed
    /// ones), to log.
    pub ignored: Vec<String>,
}

/// Reads an NCMD payload. Never panics: bytes that are no protobuf payload, or a payload with
/// no metric, are an error.
pub fn parse_ncmd(bytes: &[u8]) -> Result<NodeCommand, Error> {
    let payload = proto::Payload::decode(bytes).map_err(|e| Error::Decode(e.to_string()))?;
    if payload.metrics.is_empty() {
        return Err(Error::EmptyCommand);
    }
    let mut command = NodeCommand::default();
    for metric in &payload.metrics {
        let name = match (&metric.name, metric.alias) {
            (Some(name), _) => name.clone(),
            (None, Some(alias)) => format!("alias {alias}"),
            (None, None) => "(no name)".to_string(),
        };
        match (name.as_str(), &metric.value) {
            (METRIC_REBIRTH, Some(proto::metric::Value::BooleanValue(b))) => {
                command.rebirth |= *b;
            }
            _ => command.ignored.push(name),
        }
    }
    Ok(command)
}

/// A value as last given for a device, with the time it last changed.
#[derive(Clone, Debug, PartialEq)]
struct Stored {
    value: MetricValue,
    timestamp: u64,
}

#[derive(Debug, Default)]
struct Device {
    metrics: BTreeMap<String, Stored>,
    /// A DBIRTH was published in the current session.
    born: bool,
}

/// One Sparkplug edge node's session state, sans-IO: bdSeq, seq, and what each device last
/// announced. See the module documentation for the order of calls.
#[derive(Debug)]
pub struct Node {
    topics: Topics,
    /// bdSeq of the current (or last) MQTT session.
    bd_seq: u8,
    /// bdSeq the next [`Node::connecting`] uses.
    next_bd_seq: u8,
    /// seq of the next message of the session.
    seq: u8,
    /// NBIRTH published and the session not lost since.
    online: bool,
    devices: BTreeMap<String, Device>,
}

impl Node {
    /// A node publishing on `topics` whose first MQTT session uses bdSeq `bd_seq_start` (the
    /// [`Node::next_bd_seq`] the previous process persisted; 0 the very first time).
    pub fn new(topics: Topics, bd_seq_start: u8) -> Node {
        Node {
            topics,
            bd_seq: bd_seq_start,
            next_bd_seq: bd_seq_start,
            seq: 0,
            online: false,
            devices: BTreeMap::new(),
        }
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The bdSeq of the current MQTT session (of the next one before the first
    /// [`Node::connecting`]).
    pub fn bd_seq(&self) -> u8 {
        self.bd_seq
    }

    /// The bdSeq the next [`Node::connecting`] will use: the value to persist after each
    /// `connecting`, so a restarted process never reuses the bdSeq of a will a broker may
    /// still hold.
    pub fn next_bd_seq(&self) -> u8 {
        self.next_bd_seq
    }

    /// The seq the next message of the session will carry.
    pub fn next_seq(&self) -> u8 {
        self.seq
    }

    /// NBIRTH published and the session not lost since.
    pub fn is_online(&self) -> bool {
        self.online
    }

    /// The devices the node knows (born, or waiting for the next session's births).
    pub fn devices(&self) -> impl Iterator<Item = &str> {
        self.devices.keys().map(String::as_str)
    }

    /// Call before every MQTT CONNECT (the first and each reconnect): starts a new session with
    /// the next bdSeq (mod 256), offline until [`Node::connected`], and returns its NDEATH to
    /// give as the CONNECT's Last Will (QoS 1, not retained).
    pub fn connecting(&mut self, now_ms: u64) -> Publish {
        self.bd_seq = self.next_bd_seq;
        self.next_bd_seq = self.bd_seq.wrapping_add(1);
        self.disconnected();
        self.ndeath(now_ms)
    }

    /// The NDEATH of the current session: the Last Will, and what to publish before a clean
    /// DISCONNECT (which does not fire the will). Its only metric is `bdSeq`; it has no seq.
    pub fn ndeath(&self, now_ms: u64) -> Publish {
        let payload = proto::Payload {
            timestamp: Some(now_ms),
            metrics: vec![MetricValue::UInt64(self.bd_seq.into()).to_proto(METRIC_BD_SEQ, now_ms)],
            ..Default::default()
        };
        Publish {
            kind: MessageType::NDeath,
            topic: self.topics.node(MessageType::NDeath),
            payload: payload.encode_to_vec(),
        }
    }

    /// The MQTT session is lost: publish nothing more until the next [`Node::connecting`] and
    /// [`Node::connected`]; device values keep being tracked.
    pub fn disconnected(&mut self) {
        self.online = false;
        for device in self.devices.values_mut() {
            device.born = false;
        }
    }

    /// The broker accepted the CONNECT (and NCMD is subscribed): the NBIRTH (seq 0, this
    /// session's bdSeq) then a DBIRTH for every known device with its current values.
    pub fn connected(&mut self, now_ms: u64) -> Vec<Publish> {
        self.online = true;
        self.births(now_ms)
    }

    /// A host asked for a rebirth: while online, the NBIRTH again (same bdSeq, seq back to 0)
    /// then every device's DBIRTH with its current values; offline, nothing (the next
    /// [`Node::connected`] births everything anyway).
    pub fn rebirth(&mut self, now_ms: u64) -> Vec<Publish> {
        if !self.online {
            return Vec::new();
        }
        self.births(now_ms)
    }

    /// Handles an NCMD payload: a rebirth request gives [`Node::rebirth`]'s messages, any
    /// other command nothing ([`parse_ncmd`] for what was ignored).
    pub fn handle_ncmd(&mut self, payload: &[u8], now_ms: u64) -> Result<Vec<Publish>, Error> {
        let command = parse_ncmd(payload)?;
        Ok(if command.rebirth {
            self.rebirth(now_ms)
        } else {
            Vec::new()
        })
    }

    /// Equipment `device` is online with these metrics (the full set, path → tag value): its
    /// DBIRTH, after an NDATA of the new equipment count when the device is new. Offline, the
    /// values are kept for the next session's births and nothing is returned.
    pub fn birth<K, V>(
        &mut self,
        device: &str,
        metrics: impl IntoIterator<Item = (K, V)>,
        now_ms: u64,
    ) -> Result<Vec<Publish>, Error>
    where
        K: AsRef<str>,
        V: Borrow<Value>,
    {
        validate_id("device_id", device)?;
        let metrics = metrics
            .into_iter()
            .map(|(name, value)| {
                let value = MetricValue::from_json(value.borrow());
                (
                    name.as_ref().to_string(),
                    Stored {
                        value,
                        timestamp: now_ms,
                    },
                )
            })
            .collect();
        let is_new = !self.devices.contains_key(device);
        self.devices.insert(
            device.to_string(),
            Device {
                metrics,
                born: false,
            },
        );
        let mut out = Vec::new();
        if self.online {
            if is_new {
                out.push(self.equipment_count_ndata(now_ms));
            }
            out.push(self.dbirth(device, now_ms));
        }
        Ok(out)
    }

    /// The current values of equipment `device` (the full set, path → tag value), diffed
    /// against what was last given: nothing when nothing changed; a DDATA with only the changed
    /// metrics; or a DBIRTH with every metric when the set changed (a metric appeared or went
    /// away, or a metric's datatype changed), as a DBIRTH must announce every metric. A device
    /// not yet born gets its DBIRTH (as [`Node::birth`]). Offline, the values are kept for the
    /// next session's births and nothing is returned.
    pub fn update<K, V>(
        &mut self,
        device: &str,
        metrics: impl IntoIterator<Item = (K, V)>,
        now_ms: u64,
    ) -> Result<Vec<Publish>, Error>
    where
        K: AsRef<str>,
        V: Borrow<Value>,
    {
        validate_id("device_id", device)?;
        let Some(known) = self.devices.get_mut(device) else {
            return self.birth(device, metrics, now_ms);
        };
        let mut next = BTreeMap::new();
        let mut changed = Vec::new();
        let mut reshaped = false;
        for (name, value) in metrics {
            let name = name.as_ref();
            let value = MetricValue::from_json(value.borrow());
            let stored = match known.metrics.get(name) {
                Some(old) if old.value == value => old.clone(),
                Some(old) => {
                    reshaped |= old.value.datatype() != value.datatype();
                    changed.push(name.to_string());
                    Stored {
                        value,
                        timestamp: now_ms,
                    }
                }
                None => {
                    reshaped = true;
                    Stored {
                        value,
                        timestamp: now_ms,
                    }
                }
            };
            next.insert(name.to_string(), stored);
        }
        reshaped |= known.metrics.keys().any(|name| !next.contains_key(name));
        known.metrics = next;
        let born = known.born;
        // In name order, as the births list them.
        changed.sort_unstable();
        changed.dedup();
        let data: Vec<proto::Metric> = changed
            .iter()
            .map(|name| {
                let stored = &known.metrics[name];
                stored.value.to_proto(name, stored.timestamp)
            })
            .collect();
        if !self.online {
            return Ok(Vec::new());
        }
        if reshaped || !born {
            return Ok(vec![self.dbirth(device, now_ms)]);
        }
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let seq = self.take_seq();
        Ok(vec![self.publish(
            MessageType::DData,
            Some(device),
            now_ms,
            Some(seq),
            data,
        )])
    }

    /// Equipment `device` is gone (removed or disabled): its DDEATH, then an NDATA of the new
    /// equipment count; its metrics are forgotten. An unknown device gives nothing.
    pub fn death(&mut self, device: &str, now_ms: u64) -> Result<Vec<Publish>, Error> {
        validate_id("device_id", device)?;
        let Some(gone) = self.devices.remove(device) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if self.online {
            if gone.born {
                let seq = self.take_seq();
                out.push(self.publish(
                    MessageType::DDeath,
                    Some(device),
                    now_ms,
                    Some(seq),
                    Vec::new(),
                ));
            }
            out.push(self.equipment_count_ndata(now_ms));
        }
        Ok(out)
    }

    fn take_seq(&mut self) -> u8 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        seq
    }

    /// NBIRTH with seq 0, then every device's DBIRTH.
    fn births(&mut self, now_ms: u64) -> Vec<Publish> {
        self.seq = 0;
        let seq = self.take_seq();
        let metrics = vec![
            MetricValue::UInt64(self.bd_seq.into()).to_proto(METRIC_BD_SEQ, now_ms),
            MetricValue::Boolean(false).to_proto(METRIC_REBIRTH, now_ms),
            MetricValue::String(env!("CARGO_PKG_VERSION").to_string())
                .to_proto(METRIC_VERSION, now_ms),
            self.equipment_count_metric(now_ms),
        ];
        let mut out = vec![self.publish(MessageType::NBirth, None, now_ms, Some(seq), metrics)];
        let names: Vec<String> = self.devices.keys().cloned().collect();
        for name in names {
            out.push(self.dbirth(&name, now_ms));
        }
        out
    }

    /// The DBIRTH of a known device: every metric with datatype, value and its time.
    fn dbirth(&mut self, device: &str, now_ms: u64) -> Publish {
        let seq = self.take_seq();
        // Callers pass a device they just stored or listed, so it is always there.
        let metrics = match self.devices.get_mut(device) {
            Some(known) => {
                known.born = true;
                known
                    .metrics
                    .iter()
                    .map(|(name, stored)| stored.value.to_proto(name, stored.timestamp))
                    .collect()
            }
            None => Vec::new(),
        };
        self.publish(
            MessageType::DBirth,
            Some(device),
            now_ms,
            Some(seq),
            metrics,
        )
    }

    fn equipment_count_metric(&self, now_ms: u64) -> proto::Metric {
        MetricValue::UInt64(self.devices.len() as u64).to_proto(METRIC_EQUIPMENT_COUNT, now_ms)
    }

    fn equipment_count_ndata(&mut self, now_ms: u64) -> Publish {
        let seq = self.take_seq();
        let metrics = vec![self.equipment_count_metric(now_ms)];
        self.publish(MessageType::NData, None, now_ms, Some(seq), metrics)
    }

    /// Encodes one message. Device IDs reaching here were validated by the public entry points.
    fn publish(
        &self,
        kind: MessageType,
        device: Option<&str>,
        now_ms: u64,
        seq: Option<u8>,
        metrics: Vec<proto::Metric>,
    ) -> Publish {
        let topic = match device {
            Some(device) => format!("{}/{device}", self.topics.node(kind)),
            None => self.topics.node(kind),
        };
        let payload = proto::Payload {
            timestamp: Some(now_ms),
            metrics,
            seq: seq.map(u64::from),
            ..Default::default()
        };
        Publish {
            kind,
            topic,
            payload: payload.encode_to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::metric::Value as V;
    use serde_json::json;

    const T0: u64 = 1_700_000_000_000;

    fn topics() -> Topics {
        Topics::new("secsgate", "gw1").unwrap()
    }

    fn decode(p: &Publish) -> proto::Payload {
        proto::Payload::decode(p.payload.as_slice()).unwrap()
    }

    fn names(p: &Publish) -> Vec<String> {
        decode(p)
            .metrics
            .iter()
            .map(|m| m.name.clone().unwrap())
            .collect()
    }

    fn value(p: &Publish, name: &str) -> MetricValue {
        let payload = decode(p);
        let metric = payload
            .metrics
            .iter()
            .find(|m| m.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no metric {name} in {:?}", p.kind));
        MetricValue::from_proto(metric).unwrap()
    }

    fn seq(p: &Publish) -> Option<u64> {
        decode(p).seq
    }

    fn kinds(out: &[Publish]) -> Vec<MessageType> {
        out.iter().map(|p| p.kind).collect()
    }

    fn equipment(received: i64) -> serde_json::Map<String, Value> {
        let Value::Object(map) = json!({
            "Status": "Communicating",
            "Enabled": true,
            "MessagesReceived": received,
        }) else {
            unreachable!()
        };
        map
    }

    /// A node online (NBIRTH sent) with device Equip1 born; returns the births.
    fn online(bd_seq_start: u8) -> (Node, Vec<Publish>) {
        let mut node = Node::new(topics(), bd_seq_start);
        node.connecting(T0);
        let births = node.connected(T0);
        assert_eq!(kinds(&births), [MessageType::NBirth]);
        (node, births)
    }

    #[test]
    fn field_numbers_on_the_wire() {
        let payload = proto::Payload {
            timestamp: Some(1),
            seq: Some(2),
            ..Default::default()
        };
        // timestamp: field 1 varint (0x08); seq: field 3 varint (0x18).
        assert_eq!(payload.encode_to_vec(), [0x08, 0x01, 0x18, 0x02]);
        let metric = proto::Metric {
            name: Some("a".into()),
            alias: Some(3),
            timestamp: Some(4),
            datatype: Some(DataType::Int64 as u32),
            is_null: Some(false),
            value: Some(V::LongValue(5)),
            ..Default::default()
        };
        assert_eq!(
            metric.encode_to_vec(),
            [
                0x0a, 0x01, b'a', 0x10, 0x03, 0x18, 0x04, 0x20, 0x04, 0x38, 0x00, 0x58, 0x05
            ]
        );
        let cases: [(V, &[u8]); 7] = [
            (V::IntValue(1), &[0x50, 0x01]),
            (V::LongValue(1), &[0x58, 0x01]),
            (V::FloatValue(0.0), &[0x65, 0, 0, 0, 0]),
            (V::DoubleValue(0.0), &[0x69, 0, 0, 0, 0, 0, 0, 0, 0]),
            (V::BooleanValue(true), &[0x70, 0x01]),
            (V::StringValue("x".into()), &[0x7a, 0x01, b'x']),
            (V::BytesValue(vec![9]), &[0x82, 0x01, 0x01, 0x09]),
        ];
        for (value, bytes) in cases {
            let metric = proto::Metric {
                value: Some(value),
                ..Default::default()
            };
            assert_eq!(metric.encode_to_vec(), bytes);
        }
        // A metric in a payload is field 2, length-delimited.
        let payload = proto::Payload {
            metrics: vec![proto::Metric::default()],
            ..Default::default()
        };
        assert_eq!(payload.encode_to_vec(), [0x12, 0x00]);
    }

    #[test]
    fn datatype_numbers() {
        let expected = [
            (DataType::Int8, 1),
            (DataType::Int64, 4),
            (DataType::UInt64, 8),
            (DataType::Float, 9),
            (DataType::Double, 10),
            (DataType::Boolean, 11),
            (DataType::String, 12),
            (DataType::DateTime, 13),
            (DataType::Text, 14),
            (DataType::Bytes, 17),
            (DataType::PropertySetList, 21),
        ];
        for (datatype, n) in expected {
            assert_eq!(datatype as u32, n);
            assert_eq!(DataType::from_u32(n), Some(datatype));
        }
        for n in 0..22 {
            assert_eq!(DataType::from_u32(n).map(|d| d as u32), Some(n));
        }
        assert_eq!(DataType::from_u32(22), None);
    }

    #[test]
    fn payload_round_trip() {
        let payload = proto::Payload {
            timestamp: Some(T0),
            seq: Some(255),
            uuid: Some("u".into()),
            body: Some(vec![1, 2, 3]),
            metrics: vec![
                proto::Metric {
                    name: Some("i".into()),
                    alias: Some(7),
                    timestamp: Some(T0),
                    datatype: Some(DataType::Int32 as u32),
                    is_historical: Some(true),
                    is_transient: Some(false),
                    value: Some(V::IntValue(u32::MAX)),
                    ..Default::default()
                },
                MetricValue::Int64(-1).to_proto("neg", T0),
                MetricValue::UInt64(u64::MAX).to_proto("big", T0),
                MetricValue::Double(-2.5).to_proto("d", T0),
                MetricValue::Boolean(true).to_proto("b", T0),
                MetricValue::String("é/ü".into()).to_proto("s", T0),
                MetricValue::Null.to_proto("n", T0),
                proto::Metric {
                    name: Some("f".into()),
                    value: Some(V::FloatValue(1.5)),
                    ..Default::default()
                },
                proto::Metric {
                    name: Some("bytes".into()),
                    value: Some(V::BytesValue(vec![0, 255])),
                    ..Default::default()
                },
            ],
        };
        let bytes = payload.encode_to_vec();
        assert_eq!(proto::Payload::decode(bytes.as_slice()).unwrap(), payload);
        // Int64 travels as two's complement.
        assert_eq!(payload.metrics[1].value, Some(V::LongValue(u64::MAX)));
        assert_eq!(payload.metrics[6].is_null, Some(true));
        assert_eq!(payload.metrics[6].value, None);
        assert_eq!(payload.metrics[6].datatype, Some(DataType::String as u32));
    }

    #[test]
    fn json_values_map_to_datatypes() {
        let cases = [
            (json!(true), MetricValue::Boolean(true), DataType::Boolean),
            (json!(42), MetricValue::Int64(42), DataType::Int64),
            (json!(-42), MetricValue::Int64(-42), DataType::Int64),
            (
                json!(i64::MIN),
                MetricValue::Int64(i64::MIN),
                DataType::Int64,
            ),
            (
                json!(i64::MAX as u64 + 1),
                MetricValue::UInt64(i64::MAX as u64 + 1),
                DataType::UInt64,
            ),
            (json!(0.25), MetricValue::Double(0.25), DataType::Double),
            (
                json!("On"),
                MetricValue::String("On".into()),
                DataType::String,
            ),
            (json!(null), MetricValue::Null, DataType::String),
            (
                json!([1, "a", [true]]),
                MetricValue::String(r#"[1,"a",[true]]"#.into()),
                DataType::String,
            ),
            (
                json!({"k": [1.5]}),
                MetricValue::String(r#"{"k":[1.5]}"#.into()),
                DataType::String,
            ),
        ];
        for (json, value, datatype) in cases {
            let mapped = MetricValue::from_json(&json);
            assert_eq!(mapped, value, "{json}");
            assert_eq!(mapped.datatype(), datatype, "{json}");
            let metric = mapped.to_proto("m", T0);
            assert_eq!(metric.datatype, Some(datatype as u32));
            assert_eq!(metric.timestamp, Some(T0));
            assert_eq!(MetricValue::from_proto(&metric), Some(value));
        }
        // A value in the wrong field for its datatype is not read as that datatype.
        let odd = proto::Metric {
            datatype: Some(DataType::Boolean as u32),
            value: Some(V::StringValue("true".into())),
            ..Default::default()
        };
        assert_eq!(MetricValue::from_proto(&odd), None);
    }

    #[test]
    fn topics_follow_the_namespace() {
        let t = topics();
        assert_eq!(t.node(MessageType::NBirth), "spBv1.0/secsgate/NBIRTH/gw1");
        assert_eq!(t.node(MessageType::NDeath), "spBv1.0/secsgate/NDEATH/gw1");
        assert_eq!(t.ncmd(), "spBv1.0/secsgate/NCMD/gw1");
        assert_eq!(
            t.device(MessageType::DBirth, "Equip 4").unwrap(),
            "spBv1.0/secsgate/DBIRTH/gw1/Equip 4"
        );
        assert_eq!(
            t.device(MessageType::DData, "E").unwrap(),
            "spBv1.0/secsgate/DDATA/gw1/E"
        );
        assert_eq!(
            t.device(MessageType::DDeath, "E").unwrap(),
            "spBv1.0/secsgate/DDEATH/gw1/E"
        );
        assert!(MessageType::DData.is_device() && !MessageType::NData.is_device());
    }

    #[test]
    fn ids_that_cannot_be_topic_levels_are_rejected() {
        for bad in ["a/b", "a+b", "#", "a\0b"] {
            let err = Topics::new(bad, "gw1").unwrap_err();
            assert!(
                matches!(&err, Error::InvalidId { what: "group_id", value, .. } if value == bad)
            );
            assert!(
                err.to_string().contains("may not hold '/', '+', '#'"),
                "{err}"
            );
            assert!(Topics::new("g", bad).is_err());
            let mut node = Node::new(topics(), 0);
            let err = node.update(bad, equipment(1), T0).unwrap_err();
            assert!(matches!(
                err,
                Error::InvalidId {
                    what: "device_id",
                    ..
                }
            ));
            assert!(node.birth(bad, equipment(1), T0).is_err());
            assert!(node.death(bad, T0).is_err());
            assert_eq!(node.devices().count(), 0);
        }
        let err = Topics::new("", "gw1").unwrap_err();
        assert_eq!(err.to_string(), r#"sparkplug group_id "" is empty"#);
    }

    #[test]
    fn bd_seq_is_the_same_in_will_and_nbirth_and_new_per_session() {
        let mut node = Node::new(topics(), 41);
        assert_eq!(node.next_bd_seq(), 41);
        let will = node.connecting(T0);
        assert_eq!(will.kind, MessageType::NDeath);
        assert_eq!(will.topic, "spBv1.0/secsgate/NDEATH/gw1");
        assert_eq!(names(&will), [METRIC_BD_SEQ]);
        assert_eq!(value(&will, METRIC_BD_SEQ), MetricValue::UInt64(41));
        assert_eq!(seq(&will), None);
        assert_eq!(decode(&will).timestamp, Some(T0));
        assert_eq!(node.next_bd_seq(), 42, "what the caller persists");
        let births = node.connected(T0 + 1);
        assert_eq!(value(&births[0], METRIC_BD_SEQ), MetricValue::UInt64(41));
        assert_eq!(node.ndeath(T0 + 2).payload.len(), will.payload.len());
        assert_eq!(
            value(&node.ndeath(T0 + 2), METRIC_BD_SEQ),
            MetricValue::UInt64(41)
        );

        // The session is lost: the next CONNECT's will and NBIRTH carry 42.
        node.disconnected();
        let will = node.connecting(T0 + 3);
        assert_eq!(value(&will, METRIC_BD_SEQ), MetricValue::UInt64(42));
        let births = node.connected(T0 + 4);
        assert_eq!(value(&births[0], METRIC_BD_SEQ), MetricValue::UInt64(42));

        // A CONNECT that fails still used its bdSeq: the next attempt takes the next one.
        assert_eq!(
            value(&node.connecting(T0), METRIC_BD_SEQ),
            MetricValue::UInt64(43)
        );
        assert_eq!(
            value(&node.connecting(T0), METRIC_BD_SEQ),
            MetricValue::UInt64(44)
        );

        // A restarted process starts from the persisted value.
        let mut again = Node::new(topics(), node.next_bd_seq());
        assert_eq!(
            value(&again.connecting(T0), METRIC_BD_SEQ),
            MetricValue::UInt64(45)
        );
    }

    #[test]
    fn bd_seq_wraps_255_to_0() {
        let mut node = Node::new(topics(), 255);
        assert_eq!(
            value(&node.connecting(T0), METRIC_BD_SEQ),
            MetricValue::UInt64(255)
        );
        assert_eq!(node.next_bd_seq(), 0);
        assert_eq!(
            value(&node.connecting(T0), METRIC_BD_SEQ),
            MetricValue::UInt64(0)
        );
        let births = node.connected(T0);
        assert_eq!(value(&births[0], METRIC_BD_SEQ), MetricValue::UInt64(0));
    }

    #[test]
    fn nbirth_carries_the_node_metrics() {
        let mut node = Node::new(topics(), 3);
        node.birth("E1", equipment(1), T0).unwrap();
        node.birth("E2", equipment(2), T0).unwrap();
        node.connecting(T0);
        let births = node.connected(T0 + 5);
        assert_eq!(
            kinds(&births),
            [
                MessageType::NBirth,
                MessageType::DBirth,
                MessageType::DBirth
            ]
        );
        let nbirth = &births[0];
        assert_eq!(nbirth.topic, "spBv1.0/secsgate/NBIRTH/gw1");
        assert_eq!(seq(nbirth), Some(0));
        assert_eq!(decode(nbirth).timestamp, Some(T0 + 5));
        assert_eq!(
            names(nbirth),
            [
                METRIC_BD_SEQ,
                METRIC_REBIRTH,
                METRIC_VERSION,
                METRIC_EQUIPMENT_COUNT
            ]
        );
        assert_eq!(value(nbirth, METRIC_REBIRTH), MetricValue::Boolean(false));
        assert_eq!(
            value(nbirth, METRIC_VERSION),
            MetricValue::String(env!("CARGO_PKG_VERSION").into())
        );
        assert_eq!(
            value(nbirth, METRIC_EQUIPMENT_COUNT),
            MetricValue::UInt64(2)
        );
        assert_eq!(births[1].topic, "spBv1.0/secsgate/DBIRTH/gw1/E1");
        assert_eq!(births[2].topic, "spBv1.0/secsgate/DBIRTH/gw1/E2");
        assert_eq!((seq(&births[1]), seq(&births[2])), (Some(1), Some(2)));
        assert_eq!(node.next_seq(), 3);
    }

    #[test]
    fn dbirth_announces_every_metric_with_datatype_value_and_time() {
        let (mut node, _) = online(0);
        let out = node.birth("E1", equipment(7), T0 + 9).unwrap();
        assert_eq!(kinds(&out), [MessageType::NData, MessageType::DBirth]);
        assert_eq!(names(&out[0]), [METRIC_EQUIPMENT_COUNT]);
        assert_eq!(
            value(&out[0], METRIC_EQUIPMENT_COUNT),
            MetricValue::UInt64(1)
        );
        let dbirth = &out[1];
        assert_eq!(dbirth.topic, "spBv1.0/secsgate/DBIRTH/gw1/E1");
        assert_eq!((seq(&out[0]), seq(dbirth)), (Some(1), Some(2)));
        let payload = decode(dbirth);
        assert_eq!(payload.metrics.len(), 3);
        for metric in &payload.metrics {
            assert_eq!(metric.timestamp, Some(T0 + 9));
            assert!(metric.datatype.is_some() && metric.value.is_some());
        }
        assert_eq!(
            value(dbirth, "Status"),
            MetricValue::String("Communicating".into())
        );
        assert_eq!(value(dbirth, "Enabled"), MetricValue::Boolean(true));
        assert_eq!(value(dbirth, "MessagesReceived"), MetricValue::Int64(7));
        // A second birth of a known device is a DBIRTH alone.
        let out = node.birth("E1", equipment(8), T0).unwrap();
        assert_eq!(kinds(&out), [MessageType::DBirth]);
    }

    #[test]
    fn ddata_holds_only_the_changed_metrics() {
        let (mut node, _) = online(0);
        node.birth("E1", equipment(1), T0).unwrap();
        let mut tags = equipment(2);
        tags.insert("Status".into(), json!("Not Connected"));
        let out = node.update("E1", &tags, T0 + 10).unwrap();
        assert_eq!(kinds(&out), [MessageType::DData]);
        let ddata = &out[0];
        assert_eq!(ddata.topic, "spBv1.0/secsgate/DDATA/gw1/E1");
        assert_eq!(seq(ddata), Some(3));
        assert_eq!(names(ddata), ["MessagesReceived", "Status"]);
        assert_eq!(value(ddata, "MessagesReceived"), MetricValue::Int64(2));
        assert_eq!(
            value(ddata, "Status"),
            MetricValue::String("Not Connected".into())
        );
        for metric in decode(ddata).metrics {
            assert_eq!(metric.timestamp, Some(T0 + 10));
        }
        // Nothing changed: nothing to publish, seq untouched.
        assert!(node.update("E1", &tags, T0 + 11).unwrap().is_empty());
        assert_eq!(node.next_seq(), 4);
        // A value to null and back is a value change of a String metric.
        tags.insert("Status".into(), Value::Null);
        let out = node.update("E1", &tags, T0 + 12).unwrap();
        assert_eq!(kinds(&out), [MessageType::DData]);
        assert_eq!(value(&out[0], "Status"), MetricValue::Null);
    }

    #[test]
    fn a_name_given_twice_counts_once_the_last_value_wins() {
        let (mut node, _) = online(0);
        node.birth("E1", equipment(1), T0).unwrap();
        let tags = vec![
            ("MessagesReceived", json!(5)),
            ("Status", json!("Communicating")),
            ("Enabled", json!(true)),
            ("MessagesReceived", json!(6)),
        ];
        let out = node.update("E1", tags, T0).unwrap();
        assert_eq!(names(&out[0]), ["MessagesReceived"]);
        assert_eq!(value(&out[0], "MessagesReceived"), MetricValue::Int64(6));
    }

    #[test]
    fn only_the_will_asks_for_qos_1() {
        assert_eq!(MessageType::NDeath.qos(), 1);
        for kind in [
            MessageType::NBirth,
            MessageType::NData,
            MessageType::DBirth,
            MessageType::DData,
            MessageType::DDeath,
        ] {
            assert_eq!(kind.qos(), 0, "{kind:?}");
        }
    }

    #[test]
    fn a_new_metric_gives_a_dbirth() {
        let (mut node, _) = online(0);
        node.birth("E1", equipment(1), T0).unwrap();
        let mut tags = equipment(1);
        tags.insert("Messages/S6F11/4001/Body/0/1".into(), json!([1, "a"]));
        let out = node.update("E1", &tags, T0 + 20).unwrap();
        assert_eq!(kinds(&out), [MessageType::DBirth]);
        assert_eq!(names(&out[0]).len(), 4);
        assert_eq!(
            value(&out[0], "Messages/S6F11/4001/Body/0/1"),
            MetricValue::String(r#"[1,"a"]"#.into())
        );
        // Unchanged metrics keep the time they were last given at; the new one has now.
        let payload = decode(&out[0]);
        for metric in &payload.metrics {
            let expected = if metric.name.as_deref() == Some("Messages/S6F11/4001/Body/0/1") {
                T0 + 20
            } else {
                T0
            };
            assert_eq!(metric.timestamp, Some(expected));
        }
        // Then the same set again is no change.
        assert!(node.update("E1", &tags, T0 + 21).unwrap().is_empty());
    }

    #[test]
    fn a_datatype_change_gives_a_dbirth() {
        let (mut node, _) = online(0);
        node.birth("E1", equipment(1), T0).unwrap();
        let mut tags = equipment(1);
        tags.insert("MessagesReceived".into(), json!(1.5));
        let out = node.update("E1", &tags, T0).unwrap();
        assert_eq!(kinds(&out), [MessageType::DBirth]);
        assert_eq!(value(&out[0], "MessagesReceived"), MetricValue::Double(1.5));
        // Int64 to UInt64 is a datatype change too.
        tags.insert("MessagesReceived".into(), json!(u64::MAX));
        let out = node.update("E1", &tags, T0).unwrap();
        assert_eq!(kinds(&out), [MessageType::DBirth]);
    }

    #[test]
    fn a_metric_gone_gives_a_dbirth_without_it() {
        let (mut node, _) = online(0);
        node.birth("E1", equipment(1), T0).unwrap();
        let mut tags = equipment(1);
        tags.remove("Enabled");
        let out = node.update("E1", &tags, T0).unwrap();
        assert_eq!(kinds(&out), [MessageType::DBirth]);
        assert_eq!(names(&out[0]), ["MessagesReceived", "Status"]);
    }

    #[test]
    fn a_device_updated_before_its_birth_gets_a_dbirth() {
        let (mut node, _) = online(0);
        let out = node.update("E9", equipment(5), T0).unwrap();
        assert_eq!(kinds(&out), [MessageType::NData, MessageType::DBirth]);
        assert_eq!(value(&out[1], "MessagesReceived"), MetricValue::Int64(5));
        let out = node.update("E9", equipment(6), T0).unwrap();
        assert_eq!(kinds(&out), [MessageType::DData]);
    }

    #[test]
    fn ddeath_forgets_the_device() {
        let (mut node, _) = online(0);
        node.birth("E1", equipment(1), T0).unwrap();
        node.birth("E2", equipment(1), T0).unwrap();
        let out = node.death("E1", T0 + 30).unwrap();
        assert_eq!(kinds(&out), [MessageType::DDeath, MessageType::NData]);
        let ddeath = &out[0];
        assert_eq!(ddeath.topic, "spBv1.0/secsgate/DDEATH/gw1/E1");
        assert_eq!(seq(ddeath), Some(5));
        assert_eq!(decode(ddeath).timestamp, Some(T0 + 30));
        assert!(decode(ddeath).metrics.is_empty());
        assert_eq!(
            value(&out[1], METRIC_EQUIPMENT_COUNT),
            MetricValue::UInt64(1)
        );
        assert_eq!(node.devices().collect::<Vec<_>>(), ["E2"]);
        // Dead twice: nothing.
        assert!(node.death("E1", T0).unwrap().is_empty());
        // Back: a full DBIRTH, not a DDATA against forgotten values.
        let out = node.update("E1", equipment(1), T0).unwrap();
        assert_eq!(kinds(&out), [MessageType::NData, MessageType::DBirth]);
        // A rebirth no longer names a dead device.
        node.death("E2", T0).unwrap();
        let births = node.rebirth(T0);
        assert_eq!(kinds(&births), [MessageType::NBirth, MessageType::DBirth]);
        assert_eq!(births[1].topic, "spBv1.0/secsgate/DBIRTH/gw1/E1");
    }

    #[test]
    fn seq_wraps_255_to_0() {
        let (mut node, _) = online(0);
        node.birth("E1", equipment(0), T0).unwrap(); // NDATA 1, DBIRTH 2
        let mut seqs = Vec::new();
        for i in 1..=300 {
            let out = node.update("E1", equipment(i), T0).unwrap();
            assert_eq!(kinds(&out), [MessageType::DData]);
            seqs.push(seq(&out[0]).unwrap());
        }
        let expected: Vec<u64> = (3..303).map(|n| n % 256).collect();
        assert_eq!(seqs, expected);
        assert!(seqs.contains(&255) && seqs.contains(&0));
        let at = seqs.iter().position(|&s| s == 255).unwrap();
        assert_eq!(seqs[at + 1], 0);
    }

    #[test]
    fn rebirth_republishes_nbirth_with_the_same_bd_seq_then_every_dbirth() {
        let mut node = Node::new(topics(), 9);
        node.connecting(T0);
        node.connected(T0);
        node.birth("E1", equipment(1), T0).unwrap();
        node.birth("E2", equipment(1), T0).unwrap();
        node.update("E1", equipment(2), T0 + 1).unwrap();
        let request = proto::Payload {
            timestamp: Some(T0),
            metrics: vec![MetricValue::Boolean(true).to_proto(METRIC_REBIRTH, T0)],
            ..Default::default()
        };
        let command = parse_ncmd(&request.encode_to_vec()).unwrap();
        assert_eq!(
            command,
            NodeCommand {
                rebirth: true,
                ignored: vec![]
            }
        );
        let out = node.handle_ncmd(&request.encode_to_vec(), T0 + 50).unwrap();
        assert_eq!(
            kinds(&out),
            [
                MessageType::NBirth,
                MessageType::DBirth,
                MessageType::DBirth
            ]
        );
        assert_eq!(value(&out[0], METRIC_BD_SEQ), MetricValue::UInt64(9));
        assert_eq!(
            out.iter().map(seq).collect::<Vec<_>>(),
            [Some(0), Some(1), Some(2)]
        );
        assert_eq!(value(&out[1], "MessagesReceived"), MetricValue::Int64(2));
        assert_eq!(value(&out[2], "MessagesReceived"), MetricValue::Int64(1));
        assert_eq!(node.bd_seq(), 9);
        // Updates go on from the reset seq.
        let out = node.update("E1", equipment(3), T0).unwrap();
        assert_eq!(seq(&out[0]), Some(3));
        // Rebirth = false, or other metrics, publish nothing.
        let other = proto::Payload {
            metrics: vec![
                MetricValue::Boolean(false).to_proto(METRIC_REBIRTH, T0),
                MetricValue::Boolean(true).to_proto("Node Control/Reboot", T0),
                proto::Metric {
                    alias: Some(4),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            parse_ncmd(&other.encode_to_vec()).unwrap(),
            NodeCommand {
                rebirth: false,
                ignored: vec!["Node Control/Reboot".into(), "alias 4".into()]
            }
        );
        assert!(
            node.handle_ncmd(&other.encode_to_vec(), T0)
                .unwrap()
                .is_empty()
        );
        // Offline, a rebirth waits for the next session's births.
        node.disconnected();
        assert!(
            node.handle_ncmd(&request.encode_to_vec(), T0)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_new_session_births_everything_again_with_current_values() {
        let (mut node, _) = online(200);
        node.birth("E1", equipment(1), T0).unwrap();
        node.update("E1", equipment(2), T0).unwrap();
        node.disconnected();
        assert!(!node.is_online());
        // While offline: values are tracked, nothing is published.
        assert!(node.update("E1", equipment(3), T0 + 1).unwrap().is_empty());
        assert!(node.birth("E2", equipment(10), T0 + 1).unwrap().is_empty());
        assert!(node.death("E3", T0).unwrap().is_empty());
        let will = node.connecting(T0 + 2);
        assert_eq!(value(&will, METRIC_BD_SEQ), MetricValue::UInt64(201));
        let out = node.connected(T0 + 3);
        assert_eq!(
            kinds(&out),
            [
                MessageType::NBirth,
                MessageType::DBirth,
                MessageType::DBirth
            ]
        );
        assert_eq!(value(&out[0], METRIC_BD_SEQ), MetricValue::UInt64(201));
        assert_eq!(
            value(&out[0], METRIC_EQUIPMENT_COUNT),
            MetricValue::UInt64(2)
        );
        assert_eq!(seq(&out[0]), Some(0));
        assert_eq!(value(&out[1], "MessagesReceived"), MetricValue::Int64(3));
        assert_eq!(value(&out[2], "MessagesReceived"), MetricValue::Int64(10));
        let out = node.update("E1", equipment(4), T0).unwrap();
        assert_eq!(kinds(&out), [MessageType::DData]);
        assert_eq!(seq(&out[0]), Some(3));
    }

    #[test]
    fn garbage_ncmd_is_rejected() {
        let (mut node, _) = online(0);
        for garbage in [
            &b""[..],
            &[0xff, 0xff, 0xff],
            &[0x12, 0x05, 0x0a],
            b"{\"rebirth\": true}",
            &[0x12, 0x02, 0x70, 0x01], // a metric with boolean true but no name
        ] {
            let result = parse_ncmd(garbage);
            if garbage == [0x12, 0x02, 0x70, 0x01] {
                assert_eq!(
                    result,
                    Ok(NodeCommand {
                        rebirth: false,
                        ignored: vec!["(no name)".into()]
                    })
                );
            } else {
                assert!(result.is_err(), "{garbage:?}");
            }
            assert!(
                node.handle_ncmd(garbage, T0)
                    .map_or(true, |out| out.is_empty())
            );
        }
        assert_eq!(parse_ncmd(b""), Err(Error::EmptyCommand));
        assert!(matches!(parse_ncmd(&[0xff]), Err(Error::Decode(_))));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_ncmd_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(command) = parse_ncmd(&bytes) {
                // A command that parses named at least one metric.
                proptest::prop_assert!(command.rebirth || !command.ignored.is_empty());
            }
            let mut node = Node::new(topics(), 0);
            node.connecting(T0);
            node.connected(T0);
            if let Ok(out) = node.handle_ncmd(&bytes, T0) {
                proptest::prop_assert!(out.is_empty() || out[0].kind == MessageType::NBirth);
            }
        }

        #[test]
        fn integers_survive_the_wire(n in proptest::prelude::any::<i64>(), u in proptest::prelude::any::<u64>()) {
            for json in [json!(n), json!(u)] {
                let value = MetricValue::from_json(&json);
                let bytes = value.to_proto("m", T0).encode_to_vec();
                let back = proto::Metric::decode(bytes.as_slice()).unwrap();
                let back = MetricValue::from_proto(&back).unwrap();
                let as_json = match back {
                    MetricValue::Int64(i) => json!(i),
                    MetricValue::UInt64(u) => json!(u),
                    other => panic!("{other:?}"),
                };
                proptest::prop_assert_eq!(as_json, json);
            }
        }
    }

    /// The payloads the Python interop test decodes with an independent Sparkplug decoder
    /// (python/tests/test_sparkplug_payloads.py): written to $SECSGATE_SPARKPLUG_SAMPLES when
    /// it is set, checked here either way.
    #[test]
    fn interop_samples() {
        let mut node = Node::new(topics(), 7);
        let ndeath = node.connecting(T0);
        let nbirth = node.connected(T0 + 1).remove(0);
        let tags = json!({
            "Status": "Communicating",
            "Enabled": true,
            "MessagesReceived": 42,
            "Offset": -5,
            "Big": u64::MAX,
            "Ratio": 0.25,
            "Missing": null,
            "Messages/S6F11/4001/Body/0/1": [1, "a"],
        });
        let Value::Object(mut tags) = tags else {
            unreachable!()
        };
        let out = node.birth("Equip4", &tags, T0 + 2).unwrap();
        let dbirth = out[1].clone();
        tags.insert("MessagesReceived".into(), json!(43));
        tags.insert("Ratio".into(), json!(0.5));
        let ddata = node.update("Equip4", &tags, T0 + 3).unwrap().remove(0);
        let ddeath = node.death("Equip4", T0 + 4).unwrap().remove(0);
        let samples = [
            ("NDEATH", &ndeath, None),
            ("NBIRTH", &nbirth, Some(0)),
            ("DBIRTH", &dbirth, Some(2)),
            ("DDATA", &ddata, Some(3)),
            ("DDEATH", &ddeath, Some(4)),
        ];
        for (kind, publish, expected_seq) in &samples {
            assert_eq!(publish.kind.as_str(), *kind);
            assert_eq!(seq(publish), *expected_seq);
        }
        assert_eq!(names(&dbirth).len(), 8);
        assert_eq!(names(&ddata), ["MessagesReceived", "Ratio"]);
        if let Some(dir) = std::env::var_os("SECSGATE_SPARKPLUG_SAMPLES") {
            let dir = std::path::PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (kind, publish, _) in &samples {
                std::fs::write(dir.join(format!("{kind}.bin")), &publish.payload).unwrap();
                std::fs::write(dir.join(format!("{kind}.topic")), &publish.topic).unwrap();
            }
        }
    }
}
