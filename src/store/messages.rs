//! The message store: every SECS message the gateway sends or receives, replies included, the
//! failures (validation, malformed, timeout, connection) and each equipment's status, in
//! Ignition's tables.
//!
//! One database (SQLite by default, `<project>/data/secsgate.sqlite`, WAL; or PostgreSQL, see
//! [`super::postgres`]) holds:
//!
//! - `SECSGEM_EquipmentInfo` (`Equipment` primary key, `Prefix`, `Status`, `"SDL File"`,
//!   `Gateway`): one row per connection, upserted when its status changes.
//! - `<prefix>Messages` (`ID`, `Timestamp`, `Equipment`, `StreamFunction`, `Direction`,
//!   `RequestResponse`, `CommonID`, `TxID`, `SystemBytes`, `Reply`, `Message`, `SML`, `Raw`,
//!   `MessageName`: the SDL definition it matched, `NULL` when none or an unnamed one;
//!   `Gateway`: the `[gateway] name` that wrote it). `MessageName` and `Gateway` came later:
//!   a table without them gets them (`ALTER TABLE ... ADD COLUMN`) when the store opens, and
//!   readers of a database not opened since read `NULL` for them.
//! - `<prefix>Errors` (`ID`, `Timestamp`, `Equipment`, `Kind`, `Reason`, `StreamFunction`,
//!   `Message`, `SML`, `Gateway`).
//!
//! `Timestamp` is UTC ISO 8601 text with milliseconds (`2026-12-03T09:31:35.123Z`), fixed
//! width, so text order is time order.
//!
//! Callers hand [`Record`]s to a [`Recorder`]: a bounded queue read by one writer thread that
//! makes the JSON and SML text, inserts in batches (one transaction per batch) and prunes by
//! age or row count. A full queue makes callers wait; nothing is dropped. A batch the database
//! cannot take for a connection reason is kept and tried again (1 s doubling to 30 s) while the
//! queue pushes back; one refused for its data is dropped and counted. A clean stop
//! ([`Recorder::close`]) writes everything queued. After a kill, what was committed stays: at
//! most the batch being written plus what was queued is missing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::gem::clock::DateTime;
use crate::secs2::codec::encode_body;
use crate::secs2::{Message, StreamFunction, json};

/// File name of the store inside the project's `data/` folder.
pub const DEFAULT_FILE: &str = "secsgate.sqlite";
/// Table prefix of an equipment that names none (Ignition's tables are named `SECSGEM_...`).
pub const DEFAULT_PREFIX: &str = "SECSGEM_";
/// The table of equipment statuses (no prefix, shared by every connection).
pub const EQUIPMENT_INFO: &str = "SECSGEM_EquipmentInfo";

/// The message store could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("message store {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the folder {}: {source}", path.display())]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("message store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("table prefix '{0}' may only hold letters, digits and '_'")]
    Prefix(String),
    #[error("cannot start the message store's writer thread: {0}")]
    Thread(std::io::Error),
    /// The database cannot be reached (or the connection was lost): worth retrying.
    #[error("message store unreachable: {0}")]
    Unavailable(String),
    /// The database refused what was asked (bad data, bad SQL, a bad URL): not worth
    /// retrying as it is.
    #[error("message store: {0}")]
    Refused(String),
}

/// Who sent a message: the gateway (`Sent`) or the equipment (`Received`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

impl Direction {
    /// The column text: "Sent" or "Received".
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Sent => "Sent",
            Direction::Received => "Received",
        }
    }
}

/// Whether a message is a primary (`Request`) or the reply to one (`Response`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestResponse {
    Request,
    Response,
}

impl RequestResponse {
    /// The column text: "Request" or "Response".
    pub fn as_str(self) -> &'static str {
        match self {
            RequestResponse::Request => "Request",
            RequestResponse::Response => "Response",
        }
    }

    /// Request for a primary (odd function), Response for a reply.
    pub fn of(message: &Message) -> RequestResponse {
        if message.stream_function().is_primary() {
            RequestResponse::Request
        } else {
            RequestResponse::Response
        }
    }
}

/// A message sent or received. The JSON and SML text are made by the writer thread.
#[derive(Clone, Debug)]
pub struct MessageRecord {
    /// Milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    /// The gateway's name (`[gateway] name`): the `Gateway` column.
    pub gateway: Arc<str>,
    pub equipment: String,
    pub prefix: String,
    pub direction: Direction,
    pub request_response: RequestResponse,
    pub common_id: String,
    pub txid: u32,
    /// The name of the SDL definition the message matched (`None`: none, or an unnamed one).
    pub message_name: Option<String>,
    pub message: Arc<Message>,
}

/// Something that failed: `kind` is "validation", "malformed", "timeout", "connection" or
/// "rejected" (the equipment answered S9Fx); `reason` says why.
#[derive(Clone, Debug)]
pub struct ErrorRecord {
    pub time_ms: i64,
    pub gateway: Arc<str>,
    pub equipment: String,
    pub prefix: String,
    pub kind: &'static str,
    pub reason: String,
    pub stream_function: Option<StreamFunction>,
    pub message: Option<Arc<Message>>,
}

/// An equipment's row of `SECSGEM_EquipmentInfo`.
#[derive(Clone, Debug)]
pub struct EquipmentRecord {
    pub gateway: Arc<str>,
    pub equipment: String,
    pub prefix: String,
    pub status: String,
    pub sdl_file: String,
}

