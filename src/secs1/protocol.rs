//! The SECS-I protocol state machine (SEMI E4), sans-IO.
//!
//! It owns no port and no clock. The driver feeds it received bytes with the current instant
//! ([`Protocol::handle_input`]), asks it to send messages ([`Protocol::send`]), and calls
//! [`Protocol::handle_timeout`] at [`Protocol::poll_timeout`]. In return it writes bytes to
//! send ([`Protocol::take_transmit`]) and queues [`Event`]s ([`Protocol::poll_event`]). When
//! the port closes or the TCP connection drops the driver calls [`Protocol::line_closed`].
//!
//! The line carries one block at a time. A sender bids with ENQ, the receiver answers EOT,
//! the sender writes the block, the receiver answers ACK (or NAK). Every block of a
//! multi-block message takes its own bid, so the two sides' messages may interleave. When
//! both bid at once the master (by E4 the equipment) keeps waiting for its EOT and the slave
//! receives first.
//!
//! Timers: T1 between the characters of a block, T2 for the handshake (ENQ to EOT, block to
//! ACK, EOT to the length byte), T3 for the reply to a W-bit primary (from the ACK of its
//! last block to the first block of the reply), T4 between the blocks of a message. A block
//! whose bid or ACK fails is retried from ENQ up to RTY times.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::block::{
    self, ACK, ENQ, EOT, HEADER_LEN, Header, MAX_DATA, MAX_LENGTH, MIN_LENGTH, NAK,
};
use crate::secs2::{
    DecodeError, DecodeErrorKind, DecodeLimits, EncodeError, Item, Message, StreamFunction, codec,
    stream_nine_mhead,
};

/// SECS-I timers and limits for one line. Timer defaults are SEMI E4's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Device ID of the equipment on this line (15 bits); both directions carry it.
    pub device_id: u16,
    /// Which end this is: equipment sends blocks with R-bit 1, host with R-bit 0; incoming
    /// blocks must carry the other R-bit.
    pub equipment: bool,
    /// Master wins line contention. E4: the equipment is master. Default = `equipment`.
    pub master: bool,
    /// T1: longest gap between the characters of a block (0.5 s).
    pub t1: Duration,
    /// T2: protocol timeout: ENQ to EOT, block to ACK, EOT to the length byte (10 s).
    pub t2: Duration,
    /// T3: reply timeout for a W-bit primary (45 s).
    pub t3: Duration,
    /// T4: inter-block timeout between the blocks of one message (45 s).
    pub t4: Duration,
    /// RTY: how many times a block is retried before the send fails (3).
    pub retry: u8,
    /// Largest encoded message body sent or accepted, in bytes (16 MiB, as for HSMS). SECS-I
    /// itself carries at most [`block::MAX_BODY`] bytes (32767 blocks); sends are limited to
    /// the smaller of the two. Also the decoder's size limit.
    pub max_message_size: usize,
    /// Discard a block whose header equals the last accepted block's (the sender retried
    /// after losing our ACK). Some old equipment repeats headers legitimately: turn it off
    /// for them.
    pub duplicate_detection: bool,
}

impl Config {
    /// The host end (R-bit 0, slave) of the line to equipment `device_id`, SEMI defaults.
    pub fn host(device_id: u16) -> Config {
        Config {
            device_id,
            equipment: false,
            master: false,
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(10),
            t3: Duration::from_secs(45),
            t4: Duration::from_secs(45),
            retry: 3,
            max_message_size: 16 * 1024 * 1024,
            duplicate_detection: true,
        }
    }

    /// The equipment end (R-bit 1, master) with device ID `device_id`, SEMI defaults.
    pub fn equipment(device_id: u16) -> Config {
        Config {
            equipment: true,
            master: true,
            ..Config::host(device_id)
        }
    }

    /// Limits for decoding a reassembled body.
    fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_bytes: self.max_message_size,
            ..DecodeLimits::default()
        }
    }
}

