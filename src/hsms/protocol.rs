//! The HSMS-SS protocol state machine (SEMI E37/E37.1), sans-IO.
//!
//! It owns no socket and no clock. The driver tells it when TCP connected
//! ([`Protocol::connected`]) or dropped ([`Protocol::disconnected`]), feeds it received bytes
//! with the current instant ([`Protocol::handle_input`]), asks it to send
//! ([`Protocol::send`]), and calls [`Protocol::handle_timeout`] at
//! [`Protocol::poll_timeout`]. In return it writes bytes to send ([`Protocol::take_transmit`])
//! and queues [`Event`]s ([`Protocol::poll_event`]). When an event is [`Event::Closed`] the
//! driver writes what is left to transmit and closes TCP.
//!
//! States: NOT CONNECTED -> (TCP) NOT SELECTED -> (select) SELECTED. Timers: T3 reply, T6
//! control transaction, T7 not selected, T8 intercharacter, and a linktest interval. T5, the
//! gap between connection attempts, belongs to the driver that makes them.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::frame::{self, HEADER_LEN, Header, LENGTH_LEN, SType};
use crate::secs2::{DecodeError, DecodeLimits, EncodeError, Item, Message, StreamFunction};

/// HSMS timers and limits. Defaults are SEMI's.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// T3: how long a W-bit primary waits for its reply (45 s).
    pub t3: Duration,
    /// T5: minimum gap between connection attempts (10 s); used by the driver.
    pub t5: Duration,
    /// T6: how long a control transaction (select, linktest, deselect) waits (5 s).
    pub t6: Duration,
    /// T7: how long a connection may stay NOT SELECTED (10 s).
    pub t7: Duration,
    /// T8: longest gap between bytes of one message (5 s).
    pub t8: Duration,
    /// Interval between Linktest.req while SELECTED; `None` sends none.
    pub linktest: Option<Duration>,
    /// Largest message accepted (length field), 16 MiB by default; larger closes the connection.
    pub max_message_size: usize,
    /// Limits for decoding message bodies.
    pub decode_limits: DecodeLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            t3: Duration::from_secs(45),
            t5: Duration::from_secs(10),
            t6: Duration::from_secs(5),
            t7: Duration::from_secs(10),
            t8: Duration::from_secs(5),
            linktest: Some(Duration::from_secs(60)),
            max_message_size: 16 * 1024 * 1024,
            decode_limits: DecodeLimits::default(),
        }
    }
}

/// Whether this end connects (usually the host) or listens (usually the equipment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Connects, then sends Select.req.
    Active,
    /// Accepts, then waits for Select.req.
    Passive,
}

/// HSMS connection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No TCP connection.
    NotConnected,
    /// TCP connected, HSMS not selected: only control messages flow.
    NotSelected,
    /// Selected: data messages flow.
    Selected,
}

/// Select.rsp status codes (byte 3).
pub mod select_status {
    /// Communication established.
    pub const OK: u8 = 0;
    /// Communication already active.
    pub const ALREADY_ACTIVE: u8 = 1;
    /// Connection not ready.
    pub const NOT_READY: u8 = 2;
    /// Connect exhaust: another connection is already selected.
    pub const EXHAUSTED: u8 = 3;
}

/// Deselect.rsp status codes (byte 3).
pub mod deselect_status {
    /// Communication ended.
    pub const OK: u8 = 0;
    /// Communication was not established.
    pub const NOT_ESTABLISHED: u8 = 1;
}

/// Reject.req reason codes (byte 3).
pub mod reject_reason {
    /// SType not supported (byte 2 carries the SType).
    pub const STYPE: u8 = 1;
    /// PType not supported (byte 2 carries the PType).
    pub const PTYPE: u8 = 2;
    /// A response arrived for no open transaction.
    pub const TRANSACTION_NOT_OPEN: u8 = 3;
    /// A data message arrived while NOT SELECTED.
    pub const NOT_SELECTED: u8 = 4;

