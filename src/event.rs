//! Typed events that cross to Python, and the bounded, coalescing queue they wait in.
//!
//! Lifecycle events are never dropped. Under pressure (more than `capacity` events waiting) a new `Progress` or
//! `Preview` replaces the same job's newest waiting event of that kind when that event is the job's last one
//! (so per-job order is kept), and otherwise the oldest waiting `Progress`/`Preview` is dropped to make room.
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A service's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Disconnected,
    Connecting,
    Connected,
    Reconnecting,
    CircuitOpen,
    Polling,
    Closed,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Disconnected => "disconnected",
            ServiceState::Connecting => "connecting",
            ServiceState::Connected => "connected",
            ServiceState::Reconnecting => "reconnecting",
            ServiceState::CircuitOpen => "circuit_open",
            ServiceState::Polling => "polling",
            ServiceState::Closed => "closed",
        }
    }
}

/// A job's state as shown in `snapshot()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted locally, not yet sent (no connection yet).
    Pending,
    /// POST /prompt sent, answer not yet seen.
    Submitting,
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Submitting => "submitting",
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed | JobState::Cancelled)
    }
}

/// A result file written into the output directory.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct OutputFile {
    pub node_id: String,
    /// `images`, `gifs`, `audio`, ... — the key of the node's UI output.
    pub kind: String,
    pub path: PathBuf,
    /// The name on the server.
    pub filename: String,
    pub subfolder: String,
    /// `output` or `temp`.
    pub file_type: String,
    pub size: u64,
    /// Hex SHA-256 of the bytes written.
    pub sha256: String,
}

/// A per-node problem reported by the server's validation (`node_errors`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NodeProblem {
    pub node_id: String,
    pub class_type: Option<String>,
    pub input: Option<String>,
    pub code: String,
    pub message: String,
    pub details: String,
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
    pub node_id: Option<String>,
    pub node_type: Option<String>,
    pub exception_type: Option<String>,
    pub traceback: Vec<String>,
    pub node_errors: Vec<NodeProblem>,
}

impl JobError {
    pub fn simple(code: &str, message: impl Into<String>) -> JobError {
        JobError {
            code: code.to_string(),
            message: message.into(),
            node_id: None,
            node_type: None,
            exception_type: None,
            traceback: Vec::new(),
            node_errors: Vec::new(),
        }
    }
}

/// What happened. Every job ends with exactly one of `JobCompleted`, `JobFailed`, `JobCancelled`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    ServiceStateChanged {
        service: String,
        state: ServiceState,
        previous: ServiceState,
        reason: Option<String>,
    },
    QueueChanged {
        service: String,
        queue_remaining: u64,
    },
    /// A scan (`Hub.discover`) found something answering at an address.
    ServiceDiscovered {
        url: String,
        /// `comfyui`, `litellm`, `wan2gp`, `wangp_mcp`, `rvc`, `audioldm`, `gradio` or `unknown`.
        kind: String,
        name: Option<String>,
        summary: String,
        /// The `Hub.add_service` kind that talks to it, when this build has one.
        service_kind: Option<String>,
    },
    JobQueued {
        job_id: String,
        service: String,
        /// 0 = next to run; None when unknown (pending connection).
        position: Option<u32>,
        pending_connection: bool,
        /// Outputs the server skipped because they failed validation (a partial 200).
        node_errors: Vec<NodeProblem>,
    },
    JobStarted {
        job_id: String,
        service: String,
        cached_nodes: Vec<String>,
    },
    NodeStarted {
        job_id: String,
        node_id: String,
        node_type: Option<String>,
    },
    Progress {
        job_id: String,
        node_id: Option<String>,
        value: f64,
        max: f64,
        /// Percentage of the node's work, 0–100.
        percentage: f64,
        /// Seconds left for this node, from the observed step rate.
        eta_seconds: Option<f64>,
        /// What the server says it is doing (Gradio's `desc`, e.g. WanGP's "Denoising | 0:12 / 1:40"); None when
        /// it says nothing (ComfyUI).
        text: Option<String>,
    },
    Preview {
        job_id: String,
        node_id: Option<String>,
        /// `image/jpeg` or `image/png`.
        mime: String,
        #[serde(skip)]
        data: Bytes,
    },
    NodeText {
        job_id: Option<String>,
        node_id: String,
        text: String,
    },
    NodeOutput {
        job_id: String,
        node_id: String,
        output: Value,
    },
    /// A piece of generated text (chat jobs), in order. Never coalesced or dropped.
    TextDelta {
        job_id: String,
        text: String,
        /// 0, 1, 2, ... per job: the position of this piece in the answer.
        index: u64,
        /// Which of the answer's choices it belongs to (0 unless `n` > 1 was asked).
        choice: u32,
    },
    JobCompleted {
        job_id: String,
        outputs: Vec<OutputFile>,
        /// The node's UI outputs that are not files (text etc.), by node id.
        ui: Value,
        elapsed_seconds: f64,
    },
    JobFailed {
        job_id: String,
        error: JobError,
    },
    JobCancelled {
        job_id: String,
    },
}

