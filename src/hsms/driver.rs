//! The tokio shell around [`Protocol`]: owns the socket, the clock and the reconnect loop, and
//! serves a [`Link`].
//!
//! - Active: connect; on failure or after a session ends wait T5, doubling on each failure up
//!   to `reconnect_max`, never a busy loop.
//! - Passive: listen; one session at a time; a second connection's Select.req is answered
//!   with status 3 (connect exhaust) and it is closed.
//! - Alternating: try to connect; if that fails, listen for one backoff period; repeat.
//!
//! Every loss of the connection is one state change to [`LinkState::Disconnected`], logged
//! with its reason.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::frame::{self, HEADER_LEN, Header, SType};
use super::protocol::{self, CloseReason, Event, Protocol, Role, State, TransactionFailure};
use crate::link::{
    self, Backlog, Command, LinkError, LinkState, LinkTask, Received, RepeatedWarning,
    stream_nine_meaning, unanswered_refusal, with_repeats,
};
use crate::peers::{Allowlist, Refusals, refused_text};
use crate::secs2::Message;

/// How the connection is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Connect to this address (usually the host side).
    Active(String),
    /// Listen on this address (usually the equipment side); port 0 picks a free port.
    Passive(String),
    /// Try to connect to the first address; when that fails, listen on the second for a while.
    Alternating { connect: String, listen: String },
}

/// Settings of one HSMS endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// How the connection is made.
    pub mode: Mode,
    /// Device ID (session ID) put on data messages this end sends.
    pub device_id: u16,
    /// Protocol timers and limits.
    pub protocol: protocol::Config,
    /// Longest wait between connection attempts after repeated failures (at least T5).
    pub reconnect_max: Duration,
    /// Name used in logs.
    pub name: String,
    /// How long bytes may wait for a peer that reads nothing before the connection is
    /// dropped (a peer that sends but never reads must not hold this end's memory).
    pub write_timeout: Duration,
    /// The peers this end accepts connections from and keeps connections to (every one by
    /// default). Another peer is closed before anything is read from or written to it.
    pub allow: Allowlist,
}

impl Settings {
    /// Settings with SEMI's default timers.
    pub fn new(mode: Mode) -> Self {
        Settings {
            mode,
            device_id: 0,
            protocol: protocol::Config::default(),
            reconnect_max: Duration::from_secs(60),
            name: "hsms".into(),
            write_timeout: Duration::from_secs(30),
            allow: Allowlist::everyone(),
        }
    }
}

pub use crate::link::Endpoint;

