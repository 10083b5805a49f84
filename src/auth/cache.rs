//! The local tier of the decision cache: credential hash → principal, in process, so a hot
//! credential costs no store round trip. Entries never outlive their credential; unknown
//! credentials live in a separate, smaller cache so a flood of random keys cannot evict good
//! ones. Invalidations from any node (revocations, deletions) remove entries here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use moka::Expiry;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::principal::{unix_now, Principal};
use crate::store::Invalidation;

/// A cached principal and how long it may stay.
#[derive(Clone)]
struct Entry {
    principal: Arc<Principal>,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<[u8; 32], Entry> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Entry,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Local-tier hit and miss counters.
#[derive(Clone)]
pub struct CacheMetrics {
    hits: IntCounter,
    misses: IntCounter,
}

impl CacheMetrics {
    /// Registers `portcullis_auth_cache_lookups_total{tier="local",result}`.
    ///
    /// # Panics
    /// If registered twice (a wiring bug).
    pub fn new(registry: &Registry) -> CacheMetrics {
        let lookups = IntCounterVec::new(
            Opts::new(
                "portcullis_auth_cache_lookups_total",
                "Decision-cache lookups by tier and result; hit ratio = hit / (hit + miss).",
            ),
            &["tier", "result"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(lookups.clone()))
            .expect("auth cache metrics registered once");
        CacheMetrics {
            hits: lookups.with_label_values(&["local", "hit"]),
            misses: lookups.with_label_values(&["local", "miss"]),
        }
    }
}

/// What the local tier knows about a credential.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    /// Known and valid.
    Known(Arc<Principal>),
    /// Recently found not to exist.
    Unknown,
    /// Not cached.
    Miss,
}

/// Which invalidations a lookup has seen: taken with [`DecisionCache::ticket`] before the
/// lookup asks the store, handed back when its answer is cached. An answer read before an
/// invalidation landed may describe a credential revoked since, so it is not cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    /// `DecisionCache::revocations` when the lookup began.
    revocations: u64,
    /// `DecisionCache::changes` when the lookup began.
    changes: u64,
}

/// The prefix of the invalidation a new API key publishes (followed by its hash in hex): it
/// only makes nodes forget that the hash was unknown.
pub(crate) const KEY_CREATED_PREFIX: &str = "apikey-new:";

/// The in-process decision cache.
pub struct DecisionCache {
    known: Cache<[u8; 32], Entry>,
    unknown: Cache<[u8; 32], ()>,
    /// Revoked token ids, so a cached token is refused as soon as its `jti` is revoked.
    revoked_jti: Cache<String, ()>,
    max_ttl: Duration,
    /// Counts revocations, resets and clears. A "valid" answer from the store is cached only
    /// if this has not moved since its lookup began: one counter for all keys keeps `apply`
    /// cheap, and the price, an answer not cached when a revocation raced it, is one more
    /// store read. Key creations do not move it: a lookup that saw the record may keep it.
    revocations: AtomicU64,
    /// Counts every invalidation, creations included. An "unknown" answer is cached only if
    /// this has not moved, so an older "does not exist" never outlives a key's creation.
    changes: AtomicU64,
    metrics: CacheMetrics,
}

impl DecisionCache {
    /// A cache of at most `capacity` known and `negative_capacity` unknown credentials.
    pub fn new(
        capacity: u64,
        max_ttl: Duration,
        negative_capacity: u64,
        negative_ttl: Duration,
        metrics: CacheMetrics,
    ) -> DecisionCache {
        DecisionCache {
            known: Cache::builder()
                .max_capacity(capacity)
                .expire_after(PerEntryTtl)
                .build(),
            unknown: Cache::builder()
                .max_capacity(negative_capacity)
                .time_to_live(negative_ttl)
                .build(),
            revoked_jti: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
            max_ttl,
            revocations: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            metrics,
        }
    }

    /// Looks a credential hash up.
    pub fn get(&self, hash: &[u8; 32]) -> Cached {
        if let Some(e) = self.known.get(hash) {
            let expired = e.principal.expires_at.is_some_and(|t| t <= unix_now());
            let revoked = match &e.principal.credential {
                super::Credential::Jwt { jti: Some(jti) } => self.revoked_jti.contains_key(jti),
                _ => false,
            };
            if !expired && !revoked {
                self.metrics.hits.inc();
                return Cached::Known(e.principal);
            }
            self.known.invalidate(hash);
        } else if self.unknown.contains_key(hash) {
            self.metrics.hits.inc();
            return Cached::Unknown;
        }
        self.metrics.misses.inc();
        Cached::Miss
    }

