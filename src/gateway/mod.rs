//! The gateway: equipment connections, transactions (TxID), routing of received messages to
//! handlers, and the host side of `system.secsgem`.
//!
//! Receive path: a primary from the equipment gets a TxID; a custom response handler mapped to
//! its S/F answers it (or, if the handler raises, finishes without answering, or takes longer
//! than `custom_response_timeout`, the default reply goes out and the error is logged);
//! otherwise the GEM host default reply goes out at once. Then `onSecsGemRealtimeUpdate` gets
//! it, if the equipment's `realtime` setting includes its S/F.
//!
//! Send path: `sendRequest` checks the equipment is communicating, sends, and returns a TxID;
//! the reply is kept for `getResponse`.

pub mod live;
pub mod transactions;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::config::{EquipmentConfig, GatewaySettings, OnInvalid, Project, SimulatorConfig};
use crate::feed::{Feed, FeedEvent, FeedMessage};
use crate::gem::clock::DateTime;
use crate::gem::{self, CommunicationState, HostConfig, hsms_header};
use crate::hsms::driver::Mode;
use crate::link::{Incoming, Link, LinkError, LinkState, Received};
use crate::monitor::{Monitor, Way};
use crate::script::{
    Arg, CopyEquipment, EngineSettings, Host, HostError, LazyMessage, Outcome, Payload,
    ScriptEngine, ToolProgram,
};
use crate::sdl::{MessageDef, Rejected, Rejection, Sdl};
use crate::secs1::driver::Line;
use crate::secs2::{Item, Message, StreamFunction, json as secs_json};
use crate::sim::{SimConfig, Simulator};
use crate::store::messages::{
    self, Direction, EquipmentRecord, ErrorRecord, MessageRecord, Record, Recorder,
    RecorderSettings, RequestResponse, Retention,
};
use crate::store::{Saved, ToolPrograms};
use crate::tags::Tags;
use crate::transport::Transport;
use transactions::{ReplyState, Transactions};

/// Name of the realtime handler (`handlers/onSecsGemRealtimeUpdate.py`).
pub const REALTIME_HANDLER: &str = "onSecsGemRealtimeUpdate";
/// Name of the script run once at start (`handlers/onStartup.py`).
pub const STARTUP_HANDLER: &str = "onStartup";

/// The state of an equipment connection, as shown to engineers: derived from the link's state
/// (HSMS) and the GEM host's communication state ([`Status::derive`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Switched off.
    Disabled,
    /// Trying to connect (or waiting to be connected to) for the first time.
    Connecting,
    /// The connection failed or was lost; retrying.
    NotConnected,
    /// TCP connected, HSMS not selected yet.
    NotSelected,
    /// HSMS selected, GEM communication (S1F13/S1F14) not established yet.
    Selected,
    /// Messages can be exchanged.
    Communicating,
}

impl Status {
    /// The status of a connection whose link is in `link` (`None`: the connection is
    /// disabled) and whose GEM host is in `gem`. `tried` says the link has connected or failed
    /// before (a link that is down is then "Not Connected" rather than "Connecting").
    /// Communicating needs both HSMS SELECTED and GEM COMMUNICATING.
    pub fn derive(link: Option<LinkState>, tried: bool, gem: CommunicationState) -> Status {
        match link {
            None => Status::Disabled,
            Some(LinkState::Disconnected) if tried => Status::NotConnected,
            Some(LinkState::Disconnected) => Status::Connecting,
            Some(LinkState::Connected) => Status::NotSelected,
            Some(LinkState::Selected) if gem == CommunicationState::Communicating => {
                Status::Communicating
            }
            Some(LinkState::Selected) => Status::Selected,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Disabled => "Disabled",
            Status::Connecting => "Connecting",
            Status::NotConnected => "Not Connected",
            Status::NotSelected => "Not Selected",
            Status::Selected => "Selected",
            Status::Communicating => "Communicating",
        })
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn status_is_derived_from_link_and_gem_states() {
        use CommunicationState::{Communicating, WaitCra, WaitDelay};
        let all_gem = [WaitCra, WaitDelay, Communicating];
        for gem in all_gem {
            assert_eq!(Status::derive(None, true, gem), Status::Disabled);
            assert_eq!(
                Status::derive(Some(LinkState::Disconnected), false, gem),
                Status::Connecting
            );
            // Never "Communicating" while the link is down or not selected.
            assert_eq!(
                Status::derive(Some(LinkState::Disconnected), true, gem),
                Status::NotConnected
            );
            assert_eq!(
                Status::derive(Some(LinkState::Connected), true, gem),
                Status::NotSelected
            );
        }
        assert_eq!(
            Status::derive(Some(LinkState::Selected), true, WaitCra),
            Status::Selected
        );
        assert_eq!(
            Status::derive(Some(LinkState::Selected), true, WaitDelay),
            Status::Selected
        );
        assert_eq!(
            Status::derive(Some(LinkState::Selected), true, Communicating),
            Status::Communicating
        );
        assert_eq!(Status::NotConnected.to_string(), "Not Connected");
    }
}

/// One equipment connection: its link (HSMS) and the GEM host that communicates over it.
pub struct Connection {
    name: String,
    /// The settings in force: replaced as a whole when project.toml changes.
    config: RwLock<Arc<EquipmentConfig>>,
    link: Mutex<Option<Link>>,
    /// The GEM host's communication with the equipment.
    host: Mutex<gem::Host>,
    /// Wakes the connection's host task after a received primary changed `host`.
    host_changed: Notify,
    /// What `status` is derived from.
    observed: Mutex<Observed>,
    status: watch::Sender<Status>,
    local_addr: Mutex<Option<SocketAddr>>,
    /// The message store, if on.
    store: Option<Arc<Recorder>>,
    /// The gateway's name (`[gateway] name`), written in the store's `Gateway` column.
    gateway: Arc<str>,
    /// The gateway's tag tree (this connection keeps `<name>/...` current).
    tags: Arc<Tags>,
    /// Tag paths of the counters.
    sent_tag: String,
    received_tag: String,
    /// Counters and the live stream of the web console and the metrics.
    monitor: Arc<Monitor>,
    /// The northbound feed (MQTT), if on.
    feed: Option<Arc<Feed>>,
}

/// The states a connection's [`Status`] is derived from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Observed {
    /// The link's state; `None` while the connection is disabled.
    link: Option<LinkState>,
    /// The link has connected, or failed to, since the connection was enabled.
    tried: bool,
    /// The GEM host's communication state.
    gem: CommunicationState,
}

impl Connection {
    /// The GEM host of a connection with these settings.
    fn gem_host(config: &EquipmentConfig) -> gem::Host {
        gem::Host::new(
            HostConfig {
                establish_communication: config.establish_communication,
                retry_delay: HostConfig::retry_delay_for_t5(config.transport.reconnect_gap()),
                ..HostConfig::default()
            },
            Instant::now(),
            SystemTime::now(),
        )
    }

    /// A connection for `config`, enabled or not as it says.
    fn new(
        config: EquipmentConfig,
        tags: Arc<Tags>,
        store: Option<Arc<Recorder>>,
        gateway: Arc<str>,
        feed: Option<Arc<Feed>>,
    ) -> Connection {
        let host = Self::gem_host(&config);
        let observed = Observed {
            link: config.enabled.then_some(LinkState::Disconnected),
            tried: false,
            gem: host.communication_state(),
        };
        let (status, _) = watch::channel(Status::derive(observed.link, false, observed.gem));
        let now = SystemTime::now();
        tags.set(
            &format!("{}/Status", config.name),
            serde_json::Value::from(status.borrow().to_string()),
            now,
        );
        tags.set(
            &format!("{}/Enabled", config.name),
            serde_json::Value::from(config.enabled),
            now,
        );
        tags.add(&format!("{}/MessagesSent", config.name), 0, now);
        tags.add(&format!("{}/MessagesReceived", config.name), 0, now);
        let monitor = Arc::new(Monitor::new(status.borrow().to_string()));
        Connection {
            monitor,
            tags,
            sent_tag: format!("{}/MessagesSent", config.name),
            received_tag: format!("{}/MessagesReceived", config.name),
            name: config.name.clone(),
            config: RwLock::new(Arc::new(config)),
            link: Mutex::new(None),
            host: Mutex::new(host),
            host_changed: Notify::new(),
            observed: Mutex::new(observed),
            status,
            local_addr: Mutex::new(None),
            store,
            gateway,
            feed,
        }
    }

    /// Logs (at debug, as SML) and stores a message sent to or received from the equipment:
    /// every message goes through here exactly once.
    async fn record(&self, direction: Direction, message: &Message, common_id: String, txid: u32) {
        self.record_named(direction, message, common_id, txid, None)
            .await;
    }

