//! Observability: Prometheus metrics, the JSON access log with redaction, the process log on
//! stderr, request ids, and what a finished request records in them.

mod access_log;
mod metrics;
mod process_log;
mod request_id;
mod request_log;

pub use access_log::{AccessLog, AccessLogTarget, AccessRecord, Redactor};
pub use metrics::Metrics;
pub use process_log::init_process_log;
pub use request_id::{accept_request_id, new_request_id, RequestId};
pub(crate) use request_id::{request_id_of, X_REQUEST_ID};
pub use request_log::RouteMetrics;
pub(crate) use request_log::{path_and_query, record_finished, Finished};
