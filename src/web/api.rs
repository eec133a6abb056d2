//! The JSON API behind the pages (documented in the README's "Web console" section).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{Shared, Source, TICK};
use crate::config::Selector;
use crate::gateway::Gateway;
use crate::monitor::{Monitor, Seen, Snapshot};
use crate::secs2::{Message, json as secs_json, sml};
use crate::sim::SimHandle;
use crate::store::messages::{self, Direction};

/// Most stream messages sent to one browser per second; the rest are counted as skipped
/// (the message log has them all).
pub const STREAM_PER_SECOND: u32 = 200;

/// Most messages one message-log search returns.
pub const SEARCH_LIMIT: usize = 1000;

/// The longest a send from the console waits for its reply.
const MAX_REPLY_WAIT: Duration = Duration::from_secs(120);

type ApiResult = Result<Response, (StatusCode, Json<Value>)>;

fn problem(status: StatusCode, message: impl Into<String>) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": message.into() })))
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn gateway(shared: &Shared) -> Result<&Gateway, (StatusCode, Json<Value>)> {
    match &shared.source {
        Source::Gateway(g) => Ok(g),
        Source::Simulator(_) => Err(problem(
            StatusCode::NOT_FOUND,
            "this console serves a simulator; equipment connections are the gateway's",
        )),
    }
}

fn simulators(shared: &Shared) -> Vec<SimHandle> {
    match &shared.source {
        Source::Gateway(g) => g.simulators(),
        Source::Simulator(s) => vec![s.clone()],
    }
}

fn simulator(shared: &Shared, name: &str) -> Result<SimHandle, (StatusCode, Json<Value>)> {
    simulators(shared)
        .into_iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| problem(StatusCode::NOT_FOUND, format!("no simulator '{name}'")))
}

fn equipment(
    shared: &Shared,
    name: &str,
) -> Result<Arc<crate::gateway::Connection>, (StatusCode, Json<Value>)> {
    gateway(shared)?
        .connection(name)
        .ok_or_else(|| problem(StatusCode::NOT_FOUND, format!("no equipment '{name}'")))
}

/// The counters and status of a monitor, as JSON.
fn monitor_json(snapshot: &Snapshot, rate: (f64, f64)) -> Value {
    let c = &snapshot.counts;
    json!({
        "status": snapshot.status,
        "since": ms(snapshot.since),
        "sent": c.sent,
        "received": c.received,
        "bytes_sent": c.bytes_sent,
        "bytes_received": c.bytes_received,
        "errors": c.errors,
        "t3_timeouts": c.t3_timeouts,
        "reconnects": c.reconnects,
        "rate_received": (rate.0 * 10.0).round() / 10.0,
        "rate_sent": (rate.1 * 10.0).round() / 10.0,
        "last": snapshot.last.as_ref().map(|l| json!({
            "time": l.time_ms,
            "direction": l.way.as_str(),
            "sf": format!("S{}F{}", l.stream, l.function),
        })),
        "last_error": snapshot.last_error.as_ref().map(|(t, e)| json!({"time": t, "error": e})),
    })
}

/// One row of the overview.
fn connection_json(shared: &Shared, conn: &crate::gateway::Connection) -> Value {
    let config = conn.config();
    let mut v = monitor_json(
        &conn.monitor().snapshot(),
        shared.rate("equipment", conn.name()),
    );
    let extra = json!({
        "kind": "equipment",
        "name": conn.name(),
        "description": config.description,
        "protocol": config.transport.protocol_name(),
        "transport": config.transport.to_string(),
        "device_id": config.transport.device_id(),
        "address": conn.local_addr().map(|a| a.to_string()),
        "enabled": conn.link_state().is_some(),
    });
    merge(&mut v, extra);
    v
}

