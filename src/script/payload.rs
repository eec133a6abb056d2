//! A handler's `payload`: built on the worker as a dict. The `Message` entry (the received
//! message as JSON text) is made only when the handler reads it: a handler that looks only at
//! `payload["Equipment"]` or `payload["StreamFunction"]` never pays for the JSON.

use std::sync::{Arc, Mutex, OnceLock};

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use serde_json::Value;

use super::convert;
use crate::sdl::Sdl;
use crate::secs2::{Message, json as secs_json};

/// The key whose value may be made on first use.
const MESSAGE: &str = "Message";

/// A received message whose JSON text is made on first use, once, however many payloads
/// share it (the custom response and the realtime handler get the same message).
#[derive(Clone)]
pub struct LazyMessage {
    message: Arc<Message>,
    sdl: Option<Arc<Sdl>>,
    /// The place, among its S/F's definitions in `sdl`, of the definition it matched.
    definition: Option<usize>,
    text: Arc<OnceLock<String>>,
}

impl LazyMessage {
    /// A message and the SDL (if the equipment has one) that annotates it with `doc` and
    /// `codeDesc`.
    pub fn new(message: Arc<Message>, sdl: Option<Arc<Sdl>>) -> LazyMessage {
        LazyMessage {
            message,
            sdl,
            definition: None,
            text: Arc::new(OnceLock::new()),
        }
    }

    /// The same, annotated as the SDL definition it matched describes it (its place among
    /// the definitions of its S/F; `None`: as [`Sdl::annotate`] finds it).
    pub fn with_definition(mut self, index: Option<usize>) -> LazyMessage {
        self.definition = index;
        self
    }

    /// The JSON text of the message (annotated when there is an SDL).
    /// The message itself.
    pub fn message(&self) -> &Arc<Message> {
        &self.message
    }

    pub fn text(&self) -> &str {
        self.text.get_or_init(|| match &self.sdl {
            Some(sdl) => {
                let mut value = secs_json::message_to_json(&self.message);
                let def = self
                    .definition
                    .and_then(|i| sdl.definitions(self.message.stream_function()).get(i));
                match def {
                    Some(def) => sdl.annotate_by(def, &self.message, &mut value),
                    None => sdl.annotate(&self.message, &mut value),
                }
                value.to_string()
            }
            None => secs_json::message_to_json_string(&self.message),
        })
    }
}

impl std::fmt::Debug for LazyMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyMessage")
            .field("message", &self.message.to_string())
            .field("sdl", &self.sdl.is_some())
            .field("made", &self.text.get().is_some())
            .finish()
    }
}

impl PartialEq for LazyMessage {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

/// One value of a handler's `payload` dict.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Int(i64),
    Str(String),
    Bool(bool),
    Strs(Vec<String>),
    Json(Value),
    /// A message's JSON text, made when the handler first reads it.
    Lazy(LazyMessage),
}

/// A handler's `payload`: keys and values, turned into a dict on the worker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload(pub Vec<(&'static str, Arg)>);

impl Payload {
    /// About how many bytes the payload holds: its message's encoded body (the JSON text
    /// made from it is of the same order), and a little for the other values. What a queued
    /// job is weighed by.
    pub fn weight(&self) -> usize {
        self.0
            .iter()
            .map(|(_, v)| match v {
                Arg::Lazy(m) => m.message.body.as_ref().map_or(0, |b| b.encoded_len()),
                Arg::Str(s) => s.len(),
                Arg::Strs(v) => v.iter().map(String::len).sum(),
                Arg::Json(v) => v.to_string().len(),
                Arg::Int(_) | Arg::Bool(_) => 8,
            })
            .sum::<usize>()
            + 64
    }

