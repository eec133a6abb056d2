//! The message store in PostgreSQL (`[store] url = "postgres://user@host:port/db"`): the same
//! tables and columns as the SQLite store, so that several gateways can write one database.
//!
//! - `SECSGEM_EquipmentInfo` (`Gateway`, `Equipment`, `Prefix`, `Status`, `"SDL File"`), keyed
//!   by (`Gateway`, `Equipment`).
//! - `<prefix>Messages` (`ID BIGSERIAL`, `Timestamp TEXT`, ..., `TxID BIGINT`, `SystemBytes
//!   BIGINT`, `Reply BOOLEAN`, ..., `Raw BYTEA`, `MessageName`, `Gateway TEXT NOT NULL`).
//! - `<prefix>Errors` (`ID BIGSERIAL`, `Timestamp`, ..., `Gateway TEXT NOT NULL`).
//!
//! Identifiers are quoted (`"Timestamp"`), so the names are SQLite's, mixed case included.
//! `Timestamp` is the same fixed-width UTC text (`COLLATE "C"`), so text order is time order.
//!
//! [`PgStore`] is the writer thread's end: it connects when it first writes (never at start,
//! so a gateway whose database is away still starts), writes each batch in one transaction
//! with one `COPY ... FROM STDIN BINARY` per table (measured faster than multi-row `INSERT`,
//! see [`InsertMode`]), and says whether a failure was the connection
//! ([`StoreError::Unavailable`]: the writer keeps the batch and retries) or the data
//! ([`StoreError::Refused`]: the batch is dropped and counted).
//!
//! The password is the URL's, or, if the URL has none, the environment's `PGPASSWORD`; the
//! user is the URL's, else `PGUSER`, else the operating system's user. The sync `postgres`
//! crate is used on plain threads only (the writer thread, the Python workers, tokio's
//! blocking pool), never on a tokio worker.

use std::collections::{HashMap, HashSet};
use std::error::Error as _;
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Config, NoTls};

use super::messages::{
    EQUIPMENT_INFO, MessageStore, Record, Retention, StoreError, timestamp_text, valid_prefix,
};
use crate::gem::clock::DateTime;
use crate::secs2::codec::encode_body;
use crate::secs2::json;

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time before TCP keepalives probe a silent server (a half-open connection is seen).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Rows in one multi-row `INSERT` (PostgreSQL takes at most 65535 parameters a statement).
const VALUES_ROWS: usize = 1000;
/// Idle connections the pool keeps per URL.
const POOL_IDLE: usize = 8;

/// The URL with its password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***{host}{tail}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// Parses a `postgres://` (or `postgresql://`) URL; no environment is read.
pub fn parse_url(url: &str) -> Result<Config, String> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("postgres" | "postgresql")) {
        return Err(format!(
            "'{}' is not a PostgreSQL URL; write postgres://user@host:port/database",
            redact(url)
        ));
    }
    let config = Config::from_str(url).map_err(|e| {
        let why = e.source().map(|s| format!(": {s}")).unwrap_or_default();
        format!("'{}': {e}{why}", redact(url))
    })?;
    if config.get_hosts().is_empty() {
        return Err(format!(
            "'{}' names no host; write postgres://user@host:port/database",
            redact(url)
        ));
    }
    Ok(config)
}

/// The connection settings of a URL: the password from `password` (the environment's
/// `PGPASSWORD`) when the URL has none, the user from `user` (`PGUSER`) likewise, a connect
/// timeout, TCP keepalives and the application name the server shows for the connection.
pub fn client_config(
    url: &str,
    application_name: &str,
    user: Option<String>,
    password: Option<String>,
) -> Result<Config, String> {
    let mut config = parse_url(url)?;
    if config.get_password().is_none()
        && let Some(p) = password
    {
        config.password(p);
    }
    if config.get_user().is_none()
        && let Some(u) = user
    {
        config.user(&u);
    }
    if config.get_options().is_none() {
        // The server's notices ("relation already exists, skipping") stay out of the log.
        config.options("-c client_min_messages=warning");
    }
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .application_name(application_name);
    Ok(config)
}

