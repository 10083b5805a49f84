//! The compiled, immutable form of a config that requests run against.
//!
//! A request loads the current `Snapshot` once (one `ArcSwap` load) and uses it to the end, so
//! a reload never changes the rules under a request in flight. Pools whose upstream config did
//! not change are carried into the new snapshot with their health state and connections. The
//! handle that compiles a new snapshot on reload and swaps it into [`Live`] is `crate::reload`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;

use crate::auth::settings::{AuthSettings, CompiledAuth};
use crate::auth::{AuthShared, Authenticator, KeyError, RouteAuth};
use crate::config::{
    self, AuthConfig, AuthMethod, Config, Dur, HeaderRules, Issue, Issues, Lenient, RetryOn,
    RouteConfig, ServerConfig,
};
use crate::observe::{Metrics, Redactor, RouteMetrics};
use crate::proxy::canonical::route_path_issues;
use crate::proxy::forward::SpoofGuard;
use crate::proxy::pool::{compile_pools, Pool, PoolPeer, Pools};
use crate::proxy::router::Router;
use crate::ratelimit::{ClaimHeader, Limiter, PolicySettings, RoutePolicy};

/// A route, compiled: everything the hot path needs, pre-parsed.
pub(crate) struct Route {
    /// Route name (metrics label, log field).
    pub(crate) name: String,
    /// The pool requests are sent to.
    pub(crate) pool: Arc<Pool>,
    /// Remove the matched prefix before proxying.
    pub(crate) strip_prefix: bool,
    /// Send the client's Host upstream.
    pub(crate) preserve_host: bool,
    /// Request headers to set.
    pub(crate) request_add: Vec<(HeaderName, HeaderValue)>,
    /// Request headers to remove.
    pub(crate) request_remove: Vec<HeaderName>,
    /// Response headers to set.
    pub(crate) response_add: Vec<(HeaderName, HeaderValue)>,
    /// Response headers to remove.
    pub(crate) response_remove: Vec<HeaderName>,
    /// Per-route timeout overrides (None: the pool's).
    pub(crate) connect_timeout: Option<Duration>,
    /// See `connect_timeout`.
    pub(crate) read_timeout: Option<Duration>,
    /// See `connect_timeout`.
    pub(crate) write_timeout: Option<Duration>,
    /// Extra attempts after a retryable failure.
    pub(crate) retries: usize,
    /// Retry when the connection could not be made.
    pub(crate) retry_connect_failure: bool,
    /// Retry idempotent requests that failed after being sent.
    pub(crate) retry_upstream_error: bool,
    /// Latency histograms of this route, resolved once.
    pub(crate) metrics: RouteMetrics,
    /// Authentication the route requires.
    pub(crate) auth: RouteAuth,
    /// Rate limits of the route.
    pub(crate) rate_limit: RoutePolicy,
}

// === impl Route ===

impl Route {
    /// The peer to connect to for `chosen`, with this route's timeout overrides.
    pub(crate) fn peer(&self, chosen: &PoolPeer) -> HttpPeer {
        let mut peer = chosen.peer.clone();
        if let Some(t) = self.connect_timeout {
            peer.options.connection_timeout = Some(t);
        }
        if let Some(t) = self.read_timeout {
            peer.options.read_timeout = Some(t);
        }
        if let Some(t) = self.write_timeout {
            peer.options.write_timeout = Some(t);
        }
        peer
    }

    /// The Host to send upstream, or `None` to keep the client's. An upstream's `host_header`
    /// wins over `preserve_host`: it names what the peers serve.
    pub(crate) fn upstream_host(&self, peer_host: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.pool.host_header {
            Some(h) => Some(h.clone()),
            None if self.preserve_host => None,
            None => peer_host.cloned(),
        }
    }

    /// Whether a failed connection is tried again: the route retries connect failures, has
    /// attempts left, and another healthy peer exists. With no other healthy peer a retry
    /// could only fail as "no healthy upstream" and hide the real failure (refused, timed
    /// out) from the client.
    pub(crate) fn retries_connect_failure(&self, tried: &[SocketAddr]) -> bool {
        self.retry_connect_failure
            && tried.len() <= self.retries
            && self.pool.has_untried_healthy(tried)
    }

