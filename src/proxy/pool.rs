//! Upstream pools: peers, selection (weighted round robin or Ketama consistent hashing) and
//! active health checks, on top of `pingora-load-balancing`.
//!
//! [`compile_pools`] turns each `[[upstreams]]` entry into a pool in one pass, reporting every
//! problem of the entry with its path; nothing else judges an upstream's settings.
//!
//! Health checks are not run by Pingora's background service: pools are rebuilt on reload, so
//! `run_health_checks` walks the pools of whatever config is current and checks the ones
//! that are due. A pool whose config did not change is carried over on reload with its health.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use pingora::lb::discovery::Static;
use pingora::lb::health_check::{HealthCheck, HealthObserve, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::{Consistent, RoundRobin};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora::tls::x509::X509;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{HealthCheckConfig, HealthCheckKind, Issues, Selection, UpstreamConfig};

/// How many candidates selection looks at before giving up on finding a healthy, untried peer.
const MAX_SELECT_ITERATIONS: usize = 256;

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Hash(LoadBalancer<Consistent>),
}

/// A named pool of peers with its selection algorithm and health state.
pub(crate) struct Pool {
    /// The upstream's name from the config.
    pub(crate) name: String,
    /// The config the pool was built from; an equal config on reload reuses this pool.
    pub(crate) config: UpstreamConfig,
    balancer: Balancer,
    hash_key: Option<HashKey>,
    /// One ready-made peer per address, cloned per request (timeouts and TLS already set).
    peers: Vec<PoolPeer>,
    /// Host header for upstream requests when the route does not preserve the client's.
    pub(crate) host_header: Option<http::HeaderValue>,
    /// The `ca_file` certificates the peers verify against, as loaded.
    ca: Option<Arc<Box<[X509]>>>,
    health_interval: Option<Duration>,
    /// Milliseconds since `epoch` when the next health check is due.
    next_check_ms: AtomicU64,
    check_running: AtomicBool,
    epoch: Instant,
}

/// A peer of a pool, prepared once at config load.
pub(crate) struct PoolPeer {
    /// The peer's address.
    pub(crate) addr: SocketAddr,
    /// Connection settings, cloned for each request.
    pub(crate) peer: HttpPeer,
    /// `ip:port` as a Host header value, for routes that do not preserve the client's Host.
    pub(crate) host: http::HeaderValue,
}

/// What a consistent-hash pool hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// The request path (without query).
    Path,
    /// The value of a request header (lowercased name).
    Header(http::HeaderName),
}

/// Why `hash_key` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashKeyError {
    /// `header:<name>` with a name that is not a header name.
    #[error("{name:?} is not a valid header name")]
    HeaderName {
        /// The name after `header:`.
        name: String,
    },
    /// Neither of the known keys.
    #[error("{key:?} is not a hash key; use \"client_ip\", \"path\" or \"header:<name>\"")]
    Unknown {
        /// The key as written.
        key: String,
    },
}

impl HashKey {
    /// Parses "client_ip", "path" or "header:<name>".
    pub fn parse(s: &str) -> Result<HashKey, HashKeyError> {
        match s {
            "client_ip" => Ok(HashKey::ClientIp),
            "path" => Ok(HashKey::Path),
            _ => match s.strip_prefix("header:") {
                Some(name) => http::HeaderName::from_bytes(name.trim().as_bytes())
                    .map(HashKey::Header)
                    .map_err(|_| HashKeyError::HeaderName {
                        name: name.to_string(),
                    }),
                None => Err(HashKeyError::Unknown { key: s.to_string() }),
            },
        }
    }
}

/// Why a CA bundle (`ca_file`) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The file could not be read.
    #[error("cannot read {file:?}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not PEM certificates.
    #[error("{file:?} is not a PEM certificate bundle: {source}")]
    Pem {
        /// The file.
        file: String,
        /// What OpenSSL says.
        source: pingora::tls::error::ErrorStack,
    },
    /// The file is PEM but holds no certificate.
    #[error("{file:?} holds no certificate")]
    Empty {
        /// The file.
        file: String,
    },
}