    /// [`Connection::record`] of a message that matched the SDL definition named `name`.
    async fn record_named(
        &self,
        direction: Direction,
        message: &Message,
        common_id: String,
        txid: u32,
        name: Option<&str>,
    ) {
        self.log_message(direction, message, txid);
        let shared = (self.store.is_some() || self.feed.is_some() || self.monitor.streaming())
            .then(|| Arc::new(message.clone()));
        self.monitor
            .message(way(direction), message, txid, shared.as_ref());
        if let (Some(feed), Some(shared)) = (&self.feed, &shared) {
            self.publish(feed, direction, shared, &common_id, txid, name)
                .await;
        }
        if let (Some(store), Some(message)) = (&self.store, shared) {
            store
                .record(self.message_record(direction, message, common_id, txid, name))
                .await;
        }
    }

    /// Hands a message on to the northbound feed if it publishes it.
    async fn publish(
        &self,
        feed: &Feed,
        direction: Direction,
        message: &Arc<Message>,
        common_id: &str,
        txid: u32,
        name: Option<&str>,
    ) {
        let sf = message.stream_function();
        let wanted = feed.wants(sf, direction, || {
            self.config()
                .sdl
                .as_deref()
                .is_some_and(|s| s.realtime(sf) || s.sql_tags(sf))
        });
        if wanted {
            feed.send(FeedEvent::Message(FeedMessage {
                time_ms: messages::now_ms(),
                equipment: self.name.clone(),
                direction,
                common_id: common_id.to_string(),
                txid,
                message_name: name.map(str::to_string),
                message: message.clone(),
            }))
            .await;
        }
    }

    /// [`Connection::record`] for a message already shared.
    async fn record_arc(
        &self,
        direction: Direction,
        message: &Arc<Message>,
        common_id: String,
        txid: u32,
        name: Option<&str>,
    ) {
        self.log_message(direction, message, txid);
        self.monitor
            .message(way(direction), message, txid, Some(message));
        if let Some(feed) = &self.feed {
            self.publish(feed, direction, message, &common_id, txid, name)
                .await;
        }
        if let Some(store) = &self.store {
            store
                .record(self.message_record(direction, message.clone(), common_id, txid, name))
                .await;
        }
    }

    /// The name of the SDL definition a message matches, if it matches a named one.
    fn definition_name(&self, message: &Message, sent_by_host: bool) -> Option<String> {
        let config = self.config();
        let sdl = config.sdl.as_deref()?;
        sdl.matching(message, sent_by_host)
            .ok()
            .and_then(|m| m.definition.name.clone())
    }

    fn log_message(&self, direction: Direction, message: &Message, txid: u32) {
        debug!(equipment = %self.name, direction = direction.as_str(), txid, system_bytes = message.system_bytes, "{message}");
    }

    fn message_record(
        &self,
        direction: Direction,
        message: Arc<Message>,
        common_id: String,
        txid: u32,
        name: Option<&str>,
    ) -> Record {
        Record::Message(MessageRecord {
            time_ms: messages::now_ms(),
            gateway: self.gateway.clone(),
            equipment: self.name.clone(),
            prefix: self.config().table_prefix.clone(),
            direction,
            request_response: RequestResponse::of(&message),
            common_id,
            txid,
            message_name: name.map(str::to_string),
            message,
        })
    }

    /// Stores a failure in `<prefix>Errors` (kind: "validation", "malformed", "timeout",
    /// "connection", "rejected").
    fn error_record(
        &self,
        kind: &'static str,
        reason: String,
        stream_function: Option<StreamFunction>,
        message: Option<Arc<Message>>,
    ) -> Option<(Arc<Recorder>, Record)> {
        let store = self.store.clone()?;
        Some((
            store,
            Record::Error(ErrorRecord {
                time_ms: messages::now_ms(),
                gateway: self.gateway.clone(),
                equipment: self.name.clone(),
                prefix: self.config().table_prefix.clone(),
                kind,
                reason,
                stream_function,
                message,
            }),
        ))
    }

    async fn record_error(
        &self,
        kind: &'static str,
        reason: String,
        stream_function: Option<StreamFunction>,
        message: Option<Arc<Message>>,
    ) {
        let what = match stream_function {
            Some(sf) => format!("{kind}: {sf}: {reason}"),
            None => format!("{kind}: {reason}"),
        };
        if kind == "timeout" {
            self.monitor.t3_timeout(what);
        } else {
            self.monitor.error(what);
        }
        if let Some((store, record)) = self.error_record(kind, reason, stream_function, message) {
            store.record(record).await;
        }
    }

    /// Upserts the connection's row of `SECSGEM_EquipmentInfo`.
    fn record_status(&self, status: Status) {
        if let Some(store) = &self.store {
            let config = self.config();
            store.record_soon(Record::Equipment(EquipmentRecord {
                gateway: self.gateway.clone(),
                equipment: self.name.clone(),
                prefix: config.table_prefix.clone(),
                status: status.to_string(),
                sdl_file: config
                    .sdl
                    .as_ref()
                    .map(|s| s.file.display().to_string())
                    .unwrap_or_default(),
            }));
        }
    }

    /// The equipment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<EquipmentConfig> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts new settings in force and makes a new GEM host for them; only while disabled
    /// (the next enable connects with them).
    fn reconfigure(&self, config: EquipmentConfig) {
        let host = Self::gem_host(&config);
        if let Ok(mut h) = self.host.lock() {
            *h = host;
        }
        self.set_config(config);
    }