/// Connects to the database at `url` (password and user from the environment when the URL
/// has none).
pub fn connect(url: &str, application_name: &str) -> Result<Client, StoreError> {
    let config = client_config(
        url,
        application_name,
        std::env::var("PGUSER").ok(),
        std::env::var("PGPASSWORD").ok(),
    )
    .map_err(StoreError::Refused)?;
    config.connect(NoTls).map_err(|e| classify(&e, url))
}

/// What went wrong, in words: the server's message and SQLSTATE, or the client's error and
/// its cause.
pub fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            let _ = write!(text, "; {detail}");
        }
        return text;
    }
    match e.source() {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Whether a failure is the connection's (the server is away, restarting, refusing
/// connections, out of resources, or the session was ended), so the write is worth retrying,
/// rather than the data's (the server refused the statement).
pub fn is_connection_problem(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let c = code.code();
        return c.starts_with("08") // connection exception
            || c.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
            || c.starts_with("53") // insufficient resources (disk full, too many connections)
            || c.starts_with("58") // system error (I/O)
            || c.starts_with("28") // authentication (a password being fixed)
            || c == "3D000" // the database does not exist (yet)
            || c == "40001" // serialization failure
            || c == "40P01"; // deadlock
    }
    // Client-side errors about values are the data's; everything else (I/O, TLS, connect,
    // timeout, protocol) is the connection's.
    let text = e.to_string();
    !(text.starts_with("error serializing parameter")
        || text.starts_with("error deserializing column")
        || text.starts_with("invalid column")
        || text.starts_with("expected ")
        || text.starts_with("query returned")
        || text.starts_with("invalid configuration")
        || text.starts_with("invalid connection string"))
}

/// A postgres error as a store error: [`StoreError::Unavailable`] for the connection's,
/// [`StoreError::Refused`] for the data's.
pub fn classify(e: &postgres::Error, url: &str) -> StoreError {
    let text = format!("{}: {}", redact(url), describe(e));
    if is_connection_problem(e) {
        StoreError::Unavailable(text)
    } else {
        StoreError::Refused(text)
    }
}

/// `"name"`: an identifier, quoted (the names are known-safe: prefixes are checked).
fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Text without NUL characters, which PostgreSQL's text cannot hold (U+FFFD instead).
fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// How a batch's rows go in. Both write one transaction per batch; on this machine `COPY`
/// was measured faster (README: "PostgreSQL"), so it is the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InsertMode {
    /// `COPY <table> (...) FROM STDIN BINARY`, one per table and batch.
    #[default]
    Copy,
    /// Multi-row `INSERT ... VALUES (...), (...)`, up to 1000 rows a statement.
    Values,
}

/// The columns of `<prefix>Messages` the store writes, in order.
const MESSAGE_COLUMNS: [&str; 14] = [
    "Timestamp",
    "Gateway",
    "Equipment",
    "StreamFunction",
    "Direction",
    "RequestResponse",
    "CommonID",
    "TxID",
    "SystemBytes",
    "Reply",
    "Message",
    "SML",
    "Raw",
    "MessageName",
];
const MESSAGE_TYPES: [Type; 14] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::BOOL,
    Type::TEXT,
    Type::TEXT,
    Type::BYTEA,
    Type::TEXT,
];
/// The columns of `<prefix>Errors` the store writes, in order.
const ERROR_COLUMNS: [&str; 8] = [
    "Timestamp",
    "Gateway",
    "Equipment",
    "Kind",
    "Reason",
    "StreamFunction",
    "Message",
    "SML",
];
const ERROR_TYPES: [Type; 8] = [Type::TEXT; 8];

/// A `<prefix>Messages` row, ready for the database.
struct MessageRow {
    timestamp: String,
    gateway: String,
    equipment: String,
    stream_function: String,
    direction: &'static str,
    request_response: &'static str,
    common_id: String,
    txid: i64,
    system_bytes: i64,
    reply: bool,
    json: String,
    sml: String,
    raw: Vec<u8>,
    message_name: Option<String>,
}

