//! Pools: several ComfyUI servers behind one service name. Each server is an ordinary ComfyUI actor (the same
//! one a single service runs, started with the pool's name for its jobs' events); the pool adds one scheduler
//! task that holds the jobs no server has yet, and hands each to a server that can run it (`crate::pool`
//! decides which) when that server has room (`capacity` jobs in flight).
//!
//! Failover keeps the job table's rules: a job is taken back from a server that went down with
//! `Shared::take_back` (the old actor can then neither post it nor speak for it) and sent elsewhere under a
//! fresh prompt id, so no prompt id is ever posted twice anywhere. Lock order: registry, pool state, job table.
use super::registry::{ComfyLink, Registry, ServiceHandle};
use super::schema::{fetch_schema, Schema, SchemaSlot};
use super::{Hub, ServiceAdded, ServiceOptions};
use crate::comfy::http::ComfyHttp;
use crate::comfy::service::Command;
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorCode, Result};
use crate::event::{EventKind, JobError, JobState, ServiceState};
use crate::pool::{choose, disjoint_pairs, inventory_differences, Candidate, InventoryDifference, Needs, PoolOptions};
use crate::service::{Backend, ServiceSnapshot, ServiceStatus};
use crate::tracker::{HandOver, Shared, Submission};
use crate::workflow::prepare;
use crate::workflow::Workflow;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};

/// The scheduler looks at its servers this often even when nothing woke it (a job that ended, a server that
/// changed state: both are read from the job table and the servers' status, not pushed).
const TICK: Duration = Duration::from_millis(10);
/// A server that stopped answering but has not failed a connection attempt yet (a dropped socket being
/// reconnected) counts as down after this long.
const DOWN_GRACE: Duration = Duration::from_secs(3);
/// Waiting jobs looked at per step for one that fits a server with room (the rest wait their turn).
const SCAN: usize = 256;
/// Tags remembered for affinity; beyond this the memory starts afresh.
const AFFINITY_CAP: usize = 10_000;
/// How often waiting jobs are checked for a server that can run them being up (the deadline's other half).
const BLOCKED_CHECK: Duration = Duration::from_secs(1);

/// A job of the pool, as the pool keeps it until a server has it (and while one has it, to move it again).
struct PoolJob {
    id: String,
    workflow: Arc<Workflow>,
    params: Arc<Vec<(String, Value)>>,
    group: String,
    tag: Option<String>,
    /// The prompt (API format, parameters applied) and what it needs of a server; None until a node list was
    /// there to convert a UI-format workflow with.
    prepared: Option<(Arc<Value>, Arc<Needs>)>,
    /// Servers it was sent to so far.
    attempt: u32,
    /// Waiting since (for the every-server-down deadline).
    since: Instant,
    /// Since when no server that can run it takes jobs (some are down, the others lack what it needs).
    blocked_since: Option<Instant>,
}

struct Flight {
    job: PoolJob,
    /// When it was first seen running there.
    started: Option<Instant>,
    progress: f64,
}

struct Member {
    url: String,
    link: ComfyLink,
    status: Arc<ServiceStatus>,
    /// Usable for new jobs and counted as alive; false from a failover until it answers again.
    up: bool,
    unusable_since: Option<Instant>,
    /// Bumped each time the server (re)joins: a node list fetched for an older session is not fresh.
    session: u64,
    inventory: Option<Arc<Schema>>,
    /// The node list was fetched since the server last joined.
    fresh: bool,
    fetching: bool,
    in_flight: Vec<Flight>,
    seconds_per_job: Option<f64>,
    completed: u64,
    moved_away: u64,
    lost: u64,
    /// It answers, but as another kind of server (from the discovery fingerprints).
    wrong_kind: Option<String>,
    probed: bool,
}

impl Member {
    fn ready(&self) -> bool {
        self.up && self.fresh && self.wrong_kind.is_none() && self.inventory.is_some()
    }

    /// Work ahead of a new job, in jobs: ours (a running one by what is left of it) and others' queued jobs.
    fn work(&self) -> f64 {
        let ours: f64 = self
            .in_flight
            .iter()
            .map(|f| {
                if f.started.is_some() {
                    (1.0 - f.progress / 100.0).clamp(0.0, 1.0)
                } else {
                    1.0
                }
            })
            .sum();
        let queue = self.status.snapshot().queue_remaining.unwrap_or(0) as usize;
        let others = queue.saturating_sub(self.in_flight.len());
        ours + others as f64
    }
}

