//! The simulator's tokio task: a GEM [`Equipment`] served over a passive HSMS link, with its
//! event runs, live variables, durable spool and process program folder.
//!
//! One task per simulator owns the equipment and feeds it link state changes, received
//! messages, the fate of the primaries it sent, timer expiries and commands from
//! [`Simulator`] handles; it carries out the equipment's actions on the link. At most
//! [`WINDOW`] of its own W-bit primaries are in flight: event runs wait for room, so a slow
//! host slows the simulator down instead of filling memory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::SimConfig;
use super::runs::{LiveVariables, Runs};
use crate::gem::model::VariableClass;
use crate::gem::{
    Action, CommunicationState, ControlState, Equipment, GemError, Id, Outcome, Tag, hsms_header,
};
use crate::link::{Incoming, Link, LinkError, LinkState, Received};
use crate::monitor::{Monitor, Way};
use crate::secs2::{Item, Message};
use crate::store::programs::file_name;
use crate::store::{FolderPrograms, SqliteSpool};
use crate::transport::Transport;

/// Most W-bit primaries a simulator keeps in flight.
pub const WINDOW: usize = 256;

/// Most event run steps carried out before the task looks at the link again.
const STEPS_PER_PASS: usize = 64;

/// A request to a simulator could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("simulator '{simulator}' has no event run '{name}' (it has: {known})")]
    UnknownRun {
        simulator: String,
        name: String,
        known: String,
    },
    #[error("simulator '{0}' has stopped")]
    Stopped(String),
    #[error("simulator '{0}' is busy; try again")]
    Busy(String),
    #[error(transparent)]
    Gem(#[from] GemError),
}

/// What a tool operator (or a test) can do to a running simulator.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Set an SV or DV.
    SetVariable(Id, Item),
    /// Report a collection event.
    TriggerEvent(Id),
    /// Set (true) or clear (false) an alarm.
    SetAlarm(Id, bool),
    /// The ON-LINE/OFF-LINE switch.
    Online(bool),
    /// The REMOTE/LOCAL switch.
    Remote(bool),
    /// The communication ENABLED/DISABLED switch.
    Communication(bool),
}

/// A simulator's state at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimStatus {
    pub communication: CommunicationState,
    pub control: ControlState,
    /// SpoolCountActual.
    pub spool_count: usize,
    /// Event runs under way.
    pub runs_active: usize,
    /// W-bit primaries awaiting their reply.
    pub in_flight: usize,
}

/// A variable of the simulated equipment and its value now, as the web console shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct VariableValue {
    pub id: Id,
    pub name: String,
    pub units: String,
    /// "SV", "DV" or "EC".
    pub class: &'static str,
    pub value: Item,
}

enum Control {
    StartRun(String),
    Variables(oneshot::Sender<Vec<VariableValue>>),
    Status(oneshot::Sender<SimStatus>),
    Operate(Operation, oneshot::Sender<Result<(), SimError>>),
    Shutdown(oneshot::Sender<()>),
}

/// A running simulator. Dropping it stops the simulator (use [`Simulator::shutdown`] to
/// wait until it has). What it offers besides is on its [`SimHandle`] (dereferenced).
#[derive(Debug)]
pub struct Simulator {
    handle: SimHandle,
    /// Keeps the task running: the task ends when the last strong sender is gone.
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
}

/// A handle on a running simulator that others may keep (the web console) without keeping
/// it alive: once the simulator stopped, its requests fail with [`SimError::Stopped`].
#[derive(Debug, Clone)]
pub struct SimHandle {
    name: String,
    local_addr: Option<SocketAddr>,
    runs: Vec<String>,
    control: mpsc::WeakSender<Control>,
    status: watch::Receiver<SimStatus>,
    /// Counters and live stream of its link.
    monitor: Arc<Monitor>,
    transport: String,
    protocol: &'static str,
}

impl std::ops::Deref for Simulator {
    type Target = SimHandle;

    fn deref(&self) -> &SimHandle {
        &self.handle
    }
}