impl MessageRow {
    fn params(&self) -> [&(dyn ToSql + Sync); 14] {
        [
            &self.timestamp,
            &self.gateway,
            &self.equipment,
            &self.stream_function,
            &self.direction,
            &self.request_response,
            &self.common_id,
            &self.txid,
            &self.system_bytes,
            &self.reply,
            &self.json,
            &self.sml,
            &self.raw,
            &self.message_name,
        ]
    }
}

/// A `<prefix>Errors` row, ready for the database.
struct ErrorRow {
    timestamp: String,
    gateway: String,
    equipment: String,
    kind: &'static str,
    reason: String,
    stream_function: Option<String>,
    json: Option<String>,
    sml: Option<String>,
}

impl ErrorRow {
    fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.timestamp,
            &self.gateway,
            &self.equipment,
            &self.kind,
            &self.reason,
            &self.stream_function,
            &self.json,
            &self.sml,
        ]
    }
}

/// A batch sorted by table, in the batch's order within each table.
#[derive(Default)]
struct Rows {
    messages: Vec<(String, Vec<MessageRow>)>,
    errors: Vec<(String, Vec<ErrorRow>)>,
}

fn rows_of<'a, T>(list: &'a mut Vec<(String, Vec<T>)>, prefix: &str) -> &'a mut Vec<T> {
    let i = match list.iter().position(|(p, _)| p == prefix) {
        Some(i) => i,
        None => {
            list.push((prefix.to_string(), Vec::new()));
            list.len() - 1
        }
    };
    &mut list[i].1
}

impl Rows {
    fn of(batch: &[Record]) -> Rows {
        let mut rows = Rows::default();
        for r in batch {
            match r {
                Record::Message(m) => {
                    let mut raw = Vec::new();
                    let _ = encode_body(m.message.body.as_ref(), &mut raw);
                    let sml = m.message.to_string();
                    rows_of(&mut rows.messages, &m.prefix).push(MessageRow {
                        timestamp: timestamp_text(m.time_ms),
                        gateway: clean(&m.gateway).into_owned(),
                        equipment: clean(&m.equipment).into_owned(),
                        stream_function: m.message.stream_function().to_string(),
                        direction: m.direction.as_str(),
                        request_response: m.request_response.as_str(),
                        common_id: clean(&m.common_id).into_owned(),
                        txid: i64::from(m.txid),
                        system_bytes: i64::from(m.message.system_bytes),
                        reply: m.message.w_bit,
                        json: clean(&json::message_to_json_string(&m.message)).into_owned(),
                        sml: clean(&sml).into_owned(),
                        raw,
                        message_name: m.message_name.as_deref().map(|n| clean(n).into_owned()),
                    });
                }
                Record::Error(e) => {
                    rows_of(&mut rows.errors, &e.prefix).push(ErrorRow {
                        timestamp: timestamp_text(e.time_ms),
                        gateway: clean(&e.gateway).into_owned(),
                        equipment: clean(&e.equipment).into_owned(),
                        kind: e.kind,
                        reason: clean(&e.reason).into_owned(),
                        stream_function: e.stream_function.map(|sf| sf.to_string()),
                        json: e
                            .message
                            .as_ref()
                            .map(|m| clean(&json::message_to_json_string(m)).into_owned()),
                        sml: e
                            .message
                            .as_ref()
                            .map(|m| clean(&m.to_string()).into_owned()),
                    });
                }
                Record::Equipment(_) => {}
            }
        }
        rows
    }
}

/// The store in a PostgreSQL database.
pub struct PgStore {
    url: String,
    application_name: String,
    client: Option<Client>,
    /// Prefixes whose tables exist (checked on this connection).
    prefixes: HashSet<String>,
    mode: InsertMode,
}

impl PgStore {
    /// A store writing to `url`; it connects when it first writes. `application_name` is
    /// what the server shows for its connection (`pg_stat_activity`).
    pub fn new(url: &str, application_name: &str) -> Result<PgStore, StoreError> {
        parse_url(url).map_err(StoreError::Refused)?;
        Ok(PgStore {
            url: url.to_string(),
            application_name: application_name.to_string(),
            client: None,
            prefixes: HashSet::new(),
            mode: InsertMode::default(),
        })
    }

