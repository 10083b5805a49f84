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

use crate::auth::settings::CacheSettings;
use crate::config::{self, Config, Issue, Issues};
use crate::proxy::snapshot::{summary, Snapshot, SnapshotError};
use crate::ratelimit::LimiterSettings;
use crate::store::StoreSettings;

/// What a running process cannot change, compiled from the config.
#[derive(Debug, Clone)]
pub(crate) struct ProcessSettings {
    /// `[store]`; `None`: the in-process store.
    pub(crate) store: Option<StoreSettings>,
    /// `[auth.cache]`: the local decision tier.
    pub(crate) auth_cache: CacheSettings,
    /// The breaker and local counters of `[rate_limit]`.
    pub(crate) limiter: LimiterSettings,
}

impl ProcessSettings {
    /// Compiles the process-level sections, reporting into `issues`; `None` when any of
    /// them had a problem.
    pub(crate) fn compile(config: &Config, issues: &mut Issues) -> Option<ProcessSettings> {
        let store = config
            .store
            .as_ref()
            .map(|s| StoreSettings::compile(s, issues));
        let auth_cache = CacheSettings::compile(&config.auth.cache, issues);
        let limiter = LimiterSettings::compile(&config.rate_limit, issues);
        Some(ProcessSettings {
            store: store.map_or(Some(None), |s| s.map(Some))?,
            auth_cache: auth_cache?,
            limiter: limiter?,
        })
    }

    /// The settings of a process that will never serve (`check`, and gathering every problem
    /// of a file that failed to load): the in-process store and the model's defaults.
    pub(crate) fn offline() -> ProcessSettings {
        let mut issues = Issues::default();
        let defaults = config::parse("").unwrap_or_else(|e| unreachable!("an empty config: {e}"));
        let compiled = ProcessSettings::compile(&defaults, &mut issues);
        compiled.unwrap_or_else(|| unreachable!("the defaults compile: {:?}", issues.into_vec()))
    }
}

/// The checks of `config::validate` not yet moved into the compilers of the sections' owners
/// (issue 10 moves them one section at a time), and the owners' checks that run beside them.
/// While any remain, the compilers of those sections may rely on them: the snapshot is
/// compiled only over a config they passed (the sections already moved are compiled and
/// reported either way).
fn legacy_checks(config: &Config, issues: &mut Issues) {
    issues.extend(config::validate(config));
    issues.extend(crate::proxy::canonical::route_path_issues(config));
}

/// A config file, read and with its process settings compiled.
pub(crate) struct Loaded {
    /// The model, as read.
    pub(crate) config: Config,
    /// Its process settings (the services are built from them).
    pub(crate) process: ProcessSettings,
}

/// Reads `file` and compiles its process settings. On a problem, the snapshot's problems are
/// gathered too (over offline services), so one run reports every mistake in the file.
pub(crate) fn load(file: &Path) -> Result<Loaded, SnapshotError> {
    let config = config::load(file)?;
    compile(config).map_err(|issues| SnapshotError::Invalid(issues).in_file(file))
}

/// [`load`] of a parsed config: its process settings, or every problem found in it.
fn compile(config: Config) -> Result<Loaded, Vec<Issue>> {
    let mut issues = Issues::default();
    legacy_checks(&config, &mut issues);
    let legacy_passed = issues.is_empty();
    let process = ProcessSettings::compile(&config, &mut issues);
    if let Some(process) = process.filter(|_| issues.is_empty()) {
        return Ok(Loaded { config, process });
    }
    let offline = crate::server::offline_services();
    if legacy_passed {
        if let Err(SnapshotError::Invalid(more)) = Snapshot::compile(config, None, &offline) {
            issues.extend(more);
        }
    } else {
        // The sections the legacy checks no longer cover are compiled by their owners
        // whatever the rest holds.
        issues.extend(Snapshot::feature_issues(&config, &offline));
    }
    Err(issues.into_vec())
}

/// Reads `file` and compiles all of it as a start would, the snapshot over offline services
/// (nothing connected, spawned or installed).
pub(crate) fn load_checked(file: &Path) -> Result<(ProcessSettings, Snapshot), SnapshotError> {
    let loaded = load(file)?;
    let snapshot = Snapshot::compile(loaded.config, None, &crate::server::offline_services())
        .map_err(|e| e.in_file(file))?;
    Ok((loaded.process, snapshot))
}

/// `portcullis check`: compiles the whole file as a start would, without connecting to
/// anything or installing anything; a one-line summary, or every problem.
pub fn check(file: &Path) -> Result<String, SnapshotError> {
    let (_, snapshot) = load_checked(file)?;
    Ok(summary(&snapshot.config))
}

