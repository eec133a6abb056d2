//! The web console: pages, the JSON API behind them, live updates (server-sent events) and
//! Prometheus metrics at `/metrics`, served by `secsgate run` (a [`Gateway`]) and `secsgate
//! sim` (one simulator).
//!
//! Never in the way of a connection: the console only reads counters and subscribes to each
//! connection's live stream (a bounded broadcast that drops the oldest messages for a reader
//! that is behind). A browser that reads slowly loses stream messages (counted and shown as
//! skipped), never slows a tool.
//!
//! Credentials: on a loopback address the console is open to local users, and it refuses
//! requests whose `Host` is not a loopback name (so a web page elsewhere cannot reach it
//! through DNS rebinding). On any other address it refuses to start without a password
//! (`[web] password` or `SECSGATE_WEB_PASSWORD`); with a password set, every request needs it
//! (HTTP Basic with any user name, or `Authorization: Bearer <password>`). Requests that
//! change something are POSTs with a JSON body, which a page of another origin cannot send.

mod api;
mod metrics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::WebSettings;
use crate::gateway::Gateway;
use crate::monitor::{Counts, Monitor};
use crate::sim::SimHandle;

/// The environment variable that holds the console's password (it takes precedence over
/// `[web] password`).
pub const PASSWORD_ENV: &str = "SECSGATE_WEB_PASSWORD";

/// How often the overview (and the rates in it) is refreshed and pushed to browsers.
pub const TICK: Duration = Duration::from_secs(1);

/// What the console shows: a gateway (with its equipment and in-process simulators) or one
/// simulator.
#[derive(Clone)]
pub enum Source {
    Gateway(Gateway),
    Simulator(SimHandle),
}

/// The console could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(
        "the web console would listen on {address}{at}, which is not a loopback address, and it has no password: set [web] password in project.toml or the {PASSWORD_ENV} environment variable, or bind 127.0.0.1"
    )]
    NoCredentials { address: String, at: String },
    #[error("the web console cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("web.address '{0}' is not an address and port such as 127.0.0.1:8088")]
    Address(String),
}

/// A running console. Dropping it stops it.
pub struct Web {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    /// Ends the live streams, so that stopping does not wait for browsers to go away.
    stopping: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    sampler: JoinHandle<()>,
}

impl Web {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits until it has.
    pub async fn shutdown(mut self) {
        self.stopping.send_replace(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        self.sampler.abort();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// One connection's message rate, from the counters of the last two ticks.
#[derive(Clone, Debug, Default)]
struct Rate {
    last: Counts,
    /// Messages per second received and sent over the last tick.
    received: f64,
    sent: f64,
}

/// What every request handler shares.
pub(crate) struct Shared {
    source: Source,
    password: Option<String>,
    started: SystemTime,
    rates: Mutex<HashMap<String, Rate>>,
    /// Becomes true when the console stops: every live stream ends.
    stopping: watch::Receiver<bool>,
    /// The overview as JSON, made once per tick while a browser listens, for all of them.
    overview: watch::Sender<Arc<String>>,
}

impl Shared {
    /// Every monitored connection: (kind, name, monitor).
    fn monitors(&self) -> Vec<(&'static str, String, Arc<Monitor>)> {
        let mut out = Vec::new();
        match &self.source {
            Source::Gateway(g) => {
                for c in g.connections() {
                    out.push(("equipment", c.name().to_string(), c.monitor().clone()));
                }
                for s in g.simulators() {
                    out.push(("simulator", s.name().to_string(), s.monitor().clone()));
                }
            }
            Source::Simulator(s) => {
                out.push(("simulator", s.name().to_string(), s.monitor().clone()))
            }
        }
        out
    }

    /// Updates every connection's rate (called once per [`TICK`]).
    fn sample(&self, seconds: f64) {
        let monitors = self.monitors();
        let Ok(mut rates) = self.rates.lock() else {
            return;
        };
        let mut seen = std::collections::HashSet::new();
        for (kind, name, monitor) in monitors {
            let key = format!("{kind}/{name}");
            let counts = monitor.counts();
            let rate = rates.entry(key.clone()).or_insert_with(|| Rate {
                last: counts.clone(),
                ..Rate::default()
            });
            rate.received = (counts.received.saturating_sub(rate.last.received)) as f64 / seconds;
            rate.sent = (counts.sent.saturating_sub(rate.last.sent)) as f64 / seconds;
            rate.last = counts;
            seen.insert(key);
        }
        rates.retain(|k, _| seen.contains(k));
    }

    fn rate(&self, kind: &str, name: &str) -> (f64, f64) {
        self.rates
            .lock()
            .ok()
            .and_then(|r| {
                r.get(&format!("{kind}/{name}"))
                    .map(|r| (r.received, r.sent))
            })
            .unwrap_or((0.0, 0.0))
    }
}

/// The console's settings after the environment is read: the address and the password.
fn password(settings: &WebSettings) -> Option<String> {
    std::env::var(PASSWORD_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .or_else(|| settings.password.clone())
}

/// Checks the settings (a non-loopback address needs a password) without binding.
pub fn check(settings: &WebSettings) -> Result<SocketAddr, WebError> {
    let addr: SocketAddr = settings
        .address
        .parse()
        .map_err(|_| WebError::Address(settings.address.clone()))?;
    if !addr.ip().is_loopback() && password(settings).is_none() {
        return Err(WebError::NoCredentials {
            address: settings.address.clone(),
            at: settings
                .address_at
                .as_ref()
                .map(|a| format!(" ({a})"))
                .unwrap_or_default(),
        });
    }
    Ok(addr)
}

/// Starts the console on the current tokio runtime; the socket is bound when this returns.
pub async fn start(settings: &WebSettings, source: Source) -> Result<Web, WebError> {
    let addr = check(settings)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Bind {
            address: settings.address.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| WebError::Bind {
        address: settings.address.clone(),
        source,
    })?;
    let (stopping, stopping_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        stopping: stopping_rx,
        overview: watch::channel(Arc::new(String::new())).0,
        source,
        password: password(settings),
        started: SystemTime::now(),
        rates: Mutex::new(HashMap::new()),
    });
    let sampler = tokio::spawn(sample(Arc::downgrade(&shared)));
    let app = router(shared.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            warn!("web console stopped: {e}");
        }
    });
    let protected = if shared.password.is_some() {
        "password required"
    } else {
        "open to local users"
    };
    info!("web console at http://{local}/ ({protected})");
    Ok(Web {
        addr: local,
        stop: Some(stop),
        stopping,
        task: Some(task),
        sampler,
    })
}

/// Refreshes the rates once per tick while the console runs, and the overview the live
/// streams send.
async fn sample(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = tokio::time::Instant::now();
        let seconds = now.duration_since(last).as_secs_f64().max(0.001);
        last = now;
        shared.sample(seconds);
        if shared.overview.receiver_count() > 0 {
            let overview = api::overview_json(&shared).to_string();
            shared.overview.send_replace(Arc::new(overview));
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/style.css", get(style))
        .route("/metrics", get(metrics::metrics))
        .route("/api/overview", get(api::overview))
        .route("/api/live", get(api::live))
        .route("/api/connections/{name}", get(api::connection))
        .route(
            "/api/connections/{name}/stream",
            get(api::connection_stream),
        )
        .route("/api/connections/{name}/send", post(api::send))
        .route("/api/connections/{name}/enabled", post(api::enabled))
        .route("/api/connections/{name}/sdl", get(api::sdl))
        .route("/api/messages", get(api::messages))
        .route("/api/tags", get(api::tags))
        .route("/api/handlers", get(api::handlers))
        .route("/api/simulators", get(api::simulators_handler))
        .route("/api/simulators/{name}/stream", get(api::simulator_stream))
        .route("/api/simulators/{name}/runs/{run}", post(api::start_run))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

/// Credentials, the loopback `Host` check and the JSON body of changes (see the module
/// documentation).
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    match &shared.password {
        Some(password) => {
            if !authorized(headers, password) {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"secsgate\", charset=\"UTF-8\""),
                    )],
                    "the secsgate web console needs its password\n",
                )
                    .into_response();
            }
        }
        None => {
            if !loopback_host(headers) {
                return (
                    StatusCode::FORBIDDEN,
                    "the secsgate web console answers only requests addressed to a loopback name (localhost, 127.0.0.1, [::1]); set a password to serve it under another name\n",
                )
                    .into_response();
            }
        }
    }
    if request.method() == axum::http::Method::POST && !json_body(headers) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "changes are POSTs with Content-Type: application/json\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// Whether the request carries the password (Basic with any user, or Bearer).
