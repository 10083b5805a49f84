//! The compiled, immutable form of a config that requests run against.
//!
//! A request loads the current [`Snapshot`] once (one `ArcSwap` load) and uses it to the end, so
//! a reload never changes the rules under a request in flight. Pools whose upstream config did
//! not change are carried into the new snapshot with their health state and connections. The
//! handle that swaps snapshots on reload is in `reload`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::auth::settings::{AuthSettings, CompiledAuth};
use crate::auth::{AuthShared, Authenticator, KeyError, RouteAuth};
use crate::config::{self, Config, Issue, Issues, RetryOn, RouteConfig};
use crate::observe::{Metrics, Redactor};
use crate::proxy::forward::SpoofGuard;
use crate::proxy::pool::Pool;
use crate::proxy::router::Router;
use crate::ratelimit::{ClaimHeader, Limiter, PolicySettings, RoutePolicy};

/// A route, compiled: everything the hot path needs, pre-parsed.
pub struct Route {
    /// Route name (metrics label, log field).
    pub name: String,
    /// The pool requests are sent to.
    pub pool: Arc<Pool>,
    /// Remove the matched prefix before proxying.
    pub strip_prefix: bool,
    /// Send the client's Host upstream.
    pub preserve_host: bool,
    /// Request headers to set.
    pub request_add: Vec<(HeaderName, HeaderValue)>,
    /// Request headers to remove.
    pub request_remove: Vec<HeaderName>,
    /// Response headers to set.
    pub response_add: Vec<(HeaderName, HeaderValue)>,
    /// Response headers to remove.
    pub response_remove: Vec<HeaderName>,
    /// Per-route timeout overrides (None: the pool's).
    pub connect_timeout: Option<Duration>,
    /// See `connect_timeout`.
    pub read_timeout: Option<Duration>,
    /// See `connect_timeout`.
    pub write_timeout: Option<Duration>,
    /// Extra attempts after a retryable failure.
    pub retries: usize,
    /// Retry when the connection could not be made.
    pub retry_connect_failure: bool,
    /// Retry idempotent requests that failed after being sent.
    pub retry_upstream_error: bool,
    /// Latency histogram of this route, resolved once.
    pub request_duration: prometheus::Histogram,
    /// Upstream latency histogram of this route, resolved once.
    pub upstream_duration: prometheus::Histogram,
    /// Authentication the route requires.
    pub auth: RouteAuth,
    /// Rate limits of the route.
    pub rate_limit: RoutePolicy,
}

/// Process-wide services that outlive any one config: metrics, store, auth cache.
#[derive(Clone)]
pub struct Services {
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Store, decision cache and auth metrics.
    pub auth: Arc<AuthShared>,
    /// Rate-limit counters, breaker and metrics.
    pub limiter: Arc<Limiter>,
}

/// The compiled config that requests run against.
pub struct Snapshot {
    /// The validated model this snapshot was compiled from.
    pub config: Config,
    /// The routing table; indices point into `routes`.
    pub router: Router,
    /// Compiled routes.
    pub routes: Vec<Route>,
    /// Pools by upstream name.
    pub pools: HashMap<String, Arc<Pool>>,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest declared request body accepted.
    pub max_body_size: u64,
    /// Idle keep-alive timeout for client connections, in whole seconds (at least 1).
    pub keepalive_secs: u64,
    /// What the access log may show.
    pub redactor: Redactor,
    /// Authentication as configured.
    pub auth: Authenticator,
    /// Request headers clients may not set (identity, forwarding), folded once here.
    pub spoof_guard: SpoofGuard,
}

/// Why a config could not become a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file failed to load or validate.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Compiling found problems; [`SnapshotError::in_file`] names the file they are in.
    #[error("{}", render_issues(.0))]
    Invalid(Vec<Issue>),
    /// A pool could not be built.
    #[error(transparent)]
    Pool(#[from] crate::proxy::pool::PoolError),
    /// The config-declared API keys could not be stored.
    #[error("auth.api_key.keys: {source}")]
    StaticKeyStore {
        /// The store operation that failed.
        source: KeyError,
    },
    /// The store did not store the config-declared API keys at once (they are only allowed
    /// with the in-process store, which answers without waiting).
    #[error("auth.api_key.keys: the store did not answer at once")]
    StaticKeyPending,
    /// A route names an upstream that does not exist (validation prevents this).
    #[error("route {route:?}: no upstream named {upstream:?}")]
    UnknownUpstream {
        /// The route.
        route: String,
        /// The missing upstream.
        upstream: String,
    },
}

