//! Portcullis: an API gateway on Pingora whose shared state lives in Redis.
//!
//! Modules, one per concern; an arrow of `docs/architecture.md` points from a module to the
//! ones it may use, never back up:
//!
//! - `server`, `admin` (loopback health, readiness, metrics, reload, keys, revocations), and
//!   [`cli_keys`] (the `keys` subcommands against the configured store): assembly and edges.
//! - [`proxy`]: the Pingora `ProxyHttp` implementation, the compiled [`proxy::snapshot`] of a
//!   config that requests run against (routes beside the router that finds them, pools,
//!   redactor, spoof guard, authenticator) swapped atomically on reload by
//!   the `reload` handle, admission (authentication, then limits), the canonical request path,
//!   routing, upstream pools with health checks, forwarding headers and the real client IP,
//!   and the one error type that knows its HTTP status. [`setup`] is the
//!   one way in for a config file.
//! - [`auth`]: API keys and JWTs behind a two-tier decision cache, revocation, the identity
//!   headers and credential stripping on the way upstream, and the one compile pass of
//!   `[auth]`.
//! - [`ratelimit`]: rules compiled into counter keys and checks (it compiles `[rate_limit]` and
//!   every route's rules), one store decision per request, verdicts and headers, failure modes
//!   with the breaker and the local fallback, the failed-authentication limiter.
//! - [`principal`] and [`observe`]: leaves the features share: who a request is from; metrics
//!   with bounded labels, the redacting access log, the process log, request ids, and what a
//!   finished request records in them.
//! - [`cache`]: the HTTP caching rules of the response cache (RFC 9111 as a shared cache,
//!   `Vary`, the cache key, `Cache-Status`); not wired into the proxy yet.
//! - [`store`]: the shared-state seam: one handle over the in-process and Redis backends, which
//!   implement the same operations (key/value with TTL, sets, invalidations, atomic
//!   revocations, rate-limit decisions with their vocabulary in [`store::limits`]); it owns
//!   every Redis type and script, compiles `[store]`, and one contract suite tests both
//!   backends.
//! - [`config`]: the TOML model, the issue type every owner's compiler reports into, secrets
//!   from environment variables or files; it judges nothing (each section is compiled once by
//!   its owner, [`setup`] runs them all). Imports nothing of ours.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub(crate) mod admin;
pub mod auth;
pub mod cache;
pub mod cli_keys;
pub mod config;
pub mod observe;
pub mod principal;
pub mod proxy;
pub mod ratelimit;
pub(crate) mod reload;
pub mod server;
pub mod setup;
pub mod store;
