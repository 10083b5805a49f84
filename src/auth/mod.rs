//! Authentication: API keys and JWTs, checked in the order a route lists them, behind a
//! two-tier decision cache (the local [`cache::DecisionCache`], then the store).
//!
//! The first method whose credential is present decides; a route whose methods find no
//! credential answers 401. The store being unreachable is never the client's fault: unknown
//! credentials then get 503 `store_unavailable` (or pass anonymously where a route says so),
//! while credentials already in the local tier keep working.

pub(crate) mod api_key;
pub(crate) mod cache;
mod identity;
pub mod jwks;
pub mod jwt;
pub(crate) mod settings;

pub(crate) use identity::{apply_identity, X_CONSUMER_ID};

use std::sync::Arc;

use http::HeaderName;
use pingora::http::RequestHeader;
use prometheus::{IntCounterVec, Opts, Registry};

pub(crate) use api_key::StaticKey;
pub use api_key::{KeyError, KeyHasher, KeyRecord, KeyStore, NewKey};
pub use cache::{CacheMetrics, Cached, DecisionCache};
// Re-exported for callers that name them through auth; new code uses `crate::principal`.
pub use crate::principal::{Credential, Principal};

use crate::config::{AuthMethod, AuthStoreFailure};
use crate::principal::unix_now;
use crate::store::{Store, StoreError};
use jwt::{JwtError, JwtVerifier};
use sha2::{Digest, Sha256};

/// Why a request was not authenticated. Never carries the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential for any of the route's methods.
    Missing,
    /// The API key is unknown.
    InvalidKey,
    /// The API key has expired.
    ExpiredKey,
    /// The token is invalid: `(metric result, WWW-Authenticate value)`.
    InvalidToken(&'static str, &'static str),
    /// The credential was revoked.
    Revoked,
    /// Authenticated, but without a required scope.
    InsufficientScope,
    /// The store could not be asked about an unknown credential.
    StoreUnavailable,
    /// No JWKS key set could be loaded yet, so a token naming none of the configured keys
    /// cannot be checked.
    JwksUnavailable,
}

impl AuthFailure {
    /// HTTP status.
    pub(crate) fn status(&self) -> u16 {
        match self {
            AuthFailure::InsufficientScope => 403,
            AuthFailure::StoreUnavailable | AuthFailure::JwksUnavailable => 503,
            _ => 401,
        }
    }

    /// Machine code for the JSON body.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "credentials_missing",
            AuthFailure::InvalidKey => "invalid_api_key",
            AuthFailure::ExpiredKey => "expired_api_key",
            AuthFailure::InvalidToken(..) => "invalid_token",
            AuthFailure::Revoked => "credentials_revoked",
            AuthFailure::InsufficientScope => "insufficient_scope",
            AuthFailure::StoreUnavailable => "store_unavailable",
            AuthFailure::JwksUnavailable => "jwks_unavailable",
        }
    }

    /// Human text for the JSON body; fixed strings, never request data.
    pub(crate) fn message(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "this route needs credentials",
            AuthFailure::InvalidKey => "the API key is not valid",
            AuthFailure::ExpiredKey => "the API key has expired",
            AuthFailure::InvalidToken(..) => "the token is not valid",
            AuthFailure::Revoked => "the credentials were revoked",
            AuthFailure::InsufficientScope => "the credentials lack a scope this route requires",
            AuthFailure::StoreUnavailable => "credentials cannot be checked right now; retry later",
            AuthFailure::JwksUnavailable => {
                "the token signing keys cannot be loaded right now; retry later"
            }
        }
    }

    /// A credential was presented and refused (what `[rate_limit.failed_auth]` counts): not
    /// a missing one, not a valid one lacking a scope, not a store failure.
    pub(crate) fn is_rejected_credential(&self) -> bool {
        matches!(
            self,
            AuthFailure::InvalidKey
                | AuthFailure::ExpiredKey
                | AuthFailure::InvalidToken(..)
                | AuthFailure::Revoked
        )
    }

    /// The `result` label of the decision metric.
    pub(crate) fn result(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::InvalidKey => "invalid",
            AuthFailure::ExpiredKey => "expired",
            AuthFailure::InvalidToken(result, _) => result,
            AuthFailure::Revoked => "revoked",
            AuthFailure::InsufficientScope => "insufficient_scope",
            AuthFailure::StoreUnavailable => "store_error",
            AuthFailure::JwksUnavailable => "jwks_unavailable",
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 for bearer tokens).
    pub(crate) fn challenge(&self, methods: &[AuthMethod]) -> Option<&'static str> {
        match self {
            AuthFailure::InvalidToken(_, challenge) => Some(challenge),
            AuthFailure::InsufficientScope if methods.contains(&AuthMethod::Jwt) => {
                Some("Bearer error=\"insufficient_scope\"")
            }
            AuthFailure::Revoked if methods.contains(&AuthMethod::Jwt) => {
                Some("Bearer error=\"invalid_token\", error_description=\"token revoked\"")
            }
            AuthFailure::Missing
            | AuthFailure::Revoked
            | AuthFailure::InvalidKey
            | AuthFailure::ExpiredKey => Some(if methods.first() == Some(&AuthMethod::Jwt) {
                "Bearer"
            } else {
                "ApiKey"
            }),
            _ => None,
        }
    }
}

