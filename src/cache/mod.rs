//! The response cache's HTTP rules, as a shared cache (RFC 9111, RFC 5861 stale serving,
//! RFC 9211 `Cache-Status`): pure functions over typed settings and header maps, with no I/O.
//!
//! - [`directives`]: `Cache-Control` of requests and responses, parsed once.
//! - [`freshness`]: explicit freshness lifetime and age on arrival.
//! - [`policy`]: storable or not (with the reason), lifetime after the route's default,
//!   override and cap, stale windows, and whether a stored response may answer a request.
//! - [`vary`]: `Vary` and the secondary key of a variant.
//! - [`key`]: the primary key, hashed over a versioned, framed layout a Redis tier can share.
//! - [`status`]: the `Cache-Status` member.
//!
//! Settings arrive as plain values ([`policy::CacheRules`], [`policy::RouteCachePolicy`])
//! that the config compiler builds. Nothing calls this module yet: the `ProxyHttp` cache hooks
//! and the pingora-cache `Storage` over the local tier and Redis come in issue 11's next slice.

pub mod directives;
pub mod freshness;
pub mod key;
pub mod policy;
// Used only by its tests until the proxy wiring of issue 11's next slice renders
// `Cache-Status` from it; the other modules are public (the bench uses them).
#[allow(dead_code)]
pub(crate) mod status;
pub mod vary;