/// Background work the scheduler starts (outside its lock).
enum Task {
    Fetch {
        member: usize,
        session: u64,
        http: ComfyHttp,
        slot: SchemaSlot,
    },
    Probe {
        member: usize,
        url: String,
    },
}

pub(super) struct PoolState {
    name: String,
    options: PoolOptions,
    members: Vec<Member>,
    waiting: VecDeque<PoolJob>,
    /// Tag → the server it last ran on.
    affinity: HashMap<String, usize>,
    all_down_since: Option<Instant>,
    last_blocked_check: Instant,
    problems: Vec<String>,
    status: Arc<ServiceStatus>,
}

/// The hub's handle of a pool (its `Backend`): dropping it stops the scheduler and every server's actor.
pub(super) struct PoolLink {
    state: Arc<Mutex<PoolState>>,
    wake: Arc<Notify>,
    _stop: mpsc::UnboundedSender<()>,
}

impl Backend for PoolLink {
    fn kind(&self) -> &'static str {
        "comfyui"
    }

    fn usage(&self) -> &'static str {
        "submit a ComfyUI workflow to it (a pool of ComfyUI servers)"
    }

    fn actor_id(&self) -> u64 {
        0
    }

    /// The job's server cancels it; a job still waiting in the hub is unowned, and the hub ended it already.
    fn cancel(&self, job_id: &str) -> bool {
        let st = self.state.lock();
        for m in &st.members {
            if m.in_flight.iter().any(|f| f.job.id == job_id) {
                return m.link.send(Command::Cancel {
                    job_id: job_id.to_string(),
                });
            }
        }
        // Moved back to waiting between the hub's look and ours: it is unowned again, so it ends here.
        true
    }

    fn reconnect(&self) -> bool {
        let st = self.state.lock();
        let mut any = false;
        for m in &st.members {
            any |= m.link.send(Command::Reconnect);
        }
        any
    }

    fn forward(&self, jobs: &[String], _to: &dyn Backend) -> Vec<String> {
        jobs.to_vec()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One server of a pool, for `snapshot()`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolServerSnapshot {
    pub url: String,
    /// The name its own state events carry (`pool/host:port`).
    pub name: String,
    pub state: ServiceState,
    /// Takes new jobs now (answers, its node list is fresh, it is a ComfyUI).
    pub usable: bool,
    pub reason: Option<String>,
    /// Its queue as its status messages say (everyone's jobs, running included).
    pub queue_remaining: Option<u64>,
    /// Our jobs it has (sent, not ended), at most the pool's capacity.
    pub in_flight: usize,
    /// Which of our jobs it has, and how each is doing.
    pub jobs: Vec<PoolJobView>,
    pub completed: u64,
    /// Jobs moved from it to another server after it went down.
    pub moved_away: u64,
    /// Jobs that were running on it when it went down (failed `server_lost`, or sent again elsewhere).
    pub lost: u64,
    pub seconds_per_job: Option<f64>,
    /// Node classes in its `/object_info`; None until fetched.
    pub node_count: Option<usize>,
    /// It answers as another kind of server (e.g. "gradio").
    pub wrong_kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolJobView {
    pub job_id: String,
    pub tag: Option<String>,
    pub state: JobState,
    pub progress: f64,
    pub attempt: u32,
}

/// A pool, for `snapshot()`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolSnapshot {
    pub name: String,
    /// "ready", "busy" (every usable server full), "waiting for a server" (none usable) or "starting".
    pub state: String,
    pub capacity: usize,
    pub resubmit_running: bool,
    pub wait_deadline_seconds: Option<f64>,
    /// Jobs waiting in the hub for a server, oldest first.
    pub waiting: Vec<String>,
    pub servers: Vec<PoolServerSnapshot>,
    /// Per server, the node classes other servers have and it lacks.
    pub inventory_differences: Vec<InventoryDifference>,
    /// What is wrong with the pool as configured (servers that share no node, a server of another kind).
    pub problems: Vec<String>,
}

impl PoolState {
    fn snapshot(&self, shared: &Shared) -> PoolSnapshot {
        let servers: Vec<PoolServerSnapshot> = self
            .members
            .iter()
            .map(|m| {
                let snap = m.status.snapshot();
                PoolServerSnapshot {
                    url: m.url.clone(),
                    name: snap.name.clone(),
                    state: snap.state,
                    usable: m.ready(),
                    reason: snap.reason.clone(),
                    queue_remaining: snap.queue_remaining,
                    in_flight: m.in_flight.len(),
                    jobs: m
                        .in_flight
                        .iter()
                        .map(|f| PoolJobView {
                            job_id: f.job.id.clone(),
                            tag: f.job.tag.clone(),
                            state: shared.job_state(&f.job.id).unwrap_or(JobState::Pending),
                            progress: f.progress,
                            attempt: f.job.attempt,
                        })
                        .collect(),
                    completed: m.completed,
                    moved_away: m.moved_away,
                    lost: m.lost,
                    seconds_per_job: m.seconds_per_job,
                    node_count: m.inventory.as_ref().and_then(|s| s.raw.as_object().map(|o| o.len())),
                    wrong_kind: m.wrong_kind.clone(),
                }
            })
            .collect();
        let inventories: Vec<(String, &Value)> = self
            .members
            .iter()
            .filter_map(|m| m.inventory.as_ref().map(|s| (m.url.clone(), &*s.raw)))
            .collect();
        let state = if self.members.iter().any(Member::ready) {
            if self
                .members
                .iter()
                .filter(|m| m.ready())
                .all(|m| m.in_flight.len() >= self.options.capacity)
            {
                "busy"
            } else {
                "ready"
            }
        } else if self
            .members
            .iter()
            .any(|m| m.session == 0 && m.wrong_kind.is_none() && m.status.snapshot().consecutive_failures == 0)
        {
            // A server is still being reached for the first time.
            "starting"
        } else {
            "waiting for a server"
        };
        PoolSnapshot {
            name: self.name.clone(),
            state: state.to_string(),
            capacity: self.options.capacity,
            resubmit_running: self.options.resubmit_running,
            wait_deadline_seconds: self.options.wait_deadline.map(|d| d.as_secs_f64()),
            waiting: self.waiting.iter().map(|j| j.id.clone()).collect(),
            servers,
            inventory_differences: inventory_differences(&inventories),
            problems: self.problems.clone(),
        }
    }

    /// One look at everything: servers' health, jobs that ended, failover, dispatch, the every-server-down
    /// deadline, the pool's own state. Returns background work to start.
    fn step(&mut self, shared: &Shared, now: Instant) -> Vec<Task> {
        let mut tasks = Vec::new();
        for i in 0..self.members.len() {
            self.check_member(i, shared, now, &mut tasks);
        }
        for m in &mut self.members {
            Self::settle(m, shared, now);
        }
        self.waiting
            .retain(|j| shared.job_state(&j.id).is_some_and(|s| !s.is_terminal()));
        self.dispatch(shared);
        self.deadline(shared, now);
        self.publish(shared);
        tasks
    }

    /// A server's health: it went down (its jobs move), or it answers again (it rejoins once its node list is
    /// fetched afresh), or it never answered (is it another kind of server?).
    fn check_member(&mut self, i: usize, shared: &Shared, now: Instant, tasks: &mut Vec<Task>) {
        let snap = self.members[i].status.snapshot();
        let m = &mut self.members[i];
        let answering = matches!(snap.state, ServiceState::Connected | ServiceState::Polling);
        if answering {
            m.unusable_since = None;
            if !m.up {
                m.up = true;
                m.session += 1;
                m.fresh = false;
                if m.session > 1 {
                    log::info!("{}: server {} is back; it rejoins the pool", self.name, m.url);
                }
            }
            if !m.fresh && !m.fetching {
                m.fetching = true;
                tasks.push(Task::Fetch {
                    member: i,
                    session: m.session,
                    http: m.link.api.http.clone(),
                    slot: m.link.api.schema.clone(),
                });
            }
            return;
        }
        let since = *m.unusable_since.get_or_insert(now);
        if !m.probed && snap.consecutive_failures > 0 && m.session == 0 {
            m.probed = true;
            tasks.push(Task::Probe {
                member: i,
                url: m.url.clone(),
            });
        }
        let down = snap.consecutive_failures > 0
            || matches!(
                snap.state,
                ServiceState::Disconnected | ServiceState::CircuitOpen | ServiceState::Closed
            )
            || now.duration_since(since) >= DOWN_GRACE;
        if m.up && down {
            m.up = false;
            let why = snap
                .last_error
                .clone()
                .unwrap_or_else(|| snap.state.as_str().to_string());
            self.fail_over(i, shared, &why);
        }
    }

    /// Forgets the jobs that ended; notes when each started, its progress, and the server's speed.
    fn settle(m: &mut Member, shared: &Shared, now: Instant) {
        m.in_flight.retain_mut(|f| {
            let Some(job) = shared.job(&f.job.id) else {
                return false;
            };
            if job.state.is_terminal() {
                if job.state == JobState::Completed {
                    m.completed += 1;
                    if let Some(started) = f.started {
                        let took = now.duration_since(started).as_secs_f64();
                        // A moving average, so a server's speed follows what it runs now.
                        m.seconds_per_job = Some(m.seconds_per_job.map_or(took, |s| 0.8 * s + 0.2 * took));
                    }
                }
                return false;
            }
            if job.state == JobState::Running && f.started.is_none() {
                f.started = Some(now);
            }
            f.progress = job.progress;
            true
        });
    }

    /// A server went down: its jobs that had not started go back to the front of the queue (in order) to be
    /// sent elsewhere under a fresh prompt id; a running one fails `server_lost`, or goes back too when the
    /// pool resubmits running jobs.
    fn fail_over(&mut self, i: usize, shared: &Shared, why: &str) {
        let (pool, resubmit) = (self.name.clone(), self.options.resubmit_running);
        let m = &mut self.members[i];
        log::warn!(
            "{pool}: server {} went down ({why}); moving its {} job(s)",
            m.url,
            m.in_flight.len()
        );
        let mut back = Vec::new();
        for f in std::mem::take(&mut m.in_flight) {
            let running = shared.job_state(&f.job.id) == Some(JobState::Running) || f.started.is_some();
            if !shared.take_back(&f.job.id, m.link.id()) {
                continue;
            }
            // The old actor stops following it (what it would say is dropped now) and, should the server come
            // back with it, removes it there.
            m.link.send(Command::Cancel {
                job_id: f.job.id.clone(),
            });
            if running {
                m.lost += 1;
                if !resubmit {
                    shared.fail_job(
                        &pool,
                        &f.job.id,
                        JobError::simple(
                            ErrorCode::ServerLost.as_str(),
                            format!(
                                "server {} of pool {pool:?} went down while the job ran ({why}); it may not have \
                                 finished there; submit it again (or add the pool with resubmit_running=True)",
                                m.url
                            ),
                        ),
                    );
                    continue;
                }
            } else {
                m.moved_away += 1;
            }
            back.push(f.job);
        }
        for mut job in back.into_iter().rev() {
            job.since = Instant::now();
            shared.emit(EventKind::JobAssigned {
                job_id: job.id.clone(),
                service: pool.clone(),
                server: None,
                attempt: job.attempt,
            });
            self.waiting.push_front(job);
        }
    }

    /// Hands waiting jobs to servers with room, oldest first; a job no server can run fails here.
    fn dispatch(&mut self, shared: &Shared) {
        let capacity = self.options.capacity;
        let room = |members: &[Member]| members.iter().any(|m| m.ready() && m.in_flight.len() < capacity);
        let mut i = 0;
        let mut scanned = 0;
        while i < self.waiting.len() && scanned < SCAN && room(&self.members) {
            scanned += 1;
            if self.waiting[i].prepared.is_none() {
                let schemas: Vec<Arc<Schema>> = self.members.iter().filter_map(|m| m.inventory.clone()).collect();
                if schemas.is_empty() {
                    i += 1;
                    continue;
                }
                // A UI-format workflow is converted with the first node list that can (a server lacking one of
                // its nodes cannot convert it, another may).
                let job = &mut self.waiting[i];
                let mut first_error = None;
                for schema in &schemas {
                    match prepare::prepare(&job.workflow, &job.params, Some(&schema.info)) {
                        Ok(p) => {
                            let needs = Arc::new(Needs::of(&p.prompt));
                            job.prepared = Some((Arc::new(p.prompt), needs));
                            break;
                        }
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                if job.prepared.is_none() {
                    if let Some(e) = first_error {
                        shared.fail_job(&self.name, &job.id, e.to_job_error());
                    }
                    self.waiting.remove(i);
                    continue;
                }
            }
            let Some((_, needs)) = self.waiting[i].prepared.clone() else {
                i += 1;
                continue;
            };
            let tag_home = self.waiting[i].tag.as_ref().and_then(|t| self.affinity.get(t).copied());
            let mut candidates = Vec::new();
            let mut which = Vec::new();
            let mut lacking = Vec::new();
            let mut unknown = 0;
            for (k, m) in self.members.iter().enumerate() {
                if m.wrong_kind.is_some() {
                    continue;
                }
                let Some(inventory) = &m.inventory else {
                    unknown += 1;
                    continue;
                };
                let missing = needs.missing_in(&inventory.raw);
                if !missing.is_empty() {
                    lacking.push(format!("{} lacks {}", m.url, missing.join(", ")));
                } else if m.ready() {
                    candidates.push(Candidate {
                        in_flight: m.in_flight.len(),
                        work: m.work(),
                        seconds_per_job: m.seconds_per_job,
                        affine: tag_home == Some(k),
                    });
                    which.push(k);
                }
            }
            if candidates.is_empty()
                && unknown == 0
                && !lacking.is_empty()
                && lacking.len() == self.members.iter().filter(|m| m.wrong_kind.is_none()).count()
            {
                let job = self.waiting.remove(i);
                if let Some(job) = job {
                    shared.fail_job(
                        &self.name,
                        &job.id,
                        JobError::simple(
                            ErrorCode::ValidationFailed.as_str(),
                            format!(
                                "no server of pool {:?} can run this job: {}",
                                self.name,
                                lacking.join("; ")
                            ),
                        ),
                    );
                }
                continue;
            }
            match choose(&candidates, capacity) {
                Some(c) => {
                    if let Some(job) = self.waiting.remove(i) {
                        self.send(which[c], job, shared);
                    }
                }
                None => i += 1,
            }
        }
    }

    fn send(&mut self, k: usize, mut job: PoolJob, shared: &Shared) {
        let Some((prompt, _)) = job.prepared.clone() else {
            return;
        };
        job.attempt += 1;
        // The first server gets the job id as prompt id (as a single service would); a server it moves to gets
        // a fresh one: a prompt id is never posted twice anywhere.
        let prompt_id = (job.attempt > 1).then(|| uuid::Uuid::new_v4().to_string());
        let m = &mut self.members[k];
        // Before the order: the server's own `JobQueued` must follow it.
        shared.emit(EventKind::JobAssigned {
            job_id: job.id.clone(),
            service: self.name.clone(),
            server: Some(m.url.clone()),
            attempt: job.attempt,
        });
        let order = Command::Submit {
            job_id: job.id.clone(),
            prompt,
            group: job.group.clone(),
            prompt_id,
        };
        if m.link.start(shared, &job.id, order, false) == HandOver::Sent {
            if let Some(tag) = &job.tag {
                if self.affinity.len() >= AFFINITY_CAP {
                    self.affinity.clear();
                }
                self.affinity.insert(tag.clone(), k);
            }
            m.in_flight.push(Flight {
                job,
                started: None,
                progress: 0.0,
            });
        }
    }

    /// While every server is down, waiting jobs fail after the pool's deadline; so does a job while every server
    /// that could run it is down (the others lack what it needs).
    fn deadline(&mut self, shared: &Shared, now: Instant) {
        if self.members.iter().any(|m| m.up) {
            self.all_down_since = None;
            if now.duration_since(self.last_blocked_check) >= BLOCKED_CHECK {
                self.last_blocked_check = now;
                self.blocked(shared, now);
            }
            return;
        }
        let down_since = *self.all_down_since.get_or_insert(now);
        let Some(limit) = self.options.wait_deadline else {
            return;
        };
        let pool = self.name.clone();
        self.waiting.retain(|job| {
            let from = down_since.max(job.since);
            if now.duration_since(from) < limit {
                return true;
            }
            shared.fail_job(
                &pool,
                &job.id,
                JobError::simple(
                    ErrorCode::Timeout.as_str(),
                    format!(
                        "waited {:.0} s for a server of pool {pool:?}, and every server stayed down; start one \
                         and submit the job again",
                        limit.as_secs_f64()
                    ),
                ),
            );
            false
        });
    }

    fn blocked(&mut self, shared: &Shared, now: Instant) {
        let Some(limit) = self.options.wait_deadline else {
            return;
        };
        let (pool, members) = (self.name.clone(), &self.members);
        self.waiting.retain_mut(|job| {
            let Some((_, needs)) = &job.prepared else {
                return true;
            };
            let can = |m: &Member| {
                m.inventory
                    .as_ref()
                    .is_some_and(|inv| needs.missing_in(&inv.raw).is_empty())
            };
            if members.iter().any(|m| m.ready() && can(m)) {
                job.blocked_since = None;
                return true;
            }
            let since = *job.blocked_since.get_or_insert(now);
            if now.duration_since(since) < limit {
                return true;
            }
            let why: Vec<String> = members
                .iter()
                .map(|m| match &m.inventory {
                    Some(inv) if !needs.missing_in(&inv.raw).is_empty() => {
                        format!("{} lacks {}", m.url, needs.missing_in(&inv.raw).join(", "))
                    }
                    _ => format!("{} is down", m.url),
                })
                .collect();
            shared.fail_job(
                &pool,
                &job.id,
                JobError::simple(
                    ErrorCode::Timeout.as_str(),
                    format!(
                        "waited {:.0} s for a server of pool {pool:?} that can run this job: {}",
                        limit.as_secs_f64(),
                        why.join("; ")
                    ),
                ),
            );
            false
        });
    }

    /// The pool's own service state: connected while a server takes jobs.
    fn publish(&self, shared: &Shared) {
        let ready = self.members.iter().any(Member::ready);
        let (state, reason) = if ready {
            (ServiceState::Connected, None)
        } else if self.members.iter().any(|m| m.up) {
            (
                ServiceState::Connecting,
                Some("fetching the servers' node lists".to_string()),
            )
        } else if self.members.iter().any(|m| m.session > 0) {
            (
                ServiceState::Reconnecting,
                Some("every server of the pool is down; jobs wait for a server".to_string()),
            )
        } else if self
            .members
            .iter()
            .all(|m| m.status.snapshot().consecutive_failures > 0)
        {
            (
                ServiceState::Disconnected,
                Some("no server of the pool answers yet; jobs wait for a server".to_string()),
            )
        } else {
            (ServiceState::Connecting, None)
        };
        if self.status.state() != state || self.status.snapshot().reason != reason {
            self.status.set_state(shared, state, reason);
        }
        let queued: usize = self.waiting.len() + self.members.iter().map(|m| m.in_flight.len()).sum::<usize>();
        self.status.set_queue(queued as u64);
    }

    /// A server's node list arrived: it may take jobs now; the pool's problems are looked at again.
    fn inventory_fetched(&mut self, member: usize, session: u64, result: Result<Arc<Schema>>) {
        let name = self.name.clone();
        let Some(m) = self.members.get_mut(member) else { return };
        m.fetching = false;
        match result {
            Ok(schema) if m.session == session => {
                m.inventory = Some(schema);
                m.fresh = true;
            }
            Ok(_) => {}
            Err(e) => log::info!("{name}: node list of {} not fetched yet: {e}", m.url),
        }
        let inventories: Vec<(String, &Value)> = self
            .members
            .iter()
            .filter_map(|m| m.inventory.as_ref().map(|s| (m.url.clone(), &*s.raw)))
            .collect();
        let mut problems: Vec<String> = disjoint_pairs(&inventories)
            .into_iter()
            .map(|(a, b)| format!("servers {a} and {b} share no node class: no workflow can run on both"))
            .collect();
        problems.extend(self.members.iter().filter_map(|m| {
            m.wrong_kind
                .as_ref()
                .map(|k| format!("{} answers as a {k} server, not ComfyUI; it takes no jobs", m.url))
        }));
        if problems != self.problems {
            for p in &problems {
                log::warn!("{name}: {p}");
            }
            self.problems = problems;
        }
    }
}

async fn run(
    state: Arc<Mutex<PoolState>>,
    shared: Arc<Shared>,
    wake: Arc<Notify>,
    mut stop: mpsc::UnboundedReceiver<()>,
) {
    let probe_client = crate::discovery::client(&crate::discovery::DiscoveryOptions::default()).ok();
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
            r = stop.recv() => if r.is_none() { break },
        }
        let tasks = state.lock().step(&shared, Instant::now());
        for task in tasks {
            let (state, wake) = (state.clone(), wake.clone());
            match task {
                Task::Fetch {
                    member,
                    session,
                    http,
                    slot,
                } => {
                    tokio::spawn(async move {
                        let result = fetch_schema(&http, &slot).await;
                        state.lock().inventory_fetched(member, session, result);
                        wake.notify_one();
                    });
                }
                Task::Probe { member, url } => {
                    let Some(client) = probe_client.clone() else { continue };
                    tokio::spawn(async move {
                        let Some(target) = target_of(&url) else { return };
                        let deadline = Instant::now() + Duration::from_secs(2);
                        let found = crate::discovery::probe::probe(client, target, deadline).await;
                        use crate::discovery::ServerKind;
                        if !matches!(found.kind, ServerKind::Comfyui | ServerKind::None) {
                            let mut st = state.lock();
                            let pool = st.name.clone();
                            if let Some(m) = st.members.get_mut(member) {
                                log::warn!("{pool}: {url} answers as {}, not as a ComfyUI", found.kind.as_str());
                                m.wrong_kind = Some(found.kind.as_str().to_string());
                            }
                            st.inventory_fetched(member, u64::MAX, Err(Error::new(ErrorCode::WrongService, "")));
                        }
                        wake.notify_one();
                    });
                }
            }
        }
    }
}

fn target_of(url: &str) -> Option<crate::discovery::Target> {
    let base = url::Url::parse(url).ok()?;
    let host = base.host_str()?.to_string();
    let port = base.port_or_known_default()?;
    Some(crate::discovery::Target {
        base,
        host,
        port,
        role: crate::discovery::PortRole::Any,
    })
}

impl Hub {
    /// Adds a pool: several ComfyUI servers behind one service name. `submit(name, …)` then sends each job to a
    /// server that can run it (its nodes and model files) with the least work, at most `capacity` per server,
    /// the rest waiting in the hub; a server that goes down has its unstarted jobs moved to another. Returns at
    /// once (the servers are connected in the background).
    pub fn add_pool(&self, name: &str, servers: &[String], options: PoolOptions) -> Result<ServiceAdded> {
        self.ensure_open()?;
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::new(ErrorCode::InvalidUrl, "a pool name cannot be empty"));
        }
        if servers.is_empty() {
            return Err(Error::new(
                ErrorCode::InvalidUrl,
                format!("pool {name:?} has no servers; give at least one ComfyUI address (host:port)"),
            ));
        }
        if options.capacity == 0 {
            return Err(Error::new(
                ErrorCode::InvalidParameter,
                "a pool's capacity (jobs in flight per server) must be at least 1",
            ));
        }
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for s in servers {
            let e = Endpoint::parse(s, 8188)
                .map_err(|e| Error::new(e.code, format!("server {s:?} of pool {name:?}: {}", e.message)))?;
            if let Some(first) = endpoints.iter().find(|x| x.base() == e.base()) {
                return Err(Error::new(
                    ErrorCode::DuplicateService,
                    format!(
                        "pool {name:?} lists the server {} twice (as {s:?}); list each server once",
                        first.base()
                    ),
                ));
            }
            endpoints.push(e);
        }
        let mut services = self.registry.services.lock();
        if services.contains_key(name) {
            return Err(Error::new(
                ErrorCode::DuplicateService,
                format!("a service named {name:?} exists already; pass another name or remove it first"),
            ));
        }
        let client = |_: ()| format!("director-link-{}", uuid::Uuid::new_v4().simple());
        let status = Arc::new(ServiceStatus::new(name, "comfyui", endpoints[0].base(), &client(())));
        let mut members = Vec::new();
        for e in &endpoints {
            let label = format!(
                "{name}/{}",
                e.base()
                    .trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .trim_end_matches('/')
            );
            let client_id = client(());
            let st = Arc::new(ServiceStatus::new(&label, "comfyui", e.base(), &client_id));
            // A server that restarts faster than the pool notices it went down lost what it had: its actor then
            // sends a lost job again itself (fresh prompt id, same server) exactly when the pool would.
            let member_options = ServiceOptions {
                resubmit_on_restart: options.resubmit_running,
            };
            let link = self.spawn_comfy(&label, e, None, &st, client_id, &member_options, Some(name))?;
            members.push(Member {
                url: e.base().to_string(),
                link,
                status: st,
                up: false,
                unusable_since: None,
                session: 0,
                inventory: None,
                fresh: false,
                fetching: false,
                in_flight: Vec::new(),
                seconds_per_job: None,
                completed: 0,
                moved_away: 0,
                lost: 0,
                wrong_kind: None,
                probed: false,
            });
        }
        let state = Arc::new(Mutex::new(PoolState {
            name: name.to_string(),
            options,
            members,
            waiting: VecDeque::new(),
            affinity: HashMap::new(),
            all_down_since: None,
            last_blocked_check: Instant::now(),
            problems: Vec::new(),
            status: status.clone(),
        }));
        let wake = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = mpsc::unbounded_channel();
        self.spawn(run(state.clone(), self.shared.clone(), wake.clone(), stop_rx))?;
        let link = PoolLink {
            state,
            wake,
            _stop: stop_tx,
        };
        let endpoint = endpoints[0].clone();
        let added = ServiceAdded {
            name: name.to_string(),
            url: endpoint.base().to_string(),
            understood: format!(
                "a pool of {} ComfyUI server(s): {}",
                endpoints.len(),
                endpoints
                    .iter()
                    .map(|e| e.base().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        services.insert(name.to_string(), ServiceHandle::pool(endpoint, status, Box::new(link)));
        Ok(added)
    }

    /// Every pool's state (`snapshot().pools`).
    pub fn pools(&self) -> Vec<PoolSnapshot> {
        let services = self.registry.services.lock();
        services
            .values()
            .filter_map(|h| h.actor.as_any().downcast_ref::<PoolLink>())
            .map(|p| {
                let mut st = p.state.lock();
                // Jobs that ended since the scheduler's last look are counted now, not a tick later.
                let now = Instant::now();
                for m in &mut st.members {
                    PoolState::settle(m, &self.shared, now);
                }
                st.snapshot(&self.shared)
            })
            .collect()
    }

    /// The servers of a pool as services (their own connection state).
    pub fn pool_servers(&self, name: &str) -> Option<Vec<ServiceSnapshot>> {
        let services = self.registry.services.lock();
        let pool = services.get(name)?.actor.as_any().downcast_ref::<PoolLink>()?;
        let st = pool.state.lock();
        Some(st.members.iter().map(|m| m.status.snapshot()).collect())
    }

    pub(super) fn is_pool(services: &std::collections::BTreeMap<String, ServiceHandle>, name: &str) -> bool {
        services.get(name).is_some_and(|h| h.actor.as_any().is::<PoolLink>())
    }

    /// The HTTP API and node list of a pool server that has one (for `object_info` on a pool).
    pub(super) fn pool_comfy_api(
        services: &std::collections::BTreeMap<String, ServiceHandle>,
        name: &str,
    ) -> Option<(ComfyHttp, SchemaSlot)> {
        let pool = services.get(name)?.actor.as_any().downcast_ref::<PoolLink>()?;
        let st = pool.state.lock();
        let m = st
            .members
            .iter()
            .find(|m| m.ready())
            .or_else(|| st.members.iter().find(|m| m.inventory.is_some()))
            .or_else(|| st.members.first())?;
        Some((m.link.api.http.clone(), m.link.api.schema.clone()))
    }

    /// `submit` to a pool: checked and registered here, sent by the pool's scheduler.
    pub(super) fn submit_pool(
        &self,
        pool: &str,
        workflow: Value,
        params: Vec<(String, Value)>,
        tag: Option<String>,
    ) -> Result<String> {
        let loaded = prepare::load(workflow.clone())?;
        // An API-format prompt is prepared now (a bad parameter fails here); a UI-format one once a node list is
        // there to convert it with.
        let prepared = if prepare::needs_object_info(&loaded) {
            None
        } else {
            let p = prepare::prepare(&loaded, &params, None)?;
            let needs = Arc::new(Needs::of(&p.prompt));
            Some((Arc::new(p.prompt), needs))
        };
        let services = self.registry.services.lock();
        let link = services
            .get(pool)
            .and_then(|h| h.actor.as_any().downcast_ref::<PoolLink>())
            .ok_or_else(|| Registry::unknown_in(&services, pool))?;
        let mut st = link.state.lock();
        if let Some((_, needs)) = &prepared {
            // Every server's node list is known and none has what the job needs: say so now.
            let known: Vec<&Member> = st.members.iter().filter(|m| m.wrong_kind.is_none()).collect();
            if !known.is_empty() && known.iter().all(|m| m.inventory.is_some()) {
                let lacking: Vec<String> = known
                    .iter()
                    .filter_map(|m| {
                        let missing = needs.missing_in(&m.inventory.as_ref()?.raw);
                        (!missing.is_empty()).then(|| format!("{} lacks {}", m.url, missing.join(", ")))
                    })
                    .collect();
                if lacking.len() == known.len() {
                    return Err(Error::new(
                        ErrorCode::ValidationFailed,
                        format!(
                            "no server of pool {pool:?} can run this workflow: {}",
                            lacking.join("; ")
                        ),
                    )
                    .with_details(serde_json::json!({ "missing": lacking })));
                }
            }
        }
        let job_id = uuid::Uuid::new_v4().to_string();
        let group = super::config::output_group(tag.as_deref(), pool);
        self.shared.register(
            &job_id,
            pool,
            tag.clone(),
            Submission {
                workflow: Arc::new(workflow),
                params: params.clone(),
            },
        );
        st.waiting.push_back(PoolJob {
            id: job_id.clone(),
            workflow: Arc::new(loaded),
            params: Arc::new(params),
            group,
            tag,
            prepared,
            attempt: 0,
            since: Instant::now(),
            blocked_since: None,
        });
        drop(st);
        link.wake.notify_one();
        Ok(job_id)
    }
}
