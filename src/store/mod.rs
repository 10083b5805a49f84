//! The shared-state seam: one handle, [`Store`], over an in-process backend (the default, single
//! node) and Redis (many nodes). Both implement every kind of operation of [`backend`] with the
//! same semantics (key/value with TTL, sets, invalidations, revocations, rate-limit decisions),
//! so auth, rate limiting and caching do not care which one runs; every operation is bounded
//! by the configured deadline and observed in the store metrics by its name (the in-process
//! rate-limit decision excepted: timing it would cost as much as deciding).
//!
//! The store owns every Redis type and script: callers hand it typed operations (an
//! [`EntryRevocation`], the [`limits::RuleCheck`]s of a request), never a script or a reply.
//!
//! Keys follow `<prefix><kind>:{<hash-tag>}:<rest>`: the hash tag keeps all keys of one
//! credential or counter in one Redis Cluster slot. Every write carries a TTL.

mod backend;
pub mod limits;
mod memory;
mod redis_store;
pub mod settings;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tokio::sync::broadcast;

use crate::config::{Issue, Issues, StoreConfig};
use backend::{Backend, Invalidations, KeyValue, LimitDecisions, Revocations, Sets};
use limits::{Decision, LocalCounters, RuleCheck};
use memory::MemoryStore;
pub use redis_store::mark_proxy_thread;
use redis_store::RedisStore;
pub use settings::StoreSettings;

/// Why a store operation failed. Never carries a secret or a value.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The operation did not finish within the deadline.
    #[error("store operation timed out")]
    Timeout,
    /// No connection to the store.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered something unexpected.
    #[error("store protocol error: {0}")]
    Protocol(String),
}

impl StoreError {
    /// The `kind` label of the error metric.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Protocol(_) => "protocol",
        }
    }
}

/// Why the store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StoreSetupError {
    /// The URL or credentials are unusable.
    #[error("store: {0}")]
    Config(String),
    /// `[store]` did not compile (only [`Store::from_config`] reports this).
    #[error("{}", .0.iter().map(Issue::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Issue>),
}

/// A message that makes every node drop something from its local caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// Forget the entry under this cache key (`apikey:<hash>`, `jti:<id>`, …).
    Key(String),
    /// The subscription was (re)established: messages may have been missed, drop everything.
    Reset,
}

impl Invalidation {
    fn parse(payload: &str) -> Invalidation {
        Invalidation::Key(payload.to_string())
    }
}

/// An entry to revoke in one atomic step with [`Store::revoke_entry`]: its pointer, the entry,
/// its index-set membership and the invalidation are all dealt with, or none of them.
#[derive(Debug, Clone, Copy)]
pub struct EntryRevocation<'a> {
    /// The key that points at the entry (an API key's `id → hash`); the revocation applies only
    /// while it still holds `pointer_value`, so two concurrent revocations revoke once.
    pub pointer: &'a str,
    /// What `pointer` must hold.
    pub pointer_value: &'a str,
    /// The entry itself (the key record).
    pub entry: &'a str,
    /// `(set, member)`: the index set the entry is listed in and its member there, when known.
    pub index: Option<(&'a str, &'a str)>,
    /// The invalidation published to every node (`apikey:<hash>`).
    pub invalidation: &'a str,
}

/// The store the gateway runs on: the one handle callers use, whichever backend is behind it.
pub struct Store {
    backend: Backends,
    metrics: StoreMetrics,
}

/// The backends a store can run on; a match on this is the whole dispatch.
enum Backends {
    /// In-process, for a single node.
    Memory(MemoryStore),
    /// Shared Redis.
    Redis(Box<RedisStore>),
}

/// Operation latency and error metrics of the store.
struct StoreMetrics {
    duration: HistogramVec,
    errors: IntCounterVec,
}

impl StoreMetrics {
    /// Creates the metrics and registers them.
    ///
    /// # Panics
    /// If a metric of the same name is already registered (a wiring bug).
    fn new(registry: &Registry) -> StoreMetrics {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_store_operation_duration_seconds",
                "Latency of store operations, by operation.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
            ]),
            &["operation"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "portcullis_store_errors_total",
                "Failed store operations, by operation and kind.",
            ),
            &["operation", "kind"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(duration.clone()))
            .expect("store metrics registered once");
        registry
            .register(Box::new(errors.clone()))
            .expect("store metrics registered once");
        StoreMetrics { duration, errors }
    }

    /// Runs `call` and records its latency and, when it fails, its error under `op`.
    async fn observe<T>(
        &self,
        op: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let result = call.await;
        self.duration
            .with_label_values(&[op])
            .observe(start.elapsed().as_secs_f64());
        if let Err(e) = &result {
            self.errors.with_label_values(&[op, e.kind()]).inc();
        }
        result
    }
}

/// Runs `$call` on whichever backend the store has, as `$b`.
macro_rules! on_backend {
    ($self:ident, $b:ident => $call:expr) => {
        match &$self.backend {
            Backends::Memory($b) => $call,
            Backends::Redis($b) => $call,
        }
    };
}

/// Runs `$call` on the store's backend and observes it as operation `$op`.
macro_rules! dispatch {
    ($self:ident, $op:literal, $b:ident => $call:expr) => {
        on_backend!($self, $b => $self.metrics.observe($op, $call).await)
    };
}

// === impl Store ===

