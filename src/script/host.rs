//! What `system.secsgem` needs from the gateway, and which gateway a Python thread talks to.
//!
//! Each [`ScriptEngine`](super::ScriptEngine) owns its gateway handle
//! ([`ScriptEngine::set_host`](super::ScriptEngine::set_host)); its worker threads make it
//! current while they run jobs, so several gateways can run in one process (each with its own
//! engine) while the interpreter and the `system` module stay process-wide.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::secs2::{Item, StreamFunction};

/// Why a `system.secsgem` call failed. Python sees `SecsGemError` with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No connection of that name in this gateway.
    #[error("unknown equipment '{name}' (known: {})", known.join(", "))]
    UnknownEquipment { name: String, known: Vec<String> },
    /// The connection exists but cannot exchange messages now.
    #[error(
        "equipment '{name}' is not communicating (status: {status}); wait until it is Communicating, or enable it with enableDisableEquipment"
    )]
    NotCommunicating { name: String, status: String },
    /// The connection is switched off.
    #[error(
        "equipment '{name}' is disabled; enable it with enableDisableEquipment(True, ['{name}'])"
    )]
    Disabled { name: String },
    /// The link refused or failed to send.
    #[error("cannot send {sf} to '{equipment}': {reason}")]
    Send {
        sf: StreamFunction,
        equipment: String,
        reason: String,
    },
    /// The message does not fit the equipment's SDL (or is otherwise not sendable).
    #[error("{0}")]
    InvalidMessage(String),
    /// The transaction ID does not name a transaction this call can use.
    #[error("{0}")]
    Transaction(String),
    /// `sendResponse` for a primary that was already answered.
    #[error(
        "transaction {transaction_id} was already answered (the default reply goes out when a handler is too late)"
    )]
    AlreadyAnswered { transaction_id: u32 },
    /// `copyEquipment` to a name in use.
    #[error("equipment '{name}' already exists; choose another name for the copy")]
    EquipmentExists { name: String },
    /// `copyEquipment` without an address to connect to or listen on.
    #[error("copyEquipment needs an active or a passive address and port")]
    NoAddress,
    /// `copyEquipment` of a SECS-I serial connection: its addresses cannot name a port.
    #[error(
        "copyEquipment cannot copy '{source_name}': it speaks SECS-I over a serial port, which an address and port cannot name; add an [[equipment]] entry with its serial_port instead"
    )]
    SerialCopy { source_name: String },
    /// A connection could not be started.
    #[error("cannot start '{name}': {reason}")]
    Start { name: String, reason: String },
    /// No in-process simulator of that name.
    #[error("unknown simulator '{name}' (running: {})", if running.is_empty() { "none".to_string() } else { running.join(", ") })]
    UnknownSimulator { name: String, running: Vec<String> },
    /// The simulator refused the event run.
    #[error("{0}")]
    Simulator(String),
    /// The gateway this engine served has shut down.
    #[error("the gateway has stopped; system.secsgem calls fail until it is started again")]
    Stopped,
    /// `system.db` named a database project.toml does not define.
    #[error("unknown database '{name}' (defined: {}); add a [[database]] with that name to project.toml, or pass \"\" for the project's own", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownDatabase { name: String, known: Vec<String> },
    /// The process program store failed.
    #[error("{0}")]
    Programs(String),
    /// Shared gateway state is unusable (a thread panicked while holding it).
    #[error("the gateway's {0} are unavailable (an internal error; see the log)")]
    Unavailable(&'static str),
}

/// What `system.secsgem` needs from the gateway. Every method may block (the caller has
/// released the GIL); errors are shown to the script as `SecsGemError`.
pub trait Host: Send + Sync + 'static {
    /// Sends a primary; returns its transaction ID at once.
    fn send_request(
        &self,
        sf: StreamFunction,
        reply: bool,
        body: Option<Item>,
        equipment: &str,
    ) -> Result<u32, HostError>;
    /// Waits up to `timeout` for the reply of a transaction, in the JSON form (with `doc` and
    /// `codeDesc` where the equipment's SDL gives them); `None` when there is none.
    fn get_response(
        &self,
        transaction_id: u32,
        equipment: &str,
        timeout: Duration,
    ) -> Result<Option<Value>, HostError>;
    /// Replies to a primary received from the equipment.
    fn send_response(
        &self,
        transaction_id: u32,
        system_bytes: u32,
        sf: StreamFunction,
        body: Option<Item>,
        equipment: &str,
    ) -> Result<(), HostError>;
    /// Creates and (if `enabled`) starts a copy of an equipment connection.
    fn copy_equipment(&self, copy: CopyEquipment) -> Result<(), HostError>;
    /// Enables or disables connections; returns one error per name that could not be
    /// changed.
    fn enable_disable_equipment(&self, enable: bool, names: &[String]) -> Vec<HostError>;
    /// Starts an event run of an in-process simulator.
    fn start_sim_event_run(&self, simulator: &str, run: &str) -> Result<(), HostError>;
    /// A process program a tool sent in S7F3, `None` if there is none with that PPID.
    fn tool_program(&self, ppid: &str) -> Result<Option<ToolProgram>, HostError>;
    /// Every stored process program: PPID, edit date (ISO 8601 text, UTC), body format.
    fn tool_programs(&self) -> Result<Vec<(String, String, String)>, HostError>;
    /// Deletes a stored process program; false if there was none.
    fn delete_tool_program(&self, ppid: &str) -> Result<bool, HostError>;
    /// The gateway's realtime tags.
    fn tags(&self) -> Result<Arc<crate::tags::Tags>, HostError>;
    /// Where a database for `system.db` is (`""`: the project's own, the message store's).
    fn database(&self, name: &str) -> Result<crate::store::DatabaseLocation, HostError>;
}

/// A process program as `getToolProgram` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolProgram {
    pub ppid: String,
    /// When it was stored, as ISO 8601 text (UTC).
    pub edit_date: String,
    /// `A` (text) or `B` (binary).
    pub body_format: String,
    pub body: Vec<u8>,
}

/// Arguments of `system.secsgem.copyEquipment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyEquipment {
    pub source: String,
    pub name: String,
    pub enabled: bool,
    pub active_address: Option<String>,
    pub active_port: Option<u16>,
    pub passive_address: Option<String>,
    pub passive_port: Option<u16>,
    pub device_id: u16,
    pub description: Option<String>,
}

thread_local! {
    /// The gateway of the engine whose worker runs on this thread, while it runs jobs.
    static CURRENT: RefCell<Option<Arc<dyn Host>>> = const { RefCell::new(None) };
}

/// Makes `host` the gateway of this thread until the guard is dropped (then the previous one
/// is current again).
pub(crate) fn enter(host: Option<Arc<dyn Host>>) -> CurrentHost {
    let previous = CURRENT.with(|c| c.replace(host));
    CurrentHost { previous }
}

/// Restores the previous current gateway when dropped.
pub(crate) struct CurrentHost {
    previous: Option<Arc<dyn Host>>,
}

impl Drop for CurrentHost {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// The gateway of this thread, if it is running a job of an engine that has one.
pub(crate) fn current() -> Option<Arc<dyn Host>> {
    CURRENT.with(|c| c.borrow().clone())
}
