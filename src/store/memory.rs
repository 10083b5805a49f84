//! The in-process store: a map with expiry, for a single gateway node without Redis.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use super::{EntryRevocation, Invalidation, StoreError, StoreMetrics};

enum Value {
    Bytes(Vec<u8>),
    Set(HashSet<String>),
}

struct Entry {
    value: Value,
    expires: Instant,
}

/// A single-process store with the same semantics as the Redis one (TTL on every key).
pub struct MemoryStore {
    prefix: String,
    entries: Mutex<HashMap<String, Entry>>,
    invalidations: broadcast::Sender<Invalidation>,
    pub(super) metrics: StoreMetrics,
}

impl MemoryStore {
    pub(super) fn new(prefix: &str, metrics: StoreMetrics) -> MemoryStore {
        let (invalidations, _) = broadcast::channel(1024);
        MemoryStore {
            prefix: prefix.to_string(),
            entries: Mutex::new(HashMap::new()),
            invalidations,
            metrics,
        }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
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

    fn live<'a>(map: &'a mut HashMap<String, Entry>, key: &str) -> Option<&'a mut Entry> {
        let now = Instant::now();
        if map.get(key).is_some_and(|e| e.expires <= now) {
            map.remove(key);
        }
        map.get_mut(key)
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|m| match Self::live(m, key).map(|e| &e.value) {
            Some(Value::Bytes(b)) => Ok(Some(b.clone())),
            Some(Value::Set(_)) => Err(StoreError::Protocol("wrong type".into())),
            None => Ok(None),
        })
    }

    pub(super) async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.with(|m| Ok(Self::live(m, key).is_some()))
    }

    pub(super) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
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

    pub(super) async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.with(|m| Ok(Self::live(m, key).is_some() && m.remove(key).is_some()))
    }

    pub(super) async fn set_add(
        &self,
        key: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let expires = Instant::now() + ttl;
        self.with(|m| {
            let entry = match Self::live(m, key) {
                Some(e) => e,
                None => m.entry(key.to_string()).or_insert(Entry {
                    value: Value::Set(HashSet::new()),
                    expires,
                }),
            };
            entry.expires = entry.expires.max(expires);
            match &mut entry.value {
                Value::Set(s) => {
                    s.insert(member.to_string());
                    Ok(())
                }
                Value::Bytes(_) => Err(StoreError::Protocol("wrong type".into())),
            }
        })
    }

    pub(super) async fn set_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        self.with(|m| {
            if let Some(Entry {
                value: Value::Set(s),
                ..
            }) = Self::live(m, key)
            {
                s.remove(member);
            }
            Ok(())
        })
    }

    pub(super) async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        self.with(|m| match Self::live(m, key).map(|e| &e.value) {
            Some(Value::Set(s)) => Ok(s.iter().cloned().collect()),
            Some(Value::Bytes(_)) => Err(StoreError::Protocol("wrong type".into())),
            None => Ok(Vec::new()),
        })
    }

    pub(super) async fn publish(&self, key: &str) -> Result<(), StoreError> {
        // No receiver is not an error: nothing is cached yet.
        let _ = self.invalidations.send(Invalidation::Key(key.to_string()));
        Ok(())
    }

    /// The in-process `revoke_entry.lua`: the same steps under one lock, so no lookup sees the
    /// entry gone but its pointer or index member still there (or the reverse).
    pub(super) async fn revoke_entry(&self, r: &EntryRevocation<'_>) -> Result<bool, StoreError> {
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
                let now_empty = match Self::live(m, set) {
                    Some(Entry {
                        value: Value::Set(s),
                        ..
                    }) => {
                        s.remove(member);
                        s.is_empty()
                    }
                    _ => false,
                };
                // Redis deletes a set with its last member; so does this store.
                if now_empty {
                    m.remove(set);
                }
            }
            let _ = self
                .invalidations
                .send(Invalidation::Key(r.invalidation.to_string()));
            Ok(true)
        })
    }

    /// The in-process `revoke_marker.lua`: marker and invalidation in one locked step.
    pub(super) async fn mark_revoked(
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

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.invalidations.subscribe()
    }
}
