//! Circuit breaker: a server that keeps refusing or dropping us is tried less often, and the user is told why.
//!
//! More than `threshold` failures (failed connects, or sessions that ended almost at once) within `window` open
//! the circuit for `open_for`; then one attempt is let through (half-open): success closes it, failure re-opens.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    pub threshold: usize,
    pub window: Duration,
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            threshold: 5,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
pub struct CircuitBreaker {
    policy: BreakerPolicy,
    failures: VecDeque<Instant>,
    open_until: Option<Instant>,
}

impl CircuitBreaker {
    pub fn new(policy: BreakerPolicy) -> CircuitBreaker {
        CircuitBreaker {
            policy,
            failures: VecDeque::new(),
            open_until: None,
        }
    }

    /// Records a failure; returns true when this failure opened the circuit.
    pub fn record_failure(&mut self, now: Instant) -> bool {
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.window)
        {
            self.failures.pop_front();
        }
        let half_open = self.open_until.is_some_and(|until| now >= until);
        if half_open || (self.open_until.is_none() && self.failures.len() > self.policy.threshold) {
            self.open_until = Some(now + self.policy.open_for);
            return true;
        }
        false
    }

    /// A connection that stayed up: forget the failures and close the circuit.
    pub fn record_success(&mut self) {
        self.failures.clear();
        self.open_until = None;
    }

    /// When the circuit is open, the instant the next attempt may be made.
    pub fn open_until(&self, now: Instant) -> Option<Instant> {
        self.open_until.filter(|until| *until > now)
    }

    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }

    /// The user asked to try now (`hub.reconnect`).
    pub fn reset(&mut self) {
        self.record_success();
    }

    pub fn recent_failures(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn opens_after_more_than_threshold_failures_within_the_window() {
        let mut b = CircuitBreaker::new(BreakerPolicy::default());
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(!b.record_failure(t0 + s(i)), "failure {i} keeps it closed");
        }
        assert!(b.record_failure(t0 + s(5)), "the sixth within 60 s opens it");
        assert_eq!(b.open_until(t0 + s(5)), Some(t0 + s(35)));
        assert_eq!(b.open_until(t0 + s(36)), None, "after open_for an attempt may be made");
    }

    #[test]
    fn failures_spread_beyond_the_window_never_open_it() {
        let mut b = CircuitBreaker::new(BreakerPolicy::default());
        let t0 = Instant::now();
        for i in 0..20 {
            assert!(
                !b.record_failure(t0 + s(15 * i)),
                "one failure per 15 s is 4 per minute"
            );
        }
        assert!(!b.is_open());
    }

    #[test]
    fn half_open_failure_reopens_and_success_or_reset_closes() {
        let mut b = CircuitBreaker::new(BreakerPolicy::default());
        let t0 = Instant::now();
        for i in 0..6 {
            b.record_failure(t0 + s(i));
        }
        assert!(b.is_open());
        assert!(b.record_failure(t0 + s(40)), "the half-open attempt failed: open again");
        assert_eq!(b.open_until(t0 + s(40)), Some(t0 + s(70)));
        b.record_success();
        assert!(!b.is_open() && b.recent_failures() == 0);
        for i in 0..6 {
            b.record_failure(t0 + s(100 + i));
        }
        b.reset();
        assert!(!b.is_open());
    }
}
