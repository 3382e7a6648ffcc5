//! Routes ComfyUI messages to our jobs and turns them into events. Pure logic (no I/O): the socket actor
//! feeds messages in and carries out the returned effects, so every routing rule is unit-testable.
use super::protocol::{file_refs, BinaryFrame, FileRef, ServerMessage};
use crate::event::{EventKind, JobError, OutputFile};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::time::Instant;

/// Where a tracked job stands from the router's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a connection; not sent.
    Pending,
    /// POST sent, answer not seen.
    Submitting,
    Queued,
    Running,
    /// Terminal message seen, outputs being fetched.
    Finishing,
}

#[derive(Debug)]
pub struct ActiveJob {
    pub job_id: String,
    pub prompt_id: String,
    pub phase: Phase,
    pub queued_announced: bool,
    pub cancel_requested: bool,
    pub node_types: HashMap<String, String>,
    pub outputs: Vec<FileRef>,
    pub ui: Map<String, Value>,
    pub started: Option<Instant>,
    pub submitted: Instant,
    /// Set when messages may have been lost (a reconnect during the job): outputs come from /history.
    pub needs_history: bool,
    /// The POST may have reached the server (its answer was lost): check before sending again.
    pub maybe_sent: bool,
    /// The WebSocket session during which the POST went out.
    pub posted_in: u64,
    /// How many times the prompt was POSTed: a lookup started before the latest POST says nothing about it.
    pub sends: u32,
    /// Submitted under another client id (tracked by id): the server sends its messages elsewhere, so its fate
    /// is polled over HTTP.
    pub foreign: bool,
    /// Kept until the job ends, to send it after a reconnect.
    pub prompt: std::sync::Arc<Value>,
    /// The output sub-directory (tag or service name).
    pub group: String,
    /// Saving the results of a job that finished on the server (phase `Finishing`).
    pub fetch: Option<Fetch>,
    rate: Option<(String, Instant, f64)>,
}

/// A finished job's results being saved. A fetch that meets a dropped, stalled or restarting server is tried
/// again when the link is back (the job did run: failing it would lose it), and files already saved are kept.
#[derive(Debug, Default)]
pub struct Fetch {
    pub refs: Vec<FileRef>,
    /// Ask `/history` for the file list first (messages may have been missed).
    pub from_history: bool,
    /// No message was missed before the job ended: `refs` name every file.
    pub refs_complete: bool,
    /// Saved so far, in order, with the reference each came from.
    pub saved: Vec<(FileRef, OutputFile)>,
    /// Attempts that failed because of the link.
    pub failures: u32,
    /// A fetch task is running; no second one may start.
    pub in_flight: bool,
}

impl ActiveJob {
    pub fn new(job_id: &str, prompt: std::sync::Arc<Value>, group: &str, now: Instant) -> ActiveJob {
        let node_types = prompt
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(id, n)| Some((id.clone(), n.get("class_type")?.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        ActiveJob {
            job_id: job_id.to_string(),
            prompt_id: job_id.to_string(),
            phase: Phase::Pending,
            queued_announced: false,
            cancel_requested: false,
            node_types,
            outputs: Vec::new(),
            ui: Map::new(),
            started: None,
            submitted: now,
            needs_history: false,
            foreign: false,
            maybe_sent: false,
            posted_in: 0,
            sends: 0,
            prompt,
            group: group.to_string(),
            fetch: None,
            rate: None,
        }
    }

    fn node_type(&self, node: &str) -> Option<String> {
        self.node_types.get(node).cloned()
    }

    /// ETA for a node from the observed step rate since its first progress message.
    fn eta(&mut self, node: &str, value: f64, max: f64, now: Instant) -> Option<f64> {
        match &self.rate {
            Some((n, t0, v0)) if n == node && value >= *v0 => {
                let dt = now.duration_since(*t0).as_secs_f64();
                let dv = value - v0;
                (dv > 0.0 && dt > 0.0).then(|| ((max - value).max(0.0)) * dt / dv)
            }
            _ => {
                self.rate = Some((node.to_string(), now, value));
                None
            }
        }
    }
}

/// What the actor must do after a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Emit(EventKind),
    /// The job finished on the server: fetch its files (from /history when `from_history`) and complete it.
    Finish {
        prompt_id: String,
        refs: Vec<FileRef>,
        from_history: bool,
    },
    QueueRemaining(u64),
    /// A cancelled job was confirmed interrupted.
    Forget {
        prompt_id: String,
    },
}

#[derive(Default)]
pub struct JobRouter {
    service: String,
    /// Looked up on every message: a fast hasher (the keys are our own job ids).
    jobs: rustc_hash::FxHashMap<String, ActiveJob>,
    /// The prompt the server is running for our client, for frames without a prompt id.
    running: Option<String>,
    /// The message stream, paused while a POST answer is awaited for a prompt the server already talks about
    /// (or, on an old server that ignores our ids, for a prompt id we cannot place yet). Replayed in order.
    held: std::collections::VecDeque<Held>,
    /// Where in `held` the latest progress of each (prompt, node) sits: past the cap, a newer value replaces it.
    held_progress: rustc_hash::FxHashMap<(Option<String>, Option<String>), usize>,
    /// How many tracked jobs are `foreign`: the session loop asks on every message, so it must not scan.
    foreign: usize,
}

#[derive(Debug)]
enum Held {
    Text(ServerMessage),
    Binary(BinaryFrame),
}

/// Beyond this many held messages, progress is coalesced (the newest value per node replaces the held one),
/// previews are dropped, and lifecycle messages are kept.
const MAX_HELD: usize = 4096;

impl JobRouter {
    pub fn new(service: &str) -> JobRouter {
        JobRouter {
            service: service.to_string(),
            ..Default::default()
        }
    }

