//! Northbound: the gateway's messages, statuses and tags on an MQTT broker, and requests from
//! any MQTT client sent on to the tools.
//!
//! Topics (`<prefix>` is `[mqtt] topic_prefix`, default `secsgate`; `<gateway>` is
//! `[gateway] name`):
//!
//! - `<prefix>/<gateway>/<equipment>/<SxFy>`: each message published (JSON, see
//!   [`message_payload`]);
//! - `<prefix>/<gateway>/<equipment>/status`: the equipment's status, retained;
//! - `<prefix>/<gateway>/status`: `{"online": true}` while the gateway is connected, retained;
//!   the broker publishes `{"online": false}` (the last will) when the gateway is gone. With
//!   Sparkplug on, the last will is the NDEATH instead;
//! - `<prefix>/<gateway>/<equipment>/request` (read when `commands = true`) and
//!   `.../response`: a message sent to the tool and its reply, matched by `correlationId`;
//! - with `[mqtt.sparkplug]`, the tags as Sparkplug B metrics ([`sparkplug`]).
//!
//! Every JSON publish carries `seq`, which counts up by one per publish of this gateway and
//! goes on across restarts, so a consumer can drop the duplicates QoS 1 may bring.
//!
//! Store and forward: a publish waits in memory while the broker keeps up; while it is away
//! (or slower than the equipment) publishes go to the forward queue on disk ([`forward`]),
//! bounded, and are sent in order when it is back. A publish leaves the queue only when the
//! broker acknowledged it (QoS 1) or it was written to the broker's socket (QoS 0). The SECS
//! side never waits on the broker: the feed from the gateway is drained into memory or onto
//! disk whatever the broker does.
//!
//! Two tasks: the MQTT client's event loop (reconnects with a back-off from 1 s doubling to
//! `reconnect_max`, default 30 s) and
//! the publisher, which owns the queues. The publisher never waits on the event loop (it only
//! uses the client's non-blocking calls); the event loop hands its events to the publisher
//! through a bounded channel.

pub mod forward;
pub mod sparkplug;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ClientError, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions,
    Outgoing as MqttOutgoing, QoS, TlsConfiguration, Transport,
};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{MqttSettings, check_topic_level};
use crate::feed::{FeedEvent, FeedMessage, PublisherStats};
use crate::gateway::Gateway;
use crate::secs2::{json as message_json, sml};
use crate::store::messages::timestamp_text;
use forward::{ForwardQueue, Outgoing};

/// Publishes in flight (sent, not yet acknowledged) at most.
const WINDOW: usize = 256;
/// Publishes held in memory before they go to disk while the broker lags.
const MEMORY_LIMIT: usize = 8192;
/// Feed events taken in one turn of the publisher.
const FEED_BATCH: usize = 512;
/// Requests from MQTT being carried out at once; more get a "busy" response.
const MAX_REQUESTS: usize = 64;
/// Sequence numbers reserved on disk at a time.
const SEQ_BLOCK: u64 = 100_000;
/// The largest packet sent or received (a SECS message can be large).
const MAX_PACKET: usize = 64 << 20;
/// The environment variable with the broker password.
pub const PASSWORD_ENV: &str = "SECSGATE_MQTT_PASSWORD";
/// The environment variable with the password MQTT requests carry.
pub const COMMAND_PASSWORD_ENV: &str = "SECSGATE_MQTT_COMMAND_PASSWORD";

/// The publisher cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NorthError {
    #[error(transparent)]
    Forward(#[from] forward::ForwardError),
    #[error("{0}")]
    Settings(String),
}

/// The running publisher.
pub struct North {
    stats: Arc<PublisherStats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    events: Option<JoinHandle<()>>,
}

impl North {
    /// Its counters.
    pub fn stats(&self) -> Arc<PublisherStats> {
        self.stats.clone()
    }

    /// Stops: what is in memory or in flight goes to the forward queue on disk, to be sent
    /// by the next run, and the client disconnects.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(mut events) = self.events.take() {
            // The event loop sends the goodbye and the DISCONNECT, then ends; a broker that
            // does not answer is not waited for long.
            if tokio::time::timeout(Duration::from_secs(2), &mut events)
                .await
                .is_err()
            {
                events.abort();
                let _ = events.await;
            }
        }
    }
}

