//! Spooling (E30 spooling capability): while communication is down, primaries of the streams
//! and functions the host chose with S2F43 are kept in a spool instead of being lost; S6F23
//! later transmits (RSDC 0) or purges (RSDC 1) them.
//!
//! The spool lives in a [`SpoolStore`]: [`MemorySpool`] for tests, a durable store (SQLite,
//! `crate::store::spool`) for the simulator, so spooled messages and the spool settings
//! survive a restart of the equipment process.
//!
//! Spool SVs: SpoolCountActual (messages in the spool now), SpoolCountTotal (messages spooled
//! since the spool was last activated, overwritten ones included), SpoolStartTime (when it
//! was activated), SpoolFullTime (when it last became full), SpoolState (1 inactive, 2
//! active, 3 full). The spool is activated by the first message put in it and deactivated
//! when it is emptied by transmission or purge.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use crate::secs2::{Message, StreamFunction};

/// A spool storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spool storage failed: {0}")]
pub struct SpoolError(pub String);

/// Where spooled messages are kept, each under a sequence number, in the order the equipment
/// produced them (`order`: a message that failed in flight is spooled after younger ones
/// but still goes out before them).
pub trait SpoolStore: Send {
    /// Stores a message (written durably before this returns); returns its sequence number.
    fn push(&mut self, message: &Message, order: u64) -> Result<u64, SpoolError>;
    /// One more than the highest `order` held (0 when empty): where a restarted equipment
    /// continues numbering.
    fn next_order(&self) -> Result<u64, SpoolError>;
    /// Messages held.
    fn len(&self) -> usize;
    /// True when no message is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Up to `n` of the oldest messages (lowest `order`), oldest first, with their sequence
    /// numbers.
    fn oldest(&self, n: usize) -> Result<Vec<(u64, Message)>, SpoolError>;
    /// Removes one message (once the host has it).
    fn remove(&mut self, seq: u64) -> Result<(), SpoolError>;
    /// Removes the oldest message (spool full with OverWriteSpool).
    fn remove_oldest(&mut self) -> Result<(), SpoolError>;
    /// Removes every message.
    fn purge(&mut self) -> Result<(), SpoolError>;
    /// The saved spool settings and counters ([`SpoolMeta`] as JSON), if any.
    fn load_meta(&self) -> Result<Option<String>, SpoolError>;
    /// Saves the spool settings and counters.
    fn save_meta(&mut self, meta: &str) -> Result<(), SpoolError>;
}

/// A spool in memory: lost with the process. For tests and throw-away equipment.
#[derive(Debug, Default)]
pub struct MemorySpool {
    next: u64,
    /// (order, seq, message), sorted by order then seq.
    messages: VecDeque<(u64, u64, Message)>,
    meta: Option<String>,
}

impl SpoolStore for MemorySpool {
    fn push(&mut self, message: &Message, order: u64) -> Result<u64, SpoolError> {
        self.next += 1;
        let at = self.messages.partition_point(|(o, _, _)| *o <= order);
        self.messages
            .insert(at, (order, self.next, message.clone()));
        Ok(self.next)
    }
    fn next_order(&self) -> Result<u64, SpoolError> {
        Ok(self
            .messages
            .iter()
            .map(|(o, _, _)| o + 1)
            .max()
            .unwrap_or(0))
    }
    fn len(&self) -> usize {
        self.messages.len()
    }
    fn oldest(&self, n: usize) -> Result<Vec<(u64, Message)>, SpoolError> {
        Ok(self
            .messages
            .iter()
            .take(n)
            .map(|(_, s, m)| (*s, m.clone()))
            .collect())
    }
    fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        self.messages.retain(|(_, s, _)| *s != seq);
        Ok(())
    }
    fn remove_oldest(&mut self) -> Result<(), SpoolError> {
        self.messages.pop_front();
        Ok(())
    }
    fn purge(&mut self) -> Result<(), SpoolError> {
        self.messages.clear();
        Ok(())
    }
    fn load_meta(&self) -> Result<Option<String>, SpoolError> {
        Ok(self.meta.clone())
    }
    fn save_meta(&mut self, meta: &str) -> Result<(), SpoolError> {
        self.meta = Some(meta.to_string());
        Ok(())
    }
}

