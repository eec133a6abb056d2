//! The tokio shell around [`Protocol`]: owns the line (a serial port, or a TCP stream that
//! carries SECS-I bytes), the clock and the reopen loop, and serves a [`Link`].
//!
//! - Serial: open the port with its settings; when it cannot be opened, or vanishes, wait and
//!   open it again (the wait doubles on each failure up to `reopen_max`), never a busy loop.
//! - TCP connect: connect to the address, and again after the connection ends.
//! - TCP listen: accept one peer at a time; another one is refused (closed) while one is
//!   connected.
//!
//! The link communicates ([`LinkState::Selected`]) while the line is open: SECS-I has no
//! selection. Every loss of the line is one state change to [`LinkState::Disconnected`],
//! logged once with its reason.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::protocol::{self, Event, Protocol, TransactionFailure};
use crate::link::{
    self, Backlog, Command, Endpoint, LinkError, LinkState, LinkTask, Received, RepeatedWarning,
    Unanswered, stream_nine_meaning, unanswered_refusal, with_repeats,
};
use crate::peers::{Allowlist, Refusals, refused_text};
use crate::secs2::{Item, Message, StreamFunction};

/// Parity of a serial line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    None,
    Odd,
    Even,
}

/// Flow control of a serial line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowControl {
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// A serial port and its character format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialSettings {
    /// The device: `/dev/ttyS0`, `/dev/ttyUSB0`, a pty, `COM3`.
    pub path: String,
    /// Baud rate (SECS-I: usually 9600 or 19200).
    pub baud_rate: u32,
    /// Data bits per character, 5 to 8 (SECS-I: 8).
    pub data_bits: u8,
    pub parity: Parity,
    /// Stop bits, 1 or 2.
    pub stop_bits: u8,
    pub flow_control: FlowControl,
}

impl SerialSettings {
    /// `path` at `baud_rate`, 8 data bits, no parity, 1 stop bit, no flow control.
    pub fn new(path: impl Into<String>, baud_rate: u32) -> Self {
        SerialSettings {
            path: path.into(),
            baud_rate,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            flow_control: FlowControl::None,
        }
    }
}

impl fmt::Display for SerialSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parity = match self.parity {
            Parity::None => 'N',
            Parity::Odd => 'O',
            Parity::Even => 'E',
        };
        write!(
            f,
            "{} {} {}{}{}",
            self.path, self.baud_rate, self.data_bits, parity, self.stop_bits
        )?;
        match self.flow_control {
            FlowControl::None => Ok(()),
            FlowControl::Software => f.write_str(" XON/XOFF"),
            FlowControl::Hardware => f.write_str(" RTS/CTS"),
        }
    }
}

/// What carries the SECS-I bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// A serial port.
    Serial(SerialSettings),
    /// A TCP connection this end makes to the address.
    TcpConnect(String),
    /// A TCP connection this end accepts on the address (port 0 picks a free port).
    TcpListen(String),
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Serial(s) => write!(f, "serial {s}"),
            Line::TcpConnect(a) => write!(f, "TCP to {a}"),
            Line::TcpListen(a) => write!(f, "TCP on {a}"),
        }
    }
}

/// Settings of one SECS-I endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub line: Line,
    /// Device ID, role, timers and limits.
    pub protocol: protocol::Config,
    /// Name used in logs.
    pub name: String,
    /// The first wait before opening the line again after it failed or closed.
    pub reopen_min: Duration,
    /// Longest wait between attempts after repeated failures.
    pub reopen_max: Duration,
    /// Over TCP: the peers this end accepts connections from and keeps connections to (every
    /// one by default). Another peer is closed before any byte is read or written.
    pub allow: Allowlist,
}

impl Settings {
    /// Settings with E4's default timers for `line`.
    pub fn new(line: Line, protocol: protocol::Config) -> Self {
        Settings {
            line,
            protocol,
            name: "secs1".into(),
            reopen_min: Duration::from_secs(1),
            reopen_max: Duration::from_secs(30),
            allow: Allowlist::everyone(),
        }
    }
}

