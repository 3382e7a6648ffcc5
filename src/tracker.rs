//! The hub's job table: what `snapshot()` and `job.wait()` read. Events pass through `Shared::emit`, which
//! applies them here and queues them under the table's lock, so a job never emits anything after its one terminal
//! event and one job's events reach `poll()` in the order they were applied.
//!
//! The table also records who holds each job (which backend actor, and whether it may have been posted), so the
//! hub can end every job exactly once on every path: a removed service, a closed hub, an actor that cannot be
//! reached, a cancel that comes before the job reached its actor, an address that changed before it was posted.
use crate::error::ErrorCode;
use crate::event::{EventKind, EventQueue, JobError, JobState, OutputFile, Pushing};
use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use serde_json::Value;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How `Shared::hand_over` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOver {
    /// The actor has the order.
    Sent,
    /// The job had ended already (cancelled or drained): nothing was sent.
    Ended,
    /// The actor could not be reached: the job failed `service_removed`.
    Failed,
}

/// What the user submitted (before conversion and parameters), so a job can be submitted again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Submission {
    pub workflow: std::sync::Arc<Value>,
    pub params: Vec<(String, Value)>,
}

/// What a user can ask about a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSnapshot {
    pub id: String,
    pub service: String,
    /// For a job of a pool: the URL of the pool server that has it (None while it waits for one).
    pub server: Option<String>,
    pub tag: Option<String>,
    pub state: JobState,
    pub queue_position: Option<u32>,
    pub current_node: Option<String>,
    pub current_node_type: Option<String>,
    /// The current node's progress, 0–100.
    pub progress: f64,
    pub eta_seconds: Option<f64>,
    pub outputs: Vec<OutputFile>,
    pub ui: Value,
    pub error: Option<JobError>,
    pub submitted_at: f64,
    pub elapsed_seconds: f64,
}

struct Record {
    snap: JobSnapshot,
    /// What was submitted, for `resubmit`.
    submission: Submission,
    created: Instant,
    ended: Option<Instant>,
    /// The backend actor that holds the job (`ActorHandle::id`); 0 while the hub still prepares it.
    owner: u64,
    /// The job may have reached its server: it is never handed to another actor, only ended.
    posted: bool,
}

/// Finished jobs kept for `snapshot()`/`wait()` after they end; older ones are dropped so memory stays bounded.
pub const DEFAULT_FINISHED_CAP: usize = 1000;

pub struct JobTable {
    /// Looked up on every event: a fast hasher (the keys are our own job ids).
    records: rustc_hash::FxHashMap<String, Record>,
    finished: VecDeque<String>,
    finished_cap: usize,
}

impl JobTable {
    fn new(finished_cap: usize) -> JobTable {
        JobTable {
            records: rustc_hash::FxHashMap::default(),
            finished: VecDeque::new(),
            finished_cap,
        }
    }

    fn apply(&mut self, kind: &EventKind) -> bool {
        let Some(id) = kind.job_id() else { return true };
        let Some(rec) = self.records.get_mut(id) else {
            // Job-scoped events for jobs we do not track (forgotten or never ours) are not delivered.
            return matches!(kind, EventKind::NodeText { .. });
        };
        let s = &mut rec.snap;
        if s.state.is_terminal() {
            return false;
        }
        match kind {
            EventKind::JobQueued {
                position,
                pending_connection,
                ..
            } => {
                s.state = if *pending_connection {
                    JobState::Pending
                } else {
                    JobState::Queued
                };
                s.queue_position = *position;
            }
            EventKind::JobAssigned { server, .. } => {
                s.server.clone_from(server);
                // Back to waiting (a failover): no server's queue position or progress applies any more.
                s.state = JobState::Pending;
                s.queue_position = None;
                s.progress = 0.0;
                s.current_node = None;
            }
            EventKind::JobStarted { .. } => {
                s.state = JobState::Running;
                s.queue_position = None;
            }
            EventKind::NodeStarted { node_id, node_type, .. } => {
                s.state = JobState::Running;
                s.current_node = Some(node_id.clone());
                s.current_node_type = node_type.clone();
                s.progress = 0.0;
                s.eta_seconds = None;
            }
            EventKind::Progress {
                percentage,
                eta_seconds,
                node_id,
                ..
            } => {
                s.progress = *percentage;
                s.eta_seconds = *eta_seconds;
                if node_id.is_some() {
                    s.current_node.clone_from(node_id);
                }
            }
            EventKind::TextDelta { .. } => s.state = JobState::Running,
            EventKind::JobCompleted { outputs, ui, .. } => {
                s.state = JobState::Completed;
                s.outputs = outputs.clone();
                s.ui = ui.clone();
                s.progress = 100.0;
            }
            EventKind::JobFailed { error, .. } => {
                s.state = JobState::Failed;
                s.error = Some(JobError::clone(error));
            }
            EventKind::JobCancelled { .. } => s.state = JobState::Cancelled,
            _ => {}
        }
        if kind.is_terminal() {
            s.current_node = None;
            s.eta_seconds = None;
            s.queue_position = None;
            rec.ended = Some(Instant::now());
            s.elapsed_seconds = rec.created.elapsed().as_secs_f64();
            self.finished.push_back(id.to_string());
            while self.finished.len() > self.finished_cap {
                if let Some(old) = self.finished.pop_front() {
                    self.records.remove(&old);
                }
            }
        }
        true
    }

