//! The GEM equipment engine, sans-IO: it owns no socket and no clock.
//!
//! The runtime feeds it what happens — the link came up or went down
//! ([`Equipment::link_up`], [`Equipment::link_down`]), a message arrived
//! ([`Equipment::receive`], [`Equipment::receive_malformed`]), a primary it sent was
//! answered or failed ([`Equipment::outcome`]), a timer fired ([`Equipment::handle_timeout`]
//! at [`Equipment::poll_timeout`]), the tool's own doings ([`Equipment::set_variable`],
//! [`Equipment::trigger_event`], [`Equipment::set_alarm`], the operator switches) — each with
//! the current instant. In return it queues [`Action`]s ([`Equipment::poll_action`]):
//! messages to send, and accepted remote commands.
//!
//! Received primaries are checked in E30/E5 order: communication state (only S1F13 is
//! answered while NOT COMMUNICATING), device ID (S9F1), stream (S9F3), function (S9F5),
//! control state (SxF0 while OFF-LINE, except S1F13 and S1F17), body structure (S9F7); then
//! the message is answered. Stream 9 messages are sent as new primaries (E5), with MHEAD or
//! SHEAD the 10-byte header of the offending message.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use super::clock::DateTime;
use super::items::{self, Illegal, Parsed, ack, id_item, l, list_of};
use super::limits::Limit;
use super::model::{Id, Model, Standard, VariableClass};
use super::programs::ProgramStore;
use super::spool::{Put, Spool, SpoolStore};
use super::state::{CommunicationState, ControlState};
use super::trace::Trace;
use crate::secs2::{Item, Message, StreamFunction};

/// Identifies a W-bit primary the equipment sent, so that its fate can be reported back with
/// [`Equipment::outcome`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tag(pub(super) u64);

/// Something the runtime must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send `message`: a reply (same system bytes as its primary) or a new primary. A W-bit
    /// primary carries a tag: report its reply or failure with [`Equipment::outcome`].
    Send { message: Message, tag: Option<Tag> },
    /// The host sent a remote command (S2F41/S2F49) that was accepted.
    RemoteCommand {
        name: String,
        parameters: Vec<(String, Item)>,
        /// The simulator event run the command starts, if configured.
        run: Option<String>,
    },
}

/// What became of a W-bit primary the equipment sent.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The reply (an SxF0 reply means the host aborted the transaction).
    Reply(Message),
    /// T3 expired. `shead` is the primary's 10-byte header, for S9F9.
    Timeout { shead: [u8; 10] },
    /// Not sent, or the transaction ended without a reply (connection lost, rejected,
    /// answered with a stream 9 message).
    Failed,
}

/// A request from the tool's side could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GemError {
    #[error("no variable with ID {0}")]
    UnknownVariable(Id),
    #[error("variable {0} '{1}' is computed by the equipment and cannot be set")]
    ComputedVariable(Id, String),
    #[error("no collection event with CEID {0}")]
    UnknownEvent(Id),
    #[error("no alarm with ALID {0}")]
    UnknownAlarm(Id),
}

/// Why a W-bit primary was sent.
#[derive(Debug)]
enum Purpose {
    /// S1F13 (WAIT CRA).
    EstablishCommunication,
    /// S1F1 (ATTEMPT ON-LINE).
    OnlineAttempt,
    /// A spooled message transmitted on S6F23, by sequence number.
    Spooled(u64),
    /// Collected data (S5F1, S6F1, S6F11); the message is kept, with its production order,
    /// if it must be spooled when it cannot be delivered.
    Data(Option<(u64, Message)>),
}

/// How a received primary is answered.
enum Responder {
    Handler(Handler),
    Echo(Option<Item>),
    /// The SDL refuses it after a definition's keys matched: S9F7 (`None`), or this reply
    /// body (a remote command's HCACK and CPACKs).
    Refuse(Option<Item>),
}

/// A message handler: reads the body, changes state, returns the reply body.
type Handler = fn(&mut Equipment, Option<&Item>, Instant) -> Parsed<Option<Item>>;

/// Primaries the equipment sends that the host may ask to spool (S2F43).
pub const SPOOLABLE: &[(u8, u8)] = &[(5, 1), (6, 1), (6, 11)];

/// The streams of [`SPOOLABLE`].
pub const SPOOLABLE_STREAMS: &[u8] = &[5, 6];

