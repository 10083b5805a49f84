//! Who a request is from, once authenticated: the leaf shared by auth (which produces it),
//! rate limits (which count by its consumer and plan) and the proxy (which forwards it).
//!
//! It imports nothing of ours, so limits can read a principal without depending on auth.

use http::{HeaderName, HeaderValue};

/// The authenticated caller, shared by the decision cache and the request context.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// Consumer id, forwarded as `X-Consumer-Id` and used by rate limits.
    pub consumer: String,
    /// Plan name, for per-plan limit overrides.
    pub plan: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Which credential authenticated it.
    pub credential: Credential,
    /// Unix time (seconds) when the credential expires, if it does.
    pub expires_at: Option<u64>,
    /// Extra headers for the upstream (mapped claims).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// The credential behind a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API key, by id (never the key itself).
    ApiKey {
        /// Key id.
        id: String,
    },
    /// A JWT, by `jti` when it has one.
    Jwt {
        /// Token id.
        jti: Option<String>,
    },
}

impl Principal {
    /// Whether every scope in `required` is granted.
    pub(crate) fn has_scopes(&self, required: &[String]) -> bool {
        required.iter().all(|r| self.scopes.iter().any(|s| s == r))
    }
}

/// Seconds since the Unix epoch: the clock [`Principal::expires_at`] is measured on.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
