//! `secsgate tags PROJECT`: the realtime tag tree of a project's gateway, from the snapshot the
//! running gateway keeps in `data/tags.json` (rewritten each second while tags change). It says
//! whether the gateway is running and when the snapshot was written.

use std::path::Path;

use serde_json::Value;

use crate::gateway::TAG_SNAPSHOT;

/// Whether a process of that PID is alive (Linux: its /proc entry exists).
fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

pub(super) fn run(dir: &Path, json: bool) -> i32 {
    let path = dir.join(TAG_SNAPSHOT);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "secsgate: no tags for {}: {} ({e}); the gateway writes it while it runs",
                dir.display(),
                path.display()
            );
            return 1;
        }
    };
    let snapshot: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("secsgate: {} is not a tag snapshot: {e}", path.display());
            return 1;
        }
    };
    if json {
        println!("{snapshot}");
        return 0;
    }
    let written = snapshot["written"].as_str().unwrap_or("?");
    let pid = snapshot["pid"].as_u64().unwrap_or(0);
    let running = snapshot["running"].as_bool().unwrap_or(false) && alive(pid);
    if running {
        println!("# tags of the running gateway (pid {pid}), as of {written}");
    } else {
        println!("# the gateway is not running: tags as it last wrote them, at {written}");
    }
    for tag in snapshot["tags"].as_array().into_iter().flatten() {
        let value = match &tag["value"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!(
            "{} = {}   ({}, {})",
            tag["path"].as_str().unwrap_or("?"),
            value,
            tag["quality"].as_str().unwrap_or("?"),
            tag["timestamp"].as_str().unwrap_or("?")
        );
    }
    0
}
