//! What a store backend offers, one trait per kind of operation. The in-process
//! ([`MemoryStore`](super::MemoryStore)) and Redis ([`RedisStore`](super::RedisStore)) backends
//! implement every one of them, with the same semantics, and `tests/store_contract.rs` runs one
//! suite against both through [`Store`](super::Store); a new backend (Redis Cluster) is one more
//! set of these impls and one more variant of the store's dispatch, its callers untouched.
//!
//! Every operation is bounded by the backend's deadline. Metrics are the store's concern, not
//! the backends': each operation is observed once, by its name (see `Store::decide_limits`
//! for the one exception).
//!
//! Static dispatch only (the store matches on its backend), so native `async fn` is enough: a
//! caller that knows the backend's type also knows whether the future is `Send`.

use std::time::Duration;

use tokio::sync::broadcast;

use super::limits::{Decision, RuleCheck};
use super::{EntryRevocation, Invalidation, StoreError};

/// Values under keys, each living for a TTL.
pub(crate) trait KeyValue {
    /// The value under `key`; `None` when absent or expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Whether `key` exists (and has not expired).
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Writes `value` under `key`, living `ttl`.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;
    /// Deletes `key`; whether it existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;
}

/// Sets of strings (index sets), deleted with their last member like Redis sets.
pub(crate) trait Sets {
    /// Adds `member` and extends the set's TTL to at least `ttl` (never shortens it).
    async fn set_add(&self, key: &str, member: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Removes `member`, if present.
    async fn set_remove(&self, key: &str, member: &str) -> Result<(), StoreError>;
    /// The members, in no particular order; empty when the set is absent.
    async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError>;
}

/// Messages telling every node, the publishing one included, to drop a cached entry.
pub(crate) trait Invalidations {
    /// Publishes `Invalidation::Key(key)` to every subscriber of every node.
    async fn publish(&self, key: &str) -> Result<(), StoreError>;
    /// A new subscription to what any node publishes (and `Reset` when messages may have been
    /// missed).
    fn subscribe(&self) -> broadcast::Receiver<Invalidation>;
}

/// Revocations, each one atomic step together with the invalidation it publishes.
pub(crate) trait Revocations {
    /// See [`Store::revoke_entry`](super::Store::revoke_entry).
    async fn revoke_entry(&self, revocation: &EntryRevocation<'_>) -> Result<bool, StoreError>;
    /// See [`Store::mark_revoked`](super::Store::mark_revoked).
    async fn mark_revoked(
        &self,
        marker: &str,
        ttl: Duration,
        invalidation: &str,
    ) -> Result<(), StoreError>;
}

/// Rate-limit decisions: every rule check of one request decided and counted in one atomic
/// step (see [`super::limits`] for the semantics every backend must give exactly).
pub(crate) trait LimitDecisions {
    /// Decides `checks` at the backend's clock and counts them.
    async fn decide(&self, checks: &[RuleCheck]) -> Result<Decision, StoreError>;
}

/// A whole backend: every kind of operation, plus what the store needs to build keys and to
/// report health.
pub(crate) trait Backend:
    KeyValue + Sets + Invalidations + Revocations + LimitDecisions
{
    /// The `kind` readiness reports ("memory", "redis").
    const KIND: &'static str;
    /// What every key starts with.
    fn prefix(&self) -> &str;
    /// Waits up to `deadline` until the backend answers.
    async fn ping(&self, deadline: Duration) -> Result<(), StoreError>;
    /// Whether the backend answered its last health probe.
    fn is_healthy(&self) -> bool;
}