    /// What a reason code means, and what byte 2 of the Reject.req names (the rejected
    /// message's PType for reason 2, its SType otherwise), as log text.
    pub fn describe(reason: u8, byte2: u8) -> String {
        let meaning = match reason {
            STYPE => "SType not supported",
            PTYPE => "PType not supported",
            TRANSACTION_NOT_OPEN => "transaction not open",
            NOT_SELECTED => "entity not selected",
            _ => "reason not defined by E37",
        };
        let field = if reason == PTYPE { "PType" } else { "SType" };
        format!("reason {reason} ({meaning}); the rejected message's {field} is {byte2}")
    }
}

/// Why the connection was closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    #[error("the peer closed the connection")]
    PeerClosed,
    #[error("the peer sent Separate.req")]
    PeerSeparated,
    #[error("the peer rejected a data message as not selected while this end was selected")]
    PeerNotSelected,
    #[error("separated by this end")]
    Separated,
    #[error("T6: no {0} within the control transaction timeout")]
    T6(&'static str),
    #[error("T7: not selected within the timeout after connecting")]
    T7,
    #[error("T8: a message stalled mid-way (no byte within the intercharacter timeout)")]
    T8,
    #[error("select refused with status {0}")]
    SelectRefused(u8),
    #[error("the peer rejected our {0} (reason {1})")]
    ControlRejected(&'static str, u8),
    #[error("message length {length} exceeds the maximum of {max} bytes")]
    TooLarge { length: usize, max: usize },
    #[error("bad frame: {0}")]
    BadFrame(String),
    #[error("connection error: {0}")]
    Io(String),
    #[error("write stalled: the peer read nothing for {waited:?} with {unwritten} bytes waiting")]
    WriteStalled { waited: Duration, unwritten: usize },
}

impl CloseReason {
    /// Whether the connection ended because something went wrong (a timer, a bad frame, an
    /// I/O error, a refusal), rather than by either end's choice (a close, a Separate.req).
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            CloseReason::PeerClosed | CloseReason::PeerSeparated | CloseReason::Separated
        )
    }
}

/// Something the driver or the engine must know. `T` is the caller's context of an open
/// transaction (see [`Protocol::send_with`]), handed back when the transaction ends.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<T = ()> {
    /// The state changed.
    State(State),
    /// A data message that is not a reply to one of ours: a primary, or an unexpected
    /// secondary.
    Received(Message),
    /// A data message whose body failed to decode (the equipment answers S9F7).
    Malformed { header: Header, error: DecodeError },
    /// The reply to a W-bit primary we sent (an SxF0 reply means the peer aborted it), with
    /// the transaction's context.
    Reply(Message, T),
    /// T3 expired for a primary we sent; the connection stays up.
    ReplyTimeout {
        system_bytes: u32,
        stream_function: StreamFunction,
        context: T,
    },
    /// A primary we sent was rejected with Reject.req, answered with a stream 9 error, or its
    /// connection closed.
    TransactionFailed {
        system_bytes: u32,
        stream_function: StreamFunction,
        reason: TransactionFailure,
        context: T,
    },
    /// A Linktest.req we sent was answered.
    LinktestOk { system_bytes: u32 },
    /// The peer sent Reject.req for something of ours (logged; reason code and byte 2).
    PeerRejected {
        system_bytes: u32,
        reason: u8,
        byte2: u8,
    },
    /// A protocol irregularity that did not close the connection (logged).
    Warning(String),
    /// The connection is over: write what is left to transmit, then close TCP.
    Closed(CloseReason),
}

/// Why an open transaction ended without a reply.
#[derive(Clone, Debug, PartialEq)]
pub enum TransactionFailure {
    /// The peer answered with Reject.req and this reason code.
    Rejected(u8),
    /// The peer answered with a stream 9 error message (S9F1, S9F3, S9F5, S9F7, S9F9, S9F11)
    /// whose MHEAD carries this transaction's system bytes.
    StreamNine(Box<Message>),
    /// The reply arrived but its body did not decode.
    Malformed(DecodeError),
    /// The connection closed first.
    ConnectionClosed,
}

