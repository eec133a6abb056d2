//! A GEM host and a GEM equipment wired together in memory, the way quinn-proto's tests wire
//! two endpoints: host `hsms::Protocol` + `gem::Host` against `hsms::Protocol` +
//! `gem::Equipment`. Bytes pass between the two protocols in memory; time is simulated (a
//! fake `Instant` advanced to the next deadline of any of the four state machines). No
//! sockets, no threads, no sleeps.
//!
//! The only code that knows the HSMS protocol's transaction API is [`send`] and [`events`]:
//! each side's protocol keeps its open transactions with the context the GEM side needs (the
//! tag of the primary, the 10-byte header for S9F9), and protocol events become
//! [`LinkEvent`]s.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use secsgate::gem::{Action, Equipment, Host, Outcome, Tag, hsms_header};
use secsgate::hsms::protocol::{
    CloseReason, Config, Event, Protocol, Role, SendError, State, TransactionFailure,
};
use secsgate::secs2::Message;

/// What a side keeps with a W-bit primary in flight. Replies, which open no transaction, are
/// sent with `None`.
type Context<W> = Option<Open<W>>;

/// A W-bit primary in flight, with what its sender needs to know when it ends.
#[derive(Debug)]
struct Open<W> {
    context: W,
    /// The primary's 10-byte header (SHEAD of S9F9).
    shead: [u8; 10],
}

/// What became of a W-bit primary, as the protocol reported it.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Reply(Message),
    Timeout { shead: [u8; 10] },
    Failed(TransactionFailure),
}

impl From<Answer> for Outcome {
    fn from(answer: Answer) -> Outcome {
        match answer {
            Answer::Reply(m) => Outcome::Reply(m),
            Answer::Timeout { shead } => Outcome::Timeout { shead },
            Answer::Failed(_) => Outcome::Failed,
        }
    }
}

/// What a side's protocol reported, in the terms the GEM state machines take.
enum LinkEvent<W> {
    /// SELECTED: data messages flow.
    Up,
    /// Out of SELECTED (deselected or disconnected).
    Down,
    /// A message that is not a reply to one of ours.
    Received(Message),
    /// A data message whose body did not decode (its header).
    Malformed([u8; 10]),
    /// One of our W-bit primaries ended.
    Answered {
        system_bytes: u32,
        context: W,
        answer: Answer,
    },
    /// The connection closed: the peer's TCP closes too.
    Closed(CloseReason),
}

/// Sends `message` on `protocol` with the session's device ID; a W-bit primary is kept open
/// with `context`. Returns the system bytes.
fn send<W>(
    protocol: &mut Protocol<Context<W>>,
    mut message: Message,
    context: Option<W>,
    device_id: u16,
    now: Instant,
) -> Result<u32, SendError> {
    message.device_id = device_id;
    let Some(context) = context else {
        return protocol.send(message, now);
    };
    // The system bytes are the protocol's to choose: SHEAD is completed when T3 fires.
    let shead = hsms_header(&Message {
        body: None,
        ..message.clone()
    });
    protocol.send_with(message, Some(Open { context, shead }), now)
}

/// Every event `protocol` queued, with the ended transactions' contexts.
fn events<W>(protocol: &mut Protocol<Context<W>>) -> Vec<LinkEvent<W>> {
    let ended = |system_bytes: u32, open: Context<W>, answer: Answer| {
        let open = open?;
        let answer = match answer {
            Answer::Timeout { .. } => {
                let mut shead = open.shead;
                shead[6..10].copy_from_slice(&system_bytes.to_be_bytes());
                Answer::Timeout { shead }
            }
            other => other,
        };
        Some(LinkEvent::Answered {
            system_bytes,
            context: open.context,
            answer,
        })
    };
    let mut out = Vec::new();
    while let Some(event) = protocol.poll_event() {
        let event = match event {
            Event::State(State::Selected) => Some(LinkEvent::Up),
            Event::State(_) => Some(LinkEvent::Down),
            Event::Received(m) => Some(LinkEvent::Received(m)),
            Event::Malformed { header, .. } => Some(LinkEvent::Malformed(header.to_bytes())),
            Event::Reply(m, open) => ended(m.system_bytes, open, Answer::Reply(m)),
            Event::ReplyTimeout {
                system_bytes,
                context,
                ..
            } => ended(system_bytes, context, Answer::Timeout { shead: [0; 10] }),
            Event::TransactionFailed {
                system_bytes,
                context,
                reason,
                ..
            } => ended(system_bytes, context, Answer::Failed(reason)),
            Event::Closed(reason) => Some(LinkEvent::Closed(reason)),
            Event::LinktestOk { .. } | Event::PeerRejected { .. } | Event::Warning(_) => None,
        };
        out.extend(event);
    }
    out
}

