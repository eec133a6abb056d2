//! `secsgate run DIR` and `secsgate check DIR`.

use std::path::Path;

use tracing::info;

use super::EXIT_BAD_INPUT;
use crate::config::Project;
use crate::gateway::Gateway;

/// Exit code of `check` when the project has problems.
pub const EXIT_PROBLEMS: i32 = 1;

fn load(dir: &Path) -> Result<Project, i32> {
    Project::load(dir).map_err(|errors| {
        for e in &errors {
            eprintln!("secsgate: {e}");
        }
        EXIT_BAD_INPUT
    })
}

/// `secsgate check DIR`: validates the configuration (with every SDL file) and compiles every
/// script; lists every problem and exits non-zero if there is any. Warnings (unknown keys in
/// an SDL, each as `file:line: key: ...`) are printed but do not fail the check.
pub(super) fn check(dir: &Path) -> i32 {
    let mut problems: Vec<String> = match Project::load(dir) {
        Ok(project) => {
            for w in &project.warnings {
                eprintln!("secsgate: warning: {w}");
            }
            let mut problems = Vec::new();
            if project.mqtt.enabled
                && let Err(e) = crate::north::check(&project.mqtt)
            {
                problems.push(e.to_string());
            }
            for s in &project.simulators {
                match crate::gateway::load_simulator_config(s) {
                    Ok(config) => {
                        for w in &config.warnings {
                            eprintln!("secsgate: warning: {w}");
                        }
                    }
                    Err(e) => problems.push(e),
                }
            }
            problems
        }
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    };
    let scripts = crate::script::check_scripts(dir);
    for w in &scripts.warnings {
        eprintln!("secsgate: warning: {w}");
    }
    problems.extend(scripts.problems);
    if problems.is_empty() {
        println!("{}: OK", dir.display());
        0
    } else {
        for p in &problems {
            eprintln!("secsgate: {p}");
        }
        eprintln!(
            "secsgate: {} problem(s) in {}",
            problems.len(),
            dir.display()
        );
        EXIT_PROBLEMS
    }
}

/// The command line's say over the web console.
pub(super) struct WebChoice {
    /// `--no-web`.
    pub off: bool,
    /// `--web ADDRESS`.
    pub address: Option<String>,
}

/// `secsgate run DIR`: runs the gateway until SIGINT or SIGTERM.
pub(super) fn run(dir: &Path, hot_reload: bool, web: WebChoice) -> i32 {
    super::init_logging("info");
    let mut project = match load(dir) {
        Ok(p) => p,
        Err(code) => return code,
    };
    for w in &project.warnings {
        tracing::warn!("{w}");
    }
    if web.off {
        project.web.enabled = false;
    }
    if let Some(address) = web.address {
        project.web.address = address;
        project.web.address_at = Some("--web".into());
    }
    // A console that may not start stops the gateway before it connects to anything.
    if project.web.enabled
        && let Err(e) = crate::web::check(&project.web)
    {
        eprintln!("secsgate: {e}");
        return EXIT_BAD_INPUT;
    }
    if project.mqtt.enabled
        && let Err(e) = crate::north::check(&project.mqtt)
    {
        eprintln!("secsgate: {e}");
        return EXIT_BAD_INPUT;
    }
    let runtime = match super::server_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("secsgate: {e}");
            return 1;
        }
    };
    runtime.block_on(async move {
        let gateway = Gateway::start(&project, hot_reload).await;
        let web = if project.web.enabled {
            match crate::web::start(&project.web, crate::web::Source::Gateway(gateway.clone()))
                .await
            {
                Ok(w) => Some(w),
                Err(e) => {
                    eprintln!("secsgate: {e} (--no-web runs the gateway without it)");
                    gateway.shutdown().await;
                    return EXIT_BAD_INPUT;
                }
            }
        } else {
            None
        };
        let north = match crate::north::start_if_on(&project.mqtt, &gateway).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("secsgate: MQTT: {e}");
                if let Some(web) = web {
                    web.shutdown().await;
                }
                gateway.shutdown().await;
                return EXIT_BAD_INPUT;
            }
        };
        info!(project = %project.dir.display(), equipment = project.equipment.len(), "gateway running; Ctrl-C stops it");
        super::wait_for_stop().await;
        info!("stopping");
        if let Some(web) = web {
            web.shutdown().await;
        }
        gateway.shutdown().await;
        // Last: the publisher takes what the gateway handed on while stopping.
        if let Some(north) = north {
            north.shutdown().await;
        }
        0
    })
}
