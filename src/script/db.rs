//! `system.db`: SQL against the project's databases, as Ignition's functions of the same
//! names: `runQuery`, `runPrepQuery` (a Dataset of the rows), `runUpdateQuery`,
//! `runPrepUpdate` (the number of rows changed, or the new row's key with `getKey`).
//!
//! The database is the project's own when no `database` is named: the message store's
//! PostgreSQL database when `[store] url` is set, else `data/secsgate.sqlite` (where the
//! SQLite store writes). A `[[database]]` of project.toml is an SQLite file (`path`) or a
//! PostgreSQL database (`url`). Every call runs one statement with the GIL released.
//!
//! - SQLite: each call opens the file, runs the statement and closes it; a busy database is
//!   waited for up to 5 s.
//! - PostgreSQL: each call takes a connection from a small pool (made when none is idle).
//!   Ignition's `?` placeholders become `$1, $2, ...` (outside quotes and comments), and the
//!   values go as text the server converts to the type the statement wants. With `getKey`,
//!   a statement without its own `RETURNING` gets `RETURNING *`, and the key is the first
//!   column of the row it returns (the `ID` of the store's tables; -1 when no row was
//!   inserted). Columns of types other than bool, integers, floats, numeric, text, bytea,
//!   json, date, timestamp and uuid are refused with a message to cast them (`col::text`).

#![allow(non_snake_case)]

use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString};
use rusqlite::types::Value as SqlValue;

use super::host;
use super::system::Dataset;
use crate::store::DatabaseLocation;
use crate::store::postgres::{self as pg, Value};

pyo3::create_exception!(
    system.db,
    DatabaseError,
    PyException,
    "A system.db call failed: unknown database, bad SQL, or the database refused it."
);

/// A value a script passes.
fn value(v: &Bound<'_, PyAny>) -> PyResult<Value> {
    if v.is_none() {
        Ok(Value::Null)
    } else if v.is_instance_of::<PyBool>() {
        Ok(Value::Bool(v.extract::<bool>()?))
    } else if v.is_instance_of::<PyInt>() {
        Ok(Value::Int(v.extract()?))
    } else if v.is_instance_of::<PyFloat>() {
        Ok(Value::Float(v.extract()?))
    } else if let Ok(b) = v.cast::<PyBytes>() {
        Ok(Value::Bytes(b.as_bytes().to_vec()))
    } else if let Ok(s) = v.cast::<PyString>() {
        Ok(Value::Text(s.to_str()?.to_owned()))
    } else {
        // Dates and other objects go in as their text, as a JDBC driver would convert them.
        Ok(Value::Text(v.str()?.to_string()))
    }
}

fn values(args: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<Value>> {
    match args {
        None => Ok(Vec::new()),
        Some(a) if a.is_none() => Ok(Vec::new()),
        Some(a) => a.try_iter()?.map(|v| value(&v?)).collect(),
    }
}

/// A value as SQLite takes it (a bool is 0 or 1).
fn sqlite_value(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Int(i) => SqlValue::Integer(*i),
        Value::Float(f) => SqlValue::Real(*f),
        Value::Text(t) => SqlValue::Text(t.clone()),
        Value::Bytes(b) => SqlValue::Blob(b.clone()),
    }
}

fn from_sqlite(v: SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::Int(i),
        SqlValue::Real(f) => Value::Float(f),
        SqlValue::Text(t) => Value::Text(t),
        SqlValue::Blob(b) => Value::Bytes(b),
    }
}

fn database(name: &str) -> PyResult<DatabaseLocation> {
    let host = host::current().ok_or_else(|| {
        DatabaseError::new_err("system.db works on the handler threads of a running gateway")
    })?;
    host.database(name)
        .map_err(|e| DatabaseError::new_err(e.to_string()))
}

fn open(path: &PathBuf) -> Result<rusqlite::Connection, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let conn = rusqlite::Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Column names and rows.
type Rows = (Vec<String>, Vec<Vec<Value>>);

/// Runs a query on an SQLite file: column names and rows.
fn sqlite_query(path: &PathBuf, sql: &str, args: &[Value]) -> Result<Rows, String> {
    let conn = open(path)?;
    let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let n = columns.len();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(args.iter().map(sqlite_value)))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            values.push(from_sqlite(
                row.get::<_, SqlValue>(i).map_err(|e| e.to_string())?,
            ));
        }
        out.push(values);
    }
    Ok((columns, out))
}

/// Runs a statement that changes rows on an SQLite file: how many it changed, or the new
/// row's key.
fn sqlite_update(path: &PathBuf, sql: &str, args: &[Value], get_key: bool) -> Result<i64, String> {
    let conn = open(path)?;
    let changed = conn
        .execute(
            sql,
            rusqlite::params_from_iter(args.iter().map(sqlite_value)),
        )
        .map_err(|e| e.to_string())?;
    Ok(if get_key {
        conn.last_insert_rowid()
    } else {
        i64::try_from(changed).unwrap_or(i64::MAX)
    })
}

/// The statement as PostgreSQL takes it: `?` numbered when there are arguments.
fn pg_sql(sql: &str, args: &[Value]) -> String {
    if args.is_empty() {
        sql.to_string()
    } else {
        pg::numbered_placeholders(sql)
    }
}

fn pg_error(e: &postgres::Error) -> String {
    pg::describe(e)
}

