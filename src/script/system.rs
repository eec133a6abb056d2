//! The `system` module injected into the embedded interpreter: `system.secsgem` (the scripting
//! API for equipment) and `system.util` (loggers, JSON).
//!
//! Every function that waits (`getResponse`) releases the GIL while it waits, and is woken
//! when the handler reaches its time limit (it raises `ScriptTimeout` then).

#![allow(non_snake_case)]

use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyBaseException, PyException, PyIndexError, PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use serde_json::Value;

use super::convert::{body_from_python, from_python, to_python};
use super::host::{CopyEquipment, Host, HostError};
use crate::secs2::StreamFunction;

pyo3::create_exception!(
    system,
    ScriptTimeout,
    PyBaseException,
    "Raised inside a handler that ran past its time limit."
);
pyo3::create_exception!(
    system.secsgem,
    SecsGemError,
    PyException,
    "A system.secsgem call failed: unknown equipment, not communicating, bad message."
);

/// The gateway of the engine running this thread's job.
fn host() -> PyResult<Arc<dyn Host>> {
    super::host::current().ok_or_else(|| {
        SecsGemError::new_err(
            "system.secsgem works only in handlers a gateway runs: this thread is not running one of its handlers (a thread the script started itself has no gateway; call system.secsgem from the handler)",
        )
    })
}

/// A gateway error as the `SecsGemError` a script sees.
fn gateway_error(e: HostError) -> PyErr {
    SecsGemError::new_err(e.to_string())
}

fn stream_function(text: &str) -> PyResult<StreamFunction> {
    text.parse()
        .map_err(|e: crate::secs2::message::StreamFunctionError| {
            PyValueError::new_err(e.to_string())
        })
}

fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a number of seconds >= 0, not {value}"
        ))
    })
}

/// A table of rows and named columns, as `toDataset` returns.
#[pyclass(module = "system.dataset", frozen)]
pub struct Dataset {
    columns: Vec<String>,
    rows: Vec<Vec<Py<PyAny>>>,
}

impl Dataset {
    /// A dataset of these columns and rows (each row as long as `columns`).
    pub fn new(columns: Vec<String>, rows: Vec<Vec<Py<PyAny>>>) -> Dataset {
        Dataset { columns, rows }
    }
}

impl Dataset {
    fn column(&self, col: &Bound<'_, PyAny>) -> PyResult<usize> {
        if let Ok(name) = col.cast::<PyString>() {
            let name = name.to_str()?;
            return self
                .columns
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| PyKeyError::new_err(format!("no column '{name}'")));
        }
        let i: usize = col.extract()?;
        if i < self.columns.len() {
            Ok(i)
        } else {
            Err(PyIndexError::new_err(format!(
                "column {i} out of range (0..{})",
                self.columns.len()
            )))
        }
    }

    fn row(&self, row: usize) -> PyResult<&Vec<Py<PyAny>>> {
        self.rows.get(row).ok_or_else(|| {
            PyIndexError::new_err(format!("row {row} out of range (0..{})", self.rows.len()))
        })
    }
}

#[pymethods]
impl Dataset {
    fn getColumnNames(&self) -> Vec<String> {
        self.columns.clone()
    }
    fn getColumnName(&self, index: usize) -> PyResult<String> {
        self.columns
            .get(index)
            .cloned()
            .ok_or_else(|| PyIndexError::new_err(format!("column {index} out of range")))
    }
    fn getColumnIndex(&self, name: &str) -> i64 {
        self.columns
            .iter()
            .position(|c| c == name)
            .map_or(-1, |i| i as i64)
    }
    fn getColumnCount(&self) -> usize {
        self.columns.len()
    }
    fn getRowCount(&self) -> usize {
        self.rows.len()
    }
    fn getValueAt(
        &self,
        py: Python<'_>,
        row: usize,
        col: &Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let c = self.column(col)?;
        Ok(self.row(row)?[c].clone_ref(py))
    }
    fn getColumnAsList(&self, py: Python<'_>, col: &Bound<'_, PyAny>) -> PyResult<Vec<Py<PyAny>>> {
        let c = self.column(col)?;
        Ok(self.rows.iter().map(|r| r[c].clone_ref(py)).collect())
    }
    fn __len__(&self) -> usize {
        self.rows.len()
    }
    fn __getitem__(&self, py: Python<'_>, row: usize) -> PyResult<Vec<Py<PyAny>>> {
        Ok(self.row(row)?.iter().map(|v| v.clone_ref(py)).collect())
    }
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rows = PyList::empty(py);
        for r in &self.rows {
            rows.append(PyList::new(py, r.iter().map(|v| v.clone_ref(py)))?)?;
        }
        rows.try_iter().map(|i| i.into_any())
    }
    fn __repr__(&self) -> String {
        format!("Dataset [{}R x {}C]", self.rows.len(), self.columns.len())
    }
}

