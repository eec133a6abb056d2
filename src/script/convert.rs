//! Python objects to and from `serde_json::Value`, the bridge between handler scripts and the
//! JSON form of SECS messages.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Value};

use crate::secs2::{Item, json};

/// Deepest nesting converted (a guard against self-referencing containers).
const MAX_DEPTH: usize = 512;

/// A JSON value as a Python object (objects become dicts, arrays lists).
pub fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_python(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, to_python(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// A Python object as JSON: dicts (string keys), lists, tuples, strings, numbers, booleans and
/// None. Non-finite floats become `"NaN"`, `"Infinity"`, `"-Infinity"` as in the JSON form.
pub fn from_python(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    convert(obj, 0)
}

fn convert(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Value> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(
            "value nests too deeply to convert to JSON",
        ));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(PyValueError::new_err(format!(
            "integer {obj} is too large for a SECS value"
        )));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(json::float_value(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_str()?.to_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::new();
        for (k, v) in d.iter() {
            let key = k
                .cast::<PyString>()
                .map_err(|_| PyTypeError::new_err(format!("dict key {k} is not a string")))?
                .to_str()?
                .to_owned();
            map.insert(key, convert(&v, depth + 1)?);
        }
        return Ok(Value::Object(map));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        let mut out = Vec::new();
        for item in obj.try_iter()? {
            out.push(convert(&item?, depth + 1)?);
        }
        return Ok(Value::Array(out));
    }
    // Java-style wrappers and other sequences scripts may hand over.
    if let Ok(iter) = obj.try_iter()
        && !obj.is_instance_of::<pyo3::types::PyBytes>()
    {
        let mut out = Vec::new();
        for item in iter {
            out.push(convert(&item?, depth + 1)?);
        }
        return Ok(Value::Array(out));
    }
    Err(PyTypeError::new_err(format!(
        "cannot convert {} to JSON",
        obj.get_type().name()?
    )))
}

/// A message body given by a script: `""` (or blank) for no body, JSON text, or a Python
/// object in the JSON form. `None` is refused, as the scripting API documents.
pub fn body_from_python(body: &Bound<'_, PyAny>) -> PyResult<Option<Item>> {
    if body.is_none() {
        return Err(PyValueError::new_err(
            "body is None; pass \"\" for a message without a body",
        ));
    }
    let value = match body.cast::<PyString>() {
        Ok(s) => {
            let text = s.to_str()?;
            if text.trim().is_empty() {
                return Ok(None);
            }
            serde_json::from_str::<Value>(text)
                .map_err(|e| PyValueError::new_err(format!("body is not valid JSON: {e}")))?
        }
        Err(_) => from_python(body)?,
    };
    json::body_from_json(&value).map_err(|e| PyValueError::new_err(format!("bad body: {e}")))
}