    /// Applies the event, then queues it (the caller holds the queue's lock): true if it ended its job.
    fn put(&mut self, queue: &mut Pushing<'_>, kind: EventKind) -> bool {
        if !self.apply(&kind) {
            log::debug!("dropped {} for a finished or unknown job", kind.name());
            return false;
        }
        let terminal = kind.is_terminal();
        queue.push(kind);
        terminal
    }

    fn snapshot_of(rec: &Record) -> JobSnapshot {
        let mut s = rec.snap.clone();
        s.elapsed_seconds = rec
            .ended
            .unwrap_or_else(Instant::now)
            .duration_since(rec.created)
            .as_secs_f64();
        s
    }
}

/// Every job failure is logged once, here, for every kind of service (not again for a job that had ended).
fn log_failure(jobs: &JobTable, service: &str, job_id: &str, error: &JobError) {
    if jobs.records.get(job_id).is_some_and(|r| !r.snap.state.is_terminal()) {
        log::warn!("{service}: job {job_id} failed [{}]: {}", error.code, error.message);
    }
}

/// `log_failure` for an emitted `JobFailed` (its service is the job's own).
fn log_emitted_failure(jobs: &JobTable, kind: &EventKind) {
    if let EventKind::JobFailed { job_id, error } = kind {
        let service = jobs.records.get(job_id).map_or("", |r| r.snap.service.as_str());
        log_failure(jobs, service, job_id, error);
    }
}

/// State shared by the hub handle and the runtime's tasks.
pub struct Shared {
    pub events: EventQueue,
    jobs: Mutex<JobTable>,
    job_changed: Condvar,
}

impl Shared {
    pub fn new(event_capacity: usize, finished_cap: usize) -> Shared {
        Shared {
            events: EventQueue::new(event_capacity),
            jobs: Mutex::new(JobTable::new(finished_cap)),
            job_changed: Condvar::new(),
        }
    }

    /// Registers a new job before anything can be said about it.
    pub fn register(&self, id: &str, service: &str, tag: Option<String>, submission: Submission) {
        let snap = JobSnapshot {
            id: id.to_string(),
            service: service.to_string(),
            server: None,
            tag,
            state: JobState::Pending,
            queue_position: None,
            current_node: None,
            current_node_type: None,
            progress: 0.0,
            eta_seconds: None,
            outputs: Vec::new(),
            ui: Value::Null,
            error: None,
            submitted_at: crate::event::now_epoch(),
            elapsed_seconds: 0.0,
        };
        self.jobs.lock().records.insert(
            id.to_string(),
            Record {
                snap,
                submission,
                created: Instant::now(),
                ended: None,
                owner: 0,
                posted: false,
            },
        );
    }

    /// The service, tag and submission of a job.
    pub fn submission(&self, id: &str) -> Option<(String, Option<String>, Submission)> {
        let jobs = self.jobs.lock();
        let rec = jobs.records.get(id)?;
        Some((rec.snap.service.clone(), rec.snap.tag.clone(), rec.submission.clone()))
    }

    /// Ends a job with `JobFailed`. Every job failure (this, an emitted `JobFailed`, and the hub's bulk endings
    /// below) is logged once by `log_failure`, for every kind of service.
    pub fn fail_job(&self, service: &str, job_id: &str, error: JobError) {
        let mut jobs = self.jobs.lock();
        self.fail_locked(&mut jobs, service, job_id, error);
    }