/// A row of `toDataset`: one item of the body.
struct ItemRow {
    path: String,
    doc: Value,
    format: String,
    value: Value,
    code_desc: Value,
}

fn item_rows(value: &Value, path: String, out: &mut Vec<ItemRow>) {
    match value {
        Value::Array(children) => {
            out.push(ItemRow {
                path: path.clone(),
                doc: Value::String(String::new()),
                format: "L".into(),
                value: Value::Null,
                code_desc: Value::String(String::new()),
            });
            for (i, c) in children.iter().enumerate() {
                item_rows(c, format!("{path}/{i}"), out);
            }
        }
        Value::Object(obj)
            if obj
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| f.eq_ignore_ascii_case("L")) =>
        {
            let inner = obj
                .get("value")
                .cloned()
                .unwrap_or(Value::Array(Vec::new()));
            let start = out.len();
            item_rows(&inner, path, out);
            if let Some(row) = out.get_mut(start) {
                row.doc = obj
                    .get("doc")
                    .cloned()
                    .unwrap_or(Value::String(String::new()));
            }
        }
        Value::Object(obj) => out.push(ItemRow {
            path,
            doc: obj
                .get("doc")
                .cloned()
                .unwrap_or(Value::String(String::new())),
            format: obj
                .get("format")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            value: obj.get("value").cloned().unwrap_or(Value::Null),
            code_desc: obj
                .get("codeDesc")
                .cloned()
                .unwrap_or(Value::String(String::new())),
        }),
        other => out.push(ItemRow {
            path,
            doc: Value::String(String::new()),
            format: String::new(),
            value: other.clone(),
            code_desc: Value::String(String::new()),
        }),
    }
}

/// The body of a message object, JSON text, or a body.
fn body_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    let value = match obj.cast::<PyString>() {
        Ok(s) => serde_json::from_str(s.to_str()?)
            .map_err(|e| PyValueError::new_err(format!("not valid JSON: {e}")))?,
        Err(_) => from_python(obj)?,
    };
    Ok(match value {
        Value::Object(mut m) if m.contains_key("header") || m.contains_key("body") => {
            m.remove("body").unwrap_or(Value::Null)
        }
        other => other,
    })
}

const TREE_COLUMNS: [&str; 13] = [
    "path",
    "text",
    "icon",
    "background",
    "foreground",
    "tooltip",
    "border",
    "selectedText",
    "selectedIcon",
    "selectedBackground",
    "selectedForeground",
    "selectedTooltip",
    "selectedBorder",
];

fn item_label(format: &str, value: &Value, doc: &str, children: usize) -> String {
    let what = if format == "L" {
        format!("L [{children}]")
    } else {
        format!(
            "{format} {}",
            match value {
                Value::String(s) => format!("\"{s}\""),
                other => other.to_string(),
            }
        )
    };
    if doc.is_empty() {
        what
    } else {
        format!("{what} ({doc})")
    }
}

