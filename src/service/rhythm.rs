//! The health-check rhythm of services that have no socket to watch (OpenAI-compatible, Gradio, MCP): check,
//! then wait a heartbeat when up or the next backoff delay when down, and say so in the status.
use super::{Backoff, BackoffPolicy, ServiceStatus};
use crate::event::ServiceState;
use crate::tracker::Shared;
use std::time::Duration;

pub struct HealthRhythm {
    backoff: Backoff,
    heartbeat: Duration,
    ever_up: bool,
}

impl HealthRhythm {
    /// `name` seeds the backoff jitter, so services started together do not retry in step.
    pub fn new(name: &str, policy: BackoffPolicy, heartbeat: Duration) -> HealthRhythm {
        let seed = name
            .bytes()
            .fold(0x51_7cc1_b727_220au64, |h, b| h.rotate_left(7) ^ u64::from(b));
        HealthRhythm {
            backoff: Backoff::new(policy, seed),
            heartbeat,
            ever_up: false,
        }
    }

    /// True once a check has passed.
    pub fn ever_up(&self) -> bool {
        self.ever_up
    }

    /// Records a check's outcome (its round trip when it passed, the error text when not) and returns how long
    /// to wait before the next one.
    pub fn after(
        &mut self,
        status: &ServiceStatus,
        shared: &Shared,
        outcome: Result<Option<Duration>, &str>,
    ) -> Duration {
        status.count_attempt();
        match outcome {
            Ok(rtt) => {
                self.ever_up = true;
                self.backoff.reset();
                if let Some(rtt) = rtt {
                    status.record_rtt(rtt);
                }
                status.set_next_attempt(None);
                status.set_state(shared, ServiceState::Connected, None);
                self.heartbeat
            }
            Err(message) => {
                status.record_failure(message);
                let state = if self.ever_up {
                    ServiceState::Reconnecting
                } else {
                    ServiceState::Connecting
                };
                status.set_state(shared, state, Some(message.to_string()));
                let delay = self.backoff.next_delay();
                status.set_next_attempt(Some(delay));
                delay
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_waits_a_heartbeat_down_backs_off_and_the_status_follows() {
        let shared = Shared::new(100, 10);
        let status = ServiceStatus::new("llm", "openai", "http://127.0.0.1:4000/", "c");
        let policy = BackoffPolicy::default();
        let mut r = HealthRhythm::new("llm", policy, Duration::from_secs(7));
        let first = r.after(&status, &shared, Err("refused"));
        assert_eq!(status.state(), ServiceState::Connecting, "never up yet");
        assert!(first > Duration::ZERO && first < Duration::from_secs(7));
        assert_eq!(
            r.after(&status, &shared, Ok(Some(Duration::from_millis(3)))),
            Duration::from_secs(7)
        );
        assert!(r.ever_up());
        let snap = status.snapshot();
        assert_eq!(
            (snap.state, snap.consecutive_failures, snap.connect_attempts),
            (ServiceState::Connected, 0, 2)
        );
        r.after(&status, &shared, Err("gone"));
        r.after(&status, &shared, Err("gone"));
        let snap = status.snapshot();
        assert_eq!((snap.state, snap.consecutive_failures), (ServiceState::Reconnecting, 2));
        assert!(snap.next_attempt_at.is_some());
    }
}
