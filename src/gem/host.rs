//! The GEM host, sans-IO: the host's side of the E30 communication state model and the
//! replies a host gives by itself to what the equipment sends. It owns no socket and no clock.
//!
//! The runtime feeds it what happens, each with the current instant: the link can carry data
//! messages or not ([`Host::link_up`], [`Host::link_down`]), a primary arrived from the
//! equipment ([`Host::receive`]), a W-bit primary the host sent was answered or failed
//! ([`Host::outcome`]), its timer fired ([`Host::handle_timeout`] at [`Host::poll_timeout`]).
//! In return it queues [`Action::Send`]s ([`Host::poll_action`]); a W-bit primary carries a
//! [`Tag`] whose fate the runtime reports with [`Host::outcome`].
//!
//! Communication (E30, host side): NOT COMMUNICATING until either the host's S1F13 is answered
//! with COMMACK 0 or the equipment's own S1F13 arrives (which the host answers with COMMACK
//! 0). While NOT COMMUNICATING with the link up the host is in WAIT CRA (its S1F13 awaits
//! S1F14) or WAIT DELAY (the last S1F13 failed: T3, transaction failure or COMMACK not 0; the
//! next one goes when the retry delay expires, or at once when the equipment sends anything).
//! Losing the link is a communication failure: NOT COMMUNICATING again, and S1F13 on the next
//! link up.
//!
//! Default replies ([`Host::default_reply`]) are asked for separately, so that a custom
//! response handler can answer instead. The host answers whatever the equipment sends, also
//! while NOT COMMUNICATING: an equipment that believes it communicates then does not run into
//! T3 and drop the link.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use super::clock::DateTime;
use super::equipment::{Action, Outcome, Tag};
use super::state::CommunicationState;
use crate::secs2::{Item, Message, StreamFunction};

/// How the host establishes communication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostConfig {
    /// Send S1F13 when the link comes up and count as COMMUNICATING only after COMMACK 0
    /// (or the equipment's S1F13). When off, the host is COMMUNICATING as soon as the link
    /// is up.
    pub establish_communication: bool,
    /// WAIT DELAY: how long after a failed S1F13 the next one goes (the host's
    /// EstablishCommunicationsTimeout).
    pub retry_delay: Duration,
    /// The TIME format of S2F18 (E5: 0 = `YYMMDDhhmmss`, 1 = `YYYYMMDDhhmmsscc`, 2 = ISO 8601).
    pub time_format: u64,
}

impl HostConfig {
    /// The retry delay the gateway uses for a connection whose HSMS T5 is `t5`: T5, at least
    /// one second.
    pub fn retry_delay_for_t5(t5: Duration) -> Duration {
        t5.max(Duration::from_secs(1))
    }
}

impl Default for HostConfig {
    /// Establish communication, retry after the SEMI default T5 (10 s), 16-byte TIME.
    fn default() -> Self {
        HostConfig {
            establish_communication: true,
            retry_delay: HostConfig::retry_delay_for_t5(Duration::from_secs(10)),
            time_format: 1,
        }
    }
}

/// A GEM host's communication with one equipment.
#[derive(Debug)]
pub struct Host {
    config: HostConfig,
    /// NOT COMMUNICATING (WAIT CRA or WAIT DELAY) or COMMUNICATING; never DISABLED (a
    /// disabled connection has no link to drive the host).
    comm: CommunicationState,
    link_up: bool,
    /// The S1F13 awaiting its S1F14 (WAIT CRA).
    establishing: Option<Tag>,
    /// WAIT DELAY: when the next S1F13 goes.
    retry_at: Option<Instant>,
    next_tag: u64,
    actions: VecDeque<Action>,
    /// The wall clock at `base`, in Unix milliseconds (for S2F18).
    base: Instant,
    base_unix_ms: i64,
}

