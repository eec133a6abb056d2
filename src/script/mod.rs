//! Embedded CPython: the engineers' handler scripts.
//!
//! - `handlers/NAME.py` is a handler: the file's body runs for each event with the globals
//!   `payload` (a dict) and `system` (the injected module, [`system`]).
//! - `lib/*.py` is the project library, importable from handlers (`import mylib`).
//! - Scripts are compiled before they are swapped in; a file that does not compile is logged
//!   with its file and line and the previous version keeps serving. Scripts written for
//!   Jython 2.7 are rewritten (`py2compat.py`) when they do not compile as Python 3.
//! - Handlers run on dedicated worker threads (never tokio's); jobs with the same key (the
//!   equipment name) run one at a time, in arrival order. A handler that raises is logged with
//!   its traceback; one that runs past its time limit is interrupted with `ScriptTimeout`
//!   (its `time.sleep` and `getResponse` are woken: [`guard`]), and abandoned if it still runs
//!   [`ABANDON_AFTER`] later: its thread is left to finish on its own (then exits) and a new
//!   worker takes its place, so its key's next jobs run on time, still in order.
//! - A handler cannot end the process: `os._exit` and the like raise, and a `SystemExit` is
//!   that handler's error ([`guard`]).
//! - Each key's queue holds at most `queue_limit` jobs: [`ScriptEngine::submit`] and
//!   [`ScriptEngine::post`] wait for room, so a tool whose handlers fall behind slows the task
//!   that receives its messages (and so the reading of its socket) instead of growing memory.
//! - Each engine talks to its own gateway ([`ScriptEngine::set_host`]): its workers make that
//!   gateway current while they run jobs, so several gateways can run in one process. The
//!   interpreter and the `system` module are process-wide (CPython cannot be restarted).
//! - Saving a file under `handlers/` or `lib/` reloads it (a directory watch with a debounce,
//!   so editors' save-by-rename works).

pub mod convert;
pub mod db;
pub mod guard;
pub mod host;
pub mod payload;
pub mod stats;
pub mod system;
pub mod tag;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once, RwLock};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::{PyCode, PyDict};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tracing::{error, info, warn};

pub use host::{CopyEquipment, Host, HostError, ToolProgram};
pub use payload::{Arg, LazyMessage, Payload};

/// The Python-2 rewrite, run inside the interpreter.
const PY2COMPAT: &str = include_str!("py2compat.py");

/// Most jobs of one key a worker runs per GIL acquisition.
const BATCH: usize = 64;

/// Default of [`EngineSettings::queue_bytes`]: 32 MiB per key.
pub const DEFAULT_QUEUE_BYTES: usize = 32 * 1024 * 1024;

/// Default of [`EngineSettings::queue_limit`]: jobs queued (or running) per key.
pub const DEFAULT_QUEUE_LIMIT: usize = 1024;

/// How long a handler interrupted at its limit has to end before it is abandoned (its thread
/// left to finish on its own and a new worker started in its place).
pub const ABANDON_AFTER: Duration = Duration::from_millis(250);

/// Default of [`EngineSettings::abandoned_limit`]: abandoned handler threads alive at once.
pub const DEFAULT_ABANDONED_LIMIT: usize = 8;

/// How often the watchdog interrupts again a handler that ignores it.
const REINTERRUPT: Duration = Duration::from_millis(500);

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler ran to its end.
    Done,
    /// It raised; the formatted traceback.
    Raised(String),
    /// It ran past its time limit and was interrupted.
    TimedOut,
    /// It ran past its time limit and did not stop when interrupted: its thread was left to
    /// finish on its own and a new worker took over.
    Abandoned,
    /// Not run: a handler of the same key is stuck past its limit and no more threads may be
    /// abandoned ([`EngineSettings::abandoned_limit`]); the reason.
    Refused(String),
    /// No handler of that name is loaded.
    NoHandler,
}

/// A compiled handler.
struct Handler {
    code: Py<PyCode>,
    /// What every run's globals start as: `__builtins__`, `__name__`, `__file__`, `system`
    /// (copied per run, which is cheaper than building them).
    globals: Py<PyDict>,
    version: u32,
}

/// One event for a handler.
struct Job {
    id: u64,
    key: String,
    handler: String,
    payload: Payload,
    done: Option<oneshot::Sender<Outcome>>,
    /// Room in the key's queue, given back when the job is dropped (after it ran, or when it
    /// was abandoned or refused).
    room: Option<Room>,
}

/// What a job holds of its key's queue until it is dropped: one place, and its weight in KiB.
#[derive(Debug)]
struct Room {
    _job: OwnedSemaphorePermit,
    _kib: OwnedSemaphorePermit,
}

impl Job {
    /// Ends a job that will not run: tells its submitter why.
    fn refuse(mut self, reason: &str) {
        if let Some(done) = self.done.take() {
            let _ = done.send(Outcome::Refused(reason.to_string()));
        }
    }
}

/// Jobs by key, so that one key's jobs run one at a time and in order.
#[derive(Default)]
struct Queues {
    by_key: HashMap<String, VecDeque<Job>>,
    /// Keys with queued jobs and none running.
    ready: VecDeque<String>,
    busy: HashSet<String>,
    /// Keys whose jobs are refused, with the reason: a handler of theirs is stuck past its
    /// limit and cannot be abandoned ([`EngineSettings::abandoned_limit`]).
    refused: HashMap<String, String>,
    stop: bool,
}

/// A worker's place in the pool: which thread holds it, the rest of the batch it runs, and
/// the job it is running (for the watchdog).
#[derive(Default)]
struct Slot {
    /// The worker thread holding the slot; a new one after an abandonment.
    generation: u64,
    /// The rest of the batch (jobs of one key), taken back if the worker is abandoned.
    pending: VecDeque<Job>,
    current: Option<Current>,
}

/// The job a worker runs.
struct Current {
    job: u64,
    handler: String,
    key: String,
    /// Python's id of the thread (for `PyThreadState_SetAsyncExc`).
    thread: u64,
    started: Instant,
    deadline: Instant,
    /// First and latest interrupt.
    interrupted: Option<(Instant, Instant)>,
    /// Past its limit with no room to abandon it: its key's jobs are refused.
    stuck: bool,
    cancel: Arc<guard::Cancel>,
    done: Option<oneshot::Sender<Outcome>>,
    room: Option<Room>,
}

/// A handler thread left to finish on its own.
struct Abandoned {
    generation: u64,
    thread: u64,
    last_interrupt: Instant,
}

/// What the watchdog does about a slot.
enum Due {
    Interrupt { job: u64, first: bool },
    Abandon,
}

struct Inner {
    project: PathBuf,
    timeout: Duration,
    handlers: RwLock<HashMap<String, Arc<Handler>>>,
    queues: Mutex<Queues>,
    wake: Condvar,
    slots: Vec<Mutex<Slot>>,
    /// Generations of worker threads (one per thread started).
    next_generation: AtomicU64,
    /// Handler threads abandoned and still running (at most [`EngineSettings::abandoned_limit`]).
    abandoned: Mutex<Vec<Abandoned>>,
    /// Handlers abandoned since the engine started.
    abandoned_total: AtomicU64,
    next_job: AtomicU64,
    /// Jobs finished (however they ended).
    completed: AtomicU64,
    /// `completed`, published after each batch.
    completed_watch: watch::Sender<u64>,
    /// Script files processed by reloads (whether they loaded or not).
    reloads: watch::Sender<u64>,
    /// Jobs a key may have queued or running.
    queue_limit: usize,
    /// Abandoned handler threads alive at once.
    abandoned_limit: usize,
    /// Room per key (each job holds one permit until it ran).
    room: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// KiB a key's queued and running jobs may hold.
    queue_kib: u32,
    /// Byte room per key, in KiB (each job holds its weight until it ran).
    room_kib: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// The most KiB each key's jobs held at once.
    peak_kib: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    /// The gateway `system.secsgem` talks to from this engine's workers.
    host: RwLock<Option<Arc<dyn Host>>>,
    /// Shared builtins of every handler run (with the Python-2 shims).
    builtins: Py<PyDict>,
    /// What each handler did.
    stats: stats::Stats,
}

