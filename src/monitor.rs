//! What the web console and the metrics see of one connection (an equipment connection of
//! the gateway, or a simulator): counters, the status and since when, the last message, and a
//! live stream of its messages.
//!
//! A connection only adds to counters and offers each message to a bounded broadcast
//! channel; it never waits for a reader. A reader that falls behind (a slow browser) loses
//! the oldest messages of the stream and is told how many: the stream is sampled, the message
//! store keeps everything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::secs2::Message;

/// Messages the live stream holds for a reader that is behind before it loses the oldest.
pub const STREAM_CAPACITY: usize = 1024;

/// Which way a message went, seen from secsgate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    Sent,
    Received,
}

impl Way {
    pub fn as_str(self) -> &'static str {
        match self {
            Way::Sent => "sent",
            Way::Received => "received",
        }
    }
}

/// One message of the live stream.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub way: Way,
    /// The gateway's TxID (0 where there is none, as in a simulator).
    pub txid: u32,
    pub message: Arc<Message>,
}

/// The last message of a connection.
#[derive(Debug, Clone)]
pub struct Last {
    pub time_ms: i64,
    pub way: Way,
    pub stream: u8,
    pub function: u8,
}

/// A connection's counters and live stream.
#[derive(Debug)]
pub struct Monitor {
    sent: AtomicU64,
    received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    errors: AtomicU64,
    t3_timeouts: AtomicU64,
    connects: AtomicU64,
    state: Mutex<State>,
    stream: broadcast::Sender<Seen>,
}

#[derive(Debug)]
struct State {
    status: String,
    since: SystemTime,
    last: Option<Last>,
    last_error: Option<(i64, String)>,
}

/// The counters of a connection at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub sent: u64,
    pub received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub errors: u64,
    pub t3_timeouts: u64,
    /// Times the link came up (connected and selected) after the first.
    pub reconnects: u64,
}

/// Everything a [`Monitor`] knows at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub counts: Counts,
    pub status: String,
    pub since: SystemTime,
    pub last: Option<Last>,
    pub last_error: Option<(i64, String)>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The bytes a message takes on the wire (10-byte header and its body).
fn wire_len(message: &Message) -> u64 {
    10 + message.body.as_ref().map_or(0, |b| b.encoded_len()) as u64
}

impl Monitor {
    pub fn new(status: impl Into<String>) -> Monitor {
        Monitor {
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            t3_timeouts: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            state: Mutex::new(State {
                status: status.into(),
                since: SystemTime::now(),
                last: None,
                last_error: None,
            }),
            stream: broadcast::channel(STREAM_CAPACITY).0,
        }
    }

    /// Whether the live stream has readers (a message is worth sharing for them).
    pub fn streaming(&self) -> bool {
        self.stream.receiver_count() > 0
    }

    /// Counts a message and offers it to the live stream's readers, if there are any
    /// (`shared`: the message already in an `Arc`, saving a copy).
    pub fn message(&self, way: Way, message: &Message, txid: u32, shared: Option<&Arc<Message>>) {
        self.count(way, message);
        if self.streaming() {
            self.offer(
                way,
                shared.cloned().unwrap_or_else(|| Arc::new(message.clone())),
                txid,
            );
        }
    }

    /// Counts a message (and makes it the last one).
    pub fn count(&self, way: Way, message: &Message) {
        let bytes = wire_len(message);
        match way {
            Way::Sent => {
                self.sent.fetch_add(1, Ordering::Relaxed);
                self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
            }
            Way::Received => {
                self.received.fetch_add(1, Ordering::Relaxed);
                self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
            }
        }
        if let Ok(mut s) = self.state.lock() {
            s.last = Some(Last {
                time_ms: now_ms(),
                way,
                stream: message.stream,
                function: message.function,
            });
        }
    }

    /// Offers a message to the live stream's readers. Never blocks: a full stream drops its
    /// oldest message for the readers behind.
    pub fn offer(&self, way: Way, message: Arc<Message>, txid: u32) {
        let _ = self.stream.send(Seen {
            time_ms: now_ms(),
            way,
            txid,
            message,
        });
    }

    /// Counts a failure (validation, malformed message, timeout, rejection, lost link).
    pub fn error(&self, reason: impl Into<String>) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut s) = self.state.lock() {
            s.last_error = Some((now_ms(), reason.into()));
        }
    }

    /// Counts a request whose reply did not come within T3 (also an error).
    pub fn t3_timeout(&self, reason: impl Into<String>) {
        self.t3_timeouts.fetch_add(1, Ordering::Relaxed);
        self.error(reason);
    }

    /// The link came up (connected and, for HSMS, selected).
    pub fn link_up(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    /// The status changed.
    pub fn status(&self, status: impl Into<String>) {
        let status = status.into();
        if let Ok(mut s) = self.state.lock()
            && s.status != status
        {
            s.status = status;
            s.since = SystemTime::now();
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            t3_timeouts: self.t3_timeouts.load(Ordering::Relaxed),
            reconnects: self.connects.load(Ordering::Relaxed).saturating_sub(1),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let counts = self.counts();
        match self.state.lock() {
            Ok(s) => Snapshot {
                counts,
                status: s.status.clone(),
                since: s.since,
                last: s.last.clone(),
                last_error: s.last_error.clone(),
            },
            Err(_) => Snapshot {
                counts,
                status: String::new(),
                since: SystemTime::now(),
                last: None,
                last_error: None,
            },
        }
    }

    /// A reader of the live stream, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Seen> {
        self.stream.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secs2::{Item, StreamFunction};

    #[test]
    fn counts_and_streams_without_waiting_for_readers() {
        let m = Monitor::new("Not Connected");
        let msg = Arc::new(Message::new(
            StreamFunction::new(1, 1).unwrap(),
            true,
            Some(Item::ascii("A")),
        ));
        // No reader: counted, nothing kept.
        m.message(Way::Sent, &msg, 1, None);
        let mut rx = m.subscribe();
        for i in 0..(STREAM_CAPACITY as u32 + 10) {
            m.message(Way::Received, &msg, i, Some(&msg));
        }
        let c = m.counts();
        assert_eq!(c.sent, 1);
        assert_eq!(c.received, STREAM_CAPACITY as u64 + 10);
        assert_eq!(c.bytes_sent, 10 + 3);
        // The reader fell behind: it hears how many it lost, then the newest messages.
        match rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag, got {other:?}"),
        }
        assert_eq!(rx.try_recv().unwrap().txid, 10);
        m.link_up();
        m.link_up();
        m.t3_timeout("T3");
        let c = m.counts();
        assert_eq!((c.reconnects, c.t3_timeouts, c.errors), (1, 1, 1));
        m.status("Communicating");
        assert_eq!(m.snapshot().status, "Communicating");
        assert_eq!(m.snapshot().last.unwrap().way, Way::Received);
    }
}
