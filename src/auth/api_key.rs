//! API keys: generated with 256 random bits, shown once, stored only as a hash.
//!
//! Store layout (every key has a TTL equal to the API key's remaining life):
//! - `<prefix>apikey:{<hash>}` → the [`KeyRecord`] as JSON, looked up per request on a miss;
//! - `<prefix>apikey-id:{<id>}` → `<hash>`, to revoke by id;
//! - `<prefix>consumer-keys:{<consumer>}` → set of ids, to list a consumer's keys.
//!
//! A revocation is one atomic store operation ([`Store::revoke_entry`]) over these three keys
//! plus the invalidation it publishes; the reads before it change nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cache::KEY_CREATED_PREFIX;
use crate::principal::{unix_now, Credential, Principal};
use crate::store::{EntryRevocation, Invalidation, Store, StoreError};

/// The prefix every generated key starts with, so leaked keys are easy to recognise and scan for.
pub(crate) const KEY_PREFIX: &str = "pc_";

/// What is stored about a key. Never contains the key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    /// Public id, used to list and revoke.
    pub id: String,
    /// The consumer the key belongs to.
    pub consumer: String,
    /// Plan name.
    #[serde(default)]
    pub plan: Option<String>,
    /// Granted scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
}

impl KeyRecord {
    /// The principal this key authenticates.
    pub(crate) fn principal(&self) -> Principal {
        Principal {
            consumer: self.consumer.clone(),
            plan: self.plan.clone(),
            scopes: self.scopes.clone(),
            credential: Credential::ApiKey {
                id: self.id.clone(),
            },
            expires_at: Some(self.expires_at),
            headers: Vec::new(),
        }
    }
}

/// A key declared in the config, as loaded: its record and the hash of its value (the value
/// itself is not kept).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StaticKey {
    /// What is stored about it.
    pub(crate) record: KeyRecord,
    /// The hash of the key under the snapshot's hasher.
    pub(crate) hash: [u8; 32],
}

/// A request to create a key.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Consumer id (1–128 chars of `[A-Za-z0-9._:@-]`).
    pub consumer: String,
    /// Plan name.
    #[serde(default)]
    pub plan: Option<String>,
    /// Scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Lifetime like "30d"; the configured default when absent.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The system random source failed.
    #[error("no randomness available")]
    Random,
    /// API keys are not configured, so there is no key to create, list or revoke.
    #[error("API keys are not configured ([auth.api_key])")]
    Disabled,
    /// The key is declared in the config: revoking it would last only until the next reload
    /// installs it again, so it is refused.
    #[error("key {id:?} is declared in the config; remove it from [auth.api_key] keys and reload")]
    ConfigKey {
        /// The key's id.
        id: String,
    },
}

/// Hashes keys: HMAC-SHA256 under a server secret, or SHA-256 without one.
#[derive(Clone)]
pub struct KeyHasher {
    secret: Option<Vec<u8>>,
}

impl KeyHasher {
    /// A hasher with an optional server secret.
    pub fn new(secret: Option<Vec<u8>>) -> KeyHasher {
        KeyHasher { secret }
    }

    /// The 32-byte hash of a key.
    pub fn hash(&self, key: &str) -> [u8; 32] {
        match &self.secret {
            Some(secret) => match Hmac::<Sha256>::new_from_slice(secret) {
                Ok(mut mac) => {
                    mac.update(key.as_bytes());
                    mac.finalize().into_bytes().into()
                }
                // HMAC takes keys of any length; this arm cannot be reached.
                Err(_) => Sha256::digest(key.as_bytes()).into(),
            },
            None => Sha256::digest(key.as_bytes()).into(),
        }
    }
}

/// API keys in the store.
#[derive(Clone)]
pub struct KeyStore {
    store: Arc<Store>,
    hasher: KeyHasher,
    default_ttl: Duration,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|_| KeyError::Random)?;
    Ok(buf)
}

fn valid_consumer(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 128
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
}

