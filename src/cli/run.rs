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

/// `secsgate run DIR`: runs the gateway until SIGINT or SIGTERM.
pub(super) fn run(dir: &Path, hot_reload: bool) -> i32 {
    super::init_logging("info");
    let project = match load(dir) {
        Ok(p) => p,
        Err(code) => return code,
    };
    for w in &project.warnings {
        tracing::warn!("{w}");
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
        info!(project = %project.dir.display(), equipment = project.equipment.len(), "gateway running; Ctrl-C stops it");
        super::wait_for_stop().await;
        info!("stopping");
        gateway.shutdown().await;
        0
    })
}