impl Simulator {
    /// Starts a simulator named `name` on the current tokio runtime: an HSMS or SECS-I
    /// endpoint with `transport` (normally listening), the equipment of `config` with the
    /// transport's device ID,
    /// its spool in `spool_dir/NAME.spool.sqlite` and, unless the config names a folder, its
    /// process programs in `spool_dir/NAME-programs/`. The listening socket is bound when
    /// this returns.
    pub async fn start(
        name: String,
        config: SimConfig,
        transport: impl Into<Transport>,
        spool_dir: PathBuf,
    ) -> std::io::Result<Simulator> {
        let mut transport = transport.into();
        let spool =
            SqliteSpool::open(&spool_file(&spool_dir, &name)).map_err(std::io::Error::other)?;
        let programs_dir = config
            .programs_dir
            .clone()
            .unwrap_or_else(|| spool_dir.join(format!("{}-programs", file_name(&name))));
        let programs = FolderPrograms::open(&programs_dir).map_err(std::io::Error::other)?;
        let mut model = config.model.clone();
        model.device_id = transport.device_id();
        transport.set_name(name.clone());
        let described = transport.to_string();
        let protocol = transport.protocol_name();
        let endpoint = transport.start().await?;
        let monitor = Arc::new(Monitor::new("Not Connected"));
        let now = Instant::now();
        let equipment = Equipment::new(
            model,
            Box::new(spool),
            Box::new(programs),
            now,
            SystemTime::now(),
        );
        let (control, control_rx) = mpsc::channel(64);
        let seed = seed_for(&name);
        let (status_tx, status) = watch::channel(SimStatus {
            communication: equipment.communication_state(),
            control: equipment.control_state(),
            spool_count: equipment.spool_count(),
            runs_active: 0,
            in_flight: 0,
        });
        let task = Task {
            status: status_tx,
            name: name.clone(),
            state: endpoint.link.watch_state(),
            link: endpoint.link,
            equipment,
            runs: Runs::new(config.runs.clone(), now),
            live: LiveVariables::new(config.live.clone(), now, seed),
            outcomes: JoinSet::new(),
            up: false,
            monitor: monitor.clone(),
        };
        let span = info_span!("simulator", name = %name);
        // The equipment writes its spool (SQLite, fsync) inline: run it on a blocking-pool
        // thread, not on a runtime worker that also drives sockets.
        let runtime = tokio::runtime::Handle::current();
        let run = task.run(endpoint.incoming, control_rx).instrument(span);
        let task = tokio::task::spawn_blocking(move || runtime.block_on(run));
        info!(simulator = %name, addr = ?endpoint.local_addr, programs = %programs_dir.display(), "simulator started");
        Ok(Simulator {
            handle: SimHandle {
                name,
                local_addr: endpoint.local_addr,
                runs: config.run_names(),
                control: control.downgrade(),
                status,
                monitor,
                transport: described,
                protocol,
            },
            control,
            task,
        })
    }

    /// A handle that does not keep the simulator running.
    pub fn handle(&self) -> SimHandle {
        self.handle.clone()
    }

    /// Stops the simulator: separates the HSMS session, closes the listening socket and
    /// waits for the task to end. Spooled messages stay in the spool file.
    pub async fn shutdown(self) {
        let (done, rx) = oneshot::channel();
        if self.control.send(Control::Shutdown(done)).await.is_ok() {
            let _ = rx.await;
        }
        let _ = self.task.await;
    }
}

impl SimHandle {
    fn sender(&self) -> Result<mpsc::Sender<Control>, SimError> {
        self.control
            .upgrade()
            .ok_or_else(|| SimError::Stopped(self.name.clone()))
    }

    /// Counters and the live stream of its link.
    pub fn monitor(&self) -> &Arc<Monitor> {
        &self.monitor
    }