/// Starts a SECS-I endpoint on the current tokio runtime. A TCP listening socket is bound
/// before this returns, so a port in use is reported here; a serial port that cannot be
/// opened yet is retried by the endpoint (its [`Link::last_problem`] says why).
///
/// [`Link::last_problem`]: crate::link::Link::last_problem
pub async fn start(settings: Settings) -> std::io::Result<Endpoint> {
    let listener = match &settings.line {
        Line::TcpListen(addr) => Some(TcpListener::bind(addr).await?),
        _ => None,
    };
    let local_addr = match &listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let (link, incoming, task) = link::channel();
    tokio::spawn(run(settings, listener, task));
    Ok(Endpoint {
        link,
        incoming,
        local_addr,
    })
}

/// A byte stream SECS-I runs on.
trait ByteLine: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteLine for T {}

type BoxedLine = Pin<Box<dyn ByteLine>>;

/// What ended a wait for the line.
enum Opened {
    Line(BoxedLine, String),
    Failed(String),
    Shutdown,
}

async fn run(settings: Settings, listener: Option<TcpListener>, mut task: LinkTask) {
    let mut backoff = settings.reopen_min;
    // The same failure again is logged only every minute, with a count.
    let mut failures = RepeatedWarning::new(Duration::from_secs(60));
    let mut strangers = Refusals::new(Duration::from_secs(60));
    loop {
        let opened = match &settings.line {
            Line::Serial(serial) => open_serial(serial),
            Line::TcpConnect(addr) => connect(addr, &settings.allow, &mut task).await,
            Line::TcpListen(_) => match &listener {
                Some(l) => accept(l, &settings, &mut strangers, &mut task).await,
                None => Opened::Shutdown,
            },
        };
        match opened {
            Opened::Shutdown => return,
            Opened::Failed(why) => {
                match failures.note(&why, std::time::Instant::now()) {
                    Some(held_back) => {
                        warn!(endpoint = %settings.name, line = %settings.line, "{}; trying again", with_repeats(&why, held_back));
                    }
                    None => debug!(endpoint = %settings.name, "{why}"),
                }
                task.set_problem(Some(why));
            }
            Opened::Line(line, peer) => {
                failures.clear();
                info!(endpoint = %settings.name, line = %settings.line, %peer, "SECS-I line open");
                let (reason, shutdown) = session(
                    line,
                    &settings,
                    listener.as_ref(),
                    &mut strangers,
                    &mut task,
                )
                .await;
                if matches!(reason, Closed::Io(_)) {
                    warn!(endpoint = %settings.name, line = %settings.line, %reason, "SECS-I line closed");
                } else {
                    info!(endpoint = %settings.name, line = %settings.line, %reason, "SECS-I line closed");
                }
                task.set_problem(Some(format!(
                    "SECS-I line {} closed: {reason}",
                    settings.line
                )));
                if shutdown {
                    return;
                }
                if reason.was_open_long() {
                    backoff = settings.reopen_min;
                }
                if matches!(settings.line, Line::TcpListen(_)) {
                    continue;
                }
            }
        }
        if !task.idle(backoff).await {
            return;
        }
        backoff = (backoff * 2).min(settings.reopen_max.max(settings.reopen_min));
    }
}

fn open_serial(serial: &SerialSettings) -> Opened {
    use tokio_serial::SerialPortBuilderExt;
    let data_bits = match serial.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let parity = match serial.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Odd => tokio_serial::Parity::Odd,
        Parity::Even => tokio_serial::Parity::Even,
    };
    let stop_bits = match serial.stop_bits {
        2 => tokio_serial::StopBits::Two,
        _ => tokio_serial::StopBits::One,
    };
    let flow_control = match serial.flow_control {
        FlowControl::None => tokio_serial::FlowControl::None,
        FlowControl::Software => tokio_serial::FlowControl::Software,
        FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
    };
    match tokio_serial::new(serial.path.as_str(), serial.baud_rate)
        .data_bits(data_bits)
        .parity(parity)
        .stop_bits(stop_bits)
        .flow_control(flow_control)
        .open_native_async()
    {
        Ok(port) => Opened::Line(Box::pin(port), serial.path.clone()),
        Err(e) => Opened::Failed(format!("cannot open serial port {}: {e}", serial.path)),
    }
}