fn simulator_row(shared: &Shared, sim: &SimHandle) -> Value {
    let mut v = monitor_json(
        &sim.monitor().snapshot(),
        shared.rate("simulator", sim.name()),
    );
    let status = sim.watch_status().borrow().clone();
    merge(
        &mut v,
        json!({
            "kind": "simulator",
            "name": sim.name(),
            "protocol": sim.protocol(),
            "transport": sim.transport(),
            "address": sim.local_addr().map(|a| a.to_string()),
            "enabled": true,
            "communication": format!("{:?}", status.communication),
            "control": format!("{:?}", status.control),
        }),
    );
    v
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

/// The overview: every connection and simulator.
pub(crate) fn overview_json(shared: &Shared) -> Value {
    let mut rows: Vec<Value> = Vec::new();
    let (kind, title, tags_version, store) = match &shared.source {
        Source::Gateway(g) => {
            rows.extend(g.connections().iter().map(|c| connection_json(shared, c)));
            (
                "gateway",
                "secsgate gateway".to_string(),
                Some(g.tags().version()),
                g.store_location().is_some(),
            )
        }
        Source::Simulator(s) => (
            "simulator",
            format!("secsgate simulator {}", s.name()),
            None,
            false,
        ),
    };
    rows.extend(simulators(shared).iter().map(|s| simulator_row(shared, s)));
    let mqtt = match &shared.source {
        Source::Gateway(g) => g.feed_stats().map(|m| {
            use std::sync::atomic::Ordering::Relaxed;
            json!({
                "connected": m.connected.load(Relaxed),
                "published": m.published.load(Relaxed),
                "queued": m.queued.load(Relaxed),
                "queued_bytes": m.queued_bytes.load(Relaxed),
                "dropped": m.dropped.load(Relaxed),
                "requests": m.requests.load(Relaxed),
            })
        }),
        Source::Simulator(_) => None,
    };
    json!({
        "kind": kind,
        "title": title,
        "version": env!("CARGO_PKG_VERSION"),
        "started": ms(shared.started),
        "now": messages::now_ms(),
        "store": store,
        "mqtt": mqtt,
        "tags_version": tags_version,
        "connections": rows,
    })
}

pub(crate) async fn overview(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(overview_json(&shared))
}

/// An SSE response fed by a channel (closed when the browser goes away).
fn sse(rx: mpsc::Receiver<Event>) -> Response {
    let stream = tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok::<_, Infallible>);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `overview` events, one per tick (made once for every browser). A browser that has not
/// taken the last one yet misses the next (the one after is as new).
pub(crate) async fn live(State(shared): State<Arc<Shared>>) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(2);
    let mut overview = shared.overview.subscribe();
    let mut stopping = shared.stopping.clone();
    drop(shared);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = overview.changed() => if changed.is_err() { return },
                _ = stopping.wait_for(|s| *s) => return,
            }
            let data = overview.borrow_and_update().clone();
            match tx.try_send(Event::default().event("overview").data(data.as_str())) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
    sse(rx)
}

