//! The admin service: health, readiness, metrics and reload on a loopback listener.
//!
//! Reading endpoints are open (they are on loopback and carry no secrets); mutating endpoints
//! need `Authorization: Bearer <token>`, compared in constant time. Without a configured token
//! mutating endpoints always answer 401, and SIGHUP remains the way to reload.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::auth::{KeyError, NewKey};
use crate::observe::Metrics;
use crate::reload::SnapshotHandle;

/// The admin HTTP application.
pub(crate) struct AdminApp {
    snapshots: Arc<SnapshotHandle>,
    metrics: Arc<Metrics>,
    token: Option<String>,
}

impl AdminApp {
    /// Creates the app; `token` guards mutating endpoints.
    pub(crate) fn new(
        snapshots: Arc<SnapshotHandle>,
        metrics: Arc<Metrics>,
        token: Option<String>,
    ) -> AdminApp {
        AdminApp {
            snapshots,
            metrics,
            token,
        }
    }

    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(expected) = &self.token else {
            return false;
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(given.trim().as_bytes(), expected.as_bytes())
    }

    fn reload(&self) -> Response<Vec<u8>> {
        match self.snapshots.reload() {
            Ok(r) => json(
                StatusCode::OK,
                serde_json::json!({
                    "result": "ok",
                    "summary": r.summary,
                    "needs_restart": r.needs_restart,
                }),
            ),
            Err(e) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({
                    "error": "invalid_config",
                    "message": format!("reload refused, the running config is unchanged: {e}"),
                }),
            ),
        }
    }
}

/// Endpoints that change state or reveal consumers need the admin token.
fn needs_token(path: &str) -> bool {
    matches!(path, "/reload" | "/keys" | "/revocations") || path.starts_with("/keys/")
}

/// Largest admin request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// Reads and parses a JSON body, or gives the 4xx response to send.
async fn read_json<T: serde::de::DeserializeOwned>(
    session: &mut ServerSession,
) -> Result<T, Box<Response<Vec<u8>>>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(Box::new(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "admin bodies are at most 64 KiB",
                    )));
                }
            }
            Ok(None) => break,
            Err(_) => {
                return Err(Box::new(error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "could not read the request body",
                )))
            }
        }
    }
    serde_json::from_slice(&body).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            &format!("the body is not the expected JSON: {e}"),
        ))
    })
}

/// Longest a revocation is kept: no token the gateway accepts should live longer, and it keeps
/// the store TTL far from any overflow.
const MAX_REVOCATION_SECS: u64 = 3650 * 86_400;

/// `POST /revocations` body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Revocation {
    /// Token id to revoke.
    jti: String,
    /// Unix seconds when the token expires; the revocation is kept until then.
    exp: u64,
}

impl AdminApp {
    fn readiness(&self) -> Response<Vec<u8>> {
        let rt = self.snapshots.current();
        let store = self.snapshots.services().auth.store();
        json(
            StatusCode::OK,
            serde_json::json!({
                "status": "ready",
                "config": rt.summary(),
                "store": {
                    "kind": store.kind(),
                    "state": if store.is_healthy() { "ok" } else { "unreachable" },
                },
            }),
        )
    }

    async fn create_key(&self, new: NewKey) -> Response<Vec<u8>> {
        match self.snapshots.current().auth.create_key(new).await {
            Ok((record, secret)) => json(
                StatusCode::CREATED,
                serde_json::json!({"key": secret, "record": record}),
            ),
            Err(e) => key_error(e),
        }
    }

    async fn list_keys(&self, query: &str) -> Response<Vec<u8>> {
        let auth = &self.snapshots.current().auth;
        if auth.keys().is_none() {
            // Disabled API keys answer 404 before the query is looked at.
            return key_error(KeyError::Disabled);
        }
        let Some(consumer) = crate::auth::query_value(query, "consumer") else {
            return error(
                StatusCode::BAD_REQUEST,
                "consumer_required",
                "give ?consumer=<id>",
            );
        };
        match auth.list_keys(consumer).await {
            Ok(records) => json(StatusCode::OK, serde_json::json!({"keys": records})),
            Err(e) => key_error(e),
        }
    }

    async fn revoke_key(&self, id: &str) -> Response<Vec<u8>> {
        match self.snapshots.current().auth.revoke_key(id).await {
            Ok(true) => json(StatusCode::OK, serde_json::json!({"revoked": id})),
            Ok(false) => error(
                StatusCode::NOT_FOUND,
                "key_not_found",
                "no key with this id",
            ),
            Err(e) => key_error(e),
        }
    }

    async fn revoke_token(&self, r: Revocation) -> Response<Vec<u8>> {
        let valid = !r.jti.is_empty()
            && r.jti.len() <= 256
            && r.jti
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
        if !valid {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_jti",
                "jti must be 1-256 printable characters without braces",
            );
        }
        let latest = crate::principal::unix_now().saturating_add(MAX_REVOCATION_SECS);
        if r.exp > latest {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_exp",
                "exp must be unix seconds at most 10 years from now",
            );
        }
        match self
            .snapshots
            .current()
            .auth
            .revoke_jti(&r.jti, r.exp)
            .await
        {
            Ok(()) => json(
                StatusCode::CREATED,
                serde_json::json!({"revoked": r.jti, "until": r.exp}),
            ),
            Err(e) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                &e.to_string(),
            ),
        }
    }
}

fn key_error(e: KeyError) -> Response<Vec<u8>> {
    match e {
        KeyError::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid_request", &m),
        KeyError::Store(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            &e.to_string(),
        ),
        KeyError::Random => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "no randomness available",
        ),
        KeyError::Disabled => error(
            StatusCode::NOT_FOUND,
            "api_keys_disabled",
            "API keys are not configured ([auth.api_key])",
        ),
        e @ KeyError::ConfigKey { .. } => error(StatusCode::CONFLICT, "config_key", &e.to_string()),
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    let body = body.to_string().into_bytes();
    build(status, "application/json", body)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Vec<u8>> {
    json(
        status,
        serde_json::json!({"error": code, "message": message}),
    )
}

fn build(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let len = body.len();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, len)
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        if needs_token(&path) && !self.authorized(session) {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this endpoint needs Authorization: Bearer <admin token>",
            );
        }
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            ("GET", "/readyz") => self.readiness(),
            ("GET", "/metrics") => {
                self.snapshots.export_peer_health();
                build(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            ("POST", "/reload") => self.reload(),
            ("POST", "/keys") => match read_json::<NewKey>(session).await {
                Ok(new) => self.create_key(new).await,
                Err(resp) => *resp,
            },
            ("GET", "/keys") => {
                let query = session.req_header().uri.query().unwrap_or("").to_string();
                self.list_keys(&query).await
            }
            ("DELETE", p) if p.starts_with("/keys/") => self.revoke_key(&p["/keys/".len()..]).await,
            ("POST", "/revocations") => match read_json::<Revocation>(session).await {
                Ok(r) => self.revoke_token(r).await,
                Err(resp) => *resp,
            },
            (_, "/healthz" | "/readyz" | "/metrics" | "/reload" | "/keys" | "/revocations") => {
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "wrong method for this endpoint",
                )
            }
            _ => error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison_needs_equal_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