/// The script engine of a project.
#[derive(Clone)]
pub struct ScriptEngine {
    inner: Arc<Inner>,
    _watcher: Option<Arc<Mutex<WatcherHandle>>>,
}

type WatcherHandle = notify_debouncer_full::Debouncer<
    notify_debouncer_full::notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

static INIT: Once = Once::new();

/// Starts the interpreter once per process, with the `system` module built in and `print`
/// going to the log.
pub fn init_python() {
    INIT.call_once(|| {
        use self::system::system as system_module;
        pyo3::append_to_inittab!(system_module);
        Python::initialize();
        Python::attach(|py| {
            let result = (|| -> PyResult<()> {
                let sys = py.import("sys")?;
                sys.setattr("dont_write_bytecode", true)?;
                for (name, stream) in [("stdout", "stdout"), ("stderr", "stderr")] {
                    let writer = Py::new(
                        py,
                        system::LogWriter {
                            stream,
                            buffer: Mutex::new(String::new()),
                        },
                    )?;
                    sys.setattr(name, writer)?;
                }
                pyo3::types::PyModule::from_code(
                    py,
                    &std::ffi::CString::new(PY2COMPAT)?,
                    c"secsgate_py2compat.py",
                    c"secsgate_py2compat",
                )?;
                py.import("system")?;
                guard::install(py)?;
                Ok(())
            })();
            if let Err(e) = result {
                error!(target: "script", "cannot set up the interpreter: {}", format_error(py, &e));
            }
        });
    });
}

/// Python's own text for an exception: traceback and message.
pub fn format_error(py: Python<'_>, err: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        let tb = py.import("traceback")?;
        let lines = tb.call_method1(
            "format_exception",
            (err.get_type(py), err.value(py), err.traceback(py)),
        )?;
        let text: Vec<String> = lines.extract()?;
        Ok(text.concat())
    })();
    formatted
        .unwrap_or_else(|_| err.to_string())
        .trim_end()
        .to_string()
}

/// Compiles a script as Python 3, or after the Python-2 rewrite when it does not compile as
/// Python 3. Errors are the original SyntaxError's text.
fn compile(py: Python<'_>, source: &str, path: &Path) -> Result<(Py<PyCode>, bool), String> {
    let builtins = py.import("builtins").map_err(|e| format_error(py, &e))?;
    let filename = path.display().to_string();
    let attempt = |src: &str| -> PyResult<Py<PyCode>> {
        let code = builtins.call_method1("compile", (src, filename.as_str(), "exec", 0, true))?;
        Ok(code.cast_into::<PyCode>()?.unbind())
    };
    match attempt(source) {
        Ok(code) => Ok((code, false)),
        Err(original) => {
            let rewritten = py
                .import("secsgate_py2compat")
                .and_then(|m| m.call_method1("rewrite", (source,)))
                .and_then(|s| s.extract::<String>());
            match rewritten {
                Ok(text) if text != source => match attempt(&text) {
                    Ok(code) => Ok((code, true)),
                    Err(_) => Err(format_exception_only(py, &original)),
                },
                _ => Err(format_exception_only(py, &original)),
            }
        }
    }
}

/// A SyntaxError as Python prints it: file, line, the line itself with a caret, message.
fn format_exception_only(py: Python<'_>, err: &PyErr) -> String {
    let formatted = (|| -> PyResult<String> {
        let tb = py.import("traceback")?;
        let lines: Vec<String> = tb
            .call_method1("format_exception_only", (err.get_type(py), err.value(py)))?
            .extract()?;
        Ok(lines.concat())
    })();
    formatted
        .unwrap_or_else(|_| err.to_string())
        .trim_end()
        .to_string()
}

/// What `secsgate check` finds in a project's scripts.
#[derive(Debug, Default)]
pub struct ScriptCheck {
    /// Each handler and library module that does not compile or cannot be read, with its
    /// error text.
    pub problems: Vec<String>,
    /// Entries that are not loaded (a handler symlink pointing outside the project, a symlink
    /// loop): reported, not failing the check.
    pub warnings: Vec<String>,
}

/// Every problem in a project's scripts (for `secsgate check`).
pub fn check_scripts(project: &Path) -> ScriptCheck {
    init_python();
    // Paths are shown as given; symlink targets are compared with the canonical folder.
    let canonical = project
        .canonicalize()
        .unwrap_or_else(|_| project.to_path_buf());
    let mut check = ScriptCheck::default();
    let handlers = python_files(&canonical, &project.join("handlers"), true);
    let lib = python_files(&canonical, &project.join("lib"), false);
    check.warnings.extend(handlers.refused);
    check.warnings.extend(lib.refused);
    let problems = &mut check.problems;
    Python::attach(|py| {
        for path in handlers.files.into_iter().chain(lib.files) {
            match std::fs::read_to_string(&path) {
                Ok(src) => {
                    if let Err(e) = compile(py, &src, &path) {
                        problems.push(e);
                    }
                }
                Err(e) => problems.push(format!("{}: cannot read: {e}", path.display())),
            }
        }
    });
    check
}

/// The script files found under a folder, and the entries refused.
#[derive(Debug, Default)]
struct Found {
    files: Vec<PathBuf>,
    refused: Vec<String>,
}

/// Where a symlink under the project leads, or why it is refused: it cannot be resolved (it
/// dangles, or is a loop such as `a -> b`, `b -> a`), or, with `inside`, it leads out of
/// `project` (canonical). A path that is not a symlink is accepted as it is.
fn resolve(project: &Path, path: &Path, inside: bool) -> Result<PathBuf, String> {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return Ok(path.to_path_buf());
    }
    let target = std::fs::canonicalize(path).map_err(|e| {
        let to = std::fs::read_link(path).map_or_else(|_| "?".into(), |t| t.display().to_string());
        format!(
            "{} -> {to}: cannot be resolved ({e}); not loaded",
            path.display()
        )
    })?;
    if inside && !target.starts_with(project) {
        return Err(format!(
            "{} points outside the project, to {}; not loaded",
            path.display(),
            target.display()
        ));
    }
    Ok(target)
}

/// The `.py` files under a folder of `project` (canonical) (recursively), sorted; none if it does not
/// exist. Each folder is read once, however symlinks lead back to it, so a loop (a folder
/// symlink to its parent) ends. With `inside`, a symlink leading out of the project, file or
/// folder, is refused; a symlink that cannot be resolved always is.
fn python_files(project: &Path, dir: &Path, inside: bool) -> Found {
    let mut found = Found::default();
    let mut seen = std::collections::HashSet::new();
    if let Ok(canonical) = dir.canonicalize() {
        if inside && !canonical.starts_with(project) {
            found.refused.push(format!(
                "{} points outside the project, to {}; nothing in it is loaded",
                dir.display(),
                canonical.display()
            ));
            return found;
        }
        seen.insert(canonical);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if is_ignored(&path) {
                continue;
            }
            let target = match resolve(project, &path, inside) {
                Ok(t) => t,
                Err(why) => {
                    if path.is_dir() || is_script(&path) || !path.exists() {
                        found.refused.push(why);
                    }
                    continue;
                }
            };
            if target.is_dir() {
                // Only a folder not read yet: a symlink back to one read (or being read) is
                // a loop, and skipped.
                if target.canonicalize().is_ok_and(|c| seen.insert(c)) {
                    stack.push(path);
                }
            } else if is_script(&path) {
                found.files.push(path);
            }
        }
    }
    found.files.sort();
    found.refused.sort();
    found
}

/// The handler files of a project, each refused entry logged as a warning.
fn handler_files(project: &Path) -> Vec<PathBuf> {
    let found = python_files(project, &project.join("handlers"), true);
    for why in &found.refused {
        warn!(target: "script", "{why}");
    }
    found.files
}

fn is_ignored(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.') || n == "__pycache__")
}

/// A script file: `*.py`, not a dotfile, editor backup or lock.
/// Whether a path is in the project's data or log folders (`data/`, `log/`, `logs/`,
/// `spool/`): the gateway writes there (message store, spools, log files), and nothing there
/// is a script.
pub fn in_data_or_logs(project: &Path, path: &Path) -> bool {
    path.strip_prefix(project).is_ok_and(|rel| {
        rel.components().next().is_some_and(|c| {
            matches!(
                c.as_os_str().to_str(),
                Some("data" | "log" | "logs" | "spool")
            )
        })
    })
}

