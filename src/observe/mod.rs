//! Observability: Prometheus metrics, the JSON access log with redaction, the process log on
//! stderr, and request ids.

mod access_log;
mod metrics;
mod process_log;
mod request_id;

pub use access_log::{AccessLog, AccessLogTarget, AccessRecord, Redactor};
pub use metrics::Metrics;
pub use process_log::init_process_log;
pub use request_id::{accept_request_id, new_request_id, RequestId};