/// Something the driver or the engine must know. `T` is the caller's context of an open
/// transaction (see [`Protocol::send_with`]), handed back when the transaction ends.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<T = ()> {
    /// A complete message that is not a reply to one of ours: a primary, or a secondary
    /// matching no open transaction.
    Received(Message),
    /// A complete message whose body failed to decode (the equipment answers S9F7 with
    /// `header` as MHEAD).
    Malformed {
        header: [u8; HEADER_LEN],
        stream_function: StreamFunction,
        w_bit: bool,
        device_id: u16,
        system_bytes: u32,
        error: DecodeError,
    },
    /// The reply to a W-bit primary we sent (an SxF0 reply means the peer aborted it), with
    /// the transaction's context.
    Reply(Message, T),
    /// T3 expired for a primary we sent (or T4 expired in the middle of its reply).
    ReplyTimeout {
        system_bytes: u32,
        stream_function: StreamFunction,
        context: T,
    },
    /// A W-bit primary we sent will get no reply: see [`TransactionFailure`].
    TransactionFailed {
        system_bytes: u32,
        stream_function: StreamFunction,
        reason: TransactionFailure,
        context: T,
    },
    /// A message (W-bit or not) was not delivered: a block transfer gave up after RTY
    /// retries, or the line closed while it was queued. If it was a W-bit primary a
    /// [`Event::TransactionFailed`] follows for it.
    SendFailed {
        system_bytes: u32,
        stream_function: StreamFunction,
        error: String,
    },
    /// T4: the next block of a message did not come in time; the partial message was
    /// discarded (the equipment may send S9F9 with `header` as MHEAD).
    InterBlockTimeout {
        header: [u8; HEADER_LEN],
        stream_function: StreamFunction,
        system_bytes: u32,
    },
    /// A complete message for another device ID was discarded (the equipment answers S9F1
    /// with `header` as MHEAD).
    UnknownDevice { header: [u8; HEADER_LEN] },
    /// A line irregularity worth one log line: NAK sent, retry, duplicate block dropped,
    /// noise skipped, wrong R-bit, block out of order.
    Warning(String),
}

/// Why an open transaction ended without a reply.
#[derive(Clone, Debug, PartialEq)]
pub enum TransactionFailure {
    /// The peer answered with a stream 9 error message (S9F1, S9F3, S9F5, S9F7, S9F9, S9F11)
    /// whose MHEAD carries this transaction's system bytes.
    StreamNine(Box<Message>),
    /// The reply arrived but its body did not decode (or was over the size limit).
    Malformed(DecodeError),
    /// The primary could not be sent: a block was retried RTY times.
    SendFailed(String),
    /// The line closed first.
    ConnectionClosed,
}

/// A message could not be queued for sending.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("cannot encode the message: {0}")]
    Encode(#[from] EncodeError),
    #[error("message body is {length} bytes, over the SECS-I maximum of {max}")]
    TooLarge { length: usize, max: usize },
}

/// What the line is doing, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineState {
    /// Nobody is sending.
    Idle,
    /// We sent ENQ and wait for EOT (T2).
    WaitingEot,
    /// We sent a block and wait for ACK (T2).
    WaitingAck,
    /// We answered EOT and wait for the length byte (T2).
    WaitingLength,
    /// We are reading a block (T1 between characters).
    Receiving,
    /// A bad block is being skipped until the line is silent for T1; then NAK.
    Discarding,
}

/// The line state with its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    Idle,
    WaitEot(Instant),
    WaitAck(Instant),
    WaitLength(Instant),
    Receiving(Instant),
    Discarding(Instant),
}

impl Line {
    fn deadline(self) -> Option<Instant> {
        match self {
            Line::Idle => None,
            Line::WaitEot(d)
            | Line::WaitAck(d)
            | Line::WaitLength(d)
            | Line::Receiving(d)
            | Line::Discarding(d) => Some(d),
        }
    }
}

/// A message queued to send, or being sent block by block.
#[derive(Debug)]
struct Outgoing {
    /// The header every block repeats (block number and E-bit are set per block).
    header: Header,
    body: Vec<u8>,
    /// Index of the block being sent (0-based).
    next: usize,
    /// A W-bit primary: its transaction's T3 starts when the last block is acknowledged.
    opens: bool,
}

impl Outgoing {
    fn blocks(&self) -> usize {
        block::block_count(self.body.len())
    }

    /// Appends the current block's frame to `out`.
    fn encode_block(&self, out: &mut Vec<u8>) {
        let start = self.next * MAX_DATA;
        let end = (start + MAX_DATA).min(self.body.len());
        let header = Header {
            block_number: (self.next + 1) as u16,
            e_bit: self.next + 1 == self.blocks(),
            ..self.header
        };
        block::encode_frame(&header.encode(), &self.body[start..end], out);
    }
}

/// A message being reassembled from its blocks.
#[derive(Debug)]
struct Partial {
    /// The first block's header bytes (MHEAD for S9Fx).
    first: [u8; HEADER_LEN],
    header: Header,
    body: Vec<u8>,
    last_block: u16,
    /// T4 expiry.
    deadline: Instant,
    /// Over the size limit: further blocks are counted but their data dropped.
    oversized: bool,
}

