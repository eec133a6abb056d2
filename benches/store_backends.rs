//! Message store backends (`cargo bench --bench store_backends`): rows/s through the
//! [`Recorder`] (queue 8192, batch 1024, the gateway's defaults) into SQLite and into
//! PostgreSQL, measured in the same run, from the first record queued to the last committed
//! (`close`). PostgreSQL is measured both ways a batch can go in: `COPY ... FROM STDIN BINARY`
//! (the store's choice) and multi-row `INSERT`.
//!
//! The records are S6F11 event reports as a tool sends them, with the JSON and SML text the
//! writer makes. PostgreSQL is `SECSGATE_TEST_PG_URL` (`scripts/pg.sh start DIR` prints one);
//! without it only SQLite is measured. Each case runs `STORE_ROUNDS` times (default 3), best
//! kept; each line of stdout is one JSON object. Run without `--bench` (as `cargo test
//! --all-targets` does) it does nothing.

use std::sync::Arc;
use std::time::Instant;

use secsgate::secs2::sml;
use secsgate::store::messages::{
    DEFAULT_PREFIX, Direction, MessageRecord, Record, Recorder, RecorderSettings, RequestResponse,
    now_ms,
};
use secsgate::store::postgres::{InsertMode, PgStore};

const ROWS: u32 = 100_000;

fn records(prefix: &str) -> Vec<Record> {
    (0..ROWS)
        .map(|i| {
            let m = sml::parse_message(&format!(
                "S6F11 W <L [3] <U4 {i}> <U4 4001> <L [1] <L [2] <U4 9000> <L [3] <A \"2026120309313512\"> <A \"LOT-{i}\"> <A \"RCP-A\">>>>> ."
            ))
            .expect("a valid S6F11");
            Record::Message(MessageRecord {
                time_ms: now_ms(),
                gateway: Arc::from("bench"),
                equipment: format!("Tool{}", i % 16),
                prefix: prefix.to_string(),
                direction: Direction::Received,
                request_response: RequestResponse::of(&m),
                common_id: i.to_string(),
                txid: i,
                message_name: Some("LotStarted".into()),
                message: Arc::new(m),
            })
        })
        .collect()
}

fn settings() -> RecorderSettings {
    RecorderSettings {
        queue: 8192,
        batch: 1024,
        ..RecorderSettings::default()
    }
}

/// Rows/s of one run: every record queued, then the recorder closed (all committed).
fn run(rt: &tokio::runtime::Runtime, recorder: Recorder, rows: Vec<Record>) -> f64 {
    rt.block_on(async move {
        let start = Instant::now();
        for r in rows {
            recorder.record(r).await;
        }
        recorder.close().await;
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(recorder.written(), u64::from(ROWS), "every row written");
        assert_eq!(recorder.dropped(), 0);
        f64::from(ROWS) / secs
    })
}

fn drop_tables(url: &str, prefix: &str) {
    let mut client = secsgate::store::postgres::connect(url, "secsgate bench").expect("connect");
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS \"{prefix}Messages\", \"{prefix}Errors\""
        ))
        .expect("drop the bench tables");
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds: usize = std::env::var("STORE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let url = std::env::var("SECSGATE_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let mut best: Vec<(&str, f64)> = Vec::new();
    for round in 0..rounds {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("bench.sqlite");
        let recorder = Recorder::open_sqlite(&path, settings()).expect("SQLite store");
        let sqlite = run(&rt, recorder, records(DEFAULT_PREFIX));
        let mut results = vec![("sqlite", sqlite)];
        if let Some(url) = &url {
            for (name, mode) in [
                ("postgres_copy", InsertMode::Copy),
                ("postgres_insert", InsertMode::Values),
            ] {
                let prefix = format!("Bench{}_{round}_{name}_", std::process::id());
                let store = PgStore::new(url, "secsgate bench")
                    .expect("a PostgreSQL URL")
                    .with_mode(mode);
                let recorder = Recorder::start(Box::new(store), settings()).expect("a writer");
                let rate = run(&rt, recorder, records(&prefix));
                drop_tables(url, &prefix);
                results.push((name, rate));
            }
        }
        for (name, rate) in results {
            match best.iter_mut().find(|(n, _)| *n == name) {
                Some(b) => b.1 = b.1.max(rate),
                None => best.push((name, rate)),
            }
        }
    }
    for (name, rate) in &best {
        println!(
            "{}",
            serde_json::json!({"bench": name, "rows": ROWS, "batch": 1024, "rows_per_s": rate.round()})
        );
    }
    if url.is_none() {
        eprintln!("store_backends: SECSGATE_TEST_PG_URL is not set; PostgreSQL not measured");
    }
}