/// Spool settings and counters that outlive the process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpoolMeta {
    /// Spooled streams (S2F43): stream -> functions, empty = every function of the stream.
    pub streams: BTreeMap<u8, BTreeSet<u8>>,
    /// SpoolCountTotal.
    pub total: u64,
    /// SpoolStartTime, in the Clock's text form; empty before the first activation.
    pub start_time: String,
    /// SpoolFullTime; empty if never full.
    pub full_time: String,
}

/// What became of a message offered to the spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// Spooled; `activated` when it was the first message (the spool was inactive).
    Spooled { activated: bool },
    /// Spool full and OverWriteSpool false: the message is lost.
    Discarded,
    /// The store failed: the message is lost (logged).
    Failed,
}

/// The spool: its store, settings, counters and the transmission in progress.
pub struct Spool {
    store: Box<dyn SpoolStore>,
    meta: SpoolMeta,
    /// Sequence numbers transmitted and not yet acknowledged.
    in_flight: BTreeSet<u64>,
    /// The production order given to the next spoolable message.
    next_order: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("len", &self.store.len())
            .field("meta", &self.meta)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl Spool {
    /// Opens the spool on `store`, with the saved settings if the store has them, else the
    /// configured `streams`.
    pub fn new(store: Box<dyn SpoolStore>, streams: BTreeMap<u8, BTreeSet<u8>>) -> Spool {
        let saved = match store.load_meta() {
            Ok(Some(text)) => match serde_json::from_str::<SpoolMeta>(&text) {
                Ok(meta) => Some(meta),
                Err(e) => {
                    warn!(error = %e, "saved spool settings unreadable; using the configured ones");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                error!(error = %e, "cannot read saved spool settings");
                None
            }
        };
        let meta = saved.unwrap_or(SpoolMeta {
            streams,
            ..SpoolMeta::default()
        });
        let next_order = store.next_order().unwrap_or_else(|e| {
            error!(error = %e, "cannot read the spool");
            0
        });
        Spool {
            store,
            meta,
            in_flight: BTreeSet::new(),
            next_order,
        }
    }

    /// A production order number for a message that may end up in the spool.
    pub fn take_order(&mut self) -> u64 {
        self.next_order += 1;
        self.next_order - 1
    }

    /// Settings and counters.
    pub fn meta(&self) -> &SpoolMeta {
        &self.meta
    }

    fn save(&mut self) {
        match serde_json::to_string(&self.meta) {
            Ok(text) => {
                if let Err(e) = self.store.save_meta(&text) {
                    error!(error = %e, "cannot save spool settings");
                }
            }
            Err(e) => error!(error = %e, "cannot encode spool settings"),
        }
    }

    /// Whether the host asked for this stream/function to be spooled.
    pub fn selected(&self, sf: StreamFunction) -> bool {
        match self.meta.streams.get(&sf.stream) {
            Some(functions) => functions.is_empty() || functions.contains(&sf.function),
            None => false,
        }
    }

    /// Replaces the spooled streams (S2F43 accepted).
    pub fn set_streams(&mut self, streams: BTreeMap<u8, BTreeSet<u8>>) {
        self.meta.streams = streams;
        self.save();
    }

    /// SpoolCountActual.
    pub fn count(&self) -> usize {
        self.store.len()
    }

    /// True while the spool holds or transmits messages (SPOOL ACTIVE).
    pub fn active(&self) -> bool {
        !self.store.is_empty() || !self.in_flight.is_empty()
    }

    /// SpoolState: 1 inactive, 2 active, 3 active and full.
    pub fn state_code(&self, capacity: usize) -> u8 {
        if !self.active() {
            1
        } else if self.store.len() >= capacity {
            3
        } else {
            2
        }
    }

    /// Puts a message (with its production order) in the spool. When full, drops the oldest if `overwrite`, else the new
    /// one. `now` is the Clock text for SpoolStartTime/SpoolFullTime.
    pub fn put(
        &mut self,
        message: &Message,
        order: u64,
        capacity: usize,
        overwrite: bool,
        now: &str,
    ) -> Put {
        let activated = !self.active();
        if activated {
            self.meta.total = 0;
            self.meta.start_time = now.to_string();
        }
        if self.store.len() >= capacity.max(1) {
            if !overwrite {
                warn!(sf = %message.stream_function(), "spool full: message discarded");
                return Put::Discarded;
            }
            if let Err(e) = self.store.remove_oldest() {
                error!(error = %e, "cannot overwrite the oldest spooled message");
                return Put::Failed;
            }
        }
        if let Err(e) = self.store.push(message, order) {
            error!(error = %e, sf = %message.stream_function(), "cannot spool message: it is lost");
            return Put::Failed;
        }
        self.meta.total += 1;
        if self.store.len() >= capacity.max(1) && self.meta.full_time.is_empty() {
            self.meta.full_time = now.to_string();
        }
        self.save();
        Put::Spooled { activated }
    }

    /// True while a transmission started by S6F23 awaits acknowledgements.
    pub fn transmitting(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Takes up to `max` (0 = all) of the oldest messages for transmission.
    pub fn start_transmit(&mut self, max: usize) -> Vec<(u64, Message)> {
        let n = if max == 0 { usize::MAX } else { max };
        match self.store.oldest(n) {
            Ok(batch) => {
                self.in_flight.extend(batch.iter().map(|(seq, _)| *seq));
                batch
            }
            Err(e) => {
                error!(error = %e, "cannot read the spool");
                Vec::new()
            }
        }
    }

    /// The host acknowledged spooled message `seq` (or it needed no reply): it leaves the
    /// spool. Returns true when that emptied the spool (deactivated).
    pub fn delivered(&mut self, seq: u64) -> bool {
        self.in_flight.remove(&seq);
        if let Err(e) = self.store.remove(seq) {
            error!(error = %e, seq, "cannot remove a delivered message from the spool");
        }
        self.finish_if_empty()
    }

    /// A transmitted message was not delivered: it stays in the spool for the next S6F23.
    pub fn undelivered(&mut self, seq: u64) {
        self.in_flight.remove(&seq);
    }

    /// Removes every spooled message (S6F23 RSDC 1).
    pub fn purge(&mut self) {
        if let Err(e) = self.store.purge() {
            error!(error = %e, "cannot purge the spool");
        }
        self.in_flight.clear();
        self.finish_if_empty();
    }

    fn finish_if_empty(&mut self) -> bool {
        if self.active() {
            return false;
        }
        self.meta.full_time.clear();
        self.save();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secs2::Item;

    fn msg(n: u32) -> Message {
        Message::new(
            StreamFunction {
                stream: 6,
                function: 11,
            },
            true,
            Some(Item::U4(vec![n])),
        )
    }

    #[test]
    fn fills_overwrites_transmits_and_purges() {
        let mut spool = Spool::new(Box::new(MemorySpool::default()), BTreeMap::new());
        assert_eq!(spool.state_code(2), 1);
        assert_eq!(
            spool.put(&msg(1), 1, 2, false, "t1"),
            Put::Spooled { activated: true }
        );
        assert_eq!(
            spool.put(&msg(2), 2, 2, false, "t2"),
            Put::Spooled { activated: false }
        );
        assert_eq!(spool.state_code(2), 3);
        assert_eq!(spool.meta().full_time, "t2");
        assert_eq!(spool.put(&msg(3), 3, 2, false, "t3"), Put::Discarded);
        assert_eq!(
            spool.put(&msg(4), 4, 2, true, "t4"),
            Put::Spooled { activated: false }
        );
        assert_eq!(spool.meta().total, 3);
        let batch = spool.start_transmit(1);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].1, msg(2));
        assert!(!spool.delivered(batch[0].0));
        let batch = spool.start_transmit(0);
        assert_eq!(batch[0].1, msg(4));
        assert!(spool.delivered(batch[0].0));
        assert_eq!(spool.state_code(2), 1);
        spool.put(&msg(5), 5, 2, false, "t5");
        spool.purge();
        // A message produced earlier goes out before younger ones spooled before it.
        spool.put(&msg(7), 7, 9, false, "t7");
        spool.put(&msg(6), 6, 9, false, "t6");
        let batch = spool.start_transmit(0);
        assert_eq!(batch[0].1, msg(6));
        assert_eq!(batch[1].1, msg(7));
        spool.purge();
        assert_eq!(spool.count(), 0);
        assert!(!spool.active());
    }
}