/// The password MQTT requests must carry, if any (the environment first).
fn command_password(settings: &MqttSettings) -> Option<String> {
    std::env::var(COMMAND_PASSWORD_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .or_else(|| settings.command_password.clone())
}

/// Checks what would stop the publisher from starting: requests from a broker that is not
/// on loopback need a password, as the web console does.
pub fn check(settings: &MqttSettings) -> Result<(), NorthError> {
    if settings.commands && !settings.url.is_loopback() && command_password(settings).is_none() {
        let at = settings
            .url_at
            .as_deref()
            .map_or(String::new(), |a| format!("{a}: "));
        return Err(NorthError::Settings(format!(
            "{at}mqtt.commands: the broker {} is not on this machine, so requests from it need a password: set [mqtt] command_password or {COMMAND_PASSWORD_ENV}",
            settings.url
        )));
    }
    Ok(())
}

/// The MQTT options of a session.
fn options(settings: &MqttSettings, gateway_name: &str) -> Result<MqttOptions, NorthError> {
    let client_id = settings
        .client_id
        .clone()
        .unwrap_or_else(|| format!("secsgate-{gateway_name}"));
    let mut o = MqttOptions::new(client_id, settings.url.host.clone(), settings.url.port);
    o.set_keep_alive(settings.keep_alive)
        .set_clean_session(true)
        .set_inflight(WINDOW as u16)
        .set_request_channel_capacity(WINDOW + 1024)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some(user) = &settings.username {
        let password = std::env::var(PASSWORD_ENV).unwrap_or_default();
        o.set_credentials(user.clone(), password);
    }
    if settings.url.tls {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                NorthError::Settings(format!("mqtt: cannot read {}: {e}", path.display()))
            })
        };
        let ca = match &settings.ca_file {
            Some(path) => read(path)?,
            None => {
                read(std::path::Path::new("/etc/ssl/certs/ca-certificates.crt")).map_err(|e| {
                    NorthError::Settings(format!(
                        "{e} (the system's CA certificates); set [mqtt] ca_file"
                    ))
                })?
            }
        };
        let client_auth = match (&settings.client_cert, &settings.client_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        o.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

/// Topic names of one gateway.
#[derive(Clone, Debug)]
struct Topics {
    /// `<prefix>/<gateway>`.
    base: String,
}

impl Topics {
    fn equipment(&self, equipment: &str, leaf: &str) -> String {
        format!("{}/{equipment}/{leaf}", self.base)
    }

    fn gateway_status(&self) -> String {
        format!("{}/status", self.base)
    }

    fn requests(&self) -> String {
        format!("{}/+/request", self.base)
    }

    /// The equipment a request topic names.
    fn request_equipment<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(self.base.as_str())?
            .strip_prefix('/')?
            .strip_suffix("/request")
            .filter(|e| !e.is_empty() && !e.contains('/'))
    }
}

/// The JSON published for a message: `seq`, `gateway`, `equipment`, `timestamp` (UTC ISO
/// 8601 with milliseconds), `direction` ("Received" from the tool, "Sent" to it),
/// `streamFunction`, `messageName` (the SDL definition it matched, or null), `commonId`,
/// `txId`, `systemBytes` and `message` (`{"header": ..., "body": ...}`, the form scripts
/// see).
pub fn message_payload(seq: u64, gateway: &str, m: &FeedMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let head = json!({
        "seq": seq,
        "gateway": gateway,
        "equipment": m.equipment,
        "timestamp": timestamp_text(m.time_ms),
        "direction": m.direction.as_str(),
        "streamFunction": m.message.stream_function().to_string(),
        "messageName": m.message_name,
        "commonId": m.common_id,
        "txId": m.txid,
        "systemBytes": m.message.system_bytes,
    });
    // The head, then the message's JSON written directly (no second Value tree).
    let head = head.to_string();
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    out.extend_from_slice(b",\"message\":");
    out.extend_from_slice(message_json::message_to_json_string(&m.message).as_bytes());
    out.push(b'}');
    out
}

/// What the event loop task tells the publisher.
enum LinkEvent {
    /// Connected (CONNACK).
    Up,
    /// A publish went out with this packet ID (0 for QoS 0).
    Sent(u16),
    /// The broker acknowledged the publish with this packet ID.
    Acked(u16),
    /// The broker acknowledged a subscription.
    Subscribed,
    /// A publish from the broker (a request, or a Sparkplug command).
    Received { topic: String, payload: Vec<u8> },
    /// The connection is gone; the publisher answers with the last will of the next session
    /// once it has stopped publishing.
    Down {
        reason: String,
        done: oneshot::Sender<LastWill>,
    },
}

/// A request's outcome, for the response topic.
struct Response {
    equipment: String,
    body: Map<String, Value>,
}