/// The host name of a `Host` value: without its `:port`, and an IPv6 literal without its
/// brackets.
fn host_name_of(host: &str) -> String {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => host.to_string(),
    }
}

/// Reads a PEM bundle of CA certificates.
pub fn load_ca(file: &str) -> Result<Box<[X509]>, CaError> {
    let pem = std::fs::read(file).map_err(|source| CaError::Read {
        file: file.to_string(),
        source,
    })?;
    let certs = X509::stack_from_pem(&pem).map_err(|source| CaError::Pem {
        file: file.to_string(),
        source,
    })?;
    if certs.is_empty() {
        return Err(CaError::Empty {
            file: file.to_string(),
        });
    }
    Ok(certs.into_boxed_slice())
}

/// Whether two loaded CA bundles hold the same certificates, by their DER bytes.
fn same_certificates(a: Option<&[X509]>, b: Option<&[X509]>) -> bool {
    let der = |certs: &[X509]| -> Option<Vec<Vec<u8>>> {
        certs.iter().map(|c| c.to_der().ok()).collect()
    };
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => der(a).is_some_and(|a| der(b) == Some(a)),
        _ => false,
    }
}

/// Why a pool could not be built from settings that compiled (Pingora refused them).
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A peer could not become a load-balancing backend.
    #[error("upstream {name:?}: peer {addr}: {source}")]
    Backend {
        /// The upstream.
        name: String,
        /// The peer.
        addr: SocketAddr,
        /// Pingora's error.
        source: Box<pingora::Error>,
    },
    /// Static discovery failed to fill the selector.
    #[error("upstream {name:?}: {source}")]
    Discovery {
        /// The upstream.
        name: String,
        /// Pingora's error.
        source: Box<pingora::Error>,
    },
    /// Static discovery did not complete at once (it never waits).
    #[error("upstream {name:?}: static discovery did not complete")]
    DiscoveryPending {
        /// The upstream.
        name: String,
    },
}

/// An upstream's settings, compiled: every value parsed and checked.
struct PoolSpec {
    peers: Vec<(SocketAddr, usize)>,
    hash_key: Option<HashKey>,
    /// Server name for SNI and the certificate check: `sni`, else `host_header`, else empty.
    sni: String,
    ca: Option<Arc<Box<[X509]>>>,
    host_header: Option<http::HeaderValue>,
    connect_timeout: Duration,
    read_timeout: Duration,
    write_timeout: Duration,
    idle_timeout: Duration,
    health_check: Option<HealthSpec>,
}

/// `[upstreams.health_check]`, compiled.
struct HealthSpec {
    kind: HealthCheckKind,
    uri: http::Uri,
    interval: Duration,
    timeout: Duration,
    healthy_threshold: usize,
    unhealthy_threshold: usize,
}

// === impl Pool ===

impl Pool {
    /// Compiles the upstream found at `at` (e.g. `upstreams[2]`): every problem is pushed into
    /// `issues` with its path, and `Ok(None)` returned when there was one. Names are checked
    /// across upstreams by the caller.
    #[cfg(test)]
    pub(crate) fn compile(
        config: &UpstreamConfig,
        at: &str,
        issues: &mut Issues,
    ) -> Result<Option<Pool>, PoolError> {
        match PoolSpec::compile(config, at, issues) {
            Some(spec) => Pool::build(config, spec).map(Some),
            None => Ok(None),
        }
    }