    /// Writes rows with `mode` (the default is the faster, `COPY`).
    pub fn with_mode(mut self, mode: InsertMode) -> PgStore {
        self.mode = mode;
        self
    }

    /// The connection, made (with the tables of the equipment status) if there is none or
    /// it was lost.
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.prefixes.clear();
            let mut client = connect(&self.url, &self.application_name)?;
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {t} (
                     \"Gateway\" TEXT NOT NULL,
                     \"Equipment\" TEXT NOT NULL,
                     \"Prefix\" TEXT NOT NULL,
                     \"Status\" TEXT NOT NULL,
                     \"SDL File\" TEXT NOT NULL,
                     PRIMARY KEY (\"Gateway\", \"Equipment\")
                 );",
                t = q(EQUIPMENT_INFO)
            );
            schema(&mut client, &sql).map_err(|e| classify(&e, &self.url))?;
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable(redact(&self.url)))
    }

    /// Creates the tables of `prefix` if they do not exist.
    fn ensure(&mut self, prefix: &str) -> Result<(), StoreError> {
        if self.prefixes.contains(prefix) {
            return Ok(());
        }
        if !valid_prefix(prefix) {
            return Err(StoreError::Prefix(prefix.to_string()));
        }
        let m = q(&format!("{prefix}Messages"));
        let e = q(&format!("{prefix}Errors"));
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {m} (
                 \"ID\" BIGSERIAL PRIMARY KEY,
                 \"Timestamp\" TEXT COLLATE \"C\" NOT NULL,
                 \"Equipment\" TEXT NOT NULL,
                 \"StreamFunction\" TEXT NOT NULL,
                 \"Direction\" TEXT NOT NULL,
                 \"RequestResponse\" TEXT NOT NULL,
                 \"CommonID\" TEXT NOT NULL,
                 \"TxID\" BIGINT NOT NULL,
                 \"SystemBytes\" BIGINT NOT NULL,
                 \"Reply\" BOOLEAN NOT NULL,
                 \"Message\" TEXT NOT NULL,
                 \"SML\" TEXT NOT NULL,
                 \"Raw\" BYTEA NOT NULL,
                 \"MessageName\" TEXT,
                 \"Gateway\" TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS {mt} ON {m} (\"Timestamp\");
             CREATE INDEX IF NOT EXISTS {ms} ON {m} (\"Equipment\", \"StreamFunction\");
             CREATE INDEX IF NOT EXISTS {mc} ON {m} (\"CommonID\");
             CREATE TABLE IF NOT EXISTS {e} (
                 \"ID\" BIGSERIAL PRIMARY KEY,
                 \"Timestamp\" TEXT COLLATE \"C\" NOT NULL,
                 \"Equipment\" TEXT NOT NULL,
                 \"Kind\" TEXT NOT NULL,
                 \"Reason\" TEXT NOT NULL,
                 \"StreamFunction\" TEXT,
                 \"Message\" TEXT,
                 \"SML\" TEXT,
                 \"Gateway\" TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS {et} ON {e} (\"Timestamp\");",
            mt = q(&format!("{prefix}Messages_Timestamp")),
            ms = q(&format!("{prefix}Messages_Equipment_SF")),
            mc = q(&format!("{prefix}Messages_CommonID")),
            et = q(&format!("{prefix}Errors_Timestamp")),
        );
        let url = self.url.clone();
        let client = self.client()?;
        schema(client, &sql).map_err(|e| classify(&e, &url))?;
        self.prefixes.insert(prefix.to_string());
        Ok(())
    }
}

/// Writes a batch in one transaction.
fn write_rows(
    client: &mut Client,
    mode: InsertMode,
    batch: &[Record],
) -> Result<(), postgres::Error> {
    let rows = Rows::of(batch);
    let mut tx = client.transaction()?;
    for (prefix, list) in &rows.messages {
        let table = q(&format!("{prefix}Messages"));
        let params = list.iter().map(MessageRow::params);
        insert(
            &mut tx,
            mode,
            &table,
            &MESSAGE_COLUMNS,
            &MESSAGE_TYPES,
            params,
        )?;
    }
    for (prefix, list) in &rows.errors {
        let table = q(&format!("{prefix}Errors"));
        let params = list.iter().map(ErrorRow::params);
        insert(&mut tx, mode, &table, &ERROR_COLUMNS, &ERROR_TYPES, params)?;
    }
    let mut upsert = None;
    for r in batch {
        if let Record::Equipment(e) = r {
            let stmt = match &upsert {
                    Some(s) => s,
                    None => upsert.insert(tx.prepare(&format!(
                        "INSERT INTO {t} (\"Gateway\", \"Equipment\", \"Prefix\", \"Status\", \"SDL File\") VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (\"Gateway\", \"Equipment\") DO UPDATE SET \"Prefix\" = excluded.\"Prefix\", \"Status\" = excluded.\"Status\", \"SDL File\" = excluded.\"SDL File\"",
                        t = q(EQUIPMENT_INFO)
                    ))?),
                };
            tx.execute(
                stmt,
                &[
                    &clean(&e.gateway).as_ref(),
                    &clean(&e.equipment).as_ref(),
                    &e.prefix,
                    &clean(&e.status).as_ref(),
                    &clean(&e.sdl_file).as_ref(),
                ],
            )?;
        }
    }
    tx.commit()
}

/// Runs schema statements under a transaction-scoped advisory lock, so that gateways
/// creating the same tables at once take turns (PostgreSQL's `IF NOT EXISTS` alone races).
fn schema(client: &mut Client, sql: &str) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.batch_execute("SELECT pg_advisory_xact_lock(7305418230519)")?;
    tx.batch_execute(sql)?;
    tx.commit()
}

/// Writes rows into `table` in one `COPY` or in multi-row `INSERT`s.
fn insert<'p, const N: usize>(
    tx: &mut postgres::Transaction<'_>,
    mode: InsertMode,
    table: &str,
    columns: &[&str; N],
    types: &[Type; N],
    rows: impl Iterator<Item = [&'p (dyn ToSql + Sync); N]>,
) -> Result<(), postgres::Error> {
    let names = columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
    match mode {
        InsertMode::Copy => {
            let sink = tx.copy_in(&format!("COPY {table} ({names}) FROM STDIN BINARY"))?;
            let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(sink, types);
            for row in rows {
                writer.write(&row)?;
            }
            writer.finish()?;
        }
        InsertMode::Values => {
            let rows: Vec<_> = rows.collect();
            for chunk in rows.chunks(VALUES_ROWS) {
                let mut sql = format!("INSERT INTO {table} ({names}) VALUES ");
                for i in 0..chunk.len() {
                    sql.push_str(if i == 0 { "(" } else { ", (" });
                    for c in 0..N {
                        let sep = if c == 0 { "" } else { ", " };
                        let _ = write!(sql, "{sep}${}", i * N + c + 1);
                    }
                    sql.push(')');
                }
                let params: Vec<&(dyn ToSql + Sync)> =
                    chunk.iter().flat_map(|r| r.iter().copied()).collect();
                let all: Vec<Type> = (0..chunk.len())
                    .flat_map(|_| types.iter().cloned())
                    .collect();
                let stmt = tx.prepare_typed(&sql, &all)?;
                tx.execute(&stmt, &params)?;
            }
        }
    }
    Ok(())
}

impl MessageStore for PgStore {
    fn write(&mut self, batch: &[Record]) -> Result<(), StoreError> {
        self.client()?;
        for r in batch {
            match r {
                Record::Message(m) => self.ensure(&m.prefix)?,
                Record::Error(e) => self.ensure(&e.prefix)?,
                Record::Equipment(_) => {}
            }
        }
        let mode = self.mode;
        let url = redact(&self.url);
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable(url))?;
        write_rows(client, mode, batch).map_err(|e| {
            if is_connection_problem(&e) {
                // Connect afresh next time: the session may be in any state.
                self.client = None;
            }
            classify(&e, &self.url)
        })
    }

    fn prune(&mut self, retention: &Retention, now_ms: i64) -> Result<u64, StoreError> {
        let url = self.url.clone();
        let mut prefixes: Vec<String> = self.prefixes.iter().cloned().collect();
        prefixes.sort();
        let client = self.client()?;
        let mut deleted = 0u64;
        let fail = |e: postgres::Error| classify(&e, &url);
        for prefix in prefixes {
            for table in ["Messages", "Errors"] {
                let t = q(&format!("{prefix}{table}"));
                if let Some(age) = retention.max_age {
                    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                    let cutoff = timestamp_text(now_ms.saturating_sub(age_ms));
                    deleted += client
                        .execute(
                            &format!("DELETE FROM {t} WHERE \"Timestamp\" < $1"),
                            &[&cutoff],
                        )
                        .map_err(fail)?;
                }
                if let Some(rows) = retention.max_rows {
                    let keep = i64::try_from(rows).unwrap_or(i64::MAX);
                    deleted += client
                        .execute(
                            &format!(
                                "DELETE FROM {t} WHERE \"ID\" <= (SELECT MAX(\"ID\") FROM {t}) - $1"
                            ),
                            &[&keep],
                        )
                        .map_err(fail)?;
                }
            }
        }
        Ok(deleted)
    }
}

