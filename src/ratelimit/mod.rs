//! Rate limiting: every rule of a route decided in one atomic store operation
//! ([`Store::decide_limits`]), exact across any number of gateway nodes (see
//! [`crate::store::limits`] for the semantics; how a backend decides is the store's business).
//! Policies are compiled once per config load; the hot path builds the counter keys, makes
//! one call and renders the headers.
//!
//! When the store fails, a route follows its `rate_limit_on_store_error`: admit, refuse, or
//! enforce the limit in process divided by the node count; a [`breaker::Breaker`] stops calling
//! a failing store for a short backoff so requests do not each wait out the deadline.

pub mod breaker;
pub mod failed_auth;
pub mod settings;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use sha2::{Digest, Sha256};

use crate::config::strength::MAX_EXACT_SCRIPT_INT;
use crate::config::{Issues, RateAlgorithm, RateLimitFailure, RateLimitRule, RouteConfig};
use crate::principal::Principal;
use crate::store::limits::{self, Algorithm, Decision, LocalCounters, RuleCheck};
use crate::store::{Store, StoreError};
use breaker::{Breaker, Permit};
use failed_auth::{FailedAuthGuard, FailedAuthPolicy};
pub use settings::{LimiterSettings, PolicySettings};

/// What a rule counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The client's IP address.
    Ip,
    /// The authenticated consumer; the IP for anonymous requests.
    Consumer,
    /// Everyone on the route together.
    Route,
    /// The value of a request header ("-" when absent).
    Header(HeaderName),
    /// A JWT claim, via the upstream header `claims_to_headers` maps it to.
    Claim(HeaderName),
}

/// What `[auth.jwt] claims_to_headers` says about a claim a rule counts by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimHeader {
    /// The claim is forwarded in this header.
    Mapped(HeaderName),
    /// The claim is listed, but its header is unusable (reported where it is declared).
    Unusable,
    /// The claim is not listed.
    Unlisted,
}

/// Why a rule's `by` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// Not the grammar, or not a valid header name; the text says which.
    #[error("{0}")]
    Invalid(String),
    /// The claim's header is unusable; that is reported under `claims_to_headers`.
    #[error("claim {0:?} maps to an unusable header")]
    UnusableClaim(String),
}

impl Subject {
    /// Parses `by`, the one grammar of it; `claim_header` says what `claims_to_headers`
    /// maps a claim name to.
    pub fn parse(
        by: &str,
        claim_header: impl Fn(&str) -> ClaimHeader,
    ) -> Result<Subject, SubjectError> {
        match by {
            "ip" => Ok(Subject::Ip),
            "consumer" => Ok(Subject::Consumer),
            "route" => Ok(Subject::Route),
            _ => {
                if let Some(name) = by.strip_prefix("header:") {
                    return HeaderName::from_bytes(name.trim().as_bytes())
                        .map(Subject::Header)
                        .map_err(|_| {
                            SubjectError::Invalid(format!("{name:?} is not a valid header name"))
                        });
                }
                if let Some(claim) = by.strip_prefix("claim:") {
                    return match claim_header(claim.trim()) {
                        ClaimHeader::Mapped(header) => Ok(Subject::Claim(header)),
                        ClaimHeader::Unusable => {
                            Err(SubjectError::UnusableClaim(claim.trim().to_string()))
                        }
                        ClaimHeader::Unlisted => Err(SubjectError::Invalid(format!(
                            "claim {claim:?} must be listed in [auth.jwt] claims_to_headers"
                        ))),
                    };
                }
                Err(SubjectError::Invalid(format!(
                    "{by:?}: use \"ip\", \"consumer\", \"route\", \"header:<name>\" or \"claim:<name>\""
                )))
            }
        }
    }
}

/// How client addresses are grouped into the networks `by = "ip"` counts: IPv4 by
/// `ipv4_prefix` (32: each address), IPv6 by `ipv6_prefix` (64: one customer network, since a
/// single host can pick from 2^64 addresses of its /64). IPv4-mapped IPv6 addresses count as
/// IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientNetwork {
    v4_prefix: u8,
    v6_prefix: u8,
}

impl ClientNetwork {
    /// Grouping by these prefix lengths (clamped to 32 and 128).
    pub fn new(v4_prefix: u8, v6_prefix: u8) -> ClientNetwork {
        ClientNetwork {
            v4_prefix: v4_prefix.min(32),
            v6_prefix: v6_prefix.min(128),
        }
    }