    fn fail_locked(&self, jobs: &mut JobTable, service: &str, job_id: &str, error: JobError) {
        log_failure(jobs, service, job_id, &error);
        self.emit_locked(
            jobs,
            EventKind::JobFailed {
                job_id: job_id.to_string(),
                error: Box::new(error),
            },
        );
    }

    /// `emit` for a backend actor: an event about a job the actor no longer holds (the hub moved it to another
    /// server of a pool, or to a new address) is dropped, so a stale actor can never speak for a job.
    pub fn emit_from(&self, owner: u64, kind: EventKind) {
        self.emit_all_from(owner, [kind]);
    }

    /// `emit_from` for a burst of events (one socket read's worth), in order: the table and the queue are locked
    /// once for all of them, and the consumer is woken at most once.
    pub fn emit_all_from(&self, owner: u64, kinds: impl IntoIterator<Item = EventKind>) {
        let mut jobs = self.jobs.lock();
        let mut queue = self.events.pushing();
        let mut ended = false;
        for kind in kinds {
            if let Some(id) = kind.job_id() {
                if jobs.records.get(id).is_some_and(|r| r.owner != owner) {
                    log::debug!(
                        "dropped {} of job {id} from an actor that no longer holds it",
                        kind.name()
                    );
                    continue;
                }
            }
            log_emitted_failure(&jobs, &kind);
            ended |= jobs.put(&mut queue, kind);
        }
        drop(queue);
        if ended {
            self.job_changed.notify_all();
        }
    }

    /// `fail_job` for a backend actor (see `emit_from`).
    pub fn fail_job_from(&self, owner: u64, service: &str, job_id: &str, error: JobError) {
        let mut jobs = self.jobs.lock();
        if jobs.records.get(job_id).is_some_and(|r| r.owner != owner) {
            log::debug!("dropped the failure of job {job_id} from an actor that no longer holds it");
            return;
        }
        self.fail_locked(&mut jobs, service, job_id, error);
    }

    /// A pool takes a job back from the actor `from` (its server went down): true if the job is unfinished and
    /// was still `from`'s. It is then unowned and unposted, ready to be handed to another server; `from`'s
    /// events about it are dropped from now on and `from` may no longer post it.
    pub fn take_back(&self, id: &str, from: u64) -> bool {
        let mut jobs = self.jobs.lock();
        match jobs.records.get_mut(id) {
            Some(rec) if rec.owner == from && !rec.snap.state.is_terminal() => {
                rec.owner = 0;
                rec.posted = false;
                true
            }
            _ => false,
        }
    }

    /// Applies the event to the job table, then queues it. Events after a job's terminal event are dropped.
    pub fn emit(&self, kind: EventKind) {
        let mut jobs = self.jobs.lock();
        self.emit_in(&mut jobs, kind);
    }

    fn emit_in(&self, jobs: &mut JobTable, kind: EventKind) {
        log_emitted_failure(jobs, &kind);
        self.emit_locked(jobs, kind);
    }

    /// Apply and push under the one table lock: two emitters of one job cannot reorder its events between the
    /// table and the queue (a `JobCancelled` overtaking a `TextDelta`). Lock order: table, then queue.
    fn emit_locked(&self, jobs: &mut JobTable, kind: EventKind) {
        let mut queue = self.events.pushing();
        let ended = jobs.put(&mut queue, kind);
        drop(queue);
        if ended {
            self.job_changed.notify_all();
        }
    }

    /// Hands a job to the actor `owner`: `send` delivers the order and says whether the actor took it. A job
    /// that ended meanwhile (cancelled while its workflow was converted, its service removed) is not sent; an
    /// order that cannot reach its actor fails the job at once. `posted`: the actor starts the job on receipt
    /// (or it was posted before), so it will never be moved to another actor.
    pub fn hand_over(&self, id: &str, owner: u64, posted: bool, send: impl FnOnce() -> bool) -> HandOver {
        let mut jobs = self.jobs.lock();
        let Some(rec) = jobs.records.get_mut(id) else {
            return HandOver::Ended;
        };
        if rec.snap.state.is_terminal() {
            return HandOver::Ended;
        }
        rec.owner = owner;
        rec.posted = posted;
        // Sent under the lock, so a cancel that finds the job handed over is queued behind the order.
        if send() {
            return HandOver::Sent;
        }
        let service = rec.snap.service.clone();
        self.fail_locked(
            &mut jobs,
            &service,
            id,
            JobError::simple(
                ErrorCode::ServiceRemoved.as_str(),
                "its service stopped before the job reached it; add the service again and resubmit",
            ),
        );
        HandOver::Failed
    }