/// [`check`] of a config already parsed (benches and tools that build one in memory).
pub fn check_config(config: Config) -> Result<(), SnapshotError> {
    let loaded = compile(config).map_err(SnapshotError::Invalid)?;
    Snapshot::compile(loaded.config, None, &crate::server::offline_services()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every problem of `toml` as `check` reports it.
    fn issues(toml: &str) -> Vec<String> {
        let config = config::parse(toml).expect("test config parses");
        match check_config(config) {
            Ok(()) => Vec::new(),
            Err(SnapshotError::Invalid(issues)) => issues.iter().map(Issue::to_string).collect(),
            Err(e) => panic!("not refused with issues: {e:?}"),
        }
    }

    const BASE: &str = r#"
[[upstreams]]
name = "api"
peers = [{ addr = "127.0.0.1:3000" }]
"#;

    #[test]
    fn the_owners_sections_are_reported_beside_the_legacy_checks() {
        let found = issues(&format!(
            "{BASE}\n[rate_limit]\nbreaker_failures = 0\nnode_count = 0\n\
             [[routes]]\nname = \"r\"\nupstream = \"billing\"\n\
             [[routes.rate_limits]]\nname = \"per-x\"\nby = \"bogus\"\nlimit = 5\nwindow = \"1s\"\n"
        ));
        let expect = [
            "routes[0].upstream: no upstream named \"billing\"",
            "rate_limit.breaker_failures: must be at least 1",
            "rate_limit.node_count: must be between 1 and 10000",
            "routes[0].rate_limits[0].by: \"bogus\"",
        ];
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        for (f, e) in found.iter().zip(expect) {
            assert!(f.starts_with(e), "{f:?} is not {e:?}");
        }
    }

    #[test]
    fn a_claim_listed_with_an_unusable_header_is_reported_once() {
        let found = issues(&format!(
            "{BASE}\n[auth.jwt]\njwks_url = \"https://idp.example.com/jwks\"\n\
             [auth.jwt.claims_to_headers]\ntenant = \"bad header\"\n\
             [[routes]]\nname = \"r\"\nupstream = \"api\"\n\
             [[routes.rate_limits]]\nname = \"per-tenant\"\nby = \"claim:tenant\"\nlimit = 5\nwindow = \"1s\"\n\
             [[routes.rate_limits]]\nname = \"per-org\"\nby = \"claim:org\"\nlimit = 5\nwindow = \"1s\"\n"
        ));
        let expect = [
            "auth.jwt.claims_to_headers.tenant: \"bad header\" is not a valid header name",
            "routes[0].rate_limits[1].by: claim \"org\" must be listed",
        ];
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        for (f, e) in found.iter().zip(expect) {
            assert!(f.starts_with(e), "{f:?} is not {e:?}");
        }
    }

    #[test]
    fn out_of_range_bounds_and_weak_keys_are_reported_with_their_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let weak = dir.path().join("weak");
        std::fs::write(&weak, "short-key-1").expect("write");
        let strong = dir.path().join("strong");
        std::fs::write(&strong, "pk_4f1b0c9e2d7a8b3c6e5f1a2b3c4d5e6f").expect("write");
        let toml = format!(
            r#"{BASE}
[auth.cache]
negative_ttl = "2000y"

[rate_limit]
local_max_counters = 0
ipv4_prefix = 33
ipv6_prefix = 129
[rate_limit.failed_auth]
limit = 0
window = "500ms"

[auth.api_key]
key_ttl = "3651d"
keys = [
  {{ id = "weak", consumer = "c", key_file = {weak:?} }},
  {{ id = "strong", consumer = "c", key_file = {strong:?} }},
]

[[routes]]
name = "r"
upstream = "api"
rate_limits = [
  {{ name = "huge", by = "ip", limit = 104249992, window = "1d" }},
  {{ name = "fits", by = "ip", limit = 104249991, window = "1d" }},
  {{ name = "plans", by = "ip", limit = 10, window = "30d", plan_limits = {{ gold = 4000000 }} }},
]
"#
        );
        let found = issues(&toml);
        let expect = [
            "rate_limit.local_max_counters: must be between 1",
            "rate_limit.ipv4_prefix: must be between 0 and 32",
            "rate_limit.ipv6_prefix: must be between 0 and 128",
            "rate_limit.failed_auth.limit: must be between 1",
            "rate_limit.failed_auth.window: must be whole seconds",
            "auth.api_key.key_ttl: must be at most 3650d",
            "auth.cache.negative_ttl: must be at most 1d",
            "auth.api_key.keys[0].key_file: the key is too weak",
            "routes[0].rate_limits[0].limit: limit × window in ms must be at most 2^53",
            "routes[0].rate_limits[2].plan_limits.gold: limit × window in ms must be at most 2^53",
        ];
        for e in expect {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        assert!(
            !found.iter().any(|f| f.contains("short-key-1")),
            "{found:#?}"
        );
    }
}