    /// Appends `ip:<address>` for a whole-address prefix, `ip:<network>/<len>` otherwise, or
    /// `ip:-` without an address.
    pub fn write(&self, key: &mut String, ip: Option<IpAddr>) {
        key.push_str("ip:");
        let _ = match ip.map(|ip| ip.to_canonical()) {
            None => {
                key.push('-');
                Ok(())
            }
            Some(IpAddr::V4(v4)) if self.v4_prefix >= 32 => write!(key, "{v4}"),
            Some(IpAddr::V6(v6)) if self.v6_prefix >= 128 => write!(key, "{v6}"),
            Some(IpAddr::V4(v4)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.v4_prefix))
                    .unwrap_or(0);
                let net = Ipv4Addr::from(u32::from(v4) & mask);
                write!(key, "{net}/{}", self.v4_prefix)
            }
            Some(IpAddr::V6(v6)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.v6_prefix))
                    .unwrap_or(0);
                let net = Ipv6Addr::from(u128::from(v6) & mask);
                write!(key, "{net}/{}", self.v6_prefix)
            }
        };
    }
}

/// Per-rule counters, resolved once per config load so the hot path does no label lookups.
struct RuleMetrics {
    allowed: IntCounter,
    denied: IntCounter,
    shadow_denied: IntCounter,
    store_error: IntCounter,
    near_limit: IntCounter,
}

/// A rule, compiled.
pub struct CompiledRule {
    /// Rule name.
    pub name: String,
    subject: Subject,
    limit: u64,
    plan_limits: Vec<(String, u64)>,
    window_ms: u64,
    algorithm: Algorithm,
    cost: u64,
    shadow: bool,
    count_denied: bool,
    metrics: RuleMetrics,
}

/// A route's rate-limit policy.
pub struct RoutePolicy {
    rules: Vec<CompiledRule>,
    on_store_error: RateLimitFailure,
    /// `<prefix>rl:{<route>}:`; the route is the hash tag, so one call touches one slot.
    key_prefix: String,
    /// `RateLimit-Policy`, rendered once.
    policy_header: Option<HeaderValue>,
    legacy_headers: bool,
    node_count: u64,
    /// How `by = "ip"` groups client addresses.
    client_network: ClientNetwork,
    /// `[rate_limit.failed_auth]`; `None` when off.
    failed_auth: Option<FailedAuthPolicy>,
}

/// The usage a response reports: the most restrictive rule's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// Index of the rule.
    pub rule: usize,
    /// Its limit for this principal.
    pub limit: u64,
    /// Units left.
    pub remaining: u64,
    /// Seconds until the window's count is back to zero.
    pub reset_secs: u64,
    /// `RateLimit-Policy` for this request when its limits differ from the configured ones
    /// (a plan override, or the local fallback's share); `None` uses the pre-rendered one.
    pub policy: Option<HeaderValue>,
}

/// The answer for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead; report the quota when there is one.
    Admitted(Option<Quota>),
    /// 429, with the time until a request would really be admitted.
    Denied {
        /// The denying rule's usage.
        quota: Quota,
        /// Seconds until a request of the same cost would be admitted.
        retry_after_secs: u64,
    },
    /// The store failed and the route refuses in that case.
    Unavailable,
}

/// What a request offers to be counted by.
pub struct RequestFacts<'a> {
    /// The client's IP.
    pub client_ip: Option<IpAddr>,
    /// The authenticated principal.
    pub principal: Option<&'a Principal>,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

/// Rate-limit metrics.
#[derive(Clone)]
pub struct RateMetrics {
    decisions: IntCounterVec,
    near_limit: IntCounterVec,
    breaker_open: IntGauge,
    local_evictions: IntCounterVec,
    failed_auth_blocked: IntCounter,
}