/// A connection of the pool: back to the pool when dropped (unless it was lost).
pub struct Pooled {
    url: String,
    client: Option<Client>,
}

impl std::ops::Deref for Pooled {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a pooled connection is there until dropped")
    }
}

impl std::ops::DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("a pooled connection is there until dropped")
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if client.is_closed() {
            return;
        }
        if let Ok(mut pools) = pools().lock() {
            let idle = pools.entry(self.url.clone()).or_default();
            if idle.len() < POOL_IDLE {
                idle.push(client);
            }
        }
    }
}

fn pools() -> &'static Mutex<HashMap<String, Vec<Client>>> {
    static POOLS: OnceLock<Mutex<HashMap<String, Vec<Client>>>> = OnceLock::new();
    POOLS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A connection to `url` for readers (`system.db`, the web console, `secsgate log`): an idle
/// one of the pool, or a new one. Call it on a plain thread, never on a tokio worker.
pub fn pooled(url: &str) -> Result<Pooled, StoreError> {
    loop {
        let idle = pools()
            .lock()
            .ok()
            .and_then(|mut p| p.get_mut(url).and_then(Vec::pop));
        match idle {
            Some(client) if !client.is_closed() => {
                return Ok(Pooled {
                    url: url.to_string(),
                    client: Some(client),
                });
            }
            Some(_) => continue,
            None => break,
        }
    }
    let client = connect(url, "secsgate")?;
    Ok(Pooled {
        url: url.to_string(),
        client: Some(client),
    })
}