/// A message could not be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("not selected (HSMS state {0:?}); data messages are sent only when SELECTED")]
    NotSelected(State),
    #[error("cannot encode the message: {0}")]
    Encode(#[from] EncodeError),
    #[error("message is {length} bytes, over the maximum of {max}")]
    TooLarge { length: usize, max: usize },
}

/// An open control transaction (T6).
#[derive(Clone, Copy, Debug)]
struct ControlTransaction {
    stype: SType,
    system_bytes: u32,
    deadline: Instant,
}

/// An open data transaction: a W-bit primary we sent, waiting for its reply.
#[derive(Debug)]
struct Open<T> {
    stream_function: StreamFunction,
    /// T3 expiry.
    deadline: Instant,
    context: T,
}

/// The HSMS-SS protocol state of one connection. `T` is what the caller keeps with each open
/// transaction (a waiter, a tag); the protocol is the only table of open transactions.
#[derive(Debug)]
pub struct Protocol<T = ()> {
    config: Config,
    role: Role,
    state: State,
    /// Bytes of an incomplete frame.
    rx: Vec<u8>,
    /// When the last byte of an incomplete frame arrived (for T8).
    rx_since: Option<Instant>,
    tx: Vec<u8>,
    events: VecDeque<Event<T>>,
    t7_deadline: Option<Instant>,
    control: Vec<ControlTransaction>,
    /// Open data transactions by system bytes.
    open: HashMap<u32, Open<T>>,
    /// T3 deadlines in the order the transactions were opened (the same T3 for all, so also
    /// in deadline order); entries whose transaction has ended are skipped lazily.
    t3_order: VecDeque<(Instant, u32)>,
    /// Whether the driver has stopped reading input (its receive queue is full): T8 waits.
    input_held: bool,
    next_linktest: Option<Instant>,
    next_system_bytes: u32,
    /// System bytes of our Select.req that a simultaneous select made moot: its Select.rsp is
    /// accepted once, silently.
    superseded_select: Option<u32>,
}

/// Moved to [`crate::secs2::message`], shared with SECS-I; re-exported here.
pub use crate::secs2::message::stream_nine_mhead;

fn name(stype: SType) -> &'static str {
    match stype {
        SType::SelectReq => "Select.rsp",
        SType::LinktestReq => "Linktest.rsp",
        SType::DeselectReq => "Deselect.rsp",
        _ => "response",
    }
}

impl Protocol<()> {
    /// A protocol in NOT CONNECTED whose transactions carry no context.
    pub fn new(config: Config, role: Role) -> Self {
        Protocol::with_context(config, role)
    }
}