/// Where API keys are read from.
pub struct ApiKeySource {
    /// Header carrying the key.
    pub header: HeaderName,
    /// Query parameter carrying the key, if enabled.
    pub query_param: Option<String>,
}

/// The per-route part of authentication, compiled at config load.
#[derive(Debug, Clone, Default)]
pub struct RouteAuth {
    /// Methods in order; empty = public.
    pub methods: Vec<AuthMethod>,
    /// Scopes required.
    pub required_scopes: Vec<String>,
    /// Do not strip credentials before proxying.
    pub forward_credentials: bool,
    /// Behaviour when the store cannot answer.
    pub on_store_error: AuthStoreFailure,
}

/// Decision counters by route, method and result.
#[derive(Clone)]
pub struct AuthMetrics {
    decisions: IntCounterVec,
}

impl AuthMetrics {
    /// Registers `portcullis_auth_decisions_total{route,method,result}`.
    ///
    /// # Panics
    /// If registered twice (a wiring bug).
    pub fn new(registry: &Registry) -> AuthMetrics {
        let decisions = IntCounterVec::new(
            Opts::new(
                "portcullis_auth_decisions_total",
                "Authentication decisions by route, method and result.",
            ),
            &["route", "method", "result"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(decisions.clone()))
            .expect("auth metrics registered once");
        AuthMetrics { decisions }
    }

    fn record(&self, route: &str, method: &str, result: &str) {
        self.decisions
            .with_label_values(&[route, method, result])
            .inc();
    }
}

/// The process-wide parts of authentication: store, local cache, metrics.
///
/// The fields are private so that every operation that changes what a credential is worth
/// (revoking a key or a token, replacing config-declared keys) goes through one method that
/// also updates this node's cache: callers ask, they do not reach into the cache.
pub struct AuthShared {
    /// The store holding keys and revocations.
    store: Arc<Store>,
    /// The local tier.
    cache: DecisionCache,
    /// Decision metrics.
    metrics: AuthMetrics,
}

impl AuthShared {
    /// The shared parts over `store`, with `cache` as the local tier.
    pub fn new(store: Arc<Store>, cache: DecisionCache, metrics: AuthMetrics) -> AuthShared {
        AuthShared {
            store,
            cache,
            metrics,
        }
    }

    /// The store holding keys and revocations.
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Forgets every cached decision (the auth settings changed, so none of them holds).
    pub fn clear_decisions(&self) {
        self.cache.clear();
    }

