//! The realtime tag tree: read-only, in-memory values the gateway keeps per equipment, as
//! Ignition's SECS/GEM realtime tag provider does. Tags are not persisted; a restart starts
//! an empty tree.
//!
//! Paths are `[SECSGEM]Equipment/...` (the provider prefix is optional when reading):
//!
//! ```text
//! [SECSGEM]<Equipment>/Status            str   Communicating, Not Connected, ...
//! [SECSGEM]<Equipment>/Enabled           bool
//! [SECSGEM]<Equipment>/MessagesReceived  int   messages received since the start
//! [SECSGEM]<Equipment>/MessagesSent      int   messages sent since the start
//! [SECSGEM]<Equipment>/Messages/<SxFy>/<CommonID>/Message    str  JSON of the last one
//! [SECSGEM]<Equipment>/Messages/<SxFy>/<CommonID>/Timestamp  str  ISO 8601, UTC
//! [SECSGEM]<Equipment>/Messages/<SxFy>/<CommonID>/TxID       int
//! [SECSGEM]<Equipment>/Messages/<SxFy>/<CommonID>/Body/<path> each leaf item's value
//! ```
//!
//! The `Messages` folder holds the messages whose SDL definition has `SQLTags` (S6F1 in the
//! standard catalogue), keyed by their CommonID. `Body/<path>` uses the item paths of
//! `toDataset` (`0`, `0/1`, `0/1/2`: list positions from the root); a one-value item's tag
//! holds the value, a several-value item's tag the list.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde_json::Value;

use crate::secs2::{Item, Message, json};

/// The tag provider's name, as paths may start with it.
pub const PROVIDER: &str = "SECSGEM";

/// How much a tag's value can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quality {
    /// The value is current.
    Good,
    /// No tag at that path.
    NotFound,
}

impl Quality {
    /// Ignition's name of the quality.
    pub fn name(self) -> &'static str {
        match self {
            Quality::Good => "Good",
            Quality::NotFound => "Bad_NotFound",
        }
    }
}

/// A tag's value, when it was set, and its quality.
#[derive(Clone, Debug, PartialEq)]
pub struct TagValue {
    pub value: Value,
    pub timestamp: SystemTime,
    pub quality: Quality,
}

/// One entry under a browsed folder.
#[derive(Clone, Debug, PartialEq)]
pub struct BrowseEntry {
    pub name: String,
    /// The full path, with the provider.
    pub full_path: String,
    /// A folder (it has tags under it) rather than a tag.
    pub has_children: bool,
    /// The tag's value (`None` for a folder).
    pub value: Option<Value>,
}

/// The tag tree of one gateway.
#[derive(Debug, Default)]
pub struct Tags {
    /// Path (without provider) -> value.
    tags: RwLock<BTreeMap<String, (Value, SystemTime)>>,
    /// Bumped on every change, so a snapshot is written only when something changed.
    version: AtomicU64,
}

/// A path without its `[provider]` prefix and surrounding slashes.
fn normalize(path: &str) -> &str {
    let path = path.trim();
    let path = match path.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(_, p)| p),
        None => path,
    };
    path.trim_matches('/')
}

impl Tags {
    /// An empty tree.
    pub fn new() -> Tags {
        Tags::default()
    }

    /// A number that changes whenever a tag does.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    fn changed(&self) {
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets a tag (creating it and its folders).
    pub fn set(&self, path: &str, value: Value, at: SystemTime) {
        self.changed();
        if let Ok(mut t) = self.tags.write() {
            t.insert(normalize(path).to_string(), (value, at));
        }
    }

    /// Adds `n` to an integer tag (0 if it does not exist yet).
    pub fn add(&self, path: &str, n: i64, at: SystemTime) {
        self.changed();
        if let Ok(mut t) = self.tags.write() {
            let entry = t
                .entry(normalize(path).to_string())
                .or_insert((Value::from(0), at));
            entry.0 = Value::from(entry.0.as_i64().unwrap_or(0).saturating_add(n));
            entry.1 = at;
        }
    }