    /// The dict a handler sees: a plain dict, or (with a lazy value under `Message`) a dict
    /// that makes that value when it is first read.
    pub(crate) fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut lazy: Option<Pending> = None;
        let dict = if self.0.iter().any(|(_, v)| matches!(v, Arg::Lazy(_))) {
            Bound::new(
                py,
                PayloadDict {
                    pending: Mutex::new(None),
                },
            )?
            .into_super()
        } else {
            PyDict::new(py)
        };
        for (k, v) in &self.0 {
            match v {
                Arg::Int(i) => dict.set_item(*k, *i)?,
                Arg::Str(s) => dict.set_item(*k, s)?,
                Arg::Bool(b) => dict.set_item(*k, *b)?,
                Arg::Strs(list) => dict.set_item(*k, list)?,
                Arg::Json(value) => dict.set_item(*k, convert::to_python(py, value)?)?,
                Arg::Lazy(m) if *k == MESSAGE => {
                    lazy = Some(Pending {
                        message: m.clone(),
                        after: Vec::new(),
                    });
                    continue;
                }
                Arg::Lazy(m) => dict.set_item(*k, m.text())?,
            }
            if let Some(p) = &mut lazy {
                p.after.push(k);
            }
        }
        if let Some(m) = lazy
            && let Ok(payload) = dict.cast::<PayloadDict>()
            && let Ok(mut pending) = payload.get().pending.lock()
        {
            *pending = Some(m);
        }
        Ok(dict)
    }
}

/// `payload` with a `Message` not made yet. Behaves as a dict holding `Message` (a str):
/// indexing, `get`, `in`, `len`, iteration, `keys`/`values`/`items`, printing, comparing,
/// copying and JSON encoding all see it; it is made on the first of those that needs it.
#[pyclass(module = "system", name = "Payload", extends = PyDict, frozen)]
pub struct PayloadDict {
    pending: Mutex<Option<Pending>>,
}

/// The `Message` not made yet, and the keys that come after it (moved behind it when it is
/// made, so the dict keeps the payload's order).
struct Pending {
    message: LazyMessage,
    after: Vec<&'static str>,
}

/// Whether a key is `"Message"`.
fn is_message(key: &Bound<'_, PyAny>) -> bool {
    key.cast::<PyString>()
        .ok()
        .and_then(|s| s.to_str().ok().map(|s| s == MESSAGE))
        .unwrap_or(false)
}