/// Whether text can be a key id (generated ids are 16 hex characters; config-declared ones
/// are 1-64 characters of `[A-Za-z0-9_-]`).
pub(crate) fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl KeyStore {
    /// Keys in `store`, hashed by `hasher`, living `default_ttl` unless told otherwise.
    pub fn new(store: Arc<Store>, hasher: KeyHasher, default_ttl: Duration) -> KeyStore {
        KeyStore {
            store,
            hasher,
            default_ttl,
        }
    }

    /// The same keys (hasher and lifetime) in another store: the keys CLI compiles the config
    /// over the in-process store and then works on the configured one.
    pub(crate) fn with_store(&self, store: Arc<Store>) -> KeyStore {
        KeyStore {
            store,
            ..self.clone()
        }
    }

    /// The lifetime of keys created without one (and of config-declared keys).
    pub(crate) fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    /// The hasher (the proxy hashes presented keys with it).
    pub fn hasher(&self) -> &KeyHasher {
        &self.hasher
    }

    fn record_key(&self, hash_hex: &str) -> String {
        self.store.key("apikey", hash_hex, "")
    }

    fn id_key(&self, id: &str) -> String {
        self.store.key("apikey-id", id, "")
    }

    fn consumer_key(&self, consumer: &str) -> String {
        self.store.key("consumer-keys", consumer, "")
    }

    /// Creates a key; returns its record and the key itself (shown to the caller once).
    pub async fn create(&self, new: NewKey) -> Result<(KeyRecord, String), KeyError> {
        if !valid_consumer(&new.consumer) {
            return Err(KeyError::Invalid(
                "consumer must be 1-128 characters of A-Z a-z 0-9 . _ : @ -".into(),
            ));
        }
        let ttl = match &new.ttl {
            Some(t) => humantime::parse_duration(t)
                .map_err(|e| KeyError::Invalid(format!("ttl {t:?}: {e}")))?,
            None => self.default_ttl,
        };
        if ttl < Duration::from_secs(1) {
            return Err(KeyError::Invalid("ttl must be at least 1s".into()));
        }
        if ttl > crate::config::MAX_KEY_TTL {
            return Err(KeyError::Invalid("ttl must be at most 3650d".into()));
        }
        let secret = format!(
            "{KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?)
        );
        let now = unix_now();
        let record = KeyRecord {
            id: hex::encode(random_bytes::<8>()?),
            consumer: new.consumer,
            plan: new.plan,
            scopes: new.scopes,
            labels: new.labels,
            created_at: now,
            expires_at: now.saturating_add(ttl.as_secs()),
        };
        self.put(&record, &secret, ttl).await?;
        Ok((record, secret))
    }

    /// Stores a record for a known key (config-declared keys, and `create`).
    pub(crate) async fn put(
        &self,
        record: &KeyRecord,
        secret: &str,
        ttl: Duration,
    ) -> Result<(), KeyError> {
        self.put_hashed(record, &self.hasher.hash(secret), ttl)
            .await
    }

    /// Stores a record for a key known only by its hash.
    async fn put_hashed(
        &self,
        record: &KeyRecord,
        hash: &[u8; 32],
        ttl: Duration,
    ) -> Result<(), KeyError> {
        let hash_hex = hex::encode(hash);
        let json = serde_json::to_vec(record).map_err(|e| KeyError::Invalid(e.to_string()))?;
        self.store
            .set(&self.record_key(&hash_hex), &json, ttl)
            .await?;
        self.store
            .set(&self.id_key(&record.id), hash_hex.as_bytes(), ttl)
            .await?;
        self.store
            .set_add(&self.consumer_key(&record.consumer), &record.id, ttl)
            .await?;
        // A node may remember this hash as unknown; make it forget. A creation is not a
        // revocation: nodes keep caching answers that saw the record (see `DecisionCache`).
        self.store
            .publish_invalidation(&format!("{KEY_CREATED_PREFIX}{hash_hex}"))
            .await?;
        Ok(())
    }

    /// Makes `new` the config-declared keys in the store, replacing `old` (those of the
    /// previous snapshot): new keys are stored, and every old key whose hash is not among the
    /// new ones (removed, or its value rotated) is deleted, so it stops working with this
    /// call rather than at the end of its TTL. Returns the invalidations published, for the
    /// caller to apply to its own decision cache at once.
    pub(crate) async fn replace_static(
        &self,
        old: &[StaticKey],
        new: &[StaticKey],
        ttl: Duration,
    ) -> Result<Vec<Invalidation>, KeyError> {
        let mut invalidations = Vec::new();
        for key in new {
            self.put_hashed(&key.record, &key.hash, ttl).await?;
            // Applied here, not left to this node's own subscription (which may deliver after
            // the reload has returned): an added value may sit in the negative tier from a
            // request before the reload, and a kept one may be cached with its old record
            // (plan, scopes) in the positive tier.
            invalidations.push(Invalidation::Key(format!(
                "apikey:{}",
                hex::encode(key.hash)
            )));
        }
        for gone in old.iter().filter(|o| new.iter().all(|n| n.hash != o.hash)) {
            let hash_hex = hex::encode(gone.hash);
            self.store.delete(&self.record_key(&hash_hex)).await?;
            let successor = new.iter().find(|n| n.record.id == gone.record.id);
            if successor.is_none() {
                // The id now names nothing; with a successor, `put_hashed` already repointed it.
                self.store.delete(&self.id_key(&gone.record.id)).await?;
            }
            if successor.is_none_or(|n| n.record.consumer != gone.record.consumer) {
                self.store
                    .set_remove(&self.consumer_key(&gone.record.consumer), &gone.record.id)
                    .await?;
            }
            let invalidation = format!("apikey:{hash_hex}");
            self.store.publish_invalidation(&invalidation).await?;
            invalidations.push(Invalidation::Key(invalidation));
        }
        Ok(invalidations)
    }

    /// Looks up a key by its hash; `None` when unknown. The caller checks `expires_at`: the
    /// store's TTL removes a key at expiry, but a record read just before is still returned.
    pub async fn lookup(&self, hash: &[u8; 32]) -> Result<Option<KeyRecord>, StoreError> {
        let Some(raw) = self.store.get(&self.record_key(&hex::encode(hash))).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|_| StoreError::Protocol("unreadable key record".into()))
    }

    /// The live keys of a consumer.
    pub async fn list(&self, consumer: &str) -> Result<Vec<KeyRecord>, KeyError> {
        if !valid_consumer(consumer) {
            return Err(KeyError::Invalid("invalid consumer".into()));
        }
        let mut out = Vec::new();
        for id in self.store.set_members(&self.consumer_key(consumer)).await? {
            if let Some(record) = self.by_id(&id).await? {
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn by_id(&self, id: &str) -> Result<Option<KeyRecord>, KeyError> {
        if !valid_key_id(id) {
            return Ok(None);
        }
        let Some(hash_hex) = self.store.get(&self.id_key(id)).await? else {
            return Ok(None);
        };
        let hash_hex = String::from_utf8_lossy(&hash_hex).to_string();
        let Some(raw) = self.store.get(&self.record_key(&hash_hex)).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice(&raw).ok())
    }

    /// Revokes a key by id and tells every node; whether it existed.
    pub async fn revoke(&self, id: &str) -> Result<bool, KeyError> {
        Ok(self.revoke_returning_invalidation(id).await?.is_some())
    }

    /// Revokes a key by id and tells every node, in one atomic store operation; the
    /// invalidation published (for the calling node to apply to its own cache at once), or
    /// `None` when there was no such key (or a concurrent revocation took it first). On a store
    /// error the key is either wholly revoked and announced or untouched.
    pub(crate) async fn revoke_returning_invalidation(
        &self,
        id: &str,
    ) -> Result<Option<Invalidation>, KeyError> {
        if !valid_key_id(id) {
            return Ok(None);
        }
        // Reading first changes nothing, so a timeout here leaves the key as it was; the
        // revocation itself is the one atomic `revoke_entry` below.
        let id_key = self.id_key(id);
        let Some(hash_hex) = self.store.get(&id_key).await? else {
            return Ok(None);
        };
        let hash_hex = String::from_utf8_lossy(&hash_hex).to_string();
        let record_key = self.record_key(&hash_hex);
        let consumer = match self.store.get(&record_key).await? {
            Some(raw) => serde_json::from_slice::<KeyRecord>(&raw)
                .ok()
                .map(|record| record.consumer),
            None => None,
        };
        let consumer_key = consumer.map(|c| self.consumer_key(&c));
        let invalidation = format!("apikey:{hash_hex}");
        let revoked = self
            .store
            .revoke_entry(&EntryRevocation {
                pointer: &id_key,
                pointer_value: &hash_hex,
                entry: &record_key,
                index: consumer_key.as_deref().map(|set| (set, id)),
                invalidation: &invalidation,
            })
            .await?;
        Ok(revoked.then_some(Invalidation::Key(invalidation)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeyStore {
        let store = Store::from_config(None, &prometheus::Registry::new()).expect("memory store");
        KeyStore::new(store, KeyHasher::new(None), Duration::from_secs(3600))
    }

    #[tokio::test]
    async fn created_key_is_found_by_hash_listed_without_secret_and_revoked() {
        let ks = keys();
        let (record, secret) = ks
            .create(NewKey {
                consumer: "alice".into(),
                plan: Some("gold".into()),
                ..NewKey::default()
            })
            .await
            .expect("create");
        assert!(
            secret.starts_with(KEY_PREFIX) && secret.len() >= 3 + 43,
            "{secret}"
        );
        let found = ks.lookup(&ks.hasher().hash(&secret)).await.expect("lookup");
        assert_eq!(
            found.as_ref().map(|r| r.id.as_str()),
            Some(record.id.as_str())
        );
        let listed = ks.list("alice").await.expect("list");
        assert_eq!(listed.len(), 1);
        assert!(!serde_json::to_string(&listed)
            .expect("json")
            .contains(&secret));
        assert!(ks.revoke(&record.id).await.expect("revoke"));
        assert!(ks
            .lookup(&ks.hasher().hash(&secret))
            .await
            .expect("lookup")
            .is_none());
        assert!(!ks.revoke(&record.id).await.expect("revoke again"));
    }

    #[test]
    fn hmac_and_plain_hashes_differ_and_are_stable() {
        let plain = KeyHasher::new(None);
        let keyed = KeyHasher::new(Some(b"pepper".to_vec()));
        assert_eq!(plain.hash("k"), plain.hash("k"));
        assert_ne!(plain.hash("k"), keyed.hash("k"));
    }

    #[tokio::test]
    async fn invalid_consumers_and_ttls_are_refused() {
        let ks = keys();
        for (consumer, ttl) in [
            ("", None),
            ("a b", None),
            ("ok", Some("soon")),
            ("ok", Some("0s")),
            ("ok", Some("3651d")),
            ("ok", Some("584942417355y")),
            ("ok", Some("1e30s")),
            ("ok", Some("-5s")),
            ("ok", Some("NaN")),
        ] {
            let r = ks
                .create(NewKey {
                    consumer: consumer.into(),
                    ttl: ttl.map(String::from),
                    ..NewKey::default()
                })
                .await;
            assert!(
                matches!(r, Err(KeyError::Invalid(_))),
                "{consumer:?} {ttl:?}"
            );
        }
    }
}