impl RateMetrics {
    /// Registers the rate-limit metrics.
    ///
    /// # Panics
    /// If registered twice (a wiring bug).
    pub fn new(registry: &Registry) -> RateMetrics {
        let decisions = IntCounterVec::new(
            Opts::new(
                "portcullis_ratelimit_decisions_total",
                "Rate-limit decisions by route, rule and outcome (allowed, denied, shadow_denied, store_error).",
            ),
            &["route", "rule", "outcome"],
        )
        .expect("valid metric");
        let near_limit = IntCounterVec::new(
            Opts::new(
                "portcullis_ratelimit_near_limit_total",
                "Admitted requests that left 20% or less of a rule's limit.",
            ),
            &["route", "rule"],
        )
        .expect("valid metric");
        let breaker_open = IntGauge::new(
            "portcullis_ratelimit_breaker_open",
            "1 while the store circuit breaker is open or probing.",
        )
        .expect("valid metric");
        let local_evictions = IntCounterVec::new(
            Opts::new(
                "portcullis_ratelimit_local_evictions_total",
                "In-process counters evicted before expiry to stay within local_max_counters, by \
                 counter set (limits, fallback, failed_auth).",
            ),
            &["counters"],
        )
        .expect("valid metric");
        let failed_auth_blocked = IntCounter::new(
            "portcullis_auth_failed_attempts_blocked_total",
            "Requests refused with 429 because their client network presented too many \
             rejected credentials.",
        )
        .expect("valid metric");
        for c in [
            Box::new(decisions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(near_limit.clone()),
            Box::new(breaker_open.clone()),
            Box::new(local_evictions.clone()),
            Box::new(failed_auth_blocked.clone()),
        ] {
            registry
                .register(c)
                .expect("rate-limit metrics registered once");
        }
        // Every counter set exists from the start, so dashboards see zeros, not absence.
        for set in ["limits", "fallback", "failed_auth"] {
            local_evictions.with_label_values(&[set]);
        }
        RateMetrics {
            decisions,
            near_limit,
            breaker_open,
            local_evictions,
            failed_auth_blocked,
        }
    }

    /// The eviction counter of one in-process counter set (`limits`, `fallback`,
    /// `failed_auth`).
    fn local_evictions(&self, set: &str) -> IntCounter {
        self.local_evictions.with_label_values(&[set])
    }
}

// === impl RoutePolicy ===

impl RoutePolicy {
    /// Compiles the rate limits of `route`, the `index`-th route: its name (a Redis hash
    /// tag), every rule (`by` parsed once, by [`Subject::parse`]), and the `[rate_limit]`
    /// settings every route shares (`None` when those did not compile: the rules are still
    /// checked). Every problem goes into `issues` with its path; `None` when there was any.
    pub fn compile(
        index: usize,
        route: &RouteConfig,
        settings: Option<&PolicySettings>,
        store: &Store,
        metrics: &RateMetrics,
        claim_header: impl Fn(&str) -> ClaimHeader,
        issues: &mut Issues,
    ) -> Option<RoutePolicy> {
        let before = issues.len();
        if route.name.contains(['{', '}']) {
            issues.push(
                format!("routes[{index}].name"),
                "must not contain braces (it is a Redis hash tag)",
            );
        }
        let mut compiled = Vec::with_capacity(route.rate_limits.len());
        let mut names = HashSet::new();
        for (j, rule) in route.rate_limits.iter().enumerate() {
            let at = format!("routes[{index}].rate_limits[{j}]");
            if let Some(c) = compile_rule(&at, &route.name, rule, metrics, &claim_header, issues) {
                compiled.push(c);
            }
            if !names.insert(rule.name.as_str()) {
                issues.push(
                    format!("{at}.name"),
                    format!("rule name {:?} is used twice on this route", rule.name),
                );
            }
        }
        let settings = settings.filter(|_| issues.len() == before)?;
        let policy_header = render_policy(&compiled);
        Some(RoutePolicy {
            rules: compiled,
            on_store_error: route.rate_limit_on_store_error,
            key_prefix: store.key("rl", &route.name, ""),
            policy_header,
            legacy_headers: settings.legacy_headers,
            node_count: settings.node_count,
            client_network: settings.client_network,
            failed_auth: settings.failed_auth,
        })
    }

    /// Whether the route limits anything.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn limit_for(&self, rule: &CompiledRule, principal: Option<&Principal>) -> u64 {
        let plan = principal.and_then(|p| p.plan.as_deref());
        plan.and_then(|plan| rule.plan_limits.iter().find(|(p, _)| p == plan))
            .map_or(rule.limit, |(_, l)| *l)
    }

    /// The checks of one request; `divide` scales limits down for the local fallback.
    fn checks(&self, facts: &RequestFacts<'_>, divide: u64) -> Vec<RuleCheck> {
        self.rules
            .iter()
            .map(|rule| {
                let mut key = String::with_capacity(self.key_prefix.len() + rule.name.len() + 48);
                key.push_str(&self.key_prefix);
                key.push(':');
                key.push_str(&rule.name);
                // The algorithm is part of the key: switching it on reload starts new counters
                // instead of running one algorithm's commands on the other's data type.
                key.push_str(match rule.algorithm {
                    Algorithm::SlidingWindow => ":w:",
                    Algorithm::SlidingLog => ":l:",
                });
                write_subject(&mut key, &rule.subject, facts, &self.client_network);
                RuleCheck {
                    key,
                    algorithm: rule.algorithm,
                    limit: (self.limit_for(rule, facts.principal) / divide).max(1),
                    window_ms: rule.window_ms,
                    cost: rule.cost,
                    shadow: rule.shadow,
                    count_denied: rule.count_denied,
                }
            })
            .collect()
    }

