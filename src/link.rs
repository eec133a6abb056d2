//! What every transport (HSMS, SECS-I) gives the engine: send a primary and await
//! its reply, reply to a received primary, a stream of received primaries, and a watch of the
//! link's state.
//!
//! A [`Link`] is a cheap, cloneable handle to a transport task. Sending when the link is not
//! communicating fails at once with [`LinkError::NotReady`]; nothing is queued to be sent
//! later.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::secs2::{DecodeError, Item, Message, StreamFunction};

/// Whether a link can carry data messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No connection (HSMS NOT CONNECTED).
    Disconnected,
    /// Connected, but data messages cannot flow yet (HSMS NOT SELECTED).
    Connected,
    /// Data messages flow (HSMS SELECTED).
    Selected,
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkState::Disconnected => "not connected",
            LinkState::Connected => "connected, not selected",
            LinkState::Selected => "selected",
        })
    }
}

/// A send or a transaction failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    #[error("not communicating: the link is {0}")]
    NotReady(LinkState),
    #[error(
        "T3 reply timeout: no reply to {stream_function} (system bytes 0x{system_bytes:08x}) within {t3:?}"
    )]
    Timeout {
        stream_function: StreamFunction,
        system_bytes: u32,
        t3: Duration,
    },
    #[error(
        "{stream_function} (system bytes 0x{system_bytes:08x}) was rejected by the peer (Reject.req reason {reason})"
    )]
    Rejected {
        stream_function: StreamFunction,
        system_bytes: u32,
        reason: u8,
    },
    #[error(
        "{stream_function} (system bytes 0x{system_bytes:08x}) was answered with S9F{function}: {meaning}"
    )]
    StreamNine {
        stream_function: StreamFunction,
        system_bytes: u32,
        function: u8,
        meaning: &'static str,
        /// The stream 9 message itself.
        message: Box<Message>,
    },
    #[error(
        "the reply to {stream_function} (system bytes 0x{system_bytes:08x}) could not be decoded: {error}"
    )]
    MalformedReply {
        stream_function: StreamFunction,
        system_bytes: u32,
        error: DecodeError,
    },
    #[error(
        "the connection closed before {stream_function} (system bytes 0x{system_bytes:08x}) was answered"
    )]
    ConnectionLost {
        stream_function: StreamFunction,
        system_bytes: u32,
    },
    #[error("{stream_function} (system bytes 0x{system_bytes:08x}) could not be sent: {reason}")]
    SendFailed {
        stream_function: StreamFunction,
        system_bytes: u32,
        reason: String,
    },
    #[error("cannot send: {0}")]
    Invalid(String),
    #[error("the link has shut down")]
    Shutdown,
}

/// The meaning of a stream 9 error message.
pub fn stream_nine_meaning(function: u8) -> &'static str {
    match function {
        1 => "unrecognized device ID",
        3 => "unrecognized stream type",
        5 => "unrecognized function type",
        7 => "illegal data",
        9 => "transaction timer timeout",
        11 => "data too long",
        13 => "conversation timeout",
        _ => "stream 9 error",
    }
}

/// Something received that was not a reply to one of our primaries.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A decoded data message (usually a primary).
    Message(Message),
    /// A data message whose body failed to decode; the equipment side answers S9F7.
    Malformed {
        /// The message's 10-byte header, as S9Fx MHEAD carries it.
        header: [u8; 10],
        stream_function: StreamFunction,
        w_bit: bool,
        device_id: u16,
        system_bytes: u32,
        error: DecodeError,
    },
}

/// Requests from [`Link`] handles to the transport task.
#[derive(Debug)]
pub enum Command {
    /// Send a message. For a W-bit primary `reply` receives the reply (or the failure);
    /// `sent`, if given, receives the system bytes once the message is queued on the wire (a
    /// reply queued with [`Link::post_reply`] has none: a failure to send it is logged).
    Send {
        message: Message,
        reply: Option<oneshot::Sender<Result<Message, LinkError>>>,
        sent: Option<oneshot::Sender<Result<u32, LinkError>>>,
    },
    /// Send a link test and report when it is answered.
    Linktest {
        done: oneshot::Sender<Result<(), LinkError>>,
    },
    /// End communication (HSMS Separate.req); the transport may connect again afterwards.
    Separate { done: oneshot::Sender<()> },
    /// End communication and stop the transport for good (closing its listening socket).
    Shutdown { done: oneshot::Sender<()> },
}

