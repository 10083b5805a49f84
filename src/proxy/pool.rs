//! Upstream pools: peers, selection (weighted round robin or Ketama consistent hashing) and
//! active health checks, on top of `pingora-load-balancing`.
//!
//! Health checks are not run by Pingora's background service: pools are rebuilt on reload, so
//! `run_health_checks` walks the pools of whatever config is current and checks the ones
//! that are due. A pool whose config did not change is carried over on reload with its health.

use std::collections::BTreeSet;
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
use pingora::upstreams::peer::HttpPeer;

use crate::config::{HashKey, HealthCheckKind, Selection, UpstreamConfig};

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

/// Why a pool could not be built from a (validated) config.
#[derive(Debug, thiserror::Error)]
#[error("upstream {name:?}: {reason}")]
pub struct PoolError {
    name: String,
    reason: String,
}

// === impl Pool ===

impl Pool {
    /// Builds a pool from a validated upstream config.
    pub(crate) fn build(config: &UpstreamConfig) -> Result<Pool, PoolError> {
        let err = |reason: String| PoolError {
            name: config.name.clone(),
            reason,
        };
        let mut set = BTreeSet::new();
        let mut peers = Vec::new();
        let sni = config
            .sni
            .clone()
            .or_else(|| config.host_header.clone())
            .unwrap_or_default();
        for p in &config.peers {
            let addr = *p
                .addr
                .ok()
                .ok_or_else(|| err(format!("peer {:?} is not an address", p.addr.raw())))?;
            let backend = Backend::new_with_weight(&addr.to_string(), p.weight)
                .map_err(|e| err(e.to_string()))?;
            set.insert(backend);
            let mut peer = HttpPeer::new(addr, config.tls, sni.clone());
            peer.options.connection_timeout = Some(config.connect_timeout.get().0);
            peer.options.read_timeout = Some(config.read_timeout.get().0);
            peer.options.write_timeout = Some(config.write_timeout.get().0);
            peer.options.idle_timeout = Some(config.idle_timeout.get().0);
            peer.options.verify_cert = config.verify_cert;
            peer.options.verify_hostname = config.verify_cert;
            let host =
                http::HeaderValue::from_str(&addr.to_string()).map_err(|e| err(e.to_string()))?;
            peers.push(PoolPeer { addr, peer, host });
        }
        let ca = match &config.ca_file {
            Some(file) => Some(Arc::new(crate::config::load_ca(file).map_err(err)?)),
            None => None,
        };
        for p in &mut peers {
            p.peer.options.ca = ca.clone();
        }
        let mut backends = Backends::new(Static::new(set));
        if let Some(hc) = &config.health_check {
            backends.set_health_check(health_check(config, hc, &sni, ca));
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
            Some(Err(e)) => return Err(err(e.to_string())),
            None => return Err(err("static discovery did not complete".into())),
        }
        let hash_key = match config.selection {
            Selection::ConsistentHash => Some(HashKey::parse(&config.hash_key).map_err(err)?),
            Selection::RoundRobin => None,
        };
        let host_header = match &config.host_header {
            Some(h) => Some(http::HeaderValue::from_str(h).map_err(|e| err(e.to_string()))?),
            None => None,
        };
        Ok(Pool {
            name: config.name.clone(),
            config: config.clone(),
            balancer,
            hash_key,
            peers,
            host_header,
            health_interval: config.health_check.as_ref().map(|hc| hc.interval.get().0),
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

fn health_check(
    config: &UpstreamConfig,
    hc: &crate::config::HealthCheckConfig,
    sni: &str,
    ca: Option<Arc<Box<[pingora::tls::x509::X509]>>>,
) -> Box<dyn HealthCheck + Send + Sync> {
    let timeout = hc.timeout.get().0;
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
            check.peer_template.options.ca = ca;
            check.req.set_uri(
                hc.path
                    .parse()
                    .unwrap_or_else(|_| http::Uri::from_static("/")),
            );
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