    /// Applies invalidations from every node to the local tier, until the store goes away.
    pub(crate) async fn follow_invalidations(self: Arc<Self>) {
        let mut rx = self.store.invalidations();
        loop {
            match rx.recv().await {
                Ok(inv) => self.cache.apply(&inv),
                // Fell behind: some invalidations are lost, so nothing cached can be trusted.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.cache.apply(&crate::store::Invalidation::Reset)
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Revokes the API key `id` of `keys` on every node, in one atomic store operation;
    /// whether it existed. This node forgets the key before the call returns, so a caller told
    /// "revoked" can never use the key here again; the others learn it from the store.
    pub(crate) async fn revoke_key(&self, keys: &KeyStore, id: &str) -> Result<bool, KeyError> {
        let Some(invalidation) = keys.revoke_returning_invalidation(id).await? else {
            return Ok(false);
        };
        self.cache.apply(&invalidation);
        Ok(true)
    }

    /// Makes `new` the config-declared keys in the store in place of `old` (see
    /// [`KeyStore::replace_static`]); this node forgets the purged keys before the call
    /// returns, the others learn it from the store.
    pub(crate) async fn replace_static_keys(
        &self,
        keys: &KeyStore,
        old: &[StaticKey],
        new: &[StaticKey],
        ttl: std::time::Duration,
    ) -> Result<(), KeyError> {
        for invalidation in keys.replace_static(old, new, ttl).await? {
            self.cache.apply(&invalidation);
        }
        Ok(())
    }

    /// Records a revoked token id until `expires_at` (unix seconds) and tells every node, in
    /// one atomic store operation (a timeout never leaves a marker the nodes were not told of).
    pub(crate) async fn revoke_jti(&self, jti: &str, expires_at: u64) -> Result<(), StoreError> {
        let ttl = expires_at.saturating_sub(unix_now()).max(1);
        let key = self.store.key("revoked-jti", jti, "");
        let invalidation = format!("jti:{jti}");
        // This node refuses the token before the call returns; the others learn it from the
        // store (without this, the node that revoked it relied on its own subscription too).
        self.cache
            .apply(&crate::store::Invalidation::Key(invalidation.clone()));
        self.store
            .mark_revoked(&key, std::time::Duration::from_secs(ttl), &invalidation)
            .await
    }

    async fn is_jti_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        if self.cache.is_revoked_locally(jti) {
            return Ok(true);
        }
        self.store
            .exists(&self.store.key("revoked-jti", jti, ""))
            .await
    }
}

/// Authentication as configured in the current snapshot.
pub struct Authenticator {
    shared: Arc<AuthShared>,
    api_key: Option<(ApiKeySource, KeyStore)>,
    jwt: Option<Arc<JwtVerifier>>,
    /// Headers the gateway sets from claims; clients may never send them.
    claim_headers: Vec<HeaderName>,
    /// Config-declared API keys of this snapshot; a reload that drops one purges it.
    static_keys: Vec<StaticKey>,
}

/// Longest credential looked at; longer ones are rejected before hashing or store lookups.
const MAX_API_KEY_LEN: usize = 256;

impl Authenticator {
    /// Authentication over the shared parts with the snapshot's API key and JWT settings;
    /// `claim_headers` are the targets of `claims_to_headers`.
    pub fn new(
        shared: Arc<AuthShared>,
        api_key: Option<(ApiKeySource, KeyStore)>,
        jwt: Option<Arc<JwtVerifier>>,
        claim_headers: Vec<HeaderName>,
    ) -> Authenticator {
        Authenticator {
            shared,
            api_key,
            jwt,
            claim_headers,
            static_keys: Vec::new(),
        }
    }

    /// The same authenticator, declaring `keys` as this snapshot's config-declared API keys.
    pub(crate) fn with_static_keys(mut self, keys: Vec<StaticKey>) -> Authenticator {
        self.static_keys = keys;
        self
    }

    /// The config-declared API keys of this snapshot.
    pub(crate) fn static_keys(&self) -> &[StaticKey] {
        &self.static_keys
    }

    /// The JWT verifier, when JWTs are configured.
    pub(crate) fn jwt(&self) -> Option<&Arc<JwtVerifier>> {
        self.jwt.as_ref()
    }

    /// Headers set from claims, which are removed from every client request.
    pub(crate) fn claim_headers(&self) -> &[HeaderName] {
        &self.claim_headers
    }

    /// Starts the JWKS background refresh unless it runs already; call from inside a tokio
    /// runtime. The flag lives on the client, which a reload with unchanged JWKS settings
    /// keeps, so reloads never add loops.
    pub(crate) fn ensure_jwks_refresh(&self) {
        if let Some(client) = self.jwt.as_ref().and_then(|v| v.jwks()) {
            client.ensure_refresh();
        }
    }

    /// The key store, when API keys are configured.
    pub(crate) fn keys(&self) -> Option<&KeyStore> {
        self.api_key.as_ref().map(|(_, k)| k)
    }

    /// Where API keys are read from, when configured.
    pub(crate) fn api_key_source(&self) -> Option<&ApiKeySource> {
        self.api_key.as_ref().map(|(s, _)| s)
    }

    /// The key store, or [`KeyError::Disabled`] when API keys are not configured.
    fn key_store(&self) -> Result<&KeyStore, KeyError> {
        self.keys().ok_or(KeyError::Disabled)
    }

    /// Creates an API key; its record and the key itself (shown to the caller once).
    pub(crate) async fn create_key(&self, new: NewKey) -> Result<(KeyRecord, String), KeyError> {
        self.key_store()?.create(new).await
    }

    /// The live API keys of a consumer.
    pub(crate) async fn list_keys(&self, consumer: &str) -> Result<Vec<KeyRecord>, KeyError> {
        self.key_store()?.list(consumer).await
    }

    /// Revokes an API key by id on every node, this one before returning; whether it existed.
    /// A config-declared key is refused ([`KeyError::ConfigKey`]): the next reload would
    /// install it again, so "revoked" would be a lie.
    pub(crate) async fn revoke_key(&self, id: &str) -> Result<bool, KeyError> {
        let keys = self.key_store()?;
        if self.static_keys.iter().any(|k| k.record.id == id) {
            return Err(KeyError::ConfigKey { id: id.to_string() });
        }
        self.shared.revoke_key(keys, id).await
    }

    /// Revokes a token id until `expires_at` (unix seconds) on every node, this one before
    /// returning.
    pub(crate) async fn revoke_jti(&self, jti: &str, expires_at: u64) -> Result<(), StoreError> {
        self.shared.revoke_jti(jti, expires_at).await
    }

    /// Authenticates a request for a route; `Ok(None)` lets it through anonymously.
    pub async fn authenticate(
        &self,
        req: &RequestHeader,
        route_name: &str,
        route: &RouteAuth,
    ) -> Result<Option<Arc<Principal>>, AuthFailure> {
        for method in &route.methods {
            let (label, result) = match method {
                AuthMethod::ApiKey => match self.api_key_of(req) {
                    Some(key) => ("api_key", self.check_api_key(key).await),
                    None => continue,
                },
                AuthMethod::Jwt => match bearer_token(req) {
                    Some(token) => ("jwt", self.check_jwt(token).await),
                    None => continue,
                },
            };
            let result = match result {
                Ok(p) if !p.has_scopes(&route.required_scopes) => {
                    Err(AuthFailure::InsufficientScope)
                }
                Err(AuthFailure::StoreUnavailable)
                    if route.on_store_error == AuthStoreFailure::Allow =>
                {
                    self.shared.metrics.record(route_name, label, "store_error");
                    return Ok(None);
                }
                other => other,
            };
            self.shared.metrics.record(
                route_name,
                label,
                result.as_ref().map_or_else(|f| f.result(), |_| "ok"),
            );
            return result.map(Some);
        }
        self.shared.metrics.record(route_name, "none", "missing");
        Err(AuthFailure::Missing)
    }

    /// The decision for a request that this node's local tier already holds as valid, for
    /// a client that may cost neither the store nor a signature check (its network is over
    /// `[rate_limit.failed_auth]`, and may be shared with legitimate clients). Looks at the
    /// credential `authenticate` would decide by, under the cache key `check_api_key` or
    /// `check_jwt` derives for it: `Some` when that key is a known valid credential (the
    /// principal, or `InsufficientScope` without the route's scopes), `None` when deciding
    /// would need the store or a verification.
    pub(crate) fn authenticate_cached(
        &self,
        req: &RequestHeader,
        route_name: &str,
        route: &RouteAuth,
    ) -> Option<Result<Arc<Principal>, AuthFailure>> {
        for method in &route.methods {
            let (label, hash) = match method {
                AuthMethod::ApiKey => {
                    let Some(key) = self.api_key_of(req) else {
                        continue;
                    };
                    let (_, keys) = self.api_key.as_ref()?;
                    if key.is_empty() || key.len() > MAX_API_KEY_LEN {
                        return None;
                    }
                    ("api_key", keys.hasher().hash(key))
                }
                AuthMethod::Jwt => {
                    let Some(token) = bearer_token(req) else {
                        continue;
                    };
                    let verifier = self.jwt.as_ref()?;
                    if token.len() > jwt::MAX_TOKEN_BYTES {
                        return None;
                    }
                    ("jwt", jwt_cache_key(token, &verifier.key_fingerprint()))
                }
            };
            let Cached::Known(p) = self.shared.cache.get(&hash) else {
                return None;
            };
            let result = if p.has_scopes(&route.required_scopes) {
                Ok(p)
            } else {
                Err(AuthFailure::InsufficientScope)
            };
            let outcome = result.as_ref().map_or_else(|f| f.result(), |_| "ok");
            self.shared.metrics.record(route_name, label, outcome);
            return Some(result);
        }
        None
    }

    /// The API key in the request, from the header or the query parameter.
    fn api_key_of<'a>(&self, req: &'a RequestHeader) -> Option<&'a str> {
        let (source, _) = self.api_key.as_ref()?;
        if let Some(v) = req.headers.get(&source.header) {
            return Some(v.to_str().unwrap_or("").trim());
        }
        let param = source.query_param.as_deref()?;
        query_value(req.uri.query()?, param)
    }

