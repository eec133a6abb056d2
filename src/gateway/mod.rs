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

pub mod host_replies;
pub mod transactions;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::{EquipmentConfig, GatewaySettings, Project, SimulatorConfig};
use crate::hsms::driver::{self, Mode};
use crate::link::{Incoming, Link, LinkState, Received};
use crate::script::{
    Arg, CopyEquipment, EngineSettings, Host, HostError, LazyMessage, Outcome, Payload,
    ScriptEngine,
};
use crate::secs2::{Item, Message, StreamFunction, json as secs_json};
use crate::sim::{SimConfig, Simulator};
use transactions::{ReplyState, Transactions};

/// Name of the realtime handler (`handlers/onSecsGemRealtimeUpdate.py`).
pub const REALTIME_HANDLER: &str = "onSecsGemRealtimeUpdate";
/// Name of the script run once at start (`handlers/onStartup.py`).
pub const STARTUP_HANDLER: &str = "onStartup";

/// The state of an equipment connection, as shown to engineers.
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

/// One equipment connection.
pub struct Connection {
    pub config: EquipmentConfig,
    link: Mutex<Option<Link>>,
    status: watch::Sender<Status>,
    local_addr: Mutex<Option<SocketAddr>>,
}

impl Connection {
    /// The current status.
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// A watch on the status.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// The link, while enabled.
    pub fn link(&self) -> Option<Link> {
        self.link.lock().ok().and_then(|l| l.clone())
    }

    /// The listening address (passive and alternating modes).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr.lock().ok().and_then(|a| *a)
    }

    fn set_status(&self, status: Status) {
        let old = self.status.send_replace(status);
        if old != status {
            info!(equipment = %self.config.name, from = %old, to = %status, "equipment status");
        }
    }
}

struct Core {
    runtime: tokio::runtime::Handle,
    simulators: Mutex<HashMap<String, Simulator>>,
    settings: GatewaySettings,
    engine: ScriptEngine,
    transactions: Arc<Transactions>,
    connections: RwLock<HashMap<String, Arc<Connection>>>,
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
            },
        );
        let simulators = start_simulators(&project.simulators).await;
        let core = Arc::new(Core {
            runtime: tokio::runtime::Handle::current(),
            simulators: Mutex::new(simulators),
            settings: project.gateway.clone(),
            engine,
            transactions: Arc::new(Transactions::new(project.gateway.response_retention)),
            connections: RwLock::new(HashMap::new()),
        });
        core.engine.set_host(Arc::new(GatewayHost {
            core: Arc::downgrade(&core),
        }));
        for config in &project.equipment {
            if let Err(e) = core.add(config.clone()).await {
                error!(equipment = %config.name, "cannot start: {e}");
            }
        }
        let gateway = Gateway { core };
        if gateway.core.engine.has_handler(STARTUP_HANDLER) {
            let g = gateway.clone();
            tokio::spawn(async move { g.run_startup().await });
        }
        gateway
    }

    /// The script engine.
    pub fn engine(&self) -> &ScriptEngine {
        &self.core.engine
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
        let wait = self.core.settings.startup_wait;
        let conns: Vec<Arc<Connection>> = self
            .core
            .connections
            .read()
            .map(|c| c.values().filter(|c| c.config.enabled).cloned().collect())
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
        let names: Vec<String> = conns.iter().map(|c| c.config.name.clone()).collect();
        let communicating: Vec<String> = conns
            .iter()
            .filter(|c| c.status() == Status::Communicating)
            .map(|c| c.config.name.clone())
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
            c.set_status(Status::Disabled);
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
    }

    /// The listening address of an in-process simulator.
    pub fn simulator_addr(&self, name: &str) -> Option<SocketAddr> {
        self.core
            .simulators
            .lock()
            .ok()
            .and_then(|s| s.get(name).and_then(Simulator::local_addr))
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
        let mut settings =
            driver::Settings::new(Mode::Passive(format!("{}:{}", sim.address, sim.port)));
        settings.device_id = sim.device_id;
        match Simulator::start(sim.name.clone(), config, settings, sim.spool_dir.clone()).await {
            Ok(s) => {
                running.insert(sim.name.clone(), s);
            }
            Err(e) => {
                error!(simulator = %sim.name, "cannot start on {}:{}: {e}", sim.address, sim.port)
            }
        }
    }
    running
}

