//! The studio's fan-out. Every event (the hub's, and external producers') gets the next offset of one stream
//! whose history is kept in a bounded log; the per-job view the brief's endpoints show is kept up to date; and
//! every subscriber gets what matches its filter through a bounded outbox of its own.
//!
//! Offsets are global and increase by one per event. A job's progress may be coalesced in the log (a newer
//! progress of the same job replaces an older one that no lifecycle event followed), so a subscriber sees gaps
//! in the offsets it receives, never an event out of order or twice. A client that reconnects with the last
//! offset it saw (and the stream's epoch) gets exactly the events it missed, or — when the log no longer reaches
//! back that far, or the epoch changed — `recovered: false` and a snapshot of the jobs it follows.
use super::clock;
use crate::event::{EventKind, JobError, JobState, OutputFile};
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::sync::watch;

/// A frame's JSON text: shared bytes, so every subscriber's WebSocket message is the same buffer (no copy per
/// subscriber).
pub type Text = axum::extract::ws::Utf8Bytes;

/// How a frame may be treated by a slow subscriber's outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameClass {
    /// Never dropped or coalesced.
    Lifecycle,
    /// Replaced by a newer frame of the same class and job.
    Progress,
    Preview,
}

impl FrameClass {
    /// By the event's `type` name (events relayed from another instance arrive as JSON).
    pub fn of_type(name: &str) -> FrameClass {
        match name {
            "progress" | "queue_changed" => FrameClass::Progress,
            "preview" => FrameClass::Preview,
            _ => FrameClass::Lifecycle,
        }
    }

    fn of(kind: &EventKind) -> FrameClass {
        match kind {
            EventKind::Progress { .. } | EventKind::QueueChanged { .. } => FrameClass::Progress,
            EventKind::Preview { .. } => FrameClass::Preview,
            _ => FrameClass::Lifecycle,
        }
    }

    pub fn coalescable(self) -> bool {
        self != FrameClass::Lifecycle
    }
}

/// One message ready to send: its JSON text is built once and shared by every subscriber.
#[derive(Debug, Clone)]
pub struct Frame {
    pub offset: u64,
    pub job: Option<Arc<str>>,
    pub class: FrameClass,
    pub text: Text,
}

/// A job as the studio shows it (the brief's progress fields and ours). Also what is persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub job_id: String,
    pub service: String,
    pub tag: Option<String>,
    pub state: JobState,
    /// Overall progress 0–100; never goes back while the job runs.
    pub progress: f64,
    /// The running node's own progress 0–100.
    pub node_progress: f64,
    pub current_node: Option<String>,
    pub current_node_type: Option<String>,
    pub queue_position: Option<u32>,
    pub eta_seconds: Option<f64>,
    pub message: String,
    pub outputs: Vec<OutputFile>,
    /// An external producer's `output_path`.
    pub output_path: Option<String>,
    pub error: Option<JobError>,
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub updated_at: f64,
    /// The offset of this job's newest event.
    pub offset: u64,
    /// Reported by `POST /api/jobs/{id}/progress`, not run by this server's hub.
    pub external: bool,
    /// The offset of the newest preview, when one was seen (`GET /api/jobs/{id}/preview`).
    pub preview_offset: Option<u64>,
    /// The studio instance that runs this job when it is another one (its events come over Redis); None: this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The bus sequence of the newest event relayed for it: a replayed one is recognised and not shown twice.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub instance_seq: u64,
    /// For a job of a pool: the URL of the server that has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl JobView {
    pub fn new(job_id: &str, service: &str, tag: Option<String>, external: bool) -> JobView {
        let now = clock::now();
        JobView {
            job_id: job_id.to_string(),
            service: service.to_string(),
            tag,
            state: JobState::Pending,
            progress: 0.0,
            node_progress: 0.0,
            current_node: None,
            current_node_type: None,
            queue_position: None,
            eta_seconds: None,
            message: "Waiting to be sent".to_string(),
            outputs: Vec::new(),
            output_path: None,
            error: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            updated_at: now,
            offset: 0,
            external,
            preview_offset: None,
            instance: None,
            instance_seq: 0,
            server: None,
        }
    }

    /// The brief's `status`: queued → processing → completed | failed | cancelled.
    pub fn brief_status(&self) -> &'static str {
        match self.state {
            JobState::Pending | JobState::Submitting | JobState::Queued => "queued",
            JobState::Running => "processing",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The first output's path, for the brief's `output_path`.
    pub fn first_output(&self) -> Option<String> {
        self.output_path
            .clone()
            .or_else(|| self.outputs.first().map(|o| o.path.to_string_lossy().into_owned()))
    }

    /// Applies an event; false when the event changes nothing the view shows (after the terminal event).
    fn apply(&mut self, kind: &EventKind, offset: u64, time: f64) -> bool {
        if self.state.is_terminal() {
            return false;
        }
        self.offset = offset;
        self.updated_at = time;
        match kind {
            EventKind::JobQueued {
                position,
                pending_connection,
                ..
            } => {
                self.state = if *pending_connection {
                    JobState::Pending
                } else {
                    JobState::Queued
                };
                self.queue_position = *position;
                self.message = match (pending_connection, position) {
                    (true, _) => "Waiting for the server".to_string(),
                    (false, Some(0)) => "Queued, next to run".to_string(),
                    (false, Some(p)) => format!("Queued, {p} ahead"),
                    (false, None) => "Queued".to_string(),
                };
            }
            EventKind::JobStarted { .. } => {
                self.state = JobState::Running;
                self.queue_position = None;
                self.started_at.get_or_insert(time);
                self.message = "Generation in progress".to_string();
            }
            EventKind::NodeStarted { node_id, node_type, .. } => {
                self.state = JobState::Running;
                self.started_at.get_or_insert(time);
                self.current_node = Some(node_id.clone());
                self.current_node_type.clone_from(node_type);
                self.node_progress = 0.0;
                self.eta_seconds = None;
                self.message = match node_type {
                    Some(t) => format!("Running {t} (node {node_id})"),
                    None => format!("Running node {node_id}"),
                };
            }
            EventKind::Progress {
                percentage,
                eta_seconds,
                node_id,
                text,
                ..
            } => {
                if self.state != JobState::Running {
                    self.state = JobState::Running;
                    self.started_at.get_or_insert(time);
                }
                self.node_progress = percentage.clamp(0.0, 100.0);
                // Overall progress never goes back: a new node starting at 0 % does not empty the bar.
                self.progress = self.progress.max(self.node_progress.min(99.0));
                self.eta_seconds = *eta_seconds;
                if node_id.is_some() {
                    self.current_node.clone_from(node_id);
                }
                if let Some(t) = text.as_ref().filter(|t| !t.is_empty()) {
                    self.message.clone_from(t);
                } else if self.message.is_empty() || self.queue_position.is_some() {
                    self.message = "Generation in progress".to_string();
                }
                self.queue_position = None;
            }
            EventKind::Preview { .. } => self.preview_offset = Some(offset),
            // A pool's job: which of its servers has it (None: it waits for one). The state is left as it is: the
            // server's own job_queued follows at once.
            EventKind::JobAssigned { server, .. } => {
                self.server.clone_from(server);
                self.message = match server {
                    Some(s) => format!("Sent to {s}"),
                    None => "Waiting for a server".to_string(),
                };
            }
            EventKind::TextDelta { .. } => {
                self.state = JobState::Running;
                self.started_at.get_or_insert(time);
                self.message = "Writing".to_string();
            }
            EventKind::JobCompleted { outputs, ui, .. } => {
                self.state = JobState::Completed;
                self.outputs = outputs.clone();
                if self.output_path.is_none() {
                    self.output_path = ui.get("output_path").and_then(Value::as_str).map(str::to_string);
                }
                self.progress = 100.0;
                self.node_progress = 100.0;
                // An external producer's own words, else ours.
                self.message = ui
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("Completed")
                    .to_string();
            }
            EventKind::JobFailed { error, .. } => {
                self.state = JobState::Failed;
                self.message.clone_from(&error.message);
                self.error = Some(JobError::clone(error));
            }
            EventKind::JobCancelled { .. } => {
                self.state = JobState::Cancelled;
                self.message = "Cancelled".to_string();
            }
            _ => {}
        }
        if self.state.is_terminal() {
            self.finished_at = Some(time);
            self.current_node = None;
            self.eta_seconds = None;
            self.queue_position = None;
        }
        true
    }

    /// The brief's progress message for this job.
    pub fn brief_progress(&self) -> String {
        #[derive(Serialize)]
        struct Progress<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            job_id: &'a str,
            status: &'static str,
            progress: u32,
            estimated_remaining: Option<u64>,
            message: &'a str,
            output_path: Option<String>,
            timestamp: String,
            offset: u64,
        }
        let p = Progress {
            kind: "progress",
            job_id: &self.job_id,
            status: self.brief_status(),
            progress: self.progress.round().clamp(0.0, 100.0) as u32,
            estimated_remaining: self
                .eta_seconds
                .filter(|e| e.is_finite() && *e >= 0.0)
                .map(|e| e.ceil() as u64),
            message: &self.message,
            output_path: self.first_output(),
            timestamp: clock::rfc3339(self.updated_at),
            offset: self.offset,
        };
        serde_json::to_string(&p).unwrap_or_default()
    }
}

