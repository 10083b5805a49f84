//! The in-process store: a map with expiry and the in-process rate-limit counters, for a single
//! gateway node without Redis. Every operation is one short locked step, so each is as atomic
//! as its Redis twin (a script or a single command).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::backend::{Backend, Invalidations, KeyValue, LimitDecisions, Revocations, Sets};
use super::limits::{Decision, LocalCounters, RuleCheck};
use super::{EntryRevocation, Invalidation, StoreError};

enum Value {
    Bytes(Vec<u8>),
    Set(HashSet<String>),
}

struct Entry {
    value: Value,
    expires: Instant,
}

/// A single-process store with the same semantics as the Redis one (TTL on every key).
pub(crate) struct MemoryStore {
    prefix: String,
    entries: Mutex<HashMap<String, Entry>>,
    invalidations: broadcast::Sender<Invalidation>,
    /// The rate-limit counters: the Rust twin of `scripts/limit.lua`, with a lock of its own so
    /// rate limiting never waits on a key/value operation.
    limits: LocalCounters,
}

impl MemoryStore {
    pub(super) fn new(prefix: &str, limits: LocalCounters) -> MemoryStore {
        let (invalidations, _) = broadcast::channel(1024);
        MemoryStore {
            prefix: prefix.to_string(),
            entries: Mutex::new(HashMap::new()),
            invalidations,
            limits,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // Sweep expired entries now and then so the map cannot grow without bound.
        if map.len() > 1024 && fastrand::u8(..) == 0 {
            let now = Instant::now();
            map.retain(|_, e| e.expires > now);
        }
        f(&mut map)
    }

    /// Removes `member` from the set under `key`, if it is one. Redis deletes a set with its
    /// last member; so does this store, so `exists` answers alike on both.
    fn remove_member(map: &mut HashMap<String, Entry>, key: &str, member: &str) {
        let now_empty = match Self::live(map, key) {
            Some(Entry {
                value: Value::Set(s),
                ..
            }) => {
                s.remove(member);
                s.is_empty()
            }
            _ => false,
        };
        if now_empty {
            map.remove(key);
        }
    }

    fn live<'a>(map: &'a mut HashMap<String, Entry>, key: &str) -> Option<&'a mut Entry> {
        let now = Instant::now();
        if map.get(key).is_some_and(|e| e.expires <= now) {
            map.remove(key);
        }
        map.get_mut(key)
    }
}

// === impl KeyValue ===

impl KeyValue for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|m| match Self::live(m, key).map(|e| &e.value) {
            Some(Value::Bytes(b)) => Ok(Some(b.clone())),
            Some(Value::Set(_)) => Err(StoreError::Protocol("wrong type".into())),
            None => Ok(None),
        })
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.with(|m| Ok(Self::live(m, key).is_some()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let expires = Instant::now() + ttl;
        self.with(|m| {
            m.insert(
                key.to_string(),
                Entry {
                    value: Value::Bytes(value.to_vec()),
                    expires,
                },
            );
        });
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.with(|m| Ok(Self::live(m, key).is_some() && m.remove(key).is_some()))
    }
}

// === impl Sets ===

impl Sets for MemoryStore {
    async fn set_add(&self, key: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        let expires = Instant::now() + ttl;
        self.with(|m| {
            let entry = match Self::live(m, key) {
                Some(e) => e,
                None => m.entry(key.to_string()).or_insert(Entry {
                    value: Value::Set(HashSet::new()),
                    expires,
                }),
            };
            match &mut entry.value {
                Value::Set(s) => {
                    s.insert(member.to_string());
                    entry.expires = entry.expires.max(expires);
                    Ok(())
                }
                Value::Bytes(_) => Err(StoreError::Protocol("wrong type".into())),
            }
        })
    }

    async fn set_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        self.with(|m| {
            Self::remove_member(m, key, member);
            Ok(())
        })
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        self.with(|m| match Self::live(m, key).map(|e| &e.value) {
            Some(Value::Set(s)) => Ok(s.iter().cloned().collect()),
            Some(Value::Bytes(_)) => Err(StoreError::Protocol("wrong type".into())),
            None => Ok(Vec::new()),
        })
    }
}

// === impl Invalidations ===

impl Invalidations for MemoryStore {
    async fn publish(&self, key: &str) -> Result<(), StoreError> {
        // No receiver is not an error: nothing is cached yet.
        let _ = self.invalidations.send(Invalidation::Key(key.to_string()));
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.invalidations.subscribe()
    }
}

// === impl Revocations ===

impl Revocations for MemoryStore {
    /// The in-process `revoke_entry.lua`: the same steps under one lock, so no lookup sees the
    /// entry gone but its pointer or index member still there (or the reverse).
    async fn revoke_entry(&self, r: &EntryRevocation<'_>) -> Result<bool, StoreError> {
        self.with(|m| {
            let pointer_holds = matches!(
                Self::live(m, r.pointer).map(|e| &e.value),
                Some(Value::Bytes(v)) if v.as_slice() == r.pointer_value.as_bytes()
            );
            if !pointer_holds {
                return Ok(false);
            }
            m.remove(r.pointer);
            m.remove(r.entry);
            if let Some((set, member)) = r.index {
                Self::remove_member(m, set, member);
            }
            let _ = self
                .invalidations
                .send(Invalidation::Key(r.invalidation.to_string()));
            Ok(true)
        })
    }

    /// The in-process `revoke_marker.lua`: marker and invalidation in one locked step.
    async fn mark_revoked(
        &self,
        marker: &str,
        ttl: Duration,
        invalidation: &str,
    ) -> Result<(), StoreError> {
        let expires = Instant::now() + ttl;
        self.with(|m| {
            m.insert(
                marker.to_string(),
                Entry {
                    value: Value::Bytes(b"1".to_vec()),
                    expires,
                },
            );
            let _ = self
                .invalidations
                .send(Invalidation::Key(invalidation.to_string()));
        });
        Ok(())
    }
}

// === impl LimitDecisions ===

impl LimitDecisions for MemoryStore {
    /// The in-process `limit.lua`, on this host's clock.
    async fn decide(&self, checks: &[RuleCheck]) -> Result<Decision, StoreError> {
        Ok(self.limits.decide_now(checks))
    }
}

// === impl Backend ===

impl Backend for MemoryStore {
    const KIND: &'static str = "memory";

    fn prefix(&self) -> &str {
        &self.prefix
    }

    async fn ping(&self, _deadline: Duration) -> Result<(), StoreError> {
        Ok(())
    }

    fn is_healthy(&self) -> bool {
        true
    }
}
