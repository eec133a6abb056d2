//! The log of a test binary, captured in memory at info level, so that a test can check the
//! lines the code under test wrote and wait for one instead of for time.
//!
//! One subscriber serves the whole binary (tests run in parallel): each test looks only at
//! lines that name its own endpoint, equipment or simulator.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The captured log and a watch that ticks on each write.
#[derive(Clone)]
pub struct Logs {
    text: Arc<Mutex<String>>,
    tick: Arc<tokio::sync::watch::Sender<u64>>,
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut t) = self.text.lock() {
            t.push_str(&String::from_utf8_lossy(buf));
        }
        self.tick.send_modify(|n| *n += 1);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    /// Captures this test binary's log at info level (once; the tests share it).
    pub fn capture() -> Logs {
        static LOGS: OnceLock<Logs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs {
                text: Default::default(),
                tick: Arc::new(tokio::sync::watch::channel(0).0),
            };
            let _ = tracing_subscriber::fmt()
                .with_writer(logs.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::INFO)
                .try_init();
            logs
        })
        .clone()
    }

    /// Every line holding all the needles.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        let text = self.text.lock().map(|t| t.clone()).unwrap_or_default();
        text.lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until a line holds every needle (bounded by `within`, so that a missing line
    /// fails the test instead of hanging it).
    #[allow(dead_code)]
    pub async fn wait_for(&self, needles: &[&str], within: Duration) {
        let mut tick = self.tick.subscribe();
        let found = async {
            loop {
                if !self.lines_with(needles).is_empty() {
                    return;
                }
                let _ = tick.changed().await;
            }
        };
        tokio::time::timeout(within, found)
            .await
            .unwrap_or_else(|_| panic!("no log line with {needles:?}"));
    }
}