/// A handle on a transport. Dropping every handle stops the transport task.
#[derive(Clone, Debug)]
pub struct Link {
    commands: mpsc::Sender<Command>,
    state: watch::Receiver<LinkState>,
    problem: watch::Receiver<Option<String>>,
    meter: LinkMeter,
}

/// A running transport endpoint (HSMS or SECS-I).
#[derive(Debug)]
pub struct Endpoint {
    /// Send and reply.
    pub link: Link,
    /// Received primaries.
    pub incoming: Incoming,
    /// The bound listening address (when the endpoint listens on TCP).
    pub local_addr: Option<std::net::SocketAddr>,
}

/// The receiving half of a link: primaries from the peer, in arrival order.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Received>,
    queued: Arc<Queued>,
}

/// What a link holds in memory at a glance (see [`LinkMeter`]): the bytes on each side of
/// the transport, with their high-water marks since the link started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes of received messages waiting in the incoming queue for the engine.
    pub incoming_bytes: usize,
    /// The most the incoming queue held.
    pub incoming_peak: usize,
    /// Bytes the transport holds to write to its peer (encoded, not yet taken by the socket
    /// or the line).
    pub unwritten_bytes: usize,
    /// The most it held.
    pub unwritten_peak: usize,
    /// How many times the incoming queue filled up, so that the transport stopped taking
    /// input from its peer (back-pressure) until the engine caught up.
    pub input_holds: u64,
}

/// Counters of what a link holds, shared by the transport (which updates them: a few atomic
/// operations per message) and whoever watches it. Cloning is cheap; a meter does not keep
/// the transport alive.
#[derive(Clone, Debug)]
pub struct LinkMeter {
    queued: Arc<Queued>,
    sending: Arc<Sending>,
}

impl LinkMeter {
    /// The counters now.
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            incoming_bytes: self.queued.bytes.load(Ordering::Acquire),
            incoming_peak: self.queued.peak.load(Ordering::Acquire),
            unwritten_bytes: self.sending.unwritten.load(Ordering::Acquire),
            unwritten_peak: self.sending.peak.load(Ordering::Acquire),
            input_holds: *self.queued.holds.borrow(),
        }
    }

    /// A watch of [`LinkStats::input_holds`]: it changes each time the incoming queue fills
    /// up and the transport stops taking input from its peer.
    pub fn watch_input_holds(&self) -> watch::Receiver<u64> {
        self.queued.holds.subscribe()
    }

    /// How many replies the transport has handed to the waiters of [`Link::send_request`]
    /// since it started. It counts a reply before it hands the engine any message that came
    /// after it, so an engine that has seen fewer replies than this when it takes a received
    /// message knows that replies which came first are still on their way to it.
    pub fn replies_delivered(&self) -> u64 {
        self.sending.replies.load(Ordering::Acquire)
    }

    /// How many times the link has become selected (a new session each time). The state
    /// watch may show only the last of several quick changes: a user that finds this number
    /// changed since the link was last selected knows the session it knew ended, even if it
    /// never saw the link down.
    pub fn sessions(&self) -> u64 {
        self.sending.sessions.load(Ordering::Acquire)
    }
}

/// What a transport counts of its sending side, kept current by the transport.
#[derive(Debug, Default)]
struct Sending {
    /// Bytes held to write.
    unwritten: AtomicUsize,
    peak: AtomicUsize,
    /// Replies handed to waiters.
    replies: std::sync::atomic::AtomicU64,
    /// Times the link became selected.
    sessions: std::sync::atomic::AtomicU64,
}

impl Incoming {
    /// The next received message, or `None` once the transport task has stopped.
    pub async fn recv(&mut self) -> Option<Received> {
        let received = self.rx.recv().await?;
        self.queued.taken(weight(&received));
        Some(received)
    }
}