/// An open transaction: a W-bit primary we sent, waiting for its reply.
#[derive(Debug)]
struct Open<T> {
    stream_function: StreamFunction,
    /// T3 expiry; `None` while the primary is still being sent or once the first block of a
    /// multi-block reply has arrived (T4 then watches the reply).
    deadline: Option<Instant>,
    /// Order of sending, to fail transactions in that order when the line closes.
    seq: u64,
    context: T,
}

/// The SECS-I protocol state of one line. `T` is what the caller keeps with each open
/// transaction (a waiter, a tag); the protocol is the only table of open transactions.
#[derive(Debug)]
pub struct Protocol<T = ()> {
    config: Config,
    line: Line,
    /// The block being read: length byte, header, data, checksum.
    rx: Vec<u8>,
    tx: Vec<u8>,
    events: VecDeque<Event<T>>,
    /// Messages to send, in order; the front one is being sent.
    queue: VecDeque<Outgoing>,
    /// Retries of the current block of the front message.
    retries: u8,
    open: HashMap<u32, Open<T>>,
    /// T3 deadlines in the order they started (the same T3 for all, so also in deadline
    /// order); entries whose transaction ended or whose T3 stopped are skipped lazily.
    t3_order: VecDeque<(Instant, u32)>,
    /// Messages being reassembled, by (device ID, system bytes); the R-bit is always the
    /// peer's.
    partials: HashMap<(u16, u32), Partial>,
    /// Header of the last block accepted (duplicate detection).
    last_accepted: Option<[u8; HEADER_LEN]>,
    /// The driver's receive queue is full: ENQ is not answered.
    input_held: bool,
    /// When an ENQ arrived that was not answered because input was held.
    pending_enq: Option<Instant>,
    /// A run of noise has been reported; cleared by the next valid character.
    noise: bool,
    /// This end (slave) gave up its bid to the peer's ENQ and has not yet received a good
    /// block: if that reception fails, the yield counts as a retry of our block, so that two
    /// ends that both yield (both configured as slave) fail the send instead of looping.
    yielded: bool,
    next_transaction: u16,
    next_seq: u64,
}

impl Protocol<()> {
    /// An idle line whose transactions carry no context.
    pub fn new(config: Config) -> Self {
        Protocol::with_context(config)
    }
}

