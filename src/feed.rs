//! The northbound feed: what the gateway hands on to systems beyond one machine (the MQTT
//! publisher in [`crate::north`]): the messages to publish and each equipment's status.
//!
//! It is a bounded queue. The gateway waits when it is full, which happens only while the
//! publisher's disk queue is slower than the equipment: the broker being away never holds the
//! gateway up, because the publisher then queues on disk.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::secs2::{Message, StreamFunction};
use crate::store::messages::Direction;

/// Events the feed's queue holds before the gateway waits.
pub const FEED_QUEUE: usize = 4096;

/// A message sent to or received from an equipment.
#[derive(Clone, Debug)]
pub struct FeedMessage {
    /// Milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    pub equipment: String,
    pub direction: Direction,
    pub common_id: String,
    pub txid: u32,
    /// The SDL definition it matched, if a named one.
    pub message_name: Option<String>,
    pub message: Arc<Message>,
}

/// What the gateway hands on.
#[derive(Clone, Debug)]
pub enum FeedEvent {
    Message(FeedMessage),
    /// An equipment's status changed ("Communicating", "Not Connected", "Disabled", ...).
    Status {
        time_ms: i64,
        equipment: String,
        status: String,
    },
}

/// Counters of the publisher at the other end (MQTT), for the web console and `/metrics`.
#[derive(Debug, Default)]
pub struct PublisherStats {
    /// Connected to the broker.
    pub connected: AtomicBool,
    /// Publishes acknowledged (QoS 1) or written (QoS 0).
    pub published: AtomicU64,
    /// Publishes waiting on disk.
    pub queued: AtomicU64,
    /// Bytes waiting on disk.
    pub queued_bytes: AtomicU64,
    /// Publishes deleted from the full forward queue.
    pub dropped: AtomicU64,
    /// Requests received on `.../request`.
    pub requests: AtomicU64,
    /// Connections to the broker made.
    pub connects: AtomicU64,
}

/// The gateway's end of the feed.
#[derive(Debug)]
pub struct Feed {
    tx: mpsc::Sender<FeedEvent>,
    stats: Arc<PublisherStats>,
    /// The configured messages (either direction); empty: the SDL decides.
    messages: HashSet<StreamFunction>,
    lost: AtomicU64,
}

impl Feed {
    /// A feed of `capacity` events publishing `messages` (empty: those the SDL marks
    /// `realtime` or `SQLTags`), and the publisher's end.
    pub fn new(capacity: usize, messages: &[StreamFunction]) -> (Feed, mpsc::Receiver<FeedEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Feed {
                tx,
                messages: messages.iter().copied().collect(),
                lost: AtomicU64::new(0),
                stats: Arc::default(),
            },
            rx,
        )
    }

    /// Whether a message is published: one of the configured messages, or, when none are
    /// configured, one the equipment sent that its SDL marks `realtime` or `SQLTags`
    /// (`marked` tells).
    pub fn wants(
        &self,
        sf: StreamFunction,
        direction: Direction,
        marked: impl FnOnce() -> bool,
    ) -> bool {
        if self.messages.is_empty() {
            direction == Direction::Received && marked()
        } else {
            self.messages.contains(&sf)
        }
    }

    /// Hands an event on, waiting while the queue is full.
    pub async fn send(&self, event: FeedEvent) {
        if self.tx.send(event).await.is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hands an event on from code that cannot wait (a status change under a lock): at once
    /// if there is room, else from a task that waits for room.
    pub fn send_soon(&self, event: FeedEvent) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    let tx = self.tx.clone();
                    handle.spawn(async move {
                        let _ = tx.send(event).await;
                    });
                } else {
                    let _ = self.tx.blocking_send(event);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The publisher's counters.
    pub fn stats(&self) -> Arc<PublisherStats> {
        self.stats.clone()
    }

    /// Events handed on after the publisher stopped (0 while it runs).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_messages_go_either_way_and_otherwise_the_sdl_decides() {
        let s6f11: StreamFunction = "S6F11".parse().unwrap();
        let s2f41: StreamFunction = "S2F41".parse().unwrap();
        let (feed, _rx) = Feed::new(4, &[]);
        assert!(feed.wants(s6f11, Direction::Received, || true));
        assert!(!feed.wants(s6f11, Direction::Received, || false));
        assert!(!feed.wants(s6f11, Direction::Sent, || true));
        let (feed, _rx) = Feed::new(4, &[s2f41]);
        assert!(feed.wants(s2f41, Direction::Sent, || false));
        assert!(!feed.wants(s6f11, Direction::Received, || true));
    }
}