    /// Adds `RateLimit-Policy`, `RateLimit` and (when on) `X-RateLimit-*` for `quota`.
    pub fn write_headers(&self, quota: &Quota, mut set: impl FnMut(&'static str, HeaderValue)) {
        if let Some(p) = quota.policy.as_ref().or(self.policy_header.as_ref()) {
            set("ratelimit-policy", p.clone());
        }
        let Some(rule) = self.rules.get(quota.rule) else {
            return;
        };
        let mut v = String::with_capacity(rule.name.len() + 24);
        let _ = write!(
            v,
            "\"{}\";r={};t={}",
            rule.name, quota.remaining, quota.reset_secs
        );
        if let Ok(v) = HeaderValue::from_str(&v) {
            set("ratelimit", v);
        }
        if self.legacy_headers {
            set("x-ratelimit-limit", HeaderValue::from(quota.limit));
            set("x-ratelimit-remaining", HeaderValue::from(quota.remaining));
            set("x-ratelimit-reset", HeaderValue::from(quota.reset_secs));
        }
    }
}

/// One rule at `at` (`routes[i].rate_limits[j]`), every problem reported.
fn compile_rule(
    at: &str,
    route: &str,
    rule: &RateLimitRule,
    metrics: &RateMetrics,
    claim_header: impl Fn(&str) -> ClaimHeader,
    issues: &mut Issues,
) -> Option<CompiledRule> {
    let before = issues.len();
    let name_ok = !rule.name.is_empty()
        && rule.name.len() <= 64
        && rule
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !name_ok {
        issues.push(
            format!("{at}.name"),
            "must be 1-64 characters of A-Z a-z 0-9 _ - .",
        );
    }
    let subject = match Subject::parse(&rule.by, claim_header) {
        Ok(s) => Some(s),
        Err(SubjectError::Invalid(reason)) => {
            issues.push(format!("{at}.by"), reason);
            None
        }
        // Reported under `auth.jwt.claims_to_headers`; the rule cannot compile without it.
        Err(SubjectError::UnusableClaim(_)) => None,
    };
    if rule.limit == 0 {
        issues.push(format!("{at}.limit"), "must be at least 1");
    }
    if rule.cost == 0 || rule.cost > rule.limit.max(1) {
        issues.push(format!("{at}.cost"), "must be between 1 and the limit");
    }
    let window_ms = compile_window(at, rule, issues);
    if rule.algorithm == RateAlgorithm::SlidingLog
        && rule
            .plan_limits
            .values()
            .chain([&rule.limit])
            .any(|l| *l > 10_000)
    {
        issues.push(
            format!("{at}.algorithm"),
            "sliding_log keeps one entry per request; use sliding_window for limits above 10000",
        );
    }
    for (plan, limit) in &rule.plan_limits {
        if *limit == 0 {
            issues.push(format!("{at}.plan_limits.{plan}"), "must be at least 1");
        } else if rule.cost > *limit {
            // Every request of the plan would be refused forever.
            issues.push(
                format!("{at}.plan_limits.{plan}"),
                format!("must be at least the rule's cost ({})", rule.cost),
            );
        }
    }
    let (subject, window_ms) = (subject?, window_ms?);
    if issues.len() != before {
        return None;
    }
    let m = |outcome: &str| {
        metrics
            .decisions
            .with_label_values(&[route, &rule.name, outcome])
    };
    Some(CompiledRule {
        name: rule.name.clone(),
        subject,
        limit: rule.limit,
        plan_limits: rule
            .plan_limits
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        window_ms,
        algorithm: match rule.algorithm {
            RateAlgorithm::SlidingWindow => Algorithm::SlidingWindow,
            RateAlgorithm::SlidingLog => Algorithm::SlidingLog,
        },
        cost: rule.cost,
        shadow: rule.shadow,
        count_denied: rule.count_denied,
        metrics: RuleMetrics {
            allowed: m("allowed"),
            denied: m("denied"),
            shadow_denied: m("shadow_denied"),
            store_error: m("store_error"),
            near_limit: metrics.near_limit.with_label_values(&[route, &rule.name]),
        },
    })
}

/// The rule's window in ms: whole seconds from 1s to 30d, and small enough with its limits
/// for the script's exact integers: it computes `limit × window_ms` on doubles, and past 2^53
/// those are no longer exact (and Redis' integer reply conversion would round), so such limits
/// are refused rather than silently approximated.
fn compile_window(at: &str, rule: &RateLimitRule, issues: &mut Issues) -> Option<u64> {
    let window = issues.value(format!("{at}.window"), &rule.window)?.0;
    let w = duration_ms(window);
    if !(1000..=30 * 86_400_000).contains(&w) || !w.is_multiple_of(1000) {
        issues.push(
            format!("{at}.window"),
            "must be whole seconds from 1s to 30d",
        );
        return None;
    }
    let too_big = |limit: u64| u128::from(limit) * u128::from(w) > MAX_EXACT_SCRIPT_INT;
    let reason = "limit × window in ms must be at most 2^53 (e.g. at most 104249991 per day)";
    let mut fits = true;
    if too_big(rule.limit) {
        issues.push(format!("{at}.limit"), reason);
        fits = false;
    }
    for (plan, limit) in &rule.plan_limits {
        if too_big(*limit) {
            issues.push(format!("{at}.plan_limits.{plan}"), reason);
            fits = false;
        }
    }
    fits.then_some(w)
}

/// `"<rule>";q=<limit>;w=<window seconds>` for every rule, joined by ", ".
fn render_policy(rules: &[CompiledRule]) -> Option<HeaderValue> {
    render_policy_with(rules, |i| rules.get(i).map_or(0, |r| r.limit))
}

/// Like `render_policy`, with the limit of rule `i` given by `limit(i)`. Shadow rules are left
/// out: they never limit the client.
fn render_policy_with(rules: &[CompiledRule], limit: impl Fn(usize) -> u64) -> Option<HeaderValue> {
    let items: Vec<String> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.shadow)
        .map(|(i, r)| format!("\"{}\";q={};w={}", r.name, limit(i), r.window_ms / 1000))
        .collect();
    if items.is_empty() {
        return None;
    }
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// Appends the subject part of a counter key. Values that are long or unusual are hashed, so
/// keys stay short and a client cannot inject key syntax.
fn write_subject(
    key: &mut String,
    subject: &Subject,
    facts: &RequestFacts<'_>,
    network: &ClientNetwork,
) {
    let ip = |key: &mut String| network.write(key, facts.client_ip);
    match subject {
        Subject::Ip => ip(key),
        Subject::Route => key.push('_'),
        Subject::Consumer => match facts.principal {
            Some(p) => {
                key.push_str("c:");
                push_safe(key, p.consumer.as_bytes());
            }
            None => ip(key),
        },
        Subject::Header(name) => {
            key.push_str("h:");
            push_safe(key, facts.headers.get(name).map_or(b"-", |v| v.as_bytes()));
        }
        Subject::Claim(name) => {
            key.push_str("claim:");
            let value = facts
                .principal
                .and_then(|p| p.headers.iter().find(|(n, _)| n == name))
                .map_or(&b"-"[..], |(_, v)| v.as_bytes());
            push_safe(key, value);
        }
    }
}

fn push_safe(key: &mut String, value: &[u8]) {
    let plain = value.len() <= 64
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':'));
    if plain {
        // Only ASCII bytes pass the check above.
        key.push_str(std::str::from_utf8(value).unwrap_or("-"));
    } else {
        key.push('#');
        key.push_str(&hex::encode(&Sha256::digest(value)[..16]));
    }
}