/// Whose a host-side transaction is.
enum Waiter {
    /// The GEM host's own primary (its S1F13).
    Host(Tag),
    /// A request the test sent through [`Pair::request`].
    Test,
}

/// The host and the equipment, their protocols and the wire between them.
pub struct Pair {
    pub now: Instant,
    pub host: Host,
    pub equipment: Equipment,
    host_link: Protocol<Context<Waiter>>,
    equipment_link: Protocol<Context<Tag>>,
    device_id: u16,
    /// TCP is connected.
    wire: bool,
    /// Every primary the host received from the equipment, in arrival order.
    pub received: Vec<Message>,
    /// What became of the test's requests, by system bytes.
    answers: HashMap<u32, Answer>,
    /// Remote commands the equipment accepted, by name.
    pub remote_commands: Vec<String>,
    /// Why each connection closed, in order.
    pub closes: Vec<CloseReason>,
}

impl Pair {
    /// A host and an equipment created at `now`, not connected. Both protocols use `config`.
    pub fn new(host: Host, equipment: Equipment, config: Config, now: Instant) -> Pair {
        let device_id = equipment.model().device_id;
        Pair {
            now,
            host,
            equipment,
            host_link: Protocol::with_context(config.clone(), Role::Active),
            equipment_link: Protocol::with_context(config, Role::Passive),
            device_id,
            wire: false,
            received: Vec::new(),
            answers: HashMap::new(),
            remote_commands: Vec::new(),
            closes: Vec::new(),
        }
    }

    /// TCP connects: the host selects, and everything that follows runs to quiet.
    pub fn connect(&mut self) {
        self.wire = true;
        self.equipment_link.connected(self.now);
        self.host_link.connected(self.now);
        self.pump();
    }

    /// TCP drops under both ends (open transactions fail), and the aftermath runs to quiet.
    pub fn disconnect(&mut self) {
        self.wire = false;
        self.host_link.disconnected(CloseReason::PeerClosed);
        self.equipment_link.disconnected(CloseReason::PeerClosed);
        self.pump();
    }

    /// Whether both protocols are SELECTED.
    pub fn selected(&self) -> bool {
        self.host_link.state() == State::Selected && self.equipment_link.state() == State::Selected
    }

    /// W-bit primaries awaiting their reply: (the host's, the equipment's).
    pub fn in_flight(&self) -> (usize, usize) {
        (
            self.host_link.open_transactions(),
            self.equipment_link.open_transactions(),
        )
    }