    fn build(config: &UpstreamConfig, spec: PoolSpec) -> Result<Pool, PoolError> {
        let name = || config.name.clone();
        let mut set = BTreeSet::new();
        let mut peers = Vec::with_capacity(spec.peers.len());
        for &(addr, weight) in &spec.peers {
            let backend =
                Backend::new_with_weight(&addr.to_string(), weight).map_err(|source| {
                    PoolError::Backend {
                        name: name(),
                        addr,
                        source,
                    }
                })?;
            set.insert(backend);
            let mut peer = HttpPeer::new(addr, config.tls, spec.sni.clone());
            peer.options.connection_timeout = Some(spec.connect_timeout);
            peer.options.read_timeout = Some(spec.read_timeout);
            peer.options.write_timeout = Some(spec.write_timeout);
            peer.options.idle_timeout = Some(spec.idle_timeout);
            peer.options.verify_cert = config.verify_cert;
            peer.options.verify_hostname = config.verify_cert;
            peer.options.ca = spec.ca.clone();
            let host = http::HeaderValue::from_str(&addr.to_string())
                .expect("a socket address is a valid header value");
            peers.push(PoolPeer { addr, peer, host });
        }
        let mut backends = Backends::new(Static::new(set));
        if let Some(hc) = &spec.health_check {
            backends.set_health_check(health_check(config, hc, &spec));
        }
        let balancer = match config.selection {
            Selection::RoundRobin => Balancer::RoundRobin(LoadBalancer::from_backends(backends)),
            Selection::ConsistentHash => Balancer::Hash(LoadBalancer::from_backends(backends)),
        };
        // Static discovery resolves immediately; this fills the selector.
        let updated = match &balancer {
            Balancer::RoundRobin(lb) => lb.update().now_or_never(),
            Balancer::Hash(lb) => lb.update().now_or_never(),
        };
        match updated {
            Some(Ok(())) => {}
            Some(Err(source)) => {
                return Err(PoolError::Discovery {
                    name: name(),
                    source,
                })
            }
            None => return Err(PoolError::DiscoveryPending { name: name() }),
        }
        Ok(Pool {
            name: name(),
            config: config.clone(),
            balancer,
            hash_key: spec.hash_key,
            peers,
            host_header: spec.host_header,
            ca: spec.ca,
            health_interval: spec.health_check.as_ref().map(|hc| hc.interval),
            next_check_ms: AtomicU64::new(0),
            check_running: AtomicBool::new(false),
            epoch: Instant::now(),
        })
    }
    /// What consistent hashing keys on, if the pool hashes.
    pub(crate) fn hash_key(&self) -> Option<&HashKey> {
        self.hash_key.as_ref()
    }

    /// Picks a healthy peer not in `tried`; `None` when there is none.
    pub(crate) fn select(&self, key: &[u8], tried: &[SocketAddr]) -> Option<&PoolPeer> {
        let accept =
            |b: &Backend, healthy: bool| healthy && b.as_inet().is_some_and(|a| !tried.contains(a));
        let backend = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Balancer::Hash(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
        }?;
        let addr = backend.as_inet()?;
        self.peers.iter().find(|p| p.addr == *addr)
    }

    /// Whether some healthy peer is not in `tried`. Unlike `select`, this does not advance the
    /// round-robin position, so asking does not skew the rotation.
    pub(crate) fn has_untried_healthy(&self, tried: &[SocketAddr]) -> bool {
        let backends = self.backends();
        backends
            .get_backend()
            .iter()
            .any(|b| backends.ready(b) && b.as_inet().is_some_and(|a| !tried.contains(a)))
    }

    /// Each peer's address and whether it is currently healthy.
    pub(crate) fn peer_health(&self) -> Vec<(SocketAddr, bool)> {
        let backends = self.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| b.as_inet().map(|a| (*a, backends.ready(b))))
            .collect()
    }

    fn backends(&self) -> &Backends {
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Hash(lb) => lb.backends(),
        }
    }

    /// Runs one round of health checks if one is due and none is running.
    async fn check_if_due(self: Arc<Self>) {
        let Some(interval) = self.health_interval else {
            return;
        };
        let now = self.epoch.elapsed().as_millis() as u64;
        if now < self.next_check_ms.load(Ordering::Relaxed) {
            return;
        }
        if self.check_running.swap(true, Ordering::AcqRel) {
            return;
        }
        self.next_check_ms
            .store(now + interval.as_millis() as u64, Ordering::Relaxed);
        tokio::spawn(async move {
            self.backends().run_health_check(true).await;
            self.check_running.store(false, Ordering::Release);
        });
    }
}

/// The upstreams of a config, compiled.
pub(crate) struct Pools {
    /// Every declared name, valid upstream or not: routes are judged against what the file
    /// declares, and an upstream that did not compile has reported its own problems.
    pub(crate) declared: HashSet<String>,
    /// The pools that compiled, by name.
    pub(crate) by_name: HashMap<String, Arc<Pool>>,
}

