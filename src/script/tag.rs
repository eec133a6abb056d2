//! `system.tag`: read the gateway's realtime tags (read-only, as Ignition's SECS/GEM tag
//! provider is): `readBlocking`, `browse`; the write functions raise.

#![allow(non_snake_case)]

use std::time::UNIX_EPOCH;

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use super::convert::to_python;
use super::host;
use crate::gem::clock::DateTime;
use crate::tags::{Quality, TagValue};

pyo3::create_exception!(
    system.tag,
    TagWriteError,
    PyException,
    "The SECS/GEM realtime tags are read-only."
);

/// A tag quality, as `QualifiedValue.quality` gives it.
#[pyclass(module = "system.tag", frozen)]
pub struct QualityCode {
    name: &'static str,
}

#[pymethods]
impl QualityCode {
    fn isGood(&self) -> bool {
        self.name == Quality::Good.name()
    }
    fn isBad(&self) -> bool {
        !self.isGood()
    }
    fn getName(&self) -> &'static str {
        self.name
    }
    fn __str__(&self) -> &'static str {
        self.name
    }
    fn __repr__(&self) -> String {
        format!("QualityCode({})", self.name)
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<PyString>() {
            Ok(s) => s.to_str().is_ok_and(|s| s == self.name),
            Err(_) => other
                .cast::<QualityCode>()
                .is_ok_and(|q| q.get().name == self.name),
        }
    }
}

/// A tag's value with its quality and timestamp (`readBlocking` returns one per path).
#[pyclass(module = "system.tag", frozen)]
pub struct QualifiedValue {
    value: Py<PyAny>,
    quality: Py<QualityCode>,
    /// ISO 8601, UTC.
    timestamp: String,
}

#[pymethods]
impl QualifiedValue {
    #[getter]
    fn value(&self, py: Python<'_>) -> Py<PyAny> {
        self.value.clone_ref(py)
    }
    #[getter]
    fn quality(&self, py: Python<'_>) -> Py<QualityCode> {
        self.quality.clone_ref(py)
    }
    #[getter]
    fn timestamp(&self) -> String {
        self.timestamp.clone()
    }
    fn getValue(&self, py: Python<'_>) -> Py<PyAny> {
        self.value.clone_ref(py)
    }
    fn getQuality(&self, py: Python<'_>) -> Py<QualityCode> {
        self.quality.clone_ref(py)
    }
    fn getTimestamp(&self) -> String {
        self.timestamp.clone()
    }
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "[{}, {}, {}]",
            self.value.bind(py).repr()?,
            self.quality.get().name,
            self.timestamp
        ))
    }
}

/// What `browse` returns: `getResults()` (a list of dicts with `name`, `fullPath`,
/// `hasChildren`, `tagType` and, for a tag, `value`), also iterable itself.
#[pyclass(module = "system.tag", frozen)]
pub struct BrowseResults {
    results: Py<PyList>,
}

#[pymethods]
impl BrowseResults {
    fn getResults(&self, py: Python<'_>) -> Py<PyList> {
        self.results.clone_ref(py)
    }
    fn getReturnedSize(&self, py: Python<'_>) -> usize {
        self.results.bind(py).len()
    }
    fn __len__(&self, py: Python<'_>) -> usize {
        self.results.bind(py).len()
    }
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.results.bind(py).try_iter().map(Bound::into_any)
    }
}

fn time_text(tag: &TagValue) -> String {
    let ms = tag
        .timestamp
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    DateTime::from_unix_millis(ms).format(2)
}

fn tags() -> PyResult<std::sync::Arc<crate::tags::Tags>> {
    let host = host::current().ok_or_else(|| {
        super::system::SecsGemError::new_err(
            "system.tag works on the handler threads of a running gateway",
        )
    })?;
    host.tags()
        .map_err(|e| super::system::SecsGemError::new_err(e.to_string()))
}

fn read_only() -> PyErr {
    TagWriteError::new_err(
        "the SECS/GEM realtime tags are read-only: they show what the equipment sent; send a message with system.secsgem.sendRequest to change the tool",
    )
}

/// `system.tag`: the realtime tags.
#[pymodule]
pub mod tag {
    use super::*;

    #[pymodule_export]
    use super::{BrowseResults, QualifiedValue, QualityCode};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("TagWriteError", m.py().get_type::<TagWriteError>())?;
        // Every write function refuses the same way.
        let write = m.getattr("writeBlocking")?;
        m.add("writeAsync", &write)?;
        m.add("write", &write)
    }

    /// Reads tags: one `QualifiedValue` per path, in order (an unknown path has quality
    /// `Bad_NotFound` and value `None`). `timeoutMillis` is accepted for Ignition's
    /// signature; reads never wait.
    #[pyfunction]
    #[pyo3(signature = (tagPaths, timeoutMillis = 45000))]
    fn readBlocking(
        py: Python<'_>,
        tagPaths: &Bound<'_, PyAny>,
        timeoutMillis: i64,
    ) -> PyResult<Vec<QualifiedValue>> {
        let _ = timeoutMillis;
        let paths: Vec<String> = match tagPaths.cast::<PyString>() {
            Ok(s) => vec![s.to_str()?.to_owned()],
            Err(_) => tagPaths.extract()?,
        };
        let tags = tags()?;
        paths
            .iter()
            .map(|p| {
                let tag = tags.read(p);
                Ok(QualifiedValue {
                    value: to_python(py, &tag.value)?.unbind(),
                    quality: Py::new(
                        py,
                        QualityCode {
                            name: tag.quality.name(),
                        },
                    )?,
                    timestamp: time_text(&tag),
                })
            })
            .collect()
    }

    /// Alias of `readBlocking` (Ignition 7's name).
    #[pyfunction]
    #[pyo3(signature = (tagPaths, timeoutMillis = 45000))]
    fn readAll(
        py: Python<'_>,
        tagPaths: &Bound<'_, PyAny>,
        timeoutMillis: i64,
    ) -> PyResult<Vec<QualifiedValue>> {
        readBlocking(py, tagPaths, timeoutMillis)
    }

    /// The tags and folders directly under a path (`"[SECSGEM]"` for the equipment).
    #[pyfunction]
    #[pyo3(signature = (path = "[SECSGEM]", filter = None))]
    fn browse(
        py: Python<'_>,
        path: &str,
        filter: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<BrowseResults> {
        let _ = filter;
        let tags = tags()?;
        let results = PyList::empty(py);
        for entry in tags.browse(path) {
            let d = PyDict::new(py);
            d.set_item("name", &entry.name)?;
            d.set_item("fullPath", &entry.full_path)?;
            d.set_item("hasChildren", entry.has_children)?;
            d.set_item(
                "tagType",
                if entry.has_children {
                    "Folder"
                } else {
                    "AtomicTag"
                },
            )?;
            if let Some(v) = &entry.value {
                d.set_item("value", to_python(py, v)?)?;
            }
            results.append(d)?;
        }
        Ok(BrowseResults {
            results: results.unbind(),
        })
    }

    /// Raises: the tags are read-only (also as `writeAsync` and `write`).
    #[pyfunction]
    #[pyo3(signature = (*args, **kwargs))]
    fn writeBlocking(
        args: &Bound<'_, pyo3::types::PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let _ = (args, kwargs);
        Err(read_only())
    }
}