#[pymodule]
pub mod system {
    use super::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        let py = m.py();
        m.add("ScriptTimeout", py.get_type::<ScriptTimeout>())?;
        m.add(
            "Payload",
            py.get_type::<super::super::payload::PayloadDict>(),
        )?;
        let modules = py.import("sys")?.getattr("modules")?;
        for sub in ["secsgem", "util", "dataset", "tag", "db"] {
            modules.set_item(format!("system.{sub}"), m.getattr(sub)?)?;
        }
        Ok(())
    }

    #[pymodule_export]
    use super::super::tag::tag;

    #[pymodule_export]
    use super::super::db::db;

    /// `system.dataset`: the Dataset type.
    #[pymodule]
    pub mod dataset {
        #[pymodule_export]
        use super::Dataset;
    }

    /// `system.secsgem`: talk to equipment.
    #[pymodule]
    pub mod secsgem {
        use super::*;

        #[pymodule_init]
        fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
            m.add("SecsGemError", m.py().get_type::<SecsGemError>())
        }

        /// Sends a message to the equipment; returns its transaction ID at once.
        #[pyfunction]
        #[pyo3(signature = (streamFunction, reply, body, equipment))]
        fn sendRequest(
            py: Python<'_>,
            streamFunction: &str,
            reply: &Bound<'_, PyAny>,
            body: &Bound<'_, PyAny>,
            equipment: String,
        ) -> PyResult<u32> {
            let sf = stream_function(streamFunction)?;
            let reply = truthy(reply)?;
            let body = body_from_python(body)?;
            let host = host()?;
            py.detach(move || host.send_request(sf, reply, body, &equipment))
                .map_err(gateway_error)
        }

        /// Waits up to `timeout` seconds for the reply to a transaction; `None` if there is
        /// none by then. Replies are waited for, not polled: `poll` is accepted and unused.
        #[pyfunction]
        #[pyo3(signature = (transactionID, equipment, timeout = 5.0, poll = 150.0))]
        fn getResponse(
            py: Python<'_>,
            transactionID: u32,
            equipment: String,
            timeout: f64,
            poll: f64,
        ) -> PyResult<Py<PyAny>> {
            let _ = poll;
            let timeout = seconds(timeout, "timeout")?;
            let host = host()?;
            let reply = py
                .detach(move || host.get_response(transactionID, &equipment, timeout))
                .map_err(gateway_error)?;
            // Woken by the watchdog: the handler is past its limit.
            if crate::script::guard::current().is_some_and(|c| c.is_cancelled()) {
                return Err(crate::script::guard::timed_out("getResponse"));
            }
            match reply {
                Some(m) => Ok(to_python(py, &m)?.unbind()),
                None => Ok(py.None()),
            }
        }

        /// Replies to a message the equipment sent (from a custom response handler).
        #[pyfunction]
        #[pyo3(signature = (transactionID, systemBytes, streamFunction, body, equipment))]
        fn sendResponse(
            py: Python<'_>,
            transactionID: u32,
            systemBytes: u32,
            streamFunction: &str,
            body: &Bound<'_, PyAny>,
            equipment: String,
        ) -> PyResult<()> {
            let sf = stream_function(streamFunction)?;
            let body = body_from_python(body)?;
            let host = host()?;
            py.detach(move || host.send_response(transactionID, systemBytes, sf, body, &equipment))
                .map_err(gateway_error)
        }

        /// One row per item of a message (or body): path, doc, format, value, codeDesc.
        #[pyfunction]
        fn toDataset(py: Python<'_>, secsObject: &Bound<'_, PyAny>) -> PyResult<Dataset> {
            let body = body_value(secsObject)?;
            let mut rows = Vec::new();
            if !matches!(&body, Value::Null) && body != Value::String(String::new()) {
                item_rows(&body, "0".into(), &mut rows);
            }
            let columns = ["path", "doc", "format", "value", "codeDesc"]
                .map(String::from)
                .to_vec();
            let rows = rows
                .into_iter()
                .map(|r| -> PyResult<Vec<Py<PyAny>>> {
                    Ok(vec![
                        PyString::new(py, &r.path).into_any().unbind(),
                        to_python(py, &r.doc)?.unbind(),
                        PyString::new(py, &r.format).into_any().unbind(),
                        to_python(py, &r.value)?.unbind(),
                        to_python(py, &r.code_desc)?.unbind(),
                    ])
                })
                .collect::<PyResult<_>>()?;
            Ok(Dataset { columns, rows })
        }

        /// Alias of `toDataset`.
        #[pyfunction]
        fn toDataSet(py: Python<'_>, secsObject: &Bound<'_, PyAny>) -> PyResult<Dataset> {
            toDataset(py, secsObject)
        }

        /// The rows of `toDataset` in the 13-column form a tree view shows.
        #[pyfunction]
        fn toTreeDataset(py: Python<'_>, dataset: &Bound<'_, Dataset>) -> PyResult<Dataset> {
            let ds = dataset.get();
            let col = |name: &str| ds.columns.iter().position(|c| c == name);
            let (Some(pc), Some(fc), Some(vc)) = (col("path"), col("format"), col("value")) else {
                return Err(PyValueError::new_err(
                    "toTreeDataset takes the Dataset that toDataset returns",
                ));
            };
            let (dc, cc) = (col("doc"), col("codeDesc"));
            let paths: Vec<String> = ds
                .rows
                .iter()
                .map(|r| r[pc].bind(py).extract())
                .collect::<PyResult<_>>()?;
            // Children per item path, counted once.
            let mut children: std::collections::HashMap<&str, usize> = Default::default();
            for p in &paths {
                if let Some((parent, _)) = p.rsplit_once('/') {
                    *children.entry(parent).or_default() += 1;
                }
            }
            // The tree path (labels joined by '/') of each item path seen so far.
            let mut tree_paths: std::collections::HashMap<&str, String> = Default::default();
            let mut out = Vec::new();
            for (row, path) in ds.rows.iter().zip(&paths) {
                let text_of = |c: Option<usize>| -> PyResult<String> {
                    match c {
                        Some(c) => {
                            let v = row[c].bind(py);
                            if v.is_none() {
                                Ok(String::new())
                            } else {
                                Ok(v.str()?.to_string())
                            }
                        }
                        None => Ok(String::new()),
                    }
                };
                let format: String = row[fc].bind(py).extract()?;
                let value = from_python(row[vc].bind(py)).unwrap_or(Value::Null);
                let doc = text_of(dc)?;
                let code_desc = text_of(cc)?;
                let children = children.get(path.as_str()).copied().unwrap_or(0);
                let index = path.rsplit('/').next().unwrap_or("0");
                let mut text = format!("{index}: {}", item_label(&format, &value, &doc, children));
                if !code_desc.is_empty() {
                    text.push_str(&format!(" = {code_desc}"));
                }
                let parent_path = path
                    .rsplit_once('/')
                    .map(|(parent, _)| {
                        tree_paths
                            .get(parent)
                            .cloned()
                            .unwrap_or_else(|| parent.to_string())
                    })
                    .unwrap_or_default();
                let tree_path = if parent_path.is_empty() {
                    text.clone()
                } else {
                    format!("{parent_path}/{text}")
                };
                tree_paths.insert(path.as_str(), tree_path);
                let cells: [&str; 13] = [
                    &parent_path,
                    &text,
                    "default",
                    "color(255,255,255,255)",
                    "color(0,0,0,255)",
                    &doc,
                    "",
                    &text,
                    "default",
                    "color(250,214,138,255)",
                    "color(0,0,0,255)",
                    &doc,
                    "",
                ];
                out.push(
                    cells
                        .iter()
                        .map(|c| PyString::new(py, c).into_any().unbind())
                        .collect(),
                );
            }
            Ok(Dataset {
                columns: TREE_COLUMNS.map(String::from).to_vec(),
                rows: out,
            })
        }

        /// Alias of `toTreeDataset`.
        #[pyfunction]
        fn toTreeDataSet(py: Python<'_>, dataset: &Bound<'_, Dataset>) -> PyResult<Dataset> {
            toTreeDataset(py, dataset)
        }

        /// Copies an equipment connection under a new name, overriding its address, port and
        /// device ID; starts it when `enabled`.
        #[pyfunction]
        #[pyo3(signature = (equipmentSource, newEquipmentName, enabled, activeAddress, activePort, passiveAddress, passivePort, deviceId, dbTablePrefix = None, description = None))]
        #[allow(clippy::too_many_arguments)]
        fn copyEquipment(
            py: Python<'_>,
            equipmentSource: String,
            newEquipmentName: String,
            enabled: &Bound<'_, PyAny>,
            activeAddress: Option<String>,
            activePort: Option<i64>,
            passiveAddress: Option<String>,
            passivePort: Option<i64>,
            deviceId: i64,
            dbTablePrefix: Option<String>,
            description: Option<String>,
        ) -> PyResult<()> {
            let _ = dbTablePrefix;
            let port = |p: Option<i64>, what: &str| -> PyResult<Option<u16>> {
                match p {
                    None | Some(0) => Ok(None),
                    Some(n) => u16::try_from(n).map(Some).map_err(|_| {
                        PyValueError::new_err(format!("{what} {n} is not a TCP port"))
                    }),
                }
            };
            let copy = CopyEquipment {
                source: equipmentSource,
                name: newEquipmentName,
                enabled: truthy(enabled)?,
                active_address: activeAddress.filter(|a| !a.trim().is_empty()),
                active_port: port(activePort, "activePort")?,
                passive_address: passiveAddress.filter(|a| !a.trim().is_empty()),
                passive_port: port(passivePort, "passivePort")?,
                device_id: u16::try_from(deviceId)
                    .ok()
                    .filter(|d| *d <= 0x7FFF)
                    .ok_or_else(|| {
                        PyValueError::new_err(format!(
                            "deviceId {deviceId} is out of range 0..=32767"
                        ))
                    })?,
                description,
            };
            let host = host()?;
            py.detach(move || host.copy_equipment(copy))
                .map_err(gateway_error)
        }

        /// Starts an event run (a configured sequence of event reports) of a simulator that runs
        /// in this gateway (`[[simulator]]` in project.toml).
        #[pyfunction]
        fn startSimEventRun(
            py: Python<'_>,
            simulatorName: String,
            eventRunName: String,
        ) -> PyResult<()> {
            let host = host()?;
            py.detach(move || host.start_sim_event_run(&simulatorName, &eventRunName))
                .map_err(gateway_error)
        }

        /// A process program a tool sent in S7F3: a dict with `ppid`, `editDate`, `ppbody`
        /// (and `ppBody`, the same value: text for an `A` body, a list of byte values for `B`)
        /// and `bodyFormat` (`"A"` or `"B"`); `None` if there is none with that PPID.
        #[pyfunction]
        fn getToolProgram<'py>(
            py: Python<'py>,
            ppid: String,
        ) -> PyResult<Option<Bound<'py, PyDict>>> {
            let host = host()?;
            let Some(program) = py
                .detach(move || host.tool_program(&ppid))
                .map_err(gateway_error)?
            else {
                return Ok(None);
            };
            let dict = PyDict::new(py);
            let body: Bound<'py, PyAny> = if program.body_format == "A" {
                PyString::new(py, &String::from_utf8_lossy(&program.body)).into_any()
            } else {
                PyList::new(py, program.body.iter().map(|b| i64::from(*b)))?.into_any()
            };
            dict.set_item("ppid", &program.ppid)?;
            dict.set_item("editDate", &program.edit_date)?;
            dict.set_item("ppbody", &body)?;
            dict.set_item("ppBody", &body)?;
            dict.set_item("bodyFormat", &program.body_format)?;
            Ok(Some(dict))
        }

        /// Every stored process program: a Dataset with columns `ppid`, `editDate`,
        /// `bodyFormat`.
        #[pyfunction]
        fn getToolProgramDataset(py: Python<'_>) -> PyResult<Dataset> {
            let host = host()?;
            let programs = py
                .detach(move || host.tool_programs())
                .map_err(gateway_error)?;
            let columns = ["ppid", "editDate", "bodyFormat"]
                .map(String::from)
                .to_vec();
            let rows = programs
                .into_iter()
                .map(|(ppid, date, format)| {
                    vec![
                        PyString::new(py, &ppid).into_any().unbind(),
                        PyString::new(py, &date).into_any().unbind(),
                        PyString::new(py, &format).into_any().unbind(),
                    ]
                })
                .collect();
            Ok(Dataset { columns, rows })
        }

        /// Deletes a stored process program (a warning is logged if there is none).
        #[pyfunction]
        fn deleteToolProgram(py: Python<'_>, ppid: String) -> PyResult<()> {
            let host = host()?;
            let name = ppid.clone();
            let deleted = py
                .detach(move || host.delete_tool_program(&ppid))
                .map_err(gateway_error)?;
            if !deleted {
                tracing::warn!(target: "script", "deleteToolProgram: no process program '{name}'");
            }
            Ok(())
        }

        /// Enables or disables connections by name; returns a message for each one that could
        /// not be changed (an empty list is success).
        #[pyfunction]
        fn enableDisableEquipment(
            py: Python<'_>,
            enable: &Bound<'_, PyAny>,
            names: &Bound<'_, PyAny>,
        ) -> PyResult<Vec<String>> {
            let enable = truthy(enable)?;
            let names: Vec<String> = match names.cast::<PyString>() {
                Ok(s) => vec![s.to_str()?.to_owned()],
                Err(_) => names
                    .try_iter()?
                    .map(|n| n?.extract::<String>())
                    .collect::<PyResult<_>>()?,
            };
            let host = host()?;
            Ok(py
                .detach(move || host.enable_disable_equipment(enable, &names))
                .iter()
                .map(ToString::to_string)
                .collect())
        }
    }

    /// `system.util`: loggers and JSON.
    #[pymodule]
    pub mod util {
        use super::*;

        #[pymodule_export]
        use super::Logger;

        /// A logger whose lines go to the gateway log under `name`.
        #[pyfunction]
        fn getLogger(name: String) -> Logger {
            Logger { name }
        }

        /// A Python object as JSON text.
        #[pyfunction]
        #[pyo3(signature = (pyObj, indentFactor = 0))]
        fn jsonEncode(pyObj: &Bound<'_, PyAny>, indentFactor: usize) -> PyResult<String> {
            let value = from_python(pyObj)?;
            if indentFactor == 0 {
                return Ok(value.to_string());
            }
            let indent = " ".repeat(indentFactor);
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
            serde::Serialize::serialize(&value, &mut ser)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            String::from_utf8(out).map_err(|e| PyValueError::new_err(e.to_string()))
        }

        /// JSON text as Python objects (dicts, lists, strings, numbers, booleans, None).
        #[pyfunction]
        fn jsonDecode<'py>(py: Python<'py>, jsonString: &str) -> PyResult<Bound<'py, PyAny>> {
            let value: Value = serde_json::from_str(jsonString)
                .map_err(|e| PyValueError::new_err(format!("not valid JSON: {e}")))?;
            to_python(py, &value)
        }
    }
}

