//! Store and forward: the publishes waiting for the broker, on disk, in order.
//!
//! One SQLite file (default `<project>/data/forward.sqlite`, WAL) with one table,
//! `forward (seq INTEGER PRIMARY KEY, topic TEXT, payload BLOB, retain INTEGER)`. `seq` is the
//! publisher's sequence number, so the rows read back in the order they were published. The
//! queue is bounded by a count and a byte total: past either, the oldest rows are deleted, and
//! the caller counts and logs them. A row goes only when the broker has acknowledged it (QoS
//! 1) or it was written to the broker's socket (QoS 0).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

/// One publish: its sequence number, topic, payload and retain flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Outgoing {
    /// The bytes it takes (topic and payload), as the byte bound counts them.
    pub fn size(&self) -> u64 {
        (self.topic.len() + self.payload.len()) as u64
    }
}

/// The forward queue could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[error("forward queue {}: {source}", path.display())]
pub struct ForwardError {
    pub path: PathBuf,
    pub source: rusqlite::Error,
}

/// The error of a statement on the queue at `path`.
fn fail(path: &Path) -> impl Fn(rusqlite::Error) -> ForwardError + '_ {
    move |source| ForwardError {
        path: path.to_path_buf(),
        source,
    }
}

/// The queue on disk.
pub struct ForwardQueue {
    path: PathBuf,
    conn: Connection,
    count: u64,
    bytes: u64,
    limit: u64,
    byte_limit: u64,
}

