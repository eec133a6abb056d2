//! What each handler did: its version and last load, calls, time, and its last error with
//! the traceback, for the web console and the metrics.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// One handler's record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HandlerStats {
    pub name: String,
    /// The file it was loaded from.
    pub file: String,
    /// 0 while it never compiled.
    pub version: u32,
    /// When the version in force was loaded.
    pub loaded: Option<SystemTime>,
    /// Runs finished (each with an outcome: done, raised, timed out or abandoned).
    pub calls: u64,
    /// Runs that raised or timed out, and runs abandoned.
    pub errors: u64,
    pub timeouts: u64,
    pub abandoned: u64,
    /// Time of every finished run, added up, and the longest.
    pub total: Duration,
    pub max: Duration,
    /// The last error: when, and its traceback (or what happened).
    pub last_error: Option<(SystemTime, String)>,
    /// The last compile error, if the file on disk does not compile now (the previous
    /// version keeps running).
    pub compile_error: Option<(SystemTime, String)>,
}

impl HandlerStats {
    /// Mean time of a run.
    pub fn mean(&self) -> Duration {
        if self.calls == 0 {
            Duration::ZERO
        } else {
            self.total / self.calls.min(u32::MAX as u64) as u32
        }
    }
}

/// How a run ended, as the statistics count it.
pub enum Ended<'a> {
    Done,
    Raised(&'a str),
    TimedOut(&'a str),
    Abandoned(&'a str),
}

/// Every handler's record, by name.
#[derive(Debug, Default)]
pub struct Stats {
    by_name: Mutex<HashMap<String, HandlerStats>>,
}

impl Stats {
    fn with(&self, name: &str, f: impl FnOnce(&mut HandlerStats)) {
        if let Ok(mut map) = self.by_name.lock() {
            let entry = map.entry(name.to_string()).or_insert_with(|| HandlerStats {
                name: name.to_string(),
                ..HandlerStats::default()
            });
            f(entry);
        }
    }

    /// A version was compiled and put in force.
    pub fn loaded(&self, name: &str, file: &str, version: u32) {
        self.with(name, |s| {
            s.file = file.to_string();
            s.version = version;
            s.loaded = Some(SystemTime::now());
            s.compile_error = None;
        });
    }

    /// The file does not compile.
    pub fn compile_failed(&self, name: &str, file: &str, error: &str) {
        self.with(name, |s| {
            s.file = file.to_string();
            s.compile_error = Some((SystemTime::now(), error.to_string()));
        });
    }

    /// The handler is gone (its file was deleted or refused).
    pub fn removed(&self, name: &str) {
        if let Ok(mut map) = self.by_name.lock() {
            map.remove(name);
        }
    }

    /// A run ended after `took`.
    pub fn ended(&self, name: &str, took: Duration, how: Ended<'_>) {
        self.with(name, |s| {
            s.calls += 1;
            s.total += took;
            s.max = s.max.max(took);
            let error = match how {
                Ended::Done => None,
                Ended::Raised(tb) => Some(tb),
                Ended::TimedOut(what) => {
                    s.timeouts += 1;
                    Some(what)
                }
                Ended::Abandoned(what) => {
                    s.abandoned += 1;
                    Some(what)
                }
            };
            if let Some(e) = error {
                s.errors += 1;
                s.last_error = Some((SystemTime::now(), e.to_string()));
            }
        });
    }

    /// Every handler's record, sorted by name.
    pub fn all(&self) -> Vec<HandlerStats> {
        let mut out: Vec<HandlerStats> = self
            .by_name
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_runs_errors_and_versions() {
        let s = Stats::default();
        s.loaded("h", "handlers/h.py", 1);
        s.ended("h", Duration::from_millis(10), Ended::Done);
        s.ended(
            "h",
            Duration::from_millis(30),
            Ended::Raised("Traceback: boom"),
        );
        s.compile_failed("h", "handlers/h.py", "SyntaxError");
        let h = &s.all()[0];
        assert_eq!((h.version, h.calls, h.errors), (1, 2, 1));
        assert_eq!(h.mean(), Duration::from_millis(20));
        assert_eq!(h.max, Duration::from_millis(30));
        assert_eq!(h.last_error.as_ref().unwrap().1, "Traceback: boom");
        assert!(h.compile_error.is_some());
        s.loaded("h", "handlers/h.py", 2);
        assert!(s.all()[0].compile_error.is_none());
        s.removed("h");
        assert!(s.all().is_empty());
    }
}
