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
    /// The texts of the error's source chain, outermost first (as an exception's `causes`); empty when the
    /// failure came from the server's own words.
    #[serde(default)]
    pub causes: Vec<String>,
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
            causes: Vec::new(),
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
    /// A pool job was handed to one of the pool's servers (`server`, its URL), or — `server` None — waits in the
    /// hub for a server to take it ("waiting for a server"). Sent again when the job moves after a failover.
    JobAssigned {
        job_id: String,
        /// The pool's name.
        service: String,
        server: Option<String>,
        /// 1 for the first server the job was sent to, 2 after one failover, …
        attempt: u32,
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
        /// Boxed: the largest payload of all, and rare; every event would otherwise be its size.
        error: Box<JobError>,
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
            EventKind::JobAssigned { .. } => "job_assigned",
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
            | EventKind::JobAssigned { job_id, .. }
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

/// Default byte budget of the event queue (`HubConfig::event_budget_bytes`, `Hub(event_budget_bytes=...)`).
pub const DEFAULT_EVENT_BUDGET: usize = 64 << 20;

/// After the first event of a burst wakes a waiting consumer, it waits this much longer (or until
/// `LINGER_BATCH` events wait) so that a flood is handed over in batches: one wake-up per batch, not per event.
/// The price is at most this much latency on an event that arrives alone; Blender polls every ~30 ms anyway.
const LINGER: Duration = Duration::from_millis(1);
const LINGER_BATCH: usize = 512;

/// Internal maps keyed by job ids and service names: ids we made or the server sent over our own socket, so a
/// fast non-keyed hash is fine (SipHash showed up in the event path's profile).
type FastMap<V> = HashMap<String, V, rustc_hash::FxBuildHasher>;

/// Counters for `snapshot()["events"]` and benchmarks. "Coalesced" means the information survives in a newer
/// event of the same job (an older progress or preview replaced or removed in favour of a newer one); "dropped"
/// means it is gone (a job's newest preview or progress removed to stay within a limit). Lifecycle events are
/// never coalesced nor dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Events waiting for `poll()`.
    pub pending: usize,
    /// Their approximate size in memory.
    pub pending_bytes: usize,
    /// The byte budget: beyond it previews, then progress, are coalesced or dropped.
    pub budget_bytes: usize,
    pub pushed: u64,
    pub coalesced: u64,
    pub dropped: u64,
    pub coalesced_bytes: u64,
    pub dropped_bytes: u64,
    pub previews_coalesced: u64,
    pub previews_dropped: u64,
    pub progress_coalesced: u64,
    pub progress_dropped: u64,
}

/// An event waiting in the queue, with its approximate size.
struct Slot {
    ev: Event,
    bytes: usize,
}

/// Index of the per-job waiting counters.
const PROGRESS: usize = 0;
const PREVIEW: usize = 1;

fn counter_ix(kind: &EventKind) -> Option<usize> {
    match kind {
        EventKind::Progress { .. } => Some(PROGRESS),
        EventKind::Preview { .. } => Some(PREVIEW),
        _ => None,
    }
}

struct Inner {
    /// Tombstones (`None`) mark coalesced/dropped slots; slot i has sequence `base_seq + i`.
    slots: VecDeque<Option<Slot>>,
    base_seq: u64,
    live: usize,
    bytes: usize,
    budget: usize,
    /// The newest waiting event of each job: (sequence, coalesce key).
    last_of_job: FastMap<(u64, Option<u8>)>,
    /// The newest waiting QueueChanged per service (they carry no job).
    last_queue_of_service: FastMap<u64>,
    /// How many progress / preview events of each job wait: more than one means the older ones are superseded.
    waiting_of_job: FastMap<[u32; 2]>,
    stats: QueueStats,
    closed: bool,
    /// Consumers blocked until the queue is not empty, and consumers lingering for a batch.
    waiters: usize,
    lingerers: usize,
}

/// The hub's event queue: many producers (the runtime), one consumer (`poll`).
///
/// Bounded twice: by count (`capacity`: beyond it a job's progress/preview replaces its own newest waiting one,
/// else the oldest progress/preview goes) and by bytes (`budget`: see [`EventQueue::push`]).
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

/// The queue's lock held for a batch of pushes (`EventQueue::pushing`).
pub struct Pushing<'a> {
    queue: &'a EventQueue,
    q: Option<parking_lot::MutexGuard<'a, Inner>>,
    wake: bool,
    /// When the batch's events were made (read once per batch).
    time: Option<f64>,
}

