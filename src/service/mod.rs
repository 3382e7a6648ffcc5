//! What every backend shares: connection status for `snapshot()`, reconnect backoff, link latency.
pub mod backoff;
pub mod metrics;
pub mod status;

pub use backoff::{Backoff, BackoffPolicy};
pub use status::{ServiceSnapshot, ServiceStatus};
