//! The rate-limit decision as a store operation: what one decision asks ([`RuleCheck`]) and
//! answers ([`Decision`]), shared by the Redis backend's script ([`script`],
//! `scripts/limit.lua`) and the in-process twin ([`LocalCounters`]), which must agree exactly.
//! The rate limiter compiles rules into checks and turns decisions into verdicts; which
//! backend decides is the store's business.
//!
//! A call checks every rule of a request at once: first it decides, for each rule, whether
//! the request's cost fits; the request is admitted when every non-shadow rule admits it;
//! only then is the cost counted, on every rule (shadow rules included). A denied request
//! counts only on rules with `count_denied`.

mod local;
pub mod script;

pub(crate) use local::unix_ms;
pub use local::LocalCounters;

/// Which counting algorithm a rule uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// O(1) memory: the previous window's count weighted by its remaining overlap plus the
    /// current window's count.
    SlidingWindow,
    /// Exact: one sorted-set entry per counted unit, for small limits.
    SlidingLog,
}

/// One rule to check for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCheck {
    /// The counter's store key (`<prefix>rl:{<route>}:<rule>:<subject>`).
    pub key: String,
    /// Counting algorithm.
    pub algorithm: Algorithm,
    /// Units admitted per window (at least 1).
    pub limit: u64,
    /// Window length in milliseconds (at least 1000).
    pub window_ms: u64,
    /// Units this request costs (at least 1).
    pub cost: u64,
    /// Decide and count, never deny.
    pub shadow: bool,
    /// Count the cost even when the request is denied.
    pub count_denied: bool,
}

/// What a call says about one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuleOutcome {
    /// Whether this rule alone would admit the request.
    pub allowed: bool,
    /// Units left in the window after this request (0 when denied).
    pub remaining: u64,
    /// Milliseconds until the window's count is back to zero if nothing more is admitted.
    pub reset_ms: u64,
    /// When denied: milliseconds until a request of the same cost would be admitted by this
    /// rule (0 when allowed).
    pub retry_after_ms: u64,
}

/// The answer of one call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Admitted by every non-shadow rule.
    pub admitted: bool,
    /// One outcome per rule, in the order of the checks.
    pub rules: Vec<RuleOutcome>,
}