/// The process-wide limiter: store access, local counters, breaker.
pub struct Limiter {
    store: Arc<Store>,
    /// Counters for `on_store_error = "local"`.
    fallback: LocalCounters,
    /// Rejected credentials per client network.
    failed_auth: FailedAuthGuard,
    breaker: Breaker,
    metrics: RateMetrics,
}

impl Limiter {
    /// A limiter on `store` with the breaker and local-counter settings of `[rate_limit]`.
    pub fn new(store: Arc<Store>, settings: &LimiterSettings, metrics: RateMetrics) -> Limiter {
        let capacity = settings.local_max_counters;
        Limiter {
            store,
            fallback: LocalCounters::bounded(capacity, metrics.local_evictions("fallback")),
            failed_auth: FailedAuthGuard::new(
                capacity,
                metrics.local_evictions("failed_auth"),
                metrics.failed_auth_blocked.clone(),
            ),
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_open_for),
            metrics,
        }
    }

    /// The counters an in-process store decides rate limits on (hand them to
    /// [`Store::from_settings`]): bounded by `local_max_counters` like every in-process counter
    /// set, their evictions counted as `counters="limits"`.
    pub fn store_counters(settings: &LimiterSettings, metrics: &RateMetrics) -> LocalCounters {
        LocalCounters::bounded(
            settings.local_max_counters,
            metrics.local_evictions("limits"),
        )
    }

    /// The metrics (for compiling policies).
    pub fn metrics(&self) -> &RateMetrics {
        &self.metrics
    }

    /// Seconds until `client_ip` may present credentials on this route again, when its network
    /// is over `[rate_limit.failed_auth]`; `None` when it may now. Call before any credential
    /// is looked up in the store or verified: this is what keeps a flood of bogus credentials
    /// away from the store. While no network is blocked this is one atomic load.
    pub fn failed_auth_retry_after(
        &self,
        policy: &RoutePolicy,
        client_ip: Option<IpAddr>,
    ) -> Option<u64> {
        let limit = policy.failed_auth.as_ref()?;
        self.failed_auth.retry_after_secs(
            limit,
            &policy.client_network,
            client_ip,
            limits::unix_ms(),
        )
    }

    /// Counts a request refused because its network is over `[rate_limit.failed_auth]`.
    pub fn count_failed_auth_refusal(&self) {
        self.failed_auth.count_refusal();
    }

    /// Counts a presented and rejected credential of `client_ip`.
    pub fn record_failed_auth(&self, policy: &RoutePolicy, client_ip: Option<IpAddr>) {
        if let Some(limit) = &policy.failed_auth {
            self.failed_auth.record_failure(
                limit,
                &policy.client_network,
                client_ip,
                limits::unix_ms(),
            );
        }
    }

    /// Decides a request against a route's policy.
    pub async fn check(&self, policy: &RoutePolicy, facts: &RequestFacts<'_>) -> Verdict {
        if policy.rules.is_empty() {
            return Verdict::Admitted(None);
        }
        let checks = policy.checks(facts, 1);
        match self.decide_in_store(&checks).await {
            Ok(decision) => verdict(policy, &checks, &decision),
            Err(e) => self.on_store_error(policy, facts, &e),
        }
    }

    fn on_store_error(
        &self,
        policy: &RoutePolicy,
        facts: &RequestFacts<'_>,
        e: &StoreError,
    ) -> Verdict {
        log::debug!("rate limit store call failed: {e}");
        for rule in &policy.rules {
            rule.metrics.store_error.inc();
        }
        match policy.on_store_error {
            RateLimitFailure::Allow => Verdict::Admitted(None),
            RateLimitFailure::Deny => Verdict::Unavailable,
            RateLimitFailure::Local => {
                let checks = policy.checks(facts, policy.node_count);
                let decision = self.fallback.decide_now(&checks);
                verdict(policy, &checks, &decision)
            }
        }
    }

    async fn decide_in_store(&self, checks: &[RuleCheck]) -> Result<Decision, StoreError> {
        let permit = self.breaker.permit();
        if permit == Permit::Skip {
            return Err(StoreError::Unavailable("circuit breaker open".into()));
        }
        let result = self.store.decide_limits(checks).await;
        match &result {
            // A protocol error is an answer: the store is up, one key's data is not what the
            // decision expects. Opening the breaker for it would stop every route on this node.
            Ok(_) | Err(StoreError::Protocol(_)) => self.breaker.success(),
            Err(_) => self.breaker.failure(permit == Permit::Probe),
        }
        // Written only on a change, for the same reason as in `Breaker::success`.
        let open = i64::from(self.breaker.is_open());
        if self.metrics.breaker_open.get() != open {
            self.metrics.breaker_open.set(open);
        }
        result
    }
}