/// Compiles every `[[upstreams]]` entry at `upstreams[i]`, reusing a pool of `previous` whose
/// config is unchanged (it keeps its health state and connections). A pool is built only
/// once its upstream compiled.
pub(crate) fn compile_pools(
    upstreams: &[UpstreamConfig],
    previous: Option<&HashMap<String, Arc<Pool>>>,
    issues: &mut Issues,
) -> Pools {
    let mut names = HashSet::new();
    let mut pools = HashMap::new();
    for (i, u) in upstreams.iter().enumerate() {
        let at = format!("upstreams[{i}]");
        if u.name.trim().is_empty() {
            issues.push(format!("{at}.name"), "must not be empty");
        } else if !names.insert(u.name.clone()) {
            issues.push(
                format!("{at}.name"),
                format!("upstream name {:?} is used twice", u.name),
            );
        }
        // Compiled even when the pool is reused: its files (`ca_file`) must still be there.
        let Some(spec) = PoolSpec::compile(u, &at, issues) else {
            continue;
        };
        // The config text alone is not enough: a `ca_file` rotated in place must take effect.
        let reused = previous
            .and_then(|p| p.get(&u.name))
            .filter(|p| {
                p.config == *u
                    && same_certificates(
                        p.ca.as_deref().map(|c| &c[..]),
                        spec.ca.as_deref().map(|c| &c[..]),
                    )
            })
            .cloned();
        let pool = match reused {
            Some(p) => p,
            None => match Pool::build(u, spec) {
                Ok(p) => Arc::new(p),
                // Pingora refused settings that compiled: one more problem of this upstream,
                // reported beside the others.
                Err(e) => {
                    issues.push(at, e.to_string());
                    continue;
                }
            },
        };
        pools.entry(u.name.clone()).or_insert(pool);
    }
    Pools {
        declared: names,
        by_name: pools,
    }
}

// === impl PoolSpec ===

impl PoolSpec {
    /// Checks and parses every setting of the upstream at `at`; `None` after any problem.
    fn compile(config: &UpstreamConfig, at: &str, issues: &mut Issues) -> Option<PoolSpec> {
        let before = issues.len();
        let peers = compile_peers(config, at, issues);
        let hash_key = match config.selection {
            Selection::ConsistentHash => match HashKey::parse(&config.hash_key) {
                Ok(key) => Some(key),
                Err(e) => {
                    issues.push(format!("{at}.hash_key"), e.to_string());
                    None
                }
            },
            Selection::RoundRobin => None,
        };
        if config.tls && config.sni.is_none() && config.host_header.is_none() && config.verify_cert
        {
            issues.push(
                format!("{at}.sni"),
                "an HTTPS upstream with certificate verification needs `sni` (or `host_header`) \
                 to check the certificate against",
            );
        }
        let ca = config.ca_file.as_deref().and_then(|file| {
            if !config.tls {
                issues.push(format!("{at}.ca_file"), "only applies with tls = true");
            }
            match load_ca(file) {
                Ok(certs) => Some(Arc::new(certs)),
                Err(e) => {
                    issues.push(format!("{at}.ca_file"), e.to_string());
                    None
                }
            }
        });
        let host_header = config.host_header.as_deref().and_then(|h| {
            let value = http::HeaderValue::from_str(h).ok();
            if value.is_none() {
                issues.push(
                    format!("{at}.host_header"),
                    format!("{h:?} is not a valid header value"),
                );
            }
            value
        });
        let connect_timeout =
            issues.positive(format!("{at}.connect_timeout"), &config.connect_timeout);
        let read_timeout = issues.positive(format!("{at}.read_timeout"), &config.read_timeout);
        let write_timeout = issues.positive(format!("{at}.write_timeout"), &config.write_timeout);
        let idle_timeout = issues.positive(format!("{at}.idle_timeout"), &config.idle_timeout);
        let health_check = config
            .health_check
            .as_ref()
            .map(|hc| HealthSpec::compile(hc, &format!("{at}.health_check"), issues));
        if issues.len() > before {
            return None;
        }
        Some(PoolSpec {
            peers,
            hash_key,
            // A `host_header` of `name:port` names the host `name`: SNI and the certificate
            // check take the name alone, or every handshake would fail.
            sni: config
                .sni
                .clone()
                .or_else(|| config.host_header.as_deref().map(host_name_of))
                .unwrap_or_default(),
            ca,
            host_header,
            connect_timeout: connect_timeout?,
            read_timeout: read_timeout?,
            write_timeout: write_timeout?,
            idle_timeout: idle_timeout?,
            health_check: match health_check {
                Some(hc) => Some(hc?),
                None => None,
            },
        })
    }
}