/// What the store keeps.
#[derive(Clone, Debug)]
pub enum Record {
    Message(MessageRecord),
    Error(ErrorRecord),
    Equipment(EquipmentRecord),
}

/// How much the store keeps: rows older than `max_age`, and the oldest rows beyond
/// `max_rows` per table, are deleted. `None`: kept for ever.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_rows: Option<u64>,
}

/// A database the writer thread writes to ([`SqliteStore`], or
/// [`PgStore`](super::postgres::PgStore)).
pub trait MessageStore: Send {
    /// Writes a batch of records in one transaction. [`StoreError::Unavailable`]: the
    /// database could not be reached, and the writer tries the same batch again later; any
    /// other error: the batch is dropped (and counted).
    fn write(&mut self, batch: &[Record]) -> Result<(), StoreError>;
    /// Deletes what `retention` no longer keeps, as of `now_ms`; returns the rows deleted.
    fn prune(&mut self, retention: &Retention, now_ms: i64) -> Result<u64, StoreError>;
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The `Timestamp` text of a time: `YYYY-MM-DDThh:mm:ss.mmmZ` (UTC).
pub fn timestamp_text(ms: i64) -> String {
    let iso = DateTime::from_unix_millis(ms).format(2);
    let seconds = iso.get(..19).unwrap_or(&iso);
    format!("{seconds}.{:03}Z", ms.rem_euclid(1000))
}

/// A time given as RFC 3339 / ISO 8601, or as an age (`90s`, `10m`, `2h`, `1d`, `1w`)
/// counted back from `now_ms`; milliseconds since the Unix epoch.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    if let Some(dt) = DateTime::parse(t) {
        return Ok(dt.to_unix_millis());
    }
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let n: i64 = number.parse().map_err(|_| {
        format!("'{text}' is neither an RFC 3339 time nor an age such as 10m, 2h or 1d")
    })?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" | "" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{unit}'; use s, m, h, d or w (or an RFC 3339 time)"
            ));
        }
    };
    Ok(now_ms.saturating_sub(n.saturating_mul(unit_ms)))
}