/// Bytes of received messages in a link's incoming queue, shared by the transport (which
/// stops taking from its peer while they are at [`QUEUE_BYTES`]) and the engine (which wakes
/// it when it has taken enough).
#[derive(Debug)]
struct Queued {
    bytes: AtomicUsize,
    freed: Notify,
    /// The most `bytes` has been.
    peak: AtomicUsize,
    /// How many times `bytes` reached [`QUEUE_BYTES`].
    holds: watch::Sender<u64>,
}

impl Default for Queued {
    fn default() -> Self {
        Queued {
            bytes: AtomicUsize::new(0),
            freed: Notify::new(),
            peak: AtomicUsize::new(0),
            holds: watch::Sender::new(0),
        }
    }
}

impl Queued {
    fn added(&self, bytes: usize) {
        let before = self.bytes.fetch_add(bytes, Ordering::AcqRel);
        let after = before + bytes;
        self.peak.fetch_max(after, Ordering::AcqRel);
        if before < QUEUE_BYTES && after >= QUEUE_BYTES {
            self.holds.send_modify(|n| *n += 1);
        }
    }

    fn taken(&self, bytes: usize) {
        let before = self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        if before >= QUEUE_BYTES && before - bytes < QUEUE_BYTES {
            self.freed.notify_one();
        }
    }
}

/// What a received message weighs in the incoming queue: its body's encoded bytes and its
/// header.
fn weight(received: &Received) -> usize {
    match received {
        Received::Message(m) => 10 + m.body.as_ref().map_or(0, |b| b.encoded_len()),
        Received::Malformed { .. } => 64,
    }
}

/// Bytes of received messages a link's incoming queue may hold (besides [`QUEUE`] messages):
/// past that the transport takes nothing more from its peer until the engine has caught up,
/// so a burst of large messages holds at most about this much.
pub const QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// What a transport task holds: the other ends of a [`Link`] and an [`Incoming`].
#[derive(Debug)]
pub struct LinkTask {
    pub commands: mpsc::Receiver<Command>,
    pub state: watch::Sender<LinkState>,
    pub incoming: mpsc::Sender<Received>,
    problem: watch::Sender<Option<String>>,
    queued: Arc<Queued>,
    sending: Arc<Sending>,
    /// Kept across connections: which replies belong to one that was lost.
    pub unanswered: Unanswered,
}

impl LinkTask {
    /// Records why the link is not communicating (a failed connect, a closed session), for
    /// [`Link::last_problem`]; `None` once it communicates again.
    pub fn set_problem(&self, problem: Option<String>) {
        self.problem.send_replace(problem);
    }

    /// The problem last recorded.
    pub fn problem(&self) -> Option<String> {
        self.problem.borrow().clone()
    }

    /// Whether the incoming queue holds [`QUEUE_BYTES`] or more: the transport should take
    /// nothing more from its peer until [`IncomingRoom::wait`] returns.
    pub fn incoming_full(&self) -> bool {
        self.queued.bytes.load(Ordering::Acquire) >= QUEUE_BYTES
    }

    /// Records how many bytes the transport holds to write to its peer now (for
    /// [`LinkStats::unwritten_bytes`] and its peak).
    pub fn set_unwritten(&self, bytes: usize) {
        self.sending.unwritten.store(bytes, Ordering::Release);
        self.sending.peak.fetch_max(bytes, Ordering::AcqRel);
    }

    /// Publishes the link's state; a new session is counted (see [`LinkMeter::sessions`])
    /// before the watch shows it selected.
    pub fn set_state(&self, state: LinkState) {
        if state == LinkState::Selected && *self.state.borrow() != LinkState::Selected {
            self.sending.sessions.fetch_add(1, Ordering::AcqRel);
        }
        let _ = self.state.send(state);
    }