    /// Puts new settings in force (the link and host are left as they are).
    fn set_config(&self, config: EquipmentConfig) {
        let config = Arc::new(config);
        match self.config.write() {
            Ok(mut c) => *c = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    /// The current status.
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// A watch on the status.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// The link's state (HSMS), or `None` while the connection is disabled.
    pub fn link_state(&self) -> Option<LinkState> {
        self.observed.lock().ok().and_then(|o| o.link)
    }

    /// The GEM host's communication state with the equipment.
    pub fn communication_state(&self) -> CommunicationState {
        self.host
            .lock()
            .map_or(CommunicationState::WaitCra, |h| h.communication_state())
    }

    /// Its counters and live message stream.
    pub fn monitor(&self) -> &Arc<Monitor> {
        &self.monitor
    }

    /// The link, while enabled.
    pub fn link(&self) -> Option<Link> {
        self.link.lock().ok().and_then(|l| l.clone())
    }

    /// The listening address (passive and alternating modes).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr.lock().ok().and_then(|a| *a)
    }

    /// Changes what the status is derived from; the status watch hears of the status only
    /// when it changes.
    fn observe(&self, change: impl FnOnce(&mut Observed)) {
        let Ok(mut observed) = self.observed.lock() else {
            return;
        };
        change(&mut observed);
        let status = Status::derive(observed.link, observed.tried, observed.gem);
        let mut old = status;
        self.status.send_if_modified(|current| {
            old = std::mem::replace(current, status);
            old != status
        });
        if old != status {
            info!(equipment = %self.name(), from = %old, to = %status, "equipment status");
            self.monitor.status(status.to_string());
            self.record_status(status);
            if let Some(feed) = &self.feed {
                feed.send_soon(FeedEvent::Status {
                    time_ms: messages::now_ms(),
                    equipment: self.name.clone(),
                    status: status.to_string(),
                });
            }
            let now = SystemTime::now();
            self.tags.set(
                &format!("{}/Status", self.name),
                serde_json::Value::from(status.to_string()),
                now,
            );
            self.tags.set(
                &format!("{}/Enabled", self.name),
                serde_json::Value::from(observed.link.is_some()),
                now,
            );
        }
    }

    /// Counts a message sent to the equipment (the `MessagesSent` tag).
    fn count_sent(&self) {
        self.tags.add(&self.sent_tag, 1, SystemTime::now());
    }

    /// Counts a message received from the equipment (the `MessagesReceived` tag).
    fn count_received(&self) {
        self.tags.add(&self.received_tag, 1, SystemTime::now());
    }

    /// Updates the `Messages/...` tags of a message the equipment sent, if its SDL marks
    /// it `SQLTags`.
    fn message_tags(
        &self,
        message: &Message,
        common_id: &str,
        txid: u32,
        def: Option<&MessageDef>,
    ) {
        let config = self.config();
        let tags = match def {
            Some(def) => def.sql_tags,
            None => config
                .sdl
                .as_deref()
                .is_some_and(|s| s.sql_tags(message.stream_function())),
        };
        if tags {
            self.tags.message(
                &self.name,
                message,
                common_id,
                txid,
                &now_text(2),
                SystemTime::now(),
            );
        }
    }

    /// The connection was switched on (its link starts connecting) or off.
    fn set_enabled(&self, enabled: bool) {
        self.observe(|o| {
            o.link = enabled.then_some(LinkState::Disconnected);
            o.tried = false;
        });
    }

    /// The link's state changed (`failed`: it reported a problem). The GEM host hears of it
    /// (link up when SELECTED, link down otherwise) and the status follows both at once.
    fn link_changed(&self, state: LinkState, failed: bool, now: Instant) {
        let Ok(mut host) = self.host.lock() else {
            return;
        };
        if state == LinkState::Selected {
            self.monitor.link_up();
            host.link_up(now);
        } else {
            host.link_down(now);
        }
        let gem = host.communication_state();
        self.observe(|o| {
            if o.link.is_some() {
                o.link = Some(state);
                o.tried |= failed || state != LinkState::Disconnected;
            }
            o.gem = gem;
        });
    }

    /// Runs `f` on the GEM host and updates the status from its communication state (under
    /// the host's lock, so that updates are seen in the order the host made them).
    fn with_host<R>(&self, f: impl FnOnce(&mut gem::Host) -> R) -> Option<R> {
        let mut host = self.host.lock().ok()?;
        let result = f(&mut host);
        let gem = host.communication_state();
        self.observe(|o| o.gem = gem);
        Some(result)
    }

    /// A message from the equipment reaches the GEM host (S1F13 makes it COMMUNICATING);
    /// the host task is woken to carry out what follows.
    fn host_receive(&self, message: &Message) {
        self.with_host(|h| h.receive(message, Instant::now()));
        self.host_changed.notify_one();
    }
}

struct Core {
    runtime: tokio::runtime::Handle,
    /// The project folder.
    dir: std::path::PathBuf,
    simulators: Mutex<HashMap<String, Simulator>>,
    /// The `[[simulator]]`s of the configuration in force.
    simulator_configs: Mutex<Vec<SimulatorConfig>>,
    settings: RwLock<GatewaySettings>,
    /// `[store]` and `[mqtt]` as the gateway started with them (a change needs a restart,
    /// which a reload says).
    started_with: (crate::config::StoreSettings, crate::config::MqttSettings),
    /// Live configuration: one reload at a time, a count of reloads done (applied or not),
    /// and the file watch.
    reload_lock: tokio::sync::Mutex<()>,
    config_reloads: watch::Sender<u64>,
    config_watch: Mutex<Option<live::ConfigWatch>>,
    engine: ScriptEngine,
    transactions: Arc<Transactions>,
    connections: RwLock<HashMap<String, Arc<Connection>>>,
    /// Process programs the tools sent (S7F3), in the project's `data/programs/`.
    programs: Option<ToolPrograms>,
    /// The message store, if on.
    store: Option<Arc<Recorder>>,
    /// Its database: the SQLite file or the PostgreSQL URL.
    store_location: Option<crate::config::DatabaseLocation>,
    /// The project's store settings (`system.db`'s default database is the store's).
    store_settings: crate::config::StoreSettings,
    /// The gateway's name (`[gateway] name`, fixed until a restart).
    name: Arc<str>,
    /// The realtime tags.
    tags: Arc<Tags>,
    /// The named databases of `system.db`.
    databases: RwLock<Vec<crate::config::DatabaseConfig>>,
    /// The northbound feed (MQTT), if on, and its publisher's end until taken.
    feed: Option<Arc<Feed>>,
    feed_rx: Mutex<Option<tokio::sync::mpsc::Receiver<FeedEvent>>>,
}

/// A running gateway.
#[derive(Clone)]
pub struct Gateway {
    core: Arc<Core>,
}

impl Gateway {
    /// Starts the script engine and every enabled equipment connection of a loaded project,
    /// and runs `onStartup` once the equipment is communicating (or `startup_wait` passed).
    /// Must be called inside a tokio runtime.
    pub async fn start(project: &Project, hot_reload: bool) -> Gateway {
        let engine = ScriptEngine::start(
            &project.dir,
            EngineSettings {
                workers: project.gateway.workers,
                handler_timeout: project.gateway.handler_timeout,
                hot_reload,
                queue_limit: project.gateway.queue_limit,
                queue_bytes: project.gateway.queue_bytes,
                abandoned_limit: crate::script::DEFAULT_ABANDONED_LIMIT,
            },
        );
        let simulators = start_simulators(&project.simulators).await;
        let store = open_store(project);
        let (feed, feed_rx) = if project.mqtt.enabled {
            let (feed, rx) = Feed::new(crate::feed::FEED_QUEUE, &project.mqtt.messages);
            (Some(Arc::new(feed)), Some(rx))
        } else {
            (None, None)
        };
        let core = Arc::new(Core {
            feed,
            feed_rx: Mutex::new(feed_rx),
            started_with: (project.store.clone(), project.mqtt.clone()),
            runtime: tokio::runtime::Handle::current(),
            dir: project.dir.clone(),
            simulators: Mutex::new(simulators),
            simulator_configs: Mutex::new(project.simulators.clone()),
            settings: RwLock::new(project.gateway.clone()),
            reload_lock: tokio::sync::Mutex::new(()),
            config_reloads: watch::channel(0).0,
            config_watch: Mutex::new(None),
            tags: Arc::new(Tags::new()),
            databases: RwLock::new(project.databases.clone()),
            engine,
            transactions: Arc::new(Transactions::new(project.gateway.response_retention)),
            connections: RwLock::new(HashMap::new()),
            programs: match ToolPrograms::open(&project.dir.join("data").join("programs")) {
                Ok(p) => Some(p),
                Err(e) => {
                    error!("tool programs from S7F3 cannot be stored: {e}");
                    None
                }
            },
            store_location: store.as_ref().map(|_| store_location(&project.store)),
            store_settings: project.store.clone(),
            name: Arc::from(project.gateway.name.as_str()),
            store,
        });
        core.engine.set_host(Arc::new(GatewayHost {
            core: Arc::downgrade(&core),
        }));
        for config in &project.equipment {
            if let Err(e) = core.add(config.clone()).await {
                error!(equipment = %config.name, "cannot start: {e}");
            }
        }
        if hot_reload {
            match live::watch(Arc::downgrade(&core), project.dir.clone()) {
                Ok(w) => {
                    if let Ok(mut slot) = core.config_watch.lock() {
                        *slot = Some(w);
                    }
                }
                Err(e) => warn!(
                    "configuration changes are not applied live: cannot watch {}: {e}",
                    project.dir.display()
                ),
            }
        }
        tokio::spawn(snapshot_tags(Arc::downgrade(&core)));
        let gateway = Gateway { core };
        if gateway.core.engine.has_handler(STARTUP_HANDLER) {
            let g = gateway.clone();
            tokio::spawn(async move { g.run_startup().await });
        }
        gateway
    }

    /// A watch of how many times the configuration was reloaded (applied or refused).
    pub fn watch_config_reloads(&self) -> watch::Receiver<u64> {
        self.core.config_reloads.subscribe()
    }

    /// Loads project.toml (and the SDL files it names) again and applies what changed, as
    /// saving them does.
    pub async fn reload_config(&self) {
        self.core.reload_config().await;
    }

    /// The script engine.
    pub fn engine(&self) -> &ScriptEngine {
        &self.core.engine
    }

    /// The gateway's name (`[gateway] name`).
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// The counters of the northbound publisher (`None` when `[mqtt]` is off).
    pub fn feed_stats(&self) -> Option<Arc<crate::feed::PublisherStats>> {
        self.core.feed.as_ref().map(|f| f.stats())
    }

    /// The publisher's end of the northbound feed (once; `None` when `[mqtt]` is off).
    pub fn take_feed(&self) -> Option<tokio::sync::mpsc::Receiver<FeedEvent>> {
        self.core.feed_rx.lock().ok().and_then(|mut f| f.take())
    }

    /// A connection by name.
    pub fn connection(&self, name: &str) -> Option<Arc<Connection>> {
        self.core
            .connections
            .read()
            .ok()
            .and_then(|c| c.get(name).cloned())
    }