fn is_script(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    name.ends_with(".py") && !name.starts_with('.') && !name.starts_with(".#")
}

/// What one key's handler jobs (queued or running) hold: see [`ScriptEngine::queue_stats`].
/// Bytes are counted as the cap is, in whole KiB per job (a job weighs its message's encoded
/// body; one larger than the cap counts as the cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs queued or running.
    pub jobs: usize,
    /// Bytes their messages hold.
    pub bytes: usize,
    /// The most bytes they held at once.
    pub peak_bytes: usize,
    /// The cap, [`EngineSettings::queue_bytes`].
    pub limit_bytes: usize,
}

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub workers: usize,
    pub handler_timeout: Duration,
    /// Watch the project folder and reload scripts as they are saved.
    pub hot_reload: bool,
    /// Jobs one key (an equipment) may have queued or running; `submit` and `post` wait for
    /// room beyond that ([`DEFAULT_QUEUE_LIMIT`] is a sensible value).
    pub queue_limit: usize,
    /// Bytes the jobs one key has queued or running may hold (their payloads' messages):
    /// beyond that `submit` and `post` wait too, so a burst of large messages behind a slow
    /// handler holds at most this much ([`DEFAULT_QUEUE_BYTES`]). One job larger than this
    /// still runs, alone.
    pub queue_bytes: usize,
    /// Most abandoned handler threads alive at once ([`DEFAULT_ABANDONED_LIMIT`]). A handler
    /// still running [`ABANDON_AFTER`] after its interrupt is abandoned: its thread (which
    /// cannot be killed) is left to finish on its own and a new worker takes its place. With
    /// this many such threads alive, a handler that does not stop is not abandoned: its key's
    /// jobs are refused ([`Outcome::Refused`]) until it ends or an abandoned thread ends and
    /// makes room. This keeps threads and memory bounded.
    pub abandoned_limit: usize,
}

impl ScriptEngine {
    /// Starts the interpreter (once per process), loads every handler and the library path,
    /// and starts the workers, the watchdog and (if asked) the file watch. Handlers that do
    /// not compile are logged and left out; the engine still starts.
    pub fn start(project: &Path, settings: EngineSettings) -> ScriptEngine {
        init_python();
        let project = project
            .canonicalize()
            .unwrap_or_else(|_| project.to_path_buf());
        let builtins = Python::attach(|py| -> PyResult<Py<PyDict>> {
            let sys = py.import("sys")?;
            let path = sys.getattr("path")?;
            let lib = project.join("lib").display().to_string();
            if !path.contains(&lib)? {
                path.call_method1("insert", (0, lib.as_str()))?;
            }
            install_lib_loader(py, &lib)?;
            let base = py.import("builtins")?.dict().copy()?;
            let shims = py.import("secsgate_py2compat")?.call_method0("shims")?;
            base.call_method1("update", (shims,))?;
            Ok(base.unbind())
        })
        .unwrap_or_else(|e| {
            Python::attach(|py| error!(target: "script", "cannot prepare handler builtins: {}", format_error(py, &e)));
            Python::attach(|py| PyDict::new(py).unbind())
        });
        let workers = settings.workers.max(1);
        let inner = Arc::new(Inner {
            project: project.clone(),
            timeout: settings.handler_timeout,
            handlers: RwLock::new(HashMap::new()),
            queues: Mutex::new(Queues::default()),
            wake: Condvar::new(),
            slots: (0..workers).map(|_| Mutex::new(Slot::default())).collect(),
            next_generation: AtomicU64::new(1),
            abandoned: Mutex::new(Vec::new()),
            abandoned_total: AtomicU64::new(0),
            next_job: AtomicU64::new(1),
            completed: AtomicU64::new(0),
            completed_watch: watch::Sender::new(0),
            reloads: watch::Sender::new(0),
            queue_limit: settings.queue_limit.max(1),
            queue_kib: u32::try_from((settings.queue_bytes / 1024).max(1)).unwrap_or(u32::MAX >> 4),
            room_kib: Mutex::new(HashMap::new()),
            peak_kib: Mutex::new(HashMap::new()),
            abandoned_limit: settings.abandoned_limit,
            room: Mutex::new(HashMap::new()),
            host: RwLock::new(None),
            builtins,
            stats: stats::Stats::default(),
        });
        for path in handler_files(&project) {
            inner.load_handler(&path);
        }
        for i in 0..workers {
            inner.start_worker(i);
        }
        let watchdog = Arc::downgrade(&inner);
        let _ = std::thread::Builder::new()
            .name("python-watchdog".into())
            .spawn(move || watchdog_loop(watchdog));
        let watcher = if settings.hot_reload {
            match watch(inner.clone()) {
                Ok(w) => Some(Arc::new(Mutex::new(w))),
                Err(e) => {
                    warn!(target: "script", "hot reload is off: cannot watch {}: {e}", project.display());
                    None
                }
            }
        } else {
            None
        };
        ScriptEngine {
            inner,
            _watcher: watcher,
        }
    }

    /// Whether a handler of this name is loaded.
    pub fn has_handler(&self, name: &str) -> bool {
        self.inner
            .handlers
            .read()
            .is_ok_and(|h| h.contains_key(name))
    }

    /// Every handler's version, calls, time and last error.
    pub fn handler_stats(&self) -> Vec<stats::HandlerStats> {
        self.inner.stats.all()
    }

    /// The version of a loaded handler (1 when first loaded, +1 per successful reload).
    pub fn handler_version(&self, name: &str) -> Option<u32> {
        self.inner
            .handlers
            .read()
            .ok()
            .and_then(|h| h.get(name).map(|h| h.version))
    }

    /// Makes `host` the gateway that `system.secsgem` talks to from this engine's handlers
    /// (replacing any earlier one).
    pub fn set_host(&self, host: Arc<dyn Host>) {
        if let Ok(mut h) = self.inner.host.write() {
            *h = Some(host);
        }
    }