    /// The invalidations seen so far; take it before a lookup goes to the store.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket {
            revocations: self.revocations.load(Ordering::SeqCst),
            changes: self.changes.load(Ordering::SeqCst),
        }
    }

    /// Whether a revocation (or reset) was applied since `ticket` was taken.
    fn revoked_since(&self, ticket: Ticket) -> bool {
        self.revocations.load(Ordering::SeqCst) != ticket.revocations
    }

    /// Whether any invalidation, a key creation included, was applied since `ticket`.
    fn changed_since(&self, ticket: Ticket) -> bool {
        self.changes.load(Ordering::SeqCst) != ticket.changes
    }

    /// `put_known` for a principal read from the store by a lookup that took `ticket` first:
    /// not cached if an invalidation landed meanwhile, so a revocation that overtakes a
    /// lookup in flight cannot be undone by it. The entry is inserted and the counter checked
    /// after; `apply` moves the counter before it removes entries, so either this sees the move
    /// or the removal comes after the insert.
    pub(crate) fn put_known_since(
        &self,
        hash: [u8; 32],
        principal: Arc<Principal>,
        ticket: Ticket,
    ) {
        if self.revoked_since(ticket) {
            return;
        }
        self.put_known(hash, principal);
        if self.revoked_since(ticket) {
            self.known.invalidate(&hash);
        }
    }

    /// `put_unknown` for a lookup that took `ticket` first (a key created meanwhile publishes
    /// an invalidation, which must not be undone by an older "does not exist").
    pub(crate) fn put_unknown_since(&self, hash: [u8; 32], ticket: Ticket) {
        if self.changed_since(ticket) {
            return;
        }
        self.put_unknown(hash);
        if self.changed_since(ticket) {
            self.unknown.invalidate(&hash);
        }
    }

    /// Remembers a valid credential until it expires or `max_ttl`, whichever is first. For a
    /// principal read from the store, use `put_known_since`.
    pub fn put_known(&self, hash: [u8; 32], principal: Arc<Principal>) {
        let ttl = match principal.expires_at {
            Some(t) => Duration::from_secs(t.saturating_sub(unix_now())).min(self.max_ttl),
            None => self.max_ttl,
        };
        if !ttl.is_zero() {
            self.unknown.invalidate(&hash);
            self.known.insert(hash, Entry { principal, ttl });
        }
    }

    /// Remembers that a credential does not exist.
    pub(crate) fn put_unknown(&self, hash: [u8; 32]) {
        self.unknown.insert(hash, ());
    }

    /// Whether a token id was revoked (as told by an invalidation).
    pub(crate) fn is_revoked_locally(&self, jti: &str) -> bool {
        self.revoked_jti.contains_key(jti)
    }

    /// Applies an invalidation from any node.
    pub(crate) fn apply(&self, invalidation: &Invalidation) {
        // Before removing anything: see `put_known_since`.
        let created =
            matches!(invalidation, Invalidation::Key(k) if k.starts_with(KEY_CREATED_PREFIX));
        if !created {
            self.revocations.fetch_add(1, Ordering::SeqCst);
        }
        self.changes.fetch_add(1, Ordering::SeqCst);
        match invalidation {
            Invalidation::Reset => {
                self.known.invalidate_all();
                self.unknown.invalidate_all();
            }
            Invalidation::Key(key) => {
                if let Some(hash_hex) = key.strip_prefix(KEY_CREATED_PREFIX) {
                    let mut hash = [0u8; 32];
                    if hex::decode_to_slice(hash_hex, &mut hash).is_ok() {
                        self.unknown.invalidate(&hash);
                    }
                } else if let Some(hash_hex) = key.strip_prefix("apikey:") {
                    let mut hash = [0u8; 32];
                    if hex::decode_to_slice(hash_hex, &mut hash).is_ok() {
                        self.known.invalidate(&hash);
                        self.unknown.invalidate(&hash);
                    }
                } else if let Some(jti) = key.strip_prefix("jti:") {
                    self.revoked_jti.insert(jti.to_string(), ());
                }
            }
        }
    }

    /// Drops every cached decision (used when the auth config changes on reload).
    pub(crate) fn clear(&self) {
        self.revocations.fetch_add(1, Ordering::SeqCst);
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.known.invalidate_all();
        self.unknown.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Credential;

    fn cache() -> DecisionCache {
        DecisionCache::new(
            100,
            Duration::from_secs(60),
            10,
            Duration::from_secs(5),
            CacheMetrics::new(&Registry::new()),
        )
    }

    fn principal(expires_at: Option<u64>, jti: Option<&str>) -> Arc<Principal> {
        Arc::new(Principal {
            consumer: "c".into(),
            plan: None,
            scopes: vec![],
            credential: Credential::Jwt {
                jti: jti.map(String::from),
            },
            expires_at,
            headers: vec![],
        })
    }

    #[test]
    fn known_unknown_and_invalidated_entries() {
        let c = cache();
        let h = [1u8; 32];
        assert_eq!(c.get(&h), Cached::Miss);
        c.put_unknown(h);
        assert_eq!(c.get(&h), Cached::Unknown);
        c.put_known(h, principal(None, None));
        assert!(matches!(c.get(&h), Cached::Known(_)));
        c.apply(&Invalidation::Key(format!("apikey:{}", hex::encode(h))));
        assert_eq!(c.get(&h), Cached::Miss);
    }

    #[test]
    fn expired_credentials_are_not_served_and_revoked_jti_is_refused() {
        let c = cache();
        c.put_known([2u8; 32], principal(Some(unix_now() - 1), None));
        assert_eq!(c.get(&[2u8; 32]), Cached::Miss);
        c.put_known([3u8; 32], principal(Some(unix_now() + 100), Some("t1")));
        assert!(matches!(c.get(&[3u8; 32]), Cached::Known(_)));
        c.apply(&Invalidation::Key("jti:t1".into()));
        assert_eq!(c.get(&[3u8; 32]), Cached::Miss);
    }

    #[test]
    fn lookup_overtaken_by_a_revocation_does_not_cache_the_revoked_key() {
        let c = cache();
        let h = [6u8; 32];
        // The lookup starts, the revocation lands, then the lookup's (stale) answer arrives.
        let ticket = c.ticket();
        c.apply(&Invalidation::Key(format!("apikey:{}", hex::encode(h))));
        c.put_known_since(h, principal(None, None), ticket);
        assert_eq!(c.get(&h), Cached::Miss);
        // A lookup that starts after the revocation caches its answer as usual.
        let ticket = c.ticket();
        c.put_known_since(h, principal(None, None), ticket);
        assert!(matches!(c.get(&h), Cached::Known(_)));
    }

    #[test]
    fn lookup_overtaken_by_a_reset_or_clear_does_not_cache() {
        let c = cache();
        let ticket = c.ticket();
        c.apply(&Invalidation::Reset);
        c.put_known_since([7u8; 32], principal(None, None), ticket);
        assert_eq!(c.get(&[7u8; 32]), Cached::Miss);
        let ticket = c.ticket();
        c.clear();
        c.put_known_since([7u8; 32], principal(None, None), ticket);
        assert_eq!(c.get(&[7u8; 32]), Cached::Miss);
    }

    #[test]
    fn not_found_overtaken_by_a_key_creation_is_not_remembered() {
        let c = cache();
        let h = [8u8; 32];
        // "Unknown" was read before the key was created; creation publishes an invalidation.
        let ticket = c.ticket();
        c.apply(&Invalidation::Key(format!("apikey:{}", hex::encode(h))));
        c.put_unknown_since(h, ticket);
        assert_eq!(c.get(&h), Cached::Miss);
        let ticket = c.ticket();
        c.put_unknown_since(h, ticket);
        assert_eq!(c.get(&h), Cached::Unknown);
    }

    #[test]
    fn a_key_creation_forgets_unknown_answers_but_lets_a_lookup_that_saw_the_key_cache_it() {
        let c = cache();
        let created = Invalidation::Key(format!("{KEY_CREATED_PREFIX}{}", hex::encode([9u8; 32])));
        // A node that had answered "unknown" forgets it once the key is created.
        c.put_unknown([9u8; 32]);
        c.apply(&created);
        assert_eq!(c.get(&[9u8; 32]), Cached::Miss);
        // A lookup that read the new record while the creation's own invalidation arrived
        // keeps its answer: a creation revokes nothing.
        let ticket = c.ticket();
        c.apply(&created);
        c.put_known_since([9u8; 32], principal(None, None), ticket);
        assert!(matches!(c.get(&[9u8; 32]), Cached::Known(_)));
        // But an "unknown" read before that creation is not remembered.
        let h = [10u8; 32];
        let ticket = c.ticket();
        c.apply(&Invalidation::Key(format!(
            "{KEY_CREATED_PREFIX}{}",
            hex::encode(h)
        )));
        c.put_unknown_since(h, ticket);
        assert_eq!(c.get(&h), Cached::Miss);
    }

    #[test]
    fn reset_forgets_everything() {
        let c = cache();
        c.put_known([4u8; 32], principal(None, None));
        c.put_unknown([5u8; 32]);
        c.apply(&Invalidation::Reset);
        assert_eq!(c.get(&[4u8; 32]), Cached::Miss);
        assert_eq!(c.get(&[5u8; 32]), Cached::Miss);
    }
}