/// Whether the GEM engine answers primary `sf` itself (the GEM tool table).
pub fn answers(sf: StreamFunction) -> bool {
    handler(sf).is_some()
}

/// The equipment's wall clock: the system clock at start-up, moved by S2F31.
#[derive(Debug)]
struct Clock {
    base: Instant,
    base_unix_ms: i64,
    offset_ms: i64,
}

impl Clock {
    fn unix_ms(&self, now: Instant) -> i64 {
        let elapsed = now.saturating_duration_since(self.base).as_millis();
        self.base_unix_ms + i64::try_from(elapsed).unwrap_or(i64::MAX / 2) + self.offset_ms
    }
}

/// The HSMS (E37) header of a data message: MHEAD for the stream 9 messages.
pub fn hsms_header(message: &Message) -> [u8; 10] {
    crate::hsms::frame::Header::data(message).to_bytes()
}

/// A GEM equipment: model, state machines, dynamic configuration, spool.
pub struct Equipment {
    pub(super) model: Model,
    pub(super) comm: CommunicationState,
    pub(super) control: ControlState,
    previous_control: ControlState,
    /// The LOCAL/REMOTE switch: which ON-LINE substate ON-LINE enters.
    pub(super) remote_switch: ControlState,
    link_up: bool,
    /// Reports: RPTID -> VIDs (S2F33).
    pub(super) reports: BTreeMap<Id, Vec<Id>>,
    /// Links: CEID -> RPTIDs (S2F35).
    pub(super) links: BTreeMap<Id, Vec<Id>>,
    /// Enabled events (S2F37).
    pub(super) enabled_events: BTreeSet<Id>,
    /// Enabled alarms (S5F3).
    pub(super) enabled_alarms: BTreeSet<Id>,
    /// Alarms now set.
    pub(super) set_alarms: BTreeSet<Id>,
    /// Running traces by TRID (S2F23).
    pub(super) traces: BTreeMap<Id, Trace>,
    /// Limits by VID then LIMITID (S2F45).
    pub(super) limits: BTreeMap<Id, BTreeMap<u8, Limit>>,
    pub(super) spool: Spool,
    pub(super) programs: Box<dyn ProgramStore>,
    pending: HashMap<Tag, Purpose>,
    next_tag: u64,
    data_id: u32,
    /// WAIT DELAY: when the next S1F13 goes.
    comm_delay: Option<Instant>,
    clock: Clock,
    actions: VecDeque<Action>,
    mhead: fn(&Message) -> [u8; 10],
}

impl std::fmt::Debug for Equipment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Equipment")
            .field("mdln", &self.model.mdln)
            .field("comm", &self.comm)
            .field("control", &self.control)
            .field("spool", &self.spool)
            .finish_non_exhaustive()
    }
}