    /// Every connection's name and status, sorted by name.
    pub fn statuses(&self) -> Vec<(String, Status)> {
        let mut out: Vec<_> = self
            .core
            .connections
            .read()
            .map(|c| c.iter().map(|(n, c)| (n.clone(), c.status())).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    async fn run_startup(&self) {
        let wait = self.core.settings().startup_wait;
        let conns: Vec<Arc<Connection>> = self
            .core
            .connections
            .read()
            .map(|c| c.values().filter(|c| c.config().enabled).cloned().collect())
            .unwrap_or_default();
        let all = async {
            for c in &conns {
                let mut w = c.watch_status();
                let _ = w.wait_for(|s| *s == Status::Communicating).await;
            }
        };
        if tokio::time::timeout(wait, all).await.is_err() {
            warn!(
                "not every enabled equipment is communicating after {wait:?}; running {STARTUP_HANDLER} anyway"
            );
        }
        let names: Vec<String> = conns.iter().map(|c| c.name().to_string()).collect();
        let communicating: Vec<String> = conns
            .iter()
            .filter(|c| c.status() == Status::Communicating)
            .map(|c| c.name().to_string())
            .collect();
        self.core
            .engine
            .post(
                "gateway",
                STARTUP_HANDLER,
                Payload(vec![
                    ("Equipment", Arg::Strs(names)),
                    ("Communicating", Arg::Strs(communicating)),
                ]),
            )
            .await;
    }

    /// Separates and stops every connection, then the script workers.
    pub async fn shutdown(&self) {
        // No configuration change is applied while stopping.
        let watch = self
            .core
            .config_watch
            .lock()
            .ok()
            .and_then(|mut w| w.take());
        drop(watch);
        let conns: Vec<Arc<Connection>> = self
            .core
            .connections
            .read()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        for c in conns {
            let link = c.link.lock().ok().and_then(|mut l| l.take());
            if let Some(link) = link {
                link.shutdown().await;
            }
            c.set_enabled(false);
        }
        let sims: Vec<Simulator> = self
            .core
            .simulators
            .lock()
            .map(|mut s| s.drain().map(|(_, sim)| sim).collect())
            .unwrap_or_default();
        for sim in sims {
            sim.shutdown().await;
        }
        self.core.engine.stop();
        // The last tag snapshot says the gateway stopped.
        self.core.write_tag_snapshot(false);
        if let Some(store) = &self.core.store {
            store.close().await;
        }
    }

    /// The message store, if on.
    pub fn store(&self) -> Option<&Recorder> {
        self.core.store.as_deref()
    }

    /// Every connection, sorted by name.
    pub fn connections(&self) -> Vec<Arc<Connection>> {
        let mut out: Vec<Arc<Connection>> = self
            .core
            .connections
            .read()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.name().cmp(b.name()));
        out
    }

    /// Handles on the in-process simulators, sorted by name.
    pub fn simulators(&self) -> Vec<crate::sim::SimHandle> {
        let mut out: Vec<crate::sim::SimHandle> = self
            .core
            .simulators
            .lock()
            .map(|s| s.values().map(Simulator::handle).collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.name().cmp(b.name()));
        out
    }

    /// The realtime tag tree.
    pub fn tags(&self) -> Arc<Tags> {
        self.core.tags.clone()
    }

    /// The message store's database (file or PostgreSQL URL), if the store is on.
    pub fn store_location(&self) -> Option<&crate::config::DatabaseLocation> {
        self.core.store_location.as_ref()
    }

    /// Switches a connection on or off, as `enableDisableEquipment` does.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), HostError> {
        self.core.set_enabled(name, enabled).await
    }

    /// Sends a message to an equipment as `sendRequest` does (checked against its SDL,
    /// recorded, given a TxID) and, if it expects a reply, waits up to `timeout` for it as
    /// `getResponse` does. Runs on a blocking-pool thread.
    pub async fn send_and_wait(
        &self,
        name: &str,
        message: Message,
        timeout: Duration,
    ) -> Result<(u32, Option<Message>), HostError> {
        let host = GatewayHost {
            core: Arc::downgrade(&self.core),
        };
        let transactions = self.core.transactions.clone();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let sf = message.stream_function();
            let wants_reply = message.w_bit && sf.is_primary();
            let txid = host.send_request(sf, message.w_bit, message.body, &name)?;
            if !wants_reply {
                return Ok((txid, None));
            }
            let reply = transactions
                .wait_reply(txid, &name, timeout, None)
                .map_err(HostError::Transaction)?;
            Ok((txid, reply))
        })
        .await
        .map_err(|_| HostError::Stopped)?
    }

    /// The listening address of an in-process simulator.
    pub fn simulator_addr(&self, name: &str) -> Option<SocketAddr> {
        self.core
            .simulators
            .lock()
            .ok()
            .and_then(|s| s.get(name).and_then(|sim| sim.local_addr()))
    }
}

/// Where a project's message store is: its PostgreSQL URL, else its SQLite file.
pub fn store_location(settings: &crate::config::StoreSettings) -> crate::config::DatabaseLocation {
    match &settings.url {
        Some(url) => crate::config::DatabaseLocation::Postgres(url.clone()),
        None => crate::config::DatabaseLocation::Sqlite(settings.path.clone()),
    }
}

/// Opens the message store of a project, if it is on (a store that cannot be opened is
/// logged, and the gateway runs without it). A PostgreSQL store starts at once; its writer
/// connects when the server can be reached.
fn open_store(project: &Project) -> Option<Arc<Recorder>> {
    let settings = &project.store;
    if !settings.enabled {
        return None;
    }
    let recorder_settings = RecorderSettings {
        queue: settings.queue,
        batch: settings.batch,
        retention: Retention {
            max_age: settings.retention,
            max_rows: settings.retention_rows,
        },
        ..RecorderSettings::default()
    };
    let (recorder, at) = match &settings.url {
        Some(url) => (
            Recorder::open_postgres(
                url,
                &format!("secsgate {} store", project.gateway.name),
                recorder_settings,
            ),
            crate::store::postgres::redact(url),
        ),
        None => (
            Recorder::open_sqlite(&settings.path, recorder_settings),
            settings.path.display().to_string(),
        ),
    };
    match recorder {
        Ok(r) => {
            info!(at = %at, gateway = %project.gateway.name, "message store open");
            Some(Arc::new(r))
        }
        Err(e) => {
            error!("messages are not stored: {e}");
            None
        }
    }
}

/// Loads a simulator's config: its own file, or the built-in default.
pub fn load_simulator_config(sim: &SimulatorConfig) -> Result<SimConfig, String> {
    match &sim.config {
        Some(path) => SimConfig::load(path).map_err(|e| e.to_string()),
        None => Ok(SimConfig::default_config()),
    }
}

/// Starts the enabled `[[simulator]]`s (before the equipment, so connections find them).
async fn start_simulators(configs: &[SimulatorConfig]) -> HashMap<String, Simulator> {
    let mut running = HashMap::new();
    for sim in configs.iter().filter(|s| s.enabled) {
        let config = match load_simulator_config(sim) {
            Ok(c) => c,
            Err(e) => {
                error!(simulator = %sim.name, "not started: {e}");
                continue;
            }
        };
        for w in &config.warnings {
            warn!(simulator = %sim.name, "{w}");
        }
        let transport = sim.transport.clone();
        let description = transport.to_string();
        match Simulator::start(sim.name.clone(), config, transport, sim.spool_dir.clone()).await {
            Ok(s) => {
                running.insert(sim.name.clone(), s);
            }
            Err(e) => {
                error!(simulator = %sim.name, "cannot start ({description}): {e}")
            }
        }
    }
    running
}