/// Turns a decision into a verdict and counts it.
fn verdict(policy: &RoutePolicy, checks: &[RuleCheck], decision: &Decision) -> Verdict {
    let mut worst: Option<Quota> = None;
    let mut denying: Option<(Quota, u64)> = None;
    let overridden = policy
        .rules
        .iter()
        .zip(checks)
        .any(|(rule, check)| rule.limit != check.limit);
    let request_policy = if overridden {
        render_policy_with(&policy.rules, |i| checks.get(i).map_or(0, |c| c.limit))
    } else {
        None
    };
    for (i, (rule, out)) in policy.rules.iter().zip(&decision.rules).enumerate() {
        let limit = checks.get(i).map_or(rule.limit, |c| c.limit);
        let quota = Quota {
            rule: i,
            limit,
            remaining: out.remaining,
            reset_secs: out.reset_ms.div_ceil(1000),
            policy: request_policy.clone(),
        };
        if !out.allowed {
            if rule.shadow {
                rule.metrics.shadow_denied.inc();
            } else {
                rule.metrics.denied.inc();
                let retry = out.retry_after_ms.div_ceil(1000).max(1);
                if denying.as_ref().is_none_or(|(_, r)| retry > *r) {
                    denying = Some((quota, retry));
                }
            }
            continue;
        }
        if rule.shadow {
            // Shadow rules are reported only in metrics, never to the client.
            rule.metrics.allowed.inc();
            continue;
        }
        if decision.admitted {
            rule.metrics.allowed.inc();
            if is_near_limit(quota.remaining, limit) {
                rule.metrics.near_limit.inc();
            }
        }
        let tighter = worst.as_ref().is_none_or(|w| is_tighter(&quota, w));
        if tighter {
            worst = Some(quota);
        }
    }
    match (decision.admitted, denying) {
        (false, Some((quota, retry_after_secs))) => Verdict::Denied {
            quota,
            retry_after_secs,
        },
        _ => Verdict::Admitted(worst),
    }
}

/// Whether `remaining` is 20% of `limit` or less. In u128: `remaining` comes from a store
/// reply and may be any non-negative i64.
fn is_near_limit(remaining: u64, limit: u64) -> bool {
    u128::from(remaining) * 5 <= u128::from(limit)
}

/// Whether `a` leaves a smaller share of its limit than `b`: `a.remaining / a.limit <
/// b.remaining / b.limit`, cross-multiplied in u128 because two limits near the 2^53 the
/// config allows overflow u64.
fn is_tighter(a: &Quota, b: &Quota) -> bool {
    u128::from(a.remaining) * u128::from(b.limit.max(1))
        < u128::from(b.remaining) * u128::from(a.limit.max(1))
}

