//! The hub's job table: what `snapshot()` and `job.wait()` read. Events pass through `Shared::emit`, which
//! applies them here first, so a job never emits anything after its one terminal event.
use crate::event::{EventKind, EventQueue, JobError, JobState, OutputFile};
use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

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
}

/// Finished jobs kept for `snapshot()`/`wait()` after they end; older ones are dropped so memory stays bounded.
pub const DEFAULT_FINISHED_CAP: usize = 1000;

pub struct JobTable {
    records: HashMap<String, Record>,
    finished: VecDeque<String>,
    finished_cap: usize,
}

impl JobTable {
    fn new(finished_cap: usize) -> JobTable {
        JobTable {
            records: HashMap::new(),
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
                s.error = Some(error.clone());
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
            },
        );
    }

    /// The service, tag and submission of a job.
    pub fn submission(&self, id: &str) -> Option<(String, Option<String>, Submission)> {
        let jobs = self.jobs.lock();
        let rec = jobs.records.get(id)?;
        Some((rec.snap.service.clone(), rec.snap.tag.clone(), rec.submission.clone()))
    }

    /// Ends a job with `JobFailed`, logged once here for every kind of service.
    pub fn fail_job(&self, service: &str, job_id: &str, error: JobError) {
        log::warn!("{service}: job {job_id} failed [{}]: {}", error.code, error.message);
        self.emit(EventKind::JobFailed {
            job_id: job_id.to_string(),
            error,
        });
    }

    /// Applies the event to the job table, then queues it. Events after a job's terminal event are dropped.
    pub fn emit(&self, kind: EventKind) {
        let terminal = kind.is_terminal();
        let deliver = self.jobs.lock().apply(&kind);
        if !deliver {
            log::debug!("dropped {} for a finished or unknown job", kind.name());
            return;
        }
        self.events.push(kind);
        if terminal {
            self.job_changed.notify_all();
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
            error: JobError::simple("x", "y"),
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