impl Core {
    /// The gateway settings in force.
    fn settings(&self) -> GatewaySettings {
        match self.settings.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Adds a connection and starts it if enabled.
    async fn add(self: &Arc<Self>, config: EquipmentConfig) -> std::io::Result<Arc<Connection>> {
        let name = config.name.clone();
        let enabled = config.enabled;
        let conn = Arc::new(Connection::new(
            config,
            self.tags.clone(),
            self.store.clone(),
            self.name.clone(),
            self.feed.clone(),
        ));
        conn.record_status(conn.status());
        if let Some(feed) = &self.feed {
            feed.send_soon(FeedEvent::Status {
                time_ms: messages::now_ms(),
                equipment: conn.name().to_string(),
                status: conn.status().to_string(),
            });
        }
        if let Ok(mut map) = self.connections.write() {
            map.insert(name, conn.clone());
        }
        if enabled {
            self.enable(&conn).await?;
        }
        Ok(conn)
    }

    /// Starts the HSMS endpoint of a connection and its receive and status tasks.
    async fn enable(self: &Arc<Self>, conn: &Arc<Connection>) -> std::io::Result<()> {
        if conn.link().is_some() {
            return Ok(());
        }
        conn.set_enabled(true);
        let endpoint = conn.config().transport.clone().start().await?;
        if let Ok(mut a) = conn.local_addr.lock() {
            *a = endpoint.local_addr;
        }
        if let Ok(mut l) = conn.link.lock() {
            *l = Some(endpoint.link.clone());
        }
        tokio::spawn(receive_loop(
            self.clone(),
            conn.clone(),
            endpoint.link.clone(),
            endpoint.incoming,
        ));
        tokio::spawn(host_loop(conn.clone(), endpoint.link));
        Ok(())
    }

    /// Switches the connection named `name` on or off.
    async fn set_enabled(self: &Arc<Self>, name: &str, enabled: bool) -> Result<(), HostError> {
        let conn = GatewayHost::connection(self, name)?;
        if enabled {
            self.enable(&conn).await.map_err(|e| HostError::Start {
                name: name.to_string(),
                reason: e.to_string(),
            })
        } else {
            self.disable(&conn).await;
            Ok(())
        }
    }

    async fn disable(&self, conn: &Connection) {
        let link = conn.link.lock().ok().and_then(|mut l| l.take());
        if let Some(link) = link {
            link.shutdown().await;
        }
        conn.set_enabled(false);
    }

    /// Handles a primary the equipment sent.
    async fn on_primary(self: &Arc<Self>, conn: &Arc<Connection>, link: &Link, message: Message) {
        let name = conn.name();
        let sf = message.stream_function();
        let message = Arc::new(message);
        if !sf.is_primary() {
            conn.record_arc(Direction::Received, &message, "0".into(), 0, None)
                .await;
            warn!(equipment = name, %sf, system_bytes = message.system_bytes, "reply for no open transaction; dropped");
            return;
        }
        let config = conn.config();
        let sdl = config.sdl.as_deref();
        // Which definition of the SDL the message is (the first that matches).
        let mut def: Option<&MessageDef> = None;
        let mut index = None;
        if let Some(sdl) = sdl {
            match sdl.matching(&message, false) {
                Ok(m) => {
                    def = Some(m.definition);
                    index = Some(m.index);
                }
                Err(rejection) => match config.on_invalid {
                    OnInvalid::S9F7 => {
                        self.refuse(conn, link, &message, &rejection).await;
                        return;
                    }
                    OnInvalid::Accept => {
                        let mismatch = &rejection.mismatch;
                        warn!(equipment = name, %sf, "received message does not match the SDL: {mismatch}; accepted (on_invalid = \"accept\")");
                        conn.record_error(
                            "validation",
                            format!(
                                "does not match the SDL: {mismatch}; accepted (on_invalid = \"accept\")"
                            ),
                            Some(sf),
                            Some(message.clone()),
                        )
                        .await;
                    }
                },
            }
        }
        let message_name = def.and_then(|d| d.name.as_deref());
        let txid = self.transactions.received(name, &message);
        let common_id = match (sdl, def) {
            (Some(sdl), Some(def)) => sdl
                .common_id_by(def, &message)
                .unwrap_or_else(|| txid.to_string()),
            _ => common_id(sdl, &message, None, txid),
        };
        // Stored before any handler runs or any reply goes out.
        conn.record_arc(
            Direction::Received,
            &message,
            common_id.clone(),
            txid,
            message_name,
        )
        .await;
        // The JSON text of the message is made only if a handler reads payload["Message"].
        let message_json =
            LazyMessage::new(message.clone(), config.sdl.clone()).with_definition(index);
        match config.custom_response(sf, message_name) {
            Some(c) if self.engine.has_handler(&c.handler) => {
                let payload = Payload(vec![
                    ("Equipment", Arg::Str(name.to_string())),
                    ("TxID", Arg::Int(i64::from(txid))),
                    ("SystemBytes", Arg::Int(i64::from(message.system_bytes))),
                    ("StreamFunction", Arg::Str(sf.to_string())),
                    (
                        "MessageName",
                        Arg::Str(message_name.unwrap_or_default().to_string()),
                    ),
                    ("Message", Arg::Lazy(message_json.clone())),
                ]);
                let outcome = self.engine.submit(name, &c.handler, payload).await;
                let core = self.clone();
                let (conn2, link2, primary, handler, primary_id) = (
                    conn.clone(),
                    link.clone(),
                    message.clone(),
                    c.handler.clone(),
                    common_id.clone(),
                );
                tokio::spawn(async move {
                    let limit = core.settings().custom_response_timeout;
                    let why = match tokio::time::timeout(limit, outcome).await {
                        Ok(Ok(Outcome::Done)) => {
                            "finished without calling sendResponse".to_string()
                        }
                        Ok(Ok(Outcome::Raised(_))) => {
                            "raised (see its traceback above)".to_string()
                        }
                        Ok(Ok(Outcome::TimedOut)) => {
                            "was interrupted at its time limit".to_string()
                        }
                        Ok(Ok(Outcome::Abandoned)) => {
                            "was abandoned at its time limit (it did not stop when interrupted)"
                                .to_string()
                        }
                        Ok(Ok(Outcome::Refused(why))) => format!("did not run: {why}"),
                        Ok(Ok(Outcome::NoHandler)) | Ok(Err(_)) => "is not loaded".to_string(),
                        Err(_) => format!("did not reply within {limit:?}"),
                    };
                    if core.transactions.is_replied(txid) {
                        return;
                    }
                    error!(equipment = %conn2.name(), %sf, handler = %handler, txid,
                        "custom response handler {why}; sending the default reply");
                    core.default_reply(&conn2, &link2, &primary, txid, &primary_id)
                        .await;
                });
            }
            Some(c) => {
                warn!(equipment = name, %sf, handler = %c.handler, "custom response handler is not loaded; sending the default reply");
                self.default_reply(conn, link, &message, txid, &common_id)
                    .await;
            }
            None if sf == S7F3 => self.tool_program_received(conn, link, &message, txid).await,
            None => {
                self.default_reply(conn, link, &message, txid, &common_id)
                    .await
            }
        }
        conn.message_tags(&message, &common_id, txid, def);
        self.deliver(conn, message_json, txid, "Request", common_id, def)
            .await;
    }

    /// Answers a primary that matched no definition of the SDL: the stream 9 message of the
    /// rejection, or the S2F42/S2F50 refusing a remote command. It is logged and stored (in
    /// Errors too) and reaches no handler.
    async fn refuse(
        &self,
        conn: &Connection,
        link: &Link,
        message: &Arc<Message>,
        rejection: &Rejection,
    ) {
        let name = conn.name();
        let sf = message.stream_function();
        let mismatch = &rejection.mismatch;
        conn.record_arc(Direction::Received, message, "0".into(), 0, None)
            .await;
        if let Some(body) = rejection.reply_body() {
            let hcack = match &rejection.kind {
                Rejected::RemoteCommand { hcack, .. } => *hcack,
                _ => 0,
            };
            let answer = format!("answered S{}F{} HCACK {hcack}", sf.stream, sf.function + 1);
            error!(equipment = name, %sf, system_bytes = message.system_bytes,
                "remote command refused: {mismatch}; {answer}");
            conn.record_error(
                "validation",
                format!("remote command refused: {mismatch}; {answer}"),
                Some(sf),
                Some(message.clone()),
            )
            .await;
            if message.w_bit {
                let reply = message.reply_with(Some(body));
                conn.record(Direction::Sent, &reply, "0".into(), 0).await;
                match link.post_reply(reply).await {
                    Ok(()) => conn.count_sent(),
                    Err(e) => warn!("cannot send the refusal of {sf}: {e}"),
                }
            }
            return;
        }
        let function = rejection.stream_nine().unwrap_or(7);
        error!(equipment = name, %sf, system_bytes = message.system_bytes,
            "received message does not match the SDL: {mismatch}; answered S9F{function} ({})",
            crate::link::stream_nine_meaning(function));
        conn.record_error(
            "validation",
            format!("does not match the SDL: {mismatch}; answered S9F{function}"),
            Some(sf),
            Some(message.clone()),
        )
        .await;
        stream_nine(conn, link, function, hsms_header(message)).await;
    }

    /// Hands a message the equipment sent (a primary, or the reply to a script's request) to
    /// `onSecsGemRealtimeUpdate`, if the connection's realtime setting includes it, and to the
    /// `[[equipment.handler]]`s that take it. `def`: the SDL definition it matched.
    async fn deliver(
        &self,
        conn: &Connection,
        message: LazyMessage,
        txid: u32,
        request_response: &'static str,
        common_id: String,
        def: Option<&MessageDef>,
    ) {
        let m = message.message();
        let sf = m.stream_function();
        let config = conn.config();
        let message_name = def.and_then(|d| d.name.as_deref());
        let realtime = config
            .realtime
            .includes_matched(sf, config.sdl.as_deref(), def)
            && self.engine.has_handler(REALTIME_HANDLER);
        let mut handlers: Vec<&str> = Vec::new();
        for h in config.handlers_for(sf, message_name) {
            if self.engine.has_handler(&h.handler) {
                handlers.push(&h.handler);
            }
        }
        if !realtime && handlers.is_empty() {
            return;
        }
        let name = conn.name();
        let payload = Payload(vec![
            ("CommonID", Arg::Str(common_id)),
            ("Equipment", Arg::Str(name.to_string())),
            ("Direction", Arg::Str("Received".into())),
            ("RequestResponse", Arg::Str(request_response.into())),
            ("TxID", Arg::Int(i64::from(txid))),
            ("Reply", Arg::Bool(m.w_bit)),
            ("StreamFunction", Arg::Str(sf.to_string())),
            (
                "MessageName",
                Arg::Str(message_name.unwrap_or_default().to_string()),
            ),
            ("SystemBytes", Arg::Int(i64::from(m.system_bytes))),
            ("Timestamp", Arg::Str(now_text(2))),
            ("Message", Arg::Lazy(message)),
        ]);
        if realtime {
            self.engine
                .post(name, REALTIME_HANDLER, payload.clone())
                .await;
        }
        for handler in handlers {
            self.engine.post(name, handler, payload.clone()).await;
        }
    }

    /// S7F3 from the tool: the program is stored for `getToolProgram` and acknowledged
    /// (S7F4 ACKC7 0), refused with ACKC7 3 (matrix overflow) when the store would pass
    /// `[gateway] tool_program_limit` or `tool_program_bytes`, or with ACKC7 1 when it cannot
    /// be stored.
    async fn tool_program_received(
        &self,
        conn: &Connection,
        link: &Link,
        primary: &Message,
        txid: u32,
    ) {
        let quota = self.settings().tool_program_quota();
        let stored = match &self.programs {
            Some(p) => p
                .save_s7f3(primary.body.as_ref(), quota)
                .map_err(|e| e.to_string()),
            None => Err("the program folder could not be opened (see the log)".to_string()),
        };
        let ackc7 = match stored {
            Ok(Saved::Stored(ppid)) => {
                info!(ppid = %ppid, "process program stored (S7F3)");
                0
            }
            Ok(Saved::Full { ppid, why }) => {
                warn!(ppid = %ppid, "S7F3 refused (ACKC7 3, matrix overflow): the tool program store is full: {why} (gateway.tool_program_limit, gateway.tool_program_bytes)");
                3
            }
            Err(e) => {
                error!("S7F3 refused (ACKC7 1): {e}");
                1
            }
        };
        if primary.w_bit && self.transactions.mark_replied(txid) {
            let reply = primary.reply_with(Some(Item::B(vec![ackc7])));
            let id = common_id(conn.config().sdl.as_deref(), &reply, Some(primary), txid);
            conn.record(Direction::Sent, &reply, id, txid).await;
            match link.post_reply(reply).await {
                Ok(()) => conn.count_sent(),
                Err(e) => warn!("cannot send S7F4: {e}"),
            }
        }
    }

    /// Sends the GEM host's default reply to `primary` (see [`gem::Host::default_reply`]),
    /// unless transaction `txid` was answered already.
    ///
    /// `primary_id` is the primary's CommonID: the reply's own if its SDL definition names
    /// none.
    async fn default_reply(
        &self,
        conn: &Connection,
        link: &Link,
        primary: &Message,
        txid: u32,
        primary_id: &str,
    ) {
        let reply = conn
            .with_host(|h| h.default_reply(primary, Instant::now()))
            .flatten();
        let Some(reply) = reply else {
            return;
        };
        if !self.transactions.mark_replied(txid) {
            return;
        }
        let id = conn
            .config()
            .sdl
            .as_deref()
            .and_then(|s| s.common_id_value(&reply))
            .unwrap_or_else(|| primary_id.to_string());
        conn.record(Direction::Sent, &reply, id, txid).await;
        // Queued without waiting for the link to take it: the next primary is handled at once.
        match link.post_reply(reply).await {
            Ok(()) => conn.count_sent(),
            Err(e) => {
                warn!(stream_function = %primary.stream_function(), "cannot send the default reply: {e}")
            }
        }
    }
}

/// The file `secsgate tags` reads: the tag tree, written by the running gateway.
pub const TAG_SNAPSHOT: &str = "data/tags.json";

/// How often the tag snapshot is rewritten while tags change.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// Writes the tag snapshot (`data/tags.json`) once a second while tags change, for
/// `secsgate tags`. Ends when the gateway is gone.
async fn snapshot_tags(core: std::sync::Weak<Core>) {
    let mut written = None;
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let Some(core) = core.upgrade() else {
            return;
        };
        let version = core.tags.version();
        if written != Some(version) {
            written = Some(version);
            let core = core.clone();
            // File writes off the runtime's worker threads.
            let _ = tokio::task::spawn_blocking(move || core.write_tag_snapshot(true)).await;
        }
    }
}