    /// Called by an actor right before it posts a job: true while the job is unfinished and still this actor's
    /// (it may have been moved to a new address, or ended by the hub). From then on the job counts as posted.
    pub fn claim_post(&self, id: &str, owner: u64) -> bool {
        let mut jobs = self.jobs.lock();
        match jobs.records.get_mut(id) {
            Some(rec) if rec.owner == owner && !rec.snap.state.is_terminal() => {
                rec.posted = true;
                true
            }
            _ => false,
        }
    }

    /// The actor's post of the job certainly never arrived (the connection was refused): the job may be moved
    /// to a new address again.
    pub fn unclaim_post(&self, id: &str, owner: u64) {
        if let Some(rec) = self.jobs.lock().records.get_mut(id) {
            if rec.owner == owner {
                rec.posted = false;
            }
        }
    }

    /// Whether the job may have reached its server (false for an unknown job).
    pub fn is_posted(&self, id: &str) -> bool {
        self.jobs.lock().records.get(id).is_some_and(|r| r.posted)
    }

    /// Of `ids`, the ones still unfinished and never posted by `owner` (its kept orders).
    pub fn unposted_of(&self, owner: u64, ids: &[String]) -> Vec<String> {
        let jobs = self.jobs.lock();
        ids.iter()
            .filter(|id| {
                jobs.records
                    .get(*id)
                    .is_some_and(|r| r.owner == owner && !r.posted && !r.snap.state.is_terminal())
            })
            .cloned()
            .collect()
    }

    /// A cancel for a job that has not reached an actor yet (its workflow is still being converted): it ends
    /// here, and `hand_over` will never send it. False if an actor holds the job (the cancel goes there).
    pub fn cancel_unsent(&self, id: &str) -> bool {
        let mut jobs = self.jobs.lock();
        match jobs.records.get(id) {
            Some(rec) if rec.owner == 0 && !rec.snap.state.is_terminal() => {
                self.emit_locked(&mut jobs, EventKind::JobCancelled { job_id: id.to_string() });
                true
            }
            _ => false,
        }
    }

    /// Ends every unfinished job of `service` (all services: `None`) with `JobFailed` — the hub's drain when a
    /// service is removed or the hub closes. Returns how many ended.
    pub fn fail_unfinished(&self, service: Option<&str>, code: ErrorCode, message: &str) -> usize {
        let mut jobs = self.jobs.lock();
        let ids: Vec<(String, String)> = jobs
            .records
            .values()
            .filter(|r| !r.snap.state.is_terminal() && service.is_none_or(|s| r.snap.service == s))
            .map(|r| (r.snap.id.clone(), r.snap.service.clone()))
            .collect();
        for (id, svc) in &ids {
            self.fail_locked(&mut jobs, svc, id, JobError::simple(code.as_str(), message));
        }
        ids.len()
    }

    /// A service's address changed: its unfinished jobs that were never posted now belong to `to` (returned, to
    /// be sent there); the ones that may have reached the old address fail `service_removed`, since the new
    /// address cannot know them. Jobs still being prepared stay unowned and go to whoever holds the name.
    pub fn rehome(&self, service: &str, to: u64, old_url: &str) -> Vec<String> {
        let mut jobs = self.jobs.lock();
        let mut moved = Vec::new();
        let mut lost = Vec::new();
        for rec in jobs.records.values_mut() {
            if rec.snap.service != service || rec.snap.state.is_terminal() || rec.owner == 0 {
                continue;
            }
            if rec.posted {
                lost.push(rec.snap.id.clone());
            } else {
                rec.owner = to;
                moved.push(rec.snap.id.clone());
            }
        }
        let message = format!(
            "the service's address was changed after this job was sent to {old_url}; the new address does not know \
             it (change the address back to follow it, or resubmit)"
        );
        for id in &lost {
            self.fail_locked(
                &mut jobs,
                service,
                id,
                JobError::simple(ErrorCode::ServiceRemoved.as_str(), &message),
            );
        }
        moved.sort_by(|a, b| {
            let at = |id: &String| jobs.records.get(id).map(|r| r.created);
            at(a).cmp(&at(b))
        });
        moved
    }

