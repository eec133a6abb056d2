//! `system.db`: SQL against the project's databases, as Ignition's functions of the same
//! names: `runQuery`, `runPrepQuery` (a Dataset of the rows), `runUpdateQuery`,
//! `runPrepUpdate` (the number of rows changed, or the new row's key with `getKey`).
//!
//! The databases are SQLite files: the project's own (`data/secsgate.sqlite`, where the
//! message store writes) when no `database` is named, or a `[[database]]` of project.toml.
//! Each call opens the file, runs one statement and closes it, with the GIL released; a busy
//! database is waited for up to 5 s.

#![allow(non_snake_case)]

use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString};
use rusqlite::types::Value as SqlValue;

use super::host;
use super::system::Dataset;

pyo3::create_exception!(
    system.db,
    DatabaseError,
    PyException,
    "A system.db call failed: unknown database, bad SQL, or the database refused it."
);

/// A value a script passes, as SQLite takes it.
fn sql_value(v: &Bound<'_, PyAny>) -> PyResult<SqlValue> {
    if v.is_none() {
        Ok(SqlValue::Null)
    } else if v.is_instance_of::<PyBool>() {
        Ok(SqlValue::Integer(i64::from(v.extract::<bool>()?)))
    } else if v.is_instance_of::<PyInt>() {
        Ok(SqlValue::Integer(v.extract()?))
    } else if v.is_instance_of::<PyFloat>() {
        Ok(SqlValue::Real(v.extract()?))
    } else if let Ok(b) = v.cast::<PyBytes>() {
        Ok(SqlValue::Blob(b.as_bytes().to_vec()))
    } else if let Ok(s) = v.cast::<PyString>() {
        Ok(SqlValue::Text(s.to_str()?.to_owned()))
    } else {
        // Dates and other objects go in as their text, as a JDBC driver would convert them.
        Ok(SqlValue::Text(v.str()?.to_string()))
    }
}

fn sql_values(args: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<SqlValue>> {
    match args {
        None => Ok(Vec::new()),
        Some(a) if a.is_none() => Ok(Vec::new()),
        Some(a) => a.try_iter()?.map(|v| sql_value(&v?)).collect(),
    }
}

fn database(name: &str) -> PyResult<PathBuf> {
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

/// Runs a query: column names and rows.
fn query(
    path: &PathBuf,
    sql: &str,
    args: &[SqlValue],
) -> Result<(Vec<String>, Vec<Vec<SqlValue>>), String> {
    let conn = open(path)?;
    let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let n = columns.len();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(args.iter()))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            values.push(row.get::<_, SqlValue>(i).map_err(|e| e.to_string())?);
        }
        out.push(values);
    }
    Ok((columns, out))
}

/// Runs a statement that changes rows: how many it changed, or the new row's key.
fn update(path: &PathBuf, sql: &str, args: &[SqlValue], get_key: bool) -> Result<i64, String> {
    let conn = open(path)?;
    let changed = conn
        .execute(sql, rusqlite::params_from_iter(args.iter()))
        .map_err(|e| e.to_string())?;
    Ok(if get_key {
        conn.last_insert_rowid()
    } else {
        i64::try_from(changed).unwrap_or(i64::MAX)
    })
}

fn to_python(py: Python<'_>, v: SqlValue) -> PyResult<Py<PyAny>> {
    Ok(match v {
        SqlValue::Null => py.None(),
        SqlValue::Integer(i) => i.into_pyobject(py)?.into_any().unbind(),
        SqlValue::Real(f) => f.into_pyobject(py)?.into_any().unbind(),
        SqlValue::Text(t) => PyString::new(py, &t).into_any().unbind(),
        SqlValue::Blob(b) => PyBytes::new(py, &b).into_any().unbind(),
    })
}

fn run_query(py: Python<'_>, sql: String, args: Vec<SqlValue>, db: &str) -> PyResult<Dataset> {
    let path = database(db)?;
    let (columns, rows) = py
        .detach(move || query(&path, &sql, &args))
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
    args: Vec<SqlValue>,
    db: &str,
    get_key: bool,
) -> PyResult<i64> {
    let path = database(db)?;
    py.detach(move || update(&path, &sql, &args, get_key))
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
        run_query(py, query, sql_values(args)?, database)
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
        run_update(py, query, sql_values(args)?, database, getKey)
    }
}