impl<T> Protocol<T> {
    /// A protocol in NOT CONNECTED whose open transactions each carry a `T`.
    pub fn with_context(config: Config, role: Role) -> Self {
        Protocol {
            config,
            role,
            state: State::NotConnected,
            rx: Vec::new(),
            rx_since: None,
            tx: Vec::with_capacity(4096),
            events: VecDeque::new(),
            t7_deadline: None,
            control: Vec::new(),
            open: HashMap::new(),
            t3_order: VecDeque::new(),
            input_held: false,
            next_linktest: None,
            next_system_bytes: 1,
            superseded_select: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of W-bit primaries waiting for a reply.
    pub fn open_transactions(&self) -> usize {
        self.open.len()
    }

    fn set_state(&mut self, state: State) {
        if self.state != state {
            self.state = state;
            self.events.push_back(Event::State(state));
        }
    }

    /// TCP is connected: the active end sends Select.req (T6); both ends start T7.
    pub fn connected(&mut self, now: Instant) {
        self.rx.clear();
        self.rx_since = None;
        self.set_state(State::NotSelected);
        self.t7_deadline = Some(now + self.config.t7);
        if self.role == Role::Active {
            self.start_control(SType::SelectReq, now);
        }
    }

    /// TCP is gone (closed by the peer, reset, or an I/O error).
    pub fn disconnected(&mut self, reason: CloseReason) {
        if self.state != State::NotConnected {
            self.close(reason);
        }
    }

    /// Sends Separate.req and closes (the SS way to end communication).
    pub fn separate(&mut self) {
        if self.state == State::Selected {
            let sb = self.allocate_system_bytes();
            frame::encode_control(&Header::control(SType::SeparateReq, sb), &mut self.tx);
        }
        if self.state != State::NotConnected {
            self.close(CloseReason::Separated);
        }
    }

    /// Sends Linktest.req (T6) and returns its system bytes; [`Event::LinktestOk`] follows, or
    /// the connection closes on T6.
    pub fn linktest(&mut self, now: Instant) -> Result<u32, SendError> {
        if self.state == State::NotConnected {
            return Err(SendError::NotSelected(self.state));
        }
        Ok(self.start_control(SType::LinktestReq, now))
    }

    /// Sends Deselect.req (T6); the connection goes NOT SELECTED on Deselect.rsp.
    pub fn deselect(&mut self, now: Instant) -> Result<u32, SendError> {
        if self.state != State::Selected {
            return Err(SendError::NotSelected(self.state));
        }
        Ok(self.start_control(SType::DeselectReq, now))
    }

    /// Sends a data message with no context: see [`Protocol::send_with`].
    pub fn send(&mut self, message: Message, now: Instant) -> Result<u32, SendError>
    where
        T: Default,
    {
        self.send_with(message, T::default(), now)
    }

    /// Sends a data message. A primary (odd function) gets fresh system bytes; a W-bit primary
    /// opens a transaction with T3 that keeps `context` until its reply, T3, a Reject.req, an
    /// S9Fx naming it, or the end of the connection hands it back in an [`Event`]. A secondary
    /// keeps the system bytes it was given (those of the primary it answers). Returns the
    /// system bytes sent.
    pub fn send_with(
        &mut self,
        mut message: Message,
        context: T,
        now: Instant,
    ) -> Result<u32, SendError> {
        if self.state != State::Selected {
            return Err(SendError::NotSelected(self.state));
        }
        let primary = message.function % 2 == 1;
        if primary {
            message.system_bytes = self.allocate_system_bytes();
        }
        let start = self.tx.len();
        frame::encode_message(&message, &mut self.tx)?;
        let length = self.tx.len() - start - LENGTH_LEN;
        if length > self.config.max_message_size {
            self.tx.truncate(start);
            return Err(SendError::TooLarge {
                length,
                max: self.config.max_message_size,
            });
        }
        if primary && message.w_bit {
            let deadline = now + self.config.t3;
            self.open.insert(
                message.system_bytes,
                Open {
                    stream_function: message.stream_function(),
                    deadline,
                    context,
                },
            );
            self.t3_order.push_back((deadline, message.system_bytes));
        }
        Ok(message.system_bytes)
    }

    /// Ends an open transaction without waiting for its reply; returns its context if it was
    /// open.
    pub fn cancel_transaction(&mut self, system_bytes: u32) -> Option<T> {
        let open = self.open.remove(&system_bytes)?;
        self.prune_t3();
        Some(open.context)
    }

    /// Drops T3 entries of transactions that have ended from the front of the order, so that
    /// its front is the earliest live deadline.
    fn prune_t3(&mut self) {
        while let Some(&(deadline, sb)) = self.t3_order.front() {
            if self.open.get(&sb).is_some_and(|o| o.deadline == deadline) {
                return;
            }
            self.t3_order.pop_front();
        }
    }

    /// Tells the protocol whether the driver has stopped reading input because its receive
    /// queue is full (back-pressure). While input is held T8 does not run: a frame cut short
    /// by the pause is not the peer's fault. It restarts from `now` when input resumes.
    pub fn hold_input(&mut self, held: bool, now: Instant) {
        if self.input_held && !held && self.rx_since.is_some() {
            self.rx_since = Some(now);
        }
        self.input_held = held;
    }

    /// How many bytes wait to be taken by [`Protocol::take_transmit`].
    pub fn pending_transmit(&self) -> usize {
        self.tx.len()
    }

    /// Moves the bytes to transmit into `out` (appending); returns whether there were any.
    pub fn take_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if self.tx.is_empty() {
            return false;
        }
        if out.is_empty() {
            std::mem::swap(out, &mut self.tx);
        } else {
            out.append(&mut self.tx);
        }
        true
    }

    /// The next queued event.
    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    /// The earliest instant at which [`Protocol::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t8 = self
            .rx_since
            .filter(|_| !self.input_held)
            .map(|t| t + self.config.t8);
        let t3 = self.t3_order.front().map(|(d, _)| *d);
        let t6 = self.control.iter().map(|c| c.deadline).min();
        let link = if self.state == State::Selected {
            self.next_linktest
        } else {
            None
        };
        let t7 = if self.state == State::NotSelected {
            self.t7_deadline
        } else {
            None
        };
        [t8, t3, t6, link, t7].into_iter().flatten().min()
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::NotConnected {
            return;
        }
        if !self.input_held && self.rx_since.is_some_and(|t| now >= t + self.config.t8) {
            return self.close(CloseReason::T8);
        }
        if let Some(c) = self.control.iter().find(|c| now >= c.deadline) {
            let stype = c.stype;
            return self.close(CloseReason::T6(name(stype)));
        }
        if self.state == State::NotSelected && self.t7_deadline.is_some_and(|d| now >= d) {
            return self.close(CloseReason::T7);
        }
        self.prune_t3();
        while let Some(&(deadline, system_bytes)) = self.t3_order.front() {
            if now < deadline {
                break;
            }
            self.t3_order.pop_front();
            if let Some(open) = self.open.remove(&system_bytes) {
                self.events.push_back(Event::ReplyTimeout {
                    system_bytes,
                    stream_function: open.stream_function,
                    context: open.context,
                });
            }
            self.prune_t3();
        }
        if self.state == State::Selected && self.next_linktest.is_some_and(|t| now >= t) {
            if self.control.iter().any(|c| c.stype == SType::LinktestReq) {
                self.next_linktest = None;
            } else {
                self.start_control(SType::LinktestReq, now);
            }
        }
    }