impl EventKind {
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::ServiceStateChanged { .. } => "service_state_changed",
            EventKind::QueueChanged { .. } => "queue_changed",
            EventKind::ServiceDiscovered { .. } => "service_discovered",
            EventKind::JobQueued { .. } => "job_queued",
            EventKind::JobStarted { .. } => "job_started",
            EventKind::NodeStarted { .. } => "node_started",
            EventKind::Progress { .. } => "progress",
            EventKind::Preview { .. } => "preview",
            EventKind::NodeText { .. } => "node_text",
            EventKind::NodeOutput { .. } => "node_output",
            EventKind::TextDelta { .. } => "text_delta",
            EventKind::JobCompleted { .. } => "job_completed",
            EventKind::JobFailed { .. } => "job_failed",
            EventKind::JobCancelled { .. } => "job_cancelled",
        }
    }

    pub fn job_id(&self) -> Option<&str> {
        match self {
            EventKind::JobQueued { job_id, .. }
            | EventKind::JobStarted { job_id, .. }
            | EventKind::NodeStarted { job_id, .. }
            | EventKind::Progress { job_id, .. }
            | EventKind::Preview { job_id, .. }
            | EventKind::NodeOutput { job_id, .. }
            | EventKind::TextDelta { job_id, .. }
            | EventKind::JobCompleted { job_id, .. }
            | EventKind::JobFailed { job_id, .. }
            | EventKind::JobCancelled { job_id } => Some(job_id),
            EventKind::NodeText { job_id, .. } => job_id.as_deref(),
            EventKind::ServiceStateChanged { .. }
            | EventKind::QueueChanged { .. }
            | EventKind::ServiceDiscovered { .. } => None,
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::JobCompleted { .. } | EventKind::JobFailed { .. } | EventKind::JobCancelled { .. }
        )
    }

    /// Progress and previews may be coalesced; everything else is a lifecycle event.
    fn coalesce_key(&self) -> Option<u8> {
        match self {
            EventKind::Progress { .. } => Some(0),
            EventKind::Preview { .. } => Some(1),
            EventKind::QueueChanged { .. } => Some(2),
            _ => None,
        }
    }
}

/// An event with its sequence number and wall-clock time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub seq: u64,
    /// Seconds since the Unix epoch.
    pub time: f64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Counters for `snapshot()` and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    pub pending: usize,
    pub pushed: u64,
    pub coalesced: u64,
    pub dropped: u64,
}

struct Inner {
    /// Tombstones (`None`) mark coalesced/dropped slots; slot i has sequence `base_seq + i`.
    slots: VecDeque<Option<Event>>,
    base_seq: u64,
    live: usize,
    /// The newest waiting event of each job: (sequence, coalesce key).
    last_of_job: HashMap<String, (u64, Option<u8>)>,
    /// The newest waiting QueueChanged per service (they carry no job).
    last_queue_of_service: HashMap<String, u64>,
    stats: QueueStats,
    closed: bool,
}