    /// `"HSMS"` or `"SECS-I"`.
    pub fn protocol(&self) -> &'static str {
        self.protocol
    }

    /// Its transport in words (e.g. "HSMS passive on 127.0.0.1:5000").
    pub fn transport(&self) -> &str {
        &self.transport
    }

    /// The names of its event runs.
    pub fn run_names(&self) -> &[String] {
        &self.runs
    }

    /// Its variables (SVs, DVs, ECs) with their values now.
    pub async fn variables(&self) -> Result<Vec<VariableValue>, SimError> {
        let (done, rx) = oneshot::channel();
        self.sender()?
            .send(Control::Variables(done))
            .await
            .map_err(|_| SimError::Stopped(self.name.clone()))?;
        rx.await.map_err(|_| SimError::Stopped(self.name.clone()))
    }

    /// The simulator's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it listens on (passive and alternating modes).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Starts event run `name` (`system.secsgem.startSimEventRun`).
    pub fn start_event_run(&self, name: &str) -> Result<(), SimError> {
        if !self.runs.iter().any(|r| r == name) {
            return Err(SimError::UnknownRun {
                simulator: self.name.clone(),
                name: name.to_string(),
                known: if self.runs.is_empty() {
                    "none".into()
                } else {
                    self.runs.join(", ")
                },
            });
        }
        self.sender()?
            .try_send(Control::StartRun(name.to_string()))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SimError::Busy(self.name.clone()),
                mpsc::error::TrySendError::Closed(_) => SimError::Stopped(self.name.clone()),
            })
    }

    /// Acts as the tool or its operator would: set a variable, trigger an event, set or
    /// clear an alarm, flip the ON-LINE or REMOTE switch.
    pub async fn operate(&self, operation: Operation) -> Result<(), SimError> {
        let (done, rx) = oneshot::channel();
        self.sender()?
            .send(Control::Operate(operation, done))
            .await
            .map_err(|_| SimError::Stopped(self.name.clone()))?;
        rx.await
            .unwrap_or(Err(SimError::Stopped(self.name.clone())))
    }

    /// A watch of [`SimStatus`], updated whenever the simulator's state changes.
    pub fn watch_status(&self) -> watch::Receiver<SimStatus> {
        self.status.clone()
    }

    /// Its communication and control states, spool size and activity.
    pub async fn status(&self) -> Result<SimStatus, SimError> {
        let (done, rx) = oneshot::channel();
        self.sender()?
            .send(Control::Status(done))
            .await
            .map_err(|_| SimError::Stopped(self.name.clone()))?;
        rx.await.map_err(|_| SimError::Stopped(self.name.clone()))
    }
}