fn authorized(headers: &HeaderMap, password: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let given = if let Some(token) = value.strip_prefix("Bearer ") {
        token.trim().as_bytes().to_vec()
    } else if let Some(basic) = value.strip_prefix("Basic ") {
        use base64::Engine;
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()) else {
            return false;
        };
        match decoded.iter().position(|&b| b == b':') {
            Some(i) => decoded[i + 1..].to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    constant_time_eq(&given, password.as_bytes())
}

/// Compares without returning early at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the `Host` header names a loopback address (or is absent, as from HTTP/1.0 tools
/// on the same machine).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return true;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn json_body(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn credentials_are_checked() {
        use base64::Engine;
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(authorized(
            &headers(&[("authorization", "Bearer s3cret")]),
            "s3cret"
        ));
        assert!(authorized(
            &headers(&[("authorization", &basic("anyone:s3cret"))]),
            "s3cret"
        ));
        assert!(!authorized(
            &headers(&[("authorization", &basic("anyone:wrong"))]),
            "s3cret"
        ));
        assert!(!authorized(&headers(&[]), "s3cret"));
        assert!(!authorized(
            &headers(&[("authorization", "Bearer s3cre")]),
            "s3cret"
        ));
    }

    #[test]
    fn only_loopback_host_names_without_a_password() {
        for ok in [
            "127.0.0.1:8088",
            "localhost:8088",
            "[::1]:8088",
            "LOCALHOST",
        ] {
            assert!(loopback_host(&headers(&[("host", ok)])), "{ok}");
        }
        for bad in ["evil.example:8088", "10.0.0.5:8088", "[fe80::1]:80"] {
            assert!(!loopback_host(&headers(&[("host", bad)])), "{bad}");
        }
    }

    #[test]
    fn a_non_loopback_address_needs_a_password() {
        let mut s = WebSettings {
            address: "0.0.0.0:8088".into(),
            address_at: Some("project.toml:12".into()),
            ..WebSettings::default()
        };
        if std::env::var(PASSWORD_ENV).is_err() {
            let e = check(&s).unwrap_err().to_string();
            assert!(
                e.contains("project.toml:12") && e.contains("password"),
                "{e}"
            );
        }
        s.password = Some("pw".into());
        assert!(check(&s).is_ok());
        s.address = "127.0.0.1:0".into();
        s.password = None;
        assert!(check(&s).is_ok());
    }
}