/// The hub's event queue: many producers (the runtime), one consumer (`poll`).
pub struct EventQueue {
    inner: Mutex<Inner>,
    ready: Condvar,
    capacity: usize,
}

pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl EventQueue {
    pub fn new(capacity: usize) -> EventQueue {
        EventQueue {
            inner: Mutex::new(Inner {
                slots: VecDeque::new(),
                base_seq: 1,
                live: 0,
                last_of_job: HashMap::new(),
                last_queue_of_service: HashMap::new(),
                stats: QueueStats::default(),
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(16),
        }
    }

    pub fn push(&self, kind: EventKind) {
        let mut q = self.inner.lock();
        let seq = q.base_seq + q.slots.len() as u64;
        let key = kind.coalesce_key();
        q.stats.pushed += 1;
        if q.live >= self.capacity && key.is_some() && Self::try_replace(&mut q, &kind, key) {
            q.stats.coalesced += 1;
            return;
        }
        if q.live >= self.capacity && key.is_some() {
            Self::drop_oldest_coalescable(&mut q);
        }
        match (&kind, kind.job_id()) {
            (EventKind::QueueChanged { service, .. }, _) => {
                q.last_queue_of_service.insert(service.clone(), seq);
            }
            (_, Some(job)) => {
                q.last_of_job.insert(job.to_string(), (seq, key));
            }
            _ => {}
        }
        q.slots.push_back(Some(Event {
            seq,
            time: now_epoch(),
            kind,
        }));
        q.live += 1;
        drop(q);
        self.ready.notify_all();
    }

    /// Replaces the job's newest waiting event if it has the same coalesce key (and, for progress, node).
    fn try_replace(q: &mut Inner, kind: &EventKind, key: Option<u8>) -> bool {
        let seq = match kind {
            EventKind::QueueChanged { service, .. } => match q.last_queue_of_service.get(service) {
                Some(seq) => *seq,
                None => return false,
            },
            _ => match kind.job_id().and_then(|j| q.last_of_job.get(j)) {
                Some((seq, k)) if *k == key => *seq,
                _ => return false,
            },
        };
        let Some(idx) = seq.checked_sub(q.base_seq) else {
            return false;
        };
        let Some(slot) = q.slots.get_mut(idx as usize) else {
            return false;
        };
        match slot {
            Some(old) if same_stream(&old.kind, kind) => {
                old.kind = kind.clone();
                old.time = now_epoch();
                true
            }
            _ => false,
        }
    }

    fn drop_oldest_coalescable(q: &mut Inner) {
        let found = q
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|e| e.kind.coalesce_key().is_some()));
        if let Some(i) = found {
            q.slots[i] = None;
            q.live -= 1;
            q.stats.dropped += 1;
        }
    }

    /// Takes up to `max` events, oldest first. Never blocks on anything but the queue's own short lock.
    pub fn drain(&self, max: usize) -> Vec<Event> {
        let mut q = self.inner.lock();
        let mut out = Vec::with_capacity(max.min(q.live));
        while out.len() < max {
            let Some(slot) = q.slots.pop_front() else { break };
            q.base_seq += 1;
            if let Some(ev) = slot {
                q.live -= 1;
                match (&ev.kind, ev.kind.job_id()) {
                    (EventKind::QueueChanged { service, .. }, _)
                        if q.last_queue_of_service.get(service) == Some(&ev.seq) =>
                    {
                        q.last_queue_of_service.remove(service);
                    }
                    (_, Some(job)) if q.last_of_job.get(job).is_some_and(|(s, _)| *s == ev.seq) => {
                        q.last_of_job.remove(job);
                    }
                    _ => {}
                }
                out.push(ev);
            }
        }
        out
    }

    /// Waits up to `timeout` for at least one event (for scripts and the CLI; releases nothing itself).
    pub fn wait_nonempty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut q = self.inner.lock();
        while q.live == 0 && !q.closed {
            if self.ready.wait_until(&mut q, deadline).timed_out() {
                break;
            }
        }
        q.live > 0
    }

    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn stats(&self) -> QueueStats {
        let q = self.inner.lock();
        QueueStats {
            pending: q.live,
            ..q.stats
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().live
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn same_stream(a: &EventKind, b: &EventKind) -> bool {
    match (a, b) {
        (EventKind::Progress { node_id: x, .. }, EventKind::Progress { node_id: y, .. }) => x == y,
        (EventKind::Preview { .. }, EventKind::Preview { .. }) => true,
        (EventKind::QueueChanged { service: x, .. }, EventKind::QueueChanged { service: y, .. }) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(job: &str, v: f64) -> EventKind {
        EventKind::Progress {
            job_id: job.into(),
            node_id: Some("3".into()),
            value: v,
            max: 10.0,
            percentage: v * 10.0,
            eta_seconds: None,
            text: None,
        }
    }
    fn started(job: &str) -> EventKind {
        EventKind::NodeStarted {
            job_id: job.into(),
            node_id: "4".into(),
            node_type: None,
        }
    }
    fn done(job: &str) -> EventKind {
        EventKind::JobCancelled { job_id: job.into() }
    }

    #[test]
    fn keeps_everything_below_capacity_in_order() {
        let q = EventQueue::new(100);
        for i in 0..10 {
            q.push(progress("a", i as f64));
        }
        let evs = q.drain(1000);
        assert_eq!(evs.len(), 10);
        assert!(evs.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    #[test]
    fn coalesces_progress_under_pressure_but_never_lifecycle() {
        let q = EventQueue::new(16);
        for i in 0..1000 {
            q.push(progress("a", i as f64));
            if i % 100 == 0 {
                q.push(started("a"));
            }
        }
        q.push(done("a"));
        let evs = q.drain(10_000);
        let lifecycle = evs.iter().filter(|e| e.kind.coalesce_key().is_none()).count();
        assert_eq!(lifecycle, 11, "10 NodeStarted + 1 terminal survive");
        assert!(evs.len() <= 16 + 11, "bounded: {}", evs.len());
        // Latest progress wins and per-job order is kept: the terminal event is last.
        assert!(matches!(
            evs.last().map(|e| &e.kind),
            Some(EventKind::JobCancelled { .. })
        ));
        let last_progress = evs.iter().rev().find_map(|e| match &e.kind {
            EventKind::Progress { value, .. } => Some(*value),
            _ => None,
        });
        assert_eq!(last_progress, Some(999.0));
        assert!(evs.windows(2).all(|w| w[0].seq < w[1].seq));
        let stats = q.stats();
        assert!(stats.coalesced + stats.dropped > 900);
    }

    #[test]
    fn does_not_move_progress_before_a_later_lifecycle_event() {
        let q = EventQueue::new(16);
        for i in 0..20 {
            q.push(started(&format!("other{i}")));
        }
        q.push(progress("a", 1.0));
        q.push(started("a"));
        q.push(progress("a", 2.0));
        let evs: Vec<_> = q
            .drain(100)
            .into_iter()
            .filter(|e| e.kind.job_id() == Some("a"))
            .collect();
        let names: Vec<_> = evs.iter().map(|e| e.kind.name()).collect();
        assert_eq!(names.last(), Some(&"progress"));
        assert!(names.contains(&"node_started"));
    }

    #[test]
    fn drain_respects_max_and_wait_times_out() {
        let q = EventQueue::new(100);
        assert!(!q.wait_nonempty(Duration::from_millis(10)));
        for i in 0..5 {
            q.push(started(&i.to_string()));
        }
        assert_eq!(q.drain(2).len(), 2);
        assert_eq!(q.len(), 3);
        assert!(q.wait_nonempty(Duration::from_millis(10)));
    }
}