pub(crate) async fn connection(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> ApiResult {
    let conn = equipment(&shared, &name)?;
    let config = conn.config();
    let mut v = connection_json(&shared, &conn);
    merge(
        &mut v,
        json!({
            "sdl": config.sdl.as_ref().map(|s| s.file.display().to_string()),
            "communication": format!("{:?}", conn.communication_state()),
            "link": conn.link_state().map(|l| l.to_string()),
            "realtime": format!("{:?}", config.realtime),
            "custom_responses": config.custom_responses.iter().map(|c| mapping_json(&c.selector, &c.handler)).collect::<Vec<_>>(),
            "handlers": config.handlers.iter().map(|h| mapping_json(&h.selector, &h.handler)).collect::<Vec<_>>(),
        }),
    );
    Ok(Json(v).into_response())
}

/// A handler mapping: its S/F, the SDL definition it names (`null`: every message of the
/// S/F), its handler.
fn mapping_json(selector: &Selector, handler: &str) -> Value {
    let message = match selector {
        Selector::Message { name, .. } => Some(name.as_str()),
        Selector::StreamFunction(_) => None,
    };
    json!({
        "stream_function": selector.stream_function().to_string(),
        "message": message,
        "handler": handler,
    })
}

/// What a live stream shows.
#[derive(Deserialize, Default)]
pub(crate) struct StreamFilter {
    /// Only this S/F (e.g. `S6F11`; `S6` for a whole stream).
    sf: Option<String>,
    /// `sent` or `received`.
    direction: Option<String>,
    /// Each message also as JSON.
    json: Option<bool>,
}

impl StreamFilter {
    fn keeps(&self, seen: &Seen) -> bool {
        if let Some(d) = &self.direction
            && !d.is_empty()
            && !d.eq_ignore_ascii_case(seen.way.as_str())
        {
            return false;
        }
        match self.sf.as_deref().map(str::trim) {
            None | Some("") => true,
            Some(sf) => {
                let m = &seen.message;
                let full = format!("S{}F{}", m.stream, m.function);
                let stream = format!("S{}", m.stream);
                sf.eq_ignore_ascii_case(&full) || sf.eq_ignore_ascii_case(&stream)
            }
        }
    }
}

/// One stream message as JSON.
fn seen_json(seen: &Seen, with_json: bool) -> Value {
    let m = &seen.message;
    let mut v = json!({
        "time": seen.time_ms,
        "direction": seen.way.as_str(),
        "sf": format!("S{}F{}", m.stream, m.function),
        "w": m.w_bit,
        "reply": m.function.is_multiple_of(2),
        "system_bytes": m.system_bytes,
        "txid": seen.txid,
        "sml": m.to_string(),
    });
    if with_json {
        merge(&mut v, json!({ "json": secs_json::message_to_json(m) }));
    }
    v
}

/// The live stream of a monitor as SSE: `message` events (at most [`STREAM_PER_SECOND`]),
/// and, once per tick, a `skipped` event counting what was left out since the last one:
/// `skipped`, messages of the filter not shown (over the rate, or the browser was behind),
/// and `lost`, messages of any kind the stream's reader missed before it could filter them.
fn stream(
    monitor: &Monitor,
    filter: StreamFilter,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Response {
    let mut rx = monitor.subscribe();
    let (tx, out) = mpsc::channel::<Event>(256);
    tokio::spawn(async move {
        let with_json = filter.json.unwrap_or(false);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut budget = STREAM_PER_SECOND;
        let mut skipped: u64 = 0;
        let mut lost: u64 = 0;
        loop {
            tokio::select! {
                _ = stopping.wait_for(|s| *s) => return,
                received = rx.recv() => match received {
                    Ok(seen) => {
                        if !filter.keeps(&seen) {
                            continue;
                        }
                        if budget == 0 {
                            skipped += 1;
                            continue;
                        }
                        budget -= 1;
                        let data = seen_json(&seen, with_json).to_string();
                        match tx.try_send(Event::default().event("message").data(data)) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => skipped += 1,
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => lost += n,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    budget = STREAM_PER_SECOND;
                    if skipped > 0 || lost > 0 {
                        let data = json!({ "skipped": skipped, "lost": lost }).to_string();
                        if tx.try_send(Event::default().event("skipped").data(data)).is_ok() {
                            skipped = 0;
                            lost = 0;
                        }
                    }
                    if tx.is_closed() {
                        return;
                    }
                }
            }
        }
    });
    sse(out)
}

pub(crate) async fn connection_stream(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(filter): Query<StreamFilter>,
) -> ApiResult {
    let conn = equipment(&shared, &name)?;
    Ok(stream(conn.monitor(), filter, shared.stopping.clone()))
}

pub(crate) async fn simulator_stream(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(filter): Query<StreamFilter>,
) -> ApiResult {
    let sim = simulator(&shared, &name)?;
    Ok(stream(sim.monitor(), filter, shared.stopping.clone()))
}

/// A message to send from the console.
#[derive(Deserialize)]
pub(crate) struct SendRequest {
    /// The message in SML (`S1F3 W <L [1] <U4 1>>`) or JSON (the scripting API's form).
    text: String,
    /// `sml` (default) or `json`.
    format: Option<String>,
    /// Seconds to wait for the reply (default: the equipment's T3).
    timeout: Option<f64>,
}

fn parse_message(text: &str, format: &str) -> Result<Message, String> {
    match format {
        "json" => {
            let value: Value =
                serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
            secs_json::message_from_json(&value).map_err(|e| format!("JSON: {e}"))
        }
        "sml" => sml::parse_message(text).map_err(|e| format!("SML: {e}")),
        other => Err(format!("format '{other}': use sml or json")),
    }
}

fn message_json(m: &Message) -> Value {
    json!({
        "sf": format!("S{}F{}", m.stream, m.function),
        "w": m.w_bit,
        "system_bytes": m.system_bytes,
        "sml": m.to_string(),
        "json": secs_json::message_to_json(m),
    })
}

pub(crate) async fn send(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(request): Json<SendRequest>,
) -> ApiResult {
    let g = gateway(&shared)?.clone();
    let conn = equipment(&shared, &name)?;
    let format = request
        .format
        .as_deref()
        .unwrap_or("sml")
        .to_ascii_lowercase();
    let message =
        parse_message(&request.text, &format).map_err(|e| problem(StatusCode::BAD_REQUEST, e))?;
    let timeout = match request.timeout {
        Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s).min(MAX_REPLY_WAIT),
        Some(_) => {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "timeout: a number of seconds above 0",
            ));
        }
        None => conn.config().transport.t3(),
    };
    let sent = message.clone();
    match g.send_and_wait(&name, message, timeout).await {
        Ok((txid, reply)) => Ok(Json(json!({
            "txid": txid,
            "sent": message_json(&sent),
            "reply": reply.as_ref().map(message_json),
            "waited": sent.w_bit && !sent.function.is_multiple_of(2),
        }))
        .into_response()),
        Err(e) => Err(problem(StatusCode::CONFLICT, e.to_string())),
    }
}