impl PayloadDict {
    /// Puts the pending `Message` into the dict (unless the handler set one itself).
    fn make(slf: &Bound<'_, Self>) -> PyResult<()> {
        let pending = slf.get().pending.lock().ok().and_then(|mut p| p.take());
        if let Some(p) = pending {
            let dict = slf.as_super();
            if !dict.contains(MESSAGE)? {
                dict.set_item(MESSAGE, p.message.text())?;
                for key in p.after {
                    if let Some(value) = dict.get_item(key)? {
                        dict.del_item(key)?;
                        dict.set_item(key, value)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn is_pending(slf: &Bound<'_, Self>) -> bool {
        slf.get().pending.lock().is_ok_and(|p| p.is_some())
    }

    fn forget(slf: &Bound<'_, Self>) {
        if let Ok(mut p) = slf.get().pending.lock() {
            *p = None;
        }
    }

    /// `dict.<name>(self, *args)`: the plain dict behaviour, after the `Message` is made.
    fn dict_call<'py>(
        slf: &Bound<'py, Self>,
        name: &str,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::make(slf)?;
        let py = slf.py();
        let method = py.get_type::<PyDict>().getattr(name)?;
        let mut all = vec![slf.clone().into_any()];
        all.extend(args.iter());
        method.call(PyTuple::new(py, all)?, kwargs)
    }
}

#[pymethods]
impl PayloadDict {
    #[new]
    #[pyo3(signature = (*args, **kwargs))]
    fn new(args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        let _ = (args, kwargs);
        PayloadDict {
            pending: Mutex::new(None),
        }
    }

    /// `payload["Message"]` the first time (other keys are found by the dict itself).
    fn __missing__(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if is_message(key) && Self::is_pending(slf) {
            Self::make(slf)?;
            if let Some(v) = slf.as_super().get_item(key)? {
                return Ok(v.unbind());
            }
        }
        Err(PyKeyError::new_err(key.clone().unbind()))
    }

    #[pyo3(signature = (key, default = None))]
    fn get(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if is_message(key) {
            Self::make(slf)?;
        }
        Ok(match slf.as_super().get_item(key)? {
            Some(v) => v.unbind(),
            None => default.unwrap_or_else(|| slf.py().None()),
        })
    }

    fn __contains__(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok((is_message(key) && Self::is_pending(slf)) || slf.as_super().contains(key)?)
    }

    fn __len__(slf: &Bound<'_, Self>) -> PyResult<usize> {
        let dict = slf.as_super();
        let extra = Self::is_pending(slf) && !dict.contains(MESSAGE)?;
        Ok(dict.len() + usize::from(extra))
    }

    fn __iter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::dict_call(slf, "__iter__", &PyTuple::empty(slf.py()), None)
    }

    fn __reversed__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::dict_call(slf, "__reversed__", &PyTuple::empty(slf.py()), None)
    }

    fn __repr__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::dict_call(slf, "__repr__", &PyTuple::empty(slf.py()), None)
    }

    fn __eq__<'py>(slf: &Bound<'py, Self>, other: &Bound<'py, PyAny>) -> PyResult<bool> {
        Self::make(slf)?;
        if let Ok(other) = other.cast::<PayloadDict>() {
            Self::make(other)?;
        }
        let py = slf.py();
        let result = Self::dict_call(slf, "__eq__", &PyTuple::new(py, [other])?, None)?;
        if result.is(py.NotImplemented()) {
            return Ok(false);
        }
        result.is_truthy()
    }

    fn __setitem__(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        if is_message(key) {
            Self::forget(slf);
        }
        slf.as_super().set_item(key, value)
    }

    fn __delitem__(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        if is_message(key) {
            Self::make(slf)?;
        }
        slf.as_super().del_item(key)
    }