    /// Removes every tag under a folder (an equipment that was removed).
    pub fn remove_folder(&self, folder: &str) {
        let prefix = format!("{}/", normalize(folder));
        self.changed();
        if let Ok(mut t) = self.tags.write() {
            t.retain(|k, _| !k.starts_with(&prefix));
        }
    }

    /// Reads a tag; an unknown path has quality `NotFound` and a null value.
    pub fn read(&self, path: &str) -> TagValue {
        let found = self
            .tags
            .read()
            .ok()
            .and_then(|t| t.get(normalize(path)).cloned());
        match found {
            Some((value, timestamp)) => TagValue {
                value,
                timestamp,
                quality: Quality::Good,
            },
            None => TagValue {
                value: Value::Null,
                timestamp: SystemTime::now(),
                quality: Quality::NotFound,
            },
        }
    }

    /// The tags and folders directly under `path` (`""` or `[SECSGEM]` for the top), sorted
    /// by name.
    pub fn browse(&self, path: &str) -> Vec<BrowseEntry> {
        let folder = normalize(path);
        let prefix = if folder.is_empty() {
            String::new()
        } else {
            format!("{folder}/")
        };
        let Ok(t) = self.tags.read() else {
            return Vec::new();
        };
        let mut out: Vec<BrowseEntry> = Vec::new();
        for (key, (value, _)) in t.range(prefix.clone()..) {
            let Some(rest) = key.strip_prefix(&prefix) else {
                break;
            };
            let (name, deeper) = match rest.split_once('/') {
                Some((name, _)) => (name, true),
                None => (rest, false),
            };
            if let Some(last) = out.last_mut()
                && last.name == name
            {
                last.has_children |= deeper;
                continue;
            }
            out.push(BrowseEntry {
                name: name.to_string(),
                full_path: format!("[{PROVIDER}]{prefix}{name}"),
                has_children: deeper,
                value: (!deeper).then(|| value.clone()),
            });
        }
        out
    }

