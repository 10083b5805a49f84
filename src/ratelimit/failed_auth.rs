//! Rejected credentials, limited per client network and kept in process.
//!
//! A flood of random API keys or bogus JWTs costs the store one lookup each (the negative
//! cache helps only for repeated values). Once a client network has presented `limit` rejected
//! credentials in a window, its requests to authenticated routes get 429
//! `too_many_failed_attempts` unless their credential is already in this node's local tier as
//! valid: nothing from a blocked network reaches the store or a signature check, so the flood
//! stops at this node, while the legitimate clients sharing the network (NAT, CGNAT, an IPv6
//! /64) keep working with credentials they used before. The counters are per node on purpose:
//! they protect the store, and asking the store to count would cost the round trip they save.
//!
//! The check runs on every request to an authenticated route, so while no network is blocked
//! it is one atomic load: no key is built and no lock is taken.
//!
//! Counted: credentials that were presented and rejected (unknown, expired or revoked keys,
//! invalid or revoked tokens). Not counted: requests without credentials (they never reach the
//! store), valid credentials lacking a scope, and store failures.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::IntCounter;

use super::ClientNetwork;
use crate::store::limits::{Algorithm, LocalCounters, RuleCheck};

/// `[rate_limit.failed_auth]`, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedAuthPolicy {
    limit: u64,
    window_ms: u64,
}

impl FailedAuthPolicy {
    /// `limit` rejected credentials per `window_ms`, as compiled by
    /// [`super::settings::PolicySettings::compile`] (which keeps both in range).
    pub(crate) fn new(limit: u64, window_ms: u64) -> FailedAuthPolicy {
        FailedAuthPolicy { limit, window_ms }
    }
}

/// The per-network counters of rejected credentials on this node.
pub struct FailedAuthGuard {
    counters: LocalCounters,
    /// Requests refused because their network was over the limit.
    blocked: IntCounter,
    /// Unix ms before which some network may be over its limit (0: none has been). Raised
    /// only when a recorded failure leaves a network over, to when that network may present
    /// credentials again; never lowered, so it can only err towards looking the counter up.
    /// (A reload that tightens the policy lets a network already over the new limit present
    /// one more rejected credential, whose recording raises this again.)
    blocked_until_ms: AtomicU64,
}

impl FailedAuthGuard {
    /// A guard holding at most `capacity` networks.
    pub fn new(capacity: usize, evictions: IntCounter, blocked: IntCounter) -> FailedAuthGuard {
        FailedAuthGuard {
            counters: LocalCounters::bounded(capacity, evictions),
            blocked,
            blocked_until_ms: AtomicU64::new(0),
        }
    }

    /// Seconds until `client` may present credentials again; `None` when it may now. A client
    /// without an IP address (a Unix socket) is never limited. Counts nothing: the caller
    /// decides whether the request is refused (see [`FailedAuthGuard::count_refusal`]).
    pub fn retry_after_secs(
        &self,
        policy: &FailedAuthPolicy,
        network: &ClientNetwork,
        client: Option<IpAddr>,
        now_ms: u64,
    ) -> Option<u64> {
        if !self.some_network_may_be_blocked(now_ms) {
            return None;
        }
        let check = check(policy, network, client?);
        let outcome = self.counters.peek(&check, now_ms);
        if outcome.allowed {
            return None;
        }
        Some(outcome.retry_after_ms.div_ceil(1000).max(1))
    }

    /// Counts one request refused because its network is over the limit.
    pub fn count_refusal(&self) {
        self.blocked.inc();
    }

    /// Whether any network may be over its limit at `now_ms`; when not, no counter needs to
    /// be looked at.
    fn some_network_may_be_blocked(&self, now_ms: u64) -> bool {
        now_ms < self.blocked_until_ms.load(Ordering::Relaxed)
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
        let decision = self.counters.decide(std::slice::from_ref(&check), now_ms);
        // After counting, the network is over iff one more unit does not fit: this failure
        // did not fit, or it took the last unit.
        let over = decision
            .rules
            .first()
            .is_some_and(|o| !o.allowed || o.remaining == 0);
        if over {
            self.note_blocked(&check, now_ms);
        }
    }

    /// Opens the slow path of `retry_after_secs` until the network of `check` may present
    /// credentials again.
    fn note_blocked(&self, check: &RuleCheck, now_ms: u64) {
        let outcome = self.counters.peek(check, now_ms);
        if !outcome.allowed {
            let until = now_ms.saturating_add(outcome.retry_after_ms.max(1));
            self.blocked_until_ms.fetch_max(until, Ordering::Relaxed);
        }
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
        let window = humantime::parse_duration(window).expect("test window");
        FailedAuthPolicy::new(limit, super::super::duration_ms(window))
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
        // Refusing is the caller's decision (a cached valid credential is still admitted).
        g.count_refusal();
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
    fn no_counter_is_looked_at_while_no_network_is_blocked() {
        let g = guard(100);
        let p = policy(5, "1s");
        let net = ClientNetwork::new(32, 64);
        for i in 0..10u8 {
            g.record_failure(&p, &net, Some(IpAddr::from([10, 0, 0, i])), T0);
        }
        assert!(!g.some_network_may_be_blocked(T0));
        // A lookup would sweep the counters, expired three windows later; none happens.
        let ip = IpAddr::from([10, 0, 0, 1]);
        assert_eq!(g.retry_after_secs(&p, &net, Some(ip), T0 + 3_000), None);
        assert_eq!(g.tracked(), 10, "a counter lookup (and its sweep) ran");
    }

    #[test]
    fn the_fast_path_closes_when_a_network_goes_over_and_reopens_when_it_may_retry() {
        let g = guard(100);
        let p = policy(3, "10s");
        let net = ClientNetwork::new(32, 64);
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        for i in 0..2 {
            g.record_failure(&p, &net, Some(ip), T0 + i);
            assert!(!g.some_network_may_be_blocked(T0 + i), "below the limit");
        }
        g.record_failure(&p, &net, Some(ip), T0 + 2);
        assert!(
            g.some_network_may_be_blocked(T0 + 2),
            "the third failure blocks"
        );
        let secs = g
            .retry_after_secs(&p, &net, Some(ip), T0 + 2)
            .expect("blocked");
        // Until the network may retry, its check is exact; from then on, no lookup at all.
        let until = g.blocked_until_ms.load(Ordering::Relaxed);
        assert!(until > T0 + 2 && until <= T0 + 2 + secs * 1000, "{until}");
        assert!(g.retry_after_secs(&p, &net, Some(ip), until - 1).is_some());
        assert!(!g.some_network_may_be_blocked(until));
        assert_eq!(g.retry_after_secs(&p, &net, Some(ip), until), None);
    }
}