/// Limits of one subscriber's outbox.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    pub max_frames: usize,
    pub max_bytes: usize,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_frames: 4096,
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

#[derive(Default)]
struct OutboxInner {
    frames: VecDeque<Frame>,
    bytes: usize,
    overflow: bool,
    /// Signals from the server's one ping timer and from shutdown: no timer or watch per connection.
    ping_due: bool,
    closing: bool,
    coalesced: u64,
    /// The connection task waiting for this outbox (a `Waker` instead of a `Notify`: the task polls the
    /// outbox itself, so waiting costs no future of its own).
    waker: Option<Waker>,
}

/// One subscriber's queue. Progress and previews wait at most once per job (a newer one replaces the waiting
/// one, which moves to the back so frames still leave in offset order); lifecycle frames are never dropped — a
/// subscriber that lets more pile up than its limits is marked overflowed and closed (it resumes by offset).
pub struct Outbox {
    inner: Mutex<OutboxInner>,
    limits: OutboxLimits,
}

/// What a connection takes from its outbox next.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// The ping interval passed: ping the peer, and close it if it stayed silent past the timeout.
    Ping,
    /// The server is shutting down.
    Closing,
    /// The subscriber could not keep up.
    Overflowed,
}

impl Outbox {
    pub fn new(limits: OutboxLimits) -> Arc<Outbox> {
        Arc::new(Outbox {
            inner: Mutex::new(OutboxInner::default()),
            limits,
        })
    }

