//! The one way in for a config file: read it, let every section's owner compile its part, and
//! report every problem with the file and the field's path.
//!
//! A config compiles in two parts. The *process settings* (listeners, threads, admin, the
//! access-log target, the store, cache sizes: what a running process cannot change) are
//! compiled here, once per load, without side effects, so the store is connected only after
//! its settings are known to be good. The *snapshot* (routes, pools, auth, limits: what a
//! reload replaces) is compiled by [`Snapshot::compile`] against the process's services.
//! `portcullis check` runs both, the snapshot over offline services (an in-process store, a
//! fresh metrics registry), and prints what the owners report; there is no separate
//! validator to keep in step.

use std::path::Path;

use crate::config::{self, Config, Issues};
use crate::proxy::snapshot::{summary, Snapshot, SnapshotError};

/// What a running process cannot change, compiled from the config.
#[derive(Debug)]
pub(crate) struct ProcessSettings {}

impl ProcessSettings {
    /// Compiles the process-level sections, reporting into `issues`.
    pub(crate) fn compile(_config: &Config, _issues: &mut Issues) -> ProcessSettings {
        ProcessSettings {}
    }
}

/// The checks of `config::validate` not yet moved into the compilers of the sections' owners
/// (issue 10 moves them one section at a time), and the owners' checks that run beside them.
/// While any remain, the compilers may rely on them: the snapshot is compiled only over a
/// config they passed.
fn legacy_checks(config: &Config, issues: &mut Issues) {
    issues.extend(config::validate(config));
    issues.extend(crate::auth::config_issues(config));
    issues.extend(crate::proxy::canonical::route_path_issues(config));
}

/// A config file, read and with its process settings compiled.
pub(crate) struct Loaded {
    /// The model, as read.
    pub(crate) config: Config,
    /// Its process settings (the server and the services are built from them as their
    /// sections move here; until then they read `config`).
    #[allow(dead_code)]
    pub(crate) process: ProcessSettings,
}

/// Reads `file` and compiles its process settings. On a problem, the snapshot's problems are
/// gathered too (over offline services), so one run reports every mistake in the file.
pub(crate) fn load(file: &Path) -> Result<Loaded, SnapshotError> {
    let config = config::load(file)?;
    let mut issues = Issues::default();
    legacy_checks(&config, &mut issues);
    let legacy_passed = issues.is_empty();
    let process = ProcessSettings::compile(&config, &mut issues);
    if issues.is_empty() {
        return Ok(Loaded { config, process });
    }
    if legacy_passed {
        if let Err(SnapshotError::Invalid(more)) =
            Snapshot::compile(config, None, &crate::server::offline_services())
        {
            issues.extend(more);
        }
    }
    Err(SnapshotError::Invalid(issues.into_vec()).in_file(file))
}

/// `portcullis check`: compiles the whole file as a start would, without connecting to
/// anything or installing anything; a one-line summary, or every problem.
pub fn check(file: &Path) -> Result<String, SnapshotError> {
    let loaded = load(file)?;
    let snapshot = Snapshot::compile(loaded.config, None, &crate::server::offline_services())
        .map_err(|e| e.in_file(file))?;
    Ok(summary(&snapshot.config))
}