#[derive(Deserialize)]
pub(crate) struct Enabled {
    enabled: bool,
}

pub(crate) async fn enabled(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Json(body): Json<Enabled>,
) -> ApiResult {
    let g = gateway(&shared)?.clone();
    g.set_enabled(&name, body.enabled)
        .await
        .map_err(|e| problem(StatusCode::CONFLICT, e.to_string()))?;
    tracing::info!(equipment = %name, enabled = body.enabled, "equipment switched from the web console");
    Ok(Json(json!({ "name": name, "enabled": body.enabled })).into_response())
}

pub(crate) async fn sdl(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    let conn = equipment(&shared, &name)?;
    let Some(sdl) = conn.config().sdl.clone() else {
        return Ok(Json(json!({ "file": null, "text": null })).into_response());
    };
    let file = sdl.file.clone();
    let text = if file == std::path::Path::new(crate::sdl::STANDARD_FILE) {
        crate::sdl::STANDARD.to_string()
    } else {
        std::fs::read_to_string(&file).map_err(|e| {
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{}: {e}", file.display()),
            )
        })?
    };
    Ok(Json(json!({
        "file": file.display().to_string(),
        "messages": sdl.messages.len(),
        "text": text,
    }))
    .into_response())
}

/// A message log search.
#[derive(Deserialize, Default)]
pub(crate) struct Search {
    equipment: Option<String>,
    sf: Option<String>,
    common_id: Option<String>,
    /// The name of the SDL definition the messages matched.
    message: Option<String>,
    direction: Option<String>,
    /// RFC 3339 time or an age (`10m`, `2h`).
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

pub(crate) async fn messages(
    State(shared): State<Arc<Shared>>,
    Query(search): Query<Search>,
) -> ApiResult {
    let g = gateway(&shared)?;
    let Some(location) = g.store_location().cloned() else {
        return Err(problem(
            StatusCode::NOT_FOUND,
            "the message store is off ([store] enabled = false)",
        ));
    };
    let now = messages::now_ms();
    let time = |t: &Option<String>, what: &str| {
        non_empty(t)
            .map(|t| messages::parse_time(&t, now).map_err(|e| format!("{what}: {e}")))
            .transpose()
    };
    let direction = match non_empty(&search.direction).as_deref() {
        None => None,
        Some("sent") => Some(Direction::Sent),
        Some("received") => Some(Direction::Received),
        Some(other) => {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                format!("direction '{other}': use sent or received"),
            ));
        }
    };
    let query = messages::Query {
        prefix: None,
        gateway: None,
        equipment: non_empty(&search.equipment),
        stream_function: non_empty(&search.sf),
        direction,
        common_id: non_empty(&search.common_id),
        message_name: non_empty(&search.message),
        since_ms: time(&search.since, "since").map_err(|e| problem(StatusCode::BAD_REQUEST, e))?,
        until_ms: time(&search.until, "until").map_err(|e| problem(StatusCode::BAD_REQUEST, e))?,
        limit: Some(search.limit.unwrap_or(100).clamp(1, SEARCH_LIMIT)),
    };
    // On tokio's blocking pool: the PostgreSQL client blocks, and never runs on a worker.
    let rows = tokio::task::spawn_blocking(move || {
        if let crate::config::DatabaseLocation::Sqlite(path) = &location
            && !path.exists()
        {
            return Ok(Vec::new());
        }
        messages::StoreReader::open(&location)?.query_messages(&query, &HashMap::new())
    })
    .await
    .map_err(|e| problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let rows: Vec<Value> = rows
        .iter()
        .rev()
        .map(|m| {
            json!({
                "id": m.id,
                "prefix": m.prefix,
                "timestamp": m.timestamp,
                "gateway": m.gateway,
                "equipment": m.equipment,
                "sf": m.stream_function,
                "direction": m.direction,
                "request_response": m.request_response,
                "common_id": m.common_id,
                "message_name": m.message_name,
                "txid": m.txid,
                "system_bytes": m.system_bytes,
                "sml": m.sml,
            })
        })
        .collect();
    Ok(Json(json!({ "messages": rows })).into_response())
}

