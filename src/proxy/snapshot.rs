//! The compiled, immutable form of a config that requests run against.
//!
//! A request loads the current `Snapshot` once (one `ArcSwap` load) and uses it to the end, so
//! a reload never changes the rules under a request in flight. Pools whose upstream config did
//! not change are carried into the new snapshot with their health state and connections. The
//! handle that swaps snapshots on reload is in `reload`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;

use crate::auth::jwt::{JwtSetupError, JwtVerifier};
use crate::auth::{
    ApiKeySource, AuthShared, Authenticator, KeyError, KeyHasher, KeyRecord, KeyStore, RouteAuth,
    StaticKey,
};
use crate::config::{
    self, read_secret, AuthConfig, AuthMethod, Config, Dur, HeaderRules, Issue, Issues, Lenient,
    RetryOn, RouteConfig, ServerConfig,
};
use crate::observe::{Metrics, Redactor, RouteMetrics};
use crate::proxy::canonical::route_path_issues;
use crate::proxy::forward::SpoofGuard;
use crate::proxy::pool::{compile_pools, Pool, PoolPeer, Pools};
use crate::proxy::router::Router;
use crate::ratelimit::{Limiter, RoutePolicy};
use crate::store::Store;

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
    /// A pool could not be built from settings that compiled.
    #[error(transparent)]
    Pool(#[from] crate::proxy::pool::PoolError),
    /// A secret could not be read.
    #[error(transparent)]
    Secret(#[from] crate::config::SecretError),
    /// A rate-limit rule of a route could not be compiled (validation prevents this).
    #[error("routes[{index}].rate_limits: route {route:?}: {reason}")]
    RateLimit {
        /// Position of the route in `routes`.
        index: usize,
        /// The route's name.
        route: String,
        /// What is wrong with the rule, naming it (`ratelimit` reports it as text).
        reason: String,
    },
    /// The JWT settings could not be used; the message names the field (`auth.jwt.…`).
    #[error(transparent)]
    Jwt(#[from] JwtSetupError),
    /// A config-declared API key has no value in its env variable or file.
    #[error("auth.api_key.keys[{index}]: key {id:?} has no value")]
    StaticKeyValue {
        /// Position of the key in `auth.api_key.keys`.
        index: usize,
        /// The key's id.
        id: String,
    },
    /// `auth.api_key.header` is not a header name (validation prevents this).
    #[error("auth.api_key.header: {source}")]
    ApiKeyHeader {
        /// Why the name is refused.
        source: http::header::InvalidHeaderName,
    },
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

/// Why a compile failed: the issues found, and an error that stopped a part.
struct Rejected {
    issues: Vec<Issue>,
    error: Option<SnapshotError>,
}

impl Rejected {
    fn by(error: SnapshotError, issues: &mut Issues) -> Rejected {
        Rejected {
            issues: std::mem::take(issues).into_vec(),
            error: Some(error),
        }
    }
}

// === impl Snapshot ===

impl Snapshot {
    /// Compiles the reloadable part of a config, reusing pools of `previous` whose config is
    /// unchanged; every problem found is returned as [`SnapshotError::Invalid`]. An error of a
    /// part that does not report issues yet (a rate-limit rule, auth) comes first: the checks
    /// of `setup` report those parts as issues before a snapshot is ever compiled for real.
    pub(crate) fn compile(
        config: Config,
        previous: Option<&Snapshot>,
        services: &Services,
    ) -> Result<Snapshot, SnapshotError> {
        Snapshot::compile_reporting(config, previous, services).map_err(|rejected| {
            rejected
                .error
                .unwrap_or(SnapshotError::Invalid(rejected.issues))
        })
    }

    /// Every issue compiling `config` finds, whatever else fails: for reporting a file that
    /// has already failed other checks.
    pub(crate) fn issues(config: Config, services: &Services) -> Vec<Issue> {
        match Snapshot::compile_reporting(config, None, services) {
            Ok(_) => Vec::new(),
            Err(rejected) => rejected.issues,
        }
    }

    fn compile_reporting(
        config: Config,
        previous: Option<&Snapshot>,
        services: &Services,
    ) -> Result<Snapshot, Rejected> {
        let mut issues = Issues::default();
        let pools = compile_pools(&config.upstreams, previous.map(|p| &p.pools), &mut issues)
            .map_err(|e| Rejected::by(e.into(), &mut issues))?;
        let clients = ClientRules::compile(&config.server, &mut issues);
        let redactor = Redactor::compile(&config.log, &config.auth, &mut issues);
        let router = Router::compile(&config.routes, &mut issues);
        let mut error = None;
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut names = HashSet::new();
        for (index, r) in config.routes.iter().enumerate() {
            report_route_name(index, r, &mut names, &mut issues);
            match compile_route(index, r, &pools, &config, services, &mut issues) {
                Ok(Some(route)) => routes.push(Arc::new(route)),
                Ok(None) => {}
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        issues.extend(route_path_issues(&config));
        let (Some(clients), Some(redactor), Some(router), None, true) =
            (clients, redactor, router, &error, issues.is_empty())
        else {
            return Err(Rejected {
                issues: issues.into_vec(),
                error,
            });
        };
        let auth = compile_auth(&config, &services.auth, previous)
            .map_err(|e| Rejected::by(e, &mut issues))?;
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

/// The API key store for a config's `[auth.api_key]`, if it has one.
pub(crate) fn key_store(
    config: &Config,
    store: &Arc<Store>,
) -> Result<Option<KeyStore>, SnapshotError> {
    let Some(k) = &config.auth.api_key else {
        return Ok(None);
    };
    let secret = read_secret(k.hash_secret_env.as_deref(), k.hash_secret_file.as_deref())?;
    let ttl = k
        .key_ttl
        .ok()
        .map_or(Duration::from_secs(365 * 86400), |d| d.0);
    Ok(Some(KeyStore::new(
        store.clone(),
        KeyHasher::new(secret.map(String::into_bytes)),
        ttl,
    )))
}

/// Builds the authenticator; config-declared keys are loaded here and put into the store by
/// [`install_static_keys`] once the whole config has compiled.
fn compile_auth(
    config: &Config,
    shared: &Arc<AuthShared>,
    previous: Option<&Snapshot>,
) -> Result<Authenticator, SnapshotError> {
    let jwt = match &config.auth.jwt {
        None => None,
        // Keys are read again on every reload (a rotated file counts even when the TOML is
        // unchanged); unchanged JWKS settings keep the client, its key set and its one loop.
        Some(j) => {
            let previous = previous.and_then(|p| p.auth.jwt()).map(Arc::as_ref);
            Some(Arc::new(JwtVerifier::replacing(j, previous)?))
        }
    };
    let claim_headers = config
        .auth
        .jwt
        .iter()
        .flat_map(|j| j.claims_to_headers.values())
        .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
        .collect();
    let (api_key, static_keys) = match compile_api_keys(config, shared)? {
        Some((source, keys, static_keys)) => (Some((source, keys)), static_keys),
        None => (None, Vec::new()),
    };
    Ok(
        Authenticator::new(shared.clone(), api_key, jwt, claim_headers)
            .with_static_keys(static_keys),
    )
}

/// The lifetime of API keys created without one (and of config-declared keys).
fn key_ttl(config: &Config) -> Duration {
    config
        .auth
        .api_key
        .as_ref()
        .and_then(|k| k.key_ttl.ok())
        .map_or(Duration::from_secs(365 * 86400), |d| d.0)
}

/// API-key settings, and the config-declared keys read from their env/file (not yet stored).
fn compile_api_keys(
    config: &Config,
    shared: &Arc<AuthShared>,
) -> Result<Option<(ApiKeySource, KeyStore, Vec<StaticKey>)>, SnapshotError> {
    let (Some(k), Some(keys)) = (&config.auth.api_key, key_store(config, shared.store())?) else {
        return Ok(None);
    };
    let ttl = key_ttl(config);
    let mut static_keys = Vec::with_capacity(k.keys.len());
    for (index, sk) in k.keys.iter().enumerate() {
        let Some(key) = read_secret(sk.key_env.as_deref(), sk.key_file.as_deref())? else {
            return Err(SnapshotError::StaticKeyValue {
                index,
                id: sk.id.clone(),
            });
        };
        let now = crate::principal::unix_now();
        let record = KeyRecord {
            id: sk.id.clone(),
            consumer: sk.consumer.clone(),
            plan: sk.plan.clone(),
            scopes: sk.scopes.clone(),
            labels: Default::default(),
            created_at: now,
            expires_at: now + ttl.as_secs(),
        };
        let hash = keys.hasher().hash(&key);
        static_keys.push(StaticKey { record, hash });
    }
    let source = ApiKeySource {
        header: HeaderName::from_bytes(k.header.as_bytes())
            .map_err(|source| SnapshotError::ApiKeyHeader { source })?,
        query_param: k.query_param.clone(),
    };
    Ok(Some((source, keys, static_keys)))
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
    // The in-process store answers without waiting; validation keeps static keys off Redis.
    let replaced = futures::FutureExt::now_or_never(shared.replace_static_keys(
        keys,
        old_keys,
        new_keys,
        key_ttl(&new.config),
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
/// router's. An error is a rate-limit rule that could not compile.
fn compile_route(
    index: usize,
    r: &RouteConfig,
    pools: &Pools,
    config: &Config,
    services: &Services,
    issues: &mut Issues,
) -> Result<Option<Route>, SnapshotError> {
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
    let claim_header = |claim: &str| {
        config
            .auth
            .jwt
            .as_ref()
            .and_then(|j| j.claims_to_headers.get(claim))
            .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
    };
    let rate_limit = RoutePolicy::compile(
        &r.name,
        &r.rate_limits,
        r.rate_limit_on_store_error,
        &config.rate_limit,
        services.auth.store(),
        services.limiter.metrics(),
        claim_header,
    )
    .map_err(|reason| SnapshotError::RateLimit {
        index,
        route: r.name.clone(),
        reason,
    })?;
    // An upstream that is declared but did not compile has reported its own problems.
    let (Some(pool), true) = (pools.by_name.get(&r.upstream), issues.len() == before) else {
        return Ok(None);
    };
    Ok(Some(Route {
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
    }))
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
    use std::error::Error as _;

    use super::*;

    const UPSTREAM: &str = r#"
[[upstreams]]
name = "api"
peers = [{ addr = "127.0.0.1:3000" }]
"#;

    /// Compiles `toml` (parsed, not validated: these are the cases validation normally stops
    /// first) over fresh services.
    fn compile(toml: &str) -> Result<Snapshot, SnapshotError> {
        let config = config::parse(toml).expect("test config parses");
        let services = crate::server::services(&config).expect("in-process services");
        Snapshot::compile(config, None, &services)
    }

    fn compile_error(toml: &str) -> SnapshotError {
        match compile(toml) {
            Ok(_) => panic!("the config compiled"),
            Err(e) => e,
        }
    }

    #[test]
    fn an_unusable_jwt_key_keeps_the_setup_error_and_its_field_path_once() {
        let e = compile_error(&format!(
            "{UPSTREAM}\n[[routes]]\nname = \"r\"\nupstream = \"api\"\n\n[auth.jwt]\n\
             [[auth.jwt.keys]]\nalgorithm = \"RS256\"\npublic_key_file = \"/nonexistent/key.pem\"\n"
        ));
        assert!(
            matches!(e, SnapshotError::Jwt(JwtSetupError::Key { index: 0, .. })),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(text.starts_with("auth.jwt.keys[0]: "), "{text}");
        assert!(!text.contains("auth.jwt: auth.jwt"), "{text}");
    }

    #[test]
    fn a_rate_limit_rule_that_cannot_compile_names_the_route_by_index_and_name() {
        let e = compile_error(&format!(
            "{UPSTREAM}\n[[routes]]\nname = \"first\"\nupstream = \"api\"\n\n\
             [[routes]]\nname = \"second\"\nupstream = \"api\"\n\
             [[routes.rate_limits]]\nname = \"per-x\"\nby = \"bogus\"\nlimit = 5\nwindow = \"1s\"\n"
        ));
        let SnapshotError::RateLimit {
            index,
            ref route,
            ref reason,
        } = e
        else {
            panic!("not a rate-limit error: {e:?}");
        };
        assert_eq!((index, route.as_str()), (1, "second"));
        assert!(reason.starts_with("rule \"per-x\": "), "{reason}");
        assert!(
            e.to_string()
                .starts_with("routes[1].rate_limits: route \"second\": rule \"per-x\": "),
            "{e}"
        );
    }

    #[test]
    fn a_declared_api_key_without_a_value_names_its_index_and_id() {
        let mut first = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut first, b"pc_first-key-value").expect("write key");
        let e = compile_error(&format!(
            "{UPSTREAM}\n[[routes]]\nname = \"r\"\nupstream = \"api\"\n\n[auth.api_key]\n\
             [[auth.api_key.keys]]\nid = \"first\"\nconsumer = \"a\"\nkey_file = {:?}\n\
             [[auth.api_key.keys]]\nid = \"second\"\nconsumer = \"b\"\n",
            first.path().display().to_string()
        ));
        assert!(
            matches!(&e, SnapshotError::StaticKeyValue { index: 1, id } if id == "second"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "auth.api_key.keys[1]: key \"second\" has no value"
        );
    }

    #[test]
    fn an_invalid_api_key_header_names_its_field_and_keeps_the_source() {
        let e = compile_error(&format!(
            "{UPSTREAM}\n[[routes]]\nname = \"r\"\nupstream = \"api\"\n\n[auth.api_key]\n\
             header = \"not a header\"\n"
        ));
        assert!(matches!(e, SnapshotError::ApiKeyHeader { .. }), "{e:?}");
        assert!(e.to_string().starts_with("auth.api_key.header: "), "{e}");
        assert!(
            e.source().is_some(),
            "the header error is not kept as source"
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