impl Core {
    /// Writes `data/tags.json` (atomically: a temporary file renamed over the old one).
    fn write_tag_snapshot(&self, running: bool) {
        let path = self.dir.join(TAG_SNAPSHOT);
        let json = crate::tags::snapshot_json(&self.tags, running, &now_text(2), date_text);
        let tmp = path.with_extension("json.tmp");
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&tmp, json.to_string()))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            warn!("cannot write the tag snapshot {}: {e}", path.display());
        }
    }
}

/// S7F3 Process Program Send.
const S7F3: StreamFunction = StreamFunction {
    stream: 7,
    function: 3,
};

/// Sends the stream 9 error `S9F{function}` whose MHEAD is the header of the message it is
/// about.
async fn stream_nine(conn: &Connection, link: &Link, function: u8, mhead: [u8; 10]) {
    let mut message = Message::new(
        StreamFunction {
            stream: 9,
            function,
        },
        false,
        Some(Item::B(mhead.to_vec())),
    );
    match link.send(message.clone()).await {
        Ok(system_bytes) => {
            conn.count_sent();
            message.system_bytes = system_bytes;
            conn.record(Direction::Sent, &message, "0".into(), 0).await;
        }
        Err(e) => warn!("cannot send S9F{function}: {e}"),
    }
}

/// The CommonID of a message, as Ignition builds it: the values of the items that its SDL
/// `CommonID` list names (or, for a reply, its request's), else the TxID as text.
fn common_id(sdl: Option<&Sdl>, message: &Message, request: Option<&Message>, txid: u32) -> String {
    sdl.and_then(|s| {
        s.common_id_value(message)
            .or_else(|| request.and_then(|r| s.common_id_value(r)))
    })
    .unwrap_or_else(|| txid.to_string())
}

/// A time as ISO 8601 text (UTC), as `editDate` shows it.
fn date_text(time: SystemTime) -> String {
    let ms = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    DateTime::from_unix_millis(ms).format(2)
}

/// The current UTC time in a TIME format of SEMI E5 (0: YYMMDDhhmmss, 1: YYYYMMDDhhmmsscc,
/// 2: ISO 8601).
fn now_text(time_format: u64) -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    DateTime::from_unix_millis(ms).format(time_format)
}

async fn receive_loop(core: Arc<Core>, conn: Arc<Connection>, link: Link, mut incoming: Incoming) {
    while let Some(received) = incoming.recv().await {
        match received {
            Received::Message(m) => {
                conn.count_received();
                let expected = conn.config().transport.device_id();
                if m.device_id & 0x7fff != expected & 0x7fff {
                    // E5: a message for another device ID is refused with S9F1 naming it;
                    // no handler sees it and the GEM host ignores it.
                    let sf = m.stream_function();
                    error!(equipment = %conn.name(), %sf, device_id = m.device_id, expected,
                        "message for an unrecognized device ID; answered S9F1");
                    let m = Arc::new(m);
                    conn.record_arc(Direction::Received, &m, "0".into(), 0, None)
                        .await;
                    conn.record_error(
                        "device id",
                        format!(
                            "device ID {} where {expected} was expected; answered S9F1",
                            m.device_id
                        ),
                        Some(sf),
                        Some(m.clone()),
                    )
                    .await;
                    stream_nine(&conn, &link, 1, hsms_header(&m)).await;
                    continue;
                }
                conn.host_receive(&m);
                core.on_primary(&conn, &link, m).await
            }
            Received::Malformed {
                stream_function,
                error,
                header,
                ..
            } => {
                conn.count_received();
                error!(equipment = %conn.name(), %stream_function, %error, "malformed message from the equipment; answered S9F7 (illegal data)");
                conn.record_error(
                    "malformed",
                    format!("{error}; answered S9F7"),
                    Some(stream_function),
                    None,
                )
                .await;
                stream_nine(&conn, &link, 7, header).await;
            }
        }
    }
}

/// A connection's GEM host task: feeds [`gem::Host`] the link's state changes, the fate of
/// its S1F13s and its retry timer, carries out its actions on the link, and keeps the
/// connection's link state for its [`Status`]. Received primaries reach the host from the
/// receive loop, which wakes this task. Ends when the link shuts down.
async fn host_loop(conn: Arc<Connection>, link: Link) {
    let mut watch = link.watch_state();
    let meter = link.meter();
    let mut outcomes: JoinSet<(gem::Tag, gem::Outcome)> = JoinSet::new();
    let mut state_changed = true;
    // The link's session the host is up on, if it is.
    let mut up_on: Option<u64> = None;
    loop {
        if state_changed {
            let state = *watch.borrow_and_update();
            if conn.link().is_none() {
                break;
            }
            let session = meter.sessions();
            let ended = up_on.is_some_and(|s| state != LinkState::Selected || s != session);
            if ended || state != LinkState::Selected {
                // Whatever was in flight ended with the session.
                outcomes.abort_all();
            }
            if ended && state == LinkState::Selected {
                // A new session began before this task saw the last one end: the host hears
                // of the end first, so that it establishes communication anew.
                conn.link_changed(LinkState::Disconnected, true, Instant::now());
            }
            up_on = (state == LinkState::Selected).then_some(session);
            conn.link_changed(state, link.last_problem().is_some(), Instant::now());
            state_changed = false;
        }
        carry_out(&conn, &link, &mut outcomes).await;
        let deadline = conn.host.lock().ok().and_then(|h| h.poll_timeout());
        tokio::select! {
            changed = watch.changed() => {
                if changed.is_err() {
                    break;
                }
                state_changed = true;
            }
            Some(joined) = outcomes.join_next(), if !outcomes.is_empty() => {
                if let Ok((tag, outcome)) = joined {
                    conn.with_host(|h| h.outcome(tag, outcome, Instant::now()));
                }
            }
            _ = conn.host_changed.notified() => {}
            _ = sleep_until(deadline) => {
                conn.with_host(|h| h.handle_timeout(Instant::now()));
            }
        }
    }
    if conn.link().is_none() {
        // Disabled: no link to communicate over (a link that replaced this one is left alone).
        conn.with_host(|h| h.link_down(Instant::now()));
    }
}