impl ForwardQueue {
    /// Opens (creating if needed) the queue at `path`, keeping at most `limit` rows and
    /// `byte_limit` bytes. What a previous run left is kept, to be sent first.
    pub fn open(path: &Path, limit: u64, byte_limit: u64) -> Result<ForwardQueue, ForwardError> {
        let err = |source| ForwardError {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS forward (
                 seq INTEGER PRIMARY KEY,
                 topic TEXT NOT NULL,
                 payload BLOB NOT NULL,
                 retain INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )
        .map_err(err)?;
        let (count, bytes): (i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(length(topic) + length(payload)), 0) FROM forward",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(err)?;
        Ok(ForwardQueue {
            path: path.to_path_buf(),
            conn,
            count: count.max(0) as u64,
            bytes: bytes.max(0) as u64,
            limit: limit.max(1),
            byte_limit: byte_limit.max(1),
        })
    }

    fn err(&self, source: rusqlite::Error) -> ForwardError {
        ForwardError {
            path: self.path.clone(),
            source,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows waiting.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes waiting (topics and payloads).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The sequence number after the highest one on disk (0 when empty): where a restarted
    /// publisher goes on counting.
    pub fn next_seq(&self) -> Result<u64, ForwardError> {
        let max: Option<i64> = self
            .conn
            .query_row("SELECT MAX(seq) FROM forward", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(max.map_or(0, |m| m as u64 + 1))
    }

    fn state(&self, key: &str) -> Result<Option<u64>, ForwardError> {
        let v: Option<i64> = self
            .conn
            .query_row("SELECT value FROM state WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(|e| self.err(e))?;
        Ok(v.map(|v| v as u64))
    }

    fn set_state(&self, key: &str, value: u64) -> Result<(), ForwardError> {
        self.conn
            .execute(
                "INSERT INTO state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The sequence numbers handed out up to (excluding) this one are reserved: a publisher
    /// that starts again starts here, so sequence numbers never go back, even after a kill.
    pub fn seq_reserved(&self) -> Result<u64, ForwardError> {
        Ok(self.state("seq_reserved")?.unwrap_or(0))
    }

    /// Reserves the sequence numbers below `seq`.
    pub fn reserve_seq(&self, seq: u64) -> Result<(), ForwardError> {
        self.set_state("seq_reserved", seq)
    }

    /// The Sparkplug bdSeq of the last session (0 if none).
    pub fn bd_seq(&self) -> Result<u64, ForwardError> {
        Ok(self.state("bd_seq")?.unwrap_or(0))
    }

    /// Keeps the Sparkplug bdSeq of the session about to start.
    pub fn set_bd_seq(&self, bd_seq: u64) -> Result<(), ForwardError> {
        self.set_state("bd_seq", bd_seq)
    }

    /// Appends publishes (in one transaction), then deletes the oldest rows past the bounds;
    /// returns how many were deleted for room.
    pub fn append(&mut self, items: &[Outgoing]) -> Result<u64, ForwardError> {
        if items.is_empty() {
            return Ok(0);
        }
        let tx = self.conn.transaction().map_err(fail(&self.path))?;
        let mut added = (0u64, 0u64);
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO forward (seq, topic, payload, retain) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(fail(&self.path))?;
            for item in items {
                stmt.execute(params![
                    item.seq as i64,
                    item.topic,
                    item.payload,
                    item.retain
                ])
                .map_err(fail(&self.path))?;
                added.0 += 1;
                added.1 += item.size();
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        self.count += added.0;
        self.bytes += added.1;
        self.trim()
    }

    /// Deletes the oldest rows until both bounds hold; returns how many.
    fn trim(&mut self) -> Result<u64, ForwardError> {
        if self.count <= self.limit && self.bytes <= self.byte_limit {
            return Ok(0);
        }
        // The newest row that has to go: by count, the (count - limit)th oldest; by bytes,
        // the one where the running total reaches the excess.
        let mut through: Option<i64> = None;
        if self.count > self.limit {
            let excess = (self.count - self.limit) as i64;
            through = self
                .conn
                .query_row(
                    "SELECT seq FROM forward ORDER BY seq LIMIT 1 OFFSET ?1",
                    [excess - 1],
                    |r| r.get(0),
                )
                .ok();
        }
        if self.bytes > self.byte_limit {
            let excess = self.bytes - self.byte_limit;
            let mut stmt = self
                .conn
                .prepare("SELECT seq, length(topic) + length(payload) FROM forward ORDER BY seq")
                .map_err(|e| self.err(e))?;
            let mut rows = stmt.query([]).map_err(fail(&self.path))?;
            let mut total = 0u64;
            while let Some(row) = rows.next().map_err(fail(&self.path))? {
                let seq: i64 = row.get(0).unwrap_or(0);
                let size: i64 = row.get(1).unwrap_or(0);
                total += size.max(0) as u64;
                if total >= excess {
                    through = Some(through.map_or(seq, |t| t.max(seq)));
                    break;
                }
            }
        }
        match through {
            Some(seq) => self.remove_through(seq as u64),
            None => Ok(0),
        }
    }

    /// Up to `n` rows after `after` (exclusive; `None`: from the oldest), oldest first.
    pub fn read(&self, after: Option<u64>, n: usize) -> Result<Vec<Outgoing>, ForwardError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, topic, payload, retain FROM forward WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let after = after.map_or(-1, |a| a as i64);
        let rows = stmt
            .query_map(params![after, n as i64], |r| {
                Ok(Outgoing {
                    seq: r.get::<_, i64>(0)? as u64,
                    topic: r.get(1)?,
                    payload: r.get(2)?,
                    retain: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Deletes every row up to `seq` (inclusive); returns how many.
    pub fn remove_through(&mut self, seq: u64) -> Result<u64, ForwardError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let (n, bytes): (i64, i64) = self
            .conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(length(topic) + length(payload)), 0) FROM forward WHERE seq <= ?1",
                [seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))?;
        if n > 0 {
            self.conn
                .execute("DELETE FROM forward WHERE seq <= ?1", [seq])
                .map_err(|e| self.err(e))?;
        }
        self.count = self.count.saturating_sub(n.max(0) as u64);
        self.bytes = self.bytes.saturating_sub(bytes.max(0) as u64);
        Ok(n.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64, payload: &str) -> Outgoing {
        Outgoing {
            seq,
            topic: "t".into(),
            payload: payload.as_bytes().to_vec(),
            retain: false,
        }
    }

    #[test]
    fn rows_come_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/forward.sqlite");
        let mut q = ForwardQueue::open(&path, 100, 1 << 20).unwrap();
        assert_eq!(q.next_seq().unwrap(), 0);
        // Appended out of order (a publish that was in flight goes back before newer rows).
        q.append(&[item(5, "e"), item(6, "f")]).unwrap();
        q.append(&[item(2, "b"), item(3, "c")]).unwrap();
        let seqs: Vec<u64> = q.read(None, 10).unwrap().iter().map(|o| o.seq).collect();
        assert_eq!(seqs, [2, 3, 5, 6]);
        let seqs: Vec<u64> = q.read(Some(3), 1).unwrap().iter().map(|o| o.seq).collect();
        assert_eq!(seqs, [5]);
        assert_eq!(q.remove_through(3).unwrap(), 2);
        assert_eq!((q.len(), q.bytes()), (2, 4));
        drop(q);
        let q = ForwardQueue::open(&path, 100, 1 << 20).unwrap();
        assert_eq!((q.len(), q.bytes()), (2, 4));
        assert_eq!(q.next_seq().unwrap(), 7);
        assert_eq!(q.read(None, 10).unwrap()[0], item(5, "e"));
        assert_eq!((q.seq_reserved().unwrap(), q.bd_seq().unwrap()), (0, 0));
        q.reserve_seq(1000).unwrap();
        q.set_bd_seq(3).unwrap();
        q.reserve_seq(2000).unwrap();
        drop(q);
        let q = ForwardQueue::open(&path, 100, 1 << 20).unwrap();
        assert_eq!((q.seq_reserved().unwrap(), q.bd_seq().unwrap()), (2000, 3));
    }

    #[test]
    fn past_either_bound_the_oldest_rows_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = ForwardQueue::open(&dir.path().join("f.sqlite"), 3, 1 << 20).unwrap();
        let items: Vec<Outgoing> = (0..5).map(|i| item(i, "xx")).collect();
        assert_eq!(q.append(&items).unwrap(), 2);
        let seqs: Vec<u64> = q.read(None, 10).unwrap().iter().map(|o| o.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        // Bytes: each row is 1 + 10 bytes; a 25-byte bound keeps two.
        let mut q = ForwardQueue::open(&dir.path().join("g.sqlite"), 100, 25).unwrap();
        let items: Vec<Outgoing> = (0..4).map(|i| item(i, "0123456789")).collect();
        assert_eq!(q.append(&items).unwrap(), 2);
        assert_eq!((q.len(), q.bytes()), (2, 22));
        assert_eq!(q.read(None, 10).unwrap()[0].seq, 2);
    }
}