/// Starts the publisher for a running gateway, fed by `feed` (the gateway's
/// [`crate::gateway::Gateway::take_feed`]).
pub async fn start(
    settings: &MqttSettings,
    gateway: Gateway,
    feed: mpsc::Receiver<FeedEvent>,
) -> Result<North, NorthError> {
    check(settings)?;
    let gateway_name = gateway.name().to_string();
    check_topic_level(&gateway_name)
        .map_err(|e| NorthError::Settings(format!("gateway.name: {e}")))?;
    for c in gateway.connections() {
        check_topic_level(c.name()).map_err(|e| {
            NorthError::Settings(format!(
                "equipment '{}' cannot be published on MQTT: its name {e}",
                c.name()
            ))
        })?;
    }
    let path = settings.forward_path.clone();
    let (limit, bytes) = (settings.forward_limit, settings.forward_bytes);
    let disk = tokio::task::spawn_blocking(move || ForwardQueue::open(&path, limit, bytes))
        .await
        .map_err(|e| NorthError::Settings(format!("forward queue: {e}")))??;
    let topics = Topics {
        base: format!("{}/{gateway_name}", settings.topic_prefix),
    };
    let node = if settings.sparkplug.enabled {
        let edge = settings
            .sparkplug
            .edge_node_id
            .clone()
            .unwrap_or_else(|| gateway_name.clone());
        let topics = sparkplug::Topics::new(&settings.sparkplug.group_id, &edge)
            .map_err(|e| NorthError::Settings(format!("mqtt.sparkplug: {e}")))?;
        let bd_seq = u8::try_from(disk.bd_seq()? % 256).unwrap_or(0);
        Some(sparkplug::Node::new(topics, bd_seq))
    } else {
        None
    };
    let (responses_tx, responses_rx) = mpsc::channel(MAX_REQUESTS);
    let mut publisher = Publisher::new(
        settings,
        gateway,
        Arc::from(gateway_name.as_str()),
        topics,
        disk,
        node,
        responses_tx,
    )?;
    let will = publisher.next_will();
    let mut opts = options(settings, &publisher.gateway_name)?;
    opts.set_last_will(will);
    let (client, eventloop) = AsyncClient::new(opts, WINDOW + 1024);
    let stats = publisher.stats.clone();
    let (link_tx, link_rx) = mpsc::channel(WINDOW * 2 + 64);
    let (stop_tx, stop_rx) = oneshot::channel();
    let url = settings.url.to_string();
    let events = tokio::spawn(run_events(eventloop, link_tx, url, settings.reconnect_max));
    publisher.client = Some(client);
    let task =
        tokio::spawn(async move { publisher.run(feed, link_rx, stop_rx, responses_rx).await });
    Ok(North {
        stats,
        stop: Some(stop_tx),
        task: Some(task),
        events: Some(events),
    })
}

/// Starts the publisher of a gateway whose project has `[mqtt]` on (`Ok(None)` when it is
/// off).
pub async fn start_if_on(
    settings: &MqttSettings,
    gateway: &Gateway,
) -> Result<Option<North>, NorthError> {
    match gateway.take_feed() {
        Some(feed) => start(settings, gateway.clone(), feed).await.map(Some),
        None => Ok(None),
    }
}