    /// Places in their server's queue read afresh (`(job id, place)`, 0 = next to run); only jobs still queued
    /// take them (one that started meanwhile keeps `None`).
    pub fn set_queue_positions(&self, places: &[(String, u32)]) {
        let mut t = self.jobs.lock();
        for (id, place) in places {
            if let Some(rec) = t.records.get_mut(id) {
                if rec.snap.state == JobState::Queued {
                    rec.snap.queue_position = Some(*place);
                }
            }
        }
    }

    pub fn job(&self, id: &str) -> Option<JobSnapshot> {
        self.jobs.lock().records.get(id).map(JobTable::snapshot_of)
    }

    pub fn jobs(&self) -> Vec<JobSnapshot> {
        let t = self.jobs.lock();
        let mut v: Vec<_> = t.records.values().map(JobTable::snapshot_of).collect();
        v.sort_by(|a, b| a.submitted_at.total_cmp(&b.submitted_at).then_with(|| a.id.cmp(&b.id)));
        v
    }

    pub fn job_state(&self, id: &str) -> Option<JobState> {
        self.jobs.lock().records.get(id).map(|r| r.snap.state)
    }

    /// Blocks until the job is terminal or `timeout` passes; `None` if the job is unknown.
    pub fn wait_terminal(&self, id: &str, timeout: Option<Duration>, stop: &dyn Fn() -> bool) -> Option<JobSnapshot> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut t = self.jobs.lock();
        loop {
            let rec = t.records.get(id)?;
            if rec.snap.state.is_terminal() || stop() {
                return Some(JobTable::snapshot_of(rec));
            }
            // Wake regularly so a closed hub is noticed even without a notification.
            let slice = Instant::now() + Duration::from_millis(200);
            let until = deadline.map_or(slice, |d| d.min(slice));
            let _ = self.job_changed.wait_until(&mut t, until);
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let rec = t.records.get(id)?;
                return Some(JobTable::snapshot_of(rec));
            }
        }
    }

    pub fn wake_all(&self) {
        self.job_changed.notify_all();
        self.events.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_terminal_event_per_job_is_delivered() {
        let s = Shared::new(100, 10);
        s.register("a", "svc", None, Default::default());
        s.emit(EventKind::JobCancelled { job_id: "a".into() });
        s.emit(EventKind::JobFailed {
            job_id: "a".into(),
            error: Box::new(JobError::simple("x", "y")),
        });
        s.emit(EventKind::NodeStarted {
            job_id: "a".into(),
            node_id: "1".into(),
            node_type: None,
        });
        let evs = s.events.drain(10);
        assert_eq!(evs.len(), 1);
        assert_eq!(s.job_state("a"), Some(JobState::Cancelled));
    }

    #[test]
    fn finished_jobs_beyond_the_cap_are_dropped_but_live_ones_stay() {
        let s = Shared::new(100, 3);
        s.register("live", "svc", None, Default::default());
        for i in 0..10 {
            let id = format!("j{i}");
            s.register(&id, "svc", None, Default::default());
            s.emit(EventKind::JobCancelled { job_id: id });
        }
        let ids: Vec<_> = s.jobs().into_iter().map(|j| j.id).collect();
        assert_eq!(ids.len(), 4, "{ids:?}");
        assert!(ids.contains(&"live".to_string()) && ids.contains(&"j9".to_string()));
        assert!(!ids.contains(&"j0".to_string()));
        // A dropped job is unknown (`hub.job(id)` is None); the newest finished ones are still there.
        assert!(s.job("j0").is_none() && s.job_state("j6").is_none());
        assert_eq!(s.job("j9").map(|j| j.state), Some(JobState::Cancelled));
        assert_eq!(s.job_state("live"), Some(JobState::Pending));
    }

    #[test]
    fn wait_returns_on_terminal_or_timeout() {
        let s = std::sync::Arc::new(Shared::new(100, 10));
        s.register("a", "svc", None, Default::default());
        let r = s.wait_terminal("a", Some(Duration::from_millis(30)), &|| false);
        assert_eq!(r.map(|j| j.state), Some(JobState::Pending));
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            s2.emit(EventKind::JobCancelled { job_id: "a".into() });
        });
        let r = s.wait_terminal("a", Some(Duration::from_secs(5)), &|| false);
        assert_eq!(r.map(|j| j.state), Some(JobState::Cancelled));
        let _ = t.join();
        assert!(s.wait_terminal("nope", None, &|| false).is_none());
    }
}