async fn connect(addr: &str, allow: &Allowlist, task: &mut LinkTask) -> Opened {
    let attempt = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr));
    tokio::pin!(attempt);
    loop {
        tokio::select! {
            result = &mut attempt => return match result {
                Ok(Ok(stream)) => match stream.peer_addr() {
                    Ok(peer) if allow.permits(peer.ip()) => {
                        let _ = stream.set_nodelay(true);
                        Opened::Line(Box::pin(stream), peer.to_string())
                    }
                    peer => {
                        // The address resolved to a peer outside the list: closed unused.
                        drop(stream);
                        let peer = peer.map_or_else(|_| "?".into(), |p| p.ip().to_canonical().to_string());
                        Opened::Failed(format!(
                            "connected to {addr} ({peer}) and closed it: {peer} is not in the allow list {allow}"
                        ))
                    }
                },
                Ok(Err(e)) => Opened::Failed(format!("cannot connect to {addr}: {e}")),
                Err(_) => Opened::Failed(format!("cannot connect to {addr}: timed out")),
            },
            command = task.commands.recv() => match command {
                Some(c) => if !link::refuse_command(c, LinkState::Disconnected) { return Opened::Shutdown },
                None => return Opened::Shutdown,
            },
        }
    }
}

async fn accept(
    listener: &TcpListener,
    settings: &Settings,
    strangers: &mut Refusals,
    task: &mut LinkTask,
) -> Opened {
    loop {
        tokio::select! {
            result = listener.accept() => match result {
                Ok((stream, peer)) if settings.allow.permits(peer.ip()) => {
                    let _ = stream.set_nodelay(true);
                    return Opened::Line(Box::pin(stream), peer.to_string());
                }
                Ok((stream, peer)) => refuse_stranger(stream, peer, settings, strangers),
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    // Out of file descriptors and similar: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            command = task.commands.recv() => match command {
                Some(c) => if !link::refuse_command(c, LinkState::Disconnected) { return Opened::Shutdown },
                None => return Opened::Shutdown,
            },
        }
    }
}

/// Why a line was closed.
#[derive(Debug)]
enum Closed {
    /// The peer closed the TCP connection, or the port reported end of file.
    ByPeer,
    /// Reading or writing failed (a serial adapter unplugged, a reset connection).
    Io(String),
    /// This end closed it (separate, shutdown).
    Local,
}

impl Closed {
    /// Whether the next open may start again from the shortest wait.
    fn was_open_long(&self) -> bool {
        !matches!(self, Closed::Io(_))
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Closed::ByPeer => f.write_str("the peer closed the line"),
            Closed::Io(e) => write!(f, "line error: {e}"),
            Closed::Local => f.write_str("closed by this end"),
        }
    }
}

/// Messages waiting in the protocol's send queue past which no more commands are taken:
/// senders then wait on the link's bounded command queue (back-pressure to the engine).
pub const MAX_QUEUED_MESSAGES: usize = 64;

/// Bytes of messages waiting in the protocol's send queue past which no more commands are
/// taken either (one message may pass it), as for HSMS.
pub const MAX_QUEUED_BYTES: usize = 1024 * 1024;

/// Who waits for the reply of a W-bit primary: the protocol keeps it with the transaction.
type Waiter = oneshot::Sender<Result<Message, LinkError>>;

/// The protocol of a session: each open transaction carries its waiter, if anyone waits.
type Proto = Protocol<Option<Waiter>>;

