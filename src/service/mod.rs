//! What every backend shares: connection status for `snapshot()`, reconnect backoff.
pub mod backoff;
pub mod status;

pub use backoff::{Backoff, BackoffPolicy};
pub use status::{ServiceSnapshot, ServiceStatus};
