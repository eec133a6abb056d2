//! What keeps a handler inside its time limit and inside its own job.
//!
//! - [`Cancel`]: the per-job cancellation the watchdog sets when a handler reaches
//!   `handler_timeout`. Waits that release the GIL (`time.sleep` in a handler,
//!   `system.secsgem.getResponse`) wait on it too, so a handler sleeping past its limit is woken
//!   at once and gets `ScriptTimeout`.
//! - `time.sleep` is replaced process-wide by `guard::sleep`: on a thread running a handler it is the
//!   interruptible wait above; anywhere else (threads a script started, the engine itself) it is
//!   the original `time.sleep`.
//! - `os._exit`, `os.abort`, `os.kill`/`os.killpg` of the gateway's own process, `os.exec*`,
//!   `signal.raise_signal` and `signal.pthread_kill` raise `RuntimeError` in the gateway
//!   process (a forked child still may); `exit()` and `quit()` raise `SystemExit` as
//!   `sys.exit` does, and the engine reports a `SystemExit` as an error of that handler.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use super::system::ScriptTimeout;

type Waker = Arc<dyn Fn() + Send + Sync>;

/// A job's cancellation: set once by the watchdog, seen by every wait of that job.
#[derive(Default)]
pub struct Cancel {
    cancelled: AtomicBool,
    /// Wakers of waits on other condition variables, by registration id.
    wakers: Mutex<Vec<(u64, Waker)>>,
    wake: Condvar,
    next_waker: AtomicU64,
}

impl Cancel {
    pub fn new() -> Arc<Cancel> {
        Arc::new(Cancel::default())
    }

