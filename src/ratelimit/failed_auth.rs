//! Rejected credentials, limited per client network and kept in process.
//!
//! A flood of random API keys or bogus JWTs costs the store one lookup each (the negative
//! cache helps only for repeated values). Once a client network has presented `limit` rejected
//! credentials in a window, its requests to authenticated routes get 429
//! `too_many_failed_attempts` *before* any credential is hashed, verified or looked up, so the
//! flood stops at this node. The counters are per node on purpose: they protect the store, and
//! asking the store to count would cost the round trip they save.
//!
//! Counted: credentials that were presented and rejected (unknown, expired or revoked keys,
//! invalid or revoked tokens). Not counted: requests without credentials (they never reach the
//! store), valid credentials lacking a scope, and store failures.

use std::net::IpAddr;

use prometheus::IntCounter;

use super::algorithm::{Algorithm, RuleCheck};
use super::local::LocalLimiter;
use super::ClientNetwork;
use crate::config::FailedAuthConfig;

/// `[rate_limit.failed_auth]`, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedAuthPolicy {
    limit: u64,
    window_ms: u64,
}

impl FailedAuthPolicy {
    /// The policy of a validated config; `None` when turned off.
    pub fn from_config(config: &FailedAuthConfig) -> Option<FailedAuthPolicy> {
        if !config.enabled {
            return None;
        }
        let window_ms = config.window.ok().map_or(10_000, |d| {
            u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX)
        });
        Some(FailedAuthPolicy {
            limit: config.limit.max(1),
            window_ms: window_ms.max(1_000),
        })
    }
}

/// The per-network counters of rejected credentials on this node.
pub struct FailedAuthGuard {
    counters: LocalLimiter,
    /// Requests refused because their network was over the limit.
    blocked: IntCounter,
}

impl FailedAuthGuard {
    /// A guard holding at most `capacity` networks.
    pub fn new(capacity: usize, evictions: IntCounter, blocked: IntCounter) -> FailedAuthGuard {
        FailedAuthGuard {
            counters: LocalLimiter::bounded(capacity, evictions),
            blocked,
        }
    }

    /// Seconds until `client` may present credentials again; `None` when it may now. A client
    /// without an IP address (a Unix socket) is never limited.
    pub fn retry_after_secs(
        &self,
        policy: &FailedAuthPolicy,
        network: &ClientNetwork,
        client: Option<IpAddr>,
        now_ms: u64,
    ) -> Option<u64> {
        let check = check(policy, network, client?);
        let outcome = self.counters.peek(&check, now_ms);
        if outcome.allowed {
            return None;
        }
        self.blocked.inc();
        Some(outcome.retry_after_ms.div_ceil(1000).max(1))
    }

    /// Counts one rejected credential of `client`.
    pub fn record_failure(
        &self,
        policy: &FailedAuthPolicy,
        network: &ClientNetwork,
        client: Option<IpAddr>,
        now_ms: u64,
    ) {
        let Some(ip) = client else {
            return;
        };
        let mut check = check(policy, network, ip);
        // Shadow: counted whether or not this failure is over the limit, never refused here.
        check.shadow = true;
        self.counters.decide(&[check], now_ms);
    }

    /// Networks tracked (expired ones included until swept).
    pub fn tracked(&self) -> usize {
        self.counters.tracked_keys()
    }
}

/// The counter of `ip`'s network: O(1) memory per network (sliding window).
fn check(policy: &FailedAuthPolicy, network: &ClientNetwork, ip: IpAddr) -> RuleCheck {
    let mut key = String::with_capacity(48);
    key.push_str("fa:");
    network.write(&mut key, Some(ip));
    RuleCheck {
        key,
        algorithm: Algorithm::SlidingWindow,
        limit: policy.limit,
        window_ms: policy.window_ms,
        cost: 1,
        shadow: false,
        count_denied: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn guard(capacity: usize) -> FailedAuthGuard {
        let counter = |name: &str| IntCounter::new(name, "test").expect("valid metric");
        FailedAuthGuard::new(capacity, counter("evictions"), counter("blocked"))
    }

    fn policy(limit: u64, window: &str) -> FailedAuthPolicy {
        let config = FailedAuthConfig {
            enabled: true,
            limit,
            window: crate::config::Lenient::new(window),
        };
        FailedAuthPolicy::from_config(&config).expect("enabled")
    }

    #[test]
    fn a_network_is_blocked_after_limit_failures_until_the_window_passes() {
        let g = guard(100);
        let p = policy(3, "10s");
        let net = ClientNetwork::new(32, 64);
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        for i in 0..3 {
            assert_eq!(g.retry_after_secs(&p, &net, Some(ip), T0 + i), None);
            g.record_failure(&p, &net, Some(ip), T0 + i);
        }
        let retry = g.retry_after_secs(&p, &net, Some(ip), T0 + 10);
        assert!(matches!(retry, Some(1..=20)), "{retry:?}");
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        assert_eq!(g.retry_after_secs(&p, &net, Some(other), T0 + 10), None);
        assert_eq!(g.blocked.get(), 1);
        // Two windows on, the failures are forgotten.
        assert_eq!(g.retry_after_secs(&p, &net, Some(ip), T0 + 20_000), None);
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_budget() {
        let g = guard(100);
        let p = policy(2, "10s");
        let net = ClientNetwork::new(32, 64);
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        g.record_failure(&p, &net, Some(a), T0);
        g.record_failure(&p, &net, Some(b), T0);
        assert!(g.retry_after_secs(&p, &net, Some(a), T0).is_some());
        assert!(g.retry_after_secs(&p, &net, Some(b), T0).is_some());
        assert_eq!(g.retry_after_secs(&p, &net, Some(elsewhere), T0), None);
    }

    #[test]
    fn a_client_without_an_address_is_not_limited_and_networks_stay_bounded() {
        let g = guard(10);
        let p = policy(1, "10s");
        let net = ClientNetwork::new(32, 64);
        g.record_failure(&p, &net, None, T0);
        assert_eq!(g.retry_after_secs(&p, &net, None, T0), None);
        for i in 0..100u8 {
            g.record_failure(&p, &net, Some(IpAddr::from([10, 0, 0, i])), T0);
        }
        assert!(g.tracked() <= 10, "{}", g.tracked());
    }

    #[test]
    fn turned_off_means_no_policy() {
        let config = FailedAuthConfig {
            enabled: false,
            ..FailedAuthConfig::default()
        };
        assert_eq!(FailedAuthPolicy::from_config(&config), None);
    }
}