/// Whether a table prefix is safe in a table name.
pub fn valid_prefix(prefix: &str) -> bool {
    prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The store in an SQLite file.
pub struct SqliteStore {
    conn: Connection,
    /// Prefixes whose tables exist.
    prefixes: HashSet<String>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` in WAL mode.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Folder {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open)?;
        // WAL with synchronous NORMAL: a committed batch survives the process being killed
        // (the OS has the WAL); only a power loss may take the last commits.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS {EQUIPMENT_INFO} (
                 Equipment TEXT PRIMARY KEY,
                 Prefix TEXT NOT NULL,
                 Status TEXT NOT NULL,
                 \"SDL File\" TEXT NOT NULL,
                 Gateway TEXT
             );"
        ))
        .map_err(open)?;
        add_column(&conn, EQUIPMENT_INFO, "Gateway").map_err(open)?;
        let mut prefixes = HashSet::new();
        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%Messages'",
            )
            .map_err(open)?;
        let names: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .map_err(open)?
            .filter_map(Result::ok)
            .collect();
        drop(stmt);
        for name in names {
            if let Some(p) = name.strip_suffix("Messages") {
                if !valid_prefix(p) {
                    continue;
                }
                add_column(&conn, &format!("{p}Messages"), "MessageName").map_err(open)?;
                add_column(&conn, &format!("{p}Messages"), "Gateway").map_err(open)?;
                if has_table(&conn, &format!("{p}Errors")).map_err(open)? {
                    add_column(&conn, &format!("{p}Errors"), "Gateway").map_err(open)?;
                }
                prefixes.insert(p.to_string());
            }
        }
        Ok(SqliteStore { conn, prefixes })
    }

    /// Creates the tables of `prefix` if they do not exist.
    fn ensure(&mut self, prefix: &str) -> Result<(), StoreError> {
        if self.prefixes.contains(prefix) {
            return Ok(());
        }
        if !valid_prefix(prefix) {
            return Err(StoreError::Prefix(prefix.to_string()));
        }
        self.conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {prefix}Messages (
                 ID INTEGER PRIMARY KEY AUTOINCREMENT,
                 Timestamp TEXT NOT NULL,
                 Equipment TEXT NOT NULL,
                 StreamFunction TEXT NOT NULL,
                 Direction TEXT NOT NULL,
                 RequestResponse TEXT NOT NULL,
                 CommonID TEXT NOT NULL,
                 TxID INTEGER NOT NULL,
                 SystemBytes INTEGER NOT NULL,
                 Reply INTEGER NOT NULL,
                 Message TEXT NOT NULL,
                 SML TEXT NOT NULL,
                 Raw BLOB NOT NULL,
                 MessageName TEXT,
                 Gateway TEXT
             );
             CREATE INDEX IF NOT EXISTS {prefix}Messages_Timestamp ON {prefix}Messages (Timestamp);
             CREATE INDEX IF NOT EXISTS {prefix}Messages_Equipment_SF ON {prefix}Messages (Equipment, StreamFunction);
             CREATE INDEX IF NOT EXISTS {prefix}Messages_CommonID ON {prefix}Messages (CommonID);
             CREATE TABLE IF NOT EXISTS {prefix}Errors (
                 ID INTEGER PRIMARY KEY AUTOINCREMENT,
                 Timestamp TEXT NOT NULL,
                 Equipment TEXT NOT NULL,
                 Kind TEXT NOT NULL,
                 Reason TEXT NOT NULL,
                 StreamFunction TEXT,
                 Message TEXT,
                 SML TEXT,
                 Gateway TEXT
             );
             CREATE INDEX IF NOT EXISTS {prefix}Errors_Timestamp ON {prefix}Errors (Timestamp);"
        ))?;
        self.prefixes.insert(prefix.to_string());
        Ok(())
    }
}

/// Whether `table` has `column` (tables made before `MessageName` or `Gateway` were added
/// do not).
fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names.iter().any(|n| n.eq_ignore_ascii_case(column)))
}

fn has_table(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// The schema migration of a table made before `column` (`MessageName`, `Gateway`) existed:
/// the column is added as nullable text (its old rows read `NULL`); nothing else changes.
fn add_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<()> {
    if !has_column(conn, table, column)? {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} TEXT"))?;
        info!("message store: column {column} added to {table}");
    }
    Ok(())
}

/// The JSON and SML text of a message.
fn texts(message: &Message) -> (String, String) {
    (json::message_to_json_string(message), message.to_string())
}

impl MessageStore for SqliteStore {
    fn write(&mut self, batch: &[Record]) -> Result<(), StoreError> {
        for r in batch {
            match r {
                Record::Message(m) => self.ensure(&m.prefix)?,
                Record::Error(e) => self.ensure(&e.prefix)?,
                Record::Equipment(_) => {}
            }
        }
        let tx = self.conn.transaction()?;
        let mut raw = Vec::new();
        for r in batch {
            match r {
                Record::Message(m) => {
                    let (json, sml) = texts(&m.message);
                    raw.clear();
                    if let Err(e) = encode_body(m.message.body.as_ref(), &mut raw) {
                        warn!("message store: the body of {} cannot be encoded: {e}", sml);
                    }
                    let mut stmt = tx.prepare_cached(&format!(
                        "INSERT INTO {}Messages (Timestamp, Equipment, StreamFunction, Direction, RequestResponse, CommonID, TxID, SystemBytes, Reply, Message, SML, Raw, MessageName, Gateway) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                        m.prefix
                    ))?;
                    stmt.execute(params![
                        timestamp_text(m.time_ms),
                        m.equipment,
                        m.message.stream_function().to_string(),
                        m.direction.as_str(),
                        m.request_response.as_str(),
                        m.common_id,
                        m.txid,
                        m.message.system_bytes,
                        m.message.w_bit,
                        json,
                        sml,
                        raw,
                        m.message_name,
                        m.gateway.as_ref(),
                    ])?;
                }
                Record::Error(e) => {
                    let (json, sml) = e.message.as_deref().map(texts).unzip();
                    let mut stmt = tx.prepare_cached(&format!(
                        "INSERT INTO {}Errors (Timestamp, Equipment, Kind, Reason, StreamFunction, Message, SML, Gateway) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        e.prefix
                    ))?;
                    stmt.execute(params![
                        timestamp_text(e.time_ms),
                        e.equipment,
                        e.kind,
                        e.reason,
                        e.stream_function.map(|sf| sf.to_string()),
                        json,
                        sml,
                        e.gateway.as_ref(),
                    ])?;
                }
                Record::Equipment(q) => {
                    let mut stmt = tx.prepare_cached(&format!(
                        "INSERT INTO {EQUIPMENT_INFO} (Equipment, Prefix, Status, \"SDL File\", Gateway) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (Equipment) DO UPDATE SET Prefix = excluded.Prefix, Status = excluded.Status, \"SDL File\" = excluded.\"SDL File\", Gateway = excluded.Gateway"
                    ))?;
                    stmt.execute(params![
                        q.equipment,
                        q.prefix,
                        q.status,
                        q.sdl_file,
                        q.gateway.as_ref()
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn prune(&mut self, retention: &Retention, now_ms: i64) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        let mut prefixes: Vec<String> = self.prefixes.iter().cloned().collect();
        prefixes.sort();
        for prefix in prefixes {
            for table in ["Messages", "Errors"] {
                if let Some(age) = retention.max_age {
                    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                    let cutoff = timestamp_text(now_ms.saturating_sub(age_ms));
                    deleted += self.conn.execute(
                        &format!("DELETE FROM {prefix}{table} WHERE Timestamp < ?1"),
                        [cutoff],
                    )? as u64;
                }
                if let Some(rows) = retention.max_rows {
                    let keep = i64::try_from(rows).unwrap_or(i64::MAX);
                    // The newest `keep` rows stay (IDs only grow).
                    deleted += self.conn.execute(
                        &format!(
                            "DELETE FROM {prefix}{table} WHERE ID <= (SELECT MAX(ID) FROM {prefix}{table}) - ?1"
                        ),
                        [keep],
                    )? as u64;
                }
            }
        }
        Ok(deleted)
    }
}

/// Settings of a [`Recorder`].
#[derive(Clone, Debug, PartialEq)]
pub struct RecorderSettings {
    /// Records the queue holds before callers wait.
    pub queue: usize,
    /// Most records written in one transaction.
    pub batch: usize,
    pub retention: Retention,
    /// Pruning runs after this many records written...
    pub prune_every_rows: u64,
    /// ... or this much time, whichever comes first.
    pub prune_every: Duration,
}

impl Default for RecorderSettings {
    fn default() -> Self {
        RecorderSettings {
            queue: 8192,
            batch: 1024,
            retention: Retention::default(),
            prune_every_rows: 10_000,
            prune_every: Duration::from_secs(60),
        }
    }
}

enum Command {
    Record(Record),
    /// Write everything queued before this, then answer.
    Flush(oneshot::Sender<()>),
    /// Write everything queued before this, answer and stop.
    Stop(oneshot::Sender<()>),
}

/// First wait before the writer tries an unreachable database again; it doubles up to
/// [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two tries of an unreachable database.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// Tells the writer, waiting to try an unreachable database again, that the recorder is
/// closing.
#[derive(Default)]
struct StopSignal {
    stopping: std::sync::Mutex<bool>,
    cond: std::sync::Condvar,
}

impl StopSignal {
    fn request(&self) {
        if let Ok(mut s) = self.stopping.lock() {
            *s = true;
        }
        self.cond.notify_all();
    }

    fn requested(&self) -> bool {
        self.stopping.lock().map(|s| *s).unwrap_or(true)
    }

    /// Waits `d`, or less if a stop is requested; whether one was.
    fn wait(&self, d: Duration) -> bool {
        let Ok(guard) = self.stopping.lock() else {
            return true;
        };
        match self
            .cond
            .wait_timeout_while(guard, d, |stopping| !*stopping)
        {
            Ok((s, _)) => *s,
            Err(_) => true,
        }
    }
}

/// The front of the store: a bounded queue and the one writer thread behind it.
pub struct Recorder {
    tx: mpsc::Sender<Command>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    stop: Arc<StopSignal>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Recorder {
    /// Starts the writer thread on `store`.
    pub fn start(
        store: Box<dyn MessageStore>,
        settings: RecorderSettings,
    ) -> Result<Recorder, StoreError> {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let written = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(StopSignal::default());
        let (w, d, s) = (written.clone(), dropped.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("message-store".into())
            .spawn(move || writer(store, rx, settings, w, d, &s))
            .map_err(StoreError::Thread)?;
        Ok(Recorder {
            tx,
            dropped,
            written,
            stop,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Opens the SQLite store at `path` and starts its writer.
    pub fn open_sqlite(path: &Path, settings: RecorderSettings) -> Result<Recorder, StoreError> {
        let store = SqliteStore::open(path)?;
        Recorder::start(Box::new(store), settings)
    }

    /// Starts a writer on the PostgreSQL database at `url`; it connects when it can (a
    /// database that is away does not stop this). `application_name` names the writer's
    /// connection on the server.
    pub fn open_postgres(
        url: &str,
        application_name: &str,
        settings: RecorderSettings,
    ) -> Result<Recorder, StoreError> {
        let store = super::postgres::PgStore::new(url, application_name)?;
        Recorder::start(Box::new(store), settings)
    }

    /// Queues a record, waiting while the queue is full (for tokio tasks).
    pub async fn record(&self, record: Record) {
        if self.tx.send(Command::Record(record)).await.is_err() {
            self.lost();
        }
    }

    /// Queues a record, blocking the thread while the queue is full (for threads outside
    /// the tokio runtime, such as the Python workers).
    pub fn record_blocking(&self, record: Record) {
        if self.tx.blocking_send(Command::Record(record)).is_err() {
            self.lost();
        }
    }

    /// Queues a record from code that cannot wait (a status change under a lock): at once if
    /// there is room, else from a task that waits for room.
    pub fn record_soon(&self, record: Record) {
        match self.tx.try_send(Command::Record(record)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                match tokio::runtime::Handle::try_current() {
                    Ok(handle) => {
                        let tx = self.tx.clone();
                        let dropped = self.dropped.clone();
                        handle.spawn(async move {
                            if tx.send(command).await.is_err() {
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    }
                    Err(_) => {
                        if self.tx.blocking_send(command).is_err() {
                            self.lost();
                        }
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.lost(),
        }
    }

    fn lost(&self) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        error!(
            dropped = n,
            "message store: a record was dropped (the writer has stopped)"
        );
    }

    /// Records dropped: queued after the writer stopped, refused by the database (a batch
    /// with bad data), or still waiting for an unreachable database when the recorder
    /// closed. 0 unless something failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records written to the database so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Waits until everything queued before this call is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Writes everything queued and stops the writer thread; later records are dropped (and
    /// counted).
    pub async fn close(&self) {
        // A writer waiting for an unreachable database tries once more, then gives up.
        self.stop.request();
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The writer thread: takes a batch from the queue, writes it, prunes now and then.
fn writer(
    mut store: Box<dyn MessageStore>,
    mut rx: mpsc::Receiver<Command>,
    settings: RecorderSettings,
    written: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    stop: &StopSignal,
) {
    let batch_max = settings.batch.max(1);
    let mut batch: Vec<Record> = Vec::with_capacity(batch_max);
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut since_prune = 0u64;
    let mut last_prune = Instant::now();
    let prune = |store: &mut Box<dyn MessageStore>| {
        if settings.retention == Retention::default() {
            return;
        }
        match store.prune(&settings.retention, now_ms()) {
            Ok(0) => {}
            Ok(n) => info!(rows = n, "message store: old rows deleted"),
            Err(e) => error!("message store: pruning failed: {e}"),
        }
    };
    prune(&mut store);
    // When the database became unreachable (and has not been reached since).
    let mut down: Option<Instant> = None;
    // Closing while it was unreachable: what is left is counted as dropped, not tried.
    let mut abandoned = false;
    let mut stop_done = None;
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Record(r) => batch.push(r),
                Command::Flush(done) => flushes.push(done),
                Command::Stop(done) => {
                    stop_done = Some(done);
                    break;
                }
            }
            if batch.len() < batch_max {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            let mut delay = RETRY_FIRST;
            loop {
                if abandoned {
                    dropped.fetch_add(n, Ordering::Relaxed);
                    break;
                }
                match store.write(&batch) {
                    Ok(()) => {
                        written.fetch_add(n, Ordering::Relaxed);
                        if let Some(since) = down.take() {
                            let waited = n + rx.len() as u64;
                            info!(
                                records = waited,
                                "message store: the database is back after {:.1} s; {waited} records waited (written now)",
                                since.elapsed().as_secs_f64()
                            );
                        }
                        break;
                    }
                    Err(StoreError::Unavailable(why)) => {
                        if down.is_none() {
                            down = Some(Instant::now());
                            error!(
                                records = n,
                                "message store: the database is unreachable ({why}); the writer keeps the records and tries again (after 1 s, doubling up to 30 s); the gateway waits whenever the queue is full"
                            );
                        }
                        if stop.requested() {
                            abandoned = true;
                            let queued = rx.len() as u64;
                            error!(
                                records = n + queued,
                                "message store: stopping while the database is unreachable: {} records are not written",
                                n + queued
                            );
                            continue;
                        }
                        // A stop ends the wait early: one more try, then give up.
                        stop.wait(delay);
                        delay = (delay * 2).min(RETRY_MAX);
                    }
                    Err(e) => {
                        dropped.fetch_add(n, Ordering::Relaxed);
                        error!(
                            records = n,
                            "message store: a batch was refused and dropped ({n} records): {e}"
                        );
                        break;
                    }
                }
            }
            since_prune += n;
            batch.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        if let Some(done) = stop_done.take() {
            rx.close();
            let mut late = 0u64;
            while let Ok(command) = rx.try_recv() {
                if let Command::Record(_) = command {
                    late += 1;
                }
            }
            if late > 0 {
                dropped.fetch_add(late, Ordering::Relaxed);
                error!(
                    records = late,
                    "message store: records queued after the stop were dropped"
                );
            }
            let _ = done.send(());
            return;
        }
        if since_prune >= settings.prune_every_rows || last_prune.elapsed() >= settings.prune_every
        {
            prune(&mut store);
            since_prune = 0;
            last_prune = Instant::now();
        }
    }
}

/// What `secsgate log` (and anyone reading the store) asks for; `None` matches everything.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Only the tables of this prefix (default: every `<prefix>Messages` table).
    pub prefix: Option<String>,
    /// Only the rows this gateway wrote (`[gateway] name`).
    pub gateway: Option<String>,
    pub equipment: Option<String>,
    /// E.g. "S6F11".
    pub stream_function: Option<String>,
    pub direction: Option<Direction>,
    pub common_id: Option<String>,
    /// The name of the SDL definition the messages matched.
    pub message_name: Option<String>,
    /// Milliseconds since the Unix epoch, inclusive.
    pub since_ms: Option<i64>,
    /// Milliseconds since the Unix epoch, exclusive.
    pub until_ms: Option<i64>,
    /// The newest `limit` messages (all when `None`).
    pub limit: Option<usize>,
}

/// A row of a `<prefix>Messages` table.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMessage {
    pub prefix: String,
    pub id: i64,
    pub timestamp: String,
    /// The gateway that wrote it (`None`: a row stored before the column existed).
    pub gateway: Option<String>,
    pub equipment: String,
    pub stream_function: String,
    pub direction: String,
    pub request_response: String,
    pub common_id: String,
    pub txid: i64,
    pub system_bytes: i64,
    pub reply: bool,
    /// The JSON form.
    pub message: String,
    pub sml: String,
    /// The SDL definition it matched (`None`: none, an unnamed one, or a row stored before
    /// the column existed).
    pub message_name: Option<String>,
}

/// The prefixes that have a `<prefix>Messages` table, sorted.
pub fn message_prefixes(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%Messages' ORDER BY name",
    )?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(prefixes_of(names))
}

fn prefixes_of(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .filter_map(|n| n.strip_suffix("Messages").map(str::to_string))
        .filter(|p| valid_prefix(p))
        .collect()
}

/// A value in a query's `WHERE`.
#[derive(Clone, Debug)]
enum Arg {
    Int(i64),
    Text(String),
}

/// A database the message log is read from: what [`query_messages`] needs of it.
trait MessageSource {
    /// The prefixes that have a `<prefix>Messages` table, sorted.
    fn prefixes(&mut self) -> Result<Vec<String>, StoreError>;
    /// Whether `<prefix>Messages` has `column` (older SQLite tables may lack one).
    fn has_column(&mut self, prefix: &str, column: &str) -> Result<bool, StoreError>;
    /// The `n`-th (1-based) placeholder.
    fn placeholder(&self, n: usize) -> String;
    /// Runs a `SELECT` of the columns [`query_messages`] names, in its order.
    fn rows(
        &mut self,
        prefix: &str,
        sql: &str,
        args: &[Arg],
    ) -> Result<Vec<StoredMessage>, StoreError>;
}

impl MessageSource for &Connection {
    fn prefixes(&mut self) -> Result<Vec<String>, StoreError> {
        message_prefixes(self)
    }

    fn has_column(&mut self, prefix: &str, column: &str) -> Result<bool, StoreError> {
        Ok(has_column(self, &format!("{prefix}Messages"), column)?)
    }

    fn placeholder(&self, n: usize) -> String {
        format!("?{n}")
    }

    fn rows(
        &mut self,
        prefix: &str,
        sql: &str,
        args: &[Arg],
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let values = args.iter().map(|a| match a {
            Arg::Int(i) => rusqlite::types::Value::Integer(*i),
            Arg::Text(t) => rusqlite::types::Value::Text(t.clone()),
        });
        let mut stmt = self.prepare(sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
            Ok(StoredMessage {
                prefix: prefix.to_string(),
                id: r.get(0)?,
                timestamp: r.get(1)?,
                equipment: r.get(2)?,
                stream_function: r.get(3)?,
                direction: r.get(4)?,
                request_response: r.get(5)?,
                common_id: r.get(6)?,
                txid: r.get(7)?,
                system_bytes: r.get(8)?,
                reply: r.get(9)?,
                message: r.get(10)?,
                sml: r.get(11)?,
                message_name: r.get(12)?,
                gateway: r.get(13)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

/// PostgreSQL's tables are made with every column.
struct PgSource<'a> {
    client: &'a mut postgres::Client,
    url: &'a str,
}

impl MessageSource for PgSource<'_> {
    fn prefixes(&mut self) -> Result<Vec<String>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() AND tablename LIKE '%Messages' ORDER BY tablename",
                &[],
            )
            .map_err(|e| super::postgres::classify(&e, self.url))?;
        let names = rows
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| super::postgres::classify(&e, self.url))?;
        Ok(prefixes_of(names))
    }

    fn has_column(&mut self, _prefix: &str, _column: &str) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn placeholder(&self, n: usize) -> String {
        format!("${n}")
    }

    fn rows(
        &mut self,
        prefix: &str,
        sql: &str,
        args: &[Arg],
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let values: Vec<Box<dyn postgres::types::ToSql + Sync>> = args
            .iter()
            .map(|a| -> Box<dyn postgres::types::ToSql + Sync> {
                match a {
                    Arg::Int(i) => Box::new(*i),
                    Arg::Text(t) => Box::new(t.clone()),
                }
            })
            .collect();
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            values.iter().map(|v| v.as_ref()).collect();
        let fail = |e: postgres::Error| super::postgres::classify(&e, self.url);
        let rows = self.client.query(sql, &refs).map_err(fail)?;
        rows.iter()
            .map(|r| {
                Ok(StoredMessage {
                    prefix: prefix.to_string(),
                    id: r.try_get(0)?,
                    timestamp: r.try_get(1)?,
                    equipment: r.try_get(2)?,
                    stream_function: r.try_get(3)?,
                    direction: r.try_get(4)?,
                    request_response: r.try_get(5)?,
                    common_id: r.try_get(6)?,
                    txid: r.try_get(7)?,
                    system_bytes: r.try_get(8)?,
                    reply: r.try_get(9)?,
                    message: r.try_get(10)?,
                    sml: r.try_get(11)?,
                    message_name: r.try_get(12)?,
                    gateway: r.try_get(13)?,
                })
            })
            .collect::<Result<Vec<_>, postgres::Error>>()
            .map_err(fail)
    }
}

/// The messages matching `query` with an ID above `after_id` in their table (per prefix: the
/// last ID seen), oldest first (by timestamp, then ID), from an SQLite store.
pub fn query_messages(
    conn: &Connection,
    query: &Query,
    after_id: &std::collections::HashMap<String, i64>,
) -> Result<Vec<StoredMessage>, StoreError> {
    let mut source = conn;
    query_source(&mut source, query, after_id)
}

/// The query, the same for SQLite and PostgreSQL (quoted identifiers; the placeholders are
/// the source's).
fn query_source(
    source: &mut dyn MessageSource,
    query: &Query,
    after_id: &std::collections::HashMap<String, i64>,
) -> Result<Vec<StoredMessage>, StoreError> {
    let prefixes = match &query.prefix {
        Some(p) => {
            if !valid_prefix(p) {
                return Err(StoreError::Prefix(p.clone()));
            }
            source.prefixes()?.into_iter().filter(|x| x == p).collect()
        }
        None => source.prefixes()?,
    };
    let mut out = Vec::new();
    for prefix in prefixes {
        // A table of an SQLite database not opened since MessageName (or Gateway) was added
        // lacks the column.
        let named = source.has_column(&prefix, "MessageName")?;
        let gatewayed = source.has_column(&prefix, "Gateway")?;
        if (!named && query.message_name.is_some()) || (!gatewayed && query.gateway.is_some()) {
            continue;
        }
        let name_column = if named { "\"MessageName\"" } else { "NULL" };
        let gateway_column = if gatewayed { "\"Gateway\"" } else { "NULL" };
        let mut sql = format!(
            "SELECT \"ID\", \"Timestamp\", \"Equipment\", \"StreamFunction\", \"Direction\", \"RequestResponse\", \"CommonID\", \"TxID\", \"SystemBytes\", \"Reply\", \"Message\", \"SML\", {name_column}, {gateway_column} FROM \"{prefix}Messages\" WHERE \"ID\" > {}",
            source.placeholder(1)
        );
        let mut args = vec![Arg::Int(after_id.get(&prefix).copied().unwrap_or(0))];
        let mut add = |clause: &str, value: Arg| {
            args.push(value);
            sql.push_str(&format!(" AND {clause} {}", source.placeholder(args.len())));
        };
        if let Some(g) = &query.gateway {
            add("\"Gateway\" =", Arg::Text(g.clone()));
        }
        if let Some(e) = &query.equipment {
            add("\"Equipment\" =", Arg::Text(e.clone()));
        }
        if let Some(sf) = &query.stream_function {
            add("\"StreamFunction\" =", Arg::Text(sf.to_ascii_uppercase()));
        }
        if let Some(d) = query.direction {
            add("\"Direction\" =", Arg::Text(d.as_str().to_string()));
        }
        if let Some(c) = &query.common_id {
            add("\"CommonID\" =", Arg::Text(c.clone()));
        }
        if let Some(n) = &query.message_name {
            add("\"MessageName\" =", Arg::Text(n.clone()));
        }
        if let Some(t) = query.since_ms {
            add("\"Timestamp\" >=", Arg::Text(timestamp_text(t)));
        }
        if let Some(t) = query.until_ms {
            add("\"Timestamp\" <", Arg::Text(timestamp_text(t)));
        }
        sql.push_str(" ORDER BY \"ID\" DESC");
        if let Some(n) = query.limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        out.extend(source.rows(&prefix, &sql, &args)?);
    }
    out.sort_by(|a, b| (&a.timestamp, a.id).cmp(&(&b.timestamp, b.id)));
    if let Some(n) = query.limit {
        let extra = out.len().saturating_sub(n);
        out.drain(..extra);
    }
    Ok(out)
}

/// Where a message store is read from: its SQLite file or its PostgreSQL database.
pub enum StoreReader {
    Sqlite(Connection),
    Postgres {
        client: Box<super::postgres::Pooled>,
        url: String,
    },
}

impl StoreReader {
    /// Opens the store at `location` for reading (SQLite read-only; PostgreSQL from the
    /// pool). On PostgreSQL, call it on a plain thread (or tokio's blocking pool).
    pub fn open(location: &crate::store::DatabaseLocation) -> Result<StoreReader, StoreError> {
        Ok(match location {
            crate::store::DatabaseLocation::Sqlite(path) => {
                StoreReader::Sqlite(open_read_only(path)?)
            }
            crate::store::DatabaseLocation::Postgres(url) => StoreReader::Postgres {
                client: Box::new(super::postgres::pooled(url)?),
                url: super::postgres::redact(url),
            },
        })
    }

    /// As [`query_messages`], on either database.
    pub fn query_messages(
        &mut self,
        query: &Query,
        after_id: &std::collections::HashMap<String, i64>,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        match self {
            StoreReader::Sqlite(conn) => query_messages(conn, query, after_id),
            StoreReader::Postgres { client, url } => {
                let mut source = PgSource { client, url };
                query_source(&mut source, query, after_id)
            }
        }
    }
}

/// Opens a store's database for reading (as `secsgate log` does).
pub fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secs2::sml;

    fn message_record(time_ms: i64, text: &str, direction: Direction) -> Record {
        let m = sml::parse_message(text).unwrap();
        Record::Message(MessageRecord {
            time_ms,
            gateway: "gw".into(),
            equipment: "Tool1".into(),
            prefix: DEFAULT_PREFIX.into(),
            direction,
            request_response: RequestResponse::of(&m),
            common_id: "7".into(),
            txid: 7,
            message_name: None,
            message: Arc::new(m),
        })
    }

    fn count(path: &Path, table: &str) -> i64 {
        let c = Connection::open(path).unwrap();
        c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn timestamps_are_fixed_width_iso_text() {
        assert_eq!(timestamp_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            timestamp_text(1_796_290_295_123),
            "2026-12-03T09:31:35.123Z"
        );
    }

    /// A database whose Messages table predates `MessageName` stays readable as it is, and
    /// gets the column when the store opens it.
    #[test]
    fn a_table_without_message_name_is_read_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE SECSGEM_Messages (
                 ID INTEGER PRIMARY KEY AUTOINCREMENT, Timestamp TEXT NOT NULL,
                 Equipment TEXT NOT NULL, StreamFunction TEXT NOT NULL, Direction TEXT NOT NULL,
                 RequestResponse TEXT NOT NULL, CommonID TEXT NOT NULL, TxID INTEGER NOT NULL,
                 SystemBytes INTEGER NOT NULL, Reply INTEGER NOT NULL, Message TEXT NOT NULL,
                 SML TEXT NOT NULL, Raw BLOB NOT NULL);
             INSERT INTO SECSGEM_Messages (Timestamp, Equipment, StreamFunction, Direction,
                 RequestResponse, CommonID, TxID, SystemBytes, Reply, Message, SML, Raw)
             VALUES ('2026-12-03T09:00:00.000Z', 'Tool1', 'S6F11', 'Received', 'Request', '4001',
                 1, 7, 1, '{}', 'S6F11 W .', x'');",
        )
        .unwrap();
        drop(old);
        // Read as it is (as `secsgate log` does, read-only): MessageName reads NULL, and a
        // query by name finds nothing there.
        let ro = open_read_only(&path).unwrap();
        let rows = query_messages(&ro, &Query::default(), &Default::default()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].common_id.as_str(), rows[0].message_name.as_deref()),
            ("4001", None)
        );
        let by_name = Query {
            message_name: Some("LotStarted".into()),
            ..Query::default()
        };
        assert!(
            query_messages(&ro, &by_name, &Default::default())
                .unwrap()
                .is_empty()
        );
        drop(ro);
        // Opened by the store: the column is added, the old row kept, new rows named.
        let mut store = SqliteStore::open(&path).unwrap();
        let Record::Message(mut named) = message_record(
            1,
            "S6F11 W <L [3] <U4 1> <U4 100> <L>> .",
            Direction::Received,
        ) else {
            unreachable!()
        };
        named.message_name = Some("LotStarted".into());
        store.write(&[Record::Message(named)]).unwrap();
        drop(store);
        let conn = open_read_only(&path).unwrap();
        let rows = query_messages(&conn, &Query::default(), &Default::default()).unwrap();
        let names: Vec<Option<&str>> = rows.iter().map(|r| r.message_name.as_deref()).collect();
        assert_eq!(
            names,
            [Some("LotStarted"), None],
            "by timestamp: the new row is older"
        );
        let gateways: Vec<Option<&str>> = rows.iter().map(|r| r.gateway.as_deref()).collect();
        assert_eq!(
            gateways,
            [Some("gw"), None],
            "Gateway added: old rows read NULL"
        );
        let by_gateway = Query {
            gateway: Some("gw".into()),
            ..Query::default()
        };
        assert_eq!(
            query_messages(&conn, &by_gateway, &Default::default())
                .unwrap()
                .len(),
            1
        );
        let named = query_messages(&conn, &by_name, &Default::default()).unwrap();
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].common_id, "7");
        // Opening again changes nothing.
        drop(SqliteStore::open(&path).unwrap());
        assert_eq!(count(&path, "SECSGEM_Messages"), 2);
    }

    #[test]
    fn writes_columns_and_prunes_by_rows_and_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/secsgate.sqlite");
        let mut store = SqliteStore::open(&path).unwrap();
        let day = 86_400_000;
        let now = 100 * day;
        let mut batch = Vec::new();
        for i in 0..10 {
            // Two old rows (4 and 3 days old), the rest recent.
            let t = if i < 2 {
                now - (4 - i) * day
            } else {
                now - 1000
            };
            batch.push(message_record(
                t,
                "S6F11 W <L [3] <U4 1> <U4 4001> <L>> .",
                Direction::Received,
            ));
        }
        batch.push(Record::Error(ErrorRecord {
            time_ms: now - 5 * day,
            gateway: "gw".into(),
            equipment: "Tool1".into(),
            prefix: DEFAULT_PREFIX.into(),
            kind: "validation",
            reason: "body: expected L".into(),
            stream_function: Some(StreamFunction {
                stream: 6,
                function: 11,
            }),
            message: None,
        }));
        batch.push(Record::Equipment(EquipmentRecord {
            gateway: "gw".into(),
            equipment: "Tool1".into(),
            prefix: DEFAULT_PREFIX.into(),
            status: "Communicating".into(),
            sdl_file: "standard".into(),
        }));
        store.write(&batch).unwrap();
        let (sf, dir_, rr, reply, sml_, raw, json_): (
            String,
            String,
            String,
            bool,
            String,
            Vec<u8>,
            String,
        ) = store
            .conn
            .query_row(
                "SELECT StreamFunction, Direction, RequestResponse, Reply, SML, Raw, Message FROM SECSGEM_Messages WHERE ID = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
            )
            .unwrap();
        assert_eq!(
            (sf.as_str(), dir_.as_str(), rr.as_str(), reply),
            ("S6F11", "Received", "Request", true)
        );
        assert_eq!(sml_, "S6F11 W <L [3] <U4 1> <U4 4001> <L [0]>> .");
        assert_eq!(raw[0], 0x01, "a list header");
        assert!(json_.contains("\"stream\":6"), "{json_}");
        assert_eq!(count(&path, "SECSGEM_Errors"), 1);

        // Age: two days keeps the recent eight; the 5-day-old error goes too.
        let deleted = store
            .prune(
                &Retention {
                    max_age: Some(Duration::from_secs(2 * 86_400)),
                    max_rows: None,
                },
                now,
            )
            .unwrap();
        assert_eq!(deleted, 3);
        assert_eq!(count(&path, "SECSGEM_Messages"), 8);
        // Rows: the newest five stay.
        let deleted = store
            .prune(
                &Retention {
                    max_age: None,
                    max_rows: Some(5),
                },
                now,
            )
            .unwrap();
        assert_eq!(deleted, 3);
        let min: i64 = store
            .conn
            .query_row("SELECT MIN(ID) FROM SECSGEM_Messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(min, 6);
        assert_eq!(count(&path, "SECSGEM_EquipmentInfo"), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_recorder_writes_everything_and_prunes_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let recorder = Recorder::open_sqlite(
            &path,
            RecorderSettings {
                queue: 4,
                batch: 3,
                retention: Retention {
                    max_age: None,
                    max_rows: Some(50),
                },
                prune_every_rows: 10,
                prune_every: Duration::from_secs(3600),
            },
        )
        .unwrap();
        for _ in 0..200 {
            recorder
                .record(message_record(now_ms(), "S1F1 W .", Direction::Sent))
                .await;
        }
        recorder.close().await;
        assert_eq!(recorder.written(), 200);
        assert_eq!(recorder.dropped(), 0);
        let rows = count(&path, "SECSGEM_Messages");
        // Pruned to 50 once 10 rows had come since the last pruning; the writer stops right
        // after its last batch, so up to 9 rows plus one batch (3) may have come since.
        assert!((50..=62).contains(&rows), "{rows}");
        // Closed: later records are counted as dropped, not written.
        recorder
            .record(message_record(now_ms(), "S1F1 W .", Direction::Sent))
            .await;
        assert_eq!(recorder.dropped(), 1);
    }
}
