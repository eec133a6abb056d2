//! `secsgate log DIR`: the messages the gateway stored, filtered, as SML or JSON lines;
//! `--follow` keeps printing new ones as `tail -f` does.

use std::collections::HashMap;
use std::time::Duration;

use clap::Args;

use super::EXIT_BAD_INPUT;
use crate::config::Project;

use crate::store::messages::{self, Direction, Query, StoredMessage, parse_time};

#[derive(Args, Debug)]
pub(super) struct LogArgs {
    /// The project folder (its project.toml says where the store is).
    dir: std::path::PathBuf,
    /// Only this equipment's messages.
    #[arg(long)]
    equipment: Option<String>,
    /// Only this stream/function, e.g. S6F11.
    #[arg(long = "sf", value_name = "SxFy")]
    stream_function: Option<String>,
    /// Only messages sent or received by the gateway.
    #[arg(long, value_parser = ["sent", "received"])]
    direction: Option<String>,
    /// Only messages with this CommonID (a request and its reply share it).
    #[arg(long)]
    common_id: Option<String>,
    /// Only messages that matched the SDL definition of this name (e.g. LotStarted).
    #[arg(long = "message", value_name = "NAME")]
    message_name: Option<String>,
    /// From this time: RFC 3339 (2026-12-03T09:00:00Z) or an age such as 10m, 2h, 1d.
    #[arg(long)]
    since: Option<String>,
    /// Before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Only the table prefix given (default: every prefix).
    #[arg(long)]
    prefix: Option<String>,
    /// The newest N messages.
    #[arg(long)]
    limit: Option<usize>,
    /// One JSON object per line (the columns, with Message as JSON).
    #[arg(long)]
    json: bool,
    /// Keep printing new messages as they are stored.
    #[arg(long, short = 'f')]
    follow: bool,
}

fn line(m: &StoredMessage, json: bool) -> String {
    if json {
        let message = serde_json::from_str::<serde_json::Value>(&m.message)
            .unwrap_or_else(|_| serde_json::Value::String(m.message.clone()));
        serde_json::json!({
            "ID": m.id,
            "Prefix": m.prefix,
            "Timestamp": m.timestamp,
            "Equipment": m.equipment,
            "StreamFunction": m.stream_function,
            "Direction": m.direction,
            "RequestResponse": m.request_response,
            "CommonID": m.common_id,
            "MessageName": m.message_name,
            "TxID": m.txid,
            "SystemBytes": m.system_bytes,
            "Reply": m.reply,
            "Message": message,
        })
        .to_string()
    } else {
        let name = m
            .message_name
            .as_deref()
            .map(|n| format!(" Message={n}"))
            .unwrap_or_default();
        format!(
            "{} {} {} {} TxID={} CommonID={}{name} {}",
            m.timestamp, m.equipment, m.direction, m.request_response, m.txid, m.common_id, m.sml
        )
    }
}

pub(super) fn run(args: LogArgs) -> i32 {
    let project = match Project::load(&args.dir) {
        Ok(p) => p,
        Err(errors) => {
            for e in &errors {
                eprintln!("secsgate: {e}");
            }
            return EXIT_BAD_INPUT;
        }
    };
    let now = messages::now_ms();
    let time = |t: &Option<String>| t.as_deref().map(|t| parse_time(t, now)).transpose();
    let (since_ms, until_ms) = match (time(&args.since), time(&args.until)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) => {
            eprintln!("secsgate: --since: {e}");
            return EXIT_BAD_INPUT;
        }
        (_, Err(e)) => {
            eprintln!("secsgate: --until: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let path = &project.store.path;
    if !path.is_file() {
        eprintln!(
            "secsgate: no message store at {} (has the gateway run with [store] enabled?)",
            path.display()
        );
        return 1;
    }
    let conn = match messages::open_read_only(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("secsgate: {e}");
            return 1;
        }
    };
    let mut query = Query {
        prefix: args.prefix,
        equipment: args.equipment,
        stream_function: args.stream_function,
        direction: args.direction.map(|d| {
            if d == "sent" {
                Direction::Sent
            } else {
                Direction::Received
            }
        }),
        common_id: args.common_id,
        message_name: args.message_name,
        since_ms,
        until_ms,
        limit: args.limit,
    };
    let mut seen: HashMap<String, i64> = HashMap::new();
    loop {
        match messages::query_messages(&conn, &query, &seen) {
            Ok(rows) => {
                for m in &rows {
                    println!("{}", line(m, args.json));
                    let last = seen.entry(m.prefix.clone()).or_insert(0);
                    *last = (*last).max(m.id);
                }
            }
            Err(e) => {
                eprintln!("secsgate: {e}");
                return 1;
            }
        }
        if !args.follow {
            return 0;
        }
        // New messages: all of them, whatever the limit.
        query.limit = None;
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc_3339_or_ages() {
        let now = 1_000_000_000_000;
        assert_eq!(parse_time("10m", now), Ok(now - 600_000));
        assert_eq!(parse_time("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_time("1d", now), Ok(now - 86_400_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z", now), Ok(1000));
        assert_eq!(parse_time("1970-01-01T01:00:01+01:00", now), Ok(1000));
        assert!(
            parse_time("10 parsecs", now)
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_time("yesterday", now).is_err());
    }
}