impl Store {
    /// Compiles `[store]` and builds the store from it; `None` gives the in-process store.
    /// For tools and tests that hold a section rather than a loaded config.
    pub fn from_config(
        config: Option<&StoreConfig>,
        registry: &Registry,
    ) -> Result<Arc<Store>, StoreSetupError> {
        let settings = match config {
            None => None,
            Some(c) => {
                let mut issues = Issues::default();
                match StoreSettings::compile(c, &mut issues) {
                    Some(s) => Some(s),
                    None => return Err(StoreSetupError::Invalid(issues.into_vec())),
                }
            }
        };
        Store::from_settings(settings.as_ref(), registry, LocalCounters::new())
    }

    /// Builds the store from compiled `[store]` settings; `None` gives the in-process store,
    /// which decides rate limits on `counters` (their bound and eviction metric are the rate
    /// limiter's settings). Redis keeps its counters itself and drops `counters`.
    pub fn from_settings(
        settings: Option<&StoreSettings>,
        registry: &Registry,
        counters: LocalCounters,
    ) -> Result<Arc<Store>, StoreSetupError> {
        let metrics = StoreMetrics::new(registry);
        let backend = match settings {
            None => Backends::Memory(MemoryStore::new("portcullis:", counters)),
            Some(s) => Backends::Redis(Box::new(RedisStore::connect(s)?)),
        };
        Ok(Arc::new(Store { backend, metrics }))
    }

    /// "memory" or "redis".
    pub fn kind(&self) -> &'static str {
        match &self.backend {
            Backends::Memory(_) => MemoryStore::KIND,
            Backends::Redis(_) => RedisStore::KIND,
        }
    }

    /// Builds a key: `<prefix><kind>:{<tag>}` plus `:<rest>` when `rest` is not empty.
    pub fn key(&self, kind: &str, tag: &str, rest: &str) -> String {
        let prefix = on_backend!(self, b => b.prefix());
        let mut k = String::with_capacity(prefix.len() + kind.len() + tag.len() + rest.len() + 4);
        k.push_str(prefix);
        k.push_str(kind);
        k.push_str(":{");
        k.push_str(tag);
        k.push('}');
        if !rest.is_empty() {
            k.push(':');
            k.push_str(rest);
        }
        k
    }

    /// Reads a value.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self, "get", b => b.get(key))
    }

    /// Whether a key exists.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        dispatch!(self, "exists", b => b.exists(key))
    }

    /// Writes a value that expires after `ttl`.
    pub async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        dispatch!(self, "set", b => b.set(key, value, ttl))
    }

    /// Deletes a key; whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        dispatch!(self, "delete", b => b.delete(key))
    }

    /// Adds a member to a set and extends the set's TTL to at least `ttl`.
    pub async fn set_add(&self, key: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        dispatch!(self, "set_add", b => b.set_add(key, member, ttl))
    }

    /// Removes a member from a set.
    pub async fn set_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        dispatch!(self, "set_remove", b => b.set_remove(key, member))
    }

    /// The members of a set.
    pub async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        dispatch!(self, "set_members", b => b.set_members(key))
    }

    /// Decides every rule check of one request in one atomic step and counts it (see
    /// [`limits`] for the semantics): one script call on Redis, on Redis' clock, observed as
    /// operation `eval`; one locked step on the in-process counters otherwise.
    ///
    /// `Protocol` when Redis answers something other than a decision (a key holding another
    /// type, a script of another version).
    pub async fn decide_limits(&self, checks: &[RuleCheck]) -> Result<Decision, StoreError> {
        match &self.backend {
            // In process a decision is a few hundred nanoseconds under a lock, on every
            // rate-limited request; timing it (two clock reads and a labelled histogram) cost
            // as much again when measured (benches/ratelimit.rs two_rules_in_process, +80%),
            // so it is not observed, as before the seam.
            Backends::Memory(b) => b.decide(checks).await,
            Backends::Redis(b) => self.metrics.observe("eval", b.decide(checks)).await,
        }
    }

    /// Revokes an entry in one atomic store operation (one script call on Redis, one locked
    /// step in process): deletes the pointer and the entry, removes the index member and
    /// publishes the invalidation. A timeout thus leaves either everything done or nothing.
    /// `false` when the pointer is gone or names another entry (nothing was changed).
    pub async fn revoke_entry(&self, revocation: &EntryRevocation<'_>) -> Result<bool, StoreError> {
        dispatch!(self, "revoke_entry", b => b.revoke_entry(revocation))
    }

    /// Writes a revocation marker living `ttl` and publishes `invalidation`, in one atomic
    /// store operation, so a marker never exists that the nodes were not told about.
    pub async fn mark_revoked(
        &self,
        marker: &str,
        ttl: Duration,
        invalidation: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self, "mark_revoked", b => b.mark_revoked(marker, ttl, invalidation))
    }

    /// Tells every node (this one included) to drop `key` from its local caches.
    pub async fn publish_invalidation(&self, key: &str) -> Result<(), StoreError> {
        dispatch!(self, "publish", b => b.publish(key))
    }

    /// Receives invalidations published by any node.
    pub fn invalidations(&self) -> broadcast::Receiver<Invalidation> {
        on_backend!(self, b => b.subscribe())
    }

    /// Waits up to `deadline` until the store answers (always at once in process).
    pub async fn ping(&self, deadline: Duration) -> Result<(), StoreError> {
        on_backend!(self, b => b.ping(deadline).await)
    }

    /// Whether the store answered its last health probe.
    pub fn is_healthy(&self) -> bool {
        on_backend!(self, b => b.is_healthy())
    }
}