    /// Hands a reply to the waiter of its request, counting it (see
    /// [`LinkMeter::replies_delivered`]).
    pub fn deliver_reply(
        &self,
        waiter: oneshot::Sender<Result<Message, LinkError>>,
        reply: Message,
    ) {
        if waiter.send(Ok(reply)).is_ok() {
            self.sending.replies.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A handle to wait for room in the incoming queue with (while the task is borrowed
    /// otherwise).
    pub fn incoming_room(&self) -> IncomingRoom {
        IncomingRoom(self.queued.clone())
    }
}

/// Waits for the engine to take enough from a full incoming queue.
#[derive(Debug, Clone)]
pub struct IncomingRoom(Arc<Queued>);

impl IncomingRoom {
    /// Returns once the queue has gone below [`QUEUE_BYTES`] (at once if it was already, and
    /// a wake-up was pending).
    pub async fn wait(&self) {
        self.0.freed.notified().await;
    }
}

impl LinkTask {
    /// Waits `duration` with no connection, refusing commands meanwhile (the gap between
    /// connection attempts). False when the link is to stop (a shutdown, or every handle gone).
    pub async fn idle(&mut self, duration: Duration) -> bool {
        let until = tokio::time::Instant::now() + duration;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                command = self.commands.recv() => match command {
                    Some(c) => if !refuse_command(c, LinkState::Disconnected) { return false },
                    None => return false,
                },
            }
        }
    }
}

/// Answers a command with "not ready" while the transport has no connection. Returns false
/// when the command asks the transport to stop.
pub fn refuse_command(command: Command, state: LinkState) -> bool {
    match command {
        Command::Send { sent, reply, .. } => {
            if let Some(sent) = sent {
                let _ = sent.send(Err(LinkError::NotReady(state)));
            }
            drop(reply);
        }
        Command::Linktest { done } => {
            let _ = done.send(Err(LinkError::NotReady(state)));
        }
        Command::Separate { done } => {
            let _ = done.send(());
        }
        Command::Shutdown { done } => {
            let _ = done.send(());
            return false;
        }
    }
    true
}

/// Received messages a transport could not hand to the engine yet, its queue being full, in
/// arrival order. While any wait, the transport takes no more from its peer (HSMS stops
/// reading the socket; SECS-I does not answer ENQ), so this holds at most what one read
/// brought.
#[derive(Debug, Default)]
pub struct Backlog(VecDeque<Received>);

impl Backlog {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Hands a received message to the engine without waiting: into its queue if there is
    /// room and nothing waits before it, else into the backlog.
    pub fn deliver(&mut self, received: Received, task: &LinkTask) {
        if self.0.is_empty() {
            match task.incoming.try_reserve() {
                Ok(permit) => send(permit, received, task),
                Err(mpsc::error::TrySendError::Full(())) => self.0.push_back(received),
                Err(mpsc::error::TrySendError::Closed(())) => {}
            }
        } else {
            self.0.push_back(received);
        }
    }

    /// Sends the oldest waiting message with a permit the engine's queue gave, then moves
    /// what else it has room for.
    pub fn send_with(&mut self, permit: mpsc::Permit<'_, Received>, task: &LinkTask) {
        if let Some(received) = self.0.pop_front() {
            send(permit, received, task);
        }
        while !self.0.is_empty() {
            match task.incoming.try_reserve() {
                Ok(permit) => {
                    if let Some(received) = self.0.pop_front() {
                        send(permit, received, task);
                    }
                }
                Err(mpsc::error::TrySendError::Full(())) => return,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    self.0.clear();
                    return;
                }
            }
        }
    }

    /// Drops what waits (nobody takes received messages any more).
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// At the end of a session: hands on what waits, in order, waiting for room (the engine
    /// may still answer or log them).
    pub async fn hand_over(&mut self, task: &LinkTask) {
        for received in self.0.drain(..) {
            let Ok(permit) = task.incoming.reserve().await else {
                break;
            };
            send(permit, received, task);
        }
    }
}

/// Puts a received message in the engine's queue, counting its bytes first (so that the
/// engine, which subtracts them when it takes it, never sees them missing).
fn send(permit: mpsc::Permit<'_, Received>, received: Received, task: &LinkTask) {
    task.queued.added(weight(&received));
    permit.send(received);
}