    /// Queues an event for a handler, waiting while `key` has `queue_limit` jobs queued or
    /// running. Jobs with the same `key` run one at a time, in the order submitted. The
    /// receiver reports how the run ended (it errs if the engine stopped before running it).
    /// Call from tokio tasks, never from a handler's thread.
    pub async fn submit(
        &self,
        key: &str,
        handler: &str,
        payload: Payload,
    ) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.queue(key, handler, payload, Some(tx)).await;
        rx
    }

    /// Queues an event without waiting for its outcome; waits for room like [`Self::submit`].
    pub async fn post(&self, key: &str, handler: &str, payload: Payload) {
        self.queue(key, handler, payload, None).await;
    }

    async fn queue(
        &self,
        key: &str,
        handler: &str,
        payload: Payload,
        done: Option<oneshot::Sender<Outcome>>,
    ) {
        let Some((room, room_kib, peak_kib)) = self.inner.room(key) else {
            return;
        };
        // Closed only when the engine stops; the job is dropped then.
        let Ok(permit) = room.acquire_owned().await else {
            return;
        };
        let kib = u32::try_from(payload.weight().div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.inner.queue_kib);
        let Ok(bytes_permit) = room_kib.clone().acquire_many_owned(kib).await else {
            return;
        };
        let held = (self.inner.queue_kib as usize).saturating_sub(room_kib.available_permits());
        peak_kib.fetch_max(held, Ordering::Relaxed);
        self.inner.push(Job {
            id: self.inner.next_job.fetch_add(1, Ordering::Relaxed),
            key: key.to_string(),
            handler: handler.to_string(),
            payload,
            done,
            room: Some(Room {
                _job: permit,
                _kib: bytes_permit,
            }),
        });
    }

    /// What one key's (an equipment's) handler jobs hold now, and the most they held; `None`
    /// for a key that never had a job.
    pub fn queue_stats(&self, key: &str) -> Option<QueueStats> {
        let jobs = self.inner.room.lock().ok()?.get(key)?.available_permits();
        let kib = self
            .inner
            .room_kib
            .lock()
            .ok()?
            .get(key)?
            .available_permits();
        let peak = self
            .inner
            .peak_kib
            .lock()
            .ok()?
            .get(key)?
            .load(Ordering::Relaxed);
        let limit = self.inner.queue_kib as usize;
        Some(QueueStats {
            jobs: self.inner.queue_limit.saturating_sub(jobs),
            bytes: limit.saturating_sub(kib) * 1024,
            peak_bytes: peak * 1024,
            limit_bytes: limit * 1024,
        })
    }

    /// How many handlers have been abandoned since the engine started: still running at
    /// their limit after the interrupt, left to finish on their own thread.
    pub fn abandoned_handlers(&self) -> u64 {
        self.inner.abandoned_total.load(Ordering::Relaxed)
    }

    /// How many abandoned handler threads are still running (at most [`EngineSettings::abandoned_limit`]).
    pub fn abandoned_threads(&self) -> usize {
        self.inner.abandoned.lock().map_or(0, |a| a.len())
    }

    /// How many jobs have finished since the engine started.
    pub fn completed(&self) -> u64 {
        self.inner.completed.load(Ordering::Relaxed)
    }

    /// A watch on [`Self::completed`], updated after each batch of jobs a worker ran.
    pub fn watch_completed(&self) -> watch::Receiver<u64> {
        self.inner.completed_watch.subscribe()
    }

    /// A watch on the number of script files the hot reload (or [`Self::reload_path`]) has
    /// processed, whether they loaded or not: it changes after each file.
    pub fn watch_reloads(&self) -> watch::Receiver<u64> {
        self.inner.reloads.subscribe()
    }

    /// Reloads one changed file now (what the file watch does after its debounce).
    pub fn reload_path(&self, path: &Path) {
        self.inner.reload(path);
    }

    /// Stops the workers once the queued jobs are done (the interpreter stays, as CPython
    /// cannot be restarted in a process).
    pub fn stop(&self) {
        if let Ok(mut q) = self.inner.queues.lock() {
            q.stop = true;
        }
        for rooms in [&self.inner.room, &self.inner.room_kib] {
            if let Ok(room) = rooms.lock() {
                for r in room.values() {
                    r.close();
                }
            }
        }
        self.inner.wake.notify_all();
    }
}

/// Makes `lib/` modules that are written in Python 2 syntax importable too: a path hook for
/// that one folder whose loader applies the rewrite when a module does not compile.
fn install_lib_loader(py: Python<'_>, lib: &str) -> PyResult<()> {
    let code = c"
import importlib.machinery as _m, os as _os, sys as _sys
import secsgate_py2compat as _c

class _Py2Loader(_m.SourceFileLoader):
    def source_to_code(self, data, path, *, _optimize=-1):
        try:
            return compile(data, path, 'exec', dont_inherit=True)
        except SyntaxError:
            text = data.decode('utf-8') if isinstance(data, bytes) else data
            fixed = _c.rewrite(text)
            if fixed == text:
                raise
            return compile(fixed, path, 'exec', dont_inherit=True)

def _install(lib):
    lib = _os.path.abspath(lib)
    def hook(path):
        if _os.path.abspath(path) != lib:
            raise ImportError('not the project library')
        return _m.FileFinder(path, (_Py2Loader, _m.SOURCE_SUFFIXES))
    _sys.path_hooks.insert(0, hook)
    _sys.path_importer_cache.pop(lib, None)
";
    let m = pyo3::types::PyModule::from_code(
        py,
        code,
        c"secsgate_lib_loader.py",
        c"secsgate_lib_loader",
    )?;
    m.call_method1("_install", (lib,))?;
    Ok(())
}

impl Inner {
    /// The room of a key's queue, in jobs and in KiB, and the most KiB it held; `None` once
    /// the engine is stopping.
    fn room(&self, key: &str) -> Option<(Arc<Semaphore>, Arc<Semaphore>, Arc<AtomicUsize>)> {
        let mut room = self.room.lock().ok()?;
        let mut room_kib = self.room_kib.lock().ok()?;
        let mut peak_kib = self.peak_kib.lock().ok()?;
        if let (Some(r), Some(b), Some(p)) = (room.get(key), room_kib.get(key), peak_kib.get(key)) {
            return Some((r.clone(), b.clone(), p.clone()));
        }
        if self.queues.lock().is_ok_and(|q| q.stop) {
            return None;
        }
        let r = Arc::new(Semaphore::new(self.queue_limit));
        let b = Arc::new(Semaphore::new(self.queue_kib as usize));
        let p = Arc::new(AtomicUsize::new(0));
        room.insert(key.to_string(), r.clone());
        room_kib.insert(key.to_string(), b.clone());
        peak_kib.insert(key.to_string(), p.clone());
        Some((r, b, p))
    }

    fn push(&self, job: Job) {
        let Ok(mut q) = self.queues.lock() else {
            return;
        };
        if q.stop {
            // Stopping: the job is dropped (a `submit` caller sees its receiver fail).
            return;
        }
        if let Some(reason) = q.refused.get(&job.key) {
            let reason = reason.clone();
            drop(q);
            job.refuse(&reason);
            self.count_completed(1);
            return;
        }
        let key = job.key.clone();
        let queue = q.by_key.entry(key.clone()).or_default();
        let was_empty = queue.is_empty();
        queue.push_back(job);
        if was_empty && !q.busy.contains(&key) {
            q.ready.push_back(key);
            self.wake.notify_one();
        }
    }

    /// The next jobs to run: up to `BATCH` queued jobs of one key, in order (they would run
    /// one after another anyway; taking them together saves a GIL hand-over per job).
    /// `finished` is the key whose jobs this worker just ran: it goes to the back of the ready
    /// keys if it has more, and this worker takes it itself when no other key is waiting
    /// (no wake-up of another worker for it).
    fn next(&self, finished: Option<String>) -> Option<Vec<Job>> {
        let mut q = self.queues.lock().ok()?;
        if let Some(key) = finished {
            q.busy.remove(&key);
            if q.by_key.get(&key).is_some_and(|jobs| !jobs.is_empty()) {
                q.ready.push_back(key);
                if q.ready.len() > 1 {
                    self.wake.notify_one();
                }
            } else {
                q.by_key.remove(&key);
            }
        }
        loop {
            if let Some(key) = q.ready.pop_front() {
                let jobs: Vec<Job> = match q.by_key.get_mut(&key) {
                    Some(queue) => {
                        let n = queue.len().min(BATCH);
                        queue.drain(..n).collect()
                    }
                    None => Vec::new(),
                };
                if !jobs.is_empty() {
                    q.busy.insert(key);
                    return Some(jobs);
                }
                continue;
            }
            if q.stop {
                return None;
            }
            q = self.wake.wait(q).ok()?;
        }
    }

    /// Counts finished jobs (however they ended) and publishes the count.
    fn count_completed(&self, n: u64) {
        let total = self.completed.fetch_add(n, Ordering::Relaxed) + n;
        self.completed_watch.send_replace(total);
    }