impl Core {
    /// Adds a connection and starts it if enabled.
    async fn add(self: &Arc<Self>, config: EquipmentConfig) -> std::io::Result<Arc<Connection>> {
        let name = config.name.clone();
        let enabled = config.enabled;
        let (status, _) = watch::channel(if enabled {
            Status::Connecting
        } else {
            Status::Disabled
        });
        let conn = Arc::new(Connection {
            config,
            link: Mutex::new(None),
            status,
            local_addr: Mutex::new(None),
        });
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
        conn.set_status(Status::Connecting);
        let endpoint = driver::start(conn.config.hsms.clone()).await?;
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
        tokio::spawn(status_loop(self.clone(), conn.clone(), endpoint.link));
        Ok(())
    }

    async fn disable(&self, conn: &Connection) {
        let link = conn.link.lock().ok().and_then(|mut l| l.take());
        if let Some(link) = link {
            link.shutdown().await;
        }
        conn.set_status(Status::Disabled);
    }

    /// Handles a primary the equipment sent.
    async fn on_primary(self: &Arc<Self>, conn: &Arc<Connection>, link: &Link, message: Message) {
        let name = conn.config.name.as_str();
        let sf = message.stream_function();
        debug!(equipment = name, %sf, message = %message, "received");
        if !sf.is_primary() {
            warn!(equipment = name, %sf, system_bytes = message.system_bytes, "reply for no open transaction; dropped");
            return;
        }
        let txid = self.transactions.received(name, &message);
        let sdl = conn.config.sdl.as_deref();
        if let Some(Err(mismatch)) = sdl.map(|s| s.check(&message, false)) {
            warn!(equipment = name, %sf, "received message does not match the SDL: {mismatch}");
        }
        // The JSON text of the message is made only if a handler reads payload["Message"].
        let message = Arc::new(message);
        let message_json = LazyMessage::new(message.clone(), conn.config.sdl.clone());
        let custom = conn
            .config
            .custom_responses
            .iter()
            .find(|c| c.stream_function == sf);
        match custom {
            Some(c) if self.engine.has_handler(&c.handler) => {
                let payload = Payload(vec![
                    ("Equipment", Arg::Str(name.to_string())),
                    ("TxID", Arg::Int(i64::from(txid))),
                    ("SystemBytes", Arg::Int(i64::from(message.system_bytes))),
                    ("StreamFunction", Arg::Str(sf.to_string())),
                    ("Message", Arg::Lazy(message_json.clone())),
                ]);
                let outcome = self.engine.submit(name, &c.handler, payload).await;
                let core = self.clone();
                let (conn2, link2, primary, handler) = (
                    conn.clone(),
                    link.clone(),
                    message.clone(),
                    c.handler.clone(),
                );
                tokio::spawn(async move {
                    let limit = core.settings.custom_response_timeout;
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
                        Ok(Ok(Outcome::NoHandler)) | Ok(Err(_)) => "is not loaded".to_string(),
                        Err(_) => format!("did not reply within {limit:?}"),
                    };
                    if core.transactions.is_replied(txid) {
                        return;
                    }
                    error!(equipment = %conn2.config.name, %sf, handler = %handler, txid,
                        "custom response handler {why}; sending the default reply");
                    core.default_reply(&link2, &primary, txid).await;
                });
            }
            Some(c) => {
                warn!(equipment = name, %sf, handler = %c.handler, "custom response handler is not loaded; sending the default reply");
                self.default_reply(link, &message, txid).await;
            }
            None => {
                if sf
                    == (StreamFunction {
                        stream: 1,
                        function: 13,
                    })
                    && conn.config.establish_communication
                {
                    conn.set_status(Status::Communicating);
                }
                self.default_reply(link, &message, txid).await;
            }
        }
        if conn.config.realtime.includes(sf, sdl) && self.engine.has_handler(REALTIME_HANDLER) {
            self.engine
                .post(
                    name,
                    REALTIME_HANDLER,
                    Payload(vec![
                        ("CommonID", Arg::Int(i64::from(txid))),
                        ("Equipment", Arg::Str(name.to_string())),
                        ("Direction", Arg::Str("Received".into())),
                        ("RequestResponse", Arg::Str("Request".into())),
                        ("TxID", Arg::Int(i64::from(txid))),
                        ("Reply", Arg::Bool(message.w_bit)),
                        ("Message", Arg::Lazy(message_json)),
                        ("StreamFunction", Arg::Str(sf.to_string())),
                        ("SystemBytes", Arg::Int(i64::from(message.system_bytes))),
                        ("Timestamp", Arg::Str(host_replies::now_text(2))),
                    ]),
                )
                .await;
        }
    }

    async fn default_reply(&self, link: &Link, primary: &Message, txid: u32) {
        let Some(reply) = host_replies::default_reply(primary) else {
            return;
        };
        if !self.transactions.mark_replied(txid) {
            return;
        }
        debug!(reply = %reply, "sending default reply");
        if let Err(e) = link.send(reply).await {
            warn!(stream_function = %primary.stream_function(), "cannot send the default reply: {e}");
        }
    }

    /// GEM host: establish communication (S1F13) after each select, retrying after T5.
    async fn establish(self: Arc<Self>, conn: Arc<Connection>, link: Link) {
        let retry = conn.config.hsms.protocol.t5.max(Duration::from_secs(1));
        loop {
            if link.state() != LinkState::Selected || conn.status() == Status::Communicating {
                return;
            }
            let s1f13 = Message::new(
                StreamFunction {
                    stream: 1,
                    function: 13,
                },
                true,
                Some(Item::L(vec![])),
            );
            match link.request(s1f13).await {
                Ok(reply) if reply.function == 14 && commack(&reply) == Some(0) => {
                    conn.set_status(Status::Communicating);
                    return;
                }
                Ok(reply) => {
                    warn!(equipment = %conn.config.name, reply = %reply, "establish communication refused; retrying in {retry:?}")
                }
                Err(e) => {
                    warn!(equipment = %conn.config.name, "establish communication failed: {e}; retrying in {retry:?}")
                }
            }
            tokio::time::sleep(retry).await;
        }
    }
}