    pub fn push(&self, frame: Frame) {
        let mut q = self.inner.lock();
        if q.overflow {
            return;
        }
        if frame.class.coalescable() {
            // The newest waiting frame of this job, if it is of the same class, is stale now.
            let stale = q
                .frames
                .iter()
                .rposition(|f| f.job == frame.job)
                .filter(|&i| q.frames[i].class == frame.class);
            if let Some(i) = stale {
                if let Some(old) = q.frames.remove(i) {
                    q.bytes -= old.text.len();
                    q.coalesced += 1;
                }
            }
        }
        q.bytes += frame.text.len();
        q.frames.push_back(frame);
        if q.frames.len() > self.limits.max_frames || q.bytes > self.limits.max_bytes {
            q.overflow = true;
            q.frames = VecDeque::new();
            q.bytes = 0;
        }
        let waker = q.waker.take();
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// A frame of the connection's own (a reply to the client, the brief's `ping`), behind what waits; the
    /// connection is polling already, so nobody is woken.
    pub fn push_own(&self, text: Text) {
        let mut q = self.inner.lock();
        q.bytes += text.len();
        q.frames.push_back(Frame {
            offset: 0,
            job: None,
            class: FrameClass::Lifecycle,
            text,
        });
    }

    fn signal(&self, set: impl FnOnce(&mut OutboxInner)) {
        let mut q = self.inner.lock();
        set(&mut q);
        let waker = q.waker.take();
        drop(q);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The next thing for the connection to do; `Pending` (and woken by the next push or signal) when none.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Next> {
        let mut q = self.inner.lock();
        if q.overflow {
            return Poll::Ready(Next::Overflowed);
        }
        if q.closing {
            return Poll::Ready(Next::Closing);
        }
        if let Some(f) = q.frames.pop_front() {
            q.bytes -= f.text.len();
            if q.frames.is_empty() && q.frames.capacity() > 16 {
                // A burst grew the queue: give its memory back once it drained (most connections idle).
                q.frames = VecDeque::new();
            }
            return Poll::Ready(Next::Frame(f));
        }
        if std::mem::take(&mut q.ping_due) {
            return Poll::Ready(Next::Ping);
        }
        match &mut q.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits for frames and moves up to `max` into `out`; `Err` once the outbox overflowed (or closes).
    pub async fn next_batch(&self, out: &mut Vec<Frame>, max: usize) -> Result<(), Overflowed> {
        loop {
            match std::future::poll_fn(|cx| self.poll_next(cx)).await {
                Next::Frame(f) => {
                    out.push(f);
                    while out.len() < max {
                        let more = {
                            let mut q = self.inner.lock();
                            let f = q.frames.pop_front();
                            if let Some(f) = &f {
                                q.bytes -= f.text.len();
                            }
                            f
                        };
                        match more {
                            Some(f) => out.push(f),
                            None => break,
                        }
                    }
                    return Ok(());
                }
                Next::Ping => continue,
                Next::Closing | Next::Overflowed => return Err(Overflowed),
            }
        }
    }

    pub fn coalesced(&self) -> u64 {
        self.inner.lock().coalesced
    }

    pub fn pending(&self) -> usize {
        self.inner.lock().frames.len()
    }
}

/// The subscriber could not keep up: its outbox passed its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflowed;

/// What a typed-stream subscriber follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    All,
    Jobs(HashSet<String>),
}

impl Filter {
    fn matches(&self, job: Option<&str>) -> bool {
        match self {
            Filter::All => true,
            Filter::Jobs(set) => job.is_some_and(|j| set.contains(j)),
        }
    }
}

/// What a subscriber gets when it (re)connects.
pub struct Subscription {
    pub id: u64,
    pub outbox: Arc<Outbox>,
    /// True when `replay` holds exactly what was missed since the offset asked for.
    pub recovered: bool,
    pub replay: Vec<Frame>,
    /// The jobs the subscriber follows, when it could not be recovered (or asked for no offset).
    pub snapshot: Option<Vec<JobView>>,
    pub epoch: String,
    /// The newest offset at the moment of subscribing.
    pub offset: u64,
}

/// Connection kinds, for counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnKind {
    Job,
    Monitor,
    Events,
}

struct Sub {
    outbox: Arc<Outbox>,
    filter: Filter,
}

/// The log: slot i holds offset `base + i`; `None` marks a progress entry that a newer one replaced.
struct Log {
    slots: VecDeque<Option<Frame>>,
    base: u64,
    /// The newest offset whose event is gone for good (dropped for the log's limits, or older than the history
    /// loaded at start): a client that saw it resumes exactly. Coalesced entries do not count — a newer entry of
    /// the same job stands for them — so a job's superseded progress never makes a resume fail.
    lost: u64,
    live: usize,
    bytes: usize,
    /// Per job: the offset of its newest entry, and whether that entry is coalescable (and its class).
    newest_of_job: HashMap<Arc<str>, (u64, FrameClass)>,
}

impl Log {
    fn get(&self, offset: u64) -> Option<&Option<Frame>> {
        offset
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.slots.get(i))
    }

    fn tombstone(&mut self, offset: u64) {
        if let Some(i) = offset.checked_sub(self.base).and_then(|i| usize::try_from(i).ok()) {
            if let Some(slot) = self.slots.get_mut(i) {
                if let Some(f) = slot.take() {
                    self.live -= 1;
                    self.bytes -= f.text.len();
                }
            }
        }
    }
}

/// Settings of the relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events kept for resuming (live entries) and their bytes.
    pub history_events: usize,
    pub history_bytes: usize,
    /// Finished jobs kept in memory (all of them stay in the database).
    pub finished_jobs: usize,
    pub outbox: OutboxLimits,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            history_events: 100_000,
            history_bytes: 64 * 1024 * 1024,
            finished_jobs: 10_000,
            outbox: OutboxLimits::default(),
        }
    }
}

struct Inner {
    next_offset: u64,
    log: Log,
    jobs: HashMap<String, JobView>,
    finished: VecDeque<String>,
    /// Per job: its newest preview (mime, image, offset).
    previews: HashMap<String, (String, Bytes, u64)>,
    subs: HashMap<u64, Sub>,
    /// Typed-stream subscribers by the job they follow, and those following everything.
    subs_by_job: HashMap<String, HashSet<u64>>,
    subs_all: HashSet<u64>,
    /// The brief's `/ws/{job_id}` subscribers by job.
    brief_by_job: HashMap<String, HashMap<u64, Arc<Outbox>>>,
    next_sub: u64,
}

/// What persistence hears about.
pub trait Sink: Send + Sync {
    fn job_changed(&self, view: &JobView);
    fn event(&self, frame: &Frame);
}

/// Hears every event of this instance's own jobs, in publish order (the Redis bus, to share them).
pub trait Tap: Send + Sync {
    /// `preview`: a preview event's image (shared, so that other instances' subscribers see previews too).
    fn local_event(&self, kind: &EventKind, time: f64, view: &JobView, preview: Option<&Bytes>);
}

/// An event of a job another studio instance runs, as it came over the bus.
pub struct Relayed {
    pub instance: String,
    /// The instance's own sequence number of the event (increasing by one per event it shares).
    pub seq: u64,
    pub time: f64,
    /// The event's JSON (`{"type": …, "job_id": …, …}`), shown as it is with this stream's offset.
    pub event: String,
    /// The job as the running instance shows it after the event.
    pub view: JobView,
    /// A preview event's image.
    pub preview: Option<Bytes>,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct RelayCounters {
    pub events: AtomicU64,
    pub deliveries: AtomicU64,
    pub overflow_closes: AtomicU64,
    pub coalesced: AtomicU64,
}

pub struct Relay {
    inner: Mutex<Inner>,
    epoch: String,
    config: RelayConfig,
    changed: watch::Sender<u64>,
    sink: Option<Arc<dyn Sink>>,
    tap: std::sync::OnceLock<Arc<dyn Tap>>,
    pub counters: RelayCounters,
    connections: Mutex<HashMap<ConnKind, usize>>,
    brief_conns_by_job: Mutex<HashMap<String, usize>>,
    /// Set by `close_all`: a connection that subscribes afterwards is told to close at once.
    closing: AtomicBool,
}

/// Just a preview event's `mime`.
#[derive(Deserialize)]
struct MimeOnly {
    mime: String,
}

/// Just an event's `type`.
#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type", default)]
    kind: String,
}

/// The JSON of one typed-stream event: the hub's event with the stream's offset instead of the queue's seq.
#[derive(Serialize)]
struct StreamEvent<'a> {
    offset: u64,
    time: f64,
    #[serde(flatten)]
    kind: &'a EventKind,
    /// Previews travel by reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

