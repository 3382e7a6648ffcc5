//! A service's live status, written by its actor and read by `snapshot()`.
use super::metrics::{LinkLatency, RttWindow};
use crate::event::{now_epoch, EventKind, ServiceState};
use crate::tracker::Shared;
use parking_lot::Mutex;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorRecord {
    pub time: f64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSnapshot {
    pub name: String,
    pub kind: String,
    pub url: String,
    pub state: ServiceState,
    pub reason: Option<String>,
    pub version: Option<String>,
    pub devices: Vec<String>,
    pub queue_remaining: Option<u64>,
    pub last_error: Option<String>,
    pub recent_errors: Vec<ErrorRecord>,
    /// Failed connection attempts / health checks in a row; 0 once connected.
    pub consecutive_failures: u32,
    pub connected_since: Option<f64>,
    pub reconnects: u64,
    pub messages_received: u64,
    /// WebSocket ping → pong round trips.
    pub latency: LinkLatency,
    /// Time to response headers of API calls.
    pub http_latency: LinkLatency,
    /// Connections that were lost (not closed by us).
    pub drops: u64,
    /// Connection attempts made, in all.
    pub connect_attempts: u64,
    /// Share of the time since the service was added that the WebSocket was connected, 0–100.
    pub uptime_percent: f64,
    /// When the next connection attempt is due (Unix seconds), while waiting to retry.
    pub next_attempt_at: Option<f64>,
    pub client_id: String,
}

const ERROR_HISTORY: usize = 50;

pub struct ServiceStatus {
    inner: Mutex<ServiceSnapshot>,
    rtt: Mutex<RttWindow>,
    http_latency: Arc<Mutex<RttWindow>>,
    uptime: Mutex<Uptime>,
}

/// Connected time, for `uptime_percent`.
struct Uptime {
    added: Instant,
    connected_total: Duration,
    connected_at: Option<Instant>,
}

impl Uptime {
    fn percent(&self, now: Instant) -> f64 {
        let live = self.connected_at.map(|t| now.duration_since(t)).unwrap_or_default();
        let total = now.duration_since(self.added).as_secs_f64();
        if total <= 0.0 {
            return 0.0;
        }
        ((self.connected_total + live).as_secs_f64() / total * 100.0).clamp(0.0, 100.0)
    }
}

impl ServiceStatus {
    pub fn new(name: &str, kind: &str, url: &str, client_id: &str) -> ServiceStatus {
        ServiceStatus {
            inner: Mutex::new(ServiceSnapshot {
                name: name.to_string(),
                kind: kind.to_string(),
                url: url.to_string(),
                state: ServiceState::Disconnected,
                reason: None,
                version: None,
                devices: Vec::new(),
                queue_remaining: None,
                last_error: None,
                recent_errors: Vec::new(),
                consecutive_failures: 0,
                connected_since: None,
                reconnects: 0,
                messages_received: 0,
                latency: LinkLatency::default(),
                http_latency: LinkLatency::default(),
                drops: 0,
                connect_attempts: 0,
                uptime_percent: 0.0,
                next_attempt_at: None,
                client_id: client_id.to_string(),
            }),
            rtt: Mutex::new(RttWindow::default()),
            http_latency: Arc::new(Mutex::new(RttWindow::default())),
            uptime: Mutex::new(Uptime {
                added: Instant::now(),
                connected_total: Duration::ZERO,
                connected_at: None,
            }),
        }
    }

    pub fn snapshot(&self) -> ServiceSnapshot {
        let mut snap = self.inner.lock().clone();
        snap.latency = self.rtt.lock().summary();
        snap.http_latency = self.http_latency.lock().summary();
        snap.uptime_percent = self.uptime.lock().percent(Instant::now());
        snap
    }

    /// The window the service's HTTP client records into.
    pub fn http_latency_window(&self) -> Arc<Mutex<RttWindow>> {
        self.http_latency.clone()
    }

    /// A connection was lost: counted, and kept in the error history.
    pub fn record_drop(&self, why: &str) {
        self.inner.lock().drops += 1;
        self.record_error(why);
    }

    pub fn count_attempt(&self) {
        self.inner.lock().connect_attempts += 1;
    }

    pub fn set_next_attempt(&self, delay: Option<Duration>) {
        self.inner.lock().next_attempt_at = delay.map(|d| now_epoch() + d.as_secs_f64());
    }

    pub fn record_rtt(&self, rtt: std::time::Duration) {
        self.rtt.lock().record(rtt.as_secs_f64() * 1000.0);
    }

    pub fn state(&self) -> ServiceState {
        self.inner.lock().state
    }

    /// Changes state and emits `ServiceStateChanged` (only on a real change of state or reason). No attempt is
    /// scheduled any more: `next_attempt_at` is cleared in the same step.
    pub fn set_state(&self, shared: &Shared, state: ServiceState, reason: Option<String>) {
        self.set_state_until(shared, state, reason, None);
    }

    /// Changes state, reason and the time of the next connection attempt in one step, under one lock, before the
    /// event goes out: a reader (or a consumer woken by the event) never sees `circuit_open` without the time it
    /// will try again, nor the time of a wait that is already over.
    pub fn set_state_until(
        &self,
        shared: &Shared,
        state: ServiceState,
        reason: Option<String>,
        next_attempt: Option<Duration>,
    ) {
        let mut s = self.inner.lock();
        s.next_attempt_at = next_attempt.map(|d| now_epoch() + d.as_secs_f64());
        if s.state == state && s.reason == reason {
            return;
        }
        let previous = s.state;
        {
            let mut up = self.uptime.lock();
            let now = Instant::now();
            if state == ServiceState::Connected && up.connected_at.is_none() {
                up.connected_at = Some(now);
            } else if state != ServiceState::Connected {
                if let Some(t) = up.connected_at.take() {
                    up.connected_total += now.duration_since(t);
                }
            }
        }
        if state == ServiceState::Connected {
            s.consecutive_failures = 0;
            s.connected_since = Some(now_epoch());
            if previous == ServiceState::Reconnecting {
                s.reconnects += 1;
            }
        } else if previous == ServiceState::Connected {
            s.connected_since = None;
        }
        s.state = state;
        s.reason.clone_from(&reason);
        let service = s.name.clone();
        drop(s);
        shared.emit(EventKind::ServiceStateChanged {
            service,
            state,
            previous,
            reason,
        });
    }

    /// A connection attempt or health check failed: counted in `consecutive_failures` and kept in the history.
    pub fn record_failure(&self, message: &str) {
        self.inner.lock().consecutive_failures += 1;
        self.record_error(message);
    }

    pub fn record_error(&self, message: &str) {
        let mut s = self.inner.lock();
        s.last_error = Some(message.to_string());
        s.recent_errors.push(ErrorRecord {
            time: now_epoch(),
            message: message.to_string(),
        });
        if s.recent_errors.len() > ERROR_HISTORY {
            let excess = s.recent_errors.len() - ERROR_HISTORY;
            s.recent_errors.drain(..excess);
        }
    }

    pub fn set_version(&self, version: String, devices: Vec<String>) {
        let mut s = self.inner.lock();
        s.version = Some(version);
        s.devices = devices;
    }

    /// Returns true when the value changed.
    pub fn set_queue(&self, n: u64) -> bool {
        let mut s = self.inner.lock();
        let changed = s.queue_remaining != Some(n);
        s.queue_remaining = Some(n);
        changed
    }

    pub fn count_messages(&self, n: u64) {
        if n > 0 {
            self.inner.lock().messages_received += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13, race A: `circuit_open` and its next try were set in two steps, and a finished wait's time was
    /// cleared in a third, so a reader could see `circuit_open` without a time.
    #[test]
    fn a_waiting_state_and_its_next_try_change_together() {
        let shared = Shared::new(100, 10);
        let status = ServiceStatus::new("c", "comfyui", "http://127.0.0.1:8188/", "id");
        let open = Some("keeps dropping us".to_string());
        status.set_state_until(
            &shared,
            ServiceState::CircuitOpen,
            open.clone(),
            Some(Duration::from_secs(3)),
        );
        let snap = status.snapshot();
        assert_eq!(snap.state, ServiceState::CircuitOpen);
        let first = snap.next_attempt_at.unwrap_or(0.0);
        assert!(first > now_epoch() + 2.0, "said when it tries again");
        // A new time in the same state is taken, without a second state event.
        status.set_state_until(&shared, ServiceState::CircuitOpen, open, Some(Duration::from_secs(10)));
        assert!(status.snapshot().next_attempt_at.unwrap_or(0.0) > first + 5.0);
        let changes = shared
            .events
            .drain(100)
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::ServiceStateChanged { .. }))
            .count();
        assert_eq!(changes, 1);
        // The wait is over: the next state clears its time in the same step.
        status.set_state(&shared, ServiceState::Reconnecting, None);
        let snap = status.snapshot();
        assert_eq!((snap.state, snap.next_attempt_at), (ServiceState::Reconnecting, None));
    }
}
