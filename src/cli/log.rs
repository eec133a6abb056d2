//! `secsgate log DIR` (or `secsgate log --url postgres://...`): the messages the gateway
//! stored, in its SQLite file or PostgreSQL database, filtered, as SML or JSON lines;
//! `--follow` keeps printing new ones as `tail -f` does.

use std::collections::HashMap;
use std::time::Duration;

use clap::Args;

use super::EXIT_BAD_INPUT;
use crate::config::{DatabaseLocation, Project};

use crate::store::messages::{self, Direction, Query, StoreReader, StoredMessage, parse_time};

#[derive(Args, Debug)]
pub(super) struct LogArgs {
    /// The project folder (its project.toml says where the store is: `[store] path` or
    /// `url`).
    #[arg(required_unless_present = "url")]
    dir: Option<std::path::PathBuf>,
    /// A PostgreSQL store to read instead of the project's (postgres://user@host:port/db;
    /// the password from the URL or PGPASSWORD).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Only the messages this gateway stored ([gateway] name), when several share the
    /// database.
    #[arg(long)]
    gateway: Option<String>,
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
            "Gateway": m.gateway,
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

/// Where the store is: `--url`, else the project's `[store]`.
fn location(args: &LogArgs) -> Result<DatabaseLocation, i32> {
    if let Some(url) = &args.url {
        if let Some(problem) = crate::config::postgres_url_problem(url) {
            eprintln!("secsgate: --url: {problem}");
            return Err(EXIT_BAD_INPUT);
        }
        return Ok(DatabaseLocation::Postgres(url.clone()));
    }
    let Some(dir) = &args.dir else {
        eprintln!("secsgate: give the project folder or --url");
        return Err(EXIT_BAD_INPUT);
    };
    match Project::load(dir) {
        Ok(p) => Ok(crate::gateway::store_location(&p.store)),
        Err(errors) => {
            for e in &errors {
                eprintln!("secsgate: {e}");
            }
            Err(EXIT_BAD_INPUT)
        }
    }
}

pub(super) fn run(args: LogArgs) -> i32 {
    let location = match location(&args) {
        Ok(l) => l,
        Err(code) => return code,
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
    if let DatabaseLocation::Sqlite(path) = &location
        && !path.is_file()
    {
        eprintln!(
            "secsgate: no message store at {} (has the gateway run with [store] enabled?)",
            path.display()
        );
        return 1;
    }
    let mut reader = match StoreReader::open(&location) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("secsgate: {e}");
            return 1;
        }
    };
    let mut query = Query {
        prefix: args.prefix,
        gateway: args.gateway,
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
        match reader.query_messages(&query, &seen) {
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