/// Most W-bit primaries [`Unanswered`] keeps per connection: a peer that sends more that get
/// no answer (the equipment discards them while not communicating) only makes it forget.
const UNANSWERED_CAP: usize = 4096;

/// Which replies belong to a connection that was lost. It keeps the W-bit primaries received
/// on the current connection and not answered yet (by system bytes); when the connection
/// ends, those are stale. A reply the engine makes later to a stale primary answers nothing
/// the next connection's peer sent (to that peer it is a reply to no open transaction), so
/// the transport drops it. Any other secondary goes out: one to a primary of this connection,
/// and one to a primary sent without W-bit (E5 calls for no reply, but some peers wait for
/// one, e.g. secsgem's S5F3). Bounded: at most [`UNANSWERED_CAP`] kept per connection.
#[derive(Debug, Default)]
pub struct Unanswered {
    current: HashMap<u32, u32>,
    stale: HashMap<u32, u32>,
}

impl Unanswered {
    /// Notes a message received on the current connection.
    pub fn received(&mut self, message: &Message) {
        if message.w_bit && message.function % 2 == 1 {
            if self.current.len() >= UNANSWERED_CAP {
                self.current.clear();
            }
            *self.current.entry(message.system_bytes).or_default() += 1;
        }
    }

    /// The connection ended: what it received and did not answer is stale.
    pub fn connection_ended(&mut self) {
        self.stale = std::mem::take(&mut self.current);
    }

    /// Whether `message` may be sent on this connection: anything but a reply to a stale
    /// primary (one of this connection with the same system bytes comes first).
    pub fn may_send(&mut self, message: &Message) -> bool {
        if message.function % 2 == 1 {
            return true;
        }
        let sb = message.system_bytes;
        if take(&mut self.current, sb) {
            return true;
        }
        !take(&mut self.stale, sb)
    }
}

/// Takes one of `key` from a multiset; false if there was none.
fn take(set: &mut HashMap<u32, u32>, key: u32) -> bool {
    match set.get_mut(&key) {
        Some(n) if *n > 1 => {
            *n -= 1;
            true
        }
        Some(_) => {
            set.remove(&key);
            true
        }
        None => false,
    }
}

/// Why a secondary was not sent (see [`Unanswered`]).
pub fn unanswered_refusal(message: &Message) -> String {
    format!(
        "{} (system bytes 0x{:08x}) answers a primary of a connection since lost; not sent",
        message.stream_function(),
        message.system_bytes
    )
}

/// Queue sizes: commands waiting for the transport task, received messages waiting for the
/// engine. When the command queue is full, senders wait; when the incoming queue is full, the
/// transport stops reading its connection (back-pressure to the peer). Nothing is dropped.
pub const QUEUE: usize = 1024;

/// A new link, its incoming stream, and the task end a transport serves.
pub fn channel() -> (Link, Incoming, LinkTask) {
    let (ctx, crx) = mpsc::channel(QUEUE);
    let (stx, srx) = watch::channel(LinkState::Disconnected);
    let (itx, irx) = mpsc::channel(QUEUE);
    let (ptx, prx) = watch::channel(None);
    let queued = Arc::new(Queued::default());
    let sending = Arc::new(Sending::default());
    (
        Link {
            commands: ctx,
            state: srx,
            problem: prx,
            meter: LinkMeter {
                queued: queued.clone(),
                sending: sending.clone(),
            },
        },
        Incoming {
            rx: irx,
            queued: queued.clone(),
        },
        LinkTask {
            commands: crx,
            state: stx,
            incoming: itx,
            problem: ptx,
            queued,
            sending,
            unanswered: Unanswered::default(),
        },
    )
}

/// A reply on its way: returned by [`Link::send_request`] as soon as the primary is sent.
#[derive(Debug)]
pub struct PendingReply {
    /// The primary's system bytes.
    pub system_bytes: u32,
    /// The primary's stream/function.
    pub stream_function: StreamFunction,
    rx: oneshot::Receiver<Result<Message, LinkError>>,
}

impl PendingReply {
    /// Waits for the reply (T3 bounds the wait).
    pub async fn wait(self) -> Result<Message, LinkError> {
        self.rx.await.unwrap_or(Err(LinkError::Shutdown))
    }
}

