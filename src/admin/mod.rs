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

use crate::observe::Metrics;
use crate::runtime::RuntimeHandle;

/// The admin HTTP application.
pub struct AdminApp {
    runtime: Arc<RuntimeHandle>,
    metrics: Arc<Metrics>,
    token: Option<String>,
}

impl AdminApp {
    /// Creates the app; `token` guards mutating endpoints.
    pub fn new(
        runtime: Arc<RuntimeHandle>,
        metrics: Arc<Metrics>,
        token: Option<String>,
    ) -> AdminApp {
        AdminApp {
            runtime,
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
        match self.runtime.reload() {
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
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            ("GET", "/readyz") => {
                let rt = self.runtime.current();
                json(
                    StatusCode::OK,
                    serde_json::json!({"status": "ready", "config": rt.summary()}),
                )
            }
            ("GET", "/metrics") => {
                self.runtime.export_peer_health();
                build(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            ("POST", "/reload") => {
                if !self.authorized(session) {
                    return error(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "this endpoint needs Authorization: Bearer <admin token>",
                    );
                }
                self.reload()
            }
            (_, "/healthz" | "/readyz" | "/metrics" | "/reload") => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "wrong method for this endpoint",
            ),
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