/// The driver's clock: tokio's, so that tests can run with paused time.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// One open line. Returns why it closed and whether every link handle is gone.
///
/// The loop never waits for its users: received messages go to the link's bounded incoming
/// queue with `try_send`, and when it is full they wait in a backlog while the protocol does
/// not answer the peer's ENQ (the receiver is not ready: E4 back-pressure). Commands are
/// taken while fewer than [`MAX_QUEUED_MESSAGES`] and [`MAX_QUEUED_BYTES`] wait to be sent.
/// The timers (T1, T2, T3, T4) fire whatever the queues hold.
async fn session(
    line: BoxedLine,
    settings: &Settings,
    listener: Option<&TcpListener>,
    strangers: &mut Refusals,
    task: &mut LinkTask,
) -> (Closed, bool) {
    let (mut rd, mut wr) = tokio::io::split(line);
    let mut proto: Proto = Protocol::with_context(settings.protocol.clone());
    let mut backlog = Backlog::default();
    let mut separating: Vec<oneshot::Sender<()>> = Vec::new();
    let mut shutdown = false;
    let mut rbuf = vec![0u8; 4096];
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut written = 0usize;
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<tokio::time::Instant> = None;
    let incoming = task.incoming.clone();
    let incoming_room = task.incoming_room();
    task.set_problem(None);
    task.set_state(LinkState::Selected);
    let reason = loop {
        drain_events(&mut proto, &mut backlog, task, settings);
        if written == out.len() {
            out.clear();
            written = 0;
        }
        proto.take_transmit(&mut out);
        let incoming_full = task.incoming_full();
        proto.hold_input(!backlog.is_empty() || incoming_full, now());
        if let Some(deadline) = proto.poll_timeout().map(tokio::time::Instant::from_std)
            && armed.is_none_or(|a| deadline < a)
        {
            timer.as_mut().reset(deadline);
            armed = Some(deadline);
        }
        let waiting = proto.queued_bytes();
        task.set_unwritten(waiting + (out.len() - written));
        let take_commands =
            proto.queued_messages() < MAX_QUEUED_MESSAGES && waiting < MAX_QUEUED_BYTES;
        tokio::select! {
            result = rd.read(&mut rbuf) => match result {
                Ok(0) => break Closed::ByPeer,
                Ok(n) => proto.handle_input(&rbuf[..n], now()),
                Err(e) => break Closed::Io(e.to_string()),
            },
            // The engine took enough from a full incoming queue: answer ENQ again.
            _ = incoming_room.wait(), if incoming_full => {}
            permit = incoming.reserve(), if !backlog.is_empty() => match permit {
                Ok(permit) => backlog.send_with(permit, task),
                // Nobody takes received messages any more: nothing to keep them for.
                Err(_) => backlog.clear(),
            },
            result = wr.write(&out[written..]), if written < out.len() => match result {
                Ok(n) => written += n,
                Err(e) => break Closed::Io(e.to_string()),
            },
            command = task.commands.recv(), if take_commands => match command {
                Some(Command::Separate { done }) => {
                    separating.push(done);
                    break Closed::Local;
                }
                Some(Command::Shutdown { done }) => {
                    separating.push(done);
                    shutdown = true;
                    break Closed::Local;
                }
                Some(c) => handle_command(c, &mut proto, &mut task.unanswered, settings),
                None => {
                    shutdown = true;
                    break Closed::Local;
                }
            },
            _ = &mut timer, if armed.is_some() => {
                armed = None;
                proto.handle_timeout(now());
            }
            extra = accept_extra(listener) => {
                if let Ok((extra, addr)) = extra {
                    if settings.allow.permits(addr.ip()) {
                        warn!(endpoint = %settings.name, %addr, "second SECS-I connection refused: a peer is already connected");
                        drop(extra);
                    } else {
                        refuse_stranger(extra, addr, settings, strangers);
                    }
                }
            }
        }
    };
    // Whatever is being written (an ACK, the end of a block) goes out, bounded by T2.
    if written < out.len() {
        let _ = tokio::time::timeout(settings.protocol.t2, wr.write_all(&out[written..])).await;
    }
    let _ = wr.shutdown().await;
    proto.line_closed();
    task.set_unwritten(0);
    task.unanswered.connection_ended();
    drain_events(&mut proto, &mut backlog, task, settings);
    for done in separating {
        let _ = done.send(());
    }
    // Messages already received are handed on in order; the engine may still log them.
    backlog.hand_over(task).await;
    // Why, before the state says so: whoever sees the state change finds the reason.
    task.set_problem(Some(format!(
        "SECS-I line {} closed: {reason}",
        settings.line
    )));
    task.set_state(LinkState::Disconnected);
    (reason, shutdown)
}

