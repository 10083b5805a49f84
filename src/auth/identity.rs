//! What the upstream learns of the caller: the identity headers set from the principal, and
//! the credentials removed unless the route forwards them. (Client-sent copies of identity
//! headers, in every spelling, are removed before this by the proxy's `SpoofGuard`, which
//! takes their names from here.)

use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType};

use super::{query_value, Authenticator, RouteAuth};
use crate::config::AuthMethod;
use crate::principal::Principal;

/// The header that names the consumer to the upstream.
pub(crate) const X_CONSUMER_ID: &str = "x-consumer-id";

/// Sets `X-Consumer-Id` and the claim headers of `principal` on the upstream request.
pub(crate) fn apply_identity(
    upstream: &mut RequestHeader,
    principal: Option<&Principal>,
) -> pingora::Result<()> {
    let Some(p) = principal else {
        return Ok(());
    };
    if let Some(v) = consumer_header(p) {
        upstream.insert_header(X_CONSUMER_ID, v)?;
    }
    for (name, value) in &p.headers {
        upstream.insert_header(name.clone(), value.clone())?;
    }
    Ok(())
}

impl Authenticator {
    /// Removes the credentials `route` authenticates with from the upstream request, unless
    /// the route forwards them: the `Authorization` header for JWTs, the API key header and
    /// query parameter for keys.
    pub(crate) fn strip_credentials(
        &self,
        upstream: &mut RequestHeader,
        route: &RouteAuth,
    ) -> pingora::Result<()> {
        if route.methods.is_empty() || route.forward_credentials {
            return Ok(());
        }
        if route.methods.contains(&AuthMethod::Jwt) {
            upstream.remove_header(&http::header::AUTHORIZATION);
        }
        if let Some(source) = self.api_key_source() {
            upstream.remove_header(&source.header);
            if let (Some(param), Some(query)) = (&source.query_param, upstream.uri.query()) {
                if query_value(query, param).is_some() {
                    let query = query_without(query, param);
                    set_query(upstream, query.as_deref())?;
                }
            }
        }
        Ok(())
    }
}

/// Replaces the upstream request's query, keeping its path.
fn set_query(upstream: &mut RequestHeader, query: Option<&str>) -> pingora::Result<()> {
    let path = upstream.uri.path();
    let uri = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    match uri.parse::<http::Uri>() {
        Ok(uri) => {
            upstream.set_uri(uri);
            Ok(())
        }
        Err(_) => Error::e_explain(ErrorType::InvalidHTTPHeader, "uri after stripping the key"),
    }
}

/// The query string without parameter `name`; `None` when nothing remains.
pub(crate) fn query_without(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
        .filter(|pair| !pair.is_empty())
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// The header value for `X-Consumer-Id`, if the consumer id is a valid header value.
fn consumer_header(p: &Principal) -> Option<HeaderValue> {
    HeaderValue::from_str(&p.consumer).ok()
}