    /// Feeds received bytes. Complete frames are handled at once; a partial frame waits for the
    /// rest (T8 runs while it does). A length field over the maximum closes the connection
    /// as soon as it arrives, without reading the body.
    pub fn handle_input(&mut self, mut input: &[u8], now: Instant) {
        if self.state == State::NotConnected || input.is_empty() {
            return;
        }
        if !self.rx.is_empty() {
            if self.rx.len() < LENGTH_LEN {
                let take = (LENGTH_LEN - self.rx.len()).min(input.len());
                self.rx.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.rx.len() < LENGTH_LEN {
                    self.rx_since = Some(now);
                    return;
                }
            }
            let field: [u8; LENGTH_LEN] = [self.rx[0], self.rx[1], self.rx[2], self.rx[3]];
            let Some(total) = self.frame_len(&field) else {
                return;
            };
            let take = (total - self.rx.len()).min(input.len());
            self.rx.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.rx.len() < total {
                self.rx_since = Some(now);
                return;
            }
            let mut buffered = std::mem::take(&mut self.rx);
            self.rx_since = None;
            self.frame(&buffered[LENGTH_LEN..], now);
            buffered.clear();
            if self.rx.is_empty() {
                self.rx = buffered; // keep the capacity
            }
        }
        while !input.is_empty() && self.state != State::NotConnected {
            if input.len() < LENGTH_LEN {
                self.rx.extend_from_slice(input);
                self.rx_since = Some(now);
                return;
            }
            let Some(total) = self.frame_len(&input[..LENGTH_LEN]) else {
                return;
            };
            if input.len() < total {
                self.rx.extend_from_slice(input);
                self.rx_since = Some(now);
                return;
            }
            self.frame(&input[LENGTH_LEN..total], now);
            input = &input[total..];
        }
    }

