//! Reconnect delays: exponential with jitter, reset only after the link stayed healthy for a while, so a server
//! that accepts and then closes at once cannot cause a reconnect storm.
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
    /// ± this fraction of the delay.
    pub jitter: f64,
    /// How long a connection must stay up before the delay starts again from `initial`.
    pub healthy_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            factor: 1.5,
            max: Duration::from_secs(30),
            jitter: 0.2,
            healthy_after: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
    connected_at: Option<Instant>,
    rng_state: u64,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy, seed: u64) -> Backoff {
        Backoff {
            policy,
            attempt: 0,
            connected_at: None,
            rng_state: seed | 1,
        }
    }

    /// xorshift: deterministic for a seed, so tests can check the schedule.
    fn next_unit(&mut self) -> f64 {
        let mut x = self.rng_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng_state = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.policy.initial.as_secs_f64() * self.policy.factor.powi(self.attempt.min(60) as i32);
        let capped = base.min(self.policy.max.as_secs_f64());
        self.attempt = self.attempt.saturating_add(1);
        let jitter = (self.next_unit() * 2.0 - 1.0) * self.policy.jitter;
        Duration::from_secs_f64((capped * (1.0 + jitter)).clamp(0.0, self.policy.max.as_secs_f64() * 1.5))
    }

    pub fn on_connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The link dropped: reset the schedule only if it had been healthy long enough.
    pub fn on_disconnected(&mut self, now: Instant) {
        if let Some(t) = self.connected_at.take() {
            if now.duration_since(t) >= self.policy.healthy_after {
                self.attempt = 0;
            }
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_the_factor_to_the_cap_within_jitter() {
        let mut b = Backoff::new(BackoffPolicy::default(), 42);
        let delays: Vec<f64> = (0..15).map(|_| b.next_delay().as_secs_f64()).collect();
        for (i, d) in delays.iter().enumerate() {
            let nominal = (1.5f64.powi(i as i32)).min(30.0);
            assert!(
                *d >= nominal * 0.8 - 1e-9 && *d <= nominal * 1.2 + 1e-9,
                "attempt {i}: {d} vs {nominal}"
            );
        }
        let mut again = Backoff::new(BackoffPolicy::default(), 42);
        let same: Vec<f64> = (0..15).map(|_| again.next_delay().as_secs_f64()).collect();
        assert_eq!(delays, same, "seeded jitter is deterministic");
    }

    #[test]
    fn resets_only_after_a_healthy_period() {
        let mut b = Backoff::new(BackoffPolicy::default(), 1);
        let t0 = Instant::now();
        for _ in 0..5 {
            b.next_delay();
        }
        b.on_connected(t0);
        b.on_disconnected(t0 + Duration::from_secs(2));
        assert_eq!(b.attempts(), 5, "accept-then-close does not reset");
        b.on_connected(t0);
        b.on_disconnected(t0 + Duration::from_secs(31));
        assert_eq!(b.attempts(), 0);
    }
}