    /// Cancels: wakes [`Self::sleep`] and calls each registered waker (once).
    pub fn cancel(&self) {
        if self.cancelled.swap(true, Ordering::SeqCst) {
            return;
        }
        let wakers: Vec<Waker> = match self.wakers.lock() {
            Ok(w) => {
                self.wake.notify_all();
                w.iter().map(|(_, f)| f.clone()).collect()
            }
            Err(_) => Vec::new(),
        };
        // Called with no lock held: a waker takes its own wait's lock to notify.
        for f in wakers {
            f();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Waits `duration`, or less if cancelled; true if cancelled.
    pub fn sleep(&self, duration: Duration) -> bool {
        let until = Instant::now().checked_add(duration);
        let Ok(mut guard) = self.wakers.lock() else {
            return self.is_cancelled();
        };
        loop {
            if self.is_cancelled() {
                return true;
            }
            let now = Instant::now();
            let left = match until {
                Some(u) if now >= u => return false,
                Some(u) => u - now,
                None => Duration::from_secs(3600),
            };
            guard = match self.wake.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(_) => return self.is_cancelled(),
            };
        }
    }

    /// Calls `wake` when this is cancelled, until the returned guard is dropped. A wait on its
    /// own condition variable registers a waker that takes that wait's lock and notifies, and
    /// checks [`Self::is_cancelled`] under the same lock before each wait (so no wake-up is
    /// lost).
    pub fn on_cancel(self: &Arc<Self>, wake: impl Fn() + Send + Sync + 'static) -> WakerGuard {
        let id = self.next_waker.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = self.wakers.lock() {
            w.push((id, Arc::new(wake)));
        }
        WakerGuard {
            cancel: self.clone(),
            id,
        }
    }
}

/// Unregisters a waker when dropped.
pub struct WakerGuard {
    cancel: Arc<Cancel>,
    id: u64,
}

impl Drop for WakerGuard {
    fn drop(&mut self) {
        if let Ok(mut w) = self.cancel.wakers.lock() {
            w.retain(|(id, _)| *id != self.id);
        }
    }
}

thread_local! {
    /// The cancellation of the handler job this thread is running.
    static CURRENT: RefCell<Option<Arc<Cancel>>> = const { RefCell::new(None) };
}

/// The cancellation of the handler this thread runs, if it runs one.
pub fn current() -> Option<Arc<Cancel>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Makes `cancel` this thread's until the guard is dropped.
pub(crate) fn enter(cancel: Arc<Cancel>) -> CurrentCancel {
    CURRENT.with(|c| *c.borrow_mut() = Some(cancel));
    CurrentCancel
}

pub(crate) struct CurrentCancel;

impl Drop for CurrentCancel {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

/// `ScriptTimeout` for a wait the watchdog cut short.
pub(crate) fn timed_out(during: &str) -> PyErr {
    ScriptTimeout::new_err(format!(
        "the handler ran past its time limit (woken in {during})"
    ))
}

/// The `time.sleep` the interpreter started with.
static ORIGINAL_SLEEP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `time.sleep(secs)`: interruptible by the watchdog on a thread running a handler, the
/// original everywhere else.
#[pyfunction]
#[pyo3(signature = (secs, /))]
fn sleep(py: Python<'_>, secs: &Bound<'_, PyAny>) -> PyResult<()> {
    let Some(cancel) = current() else {
        return match ORIGINAL_SLEEP.get(py) {
            Some(original) => original.call1(py, (secs,)).map(|_| ()),
            None => Err(PyValueError::new_err("time.sleep is not set up")),
        };
    };
    let seconds: f64 = secs.extract()?;
    if seconds.is_nan() {
        return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
    }
    if seconds < 0.0 {
        return Err(PyValueError::new_err("sleep length must be non-negative"));
    }
    let duration = Duration::try_from_secs_f64(seconds)
        .map_err(|_| PyOverflowError::new_err("sleep length is too large"))?;
    if py.detach(|| cancel.sleep(duration)) {
        return Err(timed_out("time.sleep"));
    }
    Ok(())
}

/// Python guards against ending the gateway's process from a script.
const EXIT_GUARDS: &std::ffi::CStr = c"
import builtins as _b, os as _os, posix as _posix, signal as _signal, sys as _sys

_pid = _os.getpid()

def _refuse(what):
    raise RuntimeError(
        what + ' is not allowed in a handler: it would end the gateway and every connection '
        'it serves; raise an exception or return from the handler instead')

def _guard(module, name, test=None):
    original = getattr(module, name, None)
    if original is None:
        return
    def guarded(*args, **kwargs):
        if _os.getpid() == _pid and (test is None or test(*args, **kwargs)):
            _refuse(module.__name__ + '.' + name)
        return original(*args, **kwargs)
    guarded.__name__ = name
    guarded.__qualname__ = name
    guarded.__doc__ = getattr(original, '__doc__', None)
    guarded.__wrapped__ = original
    setattr(module, name, guarded)

def _own(pid, *rest, **kw):
    return pid in (0, -1, _pid) or (pid < 0 and -pid == _os.getpgrp())

def _own_group(pgid, *rest, **kw):
    return pgid in (0, _os.getpgrp())

def _sends(signum):
    return signum != 0

for _m in (_os, _posix):
    _guard(_m, '_exit')
    _guard(_m, 'abort')
    _guard(_m, 'kill', lambda pid, sig: _own(pid) and _sends(sig))
    _guard(_m, 'killpg', lambda pgid, sig: _own_group(pgid) and _sends(sig))
for _name in ('execv', 'execve', 'execl', 'execle', 'execlp', 'execlpe', 'execvp', 'execvpe'):
    for _m in (_os, _posix):
        _guard(_m, _name)
_guard(_signal, 'raise_signal', lambda sig: _sends(sig))
_guard(_signal, 'pthread_kill', lambda tid, sig: _sends(sig))

def _exit(code=None):
    raise SystemExit(code)
_exit.__name__ = 'exit'
_b.exit = _exit
_b.quit = _exit
";

/// Replaces `time.sleep` and guards the process exits (once, when the interpreter starts).
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let time = py.import("time")?;
    let original = time.getattr("sleep")?.unbind();
    ORIGINAL_SLEEP.get_or_init(py, || original);
    time.setattr("sleep", wrap_pyfunction!(sleep, &time)?)?;
    pyo3::types::PyModule::from_code(
        py,
        EXIT_GUARDS,
        c"secsgate_exit_guards.py",
        c"secsgate_exit_guards",
    )?;
    Ok(())
}