    /// The service name events carry (the pool's, for a pool server).
    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn track(&mut self, job: ActiveJob) {
        self.foreign += usize::from(job.foreign);
        if let Some(old) = self.jobs.insert(job.prompt_id.clone(), job) {
            self.foreign -= usize::from(old.foreign);
        }
    }

    pub fn get(&self, prompt_id: &str) -> Option<&ActiveJob> {
        self.jobs.get(prompt_id)
    }

    pub fn get_mut(&mut self, prompt_id: &str) -> Option<&mut ActiveJob> {
        self.jobs.get_mut(prompt_id)
    }

    pub fn find_by_job(&self, job_id: &str) -> Option<&ActiveJob> {
        self.jobs.values().find(|j| j.job_id == job_id)
    }

    pub fn remove(&mut self, prompt_id: &str) -> Option<ActiveJob> {
        if self.running.as_deref() == Some(prompt_id) {
            self.running = None;
        }
        let job = self.jobs.remove(prompt_id)?;
        self.foreign -= usize::from(job.foreign);
        Some(job)
    }

    pub fn prompt_ids(&self) -> Vec<String> {
        self.jobs.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn has_foreign(&self) -> bool {
        self.foreign > 0
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Some job is queued or running at the server (its messages are expected on the socket).
    pub fn has_open_jobs(&self) -> bool {
        self.jobs
            .values()
            .any(|j| !j.foreign && matches!(j.phase, Phase::Queued | Phase::Running))
    }

    /// Every tracked job may have missed messages (the socket dropped).
    pub fn mark_disconnected(&mut self) {
        self.running = None;
        for job in self.jobs.values_mut() {
            job.needs_history = true;
        }
    }

    /// The POST answer named a different id than ours (a server older than 0.3.45): re-key and replay.
    pub fn rekey(&mut self, ours: &str, theirs: &str, now: Instant) -> Vec<Effect> {
        if ours == theirs {
            return Vec::new();
        }
        let Some(mut job) = self.jobs.remove(ours) else {
            return Vec::new();
        };
        job.prompt_id = theirs.to_string();
        self.jobs.insert(theirs.to_string(), job);
        self.replay_held(now)
    }

    /// Moves a job to the id the server chose, without routing held-back messages yet.
    pub fn move_job(&mut self, ours: &str, theirs: &str) {
        if ours == theirs {
            return;
        }
        if let Some(mut job) = self.jobs.remove(ours) {
            job.prompt_id = theirs.to_string();
            self.jobs.insert(theirs.to_string(), job);
        }
    }

    /// Routes the messages held back while POST answers were awaited, in their original order. Messages for a
    /// prompt whose answer is still awaited are held again (and so is everything after them).
    pub fn replay_held(&mut self, now: Instant) -> Vec<Effect> {
        let held = std::mem::take(&mut self.held);
        self.held_progress.clear();
        let mut out = Vec::new();
        for item in held {
            match item {
                Held::Text(msg) => out.extend(self.on_message(msg, now)),
                Held::Binary(frame) => out.extend(self.on_binary(frame, now)),
            }
        }
        out
    }

    fn hold(&mut self, item: Held) {
        let progress_key = match &item {
            Held::Text(ServerMessage::Progress(p)) => Some((p.prompt_id.clone(), p.node.clone())),
            _ => None,
        };
        let lifecycle = match &item {
            Held::Text(m) => !matches!(m, ServerMessage::Progress(_) | ServerMessage::ProgressState(_)),
            Held::Binary(_) => false,
        };
        if self.held.len() < MAX_HELD || lifecycle {
            if let Some(key) = progress_key {
                self.held_progress.insert(key, self.held.len());
            }
            self.held.push_back(item);
        } else if let Some(slot) = progress_key
            .and_then(|key| self.held_progress.get(&key))
            .and_then(|at| self.held.get_mut(*at))
        {
            // Coalesced: the node's newest value in place of the one held (its earlier values are history).
            *slot = item;
        }
    }

    fn awaiting_answer(&self) -> bool {
        self.jobs.values().any(|j| j.phase == Phase::Submitting)
    }

    /// Announces `JobQueued` once, before anything else the server says about the job.
    pub fn announce_queued(
        &mut self,
        prompt_id: &str,
        position: Option<u32>,
        problems: Vec<crate::event::NodeProblem>,
    ) -> Option<EventKind> {
        let job = self.jobs.get_mut(prompt_id)?;
        if job.phase == Phase::Submitting || job.phase == Phase::Pending {
            job.phase = Phase::Queued;
        }
        if job.queued_announced {
            return None;
        }
        job.queued_announced = true;
        Some(EventKind::JobQueued {
            job_id: job.job_id.clone(),
            service: self.service.clone(),
            position,
            pending_connection: false,
            node_errors: problems,
        })
    }

    fn ensure_queued(&mut self, prompt_id: &str, out: &mut Vec<Effect>) {
        if let Some(ev) = self.announce_queued(prompt_id, Some(0), Vec::new()) {
            out.push(Effect::Emit(ev));
        }
    }

    fn ensure_started(&mut self, prompt_id: &str, cached: Vec<String>, now: Instant, out: &mut Vec<Effect>) {
        match self.jobs.get(prompt_id) {
            None => return,
            // Every step of a running job comes here: one look-up when there is nothing to announce.
            Some(j) if j.phase == Phase::Running && j.queued_announced && j.started.is_some() => {}
            Some(_) => {
                self.ensure_queued(prompt_id, out);
                if let Some(job) = self.jobs.get_mut(prompt_id) {
                    if job.started.is_none() {
                        job.started = Some(now);
                        job.phase = Phase::Running;
                        out.push(Effect::Emit(EventKind::JobStarted {
                            job_id: job.job_id.clone(),
                            service: self.service.clone(),
                            cached_nodes: cached,
                        }));
                    }
                }
            }
        }
        // Called on every step: no new string while it is the same prompt.
        if self.running.as_deref() != Some(prompt_id) {
            self.running = Some(prompt_id.to_string());
        }
    }

    /// The server's queue shows the job running (after a reconnect, or while polling over HTTP).
    pub fn seen_running(&mut self, prompt_id: &str, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        self.ensure_started(prompt_id, Vec::new(), now, &mut out);
        out
    }

    /// The server lost the job (restart): track it under a fresh prompt id, to be sent again as new.
    pub fn restart_as(&mut self, old: &str, fresh: &str, now: Instant) -> Vec<Effect> {
        if let Some(job) = self.jobs.get_mut(old) {
            job.phase = Phase::Pending;
            job.maybe_sent = false;
            job.needs_history = false;
            job.outputs.clear();
            job.ui.clear();
            job.fetch = None;
        }
        if self.running.as_deref() == Some(old) {
            self.running = None;
        }
        self.rekey(old, fresh, now)
    }

    pub fn on_message(&mut self, msg: ServerMessage, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        self.read_message(msg, now, &mut out);
        out
    }

    /// `on_message` into a buffer the caller keeps (the socket's hot path: no vector per message).
    pub fn read_message(&mut self, msg: ServerMessage, now: Instant, out: &mut Vec<Effect>) {
        if let ServerMessage::Status(s) = &msg {
            if let Some(n) = s.queue_remaining() {
                out.push(Effect::QueueRemaining(n));
            }
            return;
        }
        let submitting = {
            let pid = match (msg.prompt_id(), &msg, &self.running) {
                (Some(p), _, _) => p,
                // The reconnect replay: `executing {node}` without a prompt id belongs to our running prompt.
                (None, ServerMessage::Executing(_), Some(r)) => r.as_str(),
                _ => return,
            };
            self.jobs.get(pid).map(|j| j.phase == Phase::Submitting)
        };
        // The server can report a prompt before its POST answer reaches us: pause the stream so that JobQueued
        // (with the answer's position and node errors) comes first and id-less frames are attributed in order.
        let unplaced = submitting.is_none() && self.awaiting_answer() && is_lifecycle(&msg);
        if !self.held.is_empty() || submitting == Some(true) || unplaced {
            self.hold(Held::Text(msg));
            return;
        }
        if submitting.is_none() {
            return;
        }
        // Moved out of the message (no copy per step); the message's own field is not read below.
        let mut msg = msg;
        let Some(pid) = msg.take_prompt_id().or_else(|| self.running.clone()) else {
            return;
        };
        match msg {
            // JobStarted waits for `execution_cached`, which follows at once and says which nodes are cached.
            ServerMessage::ExecutionStart(_) => self.running = Some(pid.clone()),
            ServerMessage::ExecutionCached(c) => {
                let fresh = self.jobs.get(&pid).is_some_and(|j| j.started.is_none());
                if fresh {
                    self.ensure_started(&pid, c.nodes, now, out);
                }
            }
            ServerMessage::Executing(e) => match e.node {
                Some(node) => {
                    self.ensure_started(&pid, Vec::new(), now, out);
                    if let Some(job) = self.jobs.get_mut(&pid) {
                        let shown = e.display_node.unwrap_or(node);
                        let node_type = job.node_type(&shown);
                        out.push(Effect::Emit(EventKind::NodeStarted {
                            job_id: job.job_id.clone(),
                            node_id: shown,
                            node_type,
                        }));
                    }
                }
                None => {
                    // End of the prompt; the terminal message came just before. Nothing more to route to it.
                    if self.running.as_deref() == Some(pid.as_str()) {
                        self.running = None;
                    }
                }
            },
            ServerMessage::Progress(p) => {
                self.ensure_started(&pid, Vec::new(), now, out);
                if let Some(job) = self.jobs.get_mut(&pid) {
                    let node = p.node;
                    let eta = node.as_deref().and_then(|n| job.eta(n, p.value, p.max, now));
                    let percentage = if p.max > 0.0 {
                        (p.value / p.max * 100.0).clamp(0.0, 100.0)
                    } else {
                        0.0
                    };
                    out.push(Effect::Emit(EventKind::Progress {
                        job_id: job.job_id.clone(),
                        node_id: node,
                        value: p.value,
                        max: p.max,
                        percentage,
                        eta_seconds: eta,
                        text: None,
                    }));
                }
            }
            // Whole-graph progress: the per-node `progress` messages already carry what we show.
            ServerMessage::ProgressState(_) => self.ensure_started(&pid, Vec::new(), now, out),
            ServerMessage::Executed(e) => {
                self.ensure_started(&pid, Vec::new(), now, out);
                if let Some(job) = self.jobs.get_mut(&pid) {
                    let node = e.display_node.or(e.node).unwrap_or_default();
                    if !e.output.is_null() {
                        job.outputs.extend(file_refs(&node, &e.output));
                        job.ui.insert(node.clone(), e.output.clone());
                    }
                    out.push(Effect::Emit(EventKind::NodeOutput {
                        job_id: job.job_id.clone(),
                        node_id: node,
                        output: e.output,
                    }));
                }
            }
            ServerMessage::ExecutionSuccess(_) => {
                self.ensure_started(&pid, Vec::new(), now, out);
                if let Some(job) = self.jobs.get_mut(&pid) {
                    job.phase = Phase::Finishing;
                    out.push(Effect::Finish {
                        prompt_id: pid.clone(),
                        refs: job.outputs.clone(),
                        from_history: job.needs_history || job.outputs.is_empty(),
                    });
                }
            }
            ServerMessage::ExecutionError(e) => {
                self.ensure_started(&pid, Vec::new(), now, out);
                if let Some(job) = self.remove(&pid) {
                    let node_type = e
                        .node_type
                        .clone()
                        .or_else(|| e.node_id.as_deref().and_then(|n| job.node_type(n)));
                    let exception = e.exception_message.clone().unwrap_or_default();
                    let node_desc = match (&e.node_id, &node_type) {
                        (Some(n), Some(t)) => format!("node {n} ({t})"),
                        (Some(n), None) => format!("node {n}"),
                        _ => "a node".to_string(),
                    };
                    let mut err = JobError::simple(
                        "execution_failed",
                        format!(
                            "{node_desc} failed: {}: {}",
                            e.exception_type.as_deref().unwrap_or("Error"),
                            exception.trim()
                        ),
                    );
                    err.node_id = e.node_id;
                    err.node_type = node_type;
                    err.exception_type = e.exception_type;
                    err.traceback = e.traceback;
                    out.push(Effect::Emit(EventKind::JobFailed {
                        job_id: job.job_id,
                        error: Box::new(err),
                    }));
                }
            }
            ServerMessage::ExecutionInterrupted(i) => {
                if let Some(job) = self.remove(&pid) {
                    if job.cancel_requested {
                        out.push(Effect::Emit(EventKind::JobCancelled { job_id: job.job_id }));
                    } else {
                        let mut err = JobError::simple(
                            "interrupted",
                            "the job was interrupted on the server by someone else (the ComfyUI page or another \
                             client); submit it again to re-run it",
                        );
                        err.node_id = i.node_id;
                        err.node_type = i.node_type;
                        out.push(Effect::Emit(EventKind::JobFailed {
                            job_id: job.job_id,
                            error: Box::new(err),
                        }));
                    }
                    out.push(Effect::Forget { prompt_id: pid });
                }
            }
            ServerMessage::Status(_) | ServerMessage::FeatureFlags(_) | ServerMessage::Unknown { .. } => {}
        }
    }

    /// The server's history says the job ended while we were not listening: emit what was missed.
    pub fn ended_in_history(
        &mut self,
        prompt_id: &str,
        entry: &super::protocol::HistoryEntry,
        now: Instant,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.ensure_started(prompt_id, Vec::new(), now, &mut out);
        let status = entry
            .status
            .as_ref()
            .and_then(|s| s.status_str.clone())
            .unwrap_or_default();
        let messages = entry.status.as_ref().map(|s| s.messages.clone()).unwrap_or_default();
        let find = |name: &str| {
            messages.iter().find_map(|m| {
                (m.get(0).and_then(Value::as_str) == Some(name))
                    .then(|| m.get(1).cloned())
                    .flatten()
            })
        };
        if status == "success" || (status.is_empty() && !entry.outputs.is_empty()) {
            let mut refs = Vec::new();
            if let Some(job) = self.jobs.get_mut(prompt_id) {
                for (node, ui) in &entry.outputs {
                    refs.extend(file_refs(node, ui));
                    job.ui.insert(node.clone(), ui.clone());
                }
                job.phase = Phase::Finishing;
            }
            out.push(Effect::Finish {
                prompt_id: prompt_id.to_string(),
                refs,
                from_history: false,
            });
        } else if let Some(data) = find("execution_error") {
            let msg = serde_json::json!({"type": "execution_error", "data": data}).to_string();
            if let Ok(parsed) = ServerMessage::parse(&msg) {
                out.extend(self.on_message(parsed, now));
            }
        } else if let Some(data) = find("execution_interrupted") {
            let msg = serde_json::json!({"type": "execution_interrupted", "data": data}).to_string();
            if let Ok(parsed) = ServerMessage::parse(&msg) {
                out.extend(self.on_message(parsed, now));
            }
        } else if let Some(job) = self.remove(prompt_id) {
            out.push(Effect::Emit(EventKind::JobFailed {
                job_id: job.job_id,
                error: Box::new(JobError::simple(
                    "execution_failed",
                    format!("the server reports the job ended with status {status:?}"),
                )),
            }));
        }
        out
    }

    /// Binary frames: previews and progress text. Id-less frames go to our running prompt.
    pub fn on_binary(&mut self, frame: BinaryFrame, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        if !self.held.is_empty() {
            self.hold(Held::Binary(frame));
            return out;
        }
        let pid = match &frame {
            BinaryFrame::PreviewWithMetadata { meta, .. } => meta.prompt_id.clone().or_else(|| self.running.clone()),
            // Id-less frames (legacy previews, broadcast progress text) are ours only while our prompt runs.
            BinaryFrame::Preview { .. } | BinaryFrame::Text { .. } => self.running.clone(),
            BinaryFrame::Unknown { .. } => None,
        };
        let Some(pid) = pid else { return out };
        match self.jobs.get(&pid).map(|j| j.phase) {
            None => return out,
            Some(Phase::Submitting) => {
                self.hold(Held::Binary(frame));
                return out;
            }
            Some(_) => {}
        }
        self.ensure_started(&pid, Vec::new(), now, &mut out);
        let Some(job) = self.jobs.get(&pid) else { return out };
        let job_id = job.job_id.clone();
        out.push(Effect::Emit(match frame {
            BinaryFrame::Preview { mime, image } => EventKind::Preview {
                job_id,
                node_id: None,
                mime: mime.to_string(),
                data: image,
            },
            BinaryFrame::PreviewWithMetadata { meta, mime, image } => EventKind::Preview {
                job_id,
                node_id: meta.display_node_id.or(meta.node_id),
                mime,
                data: image,
            },
            BinaryFrame::Text { node_id, text } => EventKind::NodeText {
                job_id: Some(job_id),
                node_id,
                text,
            },
            BinaryFrame::Unknown { .. } => return out,
        }));
        out
    }
}

/// Messages that change a job's lifecycle (as opposed to progress), worth holding for an unplaced prompt id.
fn is_lifecycle(msg: &ServerMessage) -> bool {
    matches!(
        msg,
        ServerMessage::ExecutionStart(_)
            | ServerMessage::ExecutionCached(_)
            | ServerMessage::Executing(_)
            | ServerMessage::Executed(_)
            | ServerMessage::ExecutionSuccess(_)
            | ServerMessage::ExecutionError(_)
            | ServerMessage::ExecutionInterrupted(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn router_with(job: &str) -> JobRouter {
        let mut r = JobRouter::new("local");
        let prompt = std::sync::Arc::new(json!({"3": {"class_type": "SaveImage", "inputs": {}}}));
        let mut j = ActiveJob::new(job, prompt, "g", Instant::now());
        j.phase = Phase::Queued;
        r.track(j);
        r
    }

    fn msg(text: &str) -> ServerMessage {
        ServerMessage::parse(text).unwrap_or(ServerMessage::Unknown {
            kind: "bad".into(),
            data: Value::Null,
        })
    }

    fn names(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e {
                Effect::Emit(k) => k.name().to_string(),
                Effect::Finish { .. } => "finish".into(),
                Effect::QueueRemaining(n) => format!("queue{n}"),
                Effect::Forget { .. } => "forget".into(),
            })
            .collect()
    }

    #[test]
    fn success_sequence_becomes_lifecycle_events() {
        let mut r = router_with("p");
        let now = Instant::now();
        let mut all = Vec::new();
        for m in [
            r#"{"type":"status","data":{"status":{"exec_info":{"queue_remaining":1}}}}"#,
            r#"{"type":"execution_start","data":{"prompt_id":"p","timestamp":1}}"#,
            r#"{"type":"execution_cached","data":{"nodes":[],"prompt_id":"p","timestamp":1}}"#,
            r#"{"type":"executing","data":{"node":"3","display_node":"3","prompt_id":"p"}}"#,
            r#"{"type":"progress","data":{"value":1,"max":2,"prompt_id":"p","node":"3"}}"#,
            r#"{"type":"executed","data":{"node":"3","display_node":"3","output":{"images":[{"filename":"a.png","subfolder":"s","type":"output"}]},"prompt_id":"p"}}"#,
            r#"{"type":"execution_success","data":{"prompt_id":"p","timestamp":2}}"#,
            r#"{"type":"executing","data":{"node":null,"prompt_id":"p"}}"#,
        ] {
            all.extend(r.on_message(msg(m), now));
        }
        assert_eq!(
            names(&all),
            [
                "queue1",
                "job_queued",
                "job_started",
                "node_started",
                "progress",
                "node_output",
                "finish"
            ]
        );
        match all.last() {
            Some(Effect::Finish { refs, from_history, .. }) => {
                assert_eq!(refs.len(), 1);
                assert_eq!(refs[0].filename, "a.png");
                assert!(!from_history);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ignores_other_prompts_and_attributes_idless_frames_to_ours() {
        let mut r = router_with("p");
        let now = Instant::now();
        assert!(r
            .on_message(msg(r#"{"type":"execution_start","data":{"prompt_id":"other"}}"#), now)
            .is_empty());
        let e = r.on_binary(
            BinaryFrame::Text {
                node_id: "1".into(),
                text: "x".into(),
            },
            now,
        );
        assert!(e.is_empty(), "no running prompt of ours: broadcast text is not ours");
        r.on_message(msg(r#"{"type":"execution_start","data":{"prompt_id":"p"}}"#), now);
        let e = r.on_binary(
            BinaryFrame::Preview {
                mime: "image/jpeg",
                image: bytes::Bytes::from_static(b"x"),
            },
            now,
        );
        assert_eq!(
            names(&e),
            ["job_queued", "job_started", "preview"],
            "lifecycle first, then the preview"
        );
        // The reconnect replay: executing without prompt id.
        let e = r.on_message(msg(r#"{"type":"executing","data":{"node":"3"}}"#), now);
        assert_eq!(names(&e), ["node_started"]);
    }

    #[test]
    fn interrupt_is_a_cancel_only_when_we_asked() {
        let mut r = router_with("p");
        let now = Instant::now();
        let e = r.on_message(
            msg(r#"{"type":"execution_interrupted","data":{"prompt_id":"p","node_id":"3"}}"#),
            now,
        );
        assert!(names(&e).contains(&"job_failed".to_string()));
        let mut r = router_with("q");
        if let Some(j) = r.get_mut("q") {
            j.cancel_requested = true;
        }
        let e = r.on_message(msg(r#"{"type":"execution_interrupted","data":{"prompt_id":"q"}}"#), now);
        assert!(names(&e).contains(&"job_cancelled".to_string()));
    }

    #[test]
    fn execution_error_carries_node_details() {
        let mut r = router_with("p");
        let e = r.on_message(
            msg(r#"{"type":"execution_error","data":{"prompt_id":"p","node_id":"3","node_type":"AcceptanceFail","exception_message":"boom\n","exception_type":"RuntimeError","traceback":["a","b"]}}"#),
            Instant::now(),
        );
        let failed = e.iter().find_map(|x| match x {
            Effect::Emit(EventKind::JobFailed { error, .. }) => Some(JobError::clone(error)),
            _ => None,
        });
        let error = failed.unwrap_or_else(|| JobError::simple("missing", ""));
        assert_eq!(error.code, "execution_failed");
        assert_eq!(error.node_type.as_deref(), Some("AcceptanceFail"));
        assert_eq!(error.traceback.len(), 2);
        assert!(error.message.contains("boom"));
        assert!(r.is_empty());
    }

    /// What the actor does with a POST answer: move to the server's id, announce, then replay held messages.
    fn answer(r: &mut JobRouter, ours: &str, theirs: &str, now: Instant) -> Vec<Effect> {
        r.move_job(ours, theirs);
        let mut out: Vec<Effect> = r
            .announce_queued(theirs, Some(0), Vec::new())
            .map(Effect::Emit)
            .into_iter()
            .collect();
        out.extend(r.replay_held(now));
        out
    }

    /// A job that runs and ends before its POST answer is read (a fast server, a slow client): every message is
    /// held until the answer. Its progress must survive the hold — beyond the cap the newest value per node is
    /// kept (the held queue used to drop every progress message past the cap, so the job seemed stuck at the
    /// cap's value and then completed).
    #[test]
    fn a_job_that_ends_before_its_post_answer_keeps_its_latest_progress() {
        let mut r = router_with("p");
        if let Some(j) = r.get_mut("p") {
            j.phase = Phase::Submitting;
        }
        let now = Instant::now();
        let steps = MAX_HELD * 3;
        let mut texts = vec![
            r#"{"type":"execution_start","data":{"prompt_id":"p"}}"#.to_string(),
            r#"{"type":"execution_cached","data":{"nodes":[],"prompt_id":"p"}}"#.to_string(),
            r#"{"type":"executing","data":{"node":"3","display_node":"3","prompt_id":"p"}}"#.to_string(),
        ];
        for v in 1..=steps {
            texts.push(format!(
                r#"{{"type":"progress","data":{{"value":{v},"max":{steps},"prompt_id":"p","node":"3"}}}}"#
            ));
        }
        texts.push(r#"{"type":"executed","data":{"node":"3","display_node":"3","output":{"images":[{"filename":"a.png","subfolder":"","type":"output"}]},"prompt_id":"p"}}"#.to_string());
        texts.push(r#"{"type":"execution_success","data":{"prompt_id":"p"}}"#.to_string());
        texts.push(r#"{"type":"executing","data":{"node":null,"prompt_id":"p"}}"#.to_string());
        for t in &texts {
            assert!(r.on_message(msg(t), now).is_empty(), "held until the POST answer");
        }
        assert!(r.held.len() <= MAX_HELD + 8, "the hold stays bounded: {}", r.held.len());
        let e = answer(&mut r, "p", "p", now);
        let values: Vec<f64> = e
            .iter()
            .filter_map(|x| match x {
                Effect::Emit(EventKind::Progress { value, .. }) => Some(*value),
                _ => None,
            })
            .collect();
        assert!(!values.is_empty());
        assert!(values.windows(2).all(|w| w[0] < w[1]), "in order");
        assert_eq!(
            values.last().copied(),
            Some(steps as f64),
            "the newest progress survives the hold"
        );
        let order = names(&e);
        let first_progress = order.iter().position(|n| n == "progress");
        assert_eq!(&order[..3], ["job_queued", "job_started", "node_started"]);
        assert_eq!(first_progress, Some(3));
        assert_eq!(&order[order.len() - 2..], ["node_output", "finish"]);
    }

    /// A POST refused while the stream was paused for its answer (a broadcast about someone else's prompt was
    /// held): the refused job is removed and the replay lets the stream go on, or our other jobs would be held
    /// forever.
    #[test]
    fn a_refused_post_does_not_leave_the_stream_paused() {
        let mut r = router_with("q");
        let prompt = std::sync::Arc::new(json!({}));
        let mut p = ActiveJob::new("p", prompt, "g", Instant::now());
        p.phase = Phase::Submitting;
        r.track(p);
        let now = Instant::now();
        let foreign = r#"{"type":"execution_start","data":{"prompt_id":"someone-elses"}}"#;
        assert!(
            r.on_message(msg(foreign), now).is_empty(),
            "held: it may be p under another id"
        );
        let progress = r#"{"type":"progress","data":{"value":1,"max":2,"prompt_id":"q","node":"3"}}"#;
        assert!(r.on_message(msg(progress), now).is_empty(), "the stream is paused");
        r.remove("p");
        let e = r.replay_held(now);
        assert_eq!(names(&e), ["job_queued", "job_started", "progress"]);
        let later = r#"{"type":"progress","data":{"value":2,"max":2,"prompt_id":"q","node":"3"}}"#;
        assert_eq!(names(&r.on_message(msg(later), now)), ["progress"], "flowing again");
    }

    #[test]
    fn rekeys_when_an_old_server_ignores_our_id() {
        let mut r = router_with("ours");
        if let Some(j) = r.get_mut("ours") {
            j.phase = Phase::Submitting;
        }
        let now = Instant::now();
        for m in [
            r#"{"type":"execution_start","data":{"prompt_id":"theirs"}}"#,
            r#"{"type":"execution_cached","data":{"nodes":["1"],"prompt_id":"theirs"}}"#,
        ] {
            assert!(
                r.on_message(msg(m), now).is_empty(),
                "held until the POST answer names the id"
            );
        }
        let e = answer(&mut r, "ours", "theirs", now);
        assert_eq!(names(&e), ["job_queued", "job_started"]);
        assert!(r.get("theirs").is_some());
    }

    #[test]
    fn messages_before_the_post_answer_wait_for_job_queued() {
        let mut r = router_with("p");
        if let Some(j) = r.get_mut("p") {
            j.phase = Phase::Submitting;
        }
        let now = Instant::now();
        for m in [
            r#"{"type":"execution_start","data":{"prompt_id":"p"}}"#,
            r#"{"type":"execution_cached","data":{"nodes":["1","2"],"prompt_id":"p"}}"#,
            r#"{"type":"executing","data":{"node":"3","display_node":"3","prompt_id":"p"}}"#,
        ] {
            assert!(r.on_message(msg(m), now).is_empty());
        }
        let e = answer(&mut r, "p", "p", now);
        assert_eq!(names(&e), ["job_queued", "job_started", "node_started"]);
        let cached = e.iter().find_map(|x| match x {
            Effect::Emit(EventKind::JobStarted { cached_nodes, .. }) => Some(cached_nodes.clone()),
            _ => None,
        });
        assert_eq!(
            cached,
            Some(vec!["1".to_string(), "2".to_string()]),
            "the cached list is kept"
        );
    }

    #[test]
    fn foreign_jobs_are_counted_as_they_come_and_go() {
        let mut r = router_with("ours");
        assert!(!r.has_foreign());
        let mut j = ActiveJob::new("theirs", std::sync::Arc::new(Value::Null), "g", Instant::now());
        j.foreign = true;
        r.track(j);
        assert!(r.has_foreign());
        r.move_job("theirs", "renamed");
        assert!(r.has_foreign(), "moving a job keeps it");
        assert!(r.remove("renamed").is_some());
        assert!(!r.has_foreign());
    }

    #[test]
    fn eta_follows_the_step_rate() {
        let mut j = ActiveJob::new("p", std::sync::Arc::new(Value::Null), "g", Instant::now());
        let t0 = Instant::now();
        assert_eq!(j.eta("3", 1.0, 11.0, t0), None);
        let eta = j.eta("3", 2.0, 11.0, t0 + std::time::Duration::from_secs(1));
        assert_eq!(eta.map(|e| e.round()), Some(9.0));
    }
}