/// A seed for the random walks that differs between simulators and runs.
fn seed_for(name: &str) -> u64 {
    let time = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    name.bytes().fold(time ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The simulator task's state.
struct Task {
    name: String,
    link: Link,
    state: watch::Receiver<LinkState>,
    equipment: Equipment,
    runs: Runs,
    live: LiveVariables,
    /// W-bit primaries in flight, each ending with its tag and outcome.
    outcomes: JoinSet<(Tag, Outcome)>,
    up: bool,
    monitor: Arc<Monitor>,
    /// Published after each pass of the task's loop.
    status: watch::Sender<SimStatus>,
}

impl Task {
    async fn run(mut self, mut incoming: Incoming, mut control: mpsc::Receiver<Control>) {
        let mut done = None;
        loop {
            self.step_runs().await;
            self.publish_status();
            let room = self.outcomes.len() < WINDOW;
            let deadline = [
                self.equipment.poll_timeout(),
                self.live.next_deadline(),
                self.runs.next_deadline().filter(|_| room),
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                biased;
                changed = self.state.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let state = *self.state.borrow_and_update();
                    self.link_state(state);
                }
                received = incoming.recv() => match received {
                    Some(r) => self.received(r),
                    None => break,
                },
                Some(joined) = self.outcomes.join_next(), if !self.outcomes.is_empty() => {
                    if let Ok((tag, outcome)) = joined {
                        match &outcome {
                            Outcome::Reply(reply) => self.monitor.message(Way::Received, reply, 0, None),
                            Outcome::Timeout { .. } => self.monitor.t3_timeout("T3: no reply"),
                            Outcome::Failed => self.monitor.error("request failed: the link is down"),
                        }
                        self.equipment.outcome(tag, outcome, Instant::now());
                    }
                }
                command = control.recv() => match command {
                    Some(Control::Shutdown(ack)) => {
                        done = Some(ack);
                        break;
                    }
                    Some(c) => self.command(c),
                    None => break,
                },
                _ = sleep_until(deadline) => self.timers(),
            }
        }
        self.link.shutdown().await;
        self.outcomes.abort_all();
        info!(simulator = %self.name, "simulator stopped");
        if let Some(ack) = done {
            let _ = ack.send(());
        }
    }

    fn link_state(&mut self, state: LinkState) {
        let now = Instant::now();
        match (state == LinkState::Selected, self.up) {
            (true, false) => {
                self.up = true;
                self.monitor.link_up();
                self.equipment.link_up(now);
            }
            (false, true) => {
                self.up = false;
                self.equipment.link_down(now);
            }
            _ => {}
        }
    }

    fn received(&mut self, received: Received) {
        let now = Instant::now();
        match received {
            Received::Message(m) => {
                self.monitor.message(Way::Received, &m, 0, None);
                self.equipment.receive(m, now)
            }
            Received::Malformed { header, .. } => {
                self.monitor.error("malformed message received");
                self.equipment.receive_malformed(header, now)
            }
        }
    }

    fn command(&mut self, command: Control) {
        let now = Instant::now();
        match command {
            Control::StartRun(name) => {
                if self.runs.start(&name, now) {
                    info!(run = %name, "event run started");
                }
            }
            Control::Operate(op, done) => {
                let eq = &mut self.equipment;
                let result = match op {
                    Operation::SetVariable(id, value) => eq.set_variable(id, value, now),
                    Operation::TriggerEvent(id) => eq.trigger_event(id, now),
                    Operation::SetAlarm(id, set) => eq.set_alarm(id, set, now),
                    Operation::Online(true) => {
                        eq.operator_online(now);
                        Ok(())
                    }
                    Operation::Online(false) => {
                        eq.operator_offline(now);
                        Ok(())
                    }
                    Operation::Remote(remote) => {
                        eq.operator_remote(remote, now);
                        Ok(())
                    }
                    Operation::Communication(enabled) => {
                        eq.set_communication_enabled(enabled, now);
                        Ok(())
                    }
                };
                let _ = done.send(result.map_err(SimError::from));
            }
            Control::Status(done) => {
                let _ = done.send(self.current_status());
            }
            Control::Variables(done) => {
                let _ = done.send(self.variables(now));
            }
            Control::Shutdown(_) => {}
        }
    }

    fn current_status(&self) -> SimStatus {
        SimStatus {
            communication: self.equipment.communication_state(),
            control: self.equipment.control_state(),
            spool_count: self.equipment.spool_count(),
            runs_active: self.runs.running(),
            in_flight: self.outcomes.len(),
        }
    }

    fn variables(&self, now: Instant) -> Vec<VariableValue> {
        let model = self.equipment.model();
        let mut out: Vec<VariableValue> = model
            .variables
            .values()
            .map(|v| VariableValue {
                id: v.id,
                name: v.name.clone(),
                units: v.units.clone(),
                class: match v.class {
                    VariableClass::Data => "DV",
                    VariableClass::Status => "SV",
                },
                value: self
                    .equipment
                    .value(v.id, now)
                    .unwrap_or_else(|| v.value.clone()),
            })
            .collect();
        out.extend(model.constants.values().map(|c| VariableValue {
            id: c.id,
            name: c.name.clone(),
            units: c.units.clone(),
            class: "EC",
            value: c.value.clone(),
        }));
        out
    }

    /// Tells watchers of the status what changed (nothing when nothing did).
    fn publish_status(&self) {
        let now = self.current_status();
        self.monitor
            .status(match (*self.state.borrow(), now.communication) {
                (LinkState::Selected, CommunicationState::Communicating) => "Communicating",
                (LinkState::Selected, _) => "Selected",
                (LinkState::Connected, _) => "Connected",
                (LinkState::Disconnected, _) => "Not Connected",
            });
        self.status.send_if_modified(|s| {
            let changed = *s != now;
            *s = now;
            changed
        });
    }

    fn timers(&mut self) {
        let now = Instant::now();
        self.equipment.handle_timeout(now);
        let eq = &self.equipment;
        for (id, value) in self.live.due(now, |vid| eq.value(vid, now)) {
            if let Err(e) = self.equipment.set_variable(id, value, now) {
                warn!(error = %e, "live variable not updated");
            }
        }
        self.runs.start_scheduled(now);
    }

    /// Carries out the equipment's actions and the event run steps that are due, one step at
    /// a time, while there is room in the window.
    async fn step_runs(&mut self) {
        // A bounded batch per pass, so that a fast run cannot keep the task from the link
        // (with nothing in flight, e.g. while spooling, the window never fills).
        for _ in 0..STEPS_PER_PASS {
            self.carry_out().await;
            if self.outcomes.len() >= WINDOW {
                return;
            }
            let now = Instant::now();
            let Some(step) = self.runs.next_step(now) else {
                return;
            };
            let eq = &mut self.equipment;
            for (id, value) in step.set {
                if let Err(e) = eq.set_variable(id, value, now) {
                    warn!(error = %e, "event run step: variable not set");
                }
            }
            let alarms = [(step.alarm_set, true), (step.alarm_clear, false)];
            for (alid, set) in alarms {
                if let Some(alid) = alid
                    && let Err(e) = eq.set_alarm(alid, set, now)
                {
                    warn!(error = %e, "event run step: alarm not changed");
                }
            }
            if let Some(ceid) = step.event
                && let Err(e) = eq.trigger_event(ceid, now)
            {
                warn!(error = %e, "event run step: event not triggered");
            }
        }
        self.carry_out().await;
    }

    /// Carries out the equipment's actions, in order.
    async fn carry_out(&mut self) {
        while let Some(action) = self.equipment.poll_action() {
            match action {
                Action::Send { message, tag } => self.send(message, tag).await,
                Action::RemoteCommand {
                    name,
                    parameters,
                    run,
                } => {
                    info!(command = %name, ?parameters, "remote command accepted");
                    if let Some(run) = run
                        && self.runs.start(&run, Instant::now())
                    {
                        info!(run = %run, "event run started by remote command");
                    }
                }
            }
        }
    }

    async fn send(&mut self, message: Message, tag: Option<Tag>) {
        let Some(tag) = tag else {
            self.monitor.message(Way::Sent, &message, 0, None);
            // A reply is queued without waiting for the link to take it.
            let sent = if message.function.is_multiple_of(2) {
                self.link.post_reply(message).await
            } else {
                self.link.send(message).await.map(|_| ())
            };
            if let Err(e) = sent {
                debug!(error = %e, "not sent");
            }
            return;
        };
        let header = Message {
            body: None,
            device_id: self.equipment.model().device_id,
            ..message.clone()
        };
        self.monitor.count(Way::Sent, &message);
        let copy = self.monitor.streaming().then(|| message.clone());
        match self.link.send_request(message).await {
            Ok(pending) => {
                if let Some(mut copy) = copy {
                    copy.system_bytes = pending.system_bytes;
                    self.monitor.offer(Way::Sent, Arc::new(copy), 0);
                }
                let shead = hsms_header(&Message {
                    system_bytes: pending.system_bytes,
                    ..header
                });
                self.outcomes.spawn(async move {
                    let outcome = match pending.wait().await {
                        Ok(reply) => Outcome::Reply(reply),
                        Err(LinkError::Timeout { .. }) => Outcome::Timeout { shead },
                        Err(_) => Outcome::Failed,
                    };
                    (tag, outcome)
                });
            }
            Err(e) => {
                debug!(error = %e, "primary not sent");
                self.equipment.outcome(tag, Outcome::Failed, Instant::now());
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// The spool file of a simulator named `name` in `spool_dir` (for tools and tests).
pub fn spool_file(spool_dir: &Path, name: &str) -> PathBuf {
    spool_dir.join(format!("{}.spool.sqlite", file_name(name)))
}