impl Relay {
    /// A relay that continues a stream (`epoch`, next offset, jobs and history loaded from the database).
    pub fn new(
        config: RelayConfig,
        epoch: String,
        next_offset: u64,
        jobs: Vec<JobView>,
        history: Vec<Frame>,
        sink: Option<Arc<dyn Sink>>,
    ) -> Relay {
        let next_offset = next_offset.max(1);
        let mut inner = Inner {
            next_offset,
            log: Log {
                slots: VecDeque::new(),
                base: next_offset,
                lost: next_offset - 1,
                live: 0,
                bytes: 0,
                newest_of_job: HashMap::new(),
            },
            jobs: HashMap::new(),
            finished: VecDeque::new(),
            previews: HashMap::new(),
            subs: HashMap::new(),
            subs_by_job: HashMap::new(),
            subs_all: HashSet::new(),
            brief_by_job: HashMap::new(),
            next_sub: 1,
        };
        let mut jobs = jobs;
        jobs.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        for view in jobs {
            if view.state.is_terminal() {
                inner.finished.push_back(view.job_id.clone());
            }
            inner.jobs.insert(view.job_id.clone(), view);
        }
        // History is continuous only from its first offset on; a gap means nothing before it can be replayed.
        let mut history: Vec<Frame> = history.into_iter().filter(|f| f.offset < next_offset).collect();
        history.sort_by_key(|f| f.offset);
        if let Some(first) = history.first() {
            inner.log.base = first.offset;
            inner.log.lost = first.offset - 1;
            for f in history {
                let slot = usize::try_from(f.offset - inner.log.base).unwrap_or(usize::MAX);
                while inner.log.slots.len() < slot {
                    inner.log.slots.push_back(None);
                }
                inner.log.live += 1;
                inner.log.bytes += f.text.len();
                if let Some(j) = &f.job {
                    inner.log.newest_of_job.insert(j.clone(), (f.offset, f.class));
                }
                inner.log.slots.push_back(Some(f));
            }
            while inner.log.base + (inner.log.slots.len() as u64) < next_offset {
                inner.log.slots.push_back(None);
            }
        }
        let (changed, _) = watch::channel(0);
        Relay {
            inner: Mutex::new(inner),
            epoch,
            config,
            changed,
            sink,
            tap: std::sync::OnceLock::new(),
            counters: RelayCounters::default(),
            connections: Mutex::new(HashMap::new()),
            brief_conns_by_job: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Shares this instance's job events from now on (set once).
    pub fn set_tap(&self, tap: Arc<dyn Tap>) {
        let _ = self.tap.set(tap);
    }

    /// Bumped on every job change (the monitor's wake-up).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Registers a job the hub was just given, so it is known before its first event.
    pub fn register_job(&self, view: JobView) {
        let mut inner = self.inner.lock();
        if let Some(known) = inner.jobs.get_mut(&view.job_id) {
            // Its first event overtook the registration: keep what only the registration knows.
            if known.service.is_empty() {
                known.service = view.service;
            }
            if known.tag.is_none() {
                known.tag = view.tag;
            }
            if let Some(sink) = &self.sink {
                sink.job_changed(known);
            }
            return;
        }
        if let Some(sink) = &self.sink {
            sink.job_changed(&view);
        }
        inner.jobs.insert(view.job_id.clone(), view);
        drop(inner);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Publishes an event: offset, log, job view, persistence and every matching subscriber, in one step so
    /// that no subscriber sees events out of order.
    pub fn publish(&self, kind: &EventKind, time: f64, preview: Option<Bytes>) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let job = kind.job_id().map(str::to_string);
        if let Some(id) = &job {
            let view = inner.jobs.entry(id.clone()).or_insert_with(|| {
                let service = match kind {
                    EventKind::JobQueued { service, .. }
                    | EventKind::JobStarted { service, .. }
                    | EventKind::JobAssigned { service, .. } => service.clone(),
                    _ => String::new(),
                };
                JobView::new(id, &service, None, false)
            });
            if view.state.is_terminal() {
                return; // nothing follows a job's one terminal event
            }
        }
        let offset = inner.next_offset;
        inner.next_offset += 1;
        let class = FrameClass::of(kind);
        let url = match (kind, &job) {
            (EventKind::Preview { .. }, Some(id)) => Some(format!("/api/jobs/{id}/preview?offset={offset}")),
            _ => None,
        };
        let text = Text::from(
            serde_json::to_string(&StreamEvent {
                offset,
                time,
                kind,
                url,
            })
            .unwrap_or_default(),
        );
        let job_arc: Option<Arc<str>> = job.as_deref().map(Arc::from);
        let frame = Frame {
            offset,
            job: job_arc.clone(),
            class,
            text,
        };
        self.counters.events.fetch_add(1, Ordering::Relaxed);

        // The job's view.
        let mut view_changed = None;
        if let Some(id) = &job {
            if let Some(view) = inner.jobs.get_mut(id) {
                if view.apply(kind, offset, time) {
                    view_changed = Some(view.clone());
                }
            }
            if let (Some(data), EventKind::Preview { mime, .. }) = (&preview, kind) {
                inner.previews.insert(id.clone(), (mime.clone(), data.clone(), offset));
            }
        }
        if let (Some(tap), Some(view)) = (self.tap.get(), &view_changed) {
            tap.local_event(kind, time, view, preview.as_ref());
        }
        // The brief's per-job clients (`/ws/{job_id}`) know progress messages of a job's lifecycle; which pool
        // server has it is in the typed stream and the job's view, not a progress message of its own.
        let brief = !matches!(kind, EventKind::JobAssigned { .. });
        self.fan_out(guard, frame, view_changed, brief);
    }

    /// Publishes an event of a job another instance runs: false when it is one already shown (a replay after a
    /// reconnect), after the job's end, or about a job this instance runs itself.
    pub fn publish_relayed(&self, r: Relayed) -> bool {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let id = r.view.job_id.clone();
        if let Some(known) = inner.jobs.get(&id) {
            let replay = match &known.instance {
                None => true,
                Some(i) => *i == r.instance && r.seq <= known.instance_seq,
            };
            if replay || known.state.is_terminal() {
                return false;
            }
        }
        let type_name = serde_json::from_str::<TypeOnly>(&r.event)
            .map(|t| t.kind)
            .unwrap_or_default();
        let Some(fields) = r.event.trim().strip_prefix('{').filter(|f| f.len() > 1) else {
            return false;
        };
        let offset = inner.next_offset;
        inner.next_offset += 1;
        let class = FrameClass::of_type(&type_name);
        // A preview whose image came along is served here too, by reference like our own (`url`).
        let preview = match (class, r.preview) {
            (FrameClass::Preview, Some(data)) => {
                serde_json::from_str::<MimeOnly>(&r.event).ok().map(|m| (m.mime, data))
            }
            _ => None,
        };
        let text = match (&preview, fields.trim_end().strip_suffix('}')) {
            (Some(_), Some(body)) => Text::from(format!(
                "{{\"offset\":{offset},\"time\":{},{body},\"url\":\"/api/jobs/{id}/preview?offset={offset}\"}}",
                r.time
            )),
            _ => Text::from(format!("{{\"offset\":{offset},\"time\":{},{fields}", r.time)),
        };
        let job_arc: Option<Arc<str>> = Some(Arc::from(id.as_str()));
        self.counters.events.fetch_add(1, Ordering::Relaxed);
        let frame = Frame {
            offset,
            job: job_arc,
            class,
            text,
        };
        let mut view = r.view;
        view.offset = offset;
        view.instance = Some(r.instance);
        view.instance_seq = r.seq;
        // The origin's preview offset is of its own stream: ours is the newest preview relayed here.
        view.preview_offset = match &preview {
            Some(_) => Some(offset),
            None => inner.jobs.get(&id).and_then(|k| k.preview_offset),
        };
        if let Some((mime, data)) = preview {
            inner.previews.insert(id.clone(), (mime, data, offset));
        }
        inner.jobs.insert(id, view.clone());
        let brief = type_name != "job_assigned";
        self.fan_out(guard, frame, Some(view), brief);
        true
    }

    /// The log, persistence and every matching subscriber, under the one lock so no subscriber sees events out of
    /// order. `brief`: the brief's per-job subscribers get a progress message for it.
    fn fan_out(
        &self,
        mut guard: parking_lot::MutexGuard<'_, Inner>,
        frame: Frame,
        view_changed: Option<JobView>,
        brief: bool,
    ) {
        let inner = &mut *guard;
        let (offset, class) = (frame.offset, frame.class);
        let job_arc = frame.job.clone();
        let job: Option<String> = job_arc.as_deref().map(str::to_string);
        // The log: a coalescable entry replaces the job's newest entry when that one is of the same class.
        if let Some(j) = &job_arc {
            if class.coalescable() {
                if let Some(&(prev, prev_class)) = inner.log.newest_of_job.get(j) {
                    if prev_class == class {
                        inner.log.tombstone(prev);
                        self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            inner.log.newest_of_job.insert(j.clone(), (offset, class));
        }
        inner.log.live += 1;
        inner.log.bytes += frame.text.len();
        inner.log.slots.push_back(Some(frame.clone()));
        self.trim_log(&mut inner.log);

        if let Some(sink) = &self.sink {
            sink.event(&frame);
            if let Some(v) = &view_changed {
                sink.job_changed(v);
            }
        }

        // Typed-stream subscribers.
        let mut delivered = 0u64;
        let targets = job
            .as_ref()
            .and_then(|id| inner.subs_by_job.get(id))
            .into_iter()
            .flatten()
            .chain(inner.subs_all.iter());
        for sid in targets {
            if let Some(sub) = inner.subs.get(sid) {
                sub.outbox.push(frame.clone());
                delivered += 1;
            }
        }
        // The brief's per-job subscribers get the job's progress message.
        if let (Some(view), Some(id)) = (&view_changed, &job) {
            if let Some(subs) = inner.brief_by_job.get(id).filter(|_| brief) {
                if !subs.is_empty() && class != FrameClass::Preview {
                    let brief = Frame {
                        offset,
                        job: job_arc.clone(),
                        class: if view.state.is_terminal() {
                            FrameClass::Lifecycle
                        } else {
                            FrameClass::Progress
                        },
                        text: view.brief_progress().into(),
                    };
                    for outbox in subs.values() {
                        outbox.push(brief.clone());
                        delivered += 1;
                    }
                }
            }
            if view.state.is_terminal() {
                inner.previews.remove(id);
                inner.finished.push_back(id.clone());
                while inner.finished.len() > self.config.finished_jobs {
                    if let Some(old) = inner.finished.pop_front() {
                        inner.jobs.remove(&old);
                        inner.previews.remove(&old);
                    }
                }
            }
        }
        drop(guard);
        self.counters.deliveries.fetch_add(delivered, Ordering::Relaxed);
        if view_changed.is_some() || job.is_none() {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    fn trim_log(&self, log: &mut Log) {
        while log.live > self.config.history_events || log.bytes > self.config.history_bytes {
            match log.slots.pop_front() {
                Some(Some(f)) => {
                    log.live -= 1;
                    log.bytes -= f.text.len();
                    if let Some(j) = &f.job {
                        if log.newest_of_job.get(j).is_some_and(|(o, _)| *o == f.offset) {
                            log.newest_of_job.remove(j);
                        }
                    }
                    log.lost = f.offset;
                    log.base += 1;
                }
                Some(None) => log.base += 1,
                None => break,
            }
        }
        // Leading tombstones carry nothing to replay.
        while matches!(log.slots.front(), Some(None)) {
            log.slots.pop_front();
            log.base += 1;
        }
    }

    /// Subscribes to the typed stream. With `since` (and the current epoch) the subscriber gets exactly what it
    /// missed when the history still holds it; otherwise `recovered == false` and a snapshot.
    pub fn subscribe(&self, filter: Filter, since: Option<u64>, epoch: Option<&str>) -> Subscription {
        let outbox = self.new_outbox();
        let mut inner = self.inner.lock();
        let newest = inner.next_offset - 1;
        let same_epoch = epoch.is_none_or(|e| e == self.epoch);
        let mut replay = Vec::new();
        let recovered = match since {
            Some(s) if same_epoch && s <= newest && s >= inner.log.lost => {
                let mut o = s + 1;
                while o <= newest {
                    if let Some(Some(f)) = inner.log.get(o) {
                        if filter.matches(f.job.as_deref()) {
                            replay.push(f.clone());
                        }
                    }
                    o += 1;
                }
                true
            }
            _ => false,
        };
        let snapshot = (!recovered).then(|| {
            let mut jobs: Vec<JobView> = inner
                .jobs
                .values()
                .filter(|v| filter.matches(Some(&v.job_id)))
                .cloned()
                .collect();
            jobs.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
            jobs
        });
        let id = inner.next_sub;
        inner.next_sub += 1;
        match &filter {
            Filter::All => {
                inner.subs_all.insert(id);
            }
            Filter::Jobs(set) => {
                for j in set {
                    inner.subs_by_job.entry(j.clone()).or_default().insert(id);
                }
            }
        }
        inner.subs.insert(
            id,
            Sub {
                outbox: outbox.clone(),
                filter,
            },
        );
        Subscription {
            id,
            outbox,
            recovered: recovered && since.is_some(),
            replay,
            snapshot,
            epoch: self.epoch.clone(),
            offset: newest,
        }
    }

    fn new_outbox(&self) -> Arc<Outbox> {
        let outbox = Outbox::new(self.config.outbox);
        if self.closing.load(Ordering::Acquire) {
            outbox.signal(|q| q.closing = true);
        }
        outbox
    }

    /// Every subscriber's outbox (taken under the lock, signalled outside it).
    fn all_outboxes(&self) -> Vec<Arc<Outbox>> {
        let inner = self.inner.lock();
        let typed = inner.subs.values().map(|s| s.outbox.clone());
        let brief = inner.brief_by_job.values().flat_map(|m| m.values().cloned());
        typed.chain(brief).collect()
    }

    /// The server's one ping timer: every connection pings its peer (and closes it when it stayed silent past
    /// the timeout) — one timer for all instead of one per connection.
    pub fn ping_all(&self) {
        for o in self.all_outboxes() {
            o.signal(|q| q.ping_due = true);
        }
    }

    /// Shutdown: every connection closes (1001), and so does any that subscribes from now on.
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::Release);
        for o in self.all_outboxes() {
            o.signal(|q| q.closing = true);
        }
    }

    pub fn unsubscribe(&self, id: u64) {
        let mut inner = self.inner.lock();
        if let Some(sub) = inner.subs.remove(&id) {
            self.counters
                .coalesced
                .fetch_add(sub.outbox.coalesced(), Ordering::Relaxed);
            match sub.filter {
                Filter::All => {
                    inner.subs_all.remove(&id);
                }
                Filter::Jobs(set) => {
                    for j in set {
                        if let Some(s) = inner.subs_by_job.get_mut(&j) {
                            s.remove(&id);
                            if s.is_empty() {
                                inner.subs_by_job.remove(&j);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Subscribes to one job's brief progress messages; returns the job's current view (if known) too.
    pub fn subscribe_brief(&self, job_id: &str) -> (u64, Arc<Outbox>, Option<JobView>) {
        let outbox = self.new_outbox();
        let mut inner = self.inner.lock();
        let id = inner.next_sub;
        inner.next_sub += 1;
        inner
            .brief_by_job
            .entry(job_id.to_string())
            .or_default()
            .insert(id, outbox.clone());
        let view = inner.jobs.get(job_id).cloned();
        drop(inner);
        *self.brief_conns_by_job.lock().entry(job_id.to_string()).or_default() += 1;
        (id, outbox, view)
    }

    pub fn unsubscribe_brief(&self, job_id: &str, id: u64) {
        let mut inner = self.inner.lock();
        if let Some(m) = inner.brief_by_job.get_mut(job_id) {
            if let Some(o) = m.remove(&id) {
                self.counters.coalesced.fetch_add(o.coalesced(), Ordering::Relaxed);
            }
            if m.is_empty() {
                inner.brief_by_job.remove(job_id);
            }
        }
        drop(inner);
        let mut counts = self.brief_conns_by_job.lock();
        if let Some(n) = counts.get_mut(job_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(job_id);
            }
        }
    }

    pub fn job(&self, job_id: &str) -> Option<JobView> {
        self.inner.lock().jobs.get(job_id).cloned()
    }

    /// Jobs, newest first, filtered by state (brief or our names) and tag.
    pub fn jobs(&self, state: Option<&str>, tag: Option<&str>) -> Vec<JobView> {
        let inner = self.inner.lock();
        let mut v: Vec<JobView> = inner
            .jobs
            .values()
            .filter(|j| state.is_none_or(|s| s == j.state.as_str() || s == j.brief_status()))
            .filter(|j| tag.is_none_or(|t| j.tag.as_deref() == Some(t)))
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            b.created_at
                .total_cmp(&a.created_at)
                .then_with(|| a.job_id.cmp(&b.job_id))
        });
        v
    }

    pub fn preview(&self, job_id: &str) -> Option<(String, Bytes)> {
        let inner = self.inner.lock();
        inner
            .previews
            .get(job_id)
            .map(|(mime, data, _)| (mime.clone(), data.clone()))
    }

    /// The image of the preview event at `offset` while it is still the job's newest (`None` once a newer one
    /// replaced it or the job ended: previews are latest-wins).
    pub fn preview_at(&self, job_id: &str, offset: u64) -> Option<Bytes> {
        let inner = self.inner.lock();
        inner
            .previews
            .get(job_id)
            .filter(|(_, _, o)| *o == offset)
            .map(|(_, data, _)| data.clone())
    }

    pub fn newest_offset(&self) -> u64 {
        self.inner.lock().next_offset - 1
    }

    /// The oldest offset a client can still resume after (history), for `/api/health`.
    pub fn history_span(&self) -> (u64, usize) {
        let inner = self.inner.lock();
        (inner.log.base, inner.log.live)
    }

    pub fn connection_opened(&self, kind: ConnKind) {
        *self.connections.lock().entry(kind).or_default() += 1;
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn connection_closed(&self, kind: ConnKind) {
        if let Some(n) = self.connections.lock().get_mut(&kind) {
            *n = n.saturating_sub(1);
        }
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn connection_counts(&self) -> HashMap<ConnKind, usize> {
        self.connections.lock().clone()
    }

    /// Connections per job on `/ws/{job_id}` (the brief's `connection_details`).
    pub fn brief_connections(&self) -> HashMap<String, usize> {
        self.brief_conns_by_job.lock().clone()
    }

    /// Job counts: total, active, completed, failed, cancelled.
    pub fn job_counts(&self) -> JobCounts {
        let inner = self.inner.lock();
        let mut c = JobCounts::default();
        for j in inner.jobs.values() {
            c.total += 1;
            match j.state {
                JobState::Completed => c.completed += 1,
                JobState::Failed => c.failed += 1,
                JobState::Cancelled => c.cancelled += 1,
                _ => c.active += 1,
            }
        }
        c
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JobCounts {
    pub total: usize,
    pub active: usize,
    pub completed: usize,
    pub failed: usize,
    pub cancelled: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(history: usize) -> Relay {
        let config = RelayConfig {
            history_events: history,
            ..RelayConfig::default()
        };
        Relay::new(config, "e1".into(), 1, Vec::new(), Vec::new(), None)
    }

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
        EventKind::JobStarted {
            job_id: job.into(),
            service: "s".into(),
            cached_nodes: vec![],
        }
    }

    fn done(job: &str) -> EventKind {
        EventKind::JobCancelled { job_id: job.into() }
    }

    fn offsets(frames: &[Frame]) -> Vec<u64> {
        frames.iter().map(|f| f.offset).collect()
    }

    #[test]
    fn resume_gets_exactly_what_was_missed_with_progress_coalesced() {
        let r = relay(1000);
        r.publish(&started("a"), 1.0, None); // 1
        r.publish(&progress("a", 1.0), 1.0, None); // 2 (replaced by 3)
        r.publish(&progress("a", 2.0), 1.0, None); // 3
        r.publish(&started("b"), 1.0, None); // 4
        r.publish(&progress("a", 3.0), 1.0, None); // 5: b's event sits between, still replaces 3 (a's newest)
        r.publish(&done("a"), 1.0, None); // 6
        r.publish(&progress("a", 4.0), 1.0, None); // after the terminal: dropped, no offset
        let s = r.subscribe(Filter::All, Some(1), Some("e1"));
        assert!(s.recovered);
        assert_eq!(offsets(&s.replay), vec![4, 5, 6]);
        let s = r.subscribe(Filter::Jobs(["b".to_string()].into()), Some(0), Some("e1"));
        assert!(s.recovered);
        assert_eq!(offsets(&s.replay), vec![4]);
        assert_eq!(r.newest_offset(), 6);
    }

    #[test]
    fn another_epoch_or_a_trimmed_history_is_not_recovered() {
        let r = relay(3);
        for j in ["a", "b", "c", "d", "e"] {
            r.publish(&started(j), 1.0, None);
        }
        let s = r.subscribe(Filter::All, Some(1), Some("e1"));
        assert!(!s.recovered, "offsets 2..=5 are partly gone");
        assert_eq!(s.snapshot.as_ref().map(Vec::len), Some(5));
        let s = r.subscribe(Filter::All, Some(2), Some("e1"));
        assert!(s.recovered);
        assert_eq!(offsets(&s.replay), vec![3, 4, 5]);
        let s = r.subscribe(Filter::All, Some(4), Some("other"));
        assert!(!s.recovered);
        let s = r.subscribe(Filter::All, Some(99), Some("e1"));
        assert!(!s.recovered, "an offset from the future cannot be resumed");
    }

    #[test]
    fn a_resume_after_progress_that_newer_progress_replaced_is_recovered() {
        // Every event after the client's offset was coalesced away (the log's head is tombstones only): nothing
        // is lost, so the client resumes exactly — the newest progress, then the end.
        let r = relay(1000);
        r.publish(&progress("a", 10.0), 1.0, None);
        r.publish(&progress("b", 10.0), 1.0, None);
        r.publish(&progress("a", 50.0), 1.0, None);
        r.publish(&progress("b", 50.0), 1.0, None);
        r.publish(&progress("a", 80.0), 1.0, None);
        r.publish(&done("a"), 1.0, None);
        let s = r.subscribe(Filter::Jobs(["a".to_string()].into()), Some(1), Some("e1"));
        assert!(s.recovered, "superseded progress is not a gap");
        assert_eq!(offsets(&s.replay), vec![5, 6]);
    }

    #[test]
    fn live_frames_follow_the_replay_without_gap_or_duplicate() {
        let r = relay(1000);
        r.publish(&started("a"), 1.0, None);
        let s = r.subscribe(Filter::All, Some(0), None);
        r.publish(&progress("a", 1.0), 1.0, None);
        r.publish(&done("a"), 1.0, None);
        let rt = tokio::runtime::Builder::new_current_thread().build().ok();
        let mut out = Vec::new();
        if let Some(rt) = rt {
            let _ = rt.block_on(s.outbox.next_batch(&mut out, 100));
        }
        assert_eq!(offsets(&s.replay), vec![1]);
        assert_eq!(offsets(&out), vec![2, 3]);
    }

    #[test]
    fn outbox_coalesces_progress_keeps_order_and_overflows_on_lifecycle() {
        let o = Outbox::new(OutboxLimits {
            max_frames: 3,
            max_bytes: 1 << 20,
        });
        let f = |offset, job: &str, class| Frame {
            offset,
            job: Some(Arc::from(job)),
            class,
            text: Text::from("x"),
        };
        o.push(f(1, "a", FrameClass::Progress));
        o.push(f(2, "b", FrameClass::Lifecycle));
        o.push(f(3, "a", FrameClass::Progress)); // replaces 1, goes to the back
        assert_eq!(o.pending(), 2);
        assert_eq!(o.coalesced(), 1);
        o.push(f(4, "a", FrameClass::Lifecycle));
        o.push(f(5, "a", FrameClass::Progress)); // a's newest is lifecycle: kept
        let rt = tokio::runtime::Builder::new_current_thread().build().ok();
        let mut out = Vec::new();
        assert!(o.pending() > 3 || o.inner.lock().overflow);
        if let Some(rt) = rt {
            assert_eq!(rt.block_on(o.next_batch(&mut out, 10)), Err(Overflowed));
        }
    }

    #[test]
    fn brief_view_tracks_a_job_to_its_end() {
        let r = relay(100);
        let (_, outbox, view) = r.subscribe_brief("a");
        assert!(view.is_none());
        r.publish(
            &EventKind::JobQueued {
                job_id: "a".into(),
                service: "sim".into(),
                position: Some(2),
                pending_connection: false,
                node_errors: vec![],
            },
            1.0,
            None,
        );
        r.publish(&progress("a", 5.0), 2.0, None);
        r.publish(&progress("a", 1.0), 3.0, None);
        let v = r.job("a");
        assert_eq!(
            v.as_ref().map(|v| v.progress),
            Some(50.0),
            "overall progress never goes back"
        );
        assert_eq!(v.as_ref().map(|v| v.brief_status()), Some("processing"));
        r.publish(&done("a"), 4.0, None);
        assert_eq!(r.job("a").map(|v| v.brief_status()), Some("cancelled"));
        assert!(outbox.pending() >= 2);
        assert_eq!(r.job_counts().cancelled, 1);
    }

    #[test]
    fn a_pool_assignment_is_streamed_and_kept_in_the_view_but_is_no_brief_progress_message() {
        let r = relay(100);
        let typed = r.subscribe(Filter::All, None, None);
        let (_, brief, _) = r.subscribe_brief("p");
        let assigned = |server: Option<&str>, attempt| EventKind::JobAssigned {
            job_id: "p".into(),
            service: "farm".into(),
            server: server.map(str::to_string),
            attempt,
        };
        r.publish(&assigned(None, 1), 1.0, None);
        let v = r.job("p");
        assert_eq!(
            v.as_ref().map(|v| v.service.as_str()),
            Some("farm"),
            "known by its pool before job_queued"
        );
        assert_eq!(v.as_ref().and_then(|v| v.server.clone()), None);
        assert_eq!(v.map(|v| v.message), Some("Waiting for a server".to_string()));
        r.publish(&assigned(Some("http://127.0.0.1:9001"), 1), 2.0, None);
        assert_eq!(
            r.job("p").and_then(|v| v.server),
            Some("http://127.0.0.1:9001".to_string())
        );
        assert_eq!(typed.outbox.pending(), 2, "the typed stream carries both assignments");
        assert_eq!(
            brief.pending(),
            0,
            "the brief's /ws/{{job_id}} gets no message of its own for them"
        );
        r.publish(
            &EventKind::JobQueued {
                job_id: "p".into(),
                service: "farm".into(),
                position: Some(0),
                pending_connection: false,
                node_errors: vec![],
            },
            3.0,
            None,
        );
        assert_eq!(brief.pending(), 1, "its lifecycle still reaches the brief's clients");
        assert_eq!(
            r.job("p").and_then(|v| v.server),
            Some("http://127.0.0.1:9001".to_string()),
            "job_queued keeps the server"
        );
        let resumed = r.subscribe(Filter::All, Some(0), Some("e1"));
        assert!(resumed.recovered);
        let texts: Vec<&str> = resumed.replay.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(texts.len(), 3);
        assert!(texts[0].contains("\"type\":\"job_assigned\"") && texts[0].contains("\"server\":null"));
        assert!(
            texts[1].contains("\"server\":\"http://127.0.0.1:9001\""),
            "{}",
            texts[1]
        );
    }

    fn relayed(instance: &str, seq: u64, kind: &EventKind, view: &JobView) -> Relayed {
        Relayed {
            instance: instance.into(),
            seq,
            time: 2.0,
            event: serde_json::to_string(kind).unwrap_or_default(),
            view: view.clone(),
            preview: None,
        }
    }

    #[test]
    fn relayed_events_are_shown_once_in_order_and_never_for_our_own_jobs() {
        let r = relay(100);
        let s = r.subscribe(Filter::All, None, None);
        let mut view = JobView::new("x", "gpu", Some("shot".into()), false);
        view.state = JobState::Running;
        view.progress = 30.0;
        assert!(r.publish_relayed(relayed("other", 1, &started("x"), &view)));
        assert!(r.publish_relayed(relayed("other", 2, &progress("x", 3.0), &view)));
        assert!(
            !r.publish_relayed(relayed("other", 2, &progress("x", 3.0), &view)),
            "a replay"
        );
        assert!(
            !r.publish_relayed(relayed("other", 1, &started("x"), &view)),
            "a replay"
        );
        // The same job followed by a new process of that instance (another id) goes on.
        view.state = JobState::Cancelled;
        assert!(r.publish_relayed(relayed("other-restarted", 1, &done("x"), &view)));
        assert!(
            !r.publish_relayed(relayed("other-restarted", 2, &progress("x", 4.0), &view)),
            "after its end"
        );
        let shown = r.job("x");
        assert_eq!(
            shown.as_ref().and_then(|v| v.instance.clone()).as_deref(),
            Some("other-restarted")
        );
        assert_eq!(shown.as_ref().and_then(|v| v.tag.clone()).as_deref(), Some("shot"));
        assert_eq!(shown.map(|v| v.offset), Some(3), "shown with this stream's offset");
        // Our own job's events coming back over the bus are not shown again.
        r.publish(&started("mine"), 1.0, None);
        let own = JobView::new("mine", "gpu", None, false);
        assert!(!r.publish_relayed(relayed("other", 3, &progress("mine", 1.0), &own)));
        let rt = tokio::runtime::Builder::new_current_thread().build().ok();
        let mut out = Vec::new();
        if let Some(rt) = rt {
            let _ = rt.block_on(s.outbox.next_batch(&mut out, 100));
        }
        assert_eq!(offsets(&out), vec![1, 2, 3, 4]);
        let first: Value = serde_json::from_str(&out[0].text).unwrap_or_default();
        assert_eq!(first["offset"], 1);
        assert_eq!(first["type"], "job_started");
        assert_eq!(first["job_id"], "x");
        assert_eq!(out[1].class, FrameClass::Progress);
    }

    #[test]
    fn a_relayed_preview_with_its_image_is_served_here_by_this_streams_offset() {
        let r = relay(100);
        let mut view = JobView::new("x", "gpu", None, false);
        view.state = JobState::Running;
        view.preview_offset = Some(77); // the origin's own offset: meaningless here
        assert!(r.publish_relayed(relayed("other", 1, &started("x"), &view)));
        let preview = EventKind::Preview {
            job_id: "x".into(),
            node_id: None,
            mime: "image/png".into(),
            data: Bytes::new(),
        };
        let mut with_image = relayed("other", 2, &preview, &view);
        with_image.preview = Some(Bytes::from_static(b"\x89PNG-image"));
        assert!(r.publish_relayed(with_image));
        assert_eq!(
            r.preview("x"),
            Some(("image/png".to_string(), Bytes::from_static(b"\x89PNG-image")))
        );
        assert_eq!(r.preview_at("x", 2), Some(Bytes::from_static(b"\x89PNG-image")));
        assert_eq!(r.job("x").and_then(|v| v.preview_offset), Some(2));
        // Its event names this instance's URL and offset; a later relayed event keeps the preview's offset.
        let log = r.inner.lock().log.get(2).cloned().flatten();
        let event: Value = log
            .map(|f| serde_json::from_str(&f.text).unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(event["url"], "/api/jobs/x/preview?offset=2");
        assert_eq!(event["mime"], "image/png");
        assert!(r.publish_relayed(relayed("other", 3, &progress("x", 5.0), &view)));
        assert_eq!(r.job("x").and_then(|v| v.preview_offset), Some(2));
    }
}