impl Equipment {
    /// An equipment powered up at `now`, with its wall clock at `wall`. Its control state
    /// comes from the InitControlState, OffLineSubstate and OnLineSubstate ECs; communication
    /// from InitCommState (1 DISABLED, 2 ENABLED).
    pub fn new(
        model: Model,
        spool: Box<dyn SpoolStore>,
        programs: Box<dyn ProgramStore>,
        now: Instant,
        wall: SystemTime,
    ) -> Equipment {
        let base_unix_ms = match wall.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(0),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(0),
        };
        let spool = Spool::new(spool, model.spool_streams.clone());
        let mut equipment = Equipment {
            comm: CommunicationState::WaitCra,
            control: ControlState::EquipmentOffline,
            previous_control: ControlState::EquipmentOffline,
            remote_switch: ControlState::OnlineRemote,
            link_up: false,
            reports: model.reports.clone(),
            links: model.links.clone(),
            enabled_events: model.enabled_events.clone(),
            enabled_alarms: model.enabled_alarms.clone(),
            set_alarms: BTreeSet::new(),
            traces: BTreeMap::new(),
            limits: BTreeMap::new(),
            spool,
            programs,
            pending: HashMap::new(),
            next_tag: 0,
            data_id: 0,
            comm_delay: None,
            clock: Clock {
                base: now,
                base_unix_ms,
                offset_ms: 0,
            },
            actions: VecDeque::new(),
            mhead: hsms_header,
            model,
        };
        if equipment.ec(Standard::InitCommState) == 1 {
            equipment.comm = CommunicationState::Disabled;
        }
        equipment.remote_switch = ControlState::online(equipment.ec(Standard::OnLineSubstate));
        equipment.control = ControlState::initial(
            equipment.ec(Standard::InitControlState),
            equipment.ec(Standard::OffLineSubstate),
            equipment.ec(Standard::OnLineSubstate),
        );
        equipment.previous_control = equipment.control;
        info!(mdln = %equipment.model.mdln, control = ?equipment.control, "GEM equipment powered up");
        equipment
    }

    /// Uses another transport's header layout for MHEAD/SHEAD (HSMS by default).
    pub fn set_header_layout(&mut self, mhead: fn(&Message) -> [u8; 10]) {
        self.mhead = mhead;
    }

    /// The model as configured (current values of variables and constants included).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The communication state.
    pub fn communication_state(&self) -> CommunicationState {
        self.comm
    }

    /// The control state.
    pub fn control_state(&self) -> ControlState {
        self.control
    }

    /// SpoolCountActual: messages in the spool.
    pub fn spool_count(&self) -> usize {
        self.spool.count()
    }

    /// The next action to carry out, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Equipment::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let trace = self.traces.values().map(|t| t.next).min();
        match (self.comm_delay, trace) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers due at `now`: the WAIT DELAY timer and trace sampling.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.comm_delay.is_some_and(|t| t <= now) {
            self.comm_delay = None;
            if self.comm == CommunicationState::WaitDelay {
                self.enter_wait_cra();
            }
        }
        self.sample_traces(now);
    }

    // ----- communication state -----

    /// The transport can carry data messages (HSMS SELECTED): start establishing
    /// communication (WAIT CRA, S1F13), unless the host's S1F13 already did.
    pub fn link_up(&mut self, _now: Instant) {
        self.link_up = true;
        if matches!(
            self.comm,
            CommunicationState::WaitCra | CommunicationState::WaitDelay
        ) {
            self.enter_wait_cra();
        }
    }

    /// The transport lost its connection: communication fails (NOT COMMUNICATING).
    pub fn link_down(&mut self, _now: Instant) {
        self.link_up = false;
        self.comm_delay = None;
        if self.comm != CommunicationState::Disabled {
            if self.comm == CommunicationState::Communicating {
                info!("communication failed: link down (NOT COMMUNICATING)");
            }
            self.comm = CommunicationState::WaitCra;
        }
    }

    /// The operator's communication switch (E30 ENABLED/DISABLED).
    pub fn set_communication_enabled(&mut self, enabled: bool, _now: Instant) {
        match (enabled, self.comm) {
            (false, _) => {
                self.comm = CommunicationState::Disabled;
                self.comm_delay = None;
            }
            (true, CommunicationState::Disabled) => self.enter_wait_cra(),
            (true, _) => {}
        }
    }

    /// Enters WAIT CRA and sends S1F13 if the link is up.
    fn enter_wait_cra(&mut self) {
        self.comm = CommunicationState::WaitCra;
        self.comm_delay = None;
        if self.link_up {
            let body = l(vec![
                items::text(&self.model.mdln),
                items::text(&self.model.softrev),
            ]);
            let message = primary(1, 13, true, Some(body));
            self.push_send(message, Purpose::EstablishCommunication);
        }
    }

    /// WAIT CRA failed: wait EstablishCommunicationsTimeout seconds before the next S1F13.
    fn enter_wait_delay(&mut self, now: Instant) {
        if !self.link_up || self.comm == CommunicationState::Disabled {
            return;
        }
        self.comm = CommunicationState::WaitDelay;
        let seconds = self.ec(Standard::EstablishCommunicationsTimeout).max(1);
        self.comm_delay = Some(now + Duration::from_secs(seconds));
    }

    /// COMMUNICATING: S1F14 with COMMACK 0 received, or S1F13 answered.
    pub(super) fn become_communicating(&mut self) {
        if self.comm == CommunicationState::Communicating {
            return;
        }
        info!("COMMUNICATING");
        self.comm = CommunicationState::Communicating;
        self.comm_delay = None;
        if self.control == ControlState::AttemptOnline {
            self.send_online_request();
        }
    }

    /// A transaction failed while COMMUNICATING (E30: T3 is a communication failure).
    fn communication_failed(&mut self) {
        if self.comm == CommunicationState::Communicating {
            warn!("communication failed: reply timeout (NOT COMMUNICATING)");
            self.enter_wait_cra();
        }
    }

    // ----- control state -----

    pub(super) fn set_control(&mut self, next: ControlState, now: Instant) {
        if next == self.control {
            return;
        }
        info!(from = ?self.control, to = ?next, "control state");
        self.previous_control = self.control;
        self.control = next;
        match next {
            ControlState::OnlineLocal => self.fire_standard(Standard::ControlStateLocal, now),
            ControlState::OnlineRemote => self.fire_standard(Standard::ControlStateRemote, now),
            _ => {}
        }
    }

    /// Enters ON-LINE in the substate the LOCAL/REMOTE switch selects.
    pub(super) fn go_online(&mut self, now: Instant) {
        self.set_control(self.remote_switch, now);
    }

    /// Operator selects ON-LINE: from EQUIPMENT OFF-LINE to ATTEMPT ON-LINE, which sends
    /// S1F1 once communicating; S1F2 then brings ON-LINE, a failure goes to the OFF-LINE
    /// substate the OnLineFailed EC names.
    pub fn operator_online(&mut self, now: Instant) {
        if self.control != ControlState::EquipmentOffline {
            return;
        }
        self.set_control(ControlState::AttemptOnline, now);
        if self.comm == CommunicationState::Communicating {
            self.send_online_request();
        }
    }

    /// Operator selects OFF-LINE: EQUIPMENT OFF-LINE, reported with the EquipmentOffline
    /// event while the host can still receive it.
    pub fn operator_offline(&mut self, now: Instant) {
        if self.control == ControlState::EquipmentOffline {
            return;
        }
        self.fire_standard(Standard::EquipmentOffline, now);
        self.set_control(ControlState::EquipmentOffline, now);
    }

    /// The LOCAL/REMOTE switch: sets the ON-LINE substate (and moves to it when ON-LINE).
    pub fn operator_remote(&mut self, remote: bool, now: Instant) {
        self.remote_switch = if remote {
            ControlState::OnlineRemote
        } else {
            ControlState::OnlineLocal
        };
        if self.control.is_online() {
            self.go_online(now);
        }
    }

    fn send_online_request(&mut self) {
        self.push_send(primary(1, 1, true, None), Purpose::OnlineAttempt);
    }

    fn online_failed(&mut self, now: Instant) {
        if self.control == ControlState::AttemptOnline {
            let next = ControlState::online_failed(self.ec(Standard::OnLineFailed));
            self.set_control(next, now);
        }
    }

    // ----- receiving -----

    /// A data message from the host. Replies to our own primaries reach
    /// [`Equipment::outcome`] instead; anything else that is not a primary is logged and
    /// dropped.
    pub fn receive(&mut self, message: Message, now: Instant) {
        let sf = message.stream_function();
        if self.comm == CommunicationState::Disabled {
            return;
        }
        if !sf.is_primary() || message.stream == 9 {
            debug!(%sf, "unsolicited secondary or stream 9 message ignored");
            return;
        }
        if self.comm != CommunicationState::Communicating && (sf.stream, sf.function) != (1, 13) {
            // E30: while NOT COMMUNICATING only S1F13 is answered; in WAIT DELAY anything
            // from the host is a reason to try S1F13 again.
            debug!(%sf, "discarded: not communicating");
            if self.comm == CommunicationState::WaitDelay {
                self.enter_wait_cra();
            }
            return;
        }
        if message.device_id & 0x7fff != self.model.device_id & 0x7fff {
            warn!(%sf, device_id = message.device_id, "unrecognized device ID: S9F1");
            self.stream_nine(1, (self.mhead)(&message));
            return;
        }
        let responder = match self.responder(&message) {
            Ok(r) => r,
            Err(function) => {
                warn!(%sf, "unrecognized message: S9F{function}");
                self.stream_nine(function, (self.mhead)(&message));
                return;
            }
        };
        if !self.control.is_online() && !matches!((sf.stream, sf.function), (1, 13) | (1, 17)) {
            // E30: OFF-LINE answers only S1F13 and S1F17; other primaries are aborted.
            if message.w_bit {
                self.actions.push_back(Action::Send {
                    message: abort(&message),
                    tag: None,
                });
            }
            return;
        }
        let mark = self.actions.len();
        // Every request of the GEM tool table expects a reply (E5), and some hosts send
        // them without the W-bit all the same: those are answered too. Echoes follow the
        // W-bit.
        let (result, wants_reply) = match responder {
            Responder::Handler(handler) => (handler(self, message.body.as_ref(), now), true),
            Responder::Echo(body) => (Ok(body), message.w_bit),
            Responder::Refuse(Some(body)) => (Ok(Some(body)), true),
            Responder::Refuse(None) => (Err(Illegal), true),
        };
        match result {
            Ok(body) if wants_reply => {
                // The reply goes before anything the handler triggered (events, spooled
                // messages).
                let mark = mark.min(self.actions.len());
                self.actions.insert(
                    mark,
                    Action::Send {
                        message: message.reply_with(body),
                        tag: None,
                    },
                );
            }
            Ok(_) => {}
            Err(Illegal) => {
                warn!(%sf, "illegal data: S9F7");
                self.stream_nine(7, (self.mhead)(&message));
            }
        }
    }

    /// A data message whose body could not be decoded: S9F7 with its header.
    pub fn receive_malformed(&mut self, header: [u8; 10], _now: Instant) {
        if self.comm != CommunicationState::Communicating {
            if self.comm == CommunicationState::WaitDelay {
                self.enter_wait_cra();
            }
            return;
        }
        let device_id = u16::from_be_bytes([header[0], header[1]]);
        let function = if device_id & 0x7fff != self.model.device_id & 0x7fff {
            1
        } else {
            7
        };
        self.stream_nine(function, header);
    }

    /// How this equipment answers `message`, or the stream 9 function that says it cannot
    /// (3 unknown stream, 5 unknown function). With an SDL that defines its S/F, the SDL's
    /// matching comes first: an echo of the definition it matched answers it; no match is
    /// S9F5, or S9F7 / the remote command's HCACK when a definition's keys matched.
    fn responder(&self, message: &Message) -> Result<Responder, u8> {
        let sf = message.stream_function();
        let sdl = self.model.sdl.as_deref();
        if let Some(sdl) = sdl.filter(|s| !s.definitions(sf).is_empty()) {
            match sdl.matching(message, true) {
                Ok(m) => {
                    let echo = m
                        .definition
                        .name
                        .as_ref()
                        .and_then(|n| self.model.named_echoes.get(n));
                    if let Some(body) = echo {
                        return Ok(Responder::Echo(body.clone()));
                    }
                }
                Err(rejection) => {
                    warn!(%sf, "{}", rejection.mismatch);
                    return match rejection.stream_nine() {
                        Some(7) => Ok(Responder::Refuse(None)),
                        Some(function) => Err(function),
                        None => Ok(Responder::Refuse(rejection.reply_body())),
                    };
                }
            }
        }
        if let Some(handler) = handler(sf) {
            return Ok(Responder::Handler(handler));
        }
        if let Some(body) = self.model.echoes.get(&sf) {
            return Ok(Responder::Echo(body.clone()));
        }
        let stream_known = matches!(sf.stream, 1 | 2 | 5 | 6 | 7)
            || self.model.echoes.keys().any(|k| k.stream == sf.stream)
            || sdl.is_some_and(|s| s.messages.keys().any(|k| k.stream == sf.stream));
        Err(if stream_known { 5 } else { 3 })
    }

    /// Sends S9F`function` carrying a 10-byte header (MHEAD or SHEAD).
    fn stream_nine(&mut self, function: u8, header: [u8; 10]) {
        let message = primary(9, function, false, Some(Item::B(header.to_vec())));
        self.actions.push_back(Action::Send { message, tag: None });
    }

    // ----- sending -----

    pub(super) fn actions_push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn push_send(&mut self, message: Message, purpose: Purpose) {
        let tag = message.w_bit.then(|| {
            self.next_tag += 1;
            let tag = Tag(self.next_tag);
            self.pending.insert(tag, purpose);
            tag
        });
        self.actions.push_back(Action::Send { message, tag });
    }

    /// Sends collected data (S5F1, S6F1, S6F11): nothing while OFF-LINE; while NOT
    /// COMMUNICATING it goes to the spool if its stream is spooled, else it is lost.
    pub(super) fn send_data(&mut self, message: Message, now: Instant) {
        let sf = message.stream_function();
        if !self.control.is_online() {
            debug!(%sf, "not sent: OFF-LINE");
            return;
        }
        let applies = self.spooling_applies(sf);
        let order = if applies { self.spool.take_order() } else { 0 };
        if self.comm != CommunicationState::Communicating {
            self.spool_or_drop(&message, order, now);
            return;
        }
        let keep = applies.then(|| (order, message.clone()));
        self.push_send(message, Purpose::Data(keep));
    }

    /// Whether a message of `sf` is spooled when it cannot be sent: EnableSpooling is true
    /// and the host selected its stream and function with S2F43.
    pub(super) fn spooling_applies(&self, sf: StreamFunction) -> bool {
        self.ec(Standard::EnableSpooling) != 0 && self.spool.selected(sf)
    }

    fn spool_or_drop(&mut self, message: &Message, order: u64, now: Instant) {
        let sf = message.stream_function();
        if !self.spooling_applies(sf) {
            debug!(%sf, "not sent: not communicating and not spooled");
            return;
        }
        let capacity = self.model.capacities.spool;
        let overwrite = self.ec(Standard::OverWriteSpool) != 0;
        let stamp = self.clock_text(now);
        let put = self.spool.put(message, order, capacity, overwrite, &stamp);
        if let Put::Spooled { activated: true } = put {
            info!("spooling activated");
            self.fire_standard(Standard::SpoolingActivated, now);
        }
    }

    /// A W-bit primary the equipment sent was answered, timed out or failed.
    pub fn outcome(&mut self, tag: Tag, outcome: Outcome, now: Instant) {
        let Some(purpose) = self.pending.remove(&tag) else {
            return;
        };
        let timed_out = matches!(outcome, Outcome::Timeout { .. });
        if let Outcome::Timeout { shead } = &outcome {
            warn!("T3 reply timeout: S9F9");
            self.stream_nine(9, *shead);
        }
        let reply = match outcome {
            Outcome::Reply(m) if m.function != 0 => Some(m),
            _ => None,
        };
        match purpose {
            Purpose::EstablishCommunication => match reply {
                Some(m) if commack(&m) == Some(0) => self.become_communicating(),
                _ if self.comm == CommunicationState::WaitCra => self.enter_wait_delay(now),
                _ => {}
            },
            Purpose::OnlineAttempt => match reply {
                Some(_) if self.control == ControlState::AttemptOnline => self.go_online(now),
                Some(_) => {}
                None => self.online_failed(now),
            },
            Purpose::Spooled(seq) => match reply {
                Some(_) => {
                    if self.spool.delivered(seq) {
                        info!("spool emptied: spooling deactivated");
                        self.fire_standard(Standard::SpoolingDeactivated, now);
                    }
                }
                None => {
                    self.spool.undelivered(seq);
                    self.fire_standard(Standard::SpoolTransmitFailure, now);
                }
            },
            Purpose::Data(kept) => {
                if reply.is_none()
                    && let Some((order, message)) = kept
                {
                    self.spool_or_drop(&message, order, now);
                }
            }
        }
        if timed_out {
            self.communication_failed();
        }
    }

    /// Transmits spooled messages (S6F23 RSDC 0), at most MaxSpoolTransmit (0 = all).
    pub(super) fn transmit_spool(&mut self) {
        let max = usize::try_from(self.ec(Standard::MaxSpoolTransmit)).unwrap_or(0);
        for (seq, mut message) in self.spool.start_transmit(max) {
            message.system_bytes = 0;
            message.device_id = self.model.device_id;
            let w_bit = message.w_bit;
            self.push_send(message, Purpose::Spooled(seq));
            if !w_bit {
                self.spool.delivered(seq);
            }
        }
    }

    // ----- values -----

    /// The current value of an SV, DV or EC.
    pub fn value(&self, vid: Id, now: Instant) -> Option<Item> {
        if let Some(v) = self.model.variables.get(&vid) {
            return Some(match v.standard {
                Some(s) => self
                    .standard_value(s, now)
                    .unwrap_or_else(|| v.value.clone()),
                None => v.value.clone(),
            });
        }
        self.model.constants.get(&vid).map(|c| c.value.clone())
    }

    /// The value of a standard variable the engine computes; `None` for stored ones.
    fn standard_value(&self, s: Standard, now: Instant) -> Option<Item> {
        let ids = |set: &BTreeSet<Id>| l(set.iter().map(|&i| id_item(i)).collect());
        let capacity = self.model.capacities.spool;
        Some(match s {
            Standard::Clock => items::text(&self.clock_text(now)),
            Standard::ControlState => Item::U1(vec![self.control.code()]),
            Standard::PreviousControlState => Item::U1(vec![self.previous_control.code()]),
            Standard::CommunicationState => Item::U1(vec![self.comm.code()]),
            Standard::EventsEnabled => ids(&self.enabled_events),
            Standard::AlarmsEnabled => ids(&self.enabled_alarms),
            Standard::AlarmsSet => ids(&self.set_alarms),
            Standard::Mdln => items::text(&self.model.mdln),
            Standard::Softrev => items::text(&self.model.softrev),
            Standard::SpoolCountActual => {
                Item::U4(vec![u32::try_from(self.spool.count()).unwrap_or(u32::MAX)])
            }
            Standard::SpoolCountTotal => Item::U4(vec![
                u32::try_from(self.spool.meta().total).unwrap_or(u32::MAX),
            ]),
            Standard::SpoolStartTime => items::text(&self.spool.meta().start_time),
            Standard::SpoolFullTime => items::text(&self.spool.meta().full_time),
            Standard::SpoolState => Item::U1(vec![self.spool.state_code(capacity)]),
            _ => return None,
        })
    }

    /// Whether a standard variable is computed (and so cannot be set).
    fn computed(&self, s: Standard, now: Instant) -> bool {
        self.standard_value(s, now).is_some()
    }

    /// The value of a standard EC as a number (BOOLEAN true = 1; 0 if not numeric).
    pub(super) fn ec(&self, s: Standard) -> u64 {
        self.model
            .constants
            .get(&self.model.id(s))
            .and_then(|c| c.value.as_int())
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0)
    }

    /// The Clock, in the form the TimeFormat EC selects.
    pub fn clock_text(&self, now: Instant) -> String {
        DateTime::from_unix_millis(self.clock.unix_ms(now)).format(self.ec(Standard::TimeFormat))
    }

    /// Sets the Clock (S2F31).
    pub(super) fn set_clock(&mut self, to: DateTime, now: Instant) {
        let current = self.clock.unix_ms(now) - self.clock.offset_ms;
        self.clock.offset_ms = to.to_unix_millis() - current;
    }

    /// Sets an SV or DV, as the tool does when its data changes. A changed value fires the
    /// variable's triggers and is checked against its limits.
    pub fn set_variable(&mut self, vid: Id, value: Item, now: Instant) -> Result<(), GemError> {
        let v = self
            .model
            .variables
            .get(&vid)
            .ok_or(GemError::UnknownVariable(vid))?;
        if let Some(s) = v.standard
            && self.computed(s, now)
        {
            return Err(GemError::ComputedVariable(vid, v.name.clone()));
        }
        let changed = v.value != value;
        let triggers: Vec<Id> = v
            .triggers
            .iter()
            .filter(|t| changed && t.value.as_ref().is_none_or(|want| *want == value))
            .map(|t| t.event)
            .collect();
        if let Some(v) = self.model.variables.get_mut(&vid) {
            v.value = value;
        }
        if changed {
            self.check_limits(vid, now);
            for ceid in triggers {
                self.fire(ceid, now);
            }
        }
        Ok(())
    }

    /// Sets a stored standard variable (a DV such as AlarmID before its event).
    pub(super) fn set_standard(&mut self, s: Standard, value: Item) {
        let id = self.model.id(s);
        if let Some(v) = self.model.variables.get_mut(&id) {
            v.value = value;
        }
    }

    /// The tool reports collection event `ceid`: S6F11 with its linked reports, if the
    /// host enabled it.
    pub fn trigger_event(&mut self, ceid: Id, now: Instant) -> Result<(), GemError> {
        if !self.model.events.contains_key(&ceid) {
            return Err(GemError::UnknownEvent(ceid));
        }
        self.fire(ceid, now);
        Ok(())
    }

    pub(super) fn fire_standard(&mut self, s: Standard, now: Instant) {
        self.fire(self.model.id(s), now);
    }

    /// A new DATAID.
    pub(super) fn next_data_id(&mut self) -> Id {
        self.data_id = self.data_id.wrapping_add(1);
        self.data_id
    }
}