    /// Carries out both sides' actions, moves bytes and feeds events, until nothing moves.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(action) = self.host.poll_action() {
                moved = true;
                if let Action::Send { message, tag } = action {
                    self.host_send(message, tag.map(Waiter::Host));
                }
            }
            while let Some(action) = self.equipment.poll_action() {
                moved = true;
                match action {
                    Action::Send { message, tag } => self.equipment_send(message, tag),
                    Action::RemoteCommand { name, .. } => self.remote_commands.push(name),
                }
            }
            moved |= self.transfer();
            for event in events(&mut self.host_link) {
                moved = true;
                self.host_event(event);
            }
            for event in events(&mut self.equipment_link) {
                moved = true;
                self.equipment_event(event);
            }
            if !moved {
                return;
            }
        }
    }

    /// Moves the bytes each protocol wrote to the other (or drops them when TCP is down).
    fn transfer(&mut self) -> bool {
        let mut moved = false;
        let mut bytes = Vec::new();
        if self.host_link.take_transmit(&mut bytes) {
            moved = true;
            if self.wire {
                self.equipment_link.handle_input(&bytes, self.now);
            }
        }
        bytes.clear();
        if self.equipment_link.take_transmit(&mut bytes) {
            moved = true;
            if self.wire {
                self.host_link.handle_input(&bytes, self.now);
            }
        }
        moved
    }

    fn host_send(&mut self, message: Message, waiter: Option<Waiter>) {
        let tag = match &waiter {
            Some(Waiter::Host(tag)) => Some(*tag),
            _ => None,
        };
        let sent = send(
            &mut self.host_link,
            message,
            waiter,
            self.device_id,
            self.now,
        );
        if let (Err(_), Some(tag)) = (sent, tag) {
            self.host.outcome(tag, Outcome::Failed, self.now);
        }
    }

    fn equipment_send(&mut self, message: Message, tag: Option<Tag>) {
        let sent = send(
            &mut self.equipment_link,
            message,
            tag,
            self.device_id,
            self.now,
        );
        if let (Err(_), Some(tag)) = (sent, tag) {
            self.equipment.outcome(tag, Outcome::Failed, self.now);
        }
    }

    /// The host side, as the gateway drives it: state effects, then the default reply.
    fn host_event(&mut self, event: LinkEvent<Waiter>) {
        let now = self.now;
        match event {
            LinkEvent::Up => self.host.link_up(now),
            LinkEvent::Down => self.host.link_down(now),
            LinkEvent::Received(m) => {
                self.host.receive(&m, now);
                if let Some(reply) = self.host.default_reply(&m, now) {
                    self.host_send(reply, None);
                }
                self.received.push(m);
            }
            LinkEvent::Malformed(_) => {}
            LinkEvent::Answered {
                context: Waiter::Host(tag),
                answer,
                ..
            } => self.host.outcome(tag, answer.into(), now),
            LinkEvent::Answered {
                system_bytes,
                context: Waiter::Test,
                answer,
            } => {
                self.answers.insert(system_bytes, answer);
            }
            LinkEvent::Closed(reason) => self.closed(reason),
        }
    }

    /// The equipment side, as the simulator drives it.
    fn equipment_event(&mut self, event: LinkEvent<Tag>) {
        let now = self.now;
        match event {
            LinkEvent::Up => self.equipment.link_up(now),
            LinkEvent::Down => self.equipment.link_down(now),
            LinkEvent::Received(m) => self.equipment.receive(m, now),
            LinkEvent::Malformed(header) => self.equipment.receive_malformed(header, now),
            LinkEvent::Answered {
                context, answer, ..
            } => self.equipment.outcome(context, answer.into(), now),
            LinkEvent::Closed(reason) => self.closed(reason),
        }
    }

    /// One end closed the connection: TCP goes down under the other end too.
    fn closed(&mut self, reason: CloseReason) {
        self.closes.push(reason);
        if self.wire {
            self.wire = false;
            self.host_link.disconnected(CloseReason::PeerClosed);
            self.equipment_link.disconnected(CloseReason::PeerClosed);
        }
    }

    /// The earliest deadline of the four state machines.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.host.poll_timeout(),
            self.equipment.poll_timeout(),
            self.host_link.poll_timeout(),
            self.equipment_link.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Moves time to the next deadline (if it is no later than `limit`), runs every timer due
    /// then and pumps. Returns whether there was one.
    pub fn advance(&mut self, limit: Instant) -> bool {
        let Some(next) = self.next_deadline().filter(|t| *t <= limit) else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        self.host_link.handle_timeout(now);
        self.equipment_link.handle_timeout(now);
        self.host.handle_timeout(now);
        self.equipment.handle_timeout(now);
        self.pump();
        true
    }

    /// Lets `duration` of simulated time pass, running every timer on the way.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.advance(end) {}
        self.now = end;
        self.pump();
    }

    /// Sends a W-bit primary from the host and runs until it ends (at most `limit` of
    /// simulated time).
    pub fn request_within(&mut self, message: Message, limit: Duration) -> Answer {
        let system_bytes = match send(
            &mut self.host_link,
            message,
            Some(Waiter::Test),
            self.device_id,
            self.now,
        ) {
            Ok(sb) => sb,
            Err(e) => panic!("cannot send: {e}"),
        };
        let end = self.now + limit;
        self.pump();
        loop {
            if let Some(answer) = self.answers.remove(&system_bytes) {
                return answer;
            }
            if !self.advance(end) {
                panic!("no answer to the request within {limit:?}");
            }
        }
    }

    /// Sends a W-bit primary from the host and returns its reply (panics on T3 or failure).
    pub fn request(&mut self, message: Message) -> Message {
        match self.request_within(message, Duration::from_secs(3600)) {
            Answer::Reply(reply) => reply,
            other => panic!("request failed: {other:?}"),
        }
    }

    /// Sends a message from the host that expects no reply.
    pub fn send_from_host(&mut self, message: Message) {
        self.host_send(message, None);
        self.pump();
    }

    /// The primaries the host received since the last call.
    pub fn take_received(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.received)
    }
}