    /// Whether a request that failed after being sent is tried again (the caller knows it is
    /// safe to resend).
    pub(crate) fn retries_upstream_error(&self, attempts: usize) -> bool {
        self.retry_upstream_error && attempts <= self.retries
    }

    /// Applies the route's request header rules (removals first) to the upstream request.
    pub(crate) fn rewrite_request_headers(
        &self,
        upstream: &mut RequestHeader,
    ) -> pingora::Result<()> {
        for name in &self.request_remove {
            upstream.remove_header(name);
        }
        for (name, value) in &self.request_add {
            upstream.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    }

    /// Applies the route's response header rules (removals first) to the response.
    pub(crate) fn rewrite_response_headers(
        &self,
        resp: &mut ResponseHeader,
    ) -> pingora::Result<()> {
        for name in &self.response_remove {
            resp.remove_header(name);
        }
        for (name, value) in &self.response_add {
            resp.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    }
}

/// The snapshot in force and the services it runs on: all the proxy reads per request. The
/// reload handle (`crate::reload`) compiles a new snapshot and [`Live::replace`]s this one.
pub(crate) struct Live {
    current: ArcSwap<Snapshot>,
    services: Services,
}

impl Live {
    /// `snapshot` in force over `services`.
    pub(crate) fn new(snapshot: Snapshot, services: Services) -> Live {
        Live {
            current: ArcSwap::from_pointee(snapshot),
            services,
        }
    }

    /// The snapshot in force now (one `ArcSwap` load).
    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The process-wide services.
    pub(crate) fn services(&self) -> &Services {
        &self.services
    }

    /// Puts `snapshot` in force; requests in flight keep the one they loaded.
    pub(crate) fn replace(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }
}

/// Process-wide services that outlive any one config: metrics, store, auth cache.
#[derive(Clone)]
pub(crate) struct Services {
    /// Prometheus metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Store, decision cache and auth metrics.
    pub(crate) auth: Arc<AuthShared>,
    /// Rate-limit counters, breaker and metrics.
    pub(crate) limiter: Arc<Limiter>,
}

/// The compiled config that requests run against.
pub(crate) struct Snapshot {
    /// The model this snapshot was compiled from.
    pub(crate) config: Config,
    /// The routing table; indices point into `routes`.
    pub(crate) router: Router,
    /// Compiled routes; a request holds its own by reference count, not by index.
    pub(crate) routes: Vec<Arc<Route>>,
    /// Pools by upstream name.
    pub(crate) pools: HashMap<String, Arc<Pool>>,
    /// Peers whose forwarding headers are believed.
    pub(crate) trusted_proxies: Vec<IpNet>,
    /// Largest declared request body accepted.
    pub(crate) max_body_size: u64,
    /// Idle keep-alive timeout for client connections, in whole seconds (at least 1).
    pub(crate) keepalive_secs: u64,
    /// What the access log may show.
    pub(crate) redactor: Redactor,
    /// Authentication as configured.
    pub(crate) auth: Authenticator,
    /// Request headers clients may not set (identity, forwarding), folded once here.
    pub(crate) spoof_guard: SpoofGuard,
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
        Snapshot::compile_reporting(config, previous, services).map_err(SnapshotError::Invalid)
    }

    /// Every issue compiling `config` finds: for reporting a file that has already failed
    /// other checks.
    pub(crate) fn issues(config: Config, services: &Services) -> Vec<Issue> {
        Snapshot::compile_reporting(config, None, services)
            .err()
            .unwrap_or_default()
    }

    fn compile_reporting(
        config: Config,
        previous: Option<&Snapshot>,
        services: &Services,
    ) -> Result<Snapshot, Vec<Issue>> {
        let mut issues = Issues::default();
        let Features { auth, policies } =
            Features::compile(&config, previous, services, &mut issues);
        let pools = compile_pools(&config.upstreams, previous.map(|p| &p.pools), &mut issues);
        let clients = ClientRules::compile(&config.server, &mut issues);
        let redactor = Redactor::compile(&config.log, &config.auth, &mut issues);
        let router = Router::compile(&config.routes, &mut issues);
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut names = HashSet::new();
        for ((index, r), rate_limit) in config.routes.iter().enumerate().zip(policies) {
            report_route_name(index, r, &mut names, &mut issues);
            let compiled =
                compile_route(index, r, rate_limit, &pools, &config, services, &mut issues);
            routes.extend(compiled.map(Arc::new));
        }
        issues.extend(route_path_issues(&config));
        let (Some(clients), Some(redactor), Some(router), Some(auth), true) =
            (clients, redactor, router, auth, issues.is_empty())
        else {
            return Err(issues.into_vec());
        };
        let spoof_guard = SpoofGuard::new(auth.claim_headers());
        Ok(Snapshot {
            router,
            routes,
            pools: pools.by_name,
            trusted_proxies: clients.trusted_proxies,
            max_body_size: clients.max_body_size,
            keepalive_secs: clients.keepalive_secs,
            redactor,
            auth,
            spoof_guard,
            config,
        })
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
    /// `[auth]` (but its cache, a process setting); `None` when it had problems.
    auth: Option<Authenticator>,
    /// The rate limits of each route, in `routes` order; `None` for a route whose rules had
    /// problems.
    policies: Vec<Option<RoutePolicy>>,
}

impl Features {
    /// Compiles `[auth]`, `[rate_limit]` and every route's rate limits, each problem into
    /// `issues`. An unchanged `[auth.jwt]` keeps `previous`'s JWKS
    /// client.
    fn compile(
        config: &Config,
        previous: Option<&Snapshot>,
        services: &Services,
        issues: &mut Issues,
    ) -> Features {
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
        Features {
            auth: settings.map(|s| s.into_authenticator(&services.auth)),
            policies,
        }
    }
}

/// Stores the config-declared keys of `new` and purges those of `old` it no longer has
/// (removed, or their value rotated): the old key stops working when the reload returns, not
/// when its record expires. Called only once `new` compiled, so a failed reload stores nothing.
pub(crate) fn install_static_keys(
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

/// The reloadable `[server]` settings about clients: whom to believe, what to accept.
struct ClientRules {
    trusted_proxies: Vec<IpNet>,
    max_body_size: u64,
    keepalive_secs: u64,
}

impl ClientRules {
    fn compile(s: &ServerConfig, issues: &mut Issues) -> Option<ClientRules> {
        let keepalive = issues.positive("server.keepalive_timeout", &s.keepalive_timeout);
        let trusted_proxies: Vec<Option<IpNet>> = s
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, net)| issues.value(format!("server.trusted_proxies[{i}]"), net))
            .collect();
        let max_body_size = issues.value("server.max_body_size", &s.max_body_size);
        Some(ClientRules {
            trusted_proxies: trusted_proxies.into_iter().collect::<Option<_>>()?,
            max_body_size: max_body_size?.0,
            // Pingora takes whole seconds; a sub-second timeout still keeps a connection open.
            keepalive_secs: keepalive?.as_secs_f64().ceil().max(1.0) as u64,
        })
    }
}

/// Reports an empty or repeated route name at `routes[i].name`.
fn report_route_name(
    index: usize,
    r: &RouteConfig,
    names: &mut HashSet<String>,
    issues: &mut Issues,
) {
    let path = format!("routes[{index}].name");
    if r.name.trim().is_empty() {
        issues.push(path, "must not be empty");
    } else if !names.insert(r.name.clone()) {
        issues.push(path, format!("route name {:?} is used twice", r.name));
    }
}

/// Compiles the route at `routes[index]`: its upstream, header rules, timeouts, retries and
/// auth cross-checks report into `issues` (`Ok(None)` after any problem); its match is the
/// router's; its rate limits were compiled by ratelimit (`None` when they had problems).
fn compile_route(
    index: usize,
    r: &RouteConfig,
    rate_limit: Option<RoutePolicy>,
    pools: &Pools,
    config: &Config,
    services: &Services,
    issues: &mut Issues,
) -> Option<Route> {
    let at = format!("routes[{index}]");
    let before = issues.len();
    if !pools.declared.contains(&r.upstream) {
        issues.push(
            format!("{at}.upstream"),
            format!("no upstream named {:?}", r.upstream),
        );
    }
    let request =
        HeaderEdits::compile(&r.request_headers, &format!("{at}.request_headers"), issues);
    let response = HeaderEdits::compile(
        &r.response_headers,
        &format!("{at}.response_headers"),
        issues,
    );
    let mut timeout = |field: &str, d: &Option<Lenient<Dur>>| {
        d.as_ref()
            .and_then(|d| issues.positive(format!("{at}.{field}"), d))
    };
    let connect_timeout = timeout("connect_timeout", &r.connect_timeout);
    let read_timeout = timeout("read_timeout", &r.read_timeout);
    let write_timeout = timeout("write_timeout", &r.write_timeout);
    if r.retries > 10 {
        issues.push(format!("{at}.retries"), "at most 10");
    }
    report_route_auth(&at, r, &config.auth, issues);
    let metrics = &services.metrics;
    // An upstream that is declared but did not compile, and rate limits that did not, have
    // reported their own problems.
    let (Some(pool), Some(rate_limit), true) = (
        pools.by_name.get(&r.upstream),
        rate_limit,
        issues.len() == before,
    ) else {
        return None;
    };
    Some(Route {
        name: r.name.clone(),
        pool: pool.clone(),
        strip_prefix: r.strip_prefix,
        preserve_host: r.preserve_host,
        request_add: request.add,
        request_remove: request.remove,
        response_add: response.add,
        response_remove: response.remove,
        connect_timeout,
        read_timeout,
        write_timeout,
        retries: r.retries,
        retry_connect_failure: r.retry_on.contains(&RetryOn::ConnectFailure),
        retry_upstream_error: r.retry_on.contains(&RetryOn::UpstreamError),
        metrics: metrics.route_metrics(&r.name),
        auth: RouteAuth {
            methods: r.auth.clone(),
            required_scopes: r.required_scopes.clone(),
            forward_credentials: r.forward_credentials,
            on_store_error: r.auth_on_store_error,
        },
        rate_limit,
    })
}

/// A route's `auth` must name configured sections, and scopes need some `auth`.
fn report_route_auth(at: &str, r: &RouteConfig, auth: &AuthConfig, issues: &mut Issues) {
    for (j, m) in r.auth.iter().enumerate() {
        let missing = match m {
            AuthMethod::ApiKey => auth.api_key.is_none().then_some("[auth.api_key]"),
            AuthMethod::Jwt => auth.jwt.is_none().then_some("[auth.jwt]"),
        };
        if let Some(section) = missing {
            issues.push(
                format!("{at}.auth[{j}]"),
                format!("needs a {section} section"),
            );
        }
    }
    if r.auth.is_empty() && !r.required_scopes.is_empty() {
        issues.push(
            format!("{at}.required_scopes"),
            "scopes need `auth` on the route",
        );
    }
}

/// `request_headers` or `response_headers` of a route, compiled.
struct HeaderEdits {
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Compiles the rules at `at` (e.g. `routes[0].request_headers`); bad names and values are
    /// pushed into `issues` and left out.
    fn compile(rules: &HeaderRules, at: &str, issues: &mut Issues) -> HeaderEdits {
        let mut add = Vec::with_capacity(rules.add.len());
        for (name, value) in &rules.add {
            let parsed_name = HeaderName::from_bytes(name.as_bytes()).ok();
            if parsed_name.is_none() {
                issues.push(
                    format!("{at}.add"),
                    format!("{name:?} is not a valid header name"),
                );
            }
            let parsed_value = HeaderValue::from_str(value).ok();
            if parsed_value.is_none() {
                issues.push(format!("{at}.add.{name}"), "not a valid header value");
            }
            if let (Some(n), Some(v)) = (parsed_name, parsed_value) {
                add.push((n, v));
            }
        }
        let mut remove = Vec::with_capacity(rules.remove.len());
        for (j, name) in rules.remove.iter().enumerate() {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) => remove.push(n),
                Err(_) => issues.push(
                    format!("{at}.remove[{j}]"),
                    format!("{name:?} is not a valid header name"),
                ),
            }
        }
        HeaderEdits { add, remove }
    }
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
        let services = crate::setup::services(&process).expect("in-process services");
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
             [[routes]]\nname = \"second\"\npath = \"/second\"\nupstream = \"api\"\n\
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
