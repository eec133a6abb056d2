//! Live configuration: saving `project.toml` or an equipment's SDL file while the gateway
//! runs applies what changed, one log line per change. An edit that does not load is reported
//! with its file, line and key, and the running configuration stays.
//!
//! What changes how:
//! - an equipment's connection settings (mode, address, port, device ID, timers, message
//!   size, `establish_communication`): that connection alone reconnects;
//! - `enabled`: the connection is enabled or disabled;
//! - custom responses, `[[equipment.handler]]`s, `realtime`, `sdl`, `on_invalid`,
//!   description: put in force at once, the connection stays up;
//! - an equipment added or removed: started or stopped;
//! - a simulator added, removed or changed: started, stopped or restarted;
//! - `[gateway] custom_response_timeout`, `tool_program_limit`, `tool_program_bytes`: at
//!   once; the other `[gateway]` settings (name, workers, handler_timeout, queue_limit,
//!   response_retention, startup_wait) when the gateway restarts, which the log says;
//! - `[store]` and `[mqtt]`: when the gateway restarts, which the log says.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tracing::{error, info, warn};

use super::{Connection, Core, start_simulators};
use crate::config::{EquipmentConfig, GatewaySettings, PROJECT_FILE, Project};

/// The file watch of a project's configuration; dropping it stops the watch.
pub(super) type ConfigWatch = notify_debouncer_full::Debouncer<
    notify_debouncer_full::notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Whether a changed path is configuration: `project.toml`, or an SDL file of the project
/// (`*.sdl`, `*.json`) outside its data and log folders.
fn is_config(dir: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(dir) else {
        return false;
    };
    if crate::script::in_data_or_logs(dir, path) {
        return false;
    }
    if rel == Path::new(PROJECT_FILE) {
        return true;
    }
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("sdl" | "json")
    ) && !rel.starts_with("handlers")
        && !rel.starts_with("lib")
}

/// Watches the project folder and applies configuration changes after a 300 ms debounce.
pub(super) fn watch(
    core: Weak<Core>,
    dir: PathBuf,
) -> notify_debouncer_full::notify::Result<ConfigWatch> {
    let runtime = tokio::runtime::Handle::current();
    let root = dir.clone();
    let mut debouncer = new_debouncer(
        Duration::from_millis(300),
        None,
        move |result: DebounceEventResult| {
            let Some(core) = core.upgrade() else {
                return;
            };
            let changed = match result {
                Ok(events) => events
                    .iter()
                    .filter(|e| !matches!(e.event.kind, EventKind::Access(_)))
                    .flat_map(|e| e.event.paths.iter())
                    .any(|p| is_config(&root, p)),
                Err(errors) => {
                    for e in errors {
                        warn!("configuration watch error: {e}; reloading project.toml");
                    }
                    true
                }
            };
            if changed {
                runtime.spawn(async move { core.reload_config().await });
            }
        },
    )?;
    debouncer.watch(&dir, RecursiveMode::Recursive)?;
    Ok(debouncer)
}

/// Whether two equipment configurations differ in what the link or its GEM host were made
/// with: a change means reconnecting.
fn connection_changed(a: &EquipmentConfig, b: &EquipmentConfig) -> bool {
    a.transport != b.transport || a.establish_communication != b.establish_communication
}

/// The names of the settings that differ and can change while connected.
fn settings_changed(a: &EquipmentConfig, b: &EquipmentConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    if a.custom_responses != b.custom_responses {
        out.push("custom responses");
    }
    if a.handlers != b.handlers {
        out.push("handlers");
    }
    if a.realtime != b.realtime {
        out.push("realtime");
    }
    if a.sdl != b.sdl {
        out.push("sdl");
    }
    if a.on_invalid != b.on_invalid {
        out.push("on_invalid");
    }
    if a.description != b.description {
        out.push("description");
    }
    out
}

impl Core {
    /// Loads project.toml again and applies what changed (see the module doc).
    pub(super) async fn reload_config(self: &Arc<Self>) {
        let _one_at_a_time = self.reload_lock.lock().await;
        let project = match Project::load(&self.dir) {
            Ok(p) => p,
            Err(errors) => {
                for e in &errors {
                    error!("{e}");
                }
                error!(
                    "{} not applied ({} problem(s)); the running configuration stays",
                    self.dir.join(PROJECT_FILE).display(),
                    errors.len()
                );
                self.config_reloads.send_modify(|n| *n += 1);
                return;
            }
        };
        for warning in &project.warnings {
            warn!("{warning}");
        }
        self.apply_gateway_settings(&project.gateway);
        // The store and the MQTT publisher keep the settings they started with: say so rather
        // than ignore a change. (The web console's may come from the command line instead.)
        let (store, mqtt) = &self.started_with;
        for (section, changed) in [
            ("store", *store != project.store),
            ("mqtt", *mqtt != project.mqtt),
        ] {
            if changed {
                warn!("[{section}] changed; it takes effect when the gateway restarts");
            }
        }
        if let Ok(mut d) = self.databases.write()
            && *d != project.databases
        {
            info!("databases for system.db changed");
            *d = project.databases.clone();
        }
        self.apply_simulators(&project).await;
        self.apply_equipment(&project).await;
        self.config_reloads.send_modify(|n| *n += 1);
    }