/// Runs a query on PostgreSQL: column names and rows.
fn pg_query(url: &str, sql: &str, args: &[Value]) -> Result<Rows, String> {
    let mut client = pg::pooled(url).map_err(|e| e.to_string())?;
    let params: Vec<&(dyn postgres::types::ToSql + Sync)> = args
        .iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect();
    let stmt = client
        .prepare(&pg_sql(sql, args))
        .map_err(|e| pg_error(&e))?;
    let columns: Vec<String> = stmt
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let rows = client.query(&stmt, &params).map_err(|e| pg_error(&e))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut values = Vec::with_capacity(columns.len());
        for (i, column) in columns.iter().enumerate() {
            values.push(row.try_get::<_, Value>(i).map_err(|e| {
                let why = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.to_string());
                format!("column {column}: {why}")
            })?);
        }
        out.push(values);
    }
    Ok((columns, out))
}

/// Runs a statement that changes rows on PostgreSQL: how many it changed, or the new row's
/// key (the first column of what `RETURNING` gives).
fn pg_update(url: &str, sql: &str, args: &[Value], get_key: bool) -> Result<i64, String> {
    let mut client = pg::pooled(url).map_err(|e| e.to_string())?;
    let params: Vec<&(dyn postgres::types::ToSql + Sync)> = args
        .iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect();
    let mut sql = pg_sql(sql, args);
    if !get_key {
        let changed = client.execute(&sql, &params).map_err(|e| pg_error(&e))?;
        return Ok(i64::try_from(changed).unwrap_or(i64::MAX));
    }
    if !pg::has_returning(&sql) {
        let trimmed = sql.trim_end().trim_end_matches(';').len();
        sql.truncate(trimmed);
        sql.push_str(" RETURNING *");
    }
    let rows = client.query(&sql, &params).map_err(|e| pg_error(&e))?;
    let Some(row) = rows.first() else {
        return Ok(-1);
    };
    match row.try_get::<_, Value>(0).map_err(|e| pg_error(&e))? {
        Value::Int(i) => Ok(i),
        Value::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| format!("the key '{t}' (the first column returned) is not a number")),
        other => Err(format!(
            "the key {other:?} (the first column returned) is not a number; name it with RETURNING"
        )),
    }
}

fn to_python(py: Python<'_>, v: Value) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any().unbind(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::Float(f) => f.into_pyobject(py)?.into_any().unbind(),
        Value::Text(t) => PyString::new(py, &t).into_any().unbind(),
        Value::Bytes(b) => PyBytes::new(py, &b).into_any().unbind(),
    })
}

fn run_query(py: Python<'_>, sql: String, args: Vec<Value>, db: &str) -> PyResult<Dataset> {
    let location = database(db)?;
    let (columns, rows) = py
        .detach(move || match &location {
            DatabaseLocation::Sqlite(path) => sqlite_query(path, &sql, &args),
            DatabaseLocation::Postgres(url) => pg_query(url, &sql, &args),
        })
        .map_err(DatabaseError::new_err)?;
    let rows = rows
        .into_iter()
        .map(|r| r.into_iter().map(|v| to_python(py, v)).collect())
        .collect::<PyResult<_>>()?;
    Ok(Dataset::new(columns, rows))
}

fn run_update(
    py: Python<'_>,
    sql: String,
    args: Vec<Value>,
    db: &str,
    get_key: bool,
) -> PyResult<i64> {
    let location = database(db)?;
    py.detach(move || match &location {
        DatabaseLocation::Sqlite(path) => sqlite_update(path, &sql, &args, get_key),
        DatabaseLocation::Postgres(url) => pg_update(url, &sql, &args, get_key),
    })
    .map_err(DatabaseError::new_err)
}

/// `system.db`: SQL against the project's databases.
#[pymodule]
pub mod db {
    use super::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("DatabaseError", m.py().get_type::<DatabaseError>())
    }

    /// A SELECT: a Dataset of its rows.
    #[pyfunction]
    #[pyo3(signature = (query, database = "", tx = None))]
    fn runQuery(
        py: Python<'_>,
        query: String,
        database: &str,
        tx: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Dataset> {
        let _ = tx;
        run_query(py, query, Vec::new(), database)
    }

    /// A SELECT with `?` placeholders filled from `args`: a Dataset of its rows.
    #[pyfunction]
    #[pyo3(signature = (query, args = None, database = "", tx = None))]
    fn runPrepQuery(
        py: Python<'_>,
        query: String,
        args: Option<&Bound<'_, PyAny>>,
        database: &str,
        tx: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Dataset> {
        let _ = tx;
        run_query(py, query, values(args)?, database)
    }

    /// An INSERT, UPDATE or DELETE: the rows changed, or the new row's key with `getKey`.
    #[pyfunction]
    #[pyo3(signature = (query, database = "", tx = None, getKey = false, skipAudit = false))]
    fn runUpdateQuery(
        py: Python<'_>,
        query: String,
        database: &str,
        tx: Option<&Bound<'_, PyAny>>,
        getKey: bool,
        skipAudit: bool,
    ) -> PyResult<i64> {
        let _ = (tx, skipAudit);
        run_update(py, query, Vec::new(), database, getKey)
    }

    /// An INSERT, UPDATE or DELETE with `?` placeholders filled from `args`: the rows
    /// changed, or the new row's key with `getKey`.
    #[pyfunction]
    #[pyo3(signature = (query, args = None, database = "", tx = None, getKey = false, skipAudit = false))]
    fn runPrepUpdate(
        py: Python<'_>,
        query: String,
        args: Option<&Bound<'_, PyAny>>,
        database: &str,
        tx: Option<&Bound<'_, PyAny>>,
        getKey: bool,
        skipAudit: bool,
    ) -> PyResult<i64> {
        let _ = (tx, skipAudit);
        run_update(py, query, values(args)?, database, getKey)
    }
}
