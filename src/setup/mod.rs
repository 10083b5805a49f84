//! The one way in for a config file: read it, let every section's owner compile its part, and
//! report every problem with the file and the field's path.
//!
//! A config compiles in two parts. The *process settings* (listeners, threads, admin, the
//! access-log target, the store, cache sizes: what a running process cannot change) are
//! compiled here, once per load, without side effects, so the store is connected only after
//! its settings are known to be good. The *snapshot* (routes, pools, auth, limits: what a
//! reload replaces) is compiled by [`Snapshot::compile`] against the process's services.
//! Each is compiled once per load. Only when the process settings fail does [`load`] also
//! compile the snapshot, over offline services (an in-process store, a fresh metrics
//! registry), so that one run reports every mistake in the file; `portcullis check` compiles
//! both over offline services and prints what the owners report. There is no separate
//! validator to keep in step: `config` only parses.

mod admin;
mod server;

use std::path::Path;
use std::sync::Arc;

use crate::auth::settings::CacheSettings;
use crate::auth::{AuthMetrics, AuthShared, CacheMetrics, DecisionCache};
use crate::config::{self, Config, Issue, Issues};
use crate::observe::AccessLogTarget;
use crate::observe::Metrics;
use crate::proxy::snapshot::Services;
use crate::proxy::snapshot::{summary, Snapshot, SnapshotError};
use crate::ratelimit::LimiterSettings;
use crate::ratelimit::{Limiter, RateMetrics};
use crate::store::StoreSettings;
use crate::store::{Store, StoreSetupError};
pub(crate) use admin::AdminSettings;
pub(crate) use server::ServerSettings;

/// What a running process cannot change, compiled from the config.
#[derive(Debug)]
pub(crate) struct ProcessSettings {
    /// Listeners, threads, drain time (`[server]`'s process-level part).
    pub(crate) server: ServerSettings,
    /// The admin listener and its token, read once here.
    pub(crate) admin: AdminSettings,
    /// Where access-log lines go (`[log] access_log`).
    pub(crate) access_log: AccessLogTarget,
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
        let server = ServerSettings::compile(&config.server, issues);
        let admin = AdminSettings::compile(&config.admin, issues);
        let access_log = AccessLogTarget::compile(&config.log.access_log, issues);
        let store = config
            .store
            .as_ref()
            .map(|s| StoreSettings::compile(s, issues));
        let auth_cache = CacheSettings::compile(&config.auth.cache, issues);
        let limiter = LimiterSettings::compile(&config.rate_limit, issues);
        Some(ProcessSettings {
            server: server?,
            admin: admin?,
            access_log: access_log?,
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

/// A config file, read and with its process settings compiled.
pub(crate) struct Loaded {
    /// The model, as read.
    pub(crate) config: Config,
    /// Its process settings (the server and the services are built from them).
    pub(crate) process: ProcessSettings,
}

/// Reads `file` and compiles its process settings; when they fail, the snapshot's problems
/// are reported with theirs (see [`compile`]).
pub(crate) fn load(file: &Path) -> Result<Loaded, SnapshotError> {
    let config = config::load(file)?;
    compile(config).map_err(|issues| SnapshotError::Invalid(issues).in_file(file))
}

/// [`load`] of a parsed config: its process settings, or every problem found in it. The
/// snapshot is compiled once, by the caller, over the services the settings build; only a
/// file whose process settings fail has its snapshot compiled here too (over offline
/// services), so that one run still reports every mistake before anything is connected.
fn compile(config: Config) -> Result<Loaded, Vec<Issue>> {
    let mut issues = Issues::default();
    match ProcessSettings::compile(&config, &mut issues) {
        Some(process) if issues.is_empty() => Ok(Loaded { config, process }),
        _ => {
            issues.extend(snapshot_issues(config));
            Err(issues.into_vec())
        }
    }
}

/// The problems the snapshot's compiler finds in `config`, over offline services.
fn snapshot_issues(config: Config) -> Vec<Issue> {
    Snapshot::issues(config, &offline_services())
}

/// Reads `file` and compiles all of it as a start would, the snapshot over offline services
/// (nothing connected, spawned or installed).
pub(crate) fn load_checked(file: &Path) -> Result<(ProcessSettings, Snapshot), SnapshotError> {
    let loaded = load(file)?;
    let snapshot =
        Snapshot::compile(loaded.config, None, &offline_services()).map_err(|e| e.in_file(file))?;
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
    Snapshot::compile(loaded.config, None, &offline_services()).map(|_| ())
}

/// Creates the process-wide services of compiled process settings: metrics, the store, the
/// auth cache and the limiter.
pub(crate) fn services(process: &ProcessSettings) -> Result<Services, StoreSetupError> {
    let metrics = Arc::new(Metrics::new());
    let rate_metrics = RateMetrics::new(metrics.registry());
    let counters = Limiter::store_counters(&process.limiter, &rate_metrics);
    let store = Store::from_settings(process.store.as_ref(), metrics.registry(), counters)?;
    let c = &process.auth_cache;
    let cache = DecisionCache::new(
        c.capacity,
        c.ttl,
        c.negative_capacity,
        c.negative_ttl,
        CacheMetrics::new(metrics.registry()),
    );
    let limiter = Arc::new(Limiter::new(store.clone(), &process.limiter, rate_metrics));
    let auth = Arc::new(AuthShared::new(
        store,
        cache,
        AuthMetrics::new(metrics.registry()),
    ));
    Ok(Services {
        metrics,
        auth,
        limiter,
    })
}

/// Services for compiling a snapshot that will never serve (`check`, and gathering every
/// problem of a file that failed to load): an in-process store, a fresh registry, the model's
/// default cache sizes; nothing is connected or spawned.
pub(crate) fn offline_services() -> Services {
    let built = services(&ProcessSettings::offline());
    // Only the store's setup can fail, and the in-process store has none.
    built.unwrap_or_else(|e| unreachable!("in-process services: {e}"))
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
    fn every_owner_reports_its_sections_in_one_pass() {
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
        for e in expect {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e:?} in {found:#?}"
            );
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