/// A value of dynamic SQL (`system.db`): what a script passes and what a row holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

/// Parameters go to the server as text, which it converts to the type the statement wants
/// (integer, numeric, timestamp, ...), as it does for a literal.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let text = match self {
            Value::Null => return Ok(IsNull::Yes),
            Value::Bool(b) if *ty == Type::BOOL => if *b { "t" } else { "f" }.to_string(),
            Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) if f.is_nan() => "NaN".to_string(),
            Value::Float(f) if f.is_infinite() => {
                if *f > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
            }
            Value::Float(f) => format!("{f:?}"),
            Value::Text(t) => t.clone(),
            Value::Bytes(b) if *ty == Type::BYTEA => {
                let mut hex = String::with_capacity(2 + 2 * b.len());
                hex.push_str("\\x");
                for byte in b {
                    let _ = write!(hex, "{byte:02x}");
                }
                hex
            }
            Value::Bytes(b) => String::from_utf8(b.clone())
                .map_err(|_| format!("bytes given for a {ty} parameter are not UTF-8 text"))?,
        };
        out.extend_from_slice(text.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> postgres::types::Format {
        postgres::types::Format::Text
    }

    to_sql_checked!();
}

fn be<const N: usize>(raw: &[u8], at: usize) -> Result<[u8; N], String> {
    raw.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| "a value shorter than its type".to_string())
}