    /// Starts a worker thread in slot `index` (at start, and in place of an abandoned one).
    fn start_worker(self: &Arc<Self>, index: usize) {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut slot) = self.slots[index].lock() {
            slot.generation = generation;
        }
        let inner = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("python-{index}"))
            .spawn(move || inner.worker(index, generation));
        if let Err(e) = spawned {
            error!(target: "script", "cannot start Python worker {index}: {e}");
        }
    }

    /// A worker: attached to the interpreter for its whole life (one Python thread state,
    /// kept), and detached (the GIL released) while it waits for jobs. It runs the jobs of its
    /// slot until the slot is no longer its own (it was abandoned): then it exits.
    fn worker(self: Arc<Self>, index: usize, generation: u64) {
        Python::attach(|py| {
            let mut finished = None;
            while let Some(jobs) = py.detach(|| self.next(finished.take())) {
                let key = jobs[0].key.clone();
                match self.slots[index].lock() {
                    Ok(mut slot) if slot.generation == generation => slot.pending = jobs.into(),
                    _ => return,
                }
                // The engine's gateway, current on this thread while its jobs run.
                let _current = host::enter(self.host.read().ok().and_then(|h| h.clone()));
                let mut ran = 0;
                loop {
                    let job = match self.slots[index].lock() {
                        Ok(mut slot) if slot.generation == generation => slot.pending.pop_front(),
                        _ => return,
                    };
                    let Some(job) = job else {
                        break;
                    };
                    if !self.run(py, index, generation, job) {
                        // Abandoned: the watchdog counted this job and handed the rest on.
                        if ran > 0 {
                            self.count_completed(ran);
                        }
                        return;
                    }
                    ran += 1;
                }
                self.count_completed(ran);
                finished = Some(key);
            }
        });
    }

    /// Runs one job; false if this thread was abandoned meanwhile (it must exit then).
    fn run(&self, py: Python<'_>, index: usize, generation: u64, mut job: Job) -> bool {
        let handler = self
            .handlers
            .read()
            .ok()
            .and_then(|h| h.get(&job.handler).cloned());
        let cancel = guard::Cancel::new();
        // Python's id of this thread, for the watchdog's interrupt.
        let thread = unsafe { pyo3::ffi::PyThread_get_thread_ident() } as u64;
        let started = Instant::now();
        // Set while attached, so the watchdog (also attached to interrupt) sees a consistent
        // state.
        match self.slots[index].lock() {
            Ok(mut slot) if slot.generation == generation => {
                slot.current = Some(Current {
                    job: job.id,
                    handler: job.handler.clone(),
                    key: job.key.clone(),
                    thread,
                    started,
                    deadline: started + self.timeout,
                    interrupted: None,
                    stuck: false,
                    cancel: cancel.clone(),
                    done: job.done.take(),
                    room: job.room.take(),
                });
            }
            _ => return false,
        }
        let result = handler.map(|handler| {
            let _cancel = guard::enter(cancel);
            let globals = handler.globals.bind(py).copy()?;
            globals.set_item(pyo3::intern!(py, "payload"), job.payload.to_dict(py)?)?;
            use pyo3::types::PyCodeMethods;
            handler.code.bind(py).run(Some(&globals), None)?;
            Ok::<_, PyErr>(())
        });
        let current = match self.slots[index].lock() {
            Ok(mut slot) if slot.generation == generation => slot.current.take(),
            _ => None,
        };
        let Some(mut current) = current else {
            // Abandoned while it ran: the watchdog reported the job; this thread now exits.
            if let Ok(mut abandoned) = self.abandoned.lock() {
                abandoned.retain(|a| a.generation != generation);
            }
            clear_interrupt(thread);
            let how = match &result {
                Some(Ok(())) => "ended".to_string(),
                Some(Err(e)) => format!(
                    "raised {}",
                    e.get_type(py)
                        .name()
                        .map_or_else(|_| "an exception".into(), |n| n.to_string())
                ),
                None => "ended".to_string(),
            };
            info!(target: "script", handler = %job.handler, equipment = %job.key,
                "abandoned handler {how} after {:.1} s; its thread exits", started.elapsed().as_secs_f64());
            return false;
        };
        // Clear an interrupt that arrived after the script finished.
        clear_interrupt(thread);
        if current.stuck {
            if let Ok(mut q) = self.queues.lock() {
                q.refused.remove(&job.key);
            }
            warn!(target: "script", handler = %job.handler, equipment = %job.key,
                "the stuck handler ended after {:.1} s; jobs of {} are taken again", started.elapsed().as_secs_f64(), job.key);
        }
        let took = started.elapsed();
        let outcome = match result {
            None => Outcome::NoHandler,
            Some(Ok(())) => Outcome::Done,
            Some(Err(e)) if e.is_instance_of::<system::ScriptTimeout>(py) => {
                error!(target: "script", handler = %job.handler, key = %job.key,
                    "handler interrupted: it ran longer than its limit of {:?}", self.timeout);
                Outcome::TimedOut
            }
            Some(Err(e)) if e.is_instance_of::<pyo3::exceptions::PySystemExit>(py) => {
                let tb = format_error(py, &e);
                error!(target: "script", handler = %job.handler, key = %job.key,
                    "handler raised SystemExit (sys.exit, exit or quit): it ends the handler, never the gateway:\n{tb}");
                Outcome::Raised(tb)
            }
            Some(Err(e)) => {
                let tb = format_error(py, &e);
                error!(target: "script", handler = %job.handler, key = %job.key, "handler raised:\n{tb}");
                Outcome::Raised(tb)
            }
        };
        match &outcome {
            Outcome::Done => self.stats.ended(&job.handler, took, stats::Ended::Done),
            Outcome::Raised(tb) => self
                .stats
                .ended(&job.handler, took, stats::Ended::Raised(tb)),
            Outcome::TimedOut => self.stats.ended(
                &job.handler,
                took,
                stats::Ended::TimedOut(&format!(
                    "interrupted: it ran longer than its limit of {:?}",
                    self.timeout
                )),
            ),
            _ => {}
        }
        if let Some(done) = current.done.take() {
            let _ = done.send(outcome);
        }
        true
    }

    /// What the watchdog must do about slot `index` now, if anything.
    fn due(&self, index: usize, now: Instant) -> Option<Due> {
        let slot = self.slots[index].lock().ok()?;
        let c = slot.current.as_ref()?;
        if now < c.deadline {
            return None;
        }
        match c.interrupted {
            None => Some(Due::Interrupt {
                job: c.job,
                first: true,
            }),
            Some((first, _)) if now >= first + ABANDON_AFTER && !c.stuck => Some(Due::Abandon),
            Some(_)
                if c.stuck
                    && self
                        .abandoned
                        .lock()
                        .is_ok_and(|a| a.len() < self.abandoned_limit) =>
            {
                Some(Due::Abandon)
            }
            Some((_, last)) if now >= last + REINTERRUPT => Some(Due::Interrupt {
                job: c.job,
                first: false,
            }),
            Some(_) => None,
        }
    }

    /// Interrupts the job of slot `index` if it still runs `job`: sets its cancellation (waking
    /// its sleeps and waits) and raises `ScriptTimeout` in its thread.
    fn interrupt(&self, py: Python<'_>, index: usize, job: u64, now: Instant) {
        // Attached: the worker changes its slot only while attached, so the thread cannot
        // have moved on to other work in between.
        let Ok(mut slot) = self.slots[index].lock() else {
            return;
        };
        let Some(c) = slot.current.as_mut().filter(|c| c.job == job) else {
            return;
        };
        c.cancel.cancel();
        raise_timeout(py, c.thread);
        c.interrupted = Some(match c.interrupted {
            Some((first, _)) => (first, now),
            None => (now, now),
        });
    }

    /// Abandons the job of slot `index` (still running after its interrupt): reports it,
    /// hands the rest of its batch back to its key's queue and starts a new worker in the
    /// slot. With [`EngineSettings::abandoned_limit`] abandoned threads alive, marks it stuck instead and
    /// refuses its key's jobs until it ends.
    fn abandon(self: &Arc<Self>, index: usize, now: Instant) {
        let Ok(mut guard) = self.slots[index].lock() else {
            return;
        };
        let slot = &mut *guard;
        let Some(c) = slot.current.as_mut() else {
            return;
        };
        let Ok(mut abandoned) = self.abandoned.lock() else {
            return;
        };
        if abandoned.len() >= self.abandoned_limit {
            if c.stuck {
                return;
            }
            c.stuck = true;
            let handler = c.handler.clone();
            let reason = format!(
                "handler {} of {} is still running {:.1} s after it started (limit {:?}) and {} abandoned handler threads are already running (the limit); jobs of {} are refused until it ends",
                c.handler,
                c.key,
                now.duration_since(c.started).as_secs_f64(),
                self.timeout,
                abandoned.len(),
                c.key
            );
            let key = c.key.clone();
            drop(abandoned);
            let pending: Vec<Job> = slot.pending.drain(..).collect();
            error!(target: "script", handler = %handler, equipment = %key, "{reason}");
            let mut refused = pending.len() as u64;
            for job in pending {
                job.refuse(&reason);
            }
            if let Ok(mut q) = self.queues.lock() {
                let queued: Vec<Job> = q
                    .by_key
                    .get_mut(&key)
                    .map(|jobs| jobs.drain(..).collect())
                    .unwrap_or_default();
                q.refused.insert(key, reason.clone());
                drop(q);
                refused += queued.len() as u64;
                for job in queued {
                    job.refuse(&reason);
                }
            }
            self.count_completed(refused);
            return;
        }
        let Some(mut c) = slot.current.take() else {
            return;
        };
        abandoned.push(Abandoned {
            generation: slot.generation,
            thread: c.thread,
            last_interrupt: c.interrupted.map_or(now, |(_, last)| last),
        });
        let alive = abandoned.len();
        drop(abandoned);
        let pending: Vec<Job> = slot.pending.drain(..).collect();
        // Until `start_worker` gives the slot to a new thread, no thread owns it.
        slot.generation = 0;
        drop(guard);
        let total = self.abandoned_total.fetch_add(1, Ordering::Relaxed) + 1;
        warn!(target: "script", handler = %c.handler, equipment = %c.key,
            "handler abandoned: still running {:.2} s after it started (limit {:?}) although interrupted (it catches BaseException or is blocked in C); its thread is left to finish on its own and a new worker takes over ({alive} abandoned threads running, at most {}; {total} abandoned in all)",
            now.duration_since(c.started).as_secs_f64(), self.timeout, self.abandoned_limit);
        self.stats.ended(
            &c.handler,
            now.duration_since(c.started),
            stats::Ended::Abandoned(&format!(
                "abandoned: still running {:.2} s after it started (limit {:?}) although interrupted",
                now.duration_since(c.started).as_secs_f64(),
                self.timeout
            )),
        );
        if let Some(done) = c.done.take() {
            let _ = done.send(Outcome::Abandoned);
        }
        drop(c.room.take());
        self.count_completed(1);
        if let Ok(mut q) = self.queues.lock() {
            if c.stuck {
                q.refused.remove(&c.key);
            }
            let queue = q.by_key.entry(c.key.clone()).or_default();
            for job in pending.into_iter().rev() {
                queue.push_front(job);
            }
            q.busy.remove(&c.key);
            if q.by_key.get(&c.key).is_some_and(|jobs| !jobs.is_empty()) {
                q.ready.push_back(c.key.clone());
            } else {
                q.by_key.remove(&c.key);
            }
        }
        self.wake.notify_one();
        self.start_worker(index);
    }

    /// Interrupts again, every [`REINTERRUPT`], the abandoned handlers still running (one
    /// that catches only the first interrupt then ends).
    fn interrupt_abandoned(&self, py: Python<'_>, now: Instant) {
        // Attached: an abandoned thread removes itself while attached, before it exits.
        let Ok(mut abandoned) = self.abandoned.lock() else {
            return;
        };
        for a in abandoned.iter_mut() {
            if now >= a.last_interrupt + REINTERRUPT {
                raise_timeout(py, a.thread);
                a.last_interrupt = now;
            }
        }
    }

    /// The globals a handler's runs start from.
    fn globals(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyDict>> {
        let globals = PyDict::new(py);
        globals.set_item("__builtins__", self.builtins.bind(py))?;
        globals.set_item("__name__", "__handler__")?;
        globals.set_item(
            "__file__",
            self.project
                .join("handlers")
                .join(format!("{name}.py"))
                .display()
                .to_string(),
        )?;
        globals.set_item("system", py.import("system")?)?;
        Ok(globals.unbind())
    }

    /// Compiles a handler file and swaps it in; on failure logs why and keeps the old one.
    fn load_handler(&self, path: &Path) {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            return;
        };
        let source = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                error!(target: "script", handler = %name, "cannot read {}: {e}", path.display());
                return;
            }
        };
        let compiled = Python::attach(|py| {
            let (code, rewritten) = compile(py, &source, path)?;
            let globals = self.globals(py, &name).map_err(|e| format_error(py, &e))?;
            Ok::<_, String>((code, globals, rewritten))
        });
        match compiled {
            Ok((code, globals, rewritten)) => {
                let Ok(mut handlers) = self.handlers.write() else {
                    return;
                };
                let version = handlers.get(&name).map_or(1, |h| h.version + 1);
                handlers.insert(
                    name.clone(),
                    Arc::new(Handler {
                        code,
                        globals,
                        version,
                    }),
                );
                self.stats
                    .loaded(&name, &path.display().to_string(), version);
                info!(target: "script", handler = %name, version, rewritten_from_python2 = rewritten, "handler loaded");
            }
            Err(e) => {
                let kept = self.handlers.read().is_ok_and(|h| h.contains_key(&name));
                self.stats
                    .compile_failed(&name, &path.display().to_string(), &e);
                error!(target: "script", handler = %name,
                    "{} does not compile{}:\n{e}", path.display(),
                    if kept { "; the previous version keeps running" } else { "" });
            }
        }
    }

    /// Handles a changed path under the project: handlers are recompiled, library modules
    /// checked and reloaded, deleted handlers unregistered.
    fn reload(&self, path: &Path) {
        self.reload_file(path);
        self.reloads.send_modify(|n| *n += 1);
    }

    fn reload_file(&self, path: &Path) {
        let handlers_dir = self.project.join("handlers");
        let lib_dir = self.project.join("lib");
        if !is_script(path) {
            return;
        }
        if path.parent() == Some(handlers_dir.as_path()) {
            if let Err(why) = resolve(&self.project, path, true) {
                warn!(target: "script", "{why}");
                if let Some(name) = path.file_stem().and_then(|s| s.to_str())
                    && let Ok(mut h) = self.handlers.write()
                    && h.remove(name).is_some()
                {
                    self.stats.removed(name);
                    info!(target: "script", handler = %name, "handler removed (its file is refused)");
                }
            } else if path.exists() {
                self.load_handler(path);
            } else if let Some(name) = path.file_stem().and_then(|s| s.to_str())
                && let Ok(mut h) = self.handlers.write()
                && h.remove(name).is_some()
            {
                self.stats.removed(name);
                info!(target: "script", handler = %name, "handler removed (its file was deleted)");
            }
        } else if let Ok(rel) = path.strip_prefix(&lib_dir) {
            if !path.exists() {
                info!(target: "script", "library file {} was deleted; modules already imported stay loaded", path.display());
                return;
            }
            let module = rel
                .with_extension("")
                .components()
                .filter_map(|c| c.as_os_str().to_str())
                .collect::<Vec<_>>()
                .join(".");
            let module = module
                .strip_suffix(".__init__")
                .unwrap_or(&module)
                .to_string();
            Python::attach(|py| self.reload_module(py, path, &module));
        }
    }

    fn reload_module(&self, py: Python<'_>, path: &Path, module: &str) {
        let source = match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                error!(target: "script", module, "cannot read {}: {e}", path.display());
                return;
            }
        };
        if let Err(e) = compile(py, &source, path) {
            error!(target: "script", module, "{} does not compile; the previous version keeps running:\n{e}", path.display());
            return;
        }
        let result = (|| -> PyResult<bool> {
            let importlib = py.import("importlib")?;
            importlib.call_method0("invalidate_caches")?;
            let modules = py.import("sys")?.getattr("modules")?;
            match modules.get_item(module) {
                Ok(m) => {
                    importlib.call_method1("reload", (m,))?;
                    Ok(true)
                }
                Err(_) => Ok(false),
            }
        })();
        match result {
            Ok(true) => info!(target: "script", module, "library module reloaded"),
            Ok(false) => {
                info!(target: "script", module, "library module changed (it loads on first import)")
            }
            Err(e) => {
                error!(target: "script", module, "library module failed to reload:\n{}", format_error(py, &e))
            }
        }
    }
}

