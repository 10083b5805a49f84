//! The one way in for a config file: read it, let every section's owner compile its part, and
//! report every problem with the file and the field's path.
//!
//! A config compiles in two parts. The *process settings* (listeners, threads, admin, the
//! access-log target, the store, cache sizes: what a running process cannot change) are
//! compiled here, once per load, without side effects, so the store is connected only after
//! its settings are known to be good. The *snapshot* (routes, pools, auth, limits: what a
//! reload replaces) is compiled by [`Snapshot::compile`] against the process's services.
//! [`load`] also compiles the snapshot over offline services (an in-process store, a fresh
//! metrics registry) for its issues, so a file is refused whole before the store is connected
//! (run, reload, `keys`); `portcullis check` prints what the owners report. There is no
//! separate validator to keep in step.

use std::path::Path;

use crate::admin::AdminSettings;
use crate::config::{self, Config, Issue, Issues};
use crate::observe::AccessLogTarget;
use crate::proxy::snapshot::{summary, Snapshot, SnapshotError};
use crate::server::ServerSettings;

/// What a running process cannot change, compiled from the config.
#[derive(Debug)]
pub(crate) struct ProcessSettings {
    /// Listeners, threads, drain time (`[server]`'s process-level part).
    pub(crate) server: ServerSettings,
    /// The admin listener and its token, read once here.
    pub(crate) admin: AdminSettings,
    /// Where access-log lines go (`[log] access_log`).
    pub(crate) access_log: AccessLogTarget,
}

impl ProcessSettings {
    /// Compiles the process-level sections, reporting into `issues`; `None` when one of them
    /// had a problem.
    pub(crate) fn compile(config: &Config, issues: &mut Issues) -> Option<ProcessSettings> {
        let server = ServerSettings::compile(&config.server, issues);
        let admin = AdminSettings::compile(&config.admin, issues);
        let access_log = AccessLogTarget::compile(&config.log.access_log, issues);
        Some(ProcessSettings {
            server: server?,
            admin: admin?,
            access_log: access_log?,
        })
    }
}

/// The checks of `config::validate` not yet moved into the compilers of the sections' owners
/// (issue 10 moves them one section at a time: store, auth and rate limits remain), and the
/// owners' checks that run beside them. The snapshot's compiler does not rely on them: a file
/// that fails them is still compiled (over offline services) to report every problem.
fn legacy_checks(config: &Config, issues: &mut Issues) {
    issues.extend(config::validate(config));
    issues.extend(crate::auth::config_issues(config));
}

/// A config file, read and with its process settings compiled.
pub(crate) struct Loaded {
    /// The model, as read.
    pub(crate) config: Config,
    /// Its process settings.
    pub(crate) process: ProcessSettings,
}

/// Reads `file`, compiles its process settings and reports the problems of the snapshot too
/// (compiled over offline services), so a file is judged whole before anything is connected
/// and one run reports every mistake in it.
pub(crate) fn load(file: &Path) -> Result<Loaded, SnapshotError> {
    let config = config::load(file)?;
    let mut issues = Issues::default();
    legacy_checks(&config, &mut issues);
    let process = ProcessSettings::compile(&config, &mut issues);
    issues.extend(snapshot_issues(config.clone()));
    match process {
        Some(process) if issues.is_empty() => Ok(Loaded { config, process }),
        _ => Err(SnapshotError::Invalid(issues.into_vec()).in_file(file)),
    }
}

/// The problems the snapshot's compiler finds in `config`, over offline services. An error
/// that is not an issue (a rate-limit rule, a JWT key) is left to the compile that follows.
fn snapshot_issues(config: Config) -> Vec<Issue> {
    Snapshot::issues(config, &crate::server::offline_services())
}