impl<T> Protocol<T> {
    /// An idle line whose open transactions each carry a `T`.
    pub fn with_context(config: Config) -> Self {
        Protocol {
            config,
            line: Line::Idle,
            rx: Vec::with_capacity(1 + usize::from(MAX_LENGTH) + 2),
            tx: Vec::with_capacity(512),
            events: VecDeque::new(),
            queue: VecDeque::new(),
            retries: 0,
            open: HashMap::new(),
            t3_order: VecDeque::new(),
            partials: HashMap::new(),
            last_accepted: None,
            input_held: false,
            pending_enq: None,
            noise: false,
            yielded: false,
            next_transaction: 1,
            next_seq: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of W-bit primaries waiting for a reply (including those still being sent).
    pub fn open_transactions(&self) -> usize {
        self.open.len()
    }

    /// Messages waiting to be sent or being sent (the driver stops accepting new sends above
    /// a bound).
    pub fn queued_messages(&self) -> usize {
        self.queue.len()
    }

    /// Bytes of message bodies waiting to be sent (the blocks not yet acknowledged).
    pub fn queued_bytes(&self) -> usize {
        self.queue
            .iter()
            .map(|o| o.body.len().saturating_sub(o.next * MAX_DATA))
            .sum()
    }

    /// What the line is doing now.
    pub fn line_state(&self) -> LineState {
        match self.line {
            Line::Idle => LineState::Idle,
            Line::WaitEot(_) => LineState::WaitingEot,
            Line::WaitAck(_) => LineState::WaitingAck,
            Line::WaitLength(_) => LineState::WaitingLength,
            Line::Receiving(_) => LineState::Receiving,
            Line::Discarding(_) => LineState::Discarding,
        }
    }

    /// Sends a message with no context: see [`Protocol::send_with`].
    pub fn send(&mut self, message: Message, now: Instant) -> Result<u32, SendError>
    where
        T: Default,
    {
        self.send_with(message, T::default(), now)
    }

    /// Queues a message for sending and returns its system bytes. A primary (odd function)
    /// gets fresh system bytes (equipment: its device ID in bytes 0-1 as source ID per the E4
    /// convention, host: 0, then a counter in bytes 2-3); a secondary keeps its system bytes
    /// (those of the primary it answers). Every block carries the configured device ID and
    /// this end's R-bit, whatever `message.device_id` says. A W-bit primary opens a
    /// transaction that keeps `context` until its reply, T3, an S9Fx naming it, a failed
    /// send, or the end of the line hands it back in an [`Event`]; T3 starts when its last
    /// block is acknowledged.
    pub fn send_with(
        &mut self,
        message: Message,
        context: T,
        now: Instant,
    ) -> Result<u32, SendError> {
        let mut body = Vec::new();
        codec::encode_body(message.body.as_ref(), &mut body)?;
        let max = self.config.max_message_size.min(block::MAX_BODY);
        if body.len() > max {
            return Err(SendError::TooLarge {
                length: body.len(),
                max,
            });
        }
        let primary = message.function % 2 == 1;
        let system_bytes = if primary {
            self.allocate_system_bytes()
        } else {
            message.system_bytes
        };
        let header = Header {
            r_bit: self.config.equipment,
            device_id: self.config.device_id & 0x7FFF,
            w_bit: message.w_bit,
            stream: message.stream & 0x7F,
            function: message.function,
            e_bit: false,
            block_number: 0,
            system_bytes,
        };
        let opens = primary && message.w_bit;
        if opens {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.open.insert(
                system_bytes,
                Open {
                    stream_function: message.stream_function(),
                    deadline: None,
                    seq,
                    context,
                },
            );
        }
        self.queue.push_back(Outgoing {
            header,
            body,
            next: 0,
            opens,
        });
        self.bid(now);
        Ok(system_bytes)
    }

    /// Ends an open transaction without waiting for its reply; returns its context if it was
    /// open. A primary still queued is sent all the same.
    pub fn cancel_transaction(&mut self, system_bytes: u32) -> Option<T> {
        let open = self.open.remove(&system_bytes)?;
        self.prune_t3();
        Some(open.context)
    }

    /// While held (the driver's receive queue is full) the protocol does not answer ENQ with
    /// EOT: the receiver is not ready, and E4's sender then sees T2 and retries. An ENQ that
    /// came while held is answered when input resumes if it is younger than T2, and this end
    /// does not bid while such an ENQ waits. Blocks already under way are still read, and
    /// timers keep running.
    pub fn hold_input(&mut self, held: bool, now: Instant) {
        self.input_held = held;
        if held {
            return;
        }
        if self.pending_enq.is_some_and(|t| now >= t + self.config.t2) {
            self.pending_enq = None;
        }
        if self.pending_enq.is_some() && self.line == Line::Idle {
            self.answer_enq(now);
        } else {
            self.bid(now);
        }
    }

    /// Feeds received bytes.
    pub fn handle_input(&mut self, mut input: &[u8], now: Instant) {
        while let Some((&byte, rest)) = input.split_first() {
            match self.line {
                Line::Idle => {
                    input = rest;
                    self.idle_byte(byte, now);
                }
                Line::WaitEot(_) => {
                    input = rest;
                    match byte {
                        EOT => {
                            self.noise = false;
                            if let Some(out) = self.queue.front() {
                                out.encode_block(&mut self.tx);
                            }
                            self.line = Line::WaitAck(now + self.config.t2);
                        }
                        // Contention: the master keeps waiting for its EOT.
                        ENQ if self.config.master => {}
                        ENQ => {
                            // The slave gives up its bid (no retry counted) and receives.
                            self.line = Line::Idle;
                            self.yielded = true;
                            self.idle_byte(ENQ, now);
                        }
                        other => self.noise(other, "while waiting for EOT"),
                    }
                }
                Line::WaitAck(_) => {
                    input = rest;
                    match byte {
                        ACK => {
                            self.noise = false;
                            self.block_acked(now);
                        }
                        ENQ => {
                            // The peer bids instead of acknowledging: our block failed; take
                            // its bid, then retry ours.
                            self.retry(now, "ENQ instead of ACK after a block".to_string());
                            self.idle_byte(ENQ, now);
                        }
                        NAK => self.retry_and_bid(now, "NAK after a block".to_string()),
                        other => self.retry_and_bid(
                            now,
                            format!("0x{other:02x} instead of ACK after a block"),
                        ),
                    }
                }
                Line::WaitLength(_) => {
                    input = rest;
                    if (MIN_LENGTH..=MAX_LENGTH).contains(&byte) {
                        self.noise = false;
                        self.rx.clear();
                        self.rx.push(byte);
                        self.line = Line::Receiving(now + self.config.t1);
                    } else {
                        self.events.push_back(Event::Warning(format!(
                            "block length byte {byte} is outside 10..=254; \
                             discarding the block, NAK follows"
                        )));
                        self.line = Line::Discarding(now + self.config.t1);
                    }
                }
                Line::Receiving(_) => {
                    let total = 1 + usize::from(self.rx[0]) + 2;
                    let take = (total - self.rx.len()).min(input.len());
                    self.rx.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.line = Line::Receiving(now + self.config.t1);
                    if self.rx.len() == total {
                        self.block_received(now);
                    }
                }
                Line::Discarding(_) => {
                    input = &[];
                    self.line = Line::Discarding(now + self.config.t1);
                }
            }
        }
    }

    /// A byte while nobody is sending: ENQ is a bid, anything else noise.
    fn idle_byte(&mut self, byte: u8, now: Instant) {
        if byte != ENQ {
            return self.noise(byte, "while the line is idle");
        }
        self.noise = false;
        if self.input_held {
            self.pending_enq = Some(now);
        } else {
            self.answer_enq(now);
        }
    }

    fn answer_enq(&mut self, now: Instant) {
        self.pending_enq = None;
        self.tx.push(EOT);
        self.line = Line::WaitLength(now + self.config.t2);
    }

    /// Reports the first byte of a run of noise.
    fn noise(&mut self, byte: u8, when: &str) {
        if !self.noise {
            self.noise = true;
            self.events.push_back(Event::Warning(format!(
                "skipping noise on the line: 0x{byte:02x} {when}"
            )));
        }
    }

    /// Starts sending the front message's current block if the line is free.
    fn bid(&mut self, now: Instant) {
        if self.line != Line::Idle || self.queue.is_empty() {
            return;
        }
        if let Some(t) = self.pending_enq {
            if now < t + self.config.t2 {
                return; // the peer's bid waits for our input to resume
            }
            self.pending_enq = None;
        }
        self.yielded = false;
        self.tx.push(ENQ);
        self.line = Line::WaitEot(now + self.config.t2);
    }

    /// The current block failed: count a retry, or give the message up after RTY. Leaves the
    /// line idle without bidding.
    fn retry(&mut self, _now: Instant, why: String) {
        self.line = Line::Idle;
        self.retries = self.retries.saturating_add(1);
        if self.retries <= self.config.retry {
            self.events.push_back(Event::Warning(format!(
                "{why}; retry {} of {}",
                self.retries, self.config.retry
            )));
            return;
        }
        self.retries = 0;
        let Some(out) = self.queue.pop_front() else {
            return;
        };
        let error = format!(
            "{why}; block {} given up after {} retries",
            out.next + 1,
            self.config.retry
        );
        self.fail_send(out, error, TransactionFailure::SendFailed);
    }

    fn retry_and_bid(&mut self, now: Instant, why: String) {
        self.retry(now, why);
        self.bid(now);
    }

    /// Reports a message that will not be sent, and fails its transaction.
    fn fail_send(
        &mut self,
        out: Outgoing,
        error: String,
        reason: impl FnOnce(String) -> TransactionFailure,
    ) {
        let system_bytes = out.header.system_bytes;
        let stream_function = out.header.stream_function();
        self.events.push_back(Event::SendFailed {
            system_bytes,
            stream_function,
            error: error.clone(),
        });
        if out.opens
            && let Some(open) = self.open.remove(&system_bytes)
        {
            self.prune_t3();
            self.events.push_back(Event::TransactionFailed {
                system_bytes,
                stream_function: open.stream_function,
                reason: reason(error),
                context: open.context,
            });
        }
    }

    fn block_acked(&mut self, now: Instant) {
        self.retries = 0;
        self.line = Line::Idle;
        if let Some(out) = self.queue.front_mut() {
            out.next += 1;
            if out.next >= out.blocks()
                && let Some(out) = self.queue.pop_front()
                && out.opens
                && let Some(open) = self.open.get_mut(&out.header.system_bytes)
                && open.deadline.is_none()
            {
                let deadline = now + self.config.t3;
                open.deadline = Some(deadline);
                self.t3_order.push_back((deadline, out.header.system_bytes));
            }
        }
        self.bid(now);
    }

    /// All bytes of a block are in: ACK and take it, or skip to NAK.
    fn block_received(&mut self, now: Instant) {
        let rx = std::mem::take(&mut self.rx);
        let length = usize::from(rx[0]);
        let content = &rx[1..1 + length];
        let expected = u16::from_be_bytes([rx[1 + length], rx[2 + length]]);
        let got = block::checksum(content);
        if expected != got {
            self.events.push_back(Event::Warning(format!(
                "block checksum mismatch (block says 0x{expected:04x}, bytes sum to \
                 0x{got:04x}); NAK follows when the line is quiet"
            )));
            self.line = Line::Discarding(now + self.config.t1);
        } else {
            self.tx.push(ACK);
            self.line = Line::Idle;
            self.yielded = false;
            if let Some((header, data)) = content.split_first_chunk::<HEADER_LEN>() {
                self.accept_block(*header, data, now);
            }
        }
        self.rx = rx;
        self.rx.clear();
        self.bid(now);
    }

    /// A good, acknowledged block: add it to its message.
    fn accept_block(&mut self, raw: [u8; HEADER_LEN], data: &[u8], now: Instant) {
        let header = Header::decode(&raw);
        if header.r_bit == self.config.equipment {
            let side = if self.config.equipment {
                "equipment"
            } else {
                "host"
            };
            self.events.push_back(Event::Warning(format!(
                "block with R-bit {} arrived at the {side}, which sends that R-bit itself; \
                 discarded ({}, system bytes 0x{:08x})",
                u8::from(header.r_bit),
                header.stream_function(),
                header.system_bytes
            )));
            return;
        }
        if self.config.duplicate_detection && self.last_accepted == Some(raw) {
            self.events.push_back(Event::Warning(format!(
                "duplicate block {} of {} (system bytes 0x{:08x}) discarded: the sender \
                 repeated it, probably after losing our ACK",
                header.block_number,
                header.stream_function(),
                header.system_bytes
            )));
            return;
        }
        self.last_accepted = Some(raw);
        let key = (header.device_id, header.system_bytes);
        if let Some(partial) = self.partials.get_mut(&key) {
            let next = partial.last_block.wrapping_add(1);
            let p = &partial.header;
            let same =
                (p.w_bit, p.stream, p.function) == (header.w_bit, header.stream, header.function);
            if same && header.block_number == next {
                partial.last_block = next;
                partial.deadline = now + self.config.t4;
                let oversized = !partial.oversized
                    && partial.body.len() + data.len() > self.config.max_message_size;
                if !partial.oversized && !oversized {
                    partial.body.extend_from_slice(data);
                }
                if oversized {
                    let size = partial.body.len() + data.len();
                    partial.oversized = true;
                    partial.body = Vec::new();
                    self.too_large(header, size);
                }
                if header.e_bit
                    && let Some(partial) = self.partials.remove(&key)
                    && !partial.oversized
                {
                    self.complete(partial.first, partial.header, partial.body);
                }
                return;
            }
            if let Some(partial) = self.partials.remove(&key) {
                self.events.push_back(Event::Warning(format!(
                    "block {} of {} (system bytes 0x{:08x}) came where block {} was due; \
                     the partial message was discarded",
                    header.block_number,
                    header.stream_function(),
                    header.system_bytes,
                    next
                )));
                self.partial_discarded(&partial.header, now);
            }
        }
        let first = header.block_number == 1 || (header.block_number == 0 && header.e_bit);
        if !first {
            self.events.push_back(Event::Warning(format!(
                "block {} of {} (system bytes 0x{:08x}) belongs to no message being received; \
                 discarded",
                header.block_number,
                header.stream_function(),
                header.system_bytes
            )));
            return;
        }
        if data.len() > self.config.max_message_size {
            if !header.e_bit {
                self.partials.insert(
                    key,
                    Partial {
                        first: raw,
                        header,
                        body: Vec::new(),
                        last_block: header.block_number,
                        deadline: now + self.config.t4,
                        oversized: true,
                    },
                );
            }
            return self.too_large(header, data.len());
        }
        if header.e_bit {
            return self.complete(raw, header, data.to_vec());
        }
        // The first block of a multi-block reply stops T3; T4 watches the rest.
        if let Some(open) = self.reply_to(&header)
            && open.deadline.is_some()
        {
            open.deadline = None;
            self.prune_t3();
        }
        self.partials.insert(
            key,
            Partial {
                first: raw,
                header,
                body: data.to_vec(),
                last_block: header.block_number,
                deadline: now + self.config.t4,
                oversized: false,
            },
        );
    }

    /// The open transaction a message with this header would answer.
    fn reply_to(&mut self, header: &Header) -> Option<&mut Open<T>> {
        if !header.function.is_multiple_of(2) {
            return None;
        }
        self.open
            .get_mut(&header.system_bytes)
            .filter(|o| o.stream_function.stream == header.stream)
    }

    /// A message grew over `max_message_size` while being reassembled.
    fn too_large(&mut self, header: Header, size: usize) {
        let limit = self.config.max_message_size;
        self.events.push_back(Event::Warning(format!(
            "{} (system bytes 0x{:08x}) is over the limit of {limit} bytes; discarded",
            header.stream_function(),
            header.system_bytes
        )));
        if self.reply_to(&header).is_some()
            && let Some(open) = self.open.remove(&header.system_bytes)
        {
            self.prune_t3();
            self.events.push_back(Event::TransactionFailed {
                system_bytes: header.system_bytes,
                stream_function: open.stream_function,
                reason: TransactionFailure::Malformed(DecodeError {
                    offset: 0,
                    kind: DecodeErrorKind::TooLarge { size, limit },
                }),
                context: open.context,
            });
        }
    }

    /// A partial reply was discarded for a fault other than T4: its transaction's T3 runs
    /// again from now (the peer may send the reply again).
    fn partial_discarded(&mut self, header: &Header, now: Instant) {
        let deadline = now + self.config.t3;
        let system_bytes = header.system_bytes;
        if let Some(open) = self.reply_to(header)
            && open.deadline.is_none()
        {
            open.deadline = Some(deadline);
            self.t3_order.push_back((deadline, system_bytes));
        }
    }

    /// A whole message is in: check the device, decode, and route it.
    fn complete(&mut self, first: [u8; HEADER_LEN], header: Header, body: Vec<u8>) {
        if header.device_id != self.config.device_id & 0x7FFF {
            self.events
                .push_back(Event::UnknownDevice { header: first });
            return;
        }
        let system_bytes = header.system_bytes;
        let stream_function = header.stream_function();
        let is_reply = self.reply_to(&header).is_some();
        let body = match Item::decode_body(&body, &self.config.decode_limits()) {
            Ok(body) => body,
            Err(error) => {
                if is_reply && let Some(open) = self.open.remove(&system_bytes) {
                    self.prune_t3();
                    self.events.push_back(Event::TransactionFailed {
                        system_bytes,
                        stream_function: open.stream_function,
                        reason: TransactionFailure::Malformed(error),
                        context: open.context,
                    });
                } else {
                    self.events.push_back(Event::Malformed {
                        header: first,
                        stream_function,
                        w_bit: header.w_bit,
                        device_id: header.device_id,
                        system_bytes,
                        error,
                    });
                }
                return;
            }
        };
        let message = Message {
            stream: header.stream,
            function: header.function,
            w_bit: header.w_bit,
            device_id: header.device_id,
            system_bytes,
            body,
        };
        if is_reply && let Some(open) = self.open.remove(&system_bytes) {
            self.prune_t3();
            self.events.push_back(Event::Reply(message, open.context));
            return;
        }
        if let Some(named) = stream_nine_mhead(&message)
            && let Some(open) = self.open.remove(&named)
        {
            // The peer could not take our primary: the S9Fx names it by its header (MHEAD),
            // so the transaction ends now rather than at T3.
            self.prune_t3();
            self.events.push_back(Event::TransactionFailed {
                system_bytes: named,
                stream_function: open.stream_function,
                reason: TransactionFailure::StreamNine(Box::new(message.clone())),
                context: open.context,
            });
        }
        self.events.push_back(Event::Received(message));
    }

    /// Drops T3 entries whose transaction ended or whose T3 stopped from the front of the
    /// order, so that its front is the earliest live deadline.
    fn prune_t3(&mut self) {
        while let Some(&(deadline, sb)) = self.t3_order.front() {
            if self
                .open
                .get(&sb)
                .is_some_and(|o| o.deadline == Some(deadline))
            {
                return;
            }
            self.t3_order.pop_front();
        }
    }

    /// The earliest instant at which [`Protocol::handle_timeout`] has work to do: the line
    /// timer (T1 or T2), T4 of each partial message, T3 of the oldest open transaction, and
    /// the end of an unanswered ENQ while input was held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let line = self.line.deadline();
        let enq = self
            .pending_enq
            .filter(|_| self.line == Line::Idle && !self.queue.is_empty())
            .map(|t| t + self.config.t2);
        let t4 = self.partials.values().map(|p| p.deadline).min();
        let t3 = self.t3_order.front().map(|(d, _)| *d);
        [line, enq, t4, t3].into_iter().flatten().min()
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.line {
            Line::WaitEot(d) if now >= d => {
                self.retry(now, "T2: no EOT after ENQ".to_string());
            }
            Line::WaitAck(d) if now >= d => {
                self.retry(now, "T2: no ACK after a block".to_string());
            }
            Line::WaitLength(d) if now >= d => {
                self.tx.push(NAK);
                self.line = Line::Idle;
                self.events.push_back(Event::Warning(
                    "T2: no block after our EOT; sent NAK".to_string(),
                ));
                self.reception_failed(now);
            }
            Line::Receiving(d) if now >= d => {
                let (got, length) = (self.rx.len(), self.rx.first().copied().unwrap_or(0));
                self.rx.clear();
                self.tx.push(NAK);
                self.line = Line::Idle;
                self.events.push_back(Event::Warning(format!(
                    "T1: the line went quiet after {got} of {} block bytes; sent NAK",
                    1 + usize::from(length) + 2
                )));
                self.reception_failed(now);
            }
            Line::Discarding(d) if now >= d => {
                self.tx.push(NAK);
                self.line = Line::Idle;
                self.reception_failed(now);
            }
            _ => {}
        }
        if self.pending_enq.is_some_and(|t| now >= t + self.config.t2) {
            self.pending_enq = None;
        }
        self.inter_block_timeouts(now);
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
        self.bid(now);
    }

    /// A reception we yielded our bid for ended in NAK: count it against our block.
    fn reception_failed(&mut self, now: Instant) {
        if std::mem::take(&mut self.yielded) && !self.queue.is_empty() {
            self.retry(
                now,
                "yielded our bid to the peer's ENQ but no good block followed (is the peer \
                 also configured as slave?)"
                    .to_string(),
            );
        }
    }

    /// T4: discards partial messages whose next block is late, oldest first.
    fn inter_block_timeouts(&mut self, now: Instant) {
        let mut due: Vec<(Instant, (u16, u32))> = self
            .partials
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(k, p)| (p.deadline, *k))
            .collect();
        due.sort();
        for (_, key) in due {
            let Some(partial) = self.partials.remove(&key) else {
                continue;
            };
            let header = partial.header;
            self.events.push_back(Event::InterBlockTimeout {
                header: partial.first,
                stream_function: header.stream_function(),
                system_bytes: header.system_bytes,
            });
            // A reply cut off by T4 will not come: its transaction times out now.
            if self.reply_to(&header).is_some()
                && let Some(open) = self.open.remove(&header.system_bytes)
            {
                self.prune_t3();
                self.events.push_back(Event::ReplyTimeout {
                    system_bytes: header.system_bytes,
                    stream_function: open.stream_function,
                    context: open.context,
                });
            }
        }
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

    /// The line went away (port closed, TCP dropped): every open transaction ends with
    /// `ConnectionClosed` in the order it was sent, queued sends and partial messages are
    /// dropped ([`Event::SendFailed`] for each queued one, first), untransmitted bytes are
    /// discarded and the line state resets to idle. Whether input is held stays as the
    /// driver last said.
    pub fn line_closed(&mut self) {
        self.line = Line::Idle;
        self.rx.clear();
        self.tx.clear();
        self.partials.clear();
        self.pending_enq = None;
        self.last_accepted = None;
        self.retries = 0;
        self.noise = false;
        self.yielded = false;
        for out in std::mem::take(&mut self.queue) {
            self.events.push_back(Event::SendFailed {
                system_bytes: out.header.system_bytes,
                stream_function: out.header.stream_function(),
                error: "the line closed before the message was sent".to_string(),
            });
        }
        self.t3_order.clear();
        let mut open: Vec<(u32, Open<T>)> = self.open.drain().collect();
        open.sort_by_key(|(_, o)| o.seq);
        for (system_bytes, open) in open {
            self.events.push_back(Event::TransactionFailed {
                system_bytes,
                stream_function: open.stream_function,
                reason: TransactionFailure::ConnectionClosed,
                context: open.context,
            });
        }
    }

    /// Fresh system bytes for a primary: source ID (the equipment's device ID, or 0 from
    /// the host) and a transaction counter that skips open transactions.
    fn allocate_system_bytes(&mut self) -> u32 {
        let source = if self.config.equipment {
            u32::from(self.config.device_id & 0x7FFF) << 16
        } else {
            0
        };
        let mut sb = source;
        for _ in 0..=u16::MAX {
            let counter = self.next_transaction;
            self.next_transaction = counter.checked_add(1).unwrap_or(1);
            sb = source | u32::from(counter);
            if !self.open.contains_key(&sb) {
                break;
            }
        }
        sb
    }
}