/// The MQTT client's event loop: connects, reconnects with back-off, and hands the events
/// the publisher needs to it.
async fn run_events(
    mut eventloop: EventLoop,
    link: mpsc::Sender<LinkEvent>,
    url: String,
    backoff_max: Duration,
) {
    let first = Duration::from_secs(1).min(backoff_max);
    let mut backoff = first;
    let mut down_since_logged = false;
    // Once the publisher has stopped, the loop only carries out what it left: its goodbye and
    // the DISCONNECT.
    let mut publisher_gone = false;
    loop {
        let polled = eventloop.poll().await;
        if publisher_gone {
            match polled {
                Ok(Event::Outgoing(MqttOutgoing::Disconnect)) | Err(_) => return,
                Ok(_) => continue,
            }
        }
        match polled {
            Ok(event) => {
                let out = match event {
                    Event::Incoming(Incoming::ConnAck(ack)) => {
                        if ack.code != rumqttc::ConnectReturnCode::Success {
                            continue;
                        }
                        backoff = first;
                        if down_since_logged {
                            info!(broker = %url, "MQTT broker reachable again");
                        } else {
                            info!(broker = %url, "connected to the MQTT broker");
                        }
                        down_since_logged = false;
                        Some(LinkEvent::Up)
                    }
                    Event::Incoming(Incoming::PubAck(ack)) => Some(LinkEvent::Acked(ack.pkid)),
                    Event::Incoming(Incoming::SubAck(_)) => Some(LinkEvent::Subscribed),
                    Event::Incoming(Incoming::Publish(p)) => Some(LinkEvent::Received {
                        topic: p.topic,
                        payload: p.payload.to_vec(),
                    }),
                    Event::Outgoing(MqttOutgoing::Publish(pkid)) => Some(LinkEvent::Sent(pkid)),
                    _ => None,
                };
                if let Some(out) = out
                    && link.send(out).await.is_err()
                {
                    publisher_gone = true;
                }
            }
            Err(e) => {
                if !down_since_logged {
                    warn!(broker = %url, "MQTT broker unreachable: {e}; publishes wait in the forward queue");
                    down_since_logged = true;
                }
                // Acknowledgements read in the same batch as the end of the connection are
                // still buffered: hand them on first, or those publishes go out twice.
                let buffered: Vec<Event> = eventloop.state.events.drain(..).collect();
                for event in buffered {
                    let out = match event {
                        Event::Incoming(Incoming::PubAck(ack)) => LinkEvent::Acked(ack.pkid),
                        Event::Outgoing(MqttOutgoing::Publish(pkid)) => LinkEvent::Sent(pkid),
                        _ => continue,
                    };
                    if link.send(out).await.is_err() {
                        return;
                    }
                }
                let (done, will) = oneshot::channel();
                if link
                    .send(LinkEvent::Down {
                        reason: e.to_string(),
                        done,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                // The publisher has stopped publishing: nothing from the lost session is sent
                // again by the client; the publisher sends it again itself, in order.
                let Ok(will) = will.await else {
                    return;
                };
                eventloop.clean();
                eventloop.pending.clear();
                eventloop.mqtt_options.set_last_will(will);
                if matches!(e, ConnectionError::RequestsDone) {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(backoff_max);
            }
        }
    }
}

/// A publish sent and not yet acknowledged.
struct InFlight {
    item: Outgoing,
    /// It is on disk (it leaves the disk when acknowledged).
    on_disk: bool,
    acked: bool,
}

/// The publisher: owns the memory and disk queues and the window of publishes in flight.
struct Publisher {
    settings: MqttSettings,
    qos: QoS,
    gateway: Gateway,
    gateway_name: Arc<str>,
    topics: Topics,
    client: Option<AsyncClient>,
    stats: Arc<PublisherStats>,
    connected: bool,
    disk: ForwardQueue,
    /// The highest sequence number on disk, and the highest read from disk into the window.
    disk_tail: Option<u64>,
    disk_cursor: Option<u64>,
    memory: VecDeque<Outgoing>,
    inflight: VecDeque<InFlight>,
    /// For each publish handed to the client, in order: the sequence number of a tracked one
    /// (`None`: a Sparkplug or status publish nobody waits for).
    handed: VecDeque<Option<u64>>,
    /// Packet ID -> sequence number of the QoS 1 publishes in flight.
    pkids: HashMap<u16, u64>,
    next_seq: u64,
    /// Publishes that are not queued (Sparkplug, the gateway's online status) waiting for
    /// room in the client's channel.
    untracked: VecDeque<(String, Vec<u8>, QoS, bool)>,
    node: Option<sparkplug::Node>,
    tags_version: u64,
    command_password: Option<String>,
    requests_running: Arc<AtomicU64>,
    responses_tx: mpsc::Sender<Response>,
    /// Drops since the last log line.
    dropped_unlogged: u64,
    /// Sequence numbers below this are reserved on disk.
    seq_reserved: u64,
    /// Subscriptions made and not yet acknowledged, in order.
    subscribing: VecDeque<String>,
}

impl Publisher {
    fn new(
        settings: &MqttSettings,
        gateway: Gateway,
        gateway_name: Arc<str>,
        topics: Topics,
        disk: ForwardQueue,
        node: Option<sparkplug::Node>,
        responses_tx: mpsc::Sender<Response>,
    ) -> Result<Publisher, NorthError> {
        // Sequence numbers go on from where the last run reserved them.
        let next_seq = disk.next_seq()?.max(disk.seq_reserved()?);
        let reserved = next_seq + SEQ_BLOCK;
        disk.reserve_seq(reserved)?;
        let stats = gateway.feed_stats().unwrap_or_default();
        stats.queued.store(disk.len(), Ordering::Relaxed);
        stats.queued_bytes.store(disk.bytes(), Ordering::Relaxed);
        if !disk.is_empty() {
            info!(
                publishes = disk.len(),
                file = %disk.path().display(),
                "MQTT: publishes left by the previous run will be sent first"
            );
        }
        let disk_tail = next_seq.checked_sub(1).filter(|_| !disk.is_empty());
        Ok(Publisher {
            qos: if settings.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            command_password: command_password(settings),
            settings: settings.clone(),
            gateway,
            gateway_name,
            topics,
            client: None,
            stats,
            connected: false,
            disk,
            disk_tail,
            disk_cursor: None,
            memory: VecDeque::new(),
            inflight: VecDeque::new(),
            handed: VecDeque::new(),
            pkids: HashMap::new(),
            next_seq,
            untracked: VecDeque::new(),
            node,
            tags_version: u64::MAX,
            requests_running: Arc::new(AtomicU64::new(0)),
            responses_tx,
            dropped_unlogged: 0,
            seq_reserved: reserved,
            subscribing: VecDeque::new(),
        })
    }

    /// The last will of the next session: the Sparkplug NDEATH, or the gateway's offline
    /// status.
    fn next_will(&mut self) -> LastWill {
        if let Some(node) = &mut self.node {
            let death = node.connecting(now_ms());
            if let Err(e) = self.disk.set_bd_seq(node.next_bd_seq().into()) {
                warn!("MQTT: cannot keep the Sparkplug bdSeq: {e}");
            }
            return LastWill::new(death.topic, death.payload, qos(death.kind.qos()), false);
        }
        LastWill::new(
            self.topics.gateway_status(),
            json!({"online": false, "gateway": &*self.gateway_name}).to_string(),
            QoS::AtLeastOnce,
            true,
        )
    }

    async fn run(
        mut self,
        mut feed: mpsc::Receiver<FeedEvent>,
        mut link: mpsc::Receiver<LinkEvent>,
        mut stop: oneshot::Receiver<()>,
        mut responses: mpsc::Receiver<Response>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(FEED_BATCH);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                event = link.recv() => match event {
                    Some(event) => self.link_event(event),
                    None => break,
                },
                Some(response) = responses.recv() => self.respond(response),
                n = feed.recv_many(&mut batch, FEED_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    for event in batch.drain(..) {
                        self.feed_event(event);
                    }
                }
                _ = tick.tick() => self.sparkplug_tick(),
            }
            self.after_turn();
        }
        // What the gateway handed on before it stopped is kept too.
        while let Ok(event) = feed.try_recv() {
            self.feed_event(event);
        }
        self.stop();
    }

    /// After each event: publish what the window allows, move to disk what must wait.
    fn after_turn(&mut self) {
        if self.connected {
            self.pump();
        }
        if !self.connected && !self.memory.is_empty() || self.memory.len() > MEMORY_LIMIT {
            self.spill();
        }
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.next_seq >= self.seq_reserved {
            self.seq_reserved = self.next_seq + SEQ_BLOCK;
            if let Err(e) = self.disk.reserve_seq(self.seq_reserved) {
                error!("MQTT: {e}");
            }
        }
        seq
    }

    /// Queues a publish whose payload is made from its sequence number.
    fn enqueue(&mut self, topic: String, retain: bool, payload: impl FnOnce(u64) -> Vec<u8>) {
        let seq = self.next_seq();
        let payload = payload(seq);
        self.memory.push_back(Outgoing {
            seq,
            topic,
            payload,
            retain,
        });
    }

    fn feed_event(&mut self, event: FeedEvent) {
        match event {
            FeedEvent::Message(m) => {
                let topic = self
                    .topics
                    .equipment(&m.equipment, &m.message.stream_function().to_string());
                let gateway = self.gateway_name.clone();
                self.enqueue(topic, false, |seq| message_payload(seq, &gateway, &m));
            }
            FeedEvent::Status {
                time_ms,
                equipment,
                status,
            } => {
                let topic = self.topics.equipment(&equipment, "status");
                let gateway = self.gateway_name.clone();
                self.enqueue(topic, true, |seq| {
                    json!({
                        "seq": seq,
                        "gateway": &*gateway,
                        "equipment": equipment,
                        "timestamp": timestamp_text(time_ms),
                        "status": status,
                    })
                    .to_string()
                    .into_bytes()
                });
            }
        }
    }

    fn client(&self) -> Option<&AsyncClient> {
        self.client.as_ref()
    }

    /// Hands a tracked publish to the client; false if its channel is full.
    fn hand(&mut self, item: &Outgoing) -> bool {
        let Some(client) = self.client() else {
            return false;
        };
        match client.try_publish(
            item.topic.clone(),
            self.qos,
            item.retain,
            item.payload.clone(),
        ) {
            Ok(()) => {
                self.handed.push_back(Some(item.seq));
                true
            }
            Err(ClientError::TryRequest(_)) | Err(ClientError::Request(_)) => false,
        }
    }

    /// Publishes from disk first, then memory, while the window has room.
    fn pump(&mut self) {
        // Untracked publishes (Sparkplug, the online status) go first: they describe the
        // session the queued ones are published in.
        while let Some((topic, payload, qos, retain)) = self.untracked.pop_front() {
            let Some(client) = self.client() else {
                break;
            };
            match client.try_publish(topic.clone(), qos, retain, payload.clone()) {
                Ok(()) => self.handed.push_back(None),
                Err(_) => {
                    self.untracked.push_front((topic, payload, qos, retain));
                    return;
                }
            }
        }
        while self.inflight.len() < WINDOW {
            let from_disk = self
                .disk_tail
                .is_some_and(|tail| self.disk_cursor.is_none_or(|c| c < tail));
            if from_disk {
                let want = WINDOW - self.inflight.len();
                let rows = match self.disk.read(self.disk_cursor, want) {
                    Ok(rows) => rows,
                    Err(e) => {
                        error!("MQTT: {e}");
                        return;
                    }
                };
                if rows.is_empty() {
                    self.disk_cursor = self.disk_tail;
                    continue;
                }
                for item in rows {
                    if !self.hand(&item) {
                        return;
                    }
                    self.disk_cursor = Some(item.seq);
                    self.inflight.push_back(InFlight {
                        item,
                        on_disk: true,
                        acked: false,
                    });
                }
            } else if let Some(item) = self.memory.pop_front() {
                if !self.hand(&item) {
                    self.memory.push_front(item);
                    return;
                }
                self.inflight.push_back(InFlight {
                    item,
                    on_disk: false,
                    acked: false,
                });
            } else {
                return;
            }
        }
    }

    /// Everything not acknowledged onto disk: what was in flight from memory, then what waits
    /// in memory (what was in flight from disk is still there).
    fn all_to_disk(&mut self) {
        let from_memory: Vec<Outgoing> = self
            .inflight
            .drain(..)
            .filter(|f| !f.on_disk && !f.acked)
            .map(|f| f.item)
            .collect();
        self.write_to_disk(&from_memory);
        self.spill();
    }

    /// Moves what waits in memory onto disk (the broker is away, or lags too far).
    fn spill(&mut self) {
        let items: Vec<Outgoing> = self.memory.drain(..).collect();
        self.write_to_disk(&items);
    }

    fn write_to_disk(&mut self, items: &[Outgoing]) {
        if items.is_empty() {
            return;
        }
        match self.disk.append(items) {
            Ok(dropped) => {
                if dropped > 0 {
                    self.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
                    if self.dropped_unlogged == 0 {
                        warn!(
                            dropped,
                            limit = self.settings.forward_limit,
                            bytes = self.settings.forward_bytes,
                            "MQTT: the forward queue is full; its oldest publishes are deleted"
                        );
                    }
                    self.dropped_unlogged += dropped;
                }
            }
            Err(e) => {
                // The disk refused: the publishes stay in memory (bounded by the feed's
                // back-pressure on the gateway) and are tried again next turn.
                error!("MQTT: {e}; {} publishes kept in memory", items.len());
                for item in items.iter().rev() {
                    self.memory.push_front(item.clone());
                }
                return;
            }
        }
        let max = items.iter().map(|i| i.seq).max();
        self.disk_tail = self.disk_tail.max(max);
        self.stats.queued.store(self.disk.len(), Ordering::Relaxed);
        self.stats
            .queued_bytes
            .store(self.disk.bytes(), Ordering::Relaxed);
    }

    fn link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Up => self.up(),
            LinkEvent::Sent(pkid) => {
                let Some(handed) = self.handed.pop_front() else {
                    return;
                };
                let Some(seq) = handed else {
                    return;
                };
                if self.qos == QoS::AtMostOnce {
                    self.acked(seq);
                } else {
                    self.pkids.insert(pkid, seq);
                }
            }
            LinkEvent::Acked(pkid) => {
                if let Some(seq) = self.pkids.remove(&pkid) {
                    self.acked(seq);
                }
            }
            LinkEvent::Received { topic, payload } => self.received(&topic, &payload),
            LinkEvent::Subscribed => {
                if let Some(topic) = self.subscribing.pop_front() {
                    info!(topic = %topic, "MQTT: subscribed");
                }
            }
            LinkEvent::Down { reason, done } => {
                self.down(&reason);
                let _ = done.send(self.next_will());
            }
        }
    }

    /// A publish is acknowledged: the acknowledged front of the window leaves (from disk in
    /// one delete).
    fn acked(&mut self, seq: u64) {
        if let Some(f) = self.inflight.iter_mut().find(|f| f.item.seq == seq) {
            f.acked = true;
        }
        let mut disk_through = None;
        let mut n = 0;
        while self.inflight.front().is_some_and(|f| f.acked) {
            if let Some(f) = self.inflight.pop_front() {
                if f.on_disk {
                    disk_through = Some(f.item.seq);
                }
                n += 1;
            }
        }
        self.stats.published.fetch_add(n, Ordering::Relaxed);
        if let Some(seq) = disk_through {
            if let Err(e) = self.disk.remove_through(seq) {
                error!("MQTT: {e}");
            }
            self.stats.queued.store(self.disk.len(), Ordering::Relaxed);
            self.stats
                .queued_bytes
                .store(self.disk.bytes(), Ordering::Relaxed);
            if self.disk.is_empty() && self.dropped_unlogged > 0 {
                warn!(
                    dropped = self.dropped_unlogged,
                    "MQTT: the forward queue has drained; publishes were deleted while it was full"
                );
                self.dropped_unlogged = 0;
            }
        }
    }

    fn up(&mut self) {
        self.connected = true;
        self.stats.connected.store(true, Ordering::Relaxed);
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        // A clean session: subscriptions are made again.
        let mut topics = Vec::new();
        if self.settings.commands {
            topics.push(self.topics.requests());
        }
        if let Some(node) = &self.node {
            topics.push(node.topics().ncmd());
        }
        self.subscribing.clear();
        for topic in topics {
            if let Some(client) = self.client()
                && client
                    .try_subscribe(topic.clone(), QoS::AtLeastOnce)
                    .is_ok()
            {
                self.subscribing.push_back(topic);
            }
        }
        if self.node.is_some() {
            self.sparkplug_refresh();
            let births = match &mut self.node {
                Some(node) => node.connected(now_ms()),
                None => Vec::new(),
            };
            self.sparkplug_publish(births);
        } else {
            let topic = self.topics.gateway_status();
            let payload = json!({"online": true, "gateway": &*self.gateway_name})
                .to_string()
                .into_bytes();
            self.untracked
                .push_back((topic, payload, QoS::AtLeastOnce, true));
        }
    }

    /// The connection is gone: what was in flight from memory goes to disk, before what is
    /// still in memory, and the disk is read again from its oldest row.
    fn down(&mut self, reason: &str) {
        if self.connected {
            info!(
                in_flight = self.inflight.len(),
                "MQTT: connection lost ({reason}); unacknowledged publishes will be sent again"
            );
        }
        self.connected = false;
        self.stats.connected.store(false, Ordering::Relaxed);
        self.all_to_disk();
        self.disk_cursor = None;
        self.handed.clear();
        self.pkids.clear();
        self.untracked.clear();
    }

    /// On stopping: everything not acknowledged goes to disk for the next run; a Sparkplug
    /// node says goodbye with its NDEATH.
    fn stop(&mut self) {
        self.all_to_disk();
        if let Some(client) = &self.client {
            // A clean DISCONNECT discards the last will, so what it would have said is
            // published first: the NDEATH, or the gateway's offline status (retained).
            if self.connected {
                if let Some(node) = &self.node {
                    let death = node.ndeath(now_ms());
                    let _ = client.try_publish(
                        death.topic,
                        qos(death.kind.qos()),
                        false,
                        death.payload,
                    );
                } else {
                    let payload =
                        json!({"online": false, "gateway": &*self.gateway_name}).to_string();
                    let _ = client.try_publish(
                        self.topics.gateway_status(),
                        QoS::AtLeastOnce,
                        true,
                        payload.into_bytes(),
                    );
                }
            }
            let _ = client.try_disconnect();
        }
        info!(
            waiting = self.disk.len(),
            "MQTT publisher stopped; what waits is sent by the next run"
        );
    }

    /// A publish from the broker: a request to a tool, or a Sparkplug node command.
    fn received(&mut self, topic: &str, payload: &[u8]) {
        if let Some(node) = &self.node
            && topic == node.topics().ncmd()
        {
            match sparkplug::parse_ncmd(payload) {
                Ok(cmd) => {
                    if !cmd.ignored.is_empty() {
                        warn!(metrics = ?cmd.ignored, "Sparkplug: node command metrics not acted on");
                    }
                    if cmd.rebirth {
                        info!("Sparkplug: rebirth requested");
                        self.sparkplug_refresh();
                        let births = match &mut self.node {
                            Some(node) => node.rebirth(now_ms()),
                            None => Vec::new(),
                        };
                        self.sparkplug_publish(births);
                    }
                }
                Err(e) => warn!("Sparkplug: a node command that does not decode: {e}"),
            }
            return;
        }
        let Some(equipment) = self.topics.request_equipment(topic).map(str::to_string) else {
            return;
        };
        if !self.settings.commands {
            return;
        }
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.request(equipment, payload);
    }

    /// Carries out a request: `{"correlationId", "message": {"header", "body"}}` or
    /// `{"correlationId", "sml": "S1F3 W <L>"}`, with `timeout` (seconds) and `password`
    /// as needed. The response is published on `.../response`.
    fn request(&mut self, equipment: String, payload: &[u8]) {
        let parsed: Result<Value, String> =
            serde_json::from_slice(payload).map_err(|e| format!("the request is not JSON: {e}"));
        let correlation = parsed
            .as_ref()
            .ok()
            .and_then(|v| v.get("correlationId").cloned())
            .unwrap_or(Value::Null);
        let fail = |this: &mut Publisher, why: String| {
            warn!(equipment = %equipment, "MQTT request refused: {why}");
            let mut body = Map::new();
            body.insert("correlationId".into(), correlation.clone());
            body.insert("ok".into(), Value::Bool(false));
            body.insert("error".into(), Value::String(why));
            this.respond(Response {
                equipment: equipment.clone(),
                body,
            });
        };
        let request = match parsed {
            Ok(Value::Object(o)) => o,
            Ok(_) => return fail(self, "the request must be a JSON object".into()),
            Err(why) => return fail(self, why),
        };
        if let Some(expected) = &self.command_password {
            let given = request
                .get("password")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !same_secret(given.as_bytes(), expected.as_bytes()) {
                return fail(self, "wrong or missing password".into());
            }
        }
        let message = match (request.get("message"), request.get("sml")) {
            (Some(m), None) => message_json::message_from_json(m).map_err(|e| e.to_string()),
            (None, Some(Value::String(text))) => {
                sml::parse_message(text).map_err(|e| e.to_string())
            }
            _ => Err("give the message as \"message\" (JSON) or \"sml\" (text)".into()),
        };
        let message = match message {
            Ok(m) => m,
            Err(why) => return fail(self, format!("bad message: {why}")),
        };
        let timeout = match request.get("timeout") {
            None | Some(Value::Null) => self.settings.command_timeout,
            Some(t) => match t.as_f64().filter(|s| *s > 0.0 && *s <= 3600.0) {
                Some(s) => Duration::from_secs_f64(s),
                None => return fail(self, "timeout must be seconds in 0..3600".into()),
            },
        };
        if self.requests_running.load(Ordering::Relaxed) >= MAX_REQUESTS as u64 {
            return fail(
                self,
                format!("busy: {MAX_REQUESTS} requests are already waiting for replies"),
            );
        }
        self.requests_running.fetch_add(1, Ordering::Relaxed);
        let running = self.requests_running.clone();
        let gateway = self.gateway.clone();
        let responses = self.responses_tx.clone();
        tokio::spawn(async move {
            let sf = message.stream_function();
            let result = gateway.send_and_wait(&equipment, message, timeout).await;
            let mut body = Map::new();
            body.insert("correlationId".into(), correlation);
            match result {
                Ok((txid, reply)) => {
                    body.insert("ok".into(), Value::Bool(true));
                    body.insert("txId".into(), Value::from(txid));
                    body.insert(
                        "reply".into(),
                        reply
                            .as_ref()
                            .map_or(Value::Null, message_json::message_to_json),
                    );
                }
                Err(e) => {
                    warn!(equipment = %equipment, %sf, "MQTT request failed: {e}");
                    body.insert("ok".into(), Value::Bool(false));
                    body.insert("error".into(), Value::String(e.to_string()));
                }
            }
            running.fetch_sub(1, Ordering::Relaxed);
            let _ = responses.send(Response { equipment, body }).await;
        });
    }

    /// Queues a response on `.../response`, in order with everything else.
    fn respond(&mut self, response: Response) {
        let Response {
            equipment,
            mut body,
        } = response;
        body.insert(
            "gateway".into(),
            Value::String(self.gateway_name.to_string()),
        );
        body.insert("equipment".into(), Value::String(equipment.clone()));
        body.insert(
            "timestamp".into(),
            Value::String(timestamp_text(crate::store::messages::now_ms())),
        );
        let topic = self.topics.equipment(&equipment, "response");
        self.enqueue(topic, false, |seq| {
            body.insert("seq".into(), Value::from(seq));
            Value::Object(body).to_string().into_bytes()
        });
    }

    /// Every second: Sparkplug DDATA for tags that changed (and DBIRTH/DDEATH as equipment
    /// come and go).
    fn sparkplug_tick(&mut self) {
        if self.node.is_none() || !self.connected {
            return;
        }
        let version = self.gateway.tags().version();
        if version == self.tags_version {
            return;
        }
        let out = self.sparkplug_refresh();
        self.sparkplug_publish(out);
    }

    /// Gives the node every equipment's current tags (and the equipment gone); returns what
    /// it publishes for them (nothing while offline: the next births carry the values).
    fn sparkplug_refresh(&mut self) -> Vec<sparkplug::Publish> {
        self.tags_version = self.gateway.tags().version();
        let now = now_ms();
        let devices = sparkplug_devices(&self.gateway);
        let Some(node) = &mut self.node else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (device, metrics) in &devices {
            match node.update(device, metrics.iter().map(|(k, v)| (k, v)), now) {
                Ok(p) => out.extend(p),
                Err(e) => warn!(equipment = %device, "Sparkplug: {e}"),
            }
        }
        let gone: Vec<String> = node
            .devices()
            .filter(|d| !devices.iter().any(|(name, _)| name == d))
            .map(str::to_string)
            .collect();
        for device in gone {
            match node.death(&device, now) {
                Ok(p) => out.extend(p),
                Err(e) => warn!(equipment = %device, "Sparkplug: {e}"),
            }
        }
        out
    }

    /// Queues Sparkplug messages to go out ahead of the queued publishes.
    fn sparkplug_publish(&mut self, out: Vec<sparkplug::Publish>) {
        for p in out {
            self.untracked
                .push_back((p.topic, p.payload, qos(p.kind.qos()), false));
        }
    }
}

