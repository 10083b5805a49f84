//! Portcullis: an API gateway on Pingora whose shared state lives in Redis.
//!
//! Modules, one per concern; dependencies point one way (proxy and admin use the others):
//!
//! - [`auth`]: API keys and JWTs behind a two-tier decision cache, revocation.
//! - [`cli_keys`]: the `keys` subcommands, talking to the configured store directly.
//! - [`config`]: the TOML model, validation that reports every problem with its path, secrets
//!   from environment variables or files.
//! - [`runtime`]: a validated config compiled into the immutable form requests run against
//!   (routing table, pools, pre-parsed headers), swapped atomically on reload.
//! - [`proxy`]: the Pingora `ProxyHttp` implementation, routing, upstream pools with health
//!   checks, forwarding headers, and the one error type that knows its HTTP status.
//! - [`ratelimit`]: exact distributed rate limits (one atomic Lua call per request), headers.
//! - [`observe`]: Prometheus metrics, the JSON access log with redaction, request ids.
//! - [`admin`]: the loopback admin service (health, readiness, metrics, reload).
//! - [`store`]: shared state: in-process or Redis, keys with TTLs and a prefix, invalidations.
//! - [`server`]: assembles the Pingora server from a config file.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub(crate) mod admin;
pub mod auth;
pub mod cli_keys;
pub mod config;
pub mod observe;
pub mod principal;
pub mod proxy;
pub mod ratelimit;
pub mod runtime;
pub mod server;
pub mod store;