/// COMMACK of an S1F14 body `<L [2] <B COMMACK> <L ...>>`.
fn commack(reply: &Message) -> Option<u8> {
    match reply.body.as_ref()?.as_list()? {
        [ack, ..] => ack.as_int().and_then(|v| u8::try_from(v).ok()),
        _ => None,
    }
}

async fn receive_loop(core: Arc<Core>, conn: Arc<Connection>, link: Link, mut incoming: Incoming) {
    while let Some(received) = incoming.recv().await {
        match received {
            Received::Message(m) => core.on_primary(&conn, &link, m).await,
            Received::Malformed {
                stream_function,
                error,
                ..
            } => {
                warn!(equipment = %conn.config.name, %stream_function, %error, "malformed message from the equipment; dropped")
            }
        }
    }
}

async fn status_loop(core: Arc<Core>, conn: Arc<Connection>, link: Link) {
    let mut watch = link.watch_state();
    let mut ever_connected = false;
    loop {
        let state = *watch.borrow_and_update();
        let still_ours = conn.link().is_some();
        if !still_ours {
            return;
        }
        match state {
            LinkState::Disconnected => {
                conn.set_status(if ever_connected || link.last_problem().is_some() {
                    Status::NotConnected
                } else {
                    Status::Connecting
                });
            }
            LinkState::Connected => {
                ever_connected = true;
                conn.set_status(Status::NotSelected);
            }
            LinkState::Selected => {
                ever_connected = true;
                if conn.config.establish_communication {
                    if conn.status() != Status::Communicating {
                        conn.set_status(Status::Selected);
                        tokio::spawn(core.clone().establish(conn.clone(), link.clone()));
                    }
                } else {
                    conn.set_status(Status::Communicating);
                }
            }
        }
        if watch.changed().await.is_err() {
            return;
        }
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
                name: conn.config.name.clone(),
                status: status.to_string(),
            }),
        }
    }

    /// Checks a message a script sends against the equipment's SDL, if it has one.
    fn check_sdl(conn: &Connection, message: &Message) -> Result<(), HostError> {
        match &conn.config.sdl {
            Some(sdl) => sdl.check(message, true).map_err(|m| {
                HostError::InvalidMessage(format!(
                    "{} for '{}' does not match its SDL: {m}",
                    message.stream_function(),
                    conn.config.name
                ))
            }),
            None => Ok(()),
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
        Self::check_sdl(&conn, &message)?;
        let send_error = |e: &dyn std::fmt::Display| HostError::Send {
            sf,
            equipment: equipment.to_string(),
            reason: e.to_string(),
        };
        debug!(equipment, message = %message, "sending");
        if reply && sf.is_primary() {
            let pending = core
                .runtime
                .block_on(link.send_request(message))
                .map_err(|e| send_error(&e))?;
            let txid = core.transactions.sent(equipment, sf, ReplyState::Pending);
            // The reply is kept however late it comes.
            let table = core.transactions.clone();
            core.runtime.spawn(async move {
                let result = pending.wait().await;
                table.complete(txid, result);
            });
            Ok(txid)
        } else {
            core.runtime
                .block_on(link.send(message))
                .map_err(|e| send_error(&e))?;
            Ok(core
                .transactions
                .sent(equipment, sf, ReplyState::NoReplyExpected))
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
            .wait_reply(transaction_id, equipment, timeout)
            .map_err(HostError::Transaction)?;
        Ok(reply.map(|m| {
            let mut value = secs_json::message_to_json(&m);
            if let Some(sdl) = &conn.config.sdl {
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
                ..
            }) => {
                if e != equipment || sb != system_bytes {
                    return Err(HostError::Transaction(format!(
                        "transaction {transaction_id} is {stream_function} from '{e}' with system bytes {sb}, not system bytes {system_bytes} from '{equipment}'; pass payload['TxID'] and payload['SystemBytes'] of the message you answer"
                    )));
                }
                if sf.stream != stream_function.stream
                    || sf.function != stream_function.function + 1
                {
                    warn!(equipment, "answering {stream_function} with {sf}");
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
        Self::check_sdl(&conn, &checked)?;
        if !core.transactions.mark_replied(transaction_id) {
            return Err(HostError::AlreadyAnswered { transaction_id });
        }
        let reply = checked;
        debug!(equipment, message = %reply, "sending response");
        core.runtime
            .block_on(link.send(reply))
            .map(|_| ())
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
        let mut config = source.config.clone();
        config.name = copy.name.clone();
        config.hsms.name = copy.name.clone();
        config.enabled = copy.enabled;
        config.hsms.device_id = copy.device_id;
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
            (None, Some(p)) => Some(format!("0.0.0.0:{p}")),
            _ => None,
        };
        config.hsms.mode = match (active, passive) {
            (Some(connect), Some(listen)) => Mode::Alternating { connect, listen },
            (Some(a), None) => Mode::Active(a),
            (None, Some(p)) => Mode::Passive(p),
            (None, None) => return Err(HostError::NoAddress),
        };
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
        let mut problems = Vec::new();
        for name in names {
            match Self::connection(&core, name) {
                Err(e) => problems.push(e),
                Ok(conn) if enable => {
                    if let Err(e) = core.runtime.block_on(core.enable(&conn)) {
                        problems.push(HostError::Start {
                            name: name.clone(),
                            reason: e.to_string(),
                        });
                    }
                }
                Ok(conn) => core.runtime.block_on(core.disable(&conn)),
            }
        }
        problems
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
