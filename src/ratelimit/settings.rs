//! `[rate_limit]`, compiled once per load into plain values, every problem reported with its
//! path in that one pass.
//!
//! The section has two halves with different lifetimes: what the process-wide [`Limiter`]
//! is built with (breaker, bounded local counters: a restart changes them, so they are part
//! of the process settings), and what every route's [`RoutePolicy`] shares (node count,
//! client networks, failed-authentication limit: a reload changes them).
//!
//! [`Limiter`]: super::Limiter
//! [`RoutePolicy`]: super::RoutePolicy

use std::time::Duration;

use super::failed_auth::FailedAuthPolicy;
use super::{duration_ms, ClientNetwork};
use crate::config::{FailedAuthConfig, Issues, RateLimitConfig};

/// The restart-only half of `[rate_limit]`: what [`super::Limiter::new`] is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterSettings {
    /// Consecutive store failures that open the breaker.
    pub(crate) breaker_failures: u32,
    /// How long the open breaker skips the store.
    pub(crate) breaker_open_for: Duration,
    /// Most in-process counters per counter set.
    pub(crate) local_max_counters: usize,
}

impl LimiterSettings {
    /// Compiles `breaker_failures`, `breaker_open_for` and `local_max_counters`; `None` when
    /// any of them is unusable (each problem is in `issues`).
    pub fn compile(config: &RateLimitConfig, issues: &mut Issues) -> Option<LimiterSettings> {
        let before = issues.len();
        if config.breaker_failures == 0 {
            issues.push("rate_limit.breaker_failures", "must be at least 1");
        }
        let breaker_open_for =
            issues.positive("rate_limit.breaker_open_for", &config.breaker_open_for);
        if !(1..=10_000_000).contains(&config.local_max_counters) {
            issues.push(
                "rate_limit.local_max_counters",
                "must be between 1 and 10000000",
            );
        }
        let breaker_open_for = breaker_open_for.filter(|_| issues.len() == before)?;
        Some(LimiterSettings {
            breaker_failures: config.breaker_failures,
            breaker_open_for,
            local_max_counters: config.local_max_counters,
        })
    }
}

/// The reloadable half of `[rate_limit]`, shared by every route's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
    /// Also send `X-RateLimit-*`.
    pub(crate) legacy_headers: bool,
    /// Nodes sharing the store (the local fallback enforces limit / nodes).
    pub(crate) node_count: u64,
    /// How `by = "ip"` groups client addresses.
    pub(crate) client_network: ClientNetwork,
    /// `[rate_limit.failed_auth]`; `None` when off.
    pub(crate) failed_auth: Option<FailedAuthPolicy>,
}

impl PolicySettings {
    /// Compiles `legacy_headers`, `node_count`, the client-IP prefixes and `failed_auth`;
    /// `None` when any of them is unusable (each problem is in `issues`).
    pub fn compile(config: &RateLimitConfig, issues: &mut Issues) -> Option<PolicySettings> {
        let before = issues.len();
        if config.node_count == 0 || config.node_count > 10_000 {
            issues.push("rate_limit.node_count", "must be between 1 and 10000");
        }
        if config.ipv4_prefix > 32 {
            issues.push("rate_limit.ipv4_prefix", "must be between 0 and 32");
        }
        if config.ipv6_prefix > 128 {
            issues.push("rate_limit.ipv6_prefix", "must be between 0 and 128");
        }
        let failed_auth = compile_failed_auth(&config.failed_auth, issues);
        if issues.len() != before {
            return None;
        }
        Some(PolicySettings {
            legacy_headers: config.legacy_headers,
            node_count: u64::from(config.node_count),
            client_network: ClientNetwork::new(config.ipv4_prefix, config.ipv6_prefix),
            failed_auth: failed_auth?,
        })
    }
}

/// `[rate_limit.failed_auth]`: `Some(None)` when turned off (its values are checked anyway,
/// so turning it on later cannot surprise), `None` after reporting a problem.
fn compile_failed_auth(
    config: &FailedAuthConfig,
    issues: &mut Issues,
) -> Option<Option<FailedAuthPolicy>> {
    let limit_ok = (1..=1_000_000).contains(&config.limit);
    if !limit_ok {
        issues.push(
            "rate_limit.failed_auth.limit",
            "must be between 1 and 1000000",
        );
    }
    let window = issues
        .value("rate_limit.failed_auth.window", &config.window)?
        .0;
    let window_ms = duration_ms(window);
    if !(1000..=86_400_000).contains(&window_ms) || !window_ms.is_multiple_of(1000) {
        issues.push(
            "rate_limit.failed_auth.window",
            "must be whole seconds from 1s to 1d",
        );
        return None;
    }
    if !limit_ok {
        return None;
    }
    Some(
        config
            .enabled
            .then(|| FailedAuthPolicy::new(config.limit, window_ms)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues_of(toml: &str) -> Vec<String> {
        let config: RateLimitConfig = toml::from_str(toml).expect("test section parses");
        let mut issues = Issues::default();
        let limiter = LimiterSettings::compile(&config, &mut issues);
        let policy = PolicySettings::compile(&config, &mut issues);
        let found: Vec<String> = issues.into_vec().iter().map(|i| i.to_string()).collect();
        assert_eq!(limiter.is_none() || policy.is_none(), !found.is_empty());
        found
    }

    #[test]
    fn the_defaults_compile() {
        let mut issues = Issues::default();
        let config = RateLimitConfig::default();
        let limiter = LimiterSettings::compile(&config, &mut issues).expect("compiles");
        let policy = PolicySettings::compile(&config, &mut issues).expect("compiles");
        assert!(issues.is_empty());
        assert_eq!(limiter.breaker_open_for, Duration::from_secs(1));
        assert_eq!(policy.node_count, 1);
        assert_eq!(
            policy.failed_auth,
            Some(FailedAuthPolicy::new(100, 10_000)),
            "on by default, from the model's defaults"
        );
    }

    #[test]
    fn every_bad_value_is_reported_with_its_path() {
        let found = issues_of(
            "node_count = 0\nbreaker_failures = 0\nbreaker_open_for = \"0s\"\n\
             local_max_counters = 0\nipv4_prefix = 33\nipv6_prefix = 129\n\
             [failed_auth]\nlimit = 0\nwindow = \"500ms\"\n",
        );
        let expect = [
            "rate_limit.breaker_failures: must be at least 1",
            "rate_limit.breaker_open_for: must be greater than zero",
            "rate_limit.local_max_counters: must be between 1",
            "rate_limit.node_count: must be between 1 and 10000",
            "rate_limit.ipv4_prefix: must be between 0 and 32",
            "rate_limit.ipv6_prefix: must be between 0 and 128",
            "rate_limit.failed_auth.limit: must be between 1",
            "rate_limit.failed_auth.window: must be whole seconds",
        ];
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        for (f, e) in found.iter().zip(expect) {
            assert!(f.starts_with(e), "{f:?} is not {e:?}");
        }
    }

    #[test]
    fn a_failed_auth_section_turned_off_is_still_checked() {
        assert_eq!(
            issues_of("[failed_auth]\nenabled = false\nwindow = \"soon\"\n").len(),
            1
        );
        let mut issues = Issues::default();
        let config: RateLimitConfig =
            toml::from_str("[failed_auth]\nenabled = false\n").expect("parses");
        let policy = PolicySettings::compile(&config, &mut issues).expect("compiles");
        assert_eq!(policy.failed_auth, None);
    }
}