    fn keys<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::dict_call(slf, "keys", &PyTuple::empty(slf.py()), None)
    }

    fn values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::dict_call(slf, "values", &PyTuple::empty(slf.py()), None)
    }

    fn items<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::dict_call(slf, "items", &PyTuple::empty(slf.py()), None)
    }

    fn copy<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        Self::make(slf)?;
        slf.as_super().copy()
    }

    fn clear(slf: &Bound<'_, Self>) {
        Self::forget(slf);
        slf.as_super().clear();
    }

    #[pyo3(signature = (*args))]
    fn pop<'py>(slf: &Bound<'py, Self>, args: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyAny>> {
        Self::dict_call(slf, "pop", args, None)
    }

    fn popitem<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::dict_call(slf, "popitem", &PyTuple::empty(slf.py()), None)
    }

    #[pyo3(signature = (*args))]
    fn setdefault<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::dict_call(slf, "setdefault", args, None)
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn update<'py>(
        slf: &Bound<'py, Self>,
        args: &Bound<'py, PyTuple>,
        kwargs: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::dict_call(slf, "update", args, kwargs)
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let plain = Self::copy(slf)?;
        PyTuple::new(
            py,
            [
                py.get_type::<PyDict>().into_any(),
                PyTuple::new(py, [plain])?.into_any(),
            ],
        )
        .map(Bound::into_any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secs2::sml;

    fn lazy() -> LazyMessage {
        let m = sml::parse_message("S6F11 W <L [3] <U4 1> <U4 4001> <L [0]>> .").unwrap();
        LazyMessage::new(Arc::new(m), None)
    }

    fn payload(m: &LazyMessage) -> Payload {
        Payload(vec![
            ("Equipment", Arg::Str("Tool1".into())),
            ("TxID", Arg::Int(7)),
            ("Message", Arg::Lazy(m.clone())),
            ("Reply", Arg::Bool(true)),
        ])
    }

    /// Runs `code` with `p` (the lazy payload) and `d` (the same as a plain dict); returns
    /// `result`.
    fn run(code: &str, m: &LazyMessage) -> Value {
        super::super::init_python();
        Python::attach(|py| {
            let globals = PyDict::new(py);
            globals
                .set_item("p", payload(m).to_dict(py).unwrap())
                .unwrap();
            let plain = PyDict::new(py);
            plain.set_item("Equipment", "Tool1").unwrap();
            plain.set_item("TxID", 7).unwrap();
            plain
                .set_item("Message", secs_json::message_to_json_string(&m.message))
                .unwrap();
            plain.set_item("Reply", true).unwrap();
            globals.set_item("d", plain).unwrap();
            let code = std::ffi::CString::new(code).unwrap();
            py.run(&code, Some(&globals), None)
                .unwrap_or_else(|e| panic!("{}", super::super::format_error(py, &e)));
            convert::from_python(&globals.get_item("result").unwrap().unwrap()).unwrap()
        })
    }

    #[test]
    fn reading_other_keys_does_not_make_the_message() {
        let m = lazy();
        let got = run(
            "import system\nresult = [p['Equipment'], p.get('TxID'), 'Equipment' in p, p.get('nope', 3), isinstance(p, dict), type(p) is system.Payload]",
            &m,
        );
        assert_eq!(got, serde_json::json!(["Tool1", 7, true, 3, true, true]));
        assert!(m.text.get().is_none(), "the JSON text was made");
    }

    #[test]
    fn the_message_is_the_json_text() {
        let m = lazy();
        let expect = secs_json::message_to_json_string(&m.message);
        let got = run("result = [p['Message'], type(p['Message']).__name__]", &m);
        assert_eq!(got, serde_json::json!([expect, "str"]));
    }

    #[test]
    fn it_behaves_like_the_plain_dict() {
        for (i, check) in [
            "'Message' in p",
            "p.get('Message') == d['Message']",
            "len(p) == len(d) == 4",
            "list(p) == list(d)",
            "list(p.keys()) == list(d.keys())",
            "list(p.values()) == list(d.values())",
            "list(p.items()) == list(d.items())",
            "repr(p) == repr(d) and str(p) == str(d)",
            "p == d and d == p and not (p != d)",
            "dict(p) == d and {**p} == d and p.copy() == d",
            "__import__('json').dumps(p) == __import__('json').dumps(d)",
            "__import__('copy').deepcopy(p) == d",
            "sorted(p) == sorted(d)",
            "p.pop('Message') == d['Message'] and 'Message' not in p and len(p) == 3",
            "p.setdefault('Message', 'x') == d['Message']",
            "(p.update(Message='mine'), p['Message'])[1] == 'mine'",
            "(p.__setitem__('Message', 'mine'), p['Message'], len(p))[1:] == ('mine', 4)",
            "(p.__delitem__('Message'), 'Message' in p, len(p))[1:] == (False, 3)",
            "(p.clear(), len(p), 'Message' in p)[1:] == (0, False)",
            "p.get('Message') == d['Message'] and p['Message'] is p['Message']",
        ]
        .iter()
        .enumerate()
        {
            let got = run(&format!("result = bool({check})"), &lazy());
            assert_eq!(got, Value::Bool(true), "check {i}: {check}");
        }
    }

    #[test]
    fn a_missing_key_still_raises_key_error() {
        let got = run(
            "try:\n    p['nope']\n    result = None\nexcept KeyError as e:\n    result = str(e)\n",
            &lazy(),
        );
        assert_eq!(got, serde_json::json!("'nope'"));
    }

    #[test]
    fn payloads_share_one_text() {
        let m = lazy();
        let copy = m.clone();
        let first = m.text().as_ptr();
        assert_eq!(copy.text().as_ptr(), first);
    }
}
