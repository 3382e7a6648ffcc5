//! Link latency: WebSocket ping → pong round trips over a sliding window.
use serde::Serialize;
use std::collections::VecDeque;

const WINDOW: usize = 512;

/// Round-trip times in milliseconds, as `snapshot()` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct LinkLatency {
    pub last_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Samples in the window (the newest `WINDOW`).
    pub samples: usize,
}

#[derive(Debug, Default)]
pub struct RttWindow {
    samples: VecDeque<f64>,
}

impl RttWindow {
    pub fn record(&mut self, ms: f64) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(ms);
    }

    pub fn summary(&self) -> LinkLatency {
        let mut sorted: Vec<f64> = self.samples.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        LinkLatency {
            last_ms: self.samples.back().copied(),
            p50_ms: percentile(&sorted, 0.50),
            p99_ms: percentile(&sorted, 0.99),
            samples: sorted.len(),
        }
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank_over_the_window() {
        let mut w = RttWindow::default();
        assert_eq!(w.summary().p50_ms, None);
        for i in 1..=100 {
            w.record(f64::from(i));
        }
        let s = w.summary();
        assert_eq!(
            (s.p50_ms, s.p99_ms, s.last_ms, s.samples),
            (Some(50.0), Some(99.0), Some(100.0), 100)
        );
        for _ in 0..WINDOW {
            w.record(1.0);
        }
        assert_eq!(w.summary().p99_ms, Some(1.0), "old samples leave the window");
    }
}