/// Closes a connection from a peer outside the allow list before any byte, and logs it at
/// most once a minute per address.
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

fn handle_command(
    command: Command,
    proto: &mut Proto,
    unanswered: &mut Unanswered,
    settings: &Settings,
) {
    match command {
        Command::Send {
            mut message,
            reply,
            sent,
        } => {
            message.device_id = settings.protocol.device_id;
            let sf = message.stream_function();
            let result = if unanswered.may_send(&message) {
                proto
                    .send_with(message, reply, now())
                    .map_err(|e| LinkError::Invalid(e.to_string()))
            } else {
                Err(LinkError::Invalid(unanswered_refusal(&message)))
            };
            match (sent, result) {
                (Some(sent), result) => {
                    let _ = sent.send(result);
                }
                (None, Ok(_)) => {}
                (None, Err(e)) => debug!(endpoint = %settings.name, %sf, "not sent: {e}"),
            }
        }
        Command::Linktest { done } => {
            let _ = done.send(Err(LinkError::Invalid(
                "SECS-I has no link test; send S1F1 W (Are You There) instead".into(),
            )));
        }
        // Handled by the session loop.
        Command::Separate { done } | Command::Shutdown { done } => {
            let _ = done.send(());
        }
    }
}

/// The stream 9 message an equipment sends about a received message header.
fn stream_nine(function: u8, header: [u8; 10], device_id: u16) -> Message {
    let mut message = Message::new(
        StreamFunction {
            stream: 9,
            function,
        },
        false,
        Some(Item::B(header.to_vec())),
    );
    message.device_id = device_id;
    message
}

/// Handles queued protocol events.
fn drain_events(
    proto: &mut Proto,
    backlog: &mut Backlog,
    task: &mut LinkTask,
    settings: &Settings,
) {
    let name = settings.name.as_str();
    let equipment = settings.protocol.equipment;
    let device_id = settings.protocol.device_id;
    // Stream 9 messages the equipment owes the host, sent once the events are handled.
    let mut owed = Vec::new();
    while let Some(event) = proto.poll_event() {
        match event {
            Event::Received(message) => {
                task.unanswered.received(&message);
                backlog.deliver(Received::Message(message), task);
            }
            Event::Malformed {
                header,
                stream_function,
                w_bit,
                device_id,
                system_bytes,
                error,
            } => {
                // The engine logs it with what it does about it (S9F7).
                debug!(endpoint = %name, %stream_function, %error, "malformed message");
                backlog.deliver(
                    Received::Malformed {
                        header,
                        stream_function,
                        w_bit,
                        device_id,
                        system_bytes,
                        error,
                    },
                    task,
                );
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
                    TransactionFailure::SendFailed(reason) => LinkError::SendFailed {
                        stream_function,
                        system_bytes,
                        reason,
                    },
                    TransactionFailure::ConnectionClosed => LinkError::ConnectionLost {
                        stream_function,
                        system_bytes,
                    },
                }));
            }
            Event::SendFailed {
                system_bytes,
                stream_function,
                error,
            } => {
                warn!(endpoint = %name, %stream_function, system_bytes = format_args!("0x{system_bytes:08x}"), "not sent: {error}");
            }
            Event::InterBlockTimeout {
                header,
                stream_function,
                system_bytes,
            } => {
                warn!(endpoint = %name, %stream_function, system_bytes = format_args!("0x{system_bytes:08x}"), "T4 inter-block timeout: the partial message is discarded");
                if equipment {
                    owed.push(stream_nine(9, header, device_id));
                }
            }
            Event::UnknownDevice { header } => {
                let got = u16::from_be_bytes([header[0] & 0x7f, header[1]]);
                warn!(endpoint = %name, device_id = got, expected = device_id, "message for another device ID discarded");
                if equipment {
                    owed.push(stream_nine(1, header, device_id));
                }
            }
            Event::Warning(text) => warn!(endpoint = %name, "{text}"),
        }
    }
    for message in owed {
        if let Err(e) = proto.send(message, now()) {
            warn!(endpoint = %name, "cannot send a stream 9 error: {e}");
        }
    }
}
