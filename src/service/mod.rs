//! What every backend shares: connection status for `snapshot()`, reconnect backoff, link latency.
pub mod actor;
pub mod backoff;
pub mod breaker;
pub mod health;
pub mod metrics;
pub mod rhythm;
pub mod status;

pub use actor::{ActorCommand, ActorHandle, Backend};
pub use backoff::{Backoff, BackoffPolicy};
pub use breaker::{BreakerPolicy, CircuitBreaker};
pub use health::{StudioHealth, StudioState};
pub use rhythm::HealthRhythm;
pub use status::{ServiceSnapshot, ServiceStatus};