/// Raises `ScriptTimeout` in a Python thread (call attached).
fn raise_timeout(py: Python<'_>, thread: u64) {
    let exc = py.get_type::<system::ScriptTimeout>();
    unsafe {
        pyo3::ffi::PyThreadState_SetAsyncExc(thread as std::os::raw::c_ulong as _, exc.as_ptr());
    }
}

/// Clears an interrupt still pending for a Python thread (call attached).
fn clear_interrupt(thread: u64) {
    unsafe {
        pyo3::ffi::PyThreadState_SetAsyncExc(
            thread as std::os::raw::c_ulong as _,
            std::ptr::null_mut(),
        );
    }
}

/// Interrupts handlers past their deadline (again every half second while they ignore it),
/// and abandons those still running [`ABANDON_AFTER`] the first interrupt.
fn watchdog_loop(inner: std::sync::Weak<Inner>) {
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let now = Instant::now();
        for index in 0..inner.slots.len() {
            match inner.due(index, now) {
                None => {}
                // Never attach while holding a lock a worker takes while attached.
                Some(Due::Interrupt { job, first }) => {
                    if first {
                        // Wake its sleeps and waits at once, before waiting for the GIL.
                        if let Ok(slot) = inner.slots[index].lock()
                            && let Some(c) = slot.current.as_ref().filter(|c| c.job == job)
                        {
                            c.cancel.cancel();
                        }
                    }
                    Python::attach(|py| inner.interrupt(py, index, job, now));
                }
                Some(Due::Abandon) => inner.abandon(index, now),
            }
        }
        let reinterrupt = inner
            .abandoned
            .lock()
            .is_ok_and(|a| a.iter().any(|a| now >= a.last_interrupt + REINTERRUPT));
        if reinterrupt {
            Python::attach(|py| inner.interrupt_abandoned(py, now));
        }
    }
}