impl Link {
    /// The current state.
    pub fn state(&self) -> LinkState {
        *self.state.borrow()
    }

    /// What the link holds in memory now, and the most it held.
    pub fn stats(&self) -> LinkStats {
        self.meter.stats()
    }

    /// The link's counters, as a handle that does not keep the transport alive.
    pub fn meter(&self) -> LinkMeter {
        self.meter.clone()
    }

    /// Why the link last failed to connect or lost its connection, if it is not communicating.
    pub fn last_problem(&self) -> Option<String> {
        self.problem.borrow().clone()
    }

    /// A watch that sees every problem recorded (each failed connection attempt, each lost
    /// connection; `None` once selected).
    pub fn watch_problem(&self) -> watch::Receiver<Option<String>> {
        self.problem.clone()
    }

    /// A watch that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// Waits until the link is selected, up to `timeout`.
    pub async fn wait_selected(&self, timeout: Duration) -> Result<(), LinkError> {
        let mut watch = self.state.clone();
        let wait = watch.wait_for(|s| *s == LinkState::Selected);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(LinkError::Shutdown),
            Err(_) => Err(LinkError::NotReady(self.state())),
        }
    }

    async fn command(&self, command: Command) -> Result<(), LinkError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| LinkError::Shutdown)
    }

    /// Sends a W-bit primary and returns at once with a handle on its reply.
    pub async fn send_request(&self, message: Message) -> Result<PendingReply, LinkError> {
        let stream_function = message.stream_function();
        if !message.w_bit || !stream_function.is_primary() {
            return Err(LinkError::Invalid(format!(
                "{stream_function} without W-bit expects no reply; use send"
            )));
        }
        let (reply, rx) = oneshot::channel();
        let (sent, sent_rx) = oneshot::channel();
        self.command(Command::Send {
            message,
            reply: Some(reply),
            sent: Some(sent),
        })
        .await?;
        let system_bytes = sent_rx.await.unwrap_or(Err(LinkError::Shutdown))?;
        Ok(PendingReply {
            system_bytes,
            stream_function,
            rx,
        })
    }

    /// Sends a W-bit primary and waits for its reply.
    pub async fn request(&self, message: Message) -> Result<Message, LinkError> {
        self.send_request(message).await?.wait().await
    }

    /// Sends a message that expects no reply (a primary without W-bit, or a secondary whose
    /// system bytes are already set). Returns the system bytes sent.
    pub async fn send(&self, message: Message) -> Result<u32, LinkError> {
        let (sent, sent_rx) = oneshot::channel();
        self.command(Command::Send {
            message,
            reply: None,
            sent: Some(sent),
        })
        .await?;
        sent_rx.await.unwrap_or(Err(LinkError::Shutdown))
    }

    /// Queues a reply (a secondary whose system bytes are those of the primary it answers)
    /// without waiting for the transport to take it: returns once it is in the queue, waiting
    /// only while the queue is full. If the link cannot send it (it went down meanwhile), the
    /// transport logs that.
    pub async fn post_reply(&self, reply: Message) -> Result<(), LinkError> {
        self.command(Command::Send {
            message: reply,
            reply: None,
            sent: None,
        })
        .await
    }

    /// Replies to a received primary with `body` (same device ID and system bytes), queued as
    /// [`Link::post_reply`] does.
    pub async fn reply(&self, primary: &Message, body: Option<Item>) -> Result<(), LinkError> {
        self.post_reply(primary.reply_with(body)).await
    }

    /// Sends a link test and waits for its answer.
    pub async fn linktest(&self) -> Result<(), LinkError> {
        let (done, rx) = oneshot::channel();
        self.command(Command::Linktest { done }).await?;
        rx.await.unwrap_or(Err(LinkError::Shutdown))
    }

    /// Ends communication and stops the transport task (every handle then reports
    /// [`LinkError::Shutdown`]); waits until it has stopped.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.command(Command::Shutdown { done }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Ends communication (Separate.req for HSMS) and waits until it is done.
    pub async fn separate(&self) {
        let (done, rx) = oneshot::channel();
        if self.command(Command::Separate { done }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Keeps a repeated warning (a refused connection, a failed reconnect) from flooding the
/// log: the first occurrence is reported, then the same text again only after `every`, with
/// how many were held back meanwhile. A different text is reported at once.
#[derive(Debug)]
pub struct RepeatedWarning {
    every: std::time::Duration,
    last: Option<(String, std::time::Instant)>,
    held_back: u64,
}

impl RepeatedWarning {
    pub fn new(every: std::time::Duration) -> Self {
        RepeatedWarning {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// Records an occurrence of `text` at `now`. Returns `Some(held_back)` when it should be
    /// logged (`held_back`: how many identical ones were not), `None` when it is held back.
    pub fn note(&mut self, text: &str, now: std::time::Instant) -> Option<u64> {
        match &self.last {
            Some((last, at)) if last == text && now.duration_since(*at) < self.every => {
                self.held_back += 1;
                None
            }
            Some((last, _)) if last == text => {
                self.last = Some((text.to_string(), now));
                Some(std::mem::take(&mut self.held_back))
            }
            _ => {
                self.last = Some((text.to_string(), now));
                self.held_back = 0;
                Some(0)
            }
        }
    }

    /// Whether nothing has been noted for `every` before `now` (a tracker that can be
    /// forgotten: its next warning is logged at once anyway).
    pub fn quiet_since(&self, now: std::time::Instant, every: std::time::Duration) -> bool {
        self.last
            .as_ref()
            .is_none_or(|(_, at)| now.duration_since(*at) >= every)
    }

    /// Forgets the last warning (the condition cleared): the next one is reported at once.
    pub fn clear(&mut self) {
        self.last = None;
        self.held_back = 0;
    }
}

/// The text of a warning that [`RepeatedWarning`] let through.
pub fn with_repeats(text: &str, held_back: u64) -> String {
    if held_back == 0 {
        text.to_string()
    } else {
        format!("{text} (and {held_back} more like it since the last report)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn replies_to_primaries_of_a_lost_connection_are_held_back() {
        let primary = |sb: u32, w: bool| {
            let mut m = Message::new(StreamFunction::new(5, 3).unwrap(), w, None);
            m.system_bytes = sb;
            m
        };
        let reply = |p: &Message| p.reply_with(None);
        let mut u = Unanswered::default();
        // A reply to a primary sent without W-bit goes out (some peers wait for one).
        u.received(&primary(1, false));
        assert!(u.may_send(&reply(&primary(1, false))));
        // W-bit primaries of a lost connection: their replies are held back, once each; a
        // primary of the new connection with the same system bytes is answered first.
        u.received(&primary(2, true));
        u.received(&primary(3, true));
        u.connection_ended();
        u.received(&primary(3, true));
        assert!(!u.may_send(&reply(&primary(2, true))));
        assert!(u.may_send(&reply(&primary(2, true))), "held back once");
        assert!(
            u.may_send(&reply(&primary(3, true))),
            "the new connection's"
        );
        assert!(!u.may_send(&reply(&primary(3, true))), "the lost one's");
        // Primaries are always sent; what is kept is bounded.
        assert!(u.may_send(&primary(9, true)));
        for sb in 0..(UNANSWERED_CAP as u32 + 10) {
            u.received(&primary(sb, true));
        }
        assert!(u.current.len() <= UNANSWERED_CAP);
    }

    #[test]
    fn repeated_warnings_are_held_back_and_counted() {
        let t0 = Instant::now();
        let mut w = RepeatedWarning::new(Duration::from_secs(60));
        assert_eq!(w.note("refused", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(w.note("refused", t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(w.note("refused", t0 + Duration::from_secs(61)), Some(5));
        assert_eq!(w.note("other", t0 + Duration::from_secs(62)), Some(0));
        w.clear();
        assert_eq!(w.note("other", t0 + Duration::from_secs(63)), Some(0));
        assert_eq!(
            with_repeats("refused", 5),
            "refused (and 5 more like it since the last report)"
        );
    }
}