impl Host {
    /// A host created at `now`, when the wall clock read `wall`. It starts NOT
    /// COMMUNICATING (WAIT CRA) with the link down.
    pub fn new(config: HostConfig, now: Instant, wall: SystemTime) -> Host {
        let base_unix_ms = match wall.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX / 2),
        };
        Host {
            config,
            comm: CommunicationState::WaitCra,
            link_up: false,
            establishing: None,
            retry_at: None,
            next_tag: 0,
            actions: VecDeque::new(),
            base: now,
            base_unix_ms,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The communication state: WAIT CRA or WAIT DELAY (NOT COMMUNICATING) or
    /// COMMUNICATING.
    pub fn communication_state(&self) -> CommunicationState {
        self.comm
    }

    /// Whether messages may flow (COMMUNICATING).
    pub fn is_communicating(&self) -> bool {
        self.comm == CommunicationState::Communicating
    }

    /// The next action to carry out, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Host::handle_timeout`] must next be called: the end of WAIT DELAY.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Runs the timer due at `now`: WAIT DELAY over, S1F13 again (WAIT CRA).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            if self.comm == CommunicationState::WaitDelay {
                self.enter_wait_cra();
            }
        }
    }

    /// The link can carry data messages (HSMS SELECTED): establish communication (S1F13,
    /// WAIT CRA), or, with `establish_communication` off, COMMUNICATING at once.
    pub fn link_up(&mut self, _now: Instant) {
        if self.link_up {
            return;
        }
        self.link_up = true;
        if self.comm == CommunicationState::Communicating {
            // The equipment's S1F13 arrived before the link state did.
            return;
        }
        if self.config.establish_communication {
            self.enter_wait_cra();
        } else {
            self.become_communicating();
        }
    }

    /// The link lost its connection (or left SELECTED): a communication failure, NOT
    /// COMMUNICATING. The S1F13 in flight, if any, no longer counts.
    pub fn link_down(&mut self, _now: Instant) {
        self.link_up = false;
        self.establishing = None;
        self.retry_at = None;
        if self.comm == CommunicationState::Communicating {
            info!("communication failed: link down (NOT COMMUNICATING)");
        }
        self.comm = CommunicationState::WaitCra;
    }

    /// A message from the equipment arrived: its effect on the communication state. The
    /// equipment's S1F13 makes the host COMMUNICATING (its reply is
    /// [`Host::default_reply`]); any other primary in WAIT DELAY shows the equipment is there,
    /// so S1F13 goes at once. Replies and stream 9 messages change nothing here.
    pub fn receive(&mut self, message: &Message, _now: Instant) {
        let sf = message.stream_function();
        if !sf.is_primary() || message.stream == 9 {
            return;
        }
        if (sf.stream, sf.function) == (1, 13) {
            self.establishing = None;
            self.become_communicating();
            return;
        }
        if self.comm == CommunicationState::WaitDelay && self.link_up {
            debug!(%sf, "message from the equipment in WAIT DELAY: S1F13 again");
            self.enter_wait_cra();
        }
    }

    /// What became of a W-bit primary the host sent (its S1F13): COMMUNICATING on S1F14 with
    /// COMMACK 0; WAIT DELAY on any other reply (COMMACK not 0, SxF0), T3 or failure.
    /// Outcomes of primaries from before the last link down are ignored.
    pub fn outcome(&mut self, tag: Tag, outcome: Outcome, now: Instant) {
        if self.establishing != Some(tag) {
            return;
        }
        self.establishing = None;
        if self.comm != CommunicationState::WaitCra {
            return;
        }
        match &outcome {
            Outcome::Reply(reply) if commack(reply) == Some(0) => {
                self.become_communicating();
                return;
            }
            Outcome::Reply(reply) => {
                warn!(reply = %reply, "establish communication refused (WAIT DELAY)")
            }
            Outcome::Timeout { .. } => warn!("establish communication: T3 reply timeout"),
            Outcome::Failed => warn!("establish communication: transaction failed"),
        }
        self.enter_wait_delay(now);
    }

    /// The reply the host gives to `primary` when no custom response handler answers it, or
    /// `None` when it needs none (no W-bit, or not a primary):
    /// - S1F1 Are You There → S1F2 `<L[0]>`;
    /// - S1F13 Establish Communications → S1F14 COMMACK 0 with an empty MDLN/SOFTREV list;
    /// - S2F17 Date and Time → S2F18 with the host's TIME;
    /// - S5F1 alarms, S6F1 trace data, S6F11/S6F13 event reports, S10F1/S10F3 terminal
    ///   display, and the multi-block inquiries S2F39, S3F15, S4F25, S6F5, S7F1, S13F11,
    ///   S14F23, S15F1, S16F1, S19F19 → accepted (`<B 0>`: ACKC5, ACKC6, ACKC10, GRANT,
    ///   PPGNT...);
    /// - any other W-bit primary → SxF0, aborting the transaction.
    pub fn default_reply(&self, primary: &Message, now: Instant) -> Option<Message> {
        if !primary.w_bit || !primary.stream_function().is_primary() {
            return None;
        }
        let body = match (primary.stream, primary.function) {
            (1, 1) => Some(Item::L(vec![])),
            (1, 13) => Some(Item::L(vec![Item::B(vec![0]), Item::L(vec![])])),
            (2, 17) => Some(Item::A(self.time_text(now).into_bytes())),
            (5, 1)
            | (6, 1)
            | (6, 11)
            | (6, 13)
            | (10, 1)
            | (10, 3)
            | (2, 39)
            | (3, 15)
            | (4, 25)
            | (6, 5)
            | (7, 1)
            | (13, 11)
            | (14, 23)
            | (15, 1)
            | (16, 1)
            | (19, 19) => Some(Item::B(vec![0])),
            _ => {
                return Some(Message {
                    function: 0,
                    ..primary.reply_with(None)
                });
            }
        };
        Some(primary.reply_with(body))
    }

    /// The host's wall clock at `now` in its TIME format (S2F18).
    pub fn time_text(&self, now: Instant) -> String {
        let elapsed = now.saturating_duration_since(self.base).as_millis();
        let ms = self
            .base_unix_ms
            .saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX / 2));
        DateTime::from_unix_millis(ms).format(self.config.time_format)
    }

    /// WAIT CRA: S1F13 `<L[0]>` goes now if the link is up (else on link up).
    fn enter_wait_cra(&mut self) {
        self.comm = CommunicationState::WaitCra;
        self.retry_at = None;
        if !self.link_up {
            return;
        }
        self.next_tag += 1;
        let tag = Tag(self.next_tag);
        self.establishing = Some(tag);
        let s1f13 = Message::new(
            StreamFunction {
                stream: 1,
                function: 13,
            },
            true,
            Some(Item::L(vec![])),
        );
        self.actions.push_back(Action::Send {
            message: s1f13,
            tag: Some(tag),
        });
    }

    /// WAIT DELAY: the next S1F13 goes after the retry delay.
    fn enter_wait_delay(&mut self, now: Instant) {
        if !self.link_up {
            return;
        }
        self.comm = CommunicationState::WaitDelay;
        self.retry_at = Some(now + self.config.retry_delay);
        info!(retry = ?self.config.retry_delay, "WAIT DELAY: S1F13 again after the retry delay");
    }

    fn become_communicating(&mut self) {
        self.retry_at = None;
        if self.comm != CommunicationState::Communicating {
            info!("COMMUNICATING");
            self.comm = CommunicationState::Communicating;
        }
    }
}

/// COMMACK of an S1F14 `<L[2] <B COMMACK> <L ...>>`; `None` for anything else.
pub fn commack(reply: &Message) -> Option<u8> {
    if (reply.stream, reply.function) != (1, 14) {
        return None;
    }
    match reply.body.as_ref()?.as_list()? {
        [ack, _] => ack.as_int().and_then(|v| u8::try_from(v).ok()),
        _ => None,
    }
}