/// Watches the project folder; after a 300 ms debounce each touched script is reloaded by
/// whether it exists now (so in-place writes and save-by-rename look the same).
fn watch(inner: Arc<Inner>) -> notify_debouncer_full::notify::Result<WatcherHandle> {
    use notify_debouncer_full::notify::{EventKind, RecursiveMode};
    use notify_debouncer_full::{DebounceEventResult, new_debouncer};
    let project = inner.project.clone();
    let weak = Arc::downgrade(&inner);
    let mut debouncer = new_debouncer(
        Duration::from_millis(300),
        None,
        move |result: DebounceEventResult| {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            match result {
                Ok(events) => {
                    let mut paths: Vec<PathBuf> = events
                        .iter()
                        .filter(|e| !matches!(e.event.kind, EventKind::Access(_)))
                        .flat_map(|e| e.event.paths.iter().cloned())
                        .filter(|p| is_script(p) && !in_data_or_logs(&inner.project, p))
                        .collect();
                    paths.sort();
                    paths.dedup();
                    for p in paths {
                        inner.reload(&p);
                    }
                }
                Err(errors) => {
                    for e in errors {
                        warn!(target: "script", "file watch error: {e}; rescanning handlers");
                    }
                    for path in handler_files(&inner.project) {
                        inner.load_handler(&path);
                    }
                }
            }
        },
    )?;
    debouncer.watch(&project, RecursiveMode::Recursive)?;
    Ok(debouncer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secs2::{Item, StreamFunction};

    /// A gateway that knows one equipment name and refuses everything.
    struct FakeHost(&'static str);

    impl Host for FakeHost {
        fn send_request(
            &self,
            _: StreamFunction,
            _: bool,
            _: Option<Item>,
            equipment: &str,
        ) -> Result<u32, HostError> {
            Err(HostError::UnknownEquipment {
                name: equipment.to_string(),
                known: vec![self.0.to_string()],
            })
        }
        fn get_response(
            &self,
            _: u32,
            _: &str,
            _: Duration,
        ) -> Result<Option<serde_json::Value>, HostError> {
            Err(HostError::Stopped)
        }
        fn send_response(
            &self,
            _: u32,
            _: u32,
            _: StreamFunction,
            _: Option<Item>,
            _: &str,
        ) -> Result<(), HostError> {
            Err(HostError::Stopped)
        }
        fn copy_equipment(&self, _: CopyEquipment) -> Result<(), HostError> {
            Err(HostError::NoAddress)
        }
        fn enable_disable_equipment(&self, _: bool, _: &[String]) -> Vec<HostError> {
            Vec::new()
        }
        fn start_sim_event_run(&self, _: &str, _: &str) -> Result<(), HostError> {
            Err(HostError::Stopped)
        }
        fn tool_program(&self, _: &str) -> Result<Option<ToolProgram>, HostError> {
            Err(HostError::Stopped)
        }
        fn tool_programs(&self) -> Result<Vec<(String, String, String)>, HostError> {
            Err(HostError::Stopped)
        }
        fn delete_tool_program(&self, _: &str) -> Result<bool, HostError> {
            Err(HostError::Stopped)
        }
        fn tags(&self) -> Result<Arc<crate::tags::Tags>, HostError> {
            Err(HostError::Stopped)
        }
        fn database(&self, _: &str) -> Result<crate::store::DatabaseLocation, HostError> {
            Err(HostError::Stopped)
        }
    }

    fn engine(dir: &Path, files: &[(&str, &str)], queue_limit: usize) -> ScriptEngine {
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        ScriptEngine::start(
            dir,
            EngineSettings {
                workers: 2,
                handler_timeout: Duration::from_secs(30),
                hot_reload: false,
                queue_limit,
                queue_bytes: DEFAULT_QUEUE_BYTES,
                abandoned_limit: DEFAULT_ABANDONED_LIMIT,
            },
        )
    }

    fn raised(outcome: Outcome) -> String {
        match outcome {
            Outcome::Raised(tb) => tb,
            other => panic!("expected a raised handler, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_engine_talks_to_its_own_gateway() {
        let handler = "system.secsgem.sendRequest('S1F1', True, '', 'Nope')\n";
        let (da, db, dc) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let a = engine(da.path(), &[("handlers/send.py", handler)], 8);
        let b = engine(db.path(), &[("handlers/send.py", handler)], 8);
        let none = engine(dc.path(), &[("handlers/send.py", handler)], 8);
        a.set_host(Arc::new(FakeHost("ToolA")));
        b.set_host(Arc::new(FakeHost("ToolB")));
        let (ra, rb, rn) = (
            a.submit("k", "send", Payload::default()).await,
            b.submit("k", "send", Payload::default()).await,
            none.submit("k", "send", Payload::default()).await,
        );
        let ta = raised(ra.await.unwrap());
        let tb = raised(rb.await.unwrap());
        let tn = raised(rn.await.unwrap());
        assert!(
            ta.contains("SecsGemError: unknown equipment 'Nope' (known: ToolA)"),
            "{ta}"
        );
        assert!(
            tb.contains("SecsGemError: unknown equipment 'Nope' (known: ToolB)"),
            "{tb}"
        );
        assert!(
            tn.contains("SecsGemError: system.secsgem works only in handlers a gateway runs"),
            "{tn}"
        );
        for e in [a, b, none] {
            e.stop();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thread_a_handler_starts_has_no_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let handler = "import threading\nerrors = []\ndef call():\n    try:\n        system.secsgem.sendRequest('S1F1', True, '', 'ToolA')\n    except Exception as e:\n        errors.append(str(e))\nt = threading.Thread(target=call)\nt.start()\nt.join()\nraise RuntimeError(errors[0])\n";
        let e = engine(dir.path(), &[("handlers/spawn.py", handler)], 8);
        e.set_host(Arc::new(FakeHost("ToolA")));
        let tb = raised(
            e.submit("k", "spawn", Payload::default())
                .await
                .await
                .unwrap(),
        );
        assert!(
            tb.contains("RuntimeError: system.secsgem works only in handlers a gateway runs: this thread is not running one of its handlers"),
            "{tb}"
        );
        e.stop();
    }

    /// With `queue_limit` jobs of a key queued or running, `post` waits until one finished.
    #[test]
    fn a_full_queue_makes_post_wait() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(
            dir.path(),
            &[
                (
                    "lib/secsgate_test_gate.py",
                    "import threading\nopen_ = threading.Event()\n",
                ),
                (
                    "handlers/blocked.py",
                    "import secsgate_test_gate as g\ng.open_.wait(30)\n",
                ),
            ],
            2,
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut done = e.watch_completed();
            // Two jobs fill the queue (one runs, held at the gate; one waits).
            e.post("tool", "blocked", Payload::default()).await;
            e.post("tool", "blocked", Payload::default()).await;
            let third = tokio::spawn({
                let e = e.clone();
                async move { e.post("tool", "blocked", Payload::default()).await }
            });
            // Another key has its own room.
            e.post("other", "blocked", Payload::default()).await;
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            assert!(!third.is_finished(), "post did not wait for room");
            Python::attach(|py| {
                py.import("secsgate_test_gate")
                    .and_then(|g| g.getattr("open_"))
                    .and_then(|ev| ev.call_method0("set"))
                    .map(|_| ())
            })
            .unwrap();
            tokio::time::timeout(Duration::from_secs(10), third)
                .await
                .expect("post got room once a job finished")
                .unwrap();
            tokio::time::timeout(Duration::from_secs(10), done.wait_for(|n| *n >= 4))
                .await
                .expect("every job ran")
                .unwrap();
        });
        e.stop();
    }

    /// With `abandoned_limit` abandoned threads alive, a handler that ignores its interrupt is
    /// not abandoned: its key's jobs are refused until it ends; other keys go on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_abandoned_limit_a_stuck_key_refuses_its_jobs() {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in [
            ("lib/secsgate_test_cap_gate.py", "released = False\n"),
            (
                "handlers/spin.py",
                "import secsgate_test_cap_gate as gate\nwhile not gate.released:\n    try:\n        while not gate.released:\n            pass\n    except:\n        pass\n",
            ),
            ("handlers/ok.py", "pass\n"),
        ] {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let e = ScriptEngine::start(
            dir.path(),
            EngineSettings {
                workers: 2,
                handler_timeout: Duration::from_millis(300),
                hot_reload: false,
                queue_limit: 8,
                queue_bytes: DEFAULT_QUEUE_BYTES,
                abandoned_limit: 1,
            },
        );
        let within = |rx: oneshot::Receiver<Outcome>| async move {
            tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .expect("an outcome within 10 s")
                .expect("the engine is running")
        };
        let a = e.submit("a", "spin", Payload::default()).await;
        assert_eq!(within(a).await, Outcome::Abandoned);
        assert_eq!((e.abandoned_handlers(), e.abandoned_threads()), (1, 1));
        let b = e.submit("b", "spin", Payload::default()).await;
        let b_next = e.submit("b", "ok", Payload::default()).await;
        match within(b_next).await {
            Outcome::Refused(why) => assert!(
                why.contains("handler spin of b is still running")
                    && why.contains("1 abandoned handler threads are already running (the limit); jobs of b are refused until it ends"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        // While b is stuck its new jobs are refused at once; other keys run.
        let b_new = e.submit("b", "ok", Payload::default()).await;
        assert!(matches!(within(b_new).await, Outcome::Refused(_)));
        let c = e.submit("c", "ok", Payload::default()).await;
        assert_eq!(within(c).await, Outcome::Done);
        assert_eq!(e.abandoned_handlers(), 1);
        // Released, the stuck handler ends and b's jobs run again.
        Python::attach(|py| {
            py.import("secsgate_test_cap_gate")
                .and_then(|g| g.setattr("released", true))
        })
        .unwrap();
        assert!(matches!(
            within(b).await,
            Outcome::Done | Outcome::TimedOut | Outcome::Abandoned
        ));
        let b_after = e.submit("b", "ok", Payload::default()).await;
        assert_eq!(within(b_after).await, Outcome::Done);
        e.stop();
    }

    /// Runs `f` on its own thread and fails (rather than hangs) if it takes over 20 s.
    fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{what} did not finish within 20 s"))
    }

    #[test]
    fn handler_symlinks_outside_the_project_and_loops_are_refused() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().unwrap();
        let root = root.path().canonicalize().unwrap();
        let (project, outside) = (root.join("project"), root.join("outside"));
        for d in ["handlers/sub", "shared", "lib"] {
            std::fs::create_dir_all(project.join(d)).unwrap();
        }
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("evil.py"), "x = 1\n").unwrap();
        std::fs::write(outside.join("dir/also.py"), "x = 1\n").unwrap();
        std::fs::write(project.join("shared/inside.py"), "x = 1\n").unwrap();
        std::fs::write(project.join("handlers/ok.py"), "x = 1\n").unwrap();
        std::fs::write(project.join("handlers/sub/deep.py"), "x = 1\n").unwrap();
        let h = project.join("handlers");
        symlink(outside.join("evil.py"), h.join("evil.py")).unwrap();
        symlink(outside.join("dir"), h.join("outdir")).unwrap();
        symlink("../shared/inside.py", h.join("inside.py")).unwrap();
        symlink("b.py", h.join("a.py")).unwrap();
        symlink("a.py", h.join("b.py")).unwrap();
        symlink("..", h.join("sub/parent")).unwrap();
        symlink(".", h.join("sub/itself")).unwrap();
        symlink("../lib", project.join("lib/loop")).unwrap();

        let p = project.clone();
        let found = within("listing the handlers", move || {
            python_files(&p, &p.join("handlers"), true)
        });
        let names: Vec<String> = found
            .files
            .iter()
            .map(|f| f.strip_prefix(&h).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["inside.py", "ok.py", "sub/deep.py"]);
        let refused = found.refused.join("\n");
        for want in [
            format!(
                "{} points outside the project, to {}",
                h.join("evil.py").display(),
                outside.join("evil.py").display()
            ),
            format!(
                "{} points outside the project, to {}",
                h.join("outdir").display(),
                outside.join("dir").display()
            ),
            format!("{} -> b.py: cannot be resolved", h.join("a.py").display()),
            format!("{} -> a.py: cannot be resolved", h.join("b.py").display()),
        ] {
            assert!(refused.contains(&want), "missing {want:?} in {refused}");
        }

        let p = project.clone();
        let check = within("secsgate check", move || check_scripts(&p));
        assert!(check.problems.is_empty(), "{:?}", check.problems);
        assert_eq!(check.warnings.len(), 4, "{:?}", check.warnings);

        // The engine (with its file watch, which walks the project too) starts and loads
        // only the handlers inside.
        let p = project.clone();
        let e = within("starting the engine with hot reload", move || {
            ScriptEngine::start(
                &p,
                EngineSettings {
                    workers: 1,
                    handler_timeout: Duration::from_secs(30),
                    hot_reload: true,
                    queue_limit: 8,
                    queue_bytes: DEFAULT_QUEUE_BYTES,
                    abandoned_limit: DEFAULT_ABANDONED_LIMIT,
                },
            )
        });
        for (name, loaded) in [
            ("ok", true),
            ("inside", true),
            ("deep", true),
            ("evil", false),
            ("also", false),
            ("a", false),
            ("b", false),
        ] {
            assert_eq!(e.has_handler(name), loaded, "{name}");
        }
        // A reload of a refused file does not load it; a handler replaced by a symlink out
        // of the project is dropped.
        e.reload_path(&h.join("evil.py"));
        e.reload_path(&h.join("a.py"));
        assert!(!e.has_handler("evil") && !e.has_handler("a"));
        std::fs::remove_file(h.join("ok.py")).unwrap();
        symlink(outside.join("evil.py"), h.join("ok.py")).unwrap();
        e.reload_path(&h.join("ok.py"));
        assert!(!e.has_handler("ok"));
        e.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reloads_are_observable() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), &[("handlers/h.py", "x = 1\n")], 8);
        let mut reloads = e.watch_reloads();
        assert_eq!(*reloads.borrow_and_update(), 0);
        let path = dir.path().canonicalize().unwrap().join("handlers/h.py");
        std::fs::write(&path, "def broken(:\n").unwrap();
        e.reload_path(&path);
        assert!(reloads.has_changed().unwrap());
        assert_eq!(*reloads.borrow_and_update(), 1);
        assert_eq!(e.handler_version("h"), Some(1));
        std::fs::write(&path, "x = 2\n").unwrap();
        e.reload_path(&path);
        assert_eq!(*reloads.borrow_and_update(), 2);
        assert_eq!(e.handler_version("h"), Some(2));
        e.stop();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_engine_drops_new_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let e = engine(dir.path(), &[("handlers/h.py", "x = 1\n")], 1);
        assert_eq!(
            e.submit("k", "h", Payload::default()).await.await,
            Ok(Outcome::Done)
        );
        e.stop();
        assert!(e.submit("k", "h", Payload::default()).await.await.is_err());
        e.post("k", "h", Payload::default()).await;
    }
}