/// Starts an HSMS endpoint on the current tokio runtime. A listening socket is bound before
/// this returns, so a port in use is reported here.
pub async fn start(settings: Settings) -> std::io::Result<Endpoint> {
    let listen = match &settings.mode {
        Mode::Active(_) => None,
        Mode::Passive(addr) | Mode::Alternating { listen: addr, .. } => {
            Some(TcpListener::bind(addr).await?)
        }
    };
    let local_addr = match &listen {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let (link, incoming, task) = link::channel();
    tokio::spawn(run(settings, listen, task));
    Ok(Endpoint {
        link,
        incoming,
        local_addr,
    })
}

/// What ended a wait for a connection.
enum Wait {
    /// A connection, and whether this end made it (active) or accepted it (passive).
    /// A connection, whether this end made it or accepted it, and bytes already read from it
    /// (the Select.req of a connection handed over by [`refuse_or_hand_over`]).
    Connected(TcpStream, Role, Vec<u8>),
    TimedOut,
    Shutdown,
}

/// What a question about a connection that arrived while a session was up carries: the
/// answer, whether a session is still up once it has read what its peer already sent.
type Liveness = oneshot::Sender<bool>;

/// Connections that arrive on the listening socket while a session is up. Each one's first
/// frame is read by its own task; if it is a Select.req, the task asks whether the session is
/// still up. The session first reads what its peer already sent (a Separate.req, the end of
/// the connection, a reset), so a host that separates or resets and reconnects at once is
/// not refused for a session that is already over: its connection is handed to the run loop
/// as the next session. Only while a session really is up does it get status 3.
struct Extras {
    liveness_tx: mpsc::Sender<Liveness>,
    liveness_rx: mpsc::Receiver<Liveness>,
    handoff_tx: mpsc::Sender<(TcpStream, Vec<u8>)>,
    handoff_rx: mpsc::Receiver<(TcpStream, Vec<u8>)>,
    refusals: Arc<Mutex<RepeatedWarning>>,
    /// Peers outside the allow list, logged per address.
    strangers: Refusals,
}

impl Extras {
    fn new() -> Self {
        let (liveness_tx, liveness_rx) = mpsc::channel(16);
        let (handoff_tx, handoff_rx) = mpsc::channel(4);
        Extras {
            liveness_tx,
            liveness_rx,
            handoff_tx,
            handoff_rx,
            refusals: Arc::new(Mutex::new(RepeatedWarning::new(REPEAT_EVERY))),
            strangers: Refusals::new(REPEAT_EVERY),
        }
    }
}

/// How often a repeated warning (the same failed connect, refused connections) is logged.
const REPEAT_EVERY: Duration = Duration::from_secs(60);

async fn run(settings: Settings, listener: Option<TcpListener>, mut task: LinkTask) {
    let t5 = settings.protocol.t5;
    let mut backoff = t5;
    let mut failures = RepeatedWarning::new(REPEAT_EVERY);
    let mut extras = Extras::new();
    loop {
        let waited = match &settings.mode {
            Mode::Active(addr) => connect(addr, &settings, &mut task).await,
            Mode::Passive(_) => match &listener {
                Some(l) => accept(l, None, &settings, &mut task, &mut extras).await,
                None => Wait::Shutdown,
            },
            Mode::Alternating { connect: addr, .. } => {
                match connect(addr, &settings, &mut task).await {
                    Wait::TimedOut => match &listener {
                        Some(l) => {
                            accept(l, Some(backoff), &settings, &mut task, &mut extras).await
                        }
                        None => Wait::Shutdown,
                    },
                    other => other,
                }
            }
        };
        match waited {
            Wait::Shutdown => return,
            Wait::Connected(stream, role, prefix) => {
                failures.clear();
                let peer = stream
                    .peer_addr()
                    .map_or_else(|_| "?".into(), |a| a.to_string());
                info!(endpoint = %settings.name, %peer, "TCP connected");
                let (reason, selected, shutdown) = session(
                    stream,
                    &prefix,
                    &peer,
                    role,
                    &settings,
                    listener.as_ref(),
                    &mut task,
                    &mut extras,
                )
                .await;
                if reason.is_fault() {
                    warn!(endpoint = %settings.name, %peer, %reason, "connection closed");
                } else {
                    info!(endpoint = %settings.name, %peer, %reason, "connection closed");
                }
                if shutdown {
                    return;
                }
                if selected {
                    backoff = t5;
                }
                if matches!(settings.mode, Mode::Passive(_)) {
                    continue;
                }
            }
            Wait::TimedOut => {
                // A failed connect: logged once, then again only every REPEAT_EVERY with a
                // count (the link's last problem always has the latest).
                if let Some(problem) = task.problem()
                    && let Some(held_back) = failures.note(&problem, std::time::Instant::now())
                {
                    warn!(endpoint = %settings.name, "{}; trying again", with_repeats(&problem, held_back));
                }
            }
        }
        // T5: the gap before the next attempt, doubled after each failure up to the cap.
        if !task.idle(backoff).await {
            return;
        }
        backoff = (backoff * 2).min(settings.reconnect_max.max(t5));
    }
}

async fn connect(addr: &str, settings: &Settings, task: &mut LinkTask) -> Wait {
    let attempt = tokio::time::timeout(
        settings.protocol.t5.max(Duration::from_secs(1)),
        TcpStream::connect(addr),
    );
    tokio::pin!(attempt);
    loop {
        tokio::select! {
            result = &mut attempt => return match result {
                Ok(Ok(stream)) => match stream.peer_addr() {
                    Ok(peer) if settings.allow.permits(peer.ip()) => Wait::Connected(stream, Role::Active, Vec::new()),
                    peer => {
                        // The address resolved to a peer outside the list: closed unused.
                        drop(stream);
                        let peer = peer.map_or_else(|_| "?".into(), |p| p.ip().to_canonical().to_string());
                        task.set_problem(Some(format!(
                            "connected to {addr} ({peer}) and closed it: {peer} is not in the allow list {}",
                            settings.allow
                        )));
                        Wait::TimedOut
                    }
                },
                Ok(Err(e)) => {
                    debug!(endpoint = %settings.name, %addr, error = %e, "connect failed");
                    task.set_problem(Some(format!("cannot connect to {addr}: {e}")));
                    Wait::TimedOut
                }
                Err(_) => {
                    debug!(endpoint = %settings.name, %addr, "connect timed out");
                    task.set_problem(Some(format!("cannot connect to {addr}: timed out")));
                    Wait::TimedOut
                }
            },
            command = task.commands.recv() => match command {
                Some(c) => if !link::refuse_command(c, LinkState::Disconnected) { return Wait::Shutdown },
                None => return Wait::Shutdown,
            },
        }
    }
}

async fn accept(
    listener: &TcpListener,
    limit: Option<Duration>,
    settings: &Settings,
    task: &mut LinkTask,
    extras: &mut Extras,
) -> Wait {
    let until = limit.map(|d| tokio::time::Instant::now() + d);
    loop {
        tokio::select! {
            result = listener.accept() => match result {
                Ok((stream, addr)) => {
                    if settings.allow.permits(addr.ip()) {
                        return Wait::Connected(stream, Role::Passive, Vec::new());
                    }
                    refuse_stranger(stream, addr, settings, &mut extras.strangers);
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    // Out of file descriptors and similar: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // A connection that came while the last session was ending, its Select.req read.
            Some((stream, prefix)) = extras.handoff_rx.recv() => {
                return Wait::Connected(stream, Role::Passive, prefix);
            }
            // No session is up.
            Some(answer) = extras.liveness_rx.recv() => {
                let _ = answer.send(false);
            }
            _ = sleep_until_opt(until) => return Wait::TimedOut,
            command = task.commands.recv() => match command {
                Some(c) => if !link::refuse_command(c, LinkState::Disconnected) { return Wait::Shutdown },
                None => return Wait::Shutdown,
            },
        }
    }
}

async fn sleep_until_opt(until: Option<tokio::time::Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Reads the first frame of a connection that arrived while a session was up. A Select.req
/// is answered with status 3 (connect exhaust) if the session is still up once it has read
/// what its peer sent; if that session is over, the connection is handed to the run loop as
/// the next session, its Select.req with it. Anything else is closed.
async fn refuse_or_hand_over(
    mut stream: TcpStream,
    addr: SocketAddr,
    t7: Duration,
    liveness: mpsc::Sender<Liveness>,
    handoff: mpsc::Sender<(TcpStream, Vec<u8>)>,
    refusals: Arc<Mutex<RepeatedWarning>>,
    name: String,
) {
    let mut frame_bytes = [0u8; 4 + HEADER_LEN];
    let read = tokio::time::timeout(t7, stream.read_exact(&mut frame_bytes)).await;
    let Ok(Ok(_)) = read else {
        let _ = stream.shutdown().await;
        return;
    };
    let select = match frame::split_frame(&frame_bytes) {
        Ok((header, _)) if header.stype == SType::SelectReq => header,
        _ => {
            let _ = stream.shutdown().await;
            return;
        }
    };
    let (answer, alive) = oneshot::channel();
    let session_up = match liveness.send(answer).await {
        Ok(()) => alive.await.unwrap_or(false),
        Err(_) => false,
    };
    if !session_up {
        let _ = handoff.send((stream, frame_bytes.to_vec())).await;
        return;
    }
    let text = format!(
        "second connection from {} refused: already connected (select status 3)",
        addr.ip()
    );
    let report = refusals
        .lock()
        .ok()
        .and_then(|mut r| r.note(&text, std::time::Instant::now()));
    if let Some(held_back) = report {
        warn!(endpoint = %name, %addr, "{}", with_repeats(&text, held_back));
    }
    let mut rsp = Header::control(SType::SelectRsp, select.system_bytes);
    rsp.byte3 = protocol::select_status::EXHAUSTED;
    let mut out = Vec::new();
    frame::encode_control(&rsp, &mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

fn link_state(state: State) -> LinkState {
    match state {
        State::NotConnected => LinkState::Disconnected,
        State::NotSelected => LinkState::Connected,
        State::Selected => LinkState::Selected,
    }
}

/// One TCP session. Returns why it ended, whether it was ever selected, and whether every
/// link handle is gone (shutdown).
///
/// The loop never waits for its users. Received messages go to the link's bounded incoming
/// queue with `try_send`; when it is full they wait in a small backlog and the socket is not
/// read until the engine has taken them, so back-pressure reaches TCP and the peer. Commands
/// are taken while fewer than [`MAX_QUEUED_WRITE`] bytes wait to be written; past that the
/// socket is not read either, and a peer that reads nothing for `write_timeout` is dropped.
/// The timers (T3, T6, T7, T8, linktest, write timeout) fire whatever the queues hold.
#[allow(clippy::too_many_arguments)]
async fn session(
    stream: TcpStream,
    prefix: &[u8],
    peer: &str,
    role: Role,
    settings: &Settings,
    listener: Option<&TcpListener>,
    task: &mut LinkTask,
    extras: &mut Extras,
) -> (CloseReason, bool, bool) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut proto: Proto = Protocol::with_context(settings.protocol.clone(), role);
    let mut session = Session {
        linktests: HashMap::new(),
        separating: Vec::new(),
        backlog: Backlog::default(),
        selected_once: false,
        shutdown: false,
    };
    proto.connected(now());
    if !prefix.is_empty() {
        proto.handle_input(prefix, now());
    }
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut written = 0usize;
    // When the peer last took bytes from us (or we had nothing for it): the write timeout runs
    // from here while bytes wait.
    let mut write_progress = now();
    // One timer for the whole session, re-armed only when it is needed earlier than it is set
    // (or after it fired): making a new one on every pass costs a timer-wheel insert and
    // removal per message. Firing early is harmless; each check looks at the time.
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<tokio::time::Instant> = None;
    let incoming = task.incoming.clone();
    let incoming_room = task.incoming_room();
    let reason = loop {
        if let Some(reason) = session.drain_events(&mut proto, task, settings) {
            break reason;
        }
        if written == out.len() {
            out.clear();
            written = 0;
            write_progress = now();
        }
        proto.take_transmit(&mut out);
        // Write at once while the socket takes it; the select below waits only when it is full.
        while written < out.len() {
            match wr.try_write(&out[written..]) {
                Ok(n) => {
                    written += n;
                    write_progress = now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    proto.disconnected(CloseReason::Io(e.to_string()));
                    break;
                }
            }
        }
        if proto.state() == State::NotConnected {
            continue; // drain_events returns the close reason
        }
        let unwritten = out.len() - written;
        task.set_unwritten(unwritten);
        let writes_full = unwritten >= MAX_QUEUED_WRITE;
        let incoming_full = task.incoming_full();
        let read_input = session.backlog.is_empty() && !writes_full && !incoming_full;
        proto.hold_input(!read_input, now());
        let write_deadline = (unwritten > 0).then(|| write_progress + settings.write_timeout);
        if let Some(deadline) = [proto.poll_timeout(), write_deadline]
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std)
            && armed.is_none_or(|a| deadline < a)
        {
            timer.as_mut().reset(deadline);
            armed = Some(deadline);
        }
        tokio::select! {
            result = rd.read(&mut rbuf), if read_input => match result {
                Ok(0) => proto.disconnected(CloseReason::PeerClosed),
                Ok(n) => proto.handle_input(&rbuf[..n], now()),
                Err(e) => proto.disconnected(CloseReason::Io(e.to_string())),
            },
            // The engine took enough from a full incoming queue: read again.
            _ = incoming_room.wait(), if incoming_full => {}
            permit = incoming.reserve(), if !session.backlog.is_empty() => match permit {
                Ok(permit) => session.backlog.send_with(permit, task),
                // Nobody takes received messages any more: nothing to keep them for.
                Err(_) => session.backlog.clear(),
            },
            result = wr.write(&out[written..]), if written < out.len() => match result {
                Ok(n) => {
                    written += n;
                    write_progress = now();
                }
                Err(e) => proto.disconnected(CloseReason::Io(e.to_string())),
            },
            command = task.commands.recv(), if !writes_full => match command {
                Some(c) => {
                    session.command(c, &mut proto, task, settings);
                    // Take what else is queued, so that it goes out in one write (up to the
                    // write cap: past it the rest waits in the queue).
                    let waiting = out.len() - written;
                    session.take_commands(&mut proto, task, settings, waiting);
                    // While the engine holds received messages it has not taken yet, it is
                    // probably about to answer them: let it run before writing, so that a
                    // burst of replies leaves in a few writes rather than one each. Stops at
                    // the first pass that brings no command, and after REPLY_COALESCE.
                    let mut since = None;
                    for _ in 0..COMMAND_BATCH {
                        if task.incoming.capacity() == task.incoming.max_capacity()
                            || proto.state() == State::NotConnected
                            || since.get_or_insert_with(Instant::now).elapsed() > REPLY_COALESCE
                        {
                            break;
                        }
                        yield_to_others().await;
                        if !session.take_commands(&mut proto, task, settings, waiting) {
                            break;
                        }
                    }
                }
                None => {
                    session.shutdown = true;
                    proto.separate();
                }
            },
            _ = &mut timer, if armed.is_some() => {
                armed = None;
                let now = now();
                if written < out.len() && now >= write_progress + settings.write_timeout {
                    proto.disconnected(CloseReason::WriteStalled {
                        waited: settings.write_timeout,
                        unwritten: out.len() - written,
                    });
                } else {
                    proto.handle_timeout(now);
                }
            }
            accepted = accept_extra(listener) => {
                match accepted {
                    Ok((extra, addr)) if !settings.allow.permits(addr.ip()) => {
                        refuse_stranger(extra, addr, settings, &mut extras.strangers);
                    }
                    Ok((extra, addr)) => { tokio::spawn(refuse_or_hand_over(
                        extra,
                        addr,
                        settings.protocol.t7,
                        extras.liveness_tx.clone(),
                        extras.handoff_tx.clone(),
                        extras.refusals.clone(),
                        settings.name.clone(),
                    )); }
                    Err(_) => {}
                }
            }
            Some(answer) = extras.liveness_rx.recv() => {
                // First read what the peer already sent (a Separate.req, the end of the
                // connection, a reset): is this session still up?
                if read_input {
                    loop {
                        match rd.try_read(&mut rbuf) {
                            Ok(0) => {
                                proto.disconnected(CloseReason::PeerClosed);
                                break;
                            }
                            Ok(n) => proto.handle_input(&rbuf[..n], now()),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                proto.disconnected(CloseReason::Io(e.to_string()));
                                break;
                            }
                        }
                        if proto.state() == State::NotConnected {
                            break;
                        }
                    }
                }
                let _ = answer.send(proto.state() != State::NotConnected);
            }
        }
    };
    // Write what is left (Separate.req, Reject.req) before closing, bounded by T8; not to a
    // peer that stopped reading (it would only hold the connection T8 longer).
    proto.take_transmit(&mut out);
    if written < out.len() && !matches!(reason, CloseReason::WriteStalled { .. }) {
        let _ = tokio::time::timeout(settings.protocol.t8, wr.write_all(&out[written..])).await;
    }
    let _ = wr.shutdown().await;
    task.set_unwritten(0);
    task.unanswered.connection_ended();
    for done in session.separating.drain(..) {
        let _ = done.send(());
    }
    // Messages already read are handed on in order; the engine may still answer or log them.
    session.backlog.hand_over(task).await;
    // Why, before the state says so: whoever sees the state change finds the reason.
    task.set_problem(Some(format!("connection to {peer} closed: {reason}")));
    task.set_state(LinkState::Disconnected);
    (reason, session.selected_once, session.shutdown)
}

/// The driver's clock: tokio's, so that tests can run with paused time.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Closes a connection from a peer outside the allow list before reading or writing anything
/// (so it never gets a Select.rsp), and logs it at most once a minute per address.
fn refuse_stranger(
    stream: TcpStream,
    addr: SocketAddr,
    settings: &Settings,
    strangers: &mut Refusals,
) {
    drop(stream);
    let text = refused_text(addr.ip(), &settings.allow);
    if let Some(line) = strangers.note(addr.ip(), &text, std::time::Instant::now()) {
        warn!(endpoint = %settings.name, %addr, "{line}");
    }
}

async fn accept_extra(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Most commands taken from the queue at once, after the one that woke the session.
const COMMAND_BATCH: usize = 63;

/// Longest a reply is held back while the engine answers more received messages, so that
/// they leave in one write (a slow handler must not delay the replies already made).
const REPLY_COALESCE: Duration = Duration::from_micros(50);

/// Bytes waiting to be written past which no more commands are taken and the socket is not
/// read (a peer that does not read must not make this end buffer without bound).
pub const MAX_QUEUED_WRITE: usize = 1024 * 1024;

/// Who waits for the reply of a W-bit primary: the protocol keeps it with the transaction.
type Waiter = oneshot::Sender<Result<Message, LinkError>>;

/// The protocol of a session: each open transaction carries its waiter, if anyone waits.
type Proto = Protocol<Option<Waiter>>;

struct Session {
    linktests: HashMap<u32, oneshot::Sender<Result<(), LinkError>>>,
    separating: Vec<oneshot::Sender<()>>,
    /// Received messages the engine's full queue could not take yet, in order. The socket is
    /// not read while any wait, so this holds at most what one read brought.
    backlog: Backlog,
    selected_once: bool,
    shutdown: bool,
}

/// Lets the other tasks that are ready run once, then continues. Unlike
/// `tokio::task::yield_now` it does not wait for a poll of the I/O driver (a syscall).
async fn yield_to_others() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

impl Session {
    /// Handles the commands already queued (at most `COMMAND_BATCH`) without waiting, while
    /// fewer than [`MAX_QUEUED_WRITE`] bytes wait to be written (`waiting` of them already
    /// did before); returns whether there were any.
    fn take_commands(
        &mut self,
        proto: &mut Proto,
        task: &mut LinkTask,
        settings: &Settings,
        waiting: usize,
    ) -> bool {
        let mut any = false;
        for _ in 0..COMMAND_BATCH {
            if waiting + proto.pending_transmit() >= MAX_QUEUED_WRITE {
                break;
            }
            match task.commands.try_recv() {
                Ok(c) => {
                    self.command(c, proto, task, settings);
                    any = true;
                }
                Err(_) => break,
            }
        }
        any
    }

    fn command(
        &mut self,
        command: Command,
        proto: &mut Proto,
        task: &mut LinkTask,
        settings: &Settings,
    ) {
        match command {
            Command::Send {
                mut message,
                reply,
                sent,
            } => {
                message.device_id = settings.device_id;
                let sf = message.stream_function();
                let result =
                    if proto.state() == State::Selected && !task.unanswered.may_send(&message) {
                        Err(LinkError::Invalid(unanswered_refusal(&message)))
                    } else {
                        match proto.send_with(message, reply, now()) {
                            Ok(system_bytes) => Ok(system_bytes),
                            Err(protocol::SendError::NotSelected(state)) => {
                                Err(LinkError::NotReady(link_state(state)))
                            }
                            Err(e) => Err(LinkError::Invalid(e.to_string())),
                        }
                    };
                match (sent, result) {
                    (Some(sent), result) => {
                        let _ = sent.send(result);
                    }
                    (None, Ok(_)) => {}
                    (None, Err(e)) => {
                        debug!(endpoint = %settings.name, %sf, "not sent: {e}");
                    }
                }
            }
            Command::Linktest { done } => match proto.linktest(now()) {
                Ok(sb) => {
                    self.linktests.insert(sb, done);
                }
                Err(_) => {
                    let _ = done.send(Err(LinkError::NotReady(link_state(proto.state()))));
                }
            },
            Command::Separate { done } => {
                self.separating.push(done);
                proto.separate();
            }
            Command::Shutdown { done } => {
                self.separating.push(done);
                self.shutdown = true;
                proto.separate();
            }
        }
    }

    /// Handles queued protocol events; returns the close reason when the session is over.
    fn drain_events(
        &mut self,
        proto: &mut Proto,
        task: &mut LinkTask,
        settings: &Settings,
    ) -> Option<CloseReason> {
        let name = settings.name.as_str();
        while let Some(event) = proto.poll_event() {
            match event {
                Event::State(state) => {
                    info!(endpoint = %name, ?state, "HSMS state");
                    if state == State::Selected {
                        self.selected_once = true;
                        task.set_problem(None);
                    }
                    task.set_state(link_state(state));
                }
                Event::Reply(message, waiter) => {
                    if let Some(waiter) = waiter {
                        task.deliver_reply(waiter, message);
                    }
                }
                Event::ReplyTimeout {
                    system_bytes,
                    stream_function,
                    context,
                } => {
                    warn!(endpoint = %name, %stream_function, system_bytes = format_args!("0x{system_bytes:08x}"), "T3 reply timeout");
                    if let Some(waiter) = context {
                        let _ = waiter.send(Err(LinkError::Timeout {
                            stream_function,
                            system_bytes,
                            t3: settings.protocol.t3,
                        }));
                    }
                }
                Event::TransactionFailed {
                    system_bytes,
                    stream_function,
                    reason,
                    context,
                } => {
                    let Some(waiter) = context else { continue };
                    let _ = waiter.send(Err(match reason {
                        TransactionFailure::Rejected(reason) => LinkError::Rejected {
                            stream_function,
                            system_bytes,
                            reason,
                        },
                        TransactionFailure::StreamNine(message) => LinkError::StreamNine {
                            stream_function,
                            system_bytes,
                            function: message.function,
                            meaning: stream_nine_meaning(message.function),
                            message,
                        },
                        TransactionFailure::Malformed(error) => LinkError::MalformedReply {
                            stream_function,
                            system_bytes,
                            error,
                        },
                        TransactionFailure::ConnectionClosed => LinkError::ConnectionLost {
                            stream_function,
                            system_bytes,
                        },
                    }));
                }
                Event::Received(message) => {
                    task.unanswered.received(&message);
                    self.backlog.deliver(Received::Message(message), task);
                }
                Event::Malformed { header, error } => {
                    // The engine logs it with what it does about it (S9F7).
                    debug!(endpoint = %name, stream = header.stream(), function = header.function(), %error, "malformed message");
                    let sf = crate::secs2::StreamFunction {
                        stream: header.stream(),
                        function: header.function(),
                    };
                    self.backlog.deliver(
                        Received::Malformed {
                            header: header.to_bytes(),
                            stream_function: sf,
                            w_bit: header.w_bit(),
                            device_id: header.device_id(),
                            system_bytes: header.system_bytes,
                            error,
                        },
                        task,
                    );
                }
                Event::LinktestOk { system_bytes } => {
                    if let Some(done) = self.linktests.remove(&system_bytes) {
                        let _ = done.send(Ok(()));
                    }
                }
                Event::PeerRejected {
                    system_bytes,
                    reason,
                    byte2,
                } => {
                    warn!(endpoint = %name, system_bytes = format_args!("0x{system_bytes:08x}"), "peer sent Reject.req: {}", protocol::reject_reason::describe(reason, byte2));
                }
                Event::Warning(text) => warn!(endpoint = %name, "{text}"),
                Event::Closed(reason) => {
                    for (_, done) in self.linktests.drain() {
                        let _ = done.send(Err(LinkError::NotReady(LinkState::Disconnected)));
                    }
                    return Some(reason);
                }
            }
        }
        None
    }
}
