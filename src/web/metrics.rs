//! Prometheus metrics at `/metrics` (text exposition format 0.0.4): per connection its
//! messages, bytes, state, T3 timeouts, reconnects and errors; per handler its calls, errors
//! and time; the MQTT publisher's connection, publishes, forward queue and requests.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{Shared, Source};

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One metric family: its HELP and TYPE lines, then one sample per (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// The status words a connection can have, each a 0/1 sample of `secsgate_connection_state`.
const STATES: [&str; 5] = [
    "Disabled",
    "Not Connected",
    "Connected",
    "Selected",
    "Communicating",
];

pub(crate) fn render(shared: &Shared) -> String {
    let mut out = String::new();
    let monitors = shared.monitors();
    let snaps: Vec<(String, crate::monitor::Snapshot)> = monitors
        .iter()
        .map(|(kind, name, m)| {
            (
                format!("kind=\"{kind}\",name=\"{}\"", label(name)),
                m.snapshot(),
            )
        })
        .collect();
    let per = |f: &dyn Fn(&crate::monitor::Snapshot) -> f64| -> Vec<(String, f64)> {
        snaps.iter().map(|(l, s)| (l.clone(), f(s))).collect()
    };
    family(
        &mut out,
        "secsgate_messages_received_total",
        "counter",
        "Messages received from the peer.",
        &per(&|s| s.counts.received as f64),
    );
    family(
        &mut out,
        "secsgate_messages_sent_total",
        "counter",
        "Messages sent to the peer.",
        &per(&|s| s.counts.sent as f64),
    );
    family(
        &mut out,
        "secsgate_bytes_received_total",
        "counter",
        "Bytes of messages received (header and body).",
        &per(&|s| s.counts.bytes_received as f64),
    );
    family(
        &mut out,
        "secsgate_bytes_sent_total",
        "counter",
        "Bytes of messages sent (header and body).",
        &per(&|s| s.counts.bytes_sent as f64),
    );
    family(
        &mut out,
        "secsgate_t3_timeouts_total",
        "counter",
        "Requests whose reply did not come within T3.",
        &per(&|s| s.counts.t3_timeouts as f64),
    );
    family(
        &mut out,
        "secsgate_errors_total",
        "counter",
        "Failures: invalid or malformed messages, timeouts, rejections, lost links.",
        &per(&|s| s.counts.errors as f64),
    );
    family(
        &mut out,
        "secsgate_reconnects_total",
        "counter",
        "Times the link came up again after the first.",
        &per(&|s| s.counts.reconnects as f64),
    );
    let mut states = Vec::new();
    for (l, s) in &snaps {
        for state in STATES {
            states.push((
                format!("{l},state=\"{state}\""),
                if s.status == state { 1.0 } else { 0.0 },
            ));
        }
    }
    family(
        &mut out,
        "secsgate_connection_state",
        "gauge",
        "1 for the connection's current status.",
        &states,
    );
    if let Source::Gateway(g) = &shared.source {
        let stats = g.engine().handler_stats();
        let per = |f: &dyn Fn(&crate::script::stats::HandlerStats) -> f64| -> Vec<(String, f64)> {
            stats
                .iter()
                .map(|h| (format!("handler=\"{}\"", label(&h.name)), f(h)))
                .collect()
        };
        family(
            &mut out,
            "secsgate_handler_calls_total",
            "counter",
            "Handler runs finished.",
            &per(&|h| h.calls as f64),
        );
        family(
            &mut out,
            "secsgate_handler_errors_total",
            "counter",
            "Handler runs that raised, timed out or were abandoned.",
            &per(&|h| h.errors as f64),
        );
        family(
            &mut out,
            "secsgate_handler_duration_seconds_sum",
            "counter",
            "Time of every finished handler run, added up.",
            &per(&|h| h.total.as_secs_f64()),
        );
        family(
            &mut out,
            "secsgate_handler_duration_seconds_max",
            "gauge",
            "The longest handler run.",
            &per(&|h| h.max.as_secs_f64()),
        );
        family(
            &mut out,
            "secsgate_handler_version",
            "gauge",
            "The handler version in force.",
            &per(&|h| f64::from(h.version)),
        );
        if let Some(mqtt) = g.feed_stats() {
            use std::sync::atomic::Ordering::Relaxed;
            let one = |v: f64| vec![(String::new(), v)];
            for (name, kind, help, value) in [
                (
                    "secsgate_mqtt_connected",
                    "gauge",
                    "1 while connected to the MQTT broker.",
                    f64::from(u8::from(mqtt.connected.load(Relaxed))),
                ),
                (
                    "secsgate_mqtt_published_total",
                    "counter",
                    "Publishes the broker acknowledged (QoS 1) or that were written to it (QoS 0).",
                    mqtt.published.load(Relaxed) as f64,
                ),
                (
                    "secsgate_mqtt_queued",
                    "gauge",
                    "Publishes waiting in the forward queue on disk.",
                    mqtt.queued.load(Relaxed) as f64,
                ),
                (
                    "secsgate_mqtt_queued_bytes",
                    "gauge",
                    "Bytes waiting in the forward queue on disk.",
                    mqtt.queued_bytes.load(Relaxed) as f64,
                ),
                (
                    "secsgate_mqtt_dropped_total",
                    "counter",
                    "Publishes deleted from the full forward queue.",
                    mqtt.dropped.load(Relaxed) as f64,
                ),
                (
                    "secsgate_mqtt_requests_total",
                    "counter",
                    "Requests received over MQTT.",
                    mqtt.requests.load(Relaxed) as f64,
                ),
                (
                    "secsgate_mqtt_connects_total",
                    "counter",
                    "Connections made to the broker.",
                    mqtt.connects.load(Relaxed) as f64,
                ),
            ] {
                family(&mut out, name, kind, help, &one(value));
            }
        }
    }
    out
}

pub(crate) async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(&shared),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