/// `portcullis check`: compiles the whole file as a start would, without connecting to
/// anything or installing anything; a one-line summary, or every problem.
pub fn check(file: &Path) -> Result<String, SnapshotError> {
    let loaded = load(file)?;
    let snapshot = Snapshot::compile(loaded.config, None, &crate::server::offline_services())
        .map_err(|e| e.in_file(file))?;
    Ok(summary(&snapshot.config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every problem a load and a `check` of `toml` would report, in order.
    fn issues(toml: &str) -> Vec<String> {
        let config = config::parse(toml).expect("test config parses");
        let mut issues = Issues::default();
        legacy_checks(&config, &mut issues);
        let _ = ProcessSettings::compile(&config, &mut issues);
        issues.extend(snapshot_issues(config));
        issues.into_vec().iter().map(Issue::to_string).collect()
    }

    const BASE: &str = r#"
[[upstreams]]
name = "api"
peers = [{ addr = "127.0.0.1:3000" }]
"#;

    #[test]
    fn a_minimal_config_is_valid() {
        let toml = format!("{BASE}\n[[routes]]\nname = \"r\"\nupstream = \"api\"\n");
        assert_eq!(issues(&toml), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let toml = format!(
            r#"{BASE}
[server]
listen = ["127.0.0.1:99999"]
keepalive_timeout = "0s"
trusted_proxies = ["10.0.0.0/33"]

[[routes]]
name = "a"
upstream = "billing"

[[routes]]
name = "a"
path = "nope"
upstream = "api"
read_timeout = "soon"
methods = ["G ET"]
"#
        );
        let found = issues(&toml);
        let expect = [
            "server.listen[0]: invalid address",
            "server.keepalive_timeout: must be greater than zero",
            "server.trusted_proxies[0]: invalid network",
            "routes[0].upstream: no upstream named \"billing\"",
            "routes[1].name: route name \"a\" is used twice",
            "routes[1].path: \"nope\" must start with '/'",
            "routes[1].read_timeout: invalid duration \"soon\"",
            "routes[1].methods[0]: \"G ET\" is not an HTTP method",
        ];
        for e in expect {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }

    #[test]
    fn two_routes_with_the_same_match_are_rejected() {
        let toml = format!(
            "{BASE}\n[[routes]]\nname = \"a\"\nhosts = [\"x.com\"]\npath = \"/p\"\nmethods = [\"GET\", \"POST\"]\nupstream = \"api\"\n\
             [[routes]]\nname = \"b\"\nhosts = [\"X.com\"]\npath = \"/p\"\nmethods = [\"post\", \"get\"]\nupstream = \"api\"\n"
        );
        let found = issues(&toml);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("routes[1]: another route already matches"),
            "{found:#?}"
        );
    }

    #[test]
    fn admin_off_loopback_needs_a_token() {
        let found = issues(&format!("{BASE}\n[admin]\nlisten = \"0.0.0.0:9901\"\n"));
        assert!(
            found.iter().any(|f| f.starts_with("admin.listen:")),
            "{found:#?}"
        );
    }

    #[test]
    fn bad_upstream_settings_are_reported() {
        let found = issues(
            r#"
[[upstreams]]
name = "a"
peers = []
selection = "consistent_hash"
hash_key = "cookie"
tls = true

[[upstreams]]
name = "a"
peers = [{ addr = "localhost:80", weight = 0 }]
[upstreams.health_check]
kind = "http"
path = "healthz"
interval = "0ms"
"#,
        );
        let expect = [
            "upstreams[0].peers: needs at least one peer",
            "upstreams[0].hash_key:",
            "upstreams[0].sni:",
            "upstreams[1].name: upstream name \"a\" is used twice",
            "upstreams[1].peers[0].addr: invalid address",
            "upstreams[1].peers[0].weight:",
            "upstreams[1].health_check.interval: must be greater than zero",
            "upstreams[1].health_check.path: must start with '/'",
        ];
        for e in expect {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e:?} in {found:#?}"
            );
        }
    }

    #[test]
    fn a_file_failing_an_unmoved_check_still_reports_the_snapshot_problems() {
        let found = issues(&format!(
            "{BASE}\n[store]\nurl = \"http://h:1\"\n\n[[routes]]\nname = \"r\"\nupstream = \"nope\"\n"
        ));
        assert!(
            found.iter().any(|f| f.starts_with("store.url:")),
            "{found:#?}"
        );
        assert!(
            found.iter().any(|f| f.starts_with("routes[0].upstream:")),
            "{found:#?}"
        );
    }
}
