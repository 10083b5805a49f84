//! One error type for everything the gateway answers itself, knowing its status, its machine
//! code for the JSON body, and whether the failure may be retried on another peer.

use bytes::Bytes;
use pingora::http::ResponseHeader;

use super::canonical::PathError;
use super::host::HostError;
use super::router::MethodSet;
use crate::auth::AuthFailure;
use crate::observe::RequestId;

/// Marks "no healthy peer" so a failure to proxy can tell it from a failed connection.
pub(crate) const NO_HEALTHY_UPSTREAM: pingora::ErrorType =
    pingora::ErrorType::Custom("no_healthy_upstream");

/// Whether `e` means the client is gone (it stopped reading or closed), so no response can
/// reach it.
pub(crate) fn client_gone(e: &pingora::Error) -> bool {
    use pingora::ErrorType::*;
    matches!(e.esource(), pingora::ErrorSource::Downstream)
        && matches!(e.etype(), WriteError | ReadError | ConnectionClosed)
}

/// A response the gateway produces instead of (or after failing to get) an upstream response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GatewayError {
    /// No route matches host and path.
    RouteNotFound,
    /// A route matches host and path but not the method.
    MethodNotAllowed(MethodSet),
    /// The declared body is larger than `server.max_body_size`.
    PayloadTooLarge,
    /// The request is malformed in a way the gateway detects.
    BadRequest(&'static str),
    /// Every peer of the route's upstream is ejected (or was already tried).
    NoHealthyUpstream,
    /// The peer refused, reset or closed the connection, or sent garbage.
    BadGateway,
    /// The peer did not connect, answer or accept data in time.
    UpstreamTimeout,
    /// A bug or resource problem inside the gateway.
    Internal,
    /// A rate limit denied the request; seconds until it would be admitted.
    RateLimited(u64),
    /// The store failed and the route refuses requests it cannot count.
    RateLimiterUnavailable,
    /// Authentication failed; the challenge goes into `WWW-Authenticate`.
    Auth(AuthFailure, Option<&'static str>),
    /// The client network presented too many rejected credentials; seconds until it may again.
    TooManyFailedAttempts(u64),
    /// The request path is ambiguous (see `canonical`): refused before routing.
    InvalidPath(PathError),
    /// The request's host is missing, repeated or not strictly a host (see `host`).
    InvalidHost(HostError),
}

impl GatewayError {
    /// The HTTP status of the response.
    pub(crate) fn status(&self) -> u16 {
        match self {
            GatewayError::RouteNotFound => 404,
            GatewayError::MethodNotAllowed(_) => 405,
            GatewayError::PayloadTooLarge => 413,
            GatewayError::BadRequest(_) => 400,
            GatewayError::NoHealthyUpstream | GatewayError::BadGateway => 502,
            GatewayError::UpstreamTimeout => 504,
            GatewayError::Internal => 500,
            GatewayError::Auth(f, _) => f.status(),
            GatewayError::RateLimited(_) | GatewayError::TooManyFailedAttempts(_) => 429,
            GatewayError::RateLimiterUnavailable => 503,
            GatewayError::InvalidPath(_) | GatewayError::InvalidHost(_) => 400,
        }
    }

    /// The machine-readable `error` field.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            GatewayError::RouteNotFound => "route_not_found",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::PayloadTooLarge => "payload_too_large",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::NoHealthyUpstream => "no_healthy_upstream",
            GatewayError::BadGateway => "bad_gateway",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::Internal => "internal_error",
            GatewayError::Auth(f, _) => f.code(),
            GatewayError::RateLimited(_) => "rate_limited",
            GatewayError::RateLimiterUnavailable => "rate_limiter_unavailable",
            GatewayError::TooManyFailedAttempts(_) => "too_many_failed_attempts",
            GatewayError::InvalidPath(_) => "invalid_path",
            GatewayError::InvalidHost(_) => "invalid_host",
        }
    }

    /// The human-readable `message` field; never includes request data.
    pub(crate) fn message(&self) -> &'static str {
        match self {
            GatewayError::RouteNotFound => "no route matches this host and path",
            GatewayError::MethodNotAllowed(_) => "this route does not accept the method",
            GatewayError::PayloadTooLarge => "the request body is larger than this gateway accepts",
            GatewayError::BadRequest(m) => m,
            GatewayError::NoHealthyUpstream => "no healthy upstream peer is available",
            GatewayError::BadGateway => "the upstream peer failed to answer",
            GatewayError::UpstreamTimeout => "the upstream peer did not answer in time",
            GatewayError::Internal => "the gateway failed to handle the request",
            GatewayError::Auth(f, _) => f.message(),
            GatewayError::RateLimited(_) => {
                "too many requests; retry after the time in Retry-After"
            }
            GatewayError::RateLimiterUnavailable => {
                "rate limits cannot be checked right now; retry later"
            }
            GatewayError::TooManyFailedAttempts(_) => {
                "too many rejected credentials from this address; retry after the time in Retry-After"
            }
            GatewayError::InvalidPath(e) => e.message(),
            GatewayError::InvalidHost(e) => e.message(),
        }
    }

    /// Maps a Pingora failure to the response the client gets.
    pub(crate) fn from_proxy_error(e: &pingora::Error) -> GatewayError {
        use pingora::{ErrorSource, ErrorType::*};
        if *e.etype() == NO_HEALTHY_UPSTREAM {
            return GatewayError::NoHealthyUpstream;
        }
        match e.etype() {
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
                GatewayError::UpstreamTimeout
            }
            HTTPStatus(413) => GatewayError::PayloadTooLarge,
            HTTPStatus(400) | InvalidHTTPHeader => GatewayError::BadRequest("malformed request"),
            _ => match e.esource() {
                ErrorSource::Upstream => GatewayError::BadGateway,
                ErrorSource::Downstream => GatewayError::BadRequest("malformed request"),
                ErrorSource::Internal | ErrorSource::Unset => GatewayError::Internal,
            },
        }
    }

    /// The JSON body `{"error","message","request_id"}`.
    pub(crate) fn body(&self, request_id: &RequestId) -> Bytes {
        // Codes and messages are fixed ASCII without quotes; the id is [A-Za-z0-9._:-].
        Bytes::from(format!(
            "{{\"error\":\"{}\",\"message\":\"{}\",\"request_id\":\"{}\"}}",
            self.code(),
            self.message(),
            request_id.as_str()
        ))
    }

    /// The response header for this error, with content type and length set.
    pub(crate) fn response_header(
        &self,
        request_id: &RequestId,
        body_len: usize,
    ) -> pingora::Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(self.status(), Some(4))?;
        resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        resp.insert_header(http::header::CONTENT_LENGTH, body_len.to_string())?;
        resp.insert_header("x-request-id", request_id.as_str())?;
        match self {
            GatewayError::MethodNotAllowed(set) => {
                resp.insert_header(http::header::ALLOW, set.allow_header())?;
            }
            GatewayError::Auth(_, Some(challenge)) => {
                resp.insert_header(http::header::WWW_AUTHENTICATE, *challenge)?;
            }
            GatewayError::Auth(AuthFailure::StoreUnavailable | AuthFailure::JwksUnavailable, _)
            | GatewayError::RateLimiterUnavailable => {
                resp.insert_header(http::header::RETRY_AFTER, "1")?;
            }
            GatewayError::RateLimited(secs) | GatewayError::TooManyFailedAttempts(secs) => {
                resp.insert_header(http::header::RETRY_AFTER, secs.to_string())?;
            }
            _ => {}
        }
        Ok(resp)
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message(), self.code())
    }
}

impl std::error::Error for GatewayError {}