impl Pushing<'_> {
    pub fn push(&mut self, kind: EventKind) {
        let time = *self.time.get_or_insert_with(now_epoch);
        if let Some(q) = self.q.as_mut() {
            let wake = self.queue.push_locked(q, kind, time);
            self.wake |= wake;
        }
    }
}

impl Drop for Pushing<'_> {
    fn drop(&mut self) {
        // Unlocked first: the woken consumer must not find the lock still held.
        drop(self.q.take());
        if self.wake {
            self.queue.ready.notify_all();
        }
    }
}

impl Inner {
    /// Keeps the per-job bookkeeping in step when an event leaves the queue (drained, coalesced or dropped).
    fn forget(&mut self, ev: &Event) {
        match (&ev.kind, ev.kind.job_id()) {
            (EventKind::QueueChanged { service, .. }, _)
                if self.last_queue_of_service.get(service) == Some(&ev.seq) =>
            {
                self.last_queue_of_service.remove(service);
            }
            (EventKind::QueueChanged { .. }, _) => {}
            (kind, Some(job)) => {
                if self.last_of_job.get(job).is_some_and(|(s, _)| *s == ev.seq) {
                    self.last_of_job.remove(job);
                }
                if let Some(ix) = counter_ix(kind) {
                    if let Some(c) = self.waiting_of_job.get_mut(job) {
                        c[ix] = c[ix].saturating_sub(1);
                        if *c == [0, 0] {
                            self.waiting_of_job.remove(job);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn waiting(&self, job: &str, ix: usize) -> u32 {
        self.waiting_of_job.get(job).map_or(0, |c| c[ix])
    }

    fn count_gone(&mut self, kind: &EventKind, bytes: usize, coalesced: bool) {
        let s = &mut self.stats;
        match (counter_ix(kind), coalesced) {
            (Some(PREVIEW), true) => s.previews_coalesced += 1,
            (Some(PREVIEW), false) => s.previews_dropped += 1,
            (Some(_), true) => s.progress_coalesced += 1,
            (Some(_), false) => s.progress_dropped += 1,
            (None, _) => {}
        }
        if coalesced {
            s.coalesced += 1;
            s.coalesced_bytes += bytes as u64;
        } else {
            s.dropped += 1;
            s.dropped_bytes += bytes as u64;
        }
    }

    /// Removes the waiting event at `idx` (leaves a tombstone, so sequence numbers stay put).
    fn remove_at(&mut self, idx: usize, coalesced: bool) {
        let Some(slot) = self.slots.get_mut(idx).and_then(Option::take) else {
            return;
        };
        self.live -= 1;
        self.bytes -= slot.bytes;
        self.forget(&slot.ev);
        self.count_gone(&slot.ev.kind, slot.bytes, coalesced);
    }

    /// Frees room for `need` bytes for the coalescable `incoming` event, in this order: previews superseded by a
    /// newer preview of the same job (the incoming one counts), then progress superseded likewise (both
    /// coalesced: the newest of each job stays), then the oldest previews of any job (dropped). Lifecycle events
    /// are never touched. Returns whether the event now fits.
    fn make_room(&mut self, incoming: &EventKind, need: usize) -> bool {
        let fits = |q: &Inner| q.bytes + need <= q.budget;
        let incoming_job = incoming.job_id();
        let incoming_ix = counter_ix(incoming);
        for (ix, superseded_only) in [(PREVIEW, true), (PROGRESS, true), (PREVIEW, false)] {
            let mut idx = 0;
            while !fits(self) && idx < self.slots.len() {
                let victim = match &self.slots[idx] {
                    Some(s) if counter_ix(&s.ev.kind) == Some(ix) => {
                        let job = s.ev.kind.job_id().unwrap_or_default();
                        let newer_incoming = u32::from(incoming_ix == Some(ix) && incoming_job == Some(job));
                        !superseded_only || self.waiting(job, ix) + newer_incoming > 1
                    }
                    _ => false,
                };
                if victim {
                    self.remove_at(idx, superseded_only);
                }
                idx += 1;
            }
        }
        fits(self)
    }
}

impl EventQueue {
    pub fn new(capacity: usize) -> EventQueue {
        Self::with_budget(capacity, DEFAULT_EVENT_BUDGET)
    }

    /// A queue bounded to `capacity` coalescable events and `budget_bytes` (approximate) bytes.
    pub fn with_budget(capacity: usize, budget_bytes: usize) -> EventQueue {
        EventQueue {
            inner: Mutex::new(Inner {
                slots: VecDeque::new(),
                base_seq: 1,
                live: 0,
                bytes: 0,
                budget: budget_bytes,
                last_of_job: FastMap::default(),
                last_queue_of_service: FastMap::default(),
                waiting_of_job: FastMap::default(),
                stats: QueueStats::default(),
                closed: false,
                waiters: 0,
                lingerers: 0,
            }),
            ready: Condvar::new(),
            capacity: capacity.max(16),
        }
    }

    /// Changes the byte budget (applies to the next pushes).
    pub fn set_budget_bytes(&self, budget_bytes: usize) {
        self.inner.lock().budget = budget_bytes;
    }

    /// Queues an event. Lifecycle events are always queued. A progress or preview that would take the waiting
    /// events beyond the byte budget first makes room (see `Inner::make_room`) and is itself dropped only when
    /// the budget is full of lifecycle events and other jobs' newest previews; beyond `capacity` waiting events
    /// it replaces its job's newest waiting event of the same kind, else the oldest progress/preview goes.
    /// Per-job order is kept: nothing is ever moved ahead of an event queued after it.
    pub fn push(&self, kind: EventKind) {
        self.pushing().push(kind);
    }

    /// Holds the queue's lock for several pushes (a burst read from one socket): the consumer is woken at most
    /// once, when the batch is dropped.
    pub fn pushing(&self) -> Pushing<'_> {
        Pushing {
            queue: self,
            q: Some(self.inner.lock()),
            wake: false,
            time: None,
        }
    }

    /// `push` under the lock, made at `time`; true if the consumer should be woken.
    fn push_locked(&self, q: &mut Inner, kind: EventKind, time: f64) -> bool {
        let size = approx_bytes(&kind);
        let key = kind.coalesce_key();
        q.stats.pushed += 1;
        if key.is_some() {
            if q.bytes + size > q.budget && !q.make_room(&kind, size) {
                q.count_gone(&kind, size, false);
                return false;
            }
            if q.live >= self.capacity {
                if Self::try_replace(q, &kind, key, size, time) {
                    return false;
                }
                Self::drop_oldest_coalescable(q);
            }
        }
        let seq = q.base_seq + q.slots.len() as u64;
        match (&kind, kind.job_id()) {
            (EventKind::QueueChanged { service, .. }, _) => match q.last_queue_of_service.get_mut(service.as_str()) {
                Some(s) => *s = seq,
                None => {
                    q.last_queue_of_service.insert(service.clone(), seq);
                }
            },
            (_, Some(job)) => {
                // Look up before inserting: no String allocation per event for a job already waiting.
                match q.last_of_job.get_mut(job) {
                    Some(v) => *v = (seq, key),
                    None => {
                        q.last_of_job.insert(job.to_string(), (seq, key));
                    }
                }
                if let Some(ix) = counter_ix(&kind) {
                    match q.waiting_of_job.get_mut(job) {
                        Some(c) => c[ix] += 1,
                        None => {
                            let mut c = [0, 0];
                            c[ix] = 1;
                            q.waiting_of_job.insert(job.to_string(), c);
                        }
                    }
                }
            }
            _ => {}
        }
        q.slots.push_back(Some(Slot {
            ev: Event { seq, time, kind },
            bytes: size,
        }));
        q.live += 1;
        q.bytes += size;
        // Wake the consumer only when it waits for the first event, or when its linger has a full batch: a
        // notification per event cost more CPU (futex wake + context switch) than the rest of the event path.
        (q.live == 1 && q.waiters > 0) || (q.live == LINGER_BATCH && q.lingerers > 0)
    }

    /// Replaces the job's newest waiting event if it has the same coalesce key (and, for progress, node).
    fn try_replace(q: &mut Inner, kind: &EventKind, key: Option<u8>, size: usize, time: f64) -> bool {
        let seq = match kind {
            EventKind::QueueChanged { service, .. } => match q.last_queue_of_service.get(service.as_str()) {
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
        let Some(Some(slot)) = q.slots.get_mut(idx as usize) else {
            return false;
        };
        if !same_stream(&slot.ev.kind, kind) {
            return false;
        }
        let old = std::mem::replace(&mut slot.bytes, size);
        slot.ev.kind = kind.clone();
        slot.ev.time = time;
        q.bytes = q.bytes - old + size;
        q.count_gone(kind, old, true);
        true
    }

    fn drop_oldest_coalescable(q: &mut Inner) {
        let found = q
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.ev.kind.coalesce_key().is_some()));
        if let Some(i) = found {
            q.remove_at(i, false);
        }
    }

    /// Takes up to `max` events, oldest first. Never blocks on anything but the queue's own short lock.
    pub fn drain(&self, max: usize) -> Vec<Event> {
        let mut out = Vec::new();
        self.drain_into(&mut out, max);
        out
    }

    /// `drain` into a buffer the caller keeps, so a consumer that polls in a loop does not allocate (and free) a
    /// batch-sized vector every time. Appends up to `max` events.
    pub fn drain_into(&self, out: &mut Vec<Event>, max: usize) {
        let mut q = self.inner.lock();
        let max = out.len().saturating_add(max);
        out.reserve(max.saturating_sub(out.len()).min(q.live));
        while out.len() < max {
            let Some(slot) = q.slots.pop_front() else { break };
            q.base_seq += 1;
            if let Some(slot) = slot {
                q.live -= 1;
                q.bytes -= slot.bytes;
                q.forget(&slot.ev);
                out.push(slot.ev);
            }
        }
        if q.live == 0 {
            // Tombstones left behind by coalescing: an empty queue restarts clean.
            q.base_seq += q.slots.len() as u64;
            q.slots.clear();
        }
    }

    /// Waits up to `timeout` for at least one event (for scripts and the CLI; releases nothing itself). When it
    /// had to wait, it lingers up to 1 ms more for the rest of a burst, so a flood costs one wake-up per batch.
    pub fn wait_nonempty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut q = self.inner.lock();
        if q.live == 0 && !q.closed {
            q.waiters += 1;
            while q.live == 0 && !q.closed {
                if self.ready.wait_until(&mut q, deadline).timed_out() {
                    break;
                }
            }
            q.waiters -= 1;
            if q.live > 0 && q.live < LINGER_BATCH && !q.closed {
                let until = (Instant::now() + LINGER).min(deadline);
                q.lingerers += 1;
                while q.live < LINGER_BATCH && !q.closed {
                    if self.ready.wait_until(&mut q, until).timed_out() {
                        break;
                    }
                }
                q.lingerers -= 1;
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
            pending_bytes: q.bytes,
            budget_bytes: q.budget,
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

/// An event's approximate size in memory: the struct plus what its strings, bytes and JSON values hold.
/// Approximate on purpose (allocator overhead is not counted); it is what the byte budget counts.
pub fn approx_bytes(kind: &EventKind) -> usize {
    fn opt(s: &Option<String>) -> usize {
        s.as_ref().map_or(0, String::len)
    }
    fn strs(v: &[String]) -> usize {
        v.iter().map(|s| s.len() + std::mem::size_of::<String>()).sum()
    }
    fn problem(p: &NodeProblem) -> usize {
        std::mem::size_of::<NodeProblem>()
            + p.node_id.len()
            + opt(&p.class_type)
            + opt(&p.input)
            + p.code.len()
            + p.message.len()
            + p.details.len()
    }
    let heap = match kind {
        EventKind::ServiceStateChanged { service, reason, .. } => service.len() + opt(reason),
        EventKind::QueueChanged { service, .. } => service.len(),
        EventKind::ServiceDiscovered {
            url,
            kind,
            name,
            summary,
            service_kind,
        } => url.len() + kind.len() + opt(name) + summary.len() + opt(service_kind),
        EventKind::JobAssigned {
            job_id,
            service,
            server,
            ..
        } => job_id.len() + service.len() + opt(server),
        EventKind::JobQueued {
            job_id,
            service,
            node_errors,
            ..
        } => job_id.len() + service.len() + node_errors.iter().map(problem).sum::<usize>(),
        EventKind::JobStarted {
            job_id,
            service,
            cached_nodes,
        } => job_id.len() + service.len() + strs(cached_nodes),
        EventKind::NodeStarted {
            job_id,
            node_id,
            node_type,
        } => job_id.len() + node_id.len() + opt(node_type),
        EventKind::Progress {
            job_id, node_id, text, ..
        } => job_id.len() + opt(node_id) + opt(text),
        EventKind::Preview {
            job_id,
            node_id,
            mime,
            data,
        } => job_id.len() + opt(node_id) + mime.len() + data.len(),
        EventKind::NodeText { job_id, node_id, text } => opt(job_id) + node_id.len() + text.len(),
        EventKind::NodeOutput {
            job_id,
            node_id,
            output,
        } => job_id.len() + node_id.len() + value_bytes(output),
        EventKind::TextDelta { job_id, text, .. } => job_id.len() + text.len(),
        EventKind::JobCompleted {
            job_id, outputs, ui, ..
        } => {
            let files: usize = outputs
                .iter()
                .map(|o| {
                    std::mem::size_of::<OutputFile>()
                        + o.node_id.len()
                        + o.kind.len()
                        + o.path.as_os_str().len()
                        + o.filename.len()
                        + o.subfolder.len()
                        + o.file_type.len()
                        + o.sha256.len()
                })
                .sum();
            job_id.len() + files + value_bytes(ui)
        }
        EventKind::JobFailed { job_id, error } => {
            job_id.len()
                + error.code.len()
                + error.message.len()
                + opt(&error.node_id)
                + opt(&error.node_type)
                + opt(&error.exception_type)
                + strs(&error.traceback)
                + error.node_errors.iter().map(problem).sum::<usize>()
        }
        EventKind::JobCancelled { job_id } => job_id.len(),
    };
    std::mem::size_of::<Slot>() + heap
}

fn value_bytes(v: &Value) -> usize {
    const NODE: usize = std::mem::size_of::<Value>();
    match v {
        Value::Null | Value::Bool(_) => 0,
        Value::Number(n) => n.as_str().len(),
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(|x| NODE + value_bytes(x)).sum(),
        // Keys, values and the map's index entry.
        Value::Object(m) => m.iter().map(|(k, x)| k.len() + 2 * NODE + value_bytes(x)).sum(),
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

    fn preview(job: &str, n: usize) -> EventKind {
        EventKind::Preview {
            job_id: job.into(),
            node_id: Some("3".into()),
            mime: "image/jpeg".into(),
            data: Bytes::from(vec![7u8; n]),
        }
    }
    fn preview_len(e: &Event) -> Option<usize> {
        match &e.kind {
            EventKind::Preview { data, .. } => Some(data.len()),
            _ => None,
        }
    }
    const KB: usize = 1024;

    #[test]
    fn a_preview_flood_stays_within_the_byte_budget_keeping_each_jobs_newest() {
        let q = EventQueue::with_budget(100_000, 100 * KB);
        q.push(started("a"));
        q.push(started("b"));
        for i in 0..200 {
            // Sizes differ per push so the surviving preview can be recognised.
            q.push(preview("a", 10 * KB + i));
            q.push(preview("b", 10 * KB + 1000 + i));
            assert!(q.stats().pending_bytes <= 100 * KB, "{:?}", q.stats());
        }
        let stats = q.stats();
        assert_eq!(stats.previews_dropped, 0, "superseded previews go first: {stats:?}");
        assert!(stats.previews_coalesced >= 380, "{stats:?}");
        assert_eq!(stats.coalesced, stats.previews_coalesced);
        assert!(stats.coalesced_bytes >= 380 * 10 * KB as u64);
        let evs = q.drain(1000);
        let newest = |job: &str| {
            evs.iter()
                .filter(|e| e.kind.job_id() == Some(job))
                .filter_map(preview_len)
                .last()
        };
        assert_eq!(newest("a"), Some(10 * KB + 199));
        assert_eq!(newest("b"), Some(10 * KB + 1000 + 199));
        assert_eq!(evs.iter().filter(|e| e.kind.name() == "node_started").count(), 2);
        assert!(evs.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(q.stats().pending_bytes, 0);
    }

    #[test]
    fn previews_go_before_progress_and_progress_is_coalesced_to_each_jobs_newest() {
        let one_progress = approx_bytes(&progress("a", 0.0));
        let q = EventQueue::with_budget(100_000, 20 * KB + 50 * one_progress);
        q.push(preview("a", 10 * KB));
        q.push(preview("b", 10 * KB));
        for i in 0..40 {
            q.push(progress("a", i as f64));
        }
        assert_eq!(q.stats().progress_coalesced, 0);
        // Over the budget: a's older preview is superseded by the new one, before any progress goes.
        q.push(preview("a", 10 * KB));
        let s = q.stats();
        assert_eq!(
            (s.previews_coalesced, s.progress_coalesced, s.progress_dropped),
            (1, 0, 0),
            "{s:?}"
        );
        // More progress: only superseded progress is coalesced (b's newest preview is not dropped for it).
        for i in 40..200 {
            q.push(progress("a", i as f64));
        }
        let s = q.stats();
        assert!(s.progress_coalesced > 100 && s.previews_dropped == 0, "{s:?}");
        assert!(s.pending_bytes <= 20 * KB + 50 * one_progress + 2 * KB, "{s:?}");
        let evs = q.drain(1000);
        let last_progress = evs.iter().rev().find_map(|e| match &e.kind {
            EventKind::Progress { value, .. } => Some(*value),
            _ => None,
        });
        assert_eq!(last_progress, Some(199.0));
        let values: Vec<f64> = evs
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Progress { value, .. } => Some(*value),
                _ => None,
            })
            .collect();
        assert!(values.windows(2).all(|w| w[0] < w[1]), "order kept: {values:?}");
        assert_eq!(
            evs.iter().filter_map(preview_len).count(),
            2,
            "each job's newest preview stays"
        );
    }

    #[test]
    fn lifecycle_events_are_never_dropped_even_beyond_the_budget() {
        let q = EventQueue::with_budget(100_000, 64 * KB);
        for i in 0..2000 {
            q.push(EventKind::NodeText {
                job_id: Some("a".into()),
                node_id: "1".into(),
                text: format!("{i:0>100}"),
            });
            if i % 10 == 0 {
                q.push(preview("a", 8 * KB));
            }
        }
        q.push(done("a"));
        let s = q.stats();
        assert!(s.pending_bytes > 64 * KB, "lifecycle alone exceeds the budget: {s:?}");
        assert!(s.previews_dropped > 0, "{s:?}");
        let evs = q.drain(10_000);
        assert_eq!(evs.iter().filter(|e| e.kind.name() == "node_text").count(), 2000);
        assert_eq!(evs.last().map(|e| e.kind.name()), Some("job_cancelled"));
        assert!(evs.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    #[test]
    fn when_only_newest_previews_remain_the_oldest_is_dropped_and_counted() {
        let q = EventQueue::with_budget(100_000, 64 * KB);
        for job in ["a", "b", "c", "d", "e"] {
            q.push(preview(job, 20 * KB));
        }
        let s = q.stats();
        assert_eq!((s.previews_coalesced, s.previews_dropped), (0, 2), "{s:?}");
        assert_eq!(s.dropped_bytes as usize, 2 * approx_bytes(&preview("a", 20 * KB)));
        let jobs: Vec<_> = q
            .drain(100)
            .iter()
            .filter_map(|e| e.kind.job_id().map(str::to_string))
            .collect();
        assert_eq!(jobs, ["c", "d", "e"]);
        // A preview bigger than the whole budget is dropped itself; nothing else is lost for it.
        q.push(started("z"));
        q.push(preview("z", 100 * KB));
        let evs = q.drain(100);
        assert_eq!(evs.iter().map(|e| e.kind.name()).collect::<Vec<_>>(), ["node_started"]);
        assert_eq!(q.stats().previews_dropped, 3);
    }

    #[test]
    fn sizes_count_preview_bytes_and_return_to_zero_when_drained() {
        assert!(approx_bytes(&preview("a", 1 << 20)) >= 1 << 20);
        assert!(approx_bytes(&progress("a", 1.0)) < 1024);
        let q = EventQueue::new(100);
        q.push(preview("a", 5000));
        q.push(progress("a", 1.0));
        assert!(q.stats().pending_bytes >= 5000);
        assert_eq!(q.stats().budget_bytes, DEFAULT_EVENT_BUDGET);
        q.drain(1);
        assert!(q.stats().pending_bytes < 1024);
        q.drain(1);
        assert_eq!(q.stats().pending_bytes, 0);
        assert_eq!(q.stats().pending, 0);
    }

    #[test]
    fn a_waiting_consumer_is_woken_by_the_first_event_and_takes_the_burst_in_one_batch() {
        let q = std::sync::Arc::new(EventQueue::new(100_000));
        let q2 = q.clone();
        let producer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            for i in 0..LINGER_BATCH {
                q2.push(progress("a", i as f64));
            }
        });
        assert!(q.wait_nonempty(Duration::from_secs(10)));
        let _ = producer.join();
        // However the producer and the linger interleaved, nothing is lost or reordered.
        let mut evs = q.drain(100_000);
        evs.extend(q.drain(100_000));
        assert_eq!(evs.len(), LINGER_BATCH);
        assert!(evs.windows(2).all(|w| w[0].seq < w[1].seq));
        q.close();
        assert!(
            !q.wait_nonempty(Duration::from_secs(10)),
            "a closed, empty queue does not block"
        );
    }
}