/// Python truthiness, also reading the strings "True"/"False" that scripts pass.
fn truthy(v: &Bound<'_, PyAny>) -> PyResult<bool> {
    if let Ok(s) = v.cast::<PyString>() {
        let s = s.to_str()?.trim().to_ascii_lowercase();
        return match s.as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" | "" => Ok(false),
            _ => Err(PyValueError::new_err(format!("'{s}' is not a boolean"))),
        };
    }
    v.is_truthy()
}

/// `system.util.getLogger(name)`: info/debug/warn/error/trace and the `...f` format variants.
#[pyclass(module = "system.util", frozen)]
pub struct Logger {
    name: String,
}

/// The gateway log level a logger call writes at.
#[derive(Clone, Copy)]
enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Logger {
    fn log(&self, level: Level, message: &str) {
        let name = self.name.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "script", logger = name, "{message}"),
            Level::Debug => tracing::debug!(target: "script", logger = name, "{message}"),
            Level::Info => tracing::info!(target: "script", logger = name, "{message}"),
            Level::Warn => tracing::warn!(target: "script", logger = name, "{message}"),
            Level::Error => tracing::error!(target: "script", logger = name, "{message}"),
        }
    }

    fn text(message: &Bound<'_, PyAny>) -> PyResult<String> {
        Ok(message.str()?.to_string())
    }

    /// `format % args`, as the `...f` variants take.
    fn formatted(format: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<String> {
        if args.is_empty() {
            return Self::text(format);
        }
        Ok(format.rem(args)?.str()?.to_string())
    }

    fn enabled(level: Level) -> bool {
        match level {
            Level::Trace => tracing::enabled!(target: "script", tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(target: "script", tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(target: "script", tracing::Level::INFO),
            Level::Warn => tracing::enabled!(target: "script", tracing::Level::WARN),
            Level::Error => tracing::enabled!(target: "script", tracing::Level::ERROR),
        }
    }
}

#[pymethods]
impl Logger {
    fn getName(&self) -> String {
        self.name.clone()
    }
    fn trace(&self, message: &Bound<'_, PyAny>) -> PyResult<()> {
        self.log(Level::Trace, &Self::text(message)?);
        Ok(())
    }
    fn debug(&self, message: &Bound<'_, PyAny>) -> PyResult<()> {
        self.log(Level::Debug, &Self::text(message)?);
        Ok(())
    }
    fn info(&self, message: &Bound<'_, PyAny>) -> PyResult<()> {
        self.log(Level::Info, &Self::text(message)?);
        Ok(())
    }
    fn warn(&self, message: &Bound<'_, PyAny>) -> PyResult<()> {
        self.log(Level::Warn, &Self::text(message)?);
        Ok(())
    }
    fn error(&self, message: &Bound<'_, PyAny>) -> PyResult<()> {
        self.log(Level::Error, &Self::text(message)?);
        Ok(())
    }
    #[pyo3(signature = (format, *args))]
    fn tracef(&self, format: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.log(Level::Trace, &Self::formatted(format, args)?);
        Ok(())
    }
    #[pyo3(signature = (format, *args))]
    fn debugf(&self, format: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.log(Level::Debug, &Self::formatted(format, args)?);
        Ok(())
    }
    #[pyo3(signature = (format, *args))]
    fn infof(&self, format: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.log(Level::Info, &Self::formatted(format, args)?);
        Ok(())
    }
    #[pyo3(signature = (format, *args))]
    fn warnf(&self, format: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.log(Level::Warn, &Self::formatted(format, args)?);
        Ok(())
    }
    #[pyo3(signature = (format, *args))]
    fn errorf(&self, format: &Bound<'_, PyAny>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        self.log(Level::Error, &Self::formatted(format, args)?);
        Ok(())
    }
    fn isTraceEnabled(&self) -> bool {
        Self::enabled(Level::Trace)
    }
    fn isDebugEnabled(&self) -> bool {
        Self::enabled(Level::Debug)
    }
    fn isInfoEnabled(&self) -> bool {
        Self::enabled(Level::Info)
    }
    fn isWarnEnabled(&self) -> bool {
        Self::enabled(Level::Warn)
    }
    fn isErrorEnabled(&self) -> bool {
        Self::enabled(Level::Error)
    }
}

/// `sys.stdout`/`sys.stderr` replacement: `print` in handlers goes to the gateway log.
#[pyclass(module = "system", frozen)]
pub struct LogWriter {
    pub stream: &'static str,
    pub buffer: std::sync::Mutex<String>,
}

#[pymethods]
impl LogWriter {
    fn write(&self, text: &str) -> usize {
        if let Ok(mut buf) = self.buffer.lock() {
            buf.push_str(text);
            while let Some(at) = buf.find('\n') {
                let line: String = buf.drain(..=at).collect();
                tracing::info!(target: "script", stream = self.stream, "{}", line.trim_end());
            }
        }
        text.len()
    }
    fn flush(&self) {
        if let Ok(mut buf) = self.buffer.lock()
            && !buf.is_empty()
        {
            tracing::info!(target: "script", stream = self.stream, "{}", buf.trim_end());
            buf.clear();
        }
    }
    fn isatty(&self) -> bool {
        false
    }
}