impl SnapshotError {
    /// The same error, with compile problems reported as problems of `file`.
    pub(crate) fn in_file(self, file: &Path) -> SnapshotError {
        match self {
            SnapshotError::Invalid(issues) => SnapshotError::Config(config::ConfigError::Invalid {
                file: file.to_path_buf(),
                issues,
            }),
            other => other,
        }
    }
}

fn render_issues(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(Issue::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

// === impl Snapshot ===

impl Snapshot {
    /// Compiles the reloadable part of a config, reusing pools of `previous` whose config is
    /// unchanged; every problem found is returned as [`SnapshotError::Invalid`].
    pub(crate) fn compile(
        config: Config,
        previous: Option<&Snapshot>,
        services: &Services,
    ) -> Result<Snapshot, SnapshotError> {
        let mut issues = Issues::default();
        let features = Features::compile(&config, previous, services, &mut issues);
        let Some(Features { auth, policies }) = features.filter(|_| issues.is_empty()) else {
            return Err(SnapshotError::Invalid(issues.into_vec()));
        };
        let mut pools = HashMap::new();
        for u in &config.upstreams {
            let reused = previous
                .and_then(|p| p.pools.get(&u.name))
                .filter(|p| p.config == *u)
                .cloned();
            let pool = match reused {
                Some(p) => p,
                None => Arc::new(Pool::build(u)?),
            };
            pools.insert(u.name.clone(), pool);
        }
        let routes = config
            .routes
            .iter()
            .zip(policies)
            .map(|(r, rate_limit)| compile_route(r, rate_limit, &pools, services))
            .collect::<Result<Vec<_>, _>>()?;
        let router = Router::build(&config.routes);
        let spoof_guard = SpoofGuard::new(auth.claim_headers());
        let s = &config.server;
        let snapshot = Snapshot {
            router,
            routes,
            pools,
            trusted_proxies: s
                .trusted_proxies
                .iter()
                .filter_map(|n| n.ok().copied())
                .collect(),
            max_body_size: s.max_body_size.ok().map_or(u64::MAX, |b| b.0),
            keepalive_secs: s
                .keepalive_timeout
                .ok()
                .map_or(60, |d| d.0.as_secs_f64().ceil().max(1.0) as u64),
            redactor: Redactor::new(&config.log, &config.auth),
            auth,
            spoof_guard,
            config,
        };
        if !issues.is_empty() {
            return Err(SnapshotError::Invalid(issues.into_vec()));
        }
        Ok(snapshot)
    }

    /// Every problem the feature sections (`[auth]`, `[rate_limit]`, the routes' rate limits)
    /// have, compiled by their owners over `services`; for a config whose other sections
    /// failed, so that one run still reports every mistake.
    pub(crate) fn feature_issues(config: &Config, services: &Services) -> Vec<Issue> {
        let mut issues = Issues::default();
        Features::compile(config, None, services, &mut issues);
        issues.into_vec()
    }

    /// Whether `ip` is a trusted proxy.
    pub(crate) fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        // On a `[::]` listener an IPv4 proxy appears as `::ffff:a.b.c.d`; networks are
        // written as IPv4, so compare the address it maps.
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// One line describing what is loaded, for `check` and reload answers.
    pub(crate) fn summary(&self) -> String {
        summary(&self.config)
    }
}

/// One line describing a config.
pub fn summary(c: &Config) -> String {
    let peers: usize = c.upstreams.iter().map(|u| u.peers.len()).sum();
    format!(
        "{} routes, {} upstreams ({} peers), listening on {}",
        c.routes.len(),
        c.upstreams.len(),
        peers,
        c.server
            .listen
            .iter()
            .map(|l| l.raw().to_string())
            .chain(
                c.server
                    .tls
                    .iter()
                    .map(|t| format!("{} (tls)", t.listen.raw()))
            )
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The sections compiled by the feature modules: authentication and every route's rate limits.
struct Features {
    /// `[auth]` (but its cache, a process setting).
    auth: Authenticator,
    /// The rate limits of each route, in `routes` order.
    policies: Vec<RoutePolicy>,
}

impl Features {
    /// Compiles `[auth]`, `[rate_limit]` and every route's rate limits, each problem into
    /// `issues`; `None` when there was any. An unchanged `[auth.jwt]` keeps `previous`'s JWKS
    /// client.
    fn compile(
        config: &Config,
        previous: Option<&Snapshot>,
        services: &Services,
        issues: &mut Issues,
    ) -> Option<Features> {
        let previous_jwt = previous.and_then(|p| p.auth.jwt()).map(Arc::as_ref);
        let CompiledAuth { settings, claims } =
            AuthSettings::compile(&config.auth, config.store.is_some(), previous_jwt, issues);
        let limits = PolicySettings::compile(&config.rate_limit, issues);
        let claim_header = |claim: &str| match claims.get(claim) {
            None => ClaimHeader::Unlisted,
            Some(None) => ClaimHeader::Unusable,
            Some(Some(header)) => ClaimHeader::Mapped(header.clone()),
        };
        let policies: Vec<Option<RoutePolicy>> = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| {
                RoutePolicy::compile(
                    index,
                    r,
                    limits.as_ref(),
                    services.auth.store(),
                    services.limiter.metrics(),
                    claim_header,
                    issues,
                )
            })
            .collect();
        let auth = settings?.into_authenticator(&services.auth);
        Some(Features {
            auth,
            policies: policies.into_iter().collect::<Option<Vec<_>>>()?,
        })
    }
}

/// Stores the config-declared keys of `new` and purges those of `old` it no longer has
/// (removed, or their value rotated): the old key stops working when the reload returns, not
/// when its record expires. Called only once `new` compiled, so a failed reload stores nothing.
pub(super) fn install_static_keys(
    new: &Snapshot,
    old: Option<&Snapshot>,
    shared: &AuthShared,
) -> Result<(), SnapshotError> {
    let old_keys = old.map_or(&[][..], |o| o.auth.static_keys());
    let new_keys = new.auth.static_keys();
    if old_keys.is_empty() && new_keys.is_empty() {
        return Ok(());
    }
    // Any key store of the same store can purge: old keys are addressed by their stored hash.
    let Some(keys) = new.auth.keys().or_else(|| old.and_then(|o| o.auth.keys())) else {
        return Ok(());
    };
    // The in-process store answers without waiting; auth's compile keeps static keys off Redis.
    let replaced = futures::FutureExt::now_or_never(shared.replace_static_keys(
        keys,
        old_keys,
        new_keys,
        keys.default_ttl(),
    ));
    match replaced {
        Some(Ok(())) => Ok(()),
        Some(Err(source)) => Err(SnapshotError::StaticKeyStore { source }),
        None => Err(SnapshotError::StaticKeyPending),
    }
}

fn compile_route(
    r: &RouteConfig,
    rate_limit: RoutePolicy,
    pools: &HashMap<String, Arc<Pool>>,
    services: &Services,
) -> Result<Route, SnapshotError> {
    let metrics = &services.metrics;
    let pool = pools
        .get(&r.upstream)
        .cloned()
        .ok_or_else(|| SnapshotError::UnknownUpstream {
            route: r.name.clone(),
            upstream: r.upstream.clone(),
        })?;
    let headers = |add: &std::collections::BTreeMap<String, String>| {
        add.iter()
            .filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect::<Vec<_>>()
    };
    let names = |list: &[String]| {
        list.iter()
            .filter_map(|k| HeaderName::from_bytes(k.as_bytes()).ok())
            .collect::<Vec<_>>()
    };
    let dur =
        |d: &Option<config::Lenient<config::Dur>>| d.as_ref().and_then(|d| d.ok()).map(|d| d.0);
    Ok(Route {
        name: r.name.clone(),
        pool,
        strip_prefix: r.strip_prefix,
        preserve_host: r.preserve_host,
        request_add: headers(&r.request_headers.add),
        request_remove: names(&r.request_headers.remove),
        response_add: headers(&r.response_headers.add),
        response_remove: names(&r.response_headers.remove),
        connect_timeout: dur(&r.connect_timeout),
        read_timeout: dur(&r.read_timeout),
        write_timeout: dur(&r.write_timeout),
        retries: r.retries,
        retry_connect_failure: r.retry_on.contains(&RetryOn::ConnectFailure),
        retry_upstream_error: r.retry_on.contains(&RetryOn::UpstreamError),
        request_duration: metrics.request_duration.with_label_values(&[&r.name]),
        upstream_duration: metrics.upstream_duration.with_label_values(&[&r.name]),
        auth: RouteAuth {
            methods: r.auth.clone(),
            required_scopes: r.required_scopes.clone(),
            forward_credentials: r.forward_credentials,
            on_store_error: r.auth_on_store_error,
        },
        rate_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = r#"
[[upstreams]]
name = "api"
peers = [{ addr = "127.0.0.1:3000" }]
"#;

    /// Compiles `toml` (parsed; its process settings compiled, the snapshot's sections not
    /// checked before) over fresh services.
    fn compile(toml: &str) -> Result<Snapshot, SnapshotError> {
        let config = config::parse(toml).expect("test config parses");
        let mut issues = Issues::default();
        let process = crate::setup::ProcessSettings::compile(&config, &mut issues)
            .expect("test process settings compile");
        let services = crate::server::services(&process).expect("in-process services");
        Snapshot::compile(config, None, &services)
    }

    /// The problems `toml` is refused with, as `path: reason`.
    fn compile_issues(toml: &str) -> Vec<String> {
        match compile(toml) {
            Ok(_) => panic!("the config compiled"),
            Err(SnapshotError::Invalid(issues)) => issues.iter().map(Issue::to_string).collect(),
            Err(e) => panic!("not refused with issues: {e:?}"),
        }
    }

    #[test]
    fn an_unusable_jwt_key_is_an_issue_at_its_field_path_once() {
        let found = compile_issues(&format!(
            "{UPSTREAM}\n[[routes]]\nname = \"r\"\nupstream = \"api\"\n\n[auth.jwt]\n\
             [[auth.jwt.keys]]\nalgorithm = \"RS256\"\npublic_key_file = \"/nonexistent/key.pem\"\n"
        ));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("auth.jwt.keys[0].public_key_file: cannot read"),
            "{found:#?}"
        );
        assert!(!found[0].contains("auth.jwt: auth.jwt"), "{found:#?}");
    }

    #[test]
    fn a_rate_limit_rule_that_cannot_compile_is_an_issue_at_its_path() {
        let found = compile_issues(&format!(
            "{UPSTREAM}\n[[routes]]\nname = \"first\"\nupstream = \"api\"\n\n\
             [[routes]]\nname = \"second\"\nupstream = \"api\"\n\
             [[routes.rate_limits]]\nname = \"per-x\"\nby = \"bogus\"\nlimit = 5\nwindow = \"1s\"\n"
        ));
        assert_eq!(
            found,
            [
                "routes[1].rate_limits[0].by: \"bogus\": use \"ip\", \"consumer\", \"route\", \
              \"header:<name>\" or \"claim:<name>\""
            ]
        );
    }

    #[test]
    fn a_declared_api_key_without_a_value_is_an_issue_at_its_index() {
        let mut first = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut first, b"pc_4f1b0c9e2d7a8b3c6e5f1a2b3c4d5e6f")
            .expect("write key");
        let found = compile_issues(&format!(
            "{UPSTREAM}\n[[routes]]\nname = \"r\"\nupstream = \"api\"\n\n[auth.api_key]\n\
             [[auth.api_key.keys]]\nid = \"first\"\nconsumer = \"a\"\nkey_file = {:?}\n\
             [[auth.api_key.keys]]\nid = \"second\"\nconsumer = \"b\"\n",
            first.path().display().to_string()
        ));
        assert_eq!(
            found,
            ["auth.api_key.keys[1]: give exactly one of key_env or key_file"]
        );
    }

    #[test]
    fn an_invalid_api_key_header_is_an_issue_at_its_field() {
        let found = compile_issues(&format!(
            "{UPSTREAM}\n[[routes]]\nname = \"r\"\nupstream = \"api\"\n\n[auth.api_key]\n\
             header = \"not a header\"\n"
        ));
        assert_eq!(
            found,
            ["auth.api_key.header: \"not a header\" is not a valid header name"]
        );
    }

    #[test]
    fn ipv4_mapped_peers_are_trusted_by_their_ipv4_network() {
        let rt = compile(&format!(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n{UPSTREAM}\n\
             [[routes]]\nname = \"r\"\nupstream = \"api\"\n"
        ))
        .expect("compiles");
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        assert!(rt.is_trusted(ip("10.0.0.5")));
        assert!(rt.is_trusted(ip("::ffff:10.0.0.5")), "mapped load balancer");
        assert!(!rt.is_trusted(ip("::ffff:192.0.2.1")));
        assert!(
            !rt.is_trusted(ip("::a00:5")),
            "IPv4-compatible is not mapped"
        );
    }
}