pub(crate) async fn tags(State(shared): State<Arc<Shared>>) -> ApiResult {
    let g = gateway(&shared)?;
    let tags = g.tags();
    let list: Vec<Value> = tags
        .all()
        .into_iter()
        .map(|(path, v)| {
            json!({
                "path": path,
                "value": v.value,
                "quality": v.quality.name(),
                "timestamp": ms(v.timestamp),
            })
        })
        .collect();
    Ok(Json(json!({ "version": tags.version(), "tags": list })).into_response())
}

pub(crate) async fn handlers(State(shared): State<Arc<Shared>>) -> ApiResult {
    let g = gateway(&shared)?;
    let engine = g.engine();
    let list: Vec<Value> = engine
        .handler_stats()
        .into_iter()
        .map(|h| {
            json!({
                "name": h.name,
                "file": h.file,
                "version": h.version,
                "loaded": h.loaded.map(ms),
                "calls": h.calls,
                "errors": h.errors,
                "timeouts": h.timeouts,
                "abandoned": h.abandoned,
                "mean_ms": h.mean().as_secs_f64() * 1000.0,
                "max_ms": h.max.as_secs_f64() * 1000.0,
                "last_error": h.last_error.map(|(t, e)| json!({"time": ms(t), "traceback": e})),
                "compile_error": h.compile_error.map(|(t, e)| json!({"time": ms(t), "error": e})),
            })
        })
        .collect();
    Ok(Json(json!({
        "handlers": list,
        "abandoned_threads": engine.abandoned_threads(),
    }))
    .into_response())
}

pub(crate) async fn simulators_json(shared: &Shared) -> Vec<Value> {
    let mut out = Vec::new();
    for sim in simulators(shared) {
        let mut v = simulator_row(shared, &sim);
        let status = sim.watch_status().borrow().clone();
        let variables = tokio::time::timeout(Duration::from_secs(2), sim.variables())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        merge(
            &mut v,
            json!({
                "spool_count": status.spool_count,
                "runs_active": status.runs_active,
                "in_flight": status.in_flight,
                "runs": sim.run_names(),
                "variables": variables.iter().map(|x| json!({
                    "id": x.id,
                    "name": x.name,
                    "units": x.units,
                    "class": x.class,
                    "value": x.value.to_string(),
                })).collect::<Vec<_>>(),
            }),
        );
        out.push(v);
    }
    out
}

pub(crate) async fn simulators_handler(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({ "simulators": simulators_json(&shared).await }))
}

pub(crate) async fn start_run(
    State(shared): State<Arc<Shared>>,
    Path((name, run)): Path<(String, String)>,
) -> ApiResult {
    let sim = simulator(&shared, &name)?;
    sim.start_event_run(&run)
        .map_err(|e| problem(StatusCode::CONFLICT, e.to_string()))?;
    tracing::info!(simulator = %name, run = %run, "event run started from the web console");
    Ok(Json(json!({ "simulator": name, "run": run, "started": true })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::Way;
    use crate::secs2::StreamFunction;

    #[test]
    fn stream_filter_by_sf_and_direction() {
        let seen = Seen {
            time_ms: 0,
            way: Way::Received,
            txid: 1,
            message: Arc::new(Message::new(
                StreamFunction::new(6, 11).unwrap(),
                true,
                None,
            )),
        };
        let f = |sf: Option<&str>, d: Option<&str>| StreamFilter {
            sf: sf.map(Into::into),
            direction: d.map(Into::into),
            json: None,
        };
        assert!(f(None, None).keeps(&seen));
        assert!(f(Some("s6f11"), Some("received")).keeps(&seen));
        assert!(f(Some("S6"), None).keeps(&seen));
        assert!(!f(Some("S6F1"), None).keeps(&seen));
        assert!(!f(None, Some("sent")).keeps(&seen));
    }

    #[test]
    fn messages_parse_as_sml_or_json() {
        let m = parse_message("S1F3 W <L [1] <U4 1>>", "sml").unwrap();
        assert_eq!((m.stream, m.function, m.w_bit), (1, 3, true));
        let j = parse_message(&secs_json::message_to_json(&m).to_string(), "json").unwrap();
        assert_eq!(j.body, m.body);
        assert!(parse_message("S1F3 W <L", "sml").is_err());
        assert!(parse_message("x", "xml").is_err());
    }
}