/// The peers' addresses and weights; each address at most once.
fn compile_peers(
    config: &UpstreamConfig,
    at: &str,
    issues: &mut Issues,
) -> Vec<(SocketAddr, usize)> {
    if config.peers.is_empty() {
        issues.push(format!("{at}.peers"), "needs at least one peer");
    }
    let mut seen = HashSet::new();
    let mut peers = Vec::with_capacity(config.peers.len());
    for (j, p) in config.peers.iter().enumerate() {
        let path = format!("{at}.peers[{j}].addr");
        let addr = issues.value(path.clone(), &p.addr);
        if let Some(addr) = addr {
            if !seen.insert(addr) {
                issues.push(path, format!("peer {:?} is listed twice", p.addr.raw()));
            }
        }
        let weight_ok = (1..=1000).contains(&p.weight);
        if !weight_ok {
            issues.push(
                format!("{at}.peers[{j}].weight"),
                "must be between 1 and 1000",
            );
        }
        if let (Some(addr), true) = (addr, weight_ok) {
            peers.push((addr, p.weight));
        }
    }
    peers
}

// === impl HealthSpec ===

impl HealthSpec {
    fn compile(hc: &HealthCheckConfig, at: &str, issues: &mut Issues) -> Option<HealthSpec> {
        let before = issues.len();
        let interval = issues.positive(format!("{at}.interval"), &hc.interval);
        let timeout = issues.positive(format!("{at}.timeout"), &hc.timeout);
        if !hc.path.starts_with('/') {
            issues.push(format!("{at}.path"), "must start with '/'");
        }
        for (field, n) in [
            ("healthy_threshold", hc.healthy_threshold),
            ("unhealthy_threshold", hc.unhealthy_threshold),
        ] {
            if n == 0 || n > 100 {
                issues.push(format!("{at}.{field}"), "must be between 1 and 100");
            }
        }
        if issues.len() > before {
            return None;
        }
        Some(HealthSpec {
            kind: hc.kind,
            // A path that starts with '/' but is no URI path (a space in it) has always been
            // checked as "/"; refusing it now would reject configs that load today.
            uri: hc
                .path
                .parse()
                .unwrap_or_else(|_| http::Uri::from_static("/")),
            interval: interval?,
            timeout: timeout?,
            healthy_threshold: hc.healthy_threshold,
            unhealthy_threshold: hc.unhealthy_threshold,
        })
    }
}

fn health_check(
    config: &UpstreamConfig,
    hc: &HealthSpec,
    spec: &PoolSpec,
) -> Box<dyn HealthCheck + Send + Sync> {
    let timeout = hc.timeout;
    let sni = spec.sni.as_str();
    let observer = Box::new(HealthLogger {
        upstream: config.name.clone(),
    });
    match hc.kind {
        HealthCheckKind::Tcp => {
            let mut check = TcpHealthCheck::new();
            check.consecutive_success = hc.healthy_threshold;
            check.consecutive_failure = hc.unhealthy_threshold;
            check.peer_template.options.connection_timeout = Some(timeout);
            check.health_changed_callback = Some(observer);
            check
        }
        HealthCheckKind::Http => {
            let host = config.host_header.as_deref().unwrap_or(if sni.is_empty() {
                "localhost"
            } else {
                sni
            });
            let mut check = HttpHealthCheck::new(host, config.tls);
            // Certificates are checked against the same name as proxied traffic uses.
            check.peer_template.sni = sni.to_string();
            check.consecutive_success = hc.healthy_threshold;
            check.consecutive_failure = hc.unhealthy_threshold;
            check.peer_template.options.connection_timeout = Some(timeout);
            check.peer_template.options.read_timeout = Some(timeout);
            check.peer_template.options.verify_cert = config.verify_cert;
            check.peer_template.options.verify_hostname = config.verify_cert;
            check.peer_template.options.ca = spec.ca.clone();
            check.req.set_uri(hc.uri.clone());
            check.validator = Some(Box::new(|resp| {
                if resp.status.is_success() {
                    Ok(())
                } else {
                    pingora::Error::e_explain(
                        pingora::ErrorType::Custom("health check status"),
                        format!("status {}", resp.status),
                    )
                }
            }));
            check.health_changed_callback = Some(observer);
            Box::new(check)
        }
    }
}