    /// Total bytes of a frame (length field included) from its length field; closes the
    /// connection for a length under the header size or over the maximum.
    fn frame_len(&mut self, length_field: &[u8]) -> Option<usize> {
        let length = length_field
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if length < HEADER_LEN {
            self.close(CloseReason::BadFrame(format!(
                "length field {length} is less than the 10-byte header"
            )));
            return None;
        }
        if length > self.config.max_message_size {
            self.close(CloseReason::TooLarge {
                length,
                max: self.config.max_message_size,
            });
            return None;
        }
        Some(LENGTH_LEN + length)
    }

    /// Handles one complete frame (header and body, without the length field).
    fn frame(&mut self, bytes: &[u8], now: Instant) {
        let Some((header, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return;
        };
        let header = Header::from_bytes(header);
        if header.ptype != 0 {
            return self.reject(&header, header.ptype, reject_reason::PTYPE);
        }
        if header.stype != SType::Data && !body.is_empty() {
            return self.close(CloseReason::BadFrame(format!(
                "control message SType {} carries {} body bytes",
                header.stype.code(),
                body.len()
            )));
        }
        match header.stype {
            SType::Data => self.data(header, body),
            SType::SelectReq => self.select_req(&header, now),
            SType::SelectRsp => self.select_rsp(&header, now),
            SType::DeselectReq => {
                let status = if self.state == State::Selected {
                    deselect_status::OK
                } else {
                    deselect_status::NOT_ESTABLISHED
                };
                self.respond(&header, SType::DeselectRsp, status);
                if status == deselect_status::OK {
                    self.set_state(State::NotSelected);
                    self.t7_deadline = Some(now + self.config.t7);
                }
            }
            SType::DeselectRsp => {
                if self
                    .finish_control(SType::DeselectReq, header.system_bytes)
                    .is_some()
                {
                    if header.byte3 == deselect_status::OK {
                        self.set_state(State::NotSelected);
                        self.t7_deadline = Some(now + self.config.t7);
                    }
                } else {
                    self.reject(
                        &header,
                        header.stype.code(),
                        reject_reason::TRANSACTION_NOT_OPEN,
                    );
                }
            }
            SType::LinktestReq => self.respond(&header, SType::LinktestRsp, 0),
            SType::LinktestRsp => {
                if self
                    .finish_control(SType::LinktestReq, header.system_bytes)
                    .is_some()
                {
                    self.events.push_back(Event::LinktestOk {
                        system_bytes: header.system_bytes,
                    });
                    self.schedule_linktest(now);
                } else {
                    self.reject(
                        &header,
                        header.stype.code(),
                        reject_reason::TRANSACTION_NOT_OPEN,
                    );
                }
            }
            SType::RejectReq => self.reject_req(&header, now),
            SType::SeparateReq => self.close(CloseReason::PeerSeparated),
            SType::Other(code) => self.reject(&header, code, reject_reason::STYPE),
        }
    }

    fn data(&mut self, header: Header, body: &[u8]) {
        if self.state != State::Selected {
            return self.reject(&header, header.stype.code(), reject_reason::NOT_SELECTED);
        }
        let body = match Item::decode_body(body, &self.config.decode_limits) {
            Ok(body) => body,
            Err(error) => {
                // A malformed reply still ends its transaction (it will not come again).
                if header.function().is_multiple_of(2)
                    && let Some(open) = self.open.remove(&header.system_bytes)
                {
                    self.prune_t3();
                    self.events.push_back(Event::TransactionFailed {
                        system_bytes: header.system_bytes,
                        stream_function: open.stream_function,
                        reason: TransactionFailure::Malformed(error.clone()),
                        context: open.context,
                    });
                }
                self.events.push_back(Event::Malformed { header, error });
                return;
            }
        };
        let message = header.into_message(body);
        let is_reply = message.function.is_multiple_of(2);
        if is_reply
            && let Some(open) = self.open.get(&message.system_bytes)
            && open.stream_function.stream == message.stream
            && let Some(open) = self.open.remove(&message.system_bytes)
        {
            self.prune_t3();
            self.events.push_back(Event::Reply(message, open.context));
            return;
        }
        if let Some(system_bytes) = stream_nine_mhead(&message)
            && let Some(open) = self.open.remove(&system_bytes)
        {
            // The peer could not take our primary: the S9Fx names it by its header (MHEAD),
            // so the transaction ends now rather than at T3.
            self.prune_t3();
            self.events.push_back(Event::TransactionFailed {
                system_bytes,
                stream_function: open.stream_function,
                reason: TransactionFailure::StreamNine(Box::new(message.clone())),
                context: open.context,
            });
        }
        self.events.push_back(Event::Received(message));
    }

    fn select_req(&mut self, header: &Header, now: Instant) {
        match self.state {
            State::Selected => {
                self.respond(header, SType::SelectRsp, select_status::ALREADY_ACTIVE)
            }
            State::NotSelected => {
                // Simultaneous select: the peer's Select.req while ours is open also succeeds.
                if let Some(at) = self
                    .control
                    .iter()
                    .position(|c| c.stype == SType::SelectReq)
                {
                    self.superseded_select = Some(self.control.remove(at).system_bytes);
                }
                self.respond(header, SType::SelectRsp, select_status::OK);
                self.become_selected(now);
            }
            State::NotConnected => {}
        }
    }

    fn select_rsp(&mut self, header: &Header, now: Instant) {
        if self
            .finish_control(SType::SelectReq, header.system_bytes)
            .is_none()
        {
            if self.superseded_select == Some(header.system_bytes) {
                // The answer to our half of a simultaneous select: nothing more to do.
                self.superseded_select = None;
                return;
            }
            return self.reject(
                header,
                header.stype.code(),
                reject_reason::TRANSACTION_NOT_OPEN,
            );
        }
        if header.byte3 == select_status::OK {
            self.become_selected(now);
        } else {
            self.close(CloseReason::SelectRefused(header.byte3));
        }
    }

    fn reject_req(&mut self, header: &Header, now: Instant) {
        let (sb, reason) = (header.system_bytes, header.byte3);
        let peer_not_selected = reason == reject_reason::NOT_SELECTED
            && header.byte2 == SType::Data.code()
            && self.state == State::Selected;
        if let Some(c) = self.finish_control_any(sb) {
            let what = match c.stype {
                SType::SelectReq => "Select.req",
                SType::LinktestReq => "Linktest.req",
                _ => "Deselect.req",
            };
            return self.close(CloseReason::ControlRejected(what, reason));
        }
        if let Some(open) = self.open.remove(&sb) {
            self.prune_t3();
            self.events.push_back(Event::TransactionFailed {
                system_bytes: sb,
                stream_function: open.stream_function,
                reason: TransactionFailure::Rejected(reason),
                context: open.context,
            });
        } else {
            self.events.push_back(Event::PeerRejected {
                system_bytes: sb,
                reason,
                byte2: header.byte2,
            });
        }
        if peer_not_selected {
            self.resynchronise(now);
        }
    }

    /// The peer rejected our data message as "not selected" although it answered our select:
    /// the two ends disagree about the session. The active end selects again (T6 bounds it;
    /// a failure closes the connection); the passive end closes, and the peer reconnects.
    fn resynchronise(&mut self, now: Instant) {
        match self.role {
            Role::Active => {
                self.events.push_back(Event::Warning(
                    "the peer says it is not selected; sending Select.req again".into(),
                ));
                self.set_state(State::NotSelected);
                self.next_linktest = None;
                self.t7_deadline = Some(now + self.config.t7);
                self.start_control(SType::SelectReq, now);
            }
            Role::Passive => self.close(CloseReason::PeerNotSelected),
        }
    }

    fn become_selected(&mut self, now: Instant) {
        self.t7_deadline = None;
        self.set_state(State::Selected);
        self.schedule_linktest(now);
    }

    fn schedule_linktest(&mut self, now: Instant) {
        self.next_linktest = self.config.linktest.map(|i| now + i);
    }

    fn start_control(&mut self, stype: SType, now: Instant) -> u32 {
        let system_bytes = self.allocate_system_bytes();
        frame::encode_control(&Header::control(stype, system_bytes), &mut self.tx);
        self.control.push(ControlTransaction {
            stype,
            system_bytes,
            deadline: now + self.config.t6,
        });
        if stype == SType::LinktestReq {
            self.next_linktest = None;
        }
        system_bytes
    }

    fn finish_control(&mut self, stype: SType, system_bytes: u32) -> Option<ControlTransaction> {
        let at = self
            .control
            .iter()
            .position(|c| c.stype == stype && c.system_bytes == system_bytes)?;
        Some(self.control.remove(at))
    }

    fn finish_control_any(&mut self, system_bytes: u32) -> Option<ControlTransaction> {
        let at = self
            .control
            .iter()
            .position(|c| c.system_bytes == system_bytes)?;
        Some(self.control.remove(at))
    }

    fn respond(&mut self, request: &Header, stype: SType, status: u8) {
        let mut header = Header::control(stype, request.system_bytes);
        header.session_id = request.session_id;
        header.byte3 = status;
        frame::encode_control(&header, &mut self.tx);
    }

    /// Sends Reject.req for `rejected`, with `byte2` (its SType or PType) and a reason.
    fn reject(&mut self, rejected: &Header, byte2: u8, reason: u8) {
        let mut header = Header::control(SType::RejectReq, rejected.system_bytes);
        header.session_id = rejected.session_id;
        header.byte2 = byte2;
        header.byte3 = reason;
        frame::encode_control(&header, &mut self.tx);
        self.events.push_back(Event::Warning(format!(
            "sent Reject.req: {} (system bytes 0x{:08x})",
            reject_reason::describe(reason, byte2),
            rejected.system_bytes
        )));
    }

    fn allocate_system_bytes(&mut self) -> u32 {
        loop {
            let sb = self.next_system_bytes;
            self.next_system_bytes = self.next_system_bytes.wrapping_add(1).max(1);
            if !self.open.contains_key(&sb) && !self.control.iter().any(|c| c.system_bytes == sb) {
                return sb;
            }
        }
    }

    fn close(&mut self, reason: CloseReason) {
        self.rx.clear();
        self.rx_since = None;
        self.t7_deadline = None;
        self.control.clear();
        self.superseded_select = None;
        self.next_linktest = None;
        // Fail what is open in the order it was sent.
        for (deadline, system_bytes) in std::mem::take(&mut self.t3_order) {
            if self
                .open
                .get(&system_bytes)
                .is_some_and(|o| o.deadline == deadline)
                && let Some(open) = self.open.remove(&system_bytes)
            {
                self.events.push_back(Event::TransactionFailed {
                    system_bytes,
                    stream_function: open.stream_function,
                    reason: TransactionFailure::ConnectionClosed,
                    context: open.context,
                });
            }
        }
        self.open.clear();
        self.input_held = false;
        self.set_state(State::NotConnected);
        self.events.push_back(Event::Closed(reason));
    }
}
