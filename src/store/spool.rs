//! The equipment spool in SQLite: spooled messages in arrival order and the spool settings,
//! in one database file. SQLite in WAL mode with `synchronous = FULL` makes every spooled
//! message durable before [`SpoolStore::push`] returns, so a crash or a kill loses nothing
//! that was spooled, and a restarted equipment finds its spool intact.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::gem::spool::{SpoolError, SpoolStore};
use crate::secs2::codec::encode_body;
use crate::secs2::{DecodeLimits, Item, Message};

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    CREATE TABLE IF NOT EXISTS spool (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ord INTEGER NOT NULL,
        stream INTEGER NOT NULL,
        function INTEGER NOT NULL,
        w_bit INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS spool_order ON spool (ord, seq);
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// A spool kept in an SQLite database file. The database is only held open while the spool
/// has messages or settings are being saved: an idle equipment with an empty spool keeps no
/// connection (SQLite's per-connection memory would otherwise dominate a simulator's size).
#[derive(Debug)]
pub struct SqliteSpool {
    path: PathBuf,
    conn: Option<Connection>,
    /// Rows in `spool` (kept here so SpoolCountActual costs no query).
    count: usize,
    /// The saved settings, read at open and kept up to date.
    meta: Option<String>,
    next_order: u64,
}

fn storage(e: impl std::fmt::Display) -> SpoolError {
    SpoolError(e.to_string())
}

/// Opens (creating if needed) the database and its tables.
fn connect(path: &Path) -> Result<Connection, SpoolError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| SpoolError(format!("cannot create {}: {e}", dir.display())))?;
    }
    let conn = Connection::open(path)
        .map_err(|e| SpoolError(format!("cannot open {}: {e}", path.display())))?;
    conn.execute_batch(SCHEMA).map_err(storage)?;
    Ok(conn)
}

impl SqliteSpool {
    /// Opens (creating if needed) the spool database at `path` and reads what it holds.
    pub fn open(path: &Path) -> Result<SqliteSpool, SpoolError> {
        let conn = connect(path)?;
        let (count, max_order): (i64, Option<i64>) = conn
            .query_row("SELECT COUNT(*), MAX(ord) FROM spool", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(storage)?;
        let meta = conn
            .query_row("SELECT value FROM meta WHERE key = 'spool'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(storage)?;
        let count = usize::try_from(count).unwrap_or(0);
        Ok(SqliteSpool {
            path: path.to_path_buf(),
            conn: (count > 0).then_some(conn),
            count,
            meta,
            next_order: max_order.map_or(0, |m| u64::try_from(m + 1).unwrap_or(0)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&mut self) -> Result<&Connection, SpoolError> {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.path)?);
        }
        self.conn
            .as_ref()
            .ok_or_else(|| SpoolError("no database connection".into()))
    }

    /// Deletes rows; `sql` takes no parameter or the one in `param`.
    fn delete(&mut self, sql: &str, param: Option<i64>) -> Result<(), SpoolError> {
        if self.count == 0 {
            return Ok(());
        }
        let conn = self.conn()?;
        let n = match param {
            Some(p) => conn.execute(sql, [p]),
            None => conn.execute(sql, []),
        }
        .map_err(storage)?;
        self.count = self.count.saturating_sub(n);
        Ok(())
    }
}

impl SpoolStore for SqliteSpool {
    fn push(&mut self, message: &Message, order: u64) -> Result<u64, SpoolError> {
        let mut body = Vec::new();
        encode_body(message.body.as_ref(), &mut body).map_err(storage)?;
        let ord = i64::try_from(order).map_err(storage)?;
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO spool (ord, stream, function, w_bit, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ord, message.stream, message.function, message.w_bit, body],
        )
        .map_err(storage)?;
        let seq = u64::try_from(conn.last_insert_rowid()).map_err(storage)?;
        self.count += 1;
        self.next_order = self.next_order.max(order + 1);
        Ok(seq)
    }

    fn next_order(&self) -> Result<u64, SpoolError> {
        Ok(self.next_order)
    }

    fn len(&self) -> usize {
        self.count
    }

    fn oldest(&self, n: usize) -> Result<Vec<(u64, Message)>, SpoolError> {
        let Some(conn) = self.conn.as_ref().filter(|_| self.count > 0) else {
            return Ok(Vec::new());
        };
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, stream, function, w_bit, body FROM spool ORDER BY ord, seq LIMIT ?1",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map([limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, u8>(1)?,
                    r.get::<_, u8>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                ))
            })
            .map_err(storage)?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, stream, function, w_bit, body) = row.map_err(storage)?;
            let body = Item::decode_body(&body, &DecodeLimits::default())
                .map_err(|e| SpoolError(format!("spooled message {seq} is corrupt: {e}")))?;
            out.push((
                u64::try_from(seq).map_err(storage)?,
                Message {
                    stream,
                    function,
                    w_bit,
                    device_id: 0,
                    system_bytes: 0,
                    body,
                },
            ));
        }
        Ok(out)
    }

    fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        let seq = i64::try_from(seq).map_err(storage)?;
        self.delete("DELETE FROM spool WHERE seq = ?1", Some(seq))
    }

    fn remove_oldest(&mut self) -> Result<(), SpoolError> {
        self.delete(
            "DELETE FROM spool WHERE seq = (SELECT seq FROM spool ORDER BY ord, seq LIMIT 1)",
            None,
        )
    }

    fn purge(&mut self) -> Result<(), SpoolError> {
        self.delete("DELETE FROM spool", None)?;
        self.count = 0;
        Ok(())
    }

    fn load_meta(&self) -> Result<Option<String>, SpoolError> {
        Ok(self.meta.clone())
    }

    fn save_meta(&mut self, meta: &str) -> Result<(), SpoolError> {
        if self.meta.as_deref() == Some(meta) {
            return Ok(());
        }
        self.conn()?
            .execute(
                "INSERT INTO meta (key, value) VALUES ('spool', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [meta],
            )
            .map_err(storage)?;
        self.meta = Some(meta.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secs2::StreamFunction;

    #[test]
    fn survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("spool.sqlite");
        let m = |n: u32| {
            Message::new(
                StreamFunction {
                    stream: 6,
                    function: 11,
                },
                true,
                Some(Item::U4(vec![n])),
            )
        };
        {
            let mut s = SqliteSpool::open(&path).unwrap();
            for n in 1..=3 {
                s.push(&m(n), u64::from(n) + 10).unwrap();
            }
            s.remove_oldest().unwrap();
            s.save_meta("{\"x\":1}").unwrap();
        }
        let mut s = SqliteSpool::open(&path).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.next_order().unwrap(), 14);
        s.push(&m(9), 0).unwrap();
        assert_eq!(s.oldest(1).unwrap()[0].1, m(9), "lowest order first");
        s.remove_oldest().unwrap();
        let got = s.oldest(10).unwrap();
        assert_eq!(got[0].1, m(2));
        assert_eq!(got[1].1, m(3));
        s.remove(got[0].0).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s.load_meta().unwrap().as_deref(), Some("{\"x\":1}"));
        s.purge().unwrap();
        assert_eq!(s.len(), 0);
    }
}