    /// Every tag, path (with provider) and value, sorted by path.
    pub fn all(&self) -> Vec<(String, TagValue)> {
        self.tags
            .read()
            .map(|t| {
                t.iter()
                    .map(|(k, (v, at))| {
                        (
                            format!("[{PROVIDER}]{k}"),
                            TagValue {
                                value: v.clone(),
                                timestamp: *at,
                                quality: Quality::Good,
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Updates the `Messages/<SxFy>/<CommonID>/...` tags of a message marked `SQLTags`:
    /// replaces that instance's tags with this message's.
    pub fn message(
        &self,
        equipment: &str,
        message: &Message,
        common_id: &str,
        txid: u32,
        timestamp_text: &str,
        at: SystemTime,
    ) {
        let folder = format!(
            "{equipment}/Messages/{}/{}",
            message.stream_function(),
            common_id.replace('/', "_")
        );
        let mut leaves = Vec::new();
        if let Some(body) = &message.body {
            leaf_values(body, "0".to_string(), &mut leaves);
        }
        self.changed();
        let Ok(mut t) = self.tags.write() else {
            return;
        };
        let prefix = format!("{folder}/");
        t.retain(|k, _| !k.starts_with(&prefix));
        let text = json::message_to_json_string(message);
        t.insert(format!("{folder}/Message"), (Value::String(text), at));
        t.insert(
            format!("{folder}/Timestamp"),
            (Value::String(timestamp_text.to_string()), at),
        );
        t.insert(format!("{folder}/TxID"), (Value::from(txid), at));
        for (path, value) in leaves {
            t.insert(format!("{folder}/Body/{path}"), (value, at));
        }
    }
}

/// A snapshot of the tags as JSON: `{"pid", "running", "written", "tags": [{"path", "value",
/// "quality", "timestamp"}]}`, what `secsgate tags` reads.
pub fn snapshot_json(
    tags: &Tags,
    running: bool,
    written: &str,
    time_text: impl Fn(SystemTime) -> String,
) -> Value {
    let list: Vec<Value> = tags
        .all()
        .into_iter()
        .map(|(path, t)| {
            serde_json::json!({
                "path": path,
                "value": t.value,
                "quality": t.quality.name(),
                "timestamp": time_text(t.timestamp),
            })
        })
        .collect();
    serde_json::json!({
        "pid": std::process::id(),
        "running": running,
        "written": written,
        "tags": list,
    })
}

/// The leaf items of a body by their `toDataset` path, with their JSON values.
fn leaf_values(item: &Item, path: String, out: &mut Vec<(String, Value)>) {
    if let Item::L(children) = item {
        for (i, c) in children.iter().enumerate() {
            leaf_values(c, format!("{path}/{i}"), out);
        }
        return;
    }
    let value = json::item_to_json(item)
        .get("value")
        .cloned()
        .unwrap_or(Value::Null);
    out.push((path, value));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secs2::sml::parse_message;

    #[test]
    fn set_read_browse() {
        let t = Tags::new();
        let now = SystemTime::now();
        t.set("Tool1/Status", Value::from("Communicating"), now);
        t.set("[SECSGEM]Tool1/Enabled", Value::from(true), now);
        t.add("Tool1/MessagesReceived", 2, now);
        t.add("Tool1/MessagesReceived", 3, now);
        t.set("Tool2/Status", Value::from("Disabled"), now);
        assert_eq!(t.read("[SECSGEM]Tool1/Status").value, "Communicating");
        assert_eq!(t.read("Tool1/MessagesReceived").value, 5);
        assert_eq!(t.read("Tool1/Nope").quality, Quality::NotFound);
        let top: Vec<_> = t
            .browse("[SECSGEM]")
            .into_iter()
            .map(|e| (e.name, e.has_children))
            .collect();
        assert_eq!(
            top,
            [("Tool1".to_string(), true), ("Tool2".to_string(), true)]
        );
        let tool1 = t.browse("[SECSGEM]Tool1");
        assert_eq!(
            tool1
                .iter()
                .map(|e| e.full_path.as_str())
                .collect::<Vec<_>>(),
            [
                "[SECSGEM]Tool1/Enabled",
                "[SECSGEM]Tool1/MessagesReceived",
                "[SECSGEM]Tool1/Status"
            ]
        );
        assert_eq!(tool1[0].value, Some(Value::from(true)));
        t.remove_folder("Tool2");
        assert_eq!(t.browse("").len(), 1);
    }

    #[test]
    fn a_message_becomes_tags_keyed_by_common_id() {
        let t = Tags::new();
        let now = SystemTime::now();
        let m = parse_message("S6F1 W <L [4] <U4 7> <U4 1> <A \"t\"> <L [2] <U4 1 2> <F4 2.5>>>")
            .unwrap();
        t.message("Tool1", &m, "7", 12, "2026-12-03T10:00:00Z", now);
        let base = "[SECSGEM]Tool1/Messages/S6F1/7";
        assert_eq!(t.read(&format!("{base}/TxID")).value, 12);
        assert_eq!(t.read(&format!("{base}/Body/0/0")).value, 7);
        assert_eq!(
            t.read(&format!("{base}/Body/0/3/0")).value,
            serde_json::json!([1, 2])
        );
        assert_eq!(t.read(&format!("{base}/Body/0/3/1")).value, 2.5);
        assert!(
            t.read(&format!("{base}/Message"))
                .value
                .as_str()
                .unwrap()
                .contains("\"stream\":6")
        );
        // A newer message of the same CommonID replaces the old one's tags.
        let m = parse_message("S6F1 W <L [1] <U4 7>>").unwrap();
        t.message("Tool1", &m, "7", 13, "2026-12-03T10:00:01Z", now);
        assert_eq!(
            t.read(&format!("{base}/Body/0/3/1")).quality,
            Quality::NotFound
        );
        assert_eq!(t.read(&format!("{base}/TxID")).value, 13);
    }
}