    async fn check_api_key(&self, key: &str) -> Result<Arc<Principal>, AuthFailure> {
        let Some((_, keys)) = &self.api_key else {
            return Err(AuthFailure::InvalidKey);
        };
        if key.is_empty() || key.len() > MAX_API_KEY_LEN {
            return Err(AuthFailure::InvalidKey);
        }
        let hash = keys.hasher().hash(key);
        match self.shared.cache.get(&hash) {
            Cached::Known(p) => return Ok(p),
            Cached::Unknown => return Err(AuthFailure::InvalidKey),
            Cached::Miss => {}
        }
        // Taken before the store is asked, so a revocation landing meanwhile is not undone.
        let ticket = self.shared.cache.ticket();
        match keys.lookup(&hash).await {
            Ok(Some(record)) if record.expires_at <= unix_now() => Err(AuthFailure::ExpiredKey),
            Ok(Some(record)) => {
                let p = Arc::new(record.principal());
                self.shared.cache.put_known_since(hash, p.clone(), ticket);
                Ok(p)
            }
            Ok(None) => {
                self.shared.cache.put_unknown_since(hash, ticket);
                Err(AuthFailure::InvalidKey)
            }
            Err(e) => {
                log::warn!("api key lookup failed: {e}");
                Err(AuthFailure::StoreUnavailable)
            }
        }
    }
}

impl Authenticator {
    async fn check_jwt(&self, token: &str) -> Result<Arc<Principal>, AuthFailure> {
        let Some(verifier) = &self.jwt else {
            return Err(token_failure(&JwtError::UnknownKey));
        };
        if token.len() > jwt::MAX_TOKEN_BYTES {
            return Err(token_failure(&JwtError::Malformed));
        }
        // Decisions are cached under the content of the keys that verified them: a rotated or
        // removed key makes them unusable, a refetch that changes nothing leaves them valid.
        let hash = jwt_cache_key(token, &verifier.key_fingerprint());
        if let Cached::Known(p) = self.shared.cache.get(&hash) {
            return Ok(p);
        }
        let ticket = self.shared.cache.ticket();
        let (verified, fingerprint) = verifier
            .verify_with_fingerprint(token)
            .await
            .map_err(|e| token_failure(&e))?;
        let hash = jwt_cache_key(token, &fingerprint);
        if let Some(jti) = &verified.jti {
            match self.shared.is_jti_revoked(jti).await {
                Ok(true) => return Err(AuthFailure::Revoked),
                Ok(false) => {}
                Err(e) => {
                    log::warn!("token revocation check failed: {e}");
                    return Err(AuthFailure::StoreUnavailable);
                }
            }
        }
        let p = Arc::new(Principal {
            consumer: verified.consumer,
            plan: None,
            scopes: verified.scopes,
            credential: Credential::Jwt { jti: verified.jti },
            expires_at: verified.expires_at,
            headers: verified.headers,
        });
        self.shared.cache.put_known_since(hash, p.clone(), ticket);
        Ok(p)
    }
}

fn token_failure(e: &JwtError) -> AuthFailure {
    if *e == JwtError::KeysUnavailable {
        return AuthFailure::JwksUnavailable;
    }
    let result = if matches!(e, JwtError::Expired) {
        "expired"
    } else {
        "invalid"
    };
    AuthFailure::InvalidToken(result, e.www_authenticate())
}

/// The decision-cache key of a token under `fingerprint`, the verifier's
/// [`JwtVerifier::key_fingerprint`]: the keys *and* the claim rules, so a decision made under
/// one snapshot's rules is never served by another's (a request still holding the old snapshot
/// during a reload caches under the old fingerprint). Domain-separated from API-key hashes, so
/// a token sent as an API key can never hit the token's cached decision (and the reverse).
fn jwt_cache_key(token: &str, fingerprint: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"portcullis-jwt\0");
    h.update(fingerprint);
    h.update(token.as_bytes());
    h.finalize().into()
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(req: &RequestHeader) -> Option<&str> {
    let value = req
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The raw value of a query parameter (first occurrence).
pub(crate) fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::identity::query_without;
    use super::*;

    /// An authenticator over the in-process store, with API keys read from `x-api-key` when
    /// `api_keys` is set.
    fn authenticator(api_keys: bool) -> Authenticator {
        let registry = Registry::new();
        let store = Store::from_config(None, &registry).expect("in-process store");
        let cache = DecisionCache::new(
            1000,
            Duration::from_secs(300),
            1000,
            Duration::from_secs(5),
            CacheMetrics::new(&registry),
        );
        let keys = KeyStore::new(
            store.clone(),
            KeyHasher::new(None),
            Duration::from_secs(3600),
        );
        let shared = Arc::new(AuthShared::new(store, cache, AuthMetrics::new(&registry)));
        let source = ApiKeySource {
            header: HeaderName::from_static("x-api-key"),
            query_param: None,
        };
        Authenticator::new(shared, api_keys.then_some((source, keys)), None, Vec::new())
    }

    fn api_key_route() -> RouteAuth {
        RouteAuth {
            methods: vec![AuthMethod::ApiKey],
            ..RouteAuth::default()
        }
    }

    fn request_with_key(key: &str) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        req.insert_header("x-api-key", key).expect("header");
        req
    }