/// Carries out the GEM host's actions on the link: its S1F13 goes with
/// [`Link::send_request`], and the reply or failure becomes an outcome in `outcomes`.
async fn carry_out(
    conn: &Arc<Connection>,
    link: &Link,
    outcomes: &mut JoinSet<(gem::Tag, gem::Outcome)>,
) {
    let actions: Vec<gem::Action> = conn
        .with_host(|h| std::iter::from_fn(|| h.poll_action()).collect())
        .unwrap_or_default();
    for action in actions {
        // The host only ever sends; remote commands are the equipment's.
        let gem::Action::Send { message, tag } = action else {
            continue;
        };
        let Some(tag) = tag else {
            match link.send(message.clone()).await {
                Ok(system_bytes) => {
                    conn.count_sent();
                    let sent = Message {
                        system_bytes,
                        ..message
                    };
                    conn.record(Direction::Sent, &sent, "0".into(), 0).await;
                }
                Err(e) => debug!(equipment = %conn.name(), "not sent: {e}"),
            }
            continue;
        };
        let header = Message {
            body: None,
            device_id: conn.config().transport.device_id(),
            ..message.clone()
        };
        let request = message.clone();
        match link.send_request(message).await {
            Ok(pending) => {
                let sent = Arc::new(Message {
                    system_bytes: pending.system_bytes,
                    ..request
                });
                conn.record_arc(Direction::Sent, &sent, "0".into(), 0, None)
                    .await;
                conn.count_sent();
                let shead = hsms_header(&Message {
                    system_bytes: pending.system_bytes,
                    ..header
                });
                let conn = conn.clone();
                outcomes.spawn(async move {
                    let result = pending.wait().await;
                    record_outcome(&conn, &sent, &result, "0".into(), 0).await;
                    let outcome = match result {
                        Ok(reply) => gem::Outcome::Reply(reply),
                        Err(LinkError::Timeout { .. }) => gem::Outcome::Timeout { shead },
                        Err(_) => gem::Outcome::Failed,
                    };
                    (tag, outcome)
                });
            }
            Err(e) => {
                if matches!(e, LinkError::NotReady(_)) {
                    // The session ended meanwhile: its end is logged, and the host hears of it.
                    debug!(equipment = %conn.name(), stream_function = %header.stream_function(), "not sent: {e}");
                } else {
                    warn!(equipment = %conn.name(), stream_function = %header.stream_function(), "not sent: {e}");
                }
                conn.with_host(|h| h.outcome(tag, gem::Outcome::Failed, Instant::now()));
            }
        }
    }
}

/// Stores how a request the gateway sent ended: its reply, or the failure (T3 timeout, S9Fx
/// answer, connection lost) in `<prefix>Errors`.
async fn record_outcome(
    conn: &Connection,
    request: &Arc<Message>,
    result: &Result<Message, LinkError>,
    common_id: String,
    txid: u32,
) {
    let sf = request.stream_function();
    match result {
        Ok(reply) => {
            let name = conn.definition_name(reply, false);
            conn.record_named(Direction::Received, reply, common_id, txid, name.as_deref())
                .await
        }
        Err(e) => {
            let kind = match e {
                LinkError::Timeout { .. } => "timeout",
                LinkError::StreamNine { message, .. } => {
                    conn.record(Direction::Received, message, common_id, txid)
                        .await;
                    "rejected"
                }
                LinkError::Rejected { .. } => "rejected",
                _ => "connection",
            };
            conn.record_error(kind, e.to_string(), Some(sf), Some(request.clone()))
                .await;
        }
    }
}

