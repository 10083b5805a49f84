//! Observability: Prometheus metrics, the JSON access log with redaction, and request ids.

mod access_log;
mod metrics;
mod request_id;

pub use access_log::{AccessLog, AccessRecord, Redactor};
pub use metrics::Metrics;
pub use request_id::{accept_request_id, new_request_id, RequestId};
