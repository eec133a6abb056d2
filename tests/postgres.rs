//! The message store in PostgreSQL, against a real server: the recorder writes every record
//! in batches and a query reads them back; a burst through a queue of 64 loses nothing; the
//! server stopped and started again under a running writer loses nothing; two gateways
//! share one database, each row naming its gateway.
//!
//! The server's URL comes from `SECSGATE_TEST_PG_URL` (scripts/test.sh starts one and sets
//! it); without it these tests fail, unless `SECSGATE_SKIP_PG=1` says to skip them. The
//! outage test owns a server of its own (scripts/pg.sh in a temporary folder), which it stops
//! and starts. Each test writes tables of its own prefix. They wait on events (the writer's
//! flush, its log lines), not on the clock.

mod logs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use secsgate::config::DatabaseLocation;
use secsgate::secs2::sml;
use secsgate::store::messages::{
    Direction, EquipmentRecord, ErrorRecord, MessageRecord, Query, Record, Recorder,
    RecorderSettings, RequestResponse, StoreReader, now_ms,
};
use secsgate::store::postgres;

/// The test server's URL, or `None` when `SECSGATE_SKIP_PG=1` skips the test.
fn pg_url() -> Option<String> {
    if let Ok(url) = std::env::var("SECSGATE_TEST_PG_URL")
        && !url.is_empty()
    {
        return Some(url);
    }
    if std::env::var("SECSGATE_SKIP_PG").as_deref() == Ok("1") {
        eprintln!("skipped: SECSGATE_SKIP_PG=1");
        return None;
    }
    panic!(
        "SECSGATE_TEST_PG_URL is not set: run scripts/test.sh, or start a server with `scripts/pg.sh start DIR` and export SECSGATE_TEST_PG_URL=<the URL it prints> (SECSGATE_SKIP_PG=1 skips these tests)"
    );
}

/// A table prefix of this test run's own.
fn prefix(test: &str) -> String {
    format!("T{}_{test}_", std::process::id())
}

fn message(gateway: &str, prefix: &str, i: u32, text: &str) -> Record {
    let m = sml::parse_message(text).unwrap();
    Record::Message(MessageRecord {
        time_ms: now_ms(),
        gateway: gateway.into(),
        equipment: format!("Tool{}", i % 3),
        prefix: prefix.into(),
        direction: if i.is_multiple_of(2) {
            Direction::Received
        } else {
            Direction::Sent
        },
        request_response: RequestResponse::of(&m),
        common_id: format!("C{i}"),
        txid: i,
        message_name: i.is_multiple_of(5).then(|| "EventReport".to_string()),
        message: Arc::new(m),
    })
}

fn event(gateway: &str, prefix: &str, i: u32) -> Record {
    message(
        gateway,
        prefix,
        i,
        &format!(
            "S6F11 W <L [3] <U4 {i}> <U4 4001> <L [1] <L [2] <U4 1> <L [1] <A \"lot {i}\">>>>> ."
        ),
    )
}

fn settings(queue: usize, batch: usize) -> RecorderSettings {
    RecorderSettings {
        queue,
        batch,
        ..RecorderSettings::default()
    }
}

fn read_all(url: &str, query: &Query) -> Vec<secsgate::store::messages::StoredMessage> {
    let url = url.to_string();
    let query = query.clone();
    std::thread::spawn(move || {
        StoreReader::open(&DatabaseLocation::Postgres(url))
            .unwrap()
            .query_messages(&query, &HashMap::new())
            .unwrap()
    })
    .join()
    .unwrap()
}

/// Runs SQL on a plain thread (the sync client never runs on a tokio worker).
fn sql<T: Send + 'static>(
    url: &str,
    f: impl FnOnce(&mut ::postgres::Client) -> T + Send + 'static,
) -> T {
    let url = url.to_string();
    std::thread::spawn(move || {
        let mut client = postgres::connect(&url, "secsgate test").unwrap();
        f(&mut client)
    })
    .join()
    .unwrap()
}