    #[tokio::test]
    async fn a_revoked_key_is_refused_here_as_soon_as_revoke_returns() {
        let auth = authenticator(true);
        let (record, key) = auth
            .create_key(NewKey {
                consumer: "alice".into(),
                ..NewKey::default()
            })
            .await
            .expect("create");
        let req = request_with_key(&key);
        let first = auth.authenticate(&req, "r", &api_key_route()).await;
        assert_eq!(
            first
                .expect("a live key passes")
                .map(|p| p.consumer.clone()),
            Some("alice".to_string())
        );
        // The decision is now in the local tier, and nothing follows the store's
        // invalidations here: only the revocation itself can make this node forget it.
        assert!(auth.revoke_key(&record.id).await.expect("revoke"));
        let after = auth.authenticate(&req, "r", &api_key_route()).await;
        assert_eq!(after.map(|_| ()), Err(AuthFailure::InvalidKey));
        assert!(!auth.revoke_key(&record.id).await.expect("revoke again"));
    }

    #[tokio::test]
    async fn a_revoked_token_id_is_known_here_as_soon_as_revoke_returns() {
        let auth = authenticator(false);
        auth.revoke_jti("token-1", unix_now() + 60)
            .await
            .expect("revoke jti");
        assert!(auth.shared.cache.is_revoked_locally("token-1"));
        assert!(!auth.shared.cache.is_revoked_locally("token-2"));
    }

