//! Transactions by TxID: every message a script sends and every primary the equipment sends
//! gets one. A sent request's reply is kept for `getResponse`, also when it arrives after the
//! script stopped waiting, for the retention time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::link::LinkError;
use crate::script::guard::Cancel;
use crate::secs2::{Message, StreamFunction};

/// Where a sent request stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyState {
    /// Waiting for the reply.
    Pending,
    /// The reply (an SxF0 abort and an S9Fx answer count as replies).
    Replied(Message),
    /// Sent without W-bit: no reply will come.
    NoReplyExpected,
    /// No reply will come: T3 expired, the connection was lost, the peer rejected it.
    Failed(String),
}

/// One transaction.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A message a script sent.
    Sent {
        equipment: String,
        stream_function: StreamFunction,
        state: ReplyState,
        since: Instant,
    },
    /// A primary the equipment sent.
    Received {
        equipment: String,
        stream_function: StreamFunction,
        system_bytes: u32,
        /// Whether the equipment wants a reply (W-bit).
        w_bit: bool,
        replied: bool,
        since: Instant,
    },
}

impl Entry {
    fn since(&self) -> Instant {
        match self {
            Entry::Sent { since, .. } | Entry::Received { since, .. } => *since,
        }
    }

    fn equipment(&self) -> &str {
        match self {
            Entry::Sent { equipment, .. } | Entry::Received { equipment, .. } => equipment,
        }
    }
}

/// The entries and the order they were made in.
#[derive(Default)]
struct Table {
    /// Last TxID given out.
    next: u32,
    entries: HashMap<u32, Entry>,
    /// (time, TxID) oldest first, for pruning without scanning the table.
    order: VecDeque<(Instant, u32)>,
}

/// The TxID table.
pub struct Transactions {
    entries: Mutex<Table>,
    changed: Condvar,
    retention: Duration,
}

impl Transactions {
    /// An empty table keeping finished transactions for `retention`.
    pub fn new(retention: Duration) -> Self {
        Transactions {
            entries: Mutex::new(Table::default()),
            changed: Condvar::new(),
            retention,
        }
    }

    fn insert(&self, entry: Entry) -> u32 {
        let Ok(mut guard) = self.entries.lock() else {
            return 0;
        };
        let table = &mut *guard;
        let now = Instant::now();
        // Forget transactions older than the retention, oldest first. A pending request is
        // refreshed when it completes (and T3 bounds how long it stays pending): one whose
        // time moved on goes to the back of the order instead.
        while let Some(&(at, txid)) = table.order.front() {
            if now.duration_since(at) < self.retention {
                break;
            }
            table.order.pop_front();
            match table.entries.get(&txid).map(Entry::since) {
                Some(since) if now.duration_since(since) < self.retention => {
                    table.order.push_back((since, txid));
                }
                Some(_) => {
                    table.entries.remove(&txid);
                }
                None => {}
            }
        }
        loop {
            table.next = table.next.wrapping_add(1).max(1);
            if !table.entries.contains_key(&table.next) {
                break;
            }
        }
        let txid = table.next;
        table.entries.insert(txid, entry);
        table.order.push_back((now, txid));
        txid
    }

    /// A new transaction for a message a script sends.
    pub fn sent(&self, equipment: &str, stream_function: StreamFunction, state: ReplyState) -> u32 {
        self.insert(Entry::Sent {
            equipment: equipment.to_string(),
            stream_function,
            state,
            since: Instant::now(),
        })
    }

    /// A new transaction for a primary received from the equipment.
    pub fn received(&self, equipment: &str, message: &Message) -> u32 {
        self.insert(Entry::Received {
            equipment: equipment.to_string(),
            stream_function: message.stream_function(),
            system_bytes: message.system_bytes,
            w_bit: message.w_bit,
            replied: false,
            since: Instant::now(),
        })
    }

    /// Records how a sent request ended.
    pub fn complete(&self, txid: u32, result: Result<Message, LinkError>) {
        let state = match result {
            Ok(reply) => ReplyState::Replied(reply),
            Err(LinkError::StreamNine { message, .. }) => ReplyState::Replied(*message),
            Err(e) => ReplyState::Failed(e.to_string()),
        };
        if let Ok(mut guard) = self.entries.lock()
            && let Some(Entry::Sent {
                state: s, since, ..
            }) = guard.entries.get_mut(&txid)
        {
            *s = state;
            *since = Instant::now();
        }
        self.changed.notify_all();
    }

    /// Marks a received primary as answered; returns false if it already was (or is unknown).
    pub fn mark_replied(&self, txid: u32) -> bool {
        let Ok(mut guard) = self.entries.lock() else {
            return false;
        };
        match guard.entries.get_mut(&txid) {
            Some(Entry::Received { replied, .. }) if !*replied => {
                *replied = true;
                true
            }
            _ => false,
        }
    }

    /// Whether a received primary has been answered.
    pub fn is_replied(&self, txid: u32) -> bool {
        self.entries.lock().is_ok_and(|g| {
            matches!(
                g.entries.get(&txid),
                Some(Entry::Received { replied: true, .. })
            )
        })
    }

    /// The entry of a TxID.
    pub fn get(&self, txid: u32) -> Option<Entry> {
        self.entries
            .lock()
            .ok()
            .and_then(|g| g.entries.get(&txid).cloned())
    }

    /// Waits up to `timeout` for the reply of a sent request. `Ok(None)` when there is none by
    /// then (still pending, no reply expected, or failed), and for an unknown TxID (logged as
    /// a warning, as Ignition's `getResponse` answers `None`); an error for a TxID that
    /// belongs to other equipment or names a received message. A `cancel` (the calling
    /// handler's, set when it reaches its time limit) ends the wait early with `Ok(None)`.
    pub fn wait_reply(
        self: &Arc<Self>,
        txid: u32,
        equipment: &str,
        timeout: Duration,
        cancel: Option<&Arc<Cancel>>,
    ) -> Result<Option<Message>, String> {
        let deadline = Instant::now() + timeout;
        let _waker = cancel.map(|c| {
            let me = Arc::downgrade(self);
            c.on_cancel(move || {
                if let Some(me) = me.upgrade() {
                    // Under the table's lock, so a waiter between its check and its wait
                    // cannot miss it.
                    let _guard = me.entries.lock();
                    me.changed.notify_all();
                }
            })
        });
        let mut guard = self
            .entries
            .lock()
            .map_err(|_| "transaction table unavailable".to_string())?;
        loop {
            match guard.entries.get(&txid) {
                None => {
                    warn!(
                        equipment,
                        "getResponse: unknown transaction ID {txid} (never sent, or older than the retention time); returning None"
                    );
                    return Ok(None);
                }
                Some(e) if e.equipment() != equipment => {
                    return Err(format!(
                        "transaction {txid} belongs to equipment '{}', not '{equipment}'",
                        e.equipment()
                    ));
                }
                Some(Entry::Received { .. }) => {
                    return Err(format!(
                        "transaction {txid} is a message the equipment sent, not a request"
                    ));
                }
                Some(Entry::Sent { state, .. }) => match state {
                    ReplyState::Replied(m) => return Ok(Some(m.clone())),
                    ReplyState::NoReplyExpected | ReplyState::Failed(_) => return Ok(None),
                    ReplyState::Pending => {}
                },
            }
            let now = Instant::now();
            if now >= deadline || cancel.is_some_and(|c| c.is_cancelled()) {
                return Ok(None);
            }
            guard = self
                .changed
                .wait_timeout(guard, deadline - now)
                .map_err(|_| "transaction table unavailable".to_string())?
                .0;
        }
    }
}