fn count(url: &str, table: &str) -> i64 {
    let q = format!("SELECT COUNT(*) FROM \"{table}\"");
    sql(url, move |c| c.query_one(&q, &[]).unwrap().get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_writes_every_record_in_batches_and_a_query_reads_them_back() {
    let Some(url) = pg_url() else { return };
    let p = prefix("read");
    let recorder = Recorder::open_postgres(&url, "secsgate test", settings(64, 16)).unwrap();
    const N: u32 = 300;
    for i in 0..N {
        recorder.record(event("gw-read", &p, i)).await;
    }
    recorder
        .record(message("gw-read", &p, N, "S1F2 <L [0]> ."))
        .await;
    recorder
        .record(Record::Error(ErrorRecord {
            time_ms: now_ms(),
            gateway: "gw-read".into(),
            equipment: "Tool1".into(),
            prefix: p.clone(),
            kind: "validation",
            reason: "body: expected L, with a NUL \0 in it".into(),
            stream_function: Some(secsgate::secs2::StreamFunction {
                stream: 6,
                function: 11,
            }),
            message: None,
        }))
        .await;
    recorder
        .record(Record::Equipment(EquipmentRecord {
            gateway: "gw-read".into(),
            equipment: format!("{p}Tool1"),
            prefix: p.clone(),
            status: "Communicating".into(),
            sdl_file: "standard".into(),
        }))
        .await;
    recorder.close().await;
    assert_eq!(
        (recorder.written(), recorder.dropped()),
        (u64::from(N) + 3, 0)
    );

    let all = Query {
        prefix: Some(p.clone()),
        ..Query::default()
    };
    let rows = read_all(&url, &all);
    assert_eq!(rows.len(), N as usize + 1);
    assert!(
        rows.windows(2).all(|w| w[0].id < w[1].id),
        "written in order"
    );
    let first = &rows[0];
    assert_eq!(
        (
            first.gateway.as_deref(),
            first.equipment.as_str(),
            first.stream_function.as_str(),
            first.direction.as_str(),
            first.request_response.as_str(),
            first.common_id.as_str(),
            first.txid,
            first.reply,
            first.message_name.as_deref(),
        ),
        (
            Some("gw-read"),
            "Tool0",
            "S6F11",
            "Received",
            "Request",
            "C0",
            0,
            true,
            Some("EventReport"),
        )
    );
    assert!(
        first.sml.starts_with("S6F11 W <L [3] <U4 0>"),
        "{}",
        first.sml
    );
    assert!(first.message.contains("\"stream\":6"), "{}", first.message);
    assert_eq!(first.timestamp.len(), 24, "{}", first.timestamp);
    let last = rows.last().unwrap();
    assert_eq!((last.stream_function.as_str(), last.reply), ("S1F2", false));

    // Filters and the newest-N limit, as secsgate log and the web console use them.
    let some = Query {
        prefix: Some(p.clone()),
        equipment: Some("Tool1".into()),
        direction: Some(Direction::Sent),
        limit: Some(10),
        ..Query::default()
    };
    let rows = read_all(&url, &some);
    assert_eq!(rows.len(), 10);
    assert!(
        rows.iter()
            .all(|r| r.equipment == "Tool1" && r.direction == "Sent")
    );
    assert_eq!(rows.last().unwrap().txid, 295, "the newest, oldest first");
    let named = Query {
        prefix: Some(p.clone()),
        message_name: Some("EventReport".into()),
        ..Query::default()
    };
    // Every fifth record is named: 0, 5, ..., 300 (the S1F2 too).
    assert_eq!(read_all(&url, &named).len(), 61);

    // The columns' types read back as they should, raw bytes included.
    let m = format!("{p}Messages");
    let (raw, txid, reply): (Vec<u8>, i64, bool) = sql(&url, move |c| {
        let r = c
            .query_one(
                &format!(
                    "SELECT \"Raw\", \"TxID\", \"Reply\" FROM \"{m}\" ORDER BY \"ID\" LIMIT 1"
                ),
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    });
    assert_eq!(
        (raw[0], txid, reply),
        (0x01, 0, true),
        "a list header first"
    );
    let e = format!("{p}Errors");
    let reason: String = sql(&url, move |c| {
        c.query_one(&format!("SELECT \"Reason\" FROM \"{e}\""), &[])
            .unwrap()
            .get(0)
    });
    assert_eq!(reason, "body: expected L, with a NUL \u{FFFD} in it");
    let eq = format!("{p}Tool1");
    let status: String = sql(&url, move |c| {
        c.query_one(
            "SELECT \"Status\" FROM \"SECSGEM_EquipmentInfo\" WHERE \"Gateway\" = 'gw-read' AND \"Equipment\" = $1",
            &[&eq],
        )
        .unwrap()
        .get(0)
    });
    assert_eq!(status, "Communicating");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_through_a_queue_of_64_loses_nothing() {
    let Some(url) = pg_url() else { return };
    let p = prefix("burst");
    let recorder = Recorder::open_postgres(&url, "secsgate test", settings(64, 1024)).unwrap();
    const N: u32 = 20_000;
    for i in 0..N {
        recorder.record(event("gw-burst", &p, i)).await;
    }
    recorder.close().await;
    assert_eq!((recorder.written(), recorder.dropped()), (u64::from(N), 0));
    assert_eq!(count(&url, &format!("{p}Messages")), i64::from(N));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_write_one_database_each_row_naming_its_gateway() {
    let Some(url) = pg_url() else { return };
    let p = prefix("two");
    let a = Recorder::open_postgres(&url, "secsgate gw-a", settings(64, 32)).unwrap();
    let b = Recorder::open_postgres(&url, "secsgate gw-b", settings(64, 32)).unwrap();
    let equipment = format!("{p}Tool");
    for (gateway, recorder) in [("gw-a", &a), ("gw-b", &b)] {
        recorder
            .record(Record::Equipment(EquipmentRecord {
                gateway: gateway.into(),
                equipment: equipment.clone(),
                prefix: p.clone(),
                status: format!("Communicating via {gateway}"),
                sdl_file: String::new(),
            }))
            .await;
    }
    // Both write at once, interleaved.
    let (pa, pb) = (p.clone(), p.clone());
    let (a, b) = (Arc::new(a), Arc::new(b));
    let (ra, rb) = (a.clone(), b.clone());
    let ta = tokio::spawn(async move {
        for i in 0..500 {
            ra.record(event("gw-a", &pa, i)).await;
        }
    });
    let tb = tokio::spawn(async move {
        for i in 0..300 {
            rb.record(event("gw-b", &pb, i)).await;
        }
    });
    ta.await.unwrap();
    tb.await.unwrap();
    a.close().await;
    b.close().await;
    assert_eq!((a.dropped(), b.dropped()), (0, 0));

    let of = |gateway: &str| Query {
        prefix: Some(p.clone()),
        gateway: Some(gateway.into()),
        ..Query::default()
    };
    let rows_a = read_all(&url, &of("gw-a"));
    let rows_b = read_all(&url, &of("gw-b"));
    assert_eq!((rows_a.len(), rows_b.len()), (500, 300));
    let all = read_all(
        &url,
        &Query {
            prefix: Some(p.clone()),
            ..Query::default()
        },
    );
    assert_eq!(all.len(), 800);
    assert!(
        all.iter()
            .all(|r| matches!(r.gateway.as_deref(), Some("gw-a" | "gw-b")))
    );
    // The equipment's status is kept per gateway: (Gateway, Equipment) is the key.
    let statuses: Vec<(String, String)> = sql(&url, move |c| {
        c.query(
            "SELECT \"Gateway\", \"Status\" FROM \"SECSGEM_EquipmentInfo\" WHERE \"Equipment\" = $1 ORDER BY \"Gateway\"",
            &[&equipment],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    });
    assert_eq!(
        statuses,
        [
            ("gw-a".to_string(), "Communicating via gw-a".to_string()),
            ("gw-b".to_string(), "Communicating via gw-b".to_string()),
        ]
    );
}

/// A PostgreSQL server of the test's own, stopped when dropped.
struct OwnServer {
    dir: PathBuf,
}

impl OwnServer {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg.sh")
    }

    fn run(&self, command: &str) -> String {
        let out = Command::new(Self::script())
            .arg(command)
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/pg.sh {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_keeps_its_records_while_the_server_is_down_and_loses_none() {
    if pg_url().is_none() {
        return;
    }
    let logs = logs::Logs::capture();
    let server = OwnServer {
        dir: tempfile::Builder::new()
            .prefix("secsgate-pg-outage")
            .tempdir()
            .unwrap()
            .keep(),
    };
    let url = server.run("start");
    let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
    let at = format!("127.0.0.1:{port}/");
    let p = prefix("outage");
    let recorder =
        Arc::new(Recorder::open_postgres(&url, "secsgate outage test", settings(64, 16)).unwrap());
    for i in 0..100 {
        recorder.record(event("gw-out", &p, i)).await;
    }
    recorder.flush().await;
    assert_eq!(recorder.written(), 100);

    server.run("stop");
    // 500 more while the server is away: the writer keeps its batch, the queue (64) fills,
    // and the producer waits: nothing is dropped.
    let producer = {
        let (recorder, p) = (recorder.clone(), p.clone());
        tokio::spawn(async move {
            for i in 100..600 {
                recorder.record(event("gw-out", &p, i)).await;
            }
        })
    };
    logs.wait_for(
        &["message store: the database is unreachable", &at],
        Duration::from_secs(60),
    )
    .await;
    assert!(
        !producer.is_finished(),
        "the queue pushes back while the database is away"
    );
    assert_eq!(recorder.dropped(), 0);

    server.run("start");
    producer.await.unwrap();
    recorder.flush().await;
    logs.wait_for(
        &[
            "message store: the database is back after",
            "records waited",
        ],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        logs.lines_with(&["message store: the database is unreachable", &at])
            .len(),
        1,
        "the outage is logged once"
    );
    recorder.close().await;
    assert_eq!((recorder.written(), recorder.dropped()), (600, 0));
    let rows = read_all(
        &url,
        &Query {
            prefix: Some(p.clone()),
            ..Query::default()
        },
    );
    let txids: Vec<i64> = rows.iter().map(|r| r.txid).collect();
    assert_eq!(
        txids,
        (0..600).collect::<Vec<i64>>(),
        "every record, in order"
    );
}

/// A batch the server refuses for its data is dropped and counted; the writer goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_for_its_data_is_dropped_and_counted() {
    let Some(url) = pg_url() else { return };
    let p = prefix("refused");
    // A Messages table whose Equipment may not be "Tool1": the server refuses those rows.
    let m = format!("{p}Messages");
    let made = url.clone();
    sql(&made, move |c| {
        c.batch_execute(&format!(
            "CREATE TABLE \"{m}\" (\"ID\" BIGSERIAL PRIMARY KEY, \"Timestamp\" TEXT NOT NULL, \"Equipment\" TEXT NOT NULL CHECK (\"Equipment\" <> 'Tool1'), \"StreamFunction\" TEXT NOT NULL, \"Direction\" TEXT NOT NULL, \"RequestResponse\" TEXT NOT NULL, \"CommonID\" TEXT NOT NULL, \"TxID\" BIGINT NOT NULL, \"SystemBytes\" BIGINT NOT NULL, \"Reply\" BOOLEAN NOT NULL, \"Message\" TEXT NOT NULL, \"SML\" TEXT NOT NULL, \"Raw\" BYTEA NOT NULL, \"MessageName\" TEXT, \"Gateway\" TEXT NOT NULL)"
        ))
        .unwrap()
    });
    let recorder = Recorder::open_postgres(&url, "secsgate test", settings(64, 1)).unwrap();
    for i in 0..6 {
        recorder.record(event("gw-ref", &p, i)).await;
    }
    recorder.close().await;
    // Equipment Tool1 is i % 3 == 1: records 1 and 4.
    assert_eq!((recorder.written(), recorder.dropped()), (4, 2));
    assert_eq!(count(&url, &format!("{p}Messages")), 4);
}