/// Every equipment's tags, as Sparkplug metrics: path below the equipment -> value.
fn sparkplug_devices(gateway: &Gateway) -> Vec<(String, Vec<(String, Value)>)> {
    let mut devices: std::collections::BTreeMap<String, Vec<(String, Value)>> = gateway
        .connections()
        .iter()
        .map(|c| (c.name().to_string(), Vec::new()))
        .collect();
    let provider = format!("[{}]", crate::tags::PROVIDER);
    for (path, tag) in gateway.tags().all() {
        let path = path.strip_prefix(&provider).unwrap_or(&path);
        if let Some((equipment, metric)) = path.split_once('/')
            && let Some(metrics) = devices.get_mut(equipment)
        {
            metrics.push((metric.to_string(), tag.value));
        }
    }
    devices.into_iter().collect()
}

/// The QoS of a number (0, 1 or 2).
fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Milliseconds since the Unix epoch, as Sparkplug timestamps are.
fn now_ms() -> u64 {
    u64::try_from(crate::store::messages::now_ms()).unwrap_or(0)
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::messages::Direction;

    #[test]
    fn a_message_payload_is_one_json_object() {
        let m = sml::parse_message("S6F11 W <L [3] <U4 1> <U4 4001> <L>> .").unwrap();
        let fm = FeedMessage {
            time_ms: 1_796_290_295_123,
            equipment: "Tool1".into(),
            direction: Direction::Received,
            common_id: "4001".into(),
            txid: 9,
            message_name: Some("LotStarted".into()),
            message: Arc::new(m),
        };
        let v: Value = serde_json::from_slice(&message_payload(17, "gw1", &fm)).unwrap();
        assert_eq!(v["seq"], 17);
        assert_eq!(v["gateway"], "gw1");
        assert_eq!(v["timestamp"], "2026-12-03T09:31:35.123Z");
        assert_eq!(v["streamFunction"], "S6F11");
        assert_eq!(v["messageName"], "LotStarted");
        assert_eq!(v["commonId"], "4001");
        assert_eq!(v["message"]["header"]["stream"], 6);
        assert_eq!(v["message"]["body"][1]["value"], 4001);
    }

    #[test]
    fn request_topics_name_one_equipment() {
        let t = Topics {
            base: "secsgate/gw1".into(),
        };
        assert_eq!(
            t.request_equipment("secsgate/gw1/Tool1/request"),
            Some("Tool1")
        );
        assert_eq!(t.request_equipment("secsgate/gw1/a/b/request"), None);
        assert_eq!(t.request_equipment("secsgate/gw2/Tool1/request"), None);
        assert_eq!(t.request_equipment("secsgate/gw1//request"), None);
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