    #[tokio::test]
    async fn replaced_declared_keys_are_forgotten_here_as_soon_as_the_call_returns() {
        let auth = authenticator(true);
        let keys = auth.keys().expect("api keys").clone();
        let declared = |id: &str, value: &str| StaticKey {
            record: KeyRecord {
                id: id.into(),
                consumer: "svc".into(),
                plan: None,
                scopes: Vec::new(),
                labels: Default::default(),
                created_at: unix_now(),
                expires_at: unix_now() + 3600,
            },
            hash: keys.hasher().hash(value),
        };
        let old = [declared("svc", "pc_old-value")];
        let new = [declared("svc", "pc_new-value")];
        let ttl = Duration::from_secs(3600);
        auth.shared
            .replace_static_keys(&keys, &[], &old, ttl)
            .await
            .expect("install");
        let old_req = request_with_key("pc_old-value");
        assert!(auth
            .authenticate(&old_req, "r", &api_key_route())
            .await
            .is_ok());
        auth.shared
            .replace_static_keys(&keys, &old, &new, ttl)
            .await
            .expect("rotate");
        let after = auth.authenticate(&old_req, "r", &api_key_route()).await;
        assert_eq!(after.map(|_| ()), Err(AuthFailure::InvalidKey));
        let new_req = request_with_key("pc_new-value");
        assert!(auth
            .authenticate(&new_req, "r", &api_key_route())
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_declared_key_added_by_a_reload_works_here_as_soon_as_the_call_returns() {
        let auth = authenticator(true);
        let keys = auth.keys().expect("api keys").clone();
        let declared = StaticKey {
            record: KeyRecord {
                id: "svc".into(),
                consumer: "svc".into(),
                plan: None,
                scopes: Vec::new(),
                labels: Default::default(),
                created_at: unix_now(),
                expires_at: unix_now() + 3600,
            },
            hash: keys.hasher().hash("pc_added-by-reload"),
        };
        let req = request_with_key("pc_added-by-reload");
        // Answered "unknown" before the reload: the answer sits in the negative tier.
        let before = auth.authenticate(&req, "r", &api_key_route()).await;
        assert_eq!(before.map(|_| ()), Err(AuthFailure::InvalidKey));
        auth.shared
            .replace_static_keys(&keys, &[], &[declared], Duration::from_secs(3600))
            .await
            .expect("install");
        // No subscription has run in between: the call itself must have dropped that answer.
        assert!(auth.authenticate(&req, "r", &api_key_route()).await.is_ok());
    }

    #[tokio::test]
    async fn only_a_key_cached_as_valid_is_decided_without_the_store() {
        let auth = authenticator(true);
        let (_, key) = auth
            .create_key(NewKey {
                consumer: "alice".into(),
                scopes: vec!["orders:read".into()],
                ..NewKey::default()
            })
            .await
            .expect("create");
        let req = request_with_key(&key);
        let route = api_key_route();
        assert!(
            auth.authenticate_cached(&req, "r", &route).is_none(),
            "not yet in the local tier"
        );
        auth.authenticate(&req, "r", &route).await.expect("valid");
        let cached = auth.authenticate_cached(&req, "r", &route);
        let consumer = cached.map(|r| r.map(|p| p.consumer.clone()));
        assert_eq!(consumer, Some(Ok("alice".to_string())));
        // Scopes still apply.
        let scoped = RouteAuth {
            required_scopes: vec!["orders:write".into()],
            ..api_key_route()
        };
        let refused = auth.authenticate_cached(&req, "r", &scoped);
        assert_eq!(
            refused.map(|r| r.map(|_| ())),
            Some(Err(AuthFailure::InsufficientScope))
        );
        // A key known not to exist is not decided here either: it is refused by the caller.
        let unknown = request_with_key("pc_not-a-key");
        assert!(auth.authenticate(&unknown, "r", &route).await.is_err());
        assert!(auth.authenticate_cached(&unknown, "r", &route).is_none());
        // No credential, or one for no configured method: nothing to decide.
        let bare = RequestHeader::build("GET", b"/", None).expect("request");
        assert!(auth.authenticate_cached(&bare, "r", &route).is_none());
    }

    #[tokio::test]
    async fn key_operations_without_api_keys_say_they_are_disabled() {
        let auth = authenticator(false);
        let created = auth.create_key(NewKey::default()).await;
        assert!(matches!(created, Err(KeyError::Disabled)), "{created:?}");
        let listed = auth.list_keys("alice").await;
        assert!(matches!(listed, Err(KeyError::Disabled)), "{listed:?}");
        let revoked = auth.revoke_key("0123456789abcdef").await;
        assert!(matches!(revoked, Err(KeyError::Disabled)), "{revoked:?}");
    }

    #[tokio::test]
    async fn a_jwt_decision_cached_under_one_runtimes_claim_rules_is_not_served_under_another() {
        use jwt::test_support::{config, sign};
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = "a-long-enough-test-secret-for-hs256-0123456789";
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, secret).expect("write secret");
        let jwt_auth = |shared: &Arc<AuthShared>, audience: &str| {
            let cfg = config(&format!(
                "audiences = [{audience:?}]\n\
                 [[keys]]\nalgorithm = \"HS256\"\nsecret_file = {secret_file:?}\n"
            ));
            let verifier = Arc::new(JwtVerifier::new(&cfg).expect("verifier"));
            Authenticator::new(shared.clone(), None, Some(verifier), Vec::new())
        };
        // One process-wide cache, as across a reload: `old` is the snapshot a request still
        // holds, `new` the one swapped in, with another audience.
        let shared = authenticator(false).shared;
        let (old, new) = (jwt_auth(&shared, "old-api"), jwt_auth(&shared, "new-api"));
        let now = unix_now();
        let claims = serde_json::json!({ "sub": "alice", "aud": "old-api", "exp": now + 600 });
        let token = sign(
            jsonwebtoken::Algorithm::HS256,
            None,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        );
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        req.insert_header("authorization", format!("Bearer {token}"))
            .expect("header");
        let route = RouteAuth {
            methods: vec![AuthMethod::Jwt],
            ..RouteAuth::default()
        };
        let accepted = old.authenticate(&req, "r", &route).await;
        assert!(matches!(accepted, Ok(Some(_))), "{accepted:?}");
        let refused = new.authenticate(&req, "r", &route).await;
        assert!(
            matches!(refused, Err(AuthFailure::InvalidToken(..))),
            "the old rules' cached decision was served: {refused:?}"
        );
    }

    #[test]
    fn query_helpers_find_and_strip_a_parameter() {
        assert_eq!(query_value("a=1&api_key=xyz&b=2", "api_key"), Some("xyz"));
        assert_eq!(query_value("a=1", "api_key"), None);
        assert_eq!(
            query_without("a=1&api_key=xyz&b=2", "api_key").as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(query_without("api_key=xyz", "api_key"), None);
    }
}