/// The monitor's word for a direction.
fn way(direction: Direction) -> Way {
    match direction {
        Direction::Sent => Way::Sent,
        Direction::Received => Way::Received,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// `system.secsgem`'s view of the gateway.
struct GatewayHost {
    core: std::sync::Weak<Core>,
}

impl GatewayHost {
    fn core(&self) -> Result<Arc<Core>, HostError> {
        self.core.upgrade().ok_or(HostError::Stopped)
    }

    /// A connection by name, or which names there are.
    fn connection(core: &Core, name: &str) -> Result<Arc<Connection>, HostError> {
        let map = core
            .connections
            .read()
            .map_err(|_| HostError::Unavailable("connections"))?;
        map.get(name).cloned().ok_or_else(|| {
            let mut known: Vec<String> = map.keys().cloned().collect();
            known.sort();
            HostError::UnknownEquipment {
                name: name.to_string(),
                known,
            }
        })
    }

    /// The link of a connection that can exchange messages now.
    fn communicating_link(conn: &Connection) -> Result<Link, HostError> {
        let status = conn.status();
        match (status, conn.link()) {
            (Status::Communicating, Some(link)) => Ok(link),
            _ => Err(HostError::NotCommunicating {
                name: conn.name().to_string(),
                status: status.to_string(),
            }),
        }
    }

    /// Checks a message a script sends against the equipment's SDL, if it has one.
    fn programs(core: &Core) -> Result<&ToolPrograms, HostError> {
        core.programs.as_ref().ok_or_else(|| {
            HostError::Programs(
                "the process program folder (data/programs) could not be opened; see the log"
                    .into(),
            )
        })
    }

    /// Checks a message a script sends against the equipment's SDL; returns the name of
    /// the definition it matched, if a named one.
    fn check_sdl(conn: &Connection, message: &Message) -> Result<Option<String>, HostError> {
        match &conn.config().sdl {
            Some(sdl) => sdl
                .matching(message, true)
                .map(|m| m.definition.name.clone())
                .map_err(|r| {
                    HostError::InvalidMessage(format!(
                        "{} for '{}' does not match its SDL: {}",
                        message.stream_function(),
                        conn.name(),
                        r.mismatch
                    ))
                }),
            None => Ok(None),
        }
    }
}

impl Host for GatewayHost {
    fn send_request(
        &self,
        sf: StreamFunction,
        reply: bool,
        body: Option<Item>,
        equipment: &str,
    ) -> Result<u32, HostError> {
        let core = self.core()?;
        let conn = Self::connection(&core, equipment)?;
        let link = Self::communicating_link(&conn)?;
        let message = Message::new(sf, reply, body);
        let name = Self::check_sdl(&conn, &message)?;
        let send_error = |e: &dyn std::fmt::Display| HostError::Send {
            sf,
            equipment: equipment.to_string(),
            reason: e.to_string(),
        };
        if reply && sf.is_primary() {
            let mut request = message.clone();
            let pending = core
                .runtime
                .block_on(link.send_request(message))
                .map_err(|e| send_error(&e))?;
            conn.count_sent();
            let txid = core.transactions.sent(equipment, sf, ReplyState::Pending);
            request.system_bytes = pending.system_bytes;
            let request = Arc::new(request);
            let id = common_id(conn.config().sdl.as_deref(), &request, None, txid);
            core.runtime.block_on(conn.record_arc(
                Direction::Sent,
                &request,
                id.clone(),
                txid,
                name.as_deref(),
            ));
            // The reply is kept however late it comes, then goes to the realtime handler if
            // the connection's realtime setting includes its S/F.
            let task_core = core.clone();
            core.runtime.spawn(async move {
                let result = pending.wait().await;
                record_outcome(&conn, &request, &result, id, txid).await;
                let reply = result.as_ref().ok().map(|m| Arc::new(m.clone()));
                task_core.transactions.complete(txid, result);
                if let Some(reply) = reply {
                    conn.count_received();
                    let sdl = conn.config().sdl.clone();
                    let matched = sdl.as_deref().and_then(|s| s.matching(&reply, false).ok());
                    let def = matched.map(|m| m.definition);
                    let id = match (sdl.as_deref(), def) {
                        (Some(s), Some(d)) => s
                            .common_id_by(d, &reply)
                            .or_else(|| s.common_id_value(&request))
                            .unwrap_or_else(|| txid.to_string()),
                        _ => common_id(sdl.as_deref(), &reply, Some(&request), txid),
                    };
                    conn.message_tags(&reply, &id, txid, def);
                    let lazy = LazyMessage::new(reply.clone(), sdl.clone())
                        .with_definition(matched.map(|m| m.index));
                    task_core
                        .deliver(&conn, lazy, txid, "Response", id, def)
                        .await;
                }
            });
            Ok(txid)
        } else {
            let mut sent = message.clone();
            sent.system_bytes = core
                .runtime
                .block_on(link.send(message))
                .map_err(|e| send_error(&e))?;
            conn.count_sent();
            let txid = core
                .transactions
                .sent(equipment, sf, ReplyState::NoReplyExpected);
            let id = common_id(conn.config().sdl.as_deref(), &sent, None, txid);
            core.runtime.block_on(conn.record_named(
                Direction::Sent,
                &sent,
                id,
                txid,
                name.as_deref(),
            ));
            Ok(txid)
        }
    }

    fn get_response(
        &self,
        transaction_id: u32,
        equipment: &str,
        timeout: Duration,
    ) -> Result<Option<serde_json::Value>, HostError> {
        let core = self.core()?;
        let conn = Self::connection(&core, equipment)?;
        let reply = core
            .transactions
            .wait_reply(
                transaction_id,
                equipment,
                timeout,
                crate::script::guard::current().as_ref(),
            )
            .map_err(HostError::Transaction)?;
        Ok(reply.map(|m| {
            let mut value = secs_json::message_to_json(&m);
            if let Some(sdl) = &conn.config().sdl {
                sdl.annotate(&m, &mut value);
            }
            value
        }))
    }

    fn send_response(
        &self,
        transaction_id: u32,
        system_bytes: u32,
        sf: StreamFunction,
        body: Option<Item>,
        equipment: &str,
    ) -> Result<(), HostError> {
        let core = self.core()?;
        let conn = Self::connection(&core, equipment)?;
        let link = conn.link().ok_or_else(|| HostError::Disabled {
            name: equipment.to_string(),
        })?;
        match core.transactions.get(transaction_id) {
            Some(transactions::Entry::Received {
                equipment: e,
                system_bytes: sb,
                stream_function,
                w_bit,
                ..
            }) => {
                if e != equipment || sb != system_bytes {
                    return Err(HostError::Transaction(format!(
                        "transaction {transaction_id} is {stream_function} from '{e}' with system bytes {sb}, not system bytes {system_bytes} from '{equipment}'; pass payload['TxID'] and payload['SystemBytes'] of the message you answer"
                    )));
                }
                if !w_bit {
                    return Err(HostError::Transaction(format!(
                        "transaction {transaction_id} is {stream_function} without W-bit: the equipment wants no reply"
                    )));
                }
                if sf.stream != stream_function.stream
                    || sf.function != stream_function.function + 1
                {
                    return Err(HostError::InvalidMessage(format!(
                        "{sf} is not the reply to {stream_function}; answer it with S{}F{}",
                        stream_function.stream,
                        stream_function.function + 1
                    )));
                }
            }
            _ => {
                return Err(HostError::Transaction(format!(
                    "transaction {transaction_id} is not a message received from '{equipment}'; sendResponse answers the payload['TxID'] of a custom response handler"
                )));
            }
        }
        let mut checked = Message::new(sf, false, body);
        checked.system_bytes = system_bytes;
        // Checked before the transaction counts as answered, so a refused reply still leaves
        // the default reply to the fallback.
        let name = Self::check_sdl(&conn, &checked)?;
        if !core.transactions.mark_replied(transaction_id) {
            return Err(HostError::AlreadyAnswered { transaction_id });
        }
        let reply = checked;
        let id = common_id(conn.config().sdl.as_deref(), &reply, None, transaction_id);
        core.runtime.block_on(conn.record_named(
            Direction::Sent,
            &reply,
            id,
            transaction_id,
            name.as_deref(),
        ));
        core.runtime
            .block_on(link.send(reply))
            .map(|_| conn.count_sent())
            .map_err(|e| HostError::Send {
                sf,
                equipment: equipment.to_string(),
                reason: e.to_string(),
            })
    }

    fn copy_equipment(&self, copy: CopyEquipment) -> Result<(), HostError> {
        let core = self.core()?;
        let source = Self::connection(&core, &copy.source)?;
        if Self::connection(&core, &copy.name).is_ok() {
            return Err(HostError::EquipmentExists { name: copy.name });
        }
        let mut config = EquipmentConfig::clone(&source.config());
        config.name = copy.name.clone();
        config.transport.set_name(copy.name.clone());
        config.enabled = copy.enabled;
        config.transport.set_device_id(copy.device_id);
        if let Some(d) = copy.description {
            config.description = d;
        }
        let active = match (copy.active_address, copy.active_port) {
            (Some(a), Some(p)) => Some(format!("{a}:{p}")),
            (None, Some(p)) => Some(format!("127.0.0.1:{p}")),
            _ => None,
        };
        let passive = match (copy.passive_address, copy.passive_port) {
            (Some(a), Some(p)) => Some(format!("{a}:{p}")),
            // A listener binds loopback unless an address is given.
            (None, Some(p)) => Some(format!("127.0.0.1:{p}")),
            _ => None,
        };
        match &mut config.transport {
            Transport::Hsms(hsms) => {
                hsms.mode = match (active, passive) {
                    (Some(connect), Some(listen)) => Mode::Alternating { connect, listen },
                    (Some(a), None) => Mode::Active(a),
                    (None, Some(p)) => Mode::Passive(p),
                    (None, None) => return Err(HostError::NoAddress),
                }
            }
            Transport::Secs1(secs1) => {
                if matches!(secs1.line, Line::Serial(_)) {
                    return Err(HostError::SerialCopy {
                        source_name: copy.source.clone(),
                    });
                }
                // SECS-I over TCP connects or listens; with both, it connects.
                secs1.line = match (active, passive) {
                    (Some(a), _) => Line::TcpConnect(a),
                    (None, Some(p)) => Line::TcpListen(p),
                    (None, None) => return Err(HostError::NoAddress),
                }
            }
        }
        core.runtime
            .block_on(core.add(config))
            .map(|_| info!(equipment = %copy.name, source = %copy.source, "equipment copied"))
            .map_err(|e| HostError::Start {
                name: copy.name.clone(),
                reason: e.to_string(),
            })
    }

    fn enable_disable_equipment(&self, enable: bool, names: &[String]) -> Vec<HostError> {
        let core = match self.core() {
            Ok(c) => c,
            Err(e) => return vec![e],
        };
        names
            .iter()
            .filter_map(|name| core.runtime.block_on(core.set_enabled(name, enable)).err())
            .collect()
    }

    fn tool_program(&self, ppid: &str) -> Result<Option<ToolProgram>, HostError> {
        let core = self.core()?;
        let programs = Self::programs(&core)?;
        let program = programs
            .get(ppid)
            .map_err(|e| HostError::Programs(e.to_string()))?;
        Ok(program.map(|p| ToolProgram {
            ppid: p.ppid,
            edit_date: date_text(p.edited),
            body_format: p.format.code().to_string(),
            body: p.body,
        }))
    }

    fn tool_programs(&self) -> Result<Vec<(String, String, String)>, HostError> {
        let core = self.core()?;
        let programs = Self::programs(&core)?;
        let list = programs
            .list()
            .map_err(|e| HostError::Programs(e.to_string()))?;
        Ok(list
            .into_iter()
            .map(|(ppid, edited, format)| (ppid, date_text(edited), format.code().to_string()))
            .collect())
    }

    fn delete_tool_program(&self, ppid: &str) -> Result<bool, HostError> {
        let core = self.core()?;
        let programs = Self::programs(&core)?;
        let deleted = programs
            .delete(ppid)
            .map_err(|e| HostError::Programs(e.to_string()))?;
        if deleted {
            info!(ppid, "process program deleted");
        }
        Ok(deleted)
    }

    fn tags(&self) -> Result<Arc<Tags>, HostError> {
        Ok(self.core()?.tags.clone())
    }

    fn database(&self, name: &str) -> Result<crate::config::DatabaseLocation, HostError> {
        let core = self.core()?;
        if name.is_empty() {
            // The store's database: PostgreSQL when the store is there, else the project's
            // own SQLite file.
            return Ok(match &core.store_settings.url {
                Some(url) => crate::config::DatabaseLocation::Postgres(url.clone()),
                None => crate::config::DatabaseLocation::Sqlite(
                    core.dir.join(crate::config::DEFAULT_DATABASE),
                ),
            });
        }
        let databases = core
            .databases
            .read()
            .map_err(|_| HostError::Unavailable("databases"))?;
        databases
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.location.clone())
            .ok_or_else(|| HostError::UnknownDatabase {
                name: name.to_string(),
                known: databases.iter().map(|d| d.name.clone()).collect(),
            })
    }

    fn start_sim_event_run(&self, simulator: &str, run: &str) -> Result<(), HostError> {
        let core = self.core()?;
        let sims = core
            .simulators
            .lock()
            .map_err(|_| HostError::Unavailable("simulators"))?;
        let sim = sims.get(simulator).ok_or_else(|| {
            let mut running: Vec<String> = sims.keys().cloned().collect();
            running.sort();
            HostError::UnknownSimulator {
                name: simulator.to_string(),
                running,
            }
        })?;
        sim.start_event_run(run)
            .map_err(|e| HostError::Simulator(e.to_string()))
    }
}