/// NUMERIC's binary form as decimal text (base-10000 digits, weight, sign, scale).
fn numeric_text(raw: &[u8]) -> Result<String, String> {
    let ndigits = i16::from_be_bytes(be(raw, 0)?).max(0) as usize;
    let weight = i64::from(i16::from_be_bytes(be(raw, 2)?));
    let sign = u16::from_be_bytes(be(raw, 4)?);
    let dscale = usize::from(u16::from_be_bytes(be(raw, 6)?));
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("inf".into()),
        0xF000 => return Ok("-inf".into()),
        _ => {}
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(i16::from_be_bytes(be(raw, 8 + 2 * i)?));
    }
    let digit = |i: i64| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                let _ = write!(text, "{}", digit(i));
            } else {
                let _ = write!(text, "{:04}", digit(i));
            }
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut i = weight + 1;
        while frac.len() < dscale {
            let _ = write!(frac, "{:04}", digit(i));
            i += 1;
        }
        frac.truncate(dscale);
        text.push('.');
        text.push_str(&frac);
    }
    Ok(text)
}

/// Days since 2000-01-01 (PostgreSQL's epoch) in Unix milliseconds.
const PG_EPOCH_MS: i64 = 946_684_800_000;

impl<'a> FromSql<'a> for Value {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = |raw: &[u8]| -> Result<String, Box<dyn std::error::Error + Sync + Send>> {
            Ok(std::str::from_utf8(raw)?.to_string())
        };
        Ok(match *ty {
            Type::BOOL => Value::Bool(raw.first().is_some_and(|b| *b != 0)),
            Type::INT2 => Value::Int(i64::from(i16::from_be_bytes(be(raw, 0)?))),
            Type::INT4 => Value::Int(i64::from(i32::from_be_bytes(be(raw, 0)?))),
            Type::OID => Value::Int(i64::from(u32::from_be_bytes(be(raw, 0)?))),
            Type::INT8 => Value::Int(i64::from_be_bytes(be(raw, 0)?)),
            Type::FLOAT4 => Value::Float(f64::from(f32::from_be_bytes(be(raw, 0)?))),
            Type::FLOAT8 => Value::Float(f64::from_be_bytes(be(raw, 0)?)),
            Type::NUMERIC => {
                let t = numeric_text(raw)?;
                let scaled = u16::from_be_bytes(be(raw, 6)?) > 0;
                match t.parse::<i64>() {
                    Ok(i) if !scaled => Value::Int(i),
                    _ => Value::Float(t.parse::<f64>()?),
                }
            }
            Type::BYTEA => Value::Bytes(raw.to_vec()),
            Type::JSONB => Value::Text(text(raw.get(1..).unwrap_or_default())?),
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                let micros = i64::from_be_bytes(be(raw, 0)?);
                let t = timestamp_text(PG_EPOCH_MS.saturating_add(micros.div_euclid(1000)));
                Value::Text(if *ty == Type::TIMESTAMP {
                    t.trim_end_matches('Z').to_string()
                } else {
                    t
                })
            }
            Type::DATE => {
                let days = i64::from(i32::from_be_bytes(be(raw, 0)?));
                let dt = DateTime::from_unix_millis(PG_EPOCH_MS + days * 86_400_000);
                Value::Text(format!("{:04}-{:02}-{:02}", dt.year, dt.month, dt.day))
            }
            Type::UUID => {
                let mut t = String::with_capacity(36);
                for (i, b) in raw.iter().enumerate() {
                    if matches!(i, 4 | 6 | 8 | 10) {
                        t.push('-');
                    }
                    let _ = write!(t, "{b:02x}");
                }
                Value::Text(t)
            }
            Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::UNKNOWN
            | Type::JSON
            | Type::XML
            | Type::CHAR => Value::Text(text(raw)?),
            _ => {
                return Err(format!(
                    "a column of type {ty} cannot be read; cast it in the query (e.g. col::text)"
                )
                .into());
            }
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Ignition's `?` placeholders as PostgreSQL's `$1, $2, ...`: every `?` outside quotes,
/// quoted identifiers, comments and dollar-quoted text.
pub fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '?' => {
                n += 1;
                let _ = write!(out, "${n}");
            }
            '\'' | '"' => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if sql[i..].starts_with("--") => {
                out.push(c);
                for (_, d) in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if sql[i..].starts_with("/*") => {
                let end = sql[i + 2..].find("*/").map_or(sql.len(), |e| i + 2 + e + 2);
                out.push_str(&sql[i..end]);
                while chars.peek().is_some_and(|(j, _)| *j < end) {
                    chars.next();
                }
            }
            '$' => {
                // $tag$ ... $tag$ (tag: letters, digits, '_'; may be empty).
                let rest = &sql[i + 1..];
                let tag_len = rest
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .unwrap_or(rest.len());
                let starts_digit = rest.chars().next().is_some_and(|ch| ch.is_ascii_digit());
                if !starts_digit && rest[tag_len..].starts_with('$') {
                    let delim = &sql[i..i + tag_len + 2];
                    let body = i + delim.len();
                    let end = sql[body..]
                        .find(delim)
                        .map_or(sql.len(), |e| body + e + delim.len());
                    out.push_str(&sql[i..end]);
                    while chars.peek().is_some_and(|(j, _)| *j < end) {
                        chars.next();
                    }
                } else {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Whether a statement already says what it returns (`RETURNING`).
pub fn has_returning(sql: &str) -> bool {
    sql.to_ascii_lowercase()
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| w == "returning")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_outside_quotes_and_comments() {
        assert_eq!(
            numbered_placeholders(
                "SELECT * FROM t WHERE a = ? AND b = '?' AND \"c?\" = ? -- ?\n AND d = ? /* ? */ AND e = $$?$$ AND f = $1x"
            ),
            "SELECT * FROM t WHERE a = $1 AND b = '?' AND \"c?\" = $2 -- ?\n AND d = $3 /* ? */ AND e = $$?$$ AND f = $1x"
        );
        assert_eq!(numbered_placeholders("a - ? - -?"), "a - $1 - -$2");
        assert!(has_returning("INSERT INTO t (a) VALUES (1) RETURNING id"));
        assert!(!has_returning("INSERT INTO returning_t (a) VALUES (1)"));
    }

    #[test]
    fn urls_are_checked_and_passwords_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert!(
            parse_url("mysql://u@h/db")
                .unwrap_err()
                .contains("not a PostgreSQL URL")
        );
        assert!(parse_url("postgres://u@h:notaport/db").is_err());
        let c = client_config("postgres://u@h:5433/db", "t", None, Some("pw".into())).unwrap();
        assert_eq!(c.get_password(), Some(&b"pw"[..]));
        assert_eq!(c.get_ports(), [5433]);
        let c = client_config("postgres://u:inurl@h/db", "t", None, Some("pw".into())).unwrap();
        assert_eq!(
            c.get_password(),
            Some(&b"inurl"[..]),
            "the URL's password wins"
        );
        let c = client_config("postgres://h/db", "t", Some("me".into()), None).unwrap();
        assert_eq!(c.get_user(), Some("me"));
    }

    #[test]
    fn numerics_read_as_decimal_text() {
        // 12345.678: digits [1, 2345, 6780], weight 1, scale 3.
        let mut raw = Vec::new();
        for v in [3i16, 1, 0, 3, 1, 2345, 6780] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(numeric_text(&raw).unwrap(), "12345.678");
        // -0.0005: digits [5], weight -1, scale 4.
        let mut raw = Vec::new();
        for v in [1i16, -1, 0x4000u16 as i16, 4, 5] {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(numeric_text(&raw).unwrap(), "-0.0005");
        assert!(numeric_text(&[0, 1]).is_err());
    }
}