/// A new primary (the transport sets device ID and system bytes).
pub(super) fn primary(stream: u8, function: u8, w_bit: bool, body: Option<Item>) -> Message {
    Message::new(StreamFunction { stream, function }, w_bit, body)
}

/// SxF0: aborts the transaction of `message` (same system bytes, header only).
fn abort(message: &Message) -> Message {
    Message {
        function: 0,
        w_bit: false,
        body: None,
        ..message.clone()
    }
}

/// COMMACK of an S1F14.
fn commack(m: &Message) -> Option<i128> {
    if (m.stream, m.function) != (1, 14) {
        return None;
    }
    let body = m.body.as_ref()?;
    let children = list_of(body, 2).ok()?;
    children[0].as_int()
}

/// The handler of every message of the GEM tool table.
fn handler(sf: StreamFunction) -> Option<Handler> {
    Some(match (sf.stream, sf.function) {
        (1, 1) => Equipment::s1f1_are_you_there,
        (1, 3) => Equipment::s1f3_status_values,
        (1, 11) => Equipment::s1f11_status_names,
        (1, 13) => Equipment::s1f13_establish_communication,
        (1, 15) => Equipment::s1f15_offline,
        (1, 17) => Equipment::s1f17_online,
        (1, 21) => Equipment::s1f21_data_variable_names,
        (1, 23) => Equipment::s1f23_event_names,
        (2, 13) => Equipment::s2f13_constant_values,
        (2, 15) => Equipment::s2f15_set_constants,
        (2, 17) => Equipment::s2f17_date_time,
        (2, 23) => Equipment::s2f23_trace,
        (2, 25) => Equipment::s2f25_loopback,
        (2, 29) => Equipment::s2f29_constant_names,
        (2, 31) => Equipment::s2f31_set_clock,
        (2, 33) => Equipment::s2f33_define_reports,
        (2, 35) => Equipment::s2f35_link_events,
        (2, 37) => Equipment::s2f37_enable_events,
        (2, 41) => Equipment::s2f41_remote_command,
        (2, 43) => Equipment::s2f43_spool_streams,
        (2, 45) => Equipment::s2f45_define_limits,
        (2, 47) => Equipment::s2f47_limit_attributes,
        (2, 49) => Equipment::s2f49_enhanced_remote_command,
        (5, 3) => Equipment::s5f3_enable_alarms,
        (5, 5) => Equipment::s5f5_list_alarms,
        (5, 7) => Equipment::s5f7_enabled_alarms,
        (6, 15) => Equipment::s6f15_event_report,
        (6, 17) => Equipment::s6f17_annotated_event_report,
        (6, 19) => Equipment::s6f19_report,
        (6, 21) => Equipment::s6f21_annotated_report,
        (6, 23) => Equipment::s6f23_spooled_data,
        (7, 1) => Equipment::s7f1_load_inquire,
        (7, 3) => Equipment::s7f3_download,
        (7, 5) => Equipment::s7f5_upload,
        (7, 17) => Equipment::s7f17_delete,
        (7, 19) => Equipment::s7f19_directory,
        _ => return None,
    })
}