/// Logs every peer that is ejected or restored, so operators see flapping without metrics.
struct HealthLogger {
    upstream: String,
}

#[async_trait]
impl HealthObserve for HealthLogger {
    async fn observe(&self, target: &Backend, healthy: bool) {
        if healthy {
            log::info!(
                "upstream {:?}: peer {} is healthy again, restored",
                self.upstream,
                target.addr
            );
        } else {
            log::warn!(
                "upstream {:?}: peer {} failed its health checks, ejected",
                self.upstream,
                target.addr
            );
        }
    }
}

/// Checks every due pool of the current config, forever; meant for a background task.
pub(crate) async fn run_health_checks(pools: impl Fn() -> Vec<Arc<Pool>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        for pool in pools() {
            pool.check_if_due().await;
        }
    }
}

/// The bytes a consistent-hash pool hashes for a request: its path, a header's value, or the
/// real client's address (in `buf`, so nothing is allocated); empty when the value is absent.
pub(crate) fn hash_input<'a>(
    key: &HashKey,
    req: &'a pingora::http::RequestHeader,
    client_ip: Option<std::net::IpAddr>,
    buf: &'a mut [u8; 16],
) -> &'a [u8] {
    match key {
        HashKey::Path => req.uri.path().as_bytes(),
        HashKey::Header(name) => req.headers.get(name).map_or(&[][..], |v| v.as_bytes()),
        HashKey::ClientIp => match client_ip {
            Some(std::net::IpAddr::V4(v4)) => {
                buf[..4].copy_from_slice(&v4.octets());
                &buf[..4]
            }
            Some(std::net::IpAddr::V6(v6)) => {
                buf.copy_from_slice(&v6.octets());
                &buf[..]
            }
            None => &[],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(extra: &str) -> UpstreamConfig {
        let toml = format!("name = \"u\"\npeers = [{{ addr = \"127.0.0.1:3000\" }}]\n{extra}");
        toml::from_str(&toml).expect("test upstream parses")
    }

    fn compile(u: &UpstreamConfig) -> (Option<Pool>, Vec<String>) {
        let mut issues = Issues::default();
        let pool = Pool::compile(u, "upstreams[0]", &mut issues).expect("pingora builds it");
        let found = issues.into_vec().iter().map(|i| i.to_string()).collect();
        (pool, found)
    }

    #[test]
    fn timeouts_and_the_host_header_are_compiled_into_the_peers() {
        let (pool, found) = compile(&upstream(
            "connect_timeout = \"250ms\"\nread_timeout = \"2s\"\nhost_header = \"api.internal\"\n",
        ));
        assert_eq!(found, Vec::<String>::new());
        let pool = pool.expect("compiles");
        let peer = pool.select(b"", &[]).expect("a healthy peer");
        assert_eq!(
            peer.peer.options.connection_timeout,
            Some(Duration::from_millis(250))
        );
        assert_eq!(peer.peer.options.read_timeout, Some(Duration::from_secs(2)));
        assert_eq!(
            peer.peer.options.write_timeout,
            Some(Duration::from_secs(30)),
            "the model's default"
        );
        assert_eq!(
            pool.host_header.as_ref().map(|h| h.as_bytes()),
            Some(&b"api.internal"[..])
        );
    }

    #[test]
    fn a_missing_ca_file_is_one_issue_with_the_os_error() {
        let (pool, found) = compile(&upstream(
            "tls = true\nsni = \"api.internal\"\nca_file = \"/nonexistent/ca.pem\"\n",
        ));
        assert!(pool.is_none());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("upstreams[0].ca_file: cannot read \"/nonexistent/ca.pem\"")
                && found[0].contains("No such file"),
            "{found:#?}"
        );
    }

    /// A fresh self-signed certificate in PEM, made by the `openssl` command.
    fn certificate(dir: &std::path::Path, name: &str) -> Vec<u8> {
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "1"])
            .args(["-subj", &format!("/CN={name}"), "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command is needed (Debian package openssl)");
        assert!(status.success(), "openssl req failed");
        std::fs::read(&cert).expect("certificate written")
    }

    #[test]
    fn a_ca_file_rotated_in_place_rebuilds_the_pool_and_an_unchanged_one_keeps_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, certificate(dir.path(), "one")).expect("write ca");
        let u = upstream(&format!(
            "tls = true\nsni = \"api.internal\"\nca_file = {ca:?}\n"
        ));
        let mut issues = Issues::default();
        let first = compile_pools(std::slice::from_ref(&u), None, &mut issues);
        let same = compile_pools(std::slice::from_ref(&u), Some(&first.by_name), &mut issues);
        std::fs::write(&ca, certificate(dir.path(), "two")).expect("rotate ca");
        let rotated = compile_pools(std::slice::from_ref(&u), Some(&same.by_name), &mut issues);
        assert!(issues.is_empty(), "{:?}", issues.into_vec());
        assert!(Arc::ptr_eq(&first.by_name["u"], &same.by_name["u"]));
        assert!(!Arc::ptr_eq(&same.by_name["u"], &rotated.by_name["u"]));
    }

    #[test]
    fn sni_taken_from_host_header_leaves_out_the_port() {
        assert_eq!(host_name_of("api.example.com:8443"), "api.example.com");
        assert_eq!(host_name_of("api.example.com"), "api.example.com");
        assert_eq!(host_name_of("[2001:db8::1]:443"), "2001:db8::1");
    }

    #[test]
    fn hash_keys_parse_or_say_what_is_accepted() {
        assert_eq!(HashKey::parse("path"), Ok(HashKey::Path));
        assert_eq!(
            HashKey::parse("header:X-Account"),
            Ok(HashKey::Header(http::HeaderName::from_static("x-account")))
        );
        let e = HashKey::parse("cookie").expect_err("not a key");
        assert!(e.to_string().contains("\"client_ip\", \"path\""), "{e}");
        let (pool, found) = compile(&upstream(
            "selection = \"consistent_hash\"\nhash_key = \"header:bad name\"\n",
        ));
        assert!(pool.is_none());
        assert_eq!(
            found,
            ["upstreams[0].hash_key: \"bad name\" is not a valid header name"]
        );
    }

    #[test]
    fn a_repeated_name_is_reported_and_the_first_pool_kept() {
        let mut issues = Issues::default();
        let (a, mut b) = (upstream(""), upstream(""));
        b.peers[0].weight = 2;
        let pools = compile_pools(&[a, b], None, &mut issues);
        let found: Vec<String> = issues.into_vec().iter().map(|i| i.to_string()).collect();
        assert_eq!(
            found,
            ["upstreams[1].name: upstream name \"u\" is used twice"]
        );
        assert!(pools.declared.contains("u"));
        assert_eq!(pools.by_name["u"].config.peers[0].weight, 1);
    }

    #[test]
    fn an_unchanged_upstream_keeps_its_pool_across_compiles() {
        let u = upstream("");
        let mut issues = Issues::default();
        let first = compile_pools(std::slice::from_ref(&u), None, &mut issues);
        let second = compile_pools(&[u], Some(&first.by_name), &mut issues);
        assert!(issues.is_empty());
        assert!(Arc::ptr_eq(&first.by_name["u"], &second.by_name["u"]));
    }
}