/// How many counters each in-process counter set holds at most.
/// A duration in whole milliseconds, saturating at `u64::MAX` instead of wrapping.
pub(crate) fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::limits::RuleOutcome;

    fn key(network: ClientNetwork, ip: &str) -> String {
        let mut key = String::new();
        network.write(&mut key, Some(ip.parse().expect("test ip")));
        key
    }

    #[test]
    fn ipv6_clients_are_grouped_by_their_64_and_ipv4_by_address() {
        let default = ClientNetwork::new(32, 64);
        assert_eq!(key(default, "192.0.2.7"), "ip:192.0.2.7");
        assert_eq!(key(default, "2001:db8:1:2::1"), "ip:2001:db8:1:2::/64");
        assert_eq!(
            key(default, "2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            "ip:2001:db8:1:2::/64"
        );
        assert_ne!(key(default, "2001:db8:1:3::1"), "ip:2001:db8:1:2::/64");
        // IPv4-mapped IPv6 is the IPv4 client.
        assert_eq!(key(default, "::ffff:192.0.2.7"), "ip:192.0.2.7");
        let mut none = String::new();
        default.write(&mut none, None);
        assert_eq!(none, "ip:-");
    }

    /// A route with two rules whose limits are near the largest the config allows for a 1 s
    /// window (limit × window in ms at most 2^53).
    fn huge_policy() -> RoutePolicy {
        let toml = r#"
[[upstreams]]
name = "u"
peers = [{ addr = "127.0.0.1:1" }]
[[routes]]
name = "r"
upstream = "u"
[[routes.rate_limits]]
name = "a"
by = "ip"
limit = 9000000000000
window = "1s"
[[routes.rate_limits]]
name = "b"
by = "route"
limit = 8000000000000
window = "1s"
"#;
        let config = crate::config::parse(toml).expect("test config parses");
        let registry = Registry::new();
        let store = Store::from_config(None, &registry).expect("in-process store");
        let metrics = RateMetrics::new(&registry);
        let mut issues = Issues::default();
        let settings = PolicySettings::compile(&config.rate_limit, &mut issues);
        let policy = RoutePolicy::compile(
            0,
            &config.routes[0],
            settings.as_ref(),
            &store,
            &metrics,
            |_| ClaimHeader::Unlisted,
            &mut issues,
        );
        assert!(
            issues.is_empty(),
            "the compiler allows these limits: {:?}",
            issues.into_vec()
        );
        policy.expect("policy compiles")
    }

    fn admitted(remaining: &[u64]) -> Decision {
        let rules = remaining
            .iter()
            .map(|&remaining| RuleOutcome {
                allowed: true,
                remaining,
                reset_ms: 1_000,
                retry_after_ms: 0,
            })
            .collect();
        Decision {
            admitted: true,
            rules,
        }
    }

    fn reported_rule(policy: &RoutePolicy, decision: &Decision) -> Quota {
        let headers = HeaderMap::new();
        let facts = RequestFacts {
            client_ip: Some("192.0.2.7".parse().expect("ip")),
            principal: None,
            headers: &headers,
        };
        let checks = policy.checks(&facts, 1);
        match verdict(policy, &checks, decision) {
            Verdict::Admitted(Some(quota)) => quota,
            other => panic!("expected an admitted quota, got {other:?}"),
        }
    }

    #[test]
    fn the_tighter_of_two_huge_rules_is_reported_without_overflow() {
        let policy = huge_policy();
        // a: all but one left; b: an eighth left. Cross-multiplied, both products are ~7e25.
        let quota = reported_rule(&policy, &admitted(&[8_999_999_999_999, 1_000_000_000_000]));
        assert_eq!((quota.rule, quota.remaining), (1, 1_000_000_000_000));
        let quota = reported_rule(&policy, &admitted(&[1_000_000_000_000, 7_999_999_999_999]));
        assert_eq!((quota.rule, quota.remaining), (0, 1_000_000_000_000));
    }

    #[test]
    fn a_store_reply_with_a_huge_remaining_count_does_not_overflow() {
        let policy = huge_policy();
        let huge = i64::MAX as u64;
        let quota = reported_rule(&policy, &admitted(&[huge, huge]));
        assert_eq!(quota.remaining, huge);
        assert!(is_near_limit(0, 0) && !is_near_limit(u64::MAX, u64::MAX - 1));
    }

    #[test]
    fn the_tighter_comparison_is_exact_at_the_u64_limits() {
        let q = |remaining: u64, limit: u64| Quota {
            rule: 0,
            limit,
            remaining,
            reset_secs: 0,
            policy: None,
        };
        assert!(is_tighter(
            &q(u64::MAX - 1, u64::MAX),
            &q(u64::MAX, u64::MAX)
        ));
        assert!(!is_tighter(
            &q(u64::MAX, u64::MAX),
            &q(u64::MAX - 1, u64::MAX)
        ));
        assert!(is_tighter(&q(1, 3), &q(u64::MAX / 2, u64::MAX)));
        // A limit of 0 (never configured) counts as 1 rather than dividing by zero.
        assert!(is_tighter(&q(0, 0), &q(1, 1)));
    }

    #[test]
    fn durations_beyond_u64_milliseconds_saturate() {
        use std::time::Duration;
        assert_eq!(duration_ms(Duration::from_millis(1_500)), 1_500);
        assert_eq!(duration_ms(Duration::from_millis(u64::MAX)), u64::MAX);
        // `as u64` would wrap this to 999.
        let past = Duration::from_millis(u64::MAX) + Duration::from_secs(1);
        assert_eq!(duration_ms(past), u64::MAX);
        assert_eq!(duration_ms(Duration::MAX), u64::MAX);
    }

    #[test]
    fn prefixes_are_configurable_down_to_zero() {
        assert_eq!(
            key(ClientNetwork::new(24, 48), "192.0.2.7"),
            "ip:192.0.2.0/24"
        );
        assert_eq!(
            key(ClientNetwork::new(24, 48), "2001:db8:1:2::1"),
            "ip:2001:db8:1::/48"
        );
        assert_eq!(key(ClientNetwork::new(0, 0), "192.0.2.7"), "ip:0.0.0.0/0");
        assert_eq!(key(ClientNetwork::new(0, 0), "2001:db8::1"), "ip:::/0");
        assert_eq!(
            key(ClientNetwork::new(32, 128), "2001:db8::1"),
            "ip:2001:db8::1"
        );
        // Out-of-range prefixes are clamped (config validation refuses them).
        assert_eq!(
            key(ClientNetwork::new(99, 200), "192.0.2.7"),
            "ip:192.0.2.7"
        );
    }

    /// The problems of the first route of `toml`, compiled with `claims` as `claims_to_headers`.
    fn route_issues(toml: &str, claims: &[(&str, Option<&'static str>)]) -> Vec<String> {
        let config = crate::config::parse(toml).expect("test config parses");
        let registry = Registry::new();
        let store = Store::from_config(None, &registry).expect("in-process store");
        let metrics = RateMetrics::new(&registry);
        let mut issues = Issues::default();
        let settings = PolicySettings::compile(&config.rate_limit, &mut issues);
        let claim_header = |claim: &str| match claims.iter().find(|(c, _)| *c == claim) {
            None => ClaimHeader::Unlisted,
            Some((_, None)) => ClaimHeader::Unusable,
            Some((_, Some(h))) => ClaimHeader::Mapped(HeaderName::from_static(h)),
        };
        let policy = RoutePolicy::compile(
            0,
            &config.routes[0],
            settings.as_ref(),
            &store,
            &metrics,
            claim_header,
            &mut issues,
        );
        let found: Vec<String> = issues.into_vec().iter().map(|i| i.to_string()).collect();
        assert_eq!(policy.is_none(), !found.is_empty(), "{found:#?}");
        found
    }

    #[test]
    fn every_problem_of_a_routes_rules_is_reported_with_its_path() {
        let found = route_issues(
            r#"
[[routes]]
name = "r{1}"
upstream = "u"
rate_limits = [
  { name = "bad name!", by = "header:bad header", limit = 0, cost = 2, window = "1500ms" },
  { name = "a", by = "claim:org", limit = 10, window = "31d" },
  { name = "a", by = "claim:tenant", limit = 20000, window = "1s", algorithm = "sliding_log", plan_limits = { gold = 0 } },
  { name = "b", by = "nobody", limit = 5, window = "soon" },
]
"#,
            &[("tenant", None)],
        );
        let expect = [
            "routes[0].name: must not contain braces",
            "routes[0].rate_limits[0].name: must be 1-64 characters",
            "routes[0].rate_limits[0].by: \"bad header\" is not a valid header name",
            "routes[0].rate_limits[0].limit: must be at least 1",
            "routes[0].rate_limits[0].cost: must be between 1 and the limit",
            "routes[0].rate_limits[0].window: must be whole seconds from 1s to 30d",
            "routes[0].rate_limits[1].by: claim \"org\" must be listed in [auth.jwt] claims_to_headers",
            "routes[0].rate_limits[1].window: must be whole seconds from 1s to 30d",
            "routes[0].rate_limits[2].algorithm: sliding_log keeps one entry per request",
            "routes[0].rate_limits[2].plan_limits.gold: must be at least 1",
            "routes[0].rate_limits[2].name: rule name \"a\" is used twice on this route",
            "routes[0].rate_limits[3].by: \"nobody\": use \"ip\"",
            "routes[0].rate_limits[3].window: invalid duration \"soon\"",
        ];
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        for (f, e) in found.iter().zip(expect) {
            assert!(f.starts_with(e), "{f:?} is not {e:?}");
        }
    }

    #[test]
    fn a_plan_limit_below_the_cost_is_refused() {
        let found = route_issues(
            r#"
[[routes]]
name = "r"
upstream = "u"
rate_limits = [{ name = "a", by = "ip", limit = 10, cost = 5, window = "1s", plan_limits = { free = 4, gold = 5 } }]
"#,
            &[],
        );
        assert_eq!(
            found,
            ["routes[0].rate_limits[0].plan_limits.free: must be at least the rule's cost (5)"]
        );
    }

    #[test]
    fn a_claim_rule_counts_by_the_header_the_claim_is_forwarded_in() {
        let toml = r#"
[[routes]]
name = "r"
upstream = "u"
rate_limits = [{ name = "per-tenant", by = "claim:tenant", limit = 5, window = "1s" }]
"#;
        assert_eq!(
            route_issues(toml, &[("tenant", Some("x-tenant"))]),
            Vec::<String>::new()
        );
        assert_eq!(
            Subject::parse("claim:tenant", |_| ClaimHeader::Mapped(
                HeaderName::from_static("x-tenant")
            )),
            Ok(Subject::Claim(HeaderName::from_static("x-tenant")))
        );
    }
}