    fn apply_gateway_settings(&self, new: &GatewaySettings) {
        let old = self.settings();
        if old == *new {
            return;
        }
        if old.custom_response_timeout != new.custom_response_timeout {
            info!(
                "gateway.custom_response_timeout is now {:?}",
                new.custom_response_timeout
            );
        }
        let later = [
            ("workers", old.workers != new.workers),
            (
                "handler_timeout",
                old.handler_timeout != new.handler_timeout,
            ),
            ("queue_limit", old.queue_limit != new.queue_limit),
            (
                "response_retention",
                old.response_retention != new.response_retention,
            ),
            ("startup_wait", old.startup_wait != new.startup_wait),
            ("name", old.name != new.name),
        ];
        for (key, changed) in later {
            if changed {
                warn!("gateway.{key} changed; it takes effect when the gateway restarts");
            }
        }
        if old.tool_program_quota() != new.tool_program_quota() {
            info!(
                "gateway.tool_program_limit is now {}, gateway.tool_program_bytes {}",
                new.tool_program_limit, new.tool_program_bytes
            );
        }
        // Only custom_response_timeout and the tool program quota are read while running;
        // the others stay as started.
        let mut kept = old;
        kept.custom_response_timeout = new.custom_response_timeout;
        kept.tool_program_limit = new.tool_program_limit;
        kept.tool_program_bytes = new.tool_program_bytes;
        if let Ok(mut s) = self.settings.write() {
            *s = kept;
        }
    }

    async fn apply_simulators(&self, project: &Project) {
        let old: Vec<_> = self
            .simulator_configs
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        let mut stop = Vec::new();
        let mut start = Vec::new();
        for o in &old {
            match project.simulators.iter().find(|n| n.name == o.name) {
                None => {
                    info!(simulator = %o.name, "simulator removed from project.toml; stopping it");
                    stop.push(o.name.clone());
                }
                Some(n) if n != o => {
                    info!(simulator = %o.name, "simulator settings changed; restarting it");
                    stop.push(o.name.clone());
                    start.push(n.clone());
                }
                Some(_) => {}
            }
        }
        for n in &project.simulators {
            if !old.iter().any(|o| o.name == n.name) {
                info!(simulator = %n.name, "simulator added to project.toml; starting it");
                start.push(n.clone());
            }
        }
        for name in stop {
            let sim = self
                .simulators
                .lock()
                .ok()
                .and_then(|mut s| s.remove(&name));
            if let Some(sim) = sim {
                sim.shutdown().await;
            }
        }
        let started = start_simulators(&start).await;
        if let Ok(mut sims) = self.simulators.lock() {
            sims.extend(started);
        }
        if let Ok(mut c) = self.simulator_configs.lock() {
            *c = project.simulators.clone();
        }
    }

    async fn apply_equipment(self: &Arc<Self>, project: &Project) {
        let current: HashMap<String, Arc<Connection>> = self
            .connections
            .read()
            .map(|c| c.clone())
            .unwrap_or_default();
        for (name, conn) in &current {
            if !project.equipment.iter().any(|e| &e.name == name) {
                info!(equipment = %name, "equipment removed from project.toml; disconnecting it");
                self.disable(conn).await;
                if let Ok(mut map) = self.connections.write() {
                    map.remove(name);
                }
            }
        }
        for new in &project.equipment {
            let Some(conn) = current.get(&new.name) else {
                info!(equipment = %new.name, "equipment added to project.toml");
                if let Err(e) = self.add(new.clone()).await {
                    error!(equipment = %new.name, "cannot start: {e}");
                }
                continue;
            };
            let old = conn.config();
            if connection_changed(&old, new) {
                info!(equipment = %new.name, "connection settings changed; reconnecting this connection");
                self.disable(conn).await;
                conn.reconfigure(new.clone());
                if new.enabled
                    && let Err(e) = self.enable(conn).await
                {
                    error!(equipment = %new.name, "cannot start: {e}");
                }
                continue;
            }
            let changed = settings_changed(&old, new);
            let enabled_changed = old.enabled != new.enabled;
            if changed.is_empty() && !enabled_changed {
                continue;
            }
            conn.set_config(new.clone());
            if !changed.is_empty() {
                info!(equipment = %new.name, changed = %changed.join(", "), "equipment settings applied");
            }
            if enabled_changed {
                if new.enabled {
                    info!(equipment = %new.name, "equipment enabled in project.toml");
                    if let Err(e) = self.enable(conn).await {
                        error!(equipment = %new.name, "cannot start: {e}");
                    }
                } else {
                    info!(equipment = %new.name, "equipment disabled in project.toml");
                    self.disable(conn).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_files_are_told_apart() {
        let dir = Path::new("/p");
        for (path, yes) in [
            ("/p/project.toml", true),
            ("/p/tool.sdl", true),
            ("/p/sdl/tool.json", true),
            ("/p/handlers/onX.py", false),
            ("/p/handlers/x.json", false),
            ("/p/lib/m.json", false),
            ("/p/data/messages.sqlite", false),
            ("/p/data/x.json", false),
            ("/p/log/gateway.log", false),
            ("/elsewhere/project.toml", false),
            ("/p/sub/project.toml", false),
        ] {
            assert_eq!(is_config(dir, Path::new(path)), yes, "{path}");
        }
    }
}