impl Equipment {
    /// Answers a request whose body is `<L[n] <ID>…>` (n = 0 means every ID in `all`) with
    /// `<L[n] …>`, one `answer` per ID. `answer` gets the ID (`None` if no object can have
    /// it) and the ID item to echo. This is the shape of S1F3, S1F11, S1F21, S1F23, S2F13,
    /// S2F29 and S2F47.
    pub(super) fn each_id(
        &self,
        body: Option<&Item>,
        all: impl Iterator<Item = Id>,
        answer: impl Fn(&Self, Option<Id>, Item) -> Item,
    ) -> Parsed<Option<Item>> {
        let requested = items::list(items::required(body)?)?;
        let out = if requested.is_empty() {
            all.map(|i| answer(self, Some(i), id_item(i))).collect()
        } else {
            requested
                .iter()
                .map(|it| Ok(answer(self, items::id(it)?, it.clone())))
                .collect::<Parsed<Vec<_>>>()?
        };
        Ok(Some(l(out)))
    }

    /// IDs of the variables of one class.
    pub(super) fn variable_ids(&self, class: VariableClass) -> Vec<Id> {
        self.model
            .variables
            .values()
            .filter(|v| v.class == class)
            .map(|v| v.id)
            .collect()
    }

    /// `<B code>`: the usual one-item reply.
    pub(super) fn acked(code: u8) -> Parsed<Option<Item>> {
        Ok(Some(ack(code)))
    }
}
