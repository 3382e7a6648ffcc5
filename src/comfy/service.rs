//! One actor task per ComfyUI service: owns the WebSocket, sends prompts, routes messages, reconnects with
//! backoff, reconciles jobs after a reconnect and downloads results. All state lives in this one task; slow
//! HTTP calls run in spawned tasks that report back through an internal channel, so the socket is always read.
use super::http::{CancelOutcome, ComfyHttp, SubmitOutcome};
use super::jobs::{ActiveJob, Effect, Fetch, JobRouter, Phase};
use super::outputs::download_all;
use super::protocol::{file_refs, BinaryFrame, FileRef, HistoryEntry, QueueView, ServerMessage};
use super::ws::{self, Socket};
use crate::error::{Error, ErrorCode, Result};
use crate::event::{EventKind, JobError, OutputFile, ServiceState};
use crate::net::files::job_dir;
use crate::net::manifest::Manifest;
use crate::service::{Backoff, BackoffPolicy, BreakerPolicy, CircuitBreaker, ServiceStatus};
use crate::tracker::Shared;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Per-service settings.
#[derive(Debug, Clone)]
pub struct ComfyConfig {
    pub heartbeat: Duration,
    pub backoff: BackoffPolicy,
    pub breaker: BreakerPolicy,
    /// How often jobs are checked over HTTP while the WebSocket cannot be opened.
    pub poll_interval: Duration,
    /// After a server restart lost a job, send it again (new prompt id, same job) instead of failing it.
    pub resubmit_on_restart: bool,
    pub output_dir: PathBuf,
    pub connect_timeout: Duration,
    /// This actor's id in the hub's job table (`Shared::claim_post`).
    pub actor_id: u64,
    /// The pool this server belongs to, if any: its jobs' events name the pool as their service.
    pub pool: Option<String>,
}

/// What the hub asks of a service.
#[derive(Debug, Clone)]
pub enum Command {
    Submit {
        job_id: String,
        prompt: Arc<Value>,
        group: String,
        /// The prompt id to post it under; None: the job id. A pool sends a job that moved to another server
        /// under a fresh id, so no prompt id is ever posted twice anywhere.
        prompt_id: Option<String>,
    },
    Cancel {
        job_id: String,
    },
    /// Follow a job submitted earlier (by another session of the hub): reconcile it from the server.
    Track {
        job_id: String,
        group: String,
    },
    Reconnect,
}

impl crate::service::ActorCommand for Command {
    const KIND: &'static str = "comfyui";
    const USAGE: &'static str = "submit a ComfyUI workflow to it";
    fn cancel(job_id: String) -> Self {
        Command::Cancel { job_id }
    }
    fn reconnect() -> Self {
        Command::Reconnect
    }
}

/// Reports from the actor's spawned tasks.
enum Internal {
    Submitted {
        prompt_id: String,
        result: Result<(SubmitOutcome, Option<u32>)>,
    },
    /// A finished job's fetch ended: the files saved so far, and the error that stopped it (with whether it
    /// was the link's, so worth another try).
    Finished {
        prompt_id: String,
        saved: Vec<(FileRef, OutputFile)>,
        error: Option<(Error, bool)>,
    },
    /// Time to fetch a finished job's results again.
    RetryFetch { prompt_id: String },
    CancelChecked {
        prompt_id: String,
        result: Result<CancelOutcome>,
    },
    Reconciled {
        prompt_id: String,
        /// The job's `sends` when the lookup began.
        sends: u32,
        result: Result<Found>,
    },
    /// The server's queue, read after it changed: where each of our queued jobs is now.
    Positions { result: Result<QueueView> },
    /// The server's queue, asked after a silence (is the socket still subscribed?).
    QueueChecked {
        /// The session and the count of messages heard when the question was asked.
        session: u64,
        heard: u64,
        result: Result<QueueView>,
    },
}

/// Where the server has a job, after a reconnect.
enum Found {
    Ended(Box<HistoryEntry>),
    Running,
    Queued(Option<u32>),
    Nowhere,
}

enum SessionEnd {
    Closed,
    Dropped(String),
    /// `hub.reconnect()`: connect again at once.
    Reconnect,
}

/// How a wait between connection attempts ended.
enum Wake {
    Timer,
    Reconnect,
    Closed,
}

/// Why a connection attempt failed: HTTP works but the WebSocket does not (a proxy without upgrade support, a
/// blocked port) is followed over HTTP instead of waited out.
enum ConnectError {
    Http(crate::error::Error),
    WebSocket(crate::error::Error),
}

/// A session shorter than this counts as a failed attempt for the circuit breaker (accept-then-close).
const SHORT_SESSION: Duration = Duration::from_secs(2);

/// With jobs in flight and nothing heard for this many heartbeats, the server's queue is checked: a socket can be
/// open but deaf (ComfyUI's duplicate-clientId race unregisters it), and then no message of our jobs arrives.
const SILENCE_HEARTBEATS: u32 = 3;
/// At most this many frames are read in one turn of a session's loop before its other duties get a look.
const FRAMES_PER_TURN: usize = 256;

/// A finished job's results are fetched again this many times after link failures before the job fails.
const MAX_FETCH_FAILURES: u32 = 8;
/// The first pause before fetching again while the link looks up (doubled each time, up to 16×).
const FETCH_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Marks an error of a result fetch as the link's (worth another try) or not. A body that broke off mid-download
/// is the link's too.
fn link_error(e: Error, downloading: bool) -> (Error, bool) {
    let link = matches!(e.code, ErrorCode::ConnectionFailed | ErrorCode::Timeout)
        || (downloading && matches!(e.code, ErrorCode::Protocol));
    (e, link)
}

pub struct ComfyService {
    name: String,
    http: ComfyHttp,
    token: Option<String>,
    shared: Arc<Shared>,
    status: Arc<ServiceStatus>,
    config: ComfyConfig,
    client_id: String,
    router: JobRouter,
    commands: mpsc::UnboundedReceiver<Command>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    connected: bool,
    /// Counts WebSocket sessions: a POST answered in a later session than it was sent in may follow messages
    /// that went to no socket.
    sessions: u64,
    /// Prompts waiting to be POSTed, in submission order; one POST is in flight at a time.
    submit_queue: std::collections::VecDeque<String>,
    submit_in_flight: bool,
    /// Following jobs over HTTP because the WebSocket cannot be opened.
    polling: bool,
    /// Prompt ids with a reconcile request in flight (polling must not pile requests up).
    checking: std::collections::HashSet<String>,
    /// Text and binary messages heard on the current socket.
    heard: u64,
    /// A queue check (after a silence) is in flight.
    queue_check: bool,
    /// A queue check found our jobs moved on while the socket said nothing: it is deaf; connect again.
    deaf: bool,
    /// A read of the queue for our jobs' places is in flight / the queue changed again meanwhile.
    positions_in_flight: bool,
    positions_stale: bool,
    /// Events of the burst being read, handed to the queue together when it ends (`flush_emits`).
    outbox: Vec<EventKind>,
    /// A burst is being read: `apply` leaves its events in `outbox`.
    batching: bool,
    /// The effects of one message (kept: no vector per message).
    effects: Vec<Effect>,
}

impl ComfyService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        http: ComfyHttp,
        token: Option<String>,
        shared: Arc<Shared>,
        status: Arc<ServiceStatus>,
        config: ComfyConfig,
        client_id: String,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> ComfyService {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let pool_name = config.pool.clone();
        ComfyService {
            name: name.to_string(),
            http,
            token,
            shared,
            status,
            config,
            client_id,
            router: JobRouter::new(pool_name.as_deref().unwrap_or(name)),
            commands,
            internal_tx,
            internal_rx,
            connected: false,
            sessions: 0,
            submit_queue: std::collections::VecDeque::new(),
            submit_in_flight: false,
            polling: false,
            checking: std::collections::HashSet::new(),
            heard: 0,
            queue_check: false,
            deaf: false,
            positions_in_flight: false,
            positions_stale: false,
            outbox: Vec::new(),
            batching: false,
            effects: Vec::new(),
        }
    }

    pub async fn run(mut self) {
        let seed = self
            .client_id
            .bytes()
            .fold(0x9e37_79b9_7f4a_7c15u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        let mut backoff = Backoff::new(self.config.backoff.clone(), seed);
        let mut breaker = CircuitBreaker::new(self.config.breaker.clone());
        let mut ever_connected = false;
        // Why jobs are followed over HTTP, said again after a circuit-open wait while polling.
        let mut polling_reason: Option<String> = None;
        loop {
            // Any wait is over: one step sets what happens now and clears `next_attempt_at`, so a `circuit_open`
            // never outlives its wait (it did while polling: the state stayed through the next attempt).
            let (state, reason) = if self.polling {
                (ServiceState::Polling, polling_reason.clone())
            } else if ever_connected {
                (ServiceState::Reconnecting, self.status.snapshot().last_error)
            } else {
                (ServiceState::Connecting, None)
            };
            self.status.set_state(&self.shared, state, reason);
            let mut reconnect_now = false;
            self.status.count_attempt();
            match self.connect().await {
                Ok(socket) => {
                    ever_connected = true;
                    self.polling = false;
                    let began = Instant::now();
                    backoff.on_connected(began);
                    let end = self.session(socket).await;
                    let now = Instant::now();
                    backoff.on_disconnected(now);
                    self.connected = false;
                    self.router.mark_disconnected();
                    if now.duration_since(began) < SHORT_SESSION {
                        breaker.record_failure(now);
                    } else {
                        breaker.record_success();
                    }
                    match end {
                        SessionEnd::Closed => break,
                        SessionEnd::Reconnect => reconnect_now = true,
                        SessionEnd::Dropped(why) => log::warn!("{}: connection lost: {why}", self.name),
                    }
                }
                Err(ConnectError::WebSocket(e)) => {
                    // HTTP answers, so jobs can still be followed by polling while the socket is retried.
                    log::info!("{}: WebSocket unavailable, following jobs over HTTP: {e}", self.name);
                    self.status.record_failure(&e.message);
                    breaker.record_failure(Instant::now());
                    if !self.polling {
                        self.polling = true;
                        self.resync();
                    }
                    let reason = format!("{}; following jobs over HTTP until the WebSocket works", e.message);
                    polling_reason = Some(reason.clone());
                    self.status.set_state(&self.shared, ServiceState::Polling, Some(reason));
                }
                Err(ConnectError::Http(e)) => {
                    log::info!("{}: cannot connect: {e}", self.name);
                    self.polling = false;
                    self.status.record_failure(&e.message);
                    breaker.record_failure(Instant::now());
                    let state = if ever_connected {
                        ServiceState::Reconnecting
                    } else {
                        ServiceState::Disconnected
                    };
                    self.status.set_state(&self.shared, state, Some(e.message.clone()));
                }
            }
            let now = Instant::now();
            let delay = if reconnect_now {
                Duration::ZERO
            } else if let Some(until) = breaker.open_until(now) {
                let wait = until.duration_since(now);
                let last = self.status.snapshot().last_error.unwrap_or_default();
                // The state and its next try in one step: a reader woken by the event must see both.
                self.status.set_state_until(
                    &self.shared,
                    ServiceState::CircuitOpen,
                    Some(format!(
                        "the server keeps failing or dropping us ({} times within a minute; last: {last}); \
                         next try in {:.0} s, or reconnect now",
                        breaker.recent_failures(),
                        wait.as_secs_f64()
                    )),
                    Some(wait),
                );
                wait
            } else {
                let delay = backoff.next_delay();
                self.status.set_next_attempt((!delay.is_zero()).then_some(delay));
                delay
            };
            match self.wait_offline(delay).await {
                Wake::Closed => break,
                Wake::Reconnect => {
                    breaker.reset();
                    backoff.reset();
                }
                Wake::Timer => {}
            }
        }
        self.status.set_state(&self.shared, ServiceState::Closed, None);
    }

    async fn connect(&mut self) -> Result<Socket, ConnectError> {
        let stats = self.http.system_stats().await.map_err(ConnectError::Http)?;
        self.status.set_version(stats.version, stats.devices);
        ws::open(
            self.http.endpoint(),
            &self.client_id,
            self.token.as_deref(),
            self.config.connect_timeout,
        )
        .await
        .map_err(ConnectError::WebSocket)
    }

    /// Serves commands and task reports while disconnected (polling jobs over HTTP in polling mode).
    async fn wait_offline(&mut self, delay: Duration) -> Wake {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        let mut poll = tokio::time::interval(self.config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut sleep => return Wake::Timer,
                cmd = self.commands.recv() => match cmd {
                    None => return Wake::Closed,
                    Some(Command::Reconnect) => return Wake::Reconnect,
                    Some(cmd) => self.on_command(cmd),
                },
                Some(report) = self.internal_rx.recv() => self.on_internal(report),
                _ = poll.tick(), if self.polling => self.poll_jobs(false),
            }
        }
    }

    /// Polling mode: ask the server about every job we follow (one request chain per job at a time).
    fn poll_jobs(&mut self, only_foreign: bool) {
        for prompt_id in self.router.prompt_ids() {
            let Some(job) = self.router.get(&prompt_id) else {
                continue;
            };
            let (phase, foreign) = (job.phase, job.foreign);
            if matches!(phase, Phase::Queued | Phase::Running)
                && (foreign || !only_foreign)
                && !self.checking.contains(&prompt_id)
            {
                self.reconcile(&prompt_id);
            }
        }
    }

    async fn session(&mut self, mut socket: Socket) -> SessionEnd {
        self.connected = true;
        self.sessions += 1;
        self.status.set_state(&self.shared, ServiceState::Connected, None);
        self.resync();
        let heartbeat = self.config.heartbeat;
        let mut ping = tokio::time::interval(heartbeat);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let mut poll = tokio::time::interval(self.config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_rx = Instant::now();
        // When a job message was last heard, or the queue last checked because none was.
        let mut last_heard = last_rx;
        let silence = heartbeat * SILENCE_HEARTBEATS;
        self.deaf = false;
        // One ping in flight at a time: its payload is a counter, so a late pong is not mistaken for a new one.
        let mut ping_seq: u64 = 0;
        let mut ping_sent: Option<(u64, Instant)> = None;
        let end = loop {
            tokio::select! {
                msg = socket.next() => {
                    // A burst is read in one turn of the loop (frames already buffered or on the socket), and its
                    // events are handed to the queue together: one lock and at most one wake-up per burst.
                    let mut next = Some(msg);
                    let mut ended = None;
                    let (mut read, mut heard) = (0, 0);
                    self.batching = true;
                    while let Some(msg) = next.take() {
                        let now = Instant::now();
                        last_rx = now;
                        match self.on_frame(msg, now, &mut ping_sent) {
                            Ok(true) => {
                                last_heard = now;
                                heard += 1;
                            }
                            Ok(false) => {}
                            Err(end) => {
                                ended = Some(end);
                                break;
                            }
                        }
                        read += 1;
                        if read < FRAMES_PER_TURN {
                            next = socket.next().now_or_never();
                        }
                    }
                    self.batching = false;
                    self.flush_emits();
                    self.heard += heard;
                    self.status.count_messages(heard);
                    if let Some(end) = ended {
                        break end;
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    None => break SessionEnd::Closed,
                    Some(Command::Reconnect) => break SessionEnd::Reconnect,
                    Some(cmd) => self.on_command(cmd),
                },
                Some(report) = self.internal_rx.recv() => {
                    self.on_internal(report);
                    if std::mem::take(&mut self.deaf) {
                        break SessionEnd::Dropped(
                            "the server stopped sending messages about our jobs (the socket lost its registration); \
                             connecting again".into(),
                        );
                    }
                }
                _ = poll.tick(), if !self.router.is_empty() => {
                    if self.router.has_foreign() {
                        self.poll_jobs(true);
                    }
                    if last_heard.elapsed() >= silence && !self.queue_check && self.router.has_open_jobs() {
                        last_heard = Instant::now();
                        self.check_queue();
                    }
                }
                _ = ping.tick() => {
                    // The previous ping got no pong within an interval and nothing else arrived: the peer is gone
                    // (or stalled with TCP open). Detected within two intervals.
                    if ping_sent.is_some() && last_rx.elapsed() >= heartbeat {
                        break SessionEnd::Dropped(format!(
                            "the server stopped answering (nothing for {:.0} s); it may be stalled", last_rx.elapsed().as_secs_f64()));
                    }
                    ping_seq += 1;
                    ping_sent = Some((ping_seq, Instant::now()));
                    if socket.send(Message::Ping(ping_seq.to_be_bytes().to_vec().into())).await.is_err() {
                        break SessionEnd::Dropped("the connection broke while pinging".into());
                    }
                }
            }
        };
        if let SessionEnd::Dropped(why) = &end {
            // Say so now: closing a dead or stalled peer's socket can take the whole close timeout.
            self.connected = false;
            self.status.record_drop(why);
            self.status
                .set_state(&self.shared, ServiceState::Reconnecting, Some(why.clone()));
        }
        ws::close_and_wait(socket).await;
        end
    }

    /// One frame from the socket: Ok(true) if it was a message (text or binary; the caller counts them), Err when
    /// the session is over.
    fn on_frame(
        &mut self,
        msg: Option<std::result::Result<Message, tokio_tungstenite::tungstenite::Error>>,
        now: Instant,
        ping_sent: &mut Option<(u64, Instant)>,
    ) -> std::result::Result<bool, SessionEnd> {
        match msg {
            Some(Ok(Message::Text(text))) => {
                match ServerMessage::parse(text.as_str()) {
                    Ok(m) => {
                        let mut effects = std::mem::take(&mut self.effects);
                        self.router.read_message(m, now, &mut effects);
                        self.apply(effects.drain(..));
                        self.effects = effects;
                    }
                    Err(e) => log::debug!("{}: skipped a message: {}", self.name, e.0),
                }
                Ok(true)
            }
            Some(Ok(Message::Binary(data))) => {
                match BinaryFrame::parse(data) {
                    Ok(frame) => {
                        let effects = self.router.on_binary(frame, now);
                        self.apply(effects);
                    }
                    Err(e) => log::debug!("{}: skipped a binary frame: {}", self.name, e.0),
                }
                Ok(true)
            }
            Some(Ok(Message::Close(frame))) => {
                let why = frame
                    .map(|f| format!("the server closed the connection ({} {})", f.code, f.reason))
                    .unwrap_or_else(|| "the server closed the connection".into());
                Err(SessionEnd::Dropped(why))
            }
            Some(Ok(Message::Pong(payload))) => {
                if let Some((seq, at)) = *ping_sent {
                    if payload.as_ref() == seq.to_be_bytes() {
                        self.status.record_rtt(at.elapsed());
                        *ping_sent = None;
                    }
                }
                Ok(false)
            }
            Some(Ok(_)) => Ok(false),
            Some(Err(e)) => Err(SessionEnd::Dropped(crate::net::ws::describe_read_error(&e))),
            None => Err(SessionEnd::Dropped("the connection ended".into())),
        }
    }

    /// Hands the events held back during a burst to the queue, in order, under one lock.
    fn flush_emits(&mut self) {
        if !self.outbox.is_empty() {
            self.shared.emit_all_from(self.config.actor_id, self.outbox.drain(..));
        }
    }

    fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = Internal> + Send + 'static,
    {
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(fut.await);
        });
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit {
                job_id,
                prompt,
                group,
                prompt_id,
            } => {
                let mut job = ActiveJob::new(&job_id, prompt, &group, Instant::now());
                if let Some(id) = prompt_id {
                    job.prompt_id = id;
                }
                let key = job.prompt_id.clone();
                self.router.track(job);
                if self.connected || self.polling {
                    self.send_prompt(&key);
                } else {
                    self.shared.emit_from(
                        self.config.actor_id,
                        EventKind::JobQueued {
                            job_id,
                            service: self.router.service().to_string(),
                            position: None,
                            pending_connection: true,
                            node_errors: Vec::new(),
                        },
                    );
                }
            }
            Command::Cancel { job_id } => self.cancel(&job_id),
            Command::Track { job_id, group } => {
                let mut job = ActiveJob::new(&job_id, Arc::new(Value::Null), &group, Instant::now());
                // Known to have been posted: its fate is asked of the server, never posted again.
                job.phase = Phase::Queued;
                job.needs_history = true;
                job.foreign = true;
                self.router.track(job);
                if self.connected || self.polling {
                    self.reconcile(&job_id);
                }
            }
            Command::Reconnect => {}
        }
    }

    /// Queues a prompt for POST. Prompts are posted one at a time, in submission order, so the server queues
    /// them in the order the user submitted them.
    fn send_prompt(&mut self, prompt_id: &str) {
        let Some(job) = self.router.get_mut(prompt_id) else {
            return;
        };
        job.phase = Phase::Submitting;
        if !self.submit_queue.iter().any(|p| p == prompt_id) {
            self.submit_queue.push_back(prompt_id.to_string());
        }
        self.pump_submissions();
    }

    fn pump_submissions(&mut self) {
        let session = self.sessions;
        while !self.submit_in_flight {
            let Some(id) = self.submit_queue.pop_front() else {
                return;
            };
            let Some(job) = self.router.get_mut(&id) else { continue };
            if job.phase != Phase::Submitting {
                continue;
            }
            if job.cancel_requested && !job.maybe_sent {
                if let Some(job) = self.router.remove(&id) {
                    self.shared
                        .emit_from(self.config.actor_id, EventKind::JobCancelled { job_id: job.job_id });
                }
                continue;
            }
            // The hub may have taken the job back (moved to a new address, or ended): then it is not ours to post.
            if !self.shared.claim_post(&job.job_id, self.config.actor_id) {
                self.router.remove(&id);
                continue;
            }
            job.maybe_sent = true;
            job.posted_in = session;
            job.sends += 1;
            let prompt = job.prompt.clone();
            let http = self.http.clone();
            let client_id = self.client_id.clone();
            let want_position = self.router.len() <= 64;
            self.submit_in_flight = true;
            self.spawn(async move {
                let result = async {
                    let outcome = http.submit(&prompt, &id, &client_id).await?;
                    let position = match (&outcome, want_position) {
                        (SubmitOutcome::Accepted { prompt_id, .. }, true) => {
                            http.queue().await.ok().and_then(|q| q.position(prompt_id))
                        }
                        _ => None,
                    };
                    Ok((outcome, position))
                }
                .await;
                Internal::Submitted { prompt_id: id, result }
            });
        }
    }

    fn cancel(&mut self, job_id: &str) {
        let Some(job) = self.router.find_by_job(job_id) else {
            return;
        };
        let prompt_id = job.prompt_id.clone();
        match job.phase {
            Phase::Pending if !job.maybe_sent => {
                if let Some(job) = self.router.remove(&prompt_id) {
                    self.shared
                        .emit_from(self.config.actor_id, EventKind::JobCancelled { job_id: job.job_id });
                }
            }
            Phase::Finishing => {}
            _ => {
                let submitting = job.phase == Phase::Submitting || job.phase == Phase::Pending;
                if let Some(job) = self.router.get_mut(&prompt_id) {
                    job.cancel_requested = true;
                }
                // A prompt whose POST is still out is cancelled when its answer arrives.
                if !submitting && (self.connected || self.polling) {
                    self.check_cancel(&prompt_id);
                }
            }
        }
    }

    /// After a silence with jobs in flight: one look at the server's queue says whether they moved on unheard.
    fn check_queue(&mut self) {
        self.queue_check = true;
        let (session, heard, http) = (self.sessions, self.heard, self.http.clone());
        self.spawn(async move {
            let result = http.queue().await;
            Internal::QueueChecked { session, heard, result }
        });
    }

    /// The queue as the server sees it against what we heard: a job that started or ended without a word to us
    /// is looked up over HTTP, and if nothing at all was heard meanwhile, the socket is deaf (reconnect).
    fn on_queue_checked(&mut self, session: u64, heard: u64, queue: QueueView) {
        if session != self.sessions || !self.connected {
            return;
        }
        let mut unheard = false;
        for prompt_id in self.router.prompt_ids() {
            let Some(job) = self.router.get(&prompt_id) else {
                continue;
            };
            if job.foreign || self.checking.contains(&prompt_id) {
                continue;
            }
            let as_we_know = match job.phase {
                Phase::Queued => queue.position(&prompt_id).is_some(),
                Phase::Running => queue.running.iter().any(|p| p == &prompt_id),
                _ => true,
            };
            if !as_we_know {
                unheard = true;
                self.reconcile(&prompt_id);
            }
        }
        if unheard && self.heard == heard {
            log::warn!(
                "{}: jobs moved on at the server without a message to us: the socket is deaf",
                self.name
            );
            self.deaf = true;
        }
    }

    /// The queue moved (a job started, ended or was added): our queued jobs' places are read again, so
    /// `job().info()`, `snapshot()` and the studio server show "2nd in line" as it is now, not where the job
    /// started. One read at a time; a change meanwhile asks for one more. No event: a place is not a lifecycle
    /// step, and it changes for every queued job at once.
    fn refresh_positions(&mut self) {
        let any_queued = self.router.prompt_ids().iter().any(|id| {
            self.router
                .get(id)
                .is_some_and(|j| j.phase == Phase::Queued && !j.foreign)
        });
        if !any_queued || !self.connected {
            return;
        }
        if self.positions_in_flight {
            self.positions_stale = true;
            return;
        }
        self.positions_in_flight = true;
        let http = self.http.clone();
        self.spawn(async move {
            let result = http.queue().await;
            Internal::Positions { result }
        });
    }

    fn on_positions(&mut self, queue: QueueView) {
        let mut places = Vec::new();
        for prompt_id in self.router.prompt_ids() {
            let Some(job) = self.router.get(&prompt_id) else {
                continue;
            };
            if job.phase == Phase::Queued && !job.foreign {
                if let Some(place) = queue.position(&prompt_id) {
                    places.push((job.job_id.clone(), place));
                }
            }
        }
        self.shared.set_queue_positions(&places);
    }

    /// Finds where the job is and removes or interrupts only that job (never a global interrupt or clear).
    fn check_cancel(&self, prompt_id: &str) {
        let http = self.http.clone();
        let id = prompt_id.to_string();
        self.spawn(async move {
            let result = http.cancel_prompt(&id).await;
            Internal::CancelChecked { prompt_id: id, result }
        });
    }

    /// After (re)connecting: send what waited for a connection and ask the server about everything else.
    fn resync(&mut self) {
        for prompt_id in self.router.prompt_ids() {
            let Some(job) = self.router.get(&prompt_id) else {
                continue;
            };
            match job.phase {
                Phase::Pending if !job.maybe_sent => self.send_prompt(&prompt_id),
                Phase::Pending | Phase::Queued | Phase::Running => self.reconcile(&prompt_id),
                // Results that could not be fetched while the link was down.
                Phase::Finishing => self.retry_fetch(&prompt_id),
                Phase::Submitting => {}
            }
        }
    }

    fn reconcile(&mut self, prompt_id: &str) {
        let sends = self.router.get(prompt_id).map_or(0, |j| j.sends);
        self.checking.insert(prompt_id.to_string());
        let http = self.http.clone();
        let id = prompt_id.to_string();
        self.spawn(async move {
            let result = async {
                if let Some(entry) = http.history(&id).await? {
                    return Ok(Found::Ended(Box::new(entry)));
                }
                let q: QueueView = http.queue().await?;
                if q.running.iter().any(|p| p == &id) {
                    return Ok(Found::Running);
                }
                if let Some(pos) = q.position(&id) {
                    return Ok(Found::Queued(Some(pos)));
                }
                // It may have finished between the two looks.
                match http.history(&id).await? {
                    Some(entry) => Ok(Found::Ended(Box::new(entry))),
                    None => Ok(Found::Nowhere),
                }
            }
            .await;
            Internal::Reconciled {
                prompt_id: id,
                sends,
                result,
            }
        });
    }

    fn apply(&mut self, effects: impl IntoIterator<Item = Effect>) {
        for effect in effects {
            if let Effect::Emit(kind) = effect {
                self.outbox.push(kind);
                continue;
            }
            // Whatever else an effect does comes after the events before it.
            self.flush_emits();
            match effect {
                Effect::Emit(_) => {}
                Effect::QueueRemaining(n) => {
                    if self.status.set_queue(n) {
                        self.shared.emit_from(
                            self.config.actor_id,
                            EventKind::QueueChanged {
                                service: self.name.clone(),
                                queue_remaining: n,
                            },
                        );
                        self.refresh_positions();
                    }
                }
                Effect::Finish {
                    prompt_id,
                    refs,
                    from_history,
                } => self.finish(&prompt_id, refs, from_history),
                Effect::Forget { .. } => {}
            }
        }
        if !self.batching {
            self.flush_emits();
        }
    }

    fn finish(&mut self, prompt_id: &str, refs: Vec<FileRef>, from_history: bool) {
        let Some(job) = self.router.get_mut(prompt_id) else {
            return;
        };
        if job.fetch.as_ref().is_some_and(|f| f.in_flight) {
            // Already being fetched (the socket and a reconcile can both report the end).
            return;
        }
        let dir = job_dir(&self.config.output_dir, &job.group, &job.job_id);
        let http = self.http.clone();
        let id = prompt_id.to_string();
        let (job_id, group, prompt) = (job.job_id.clone(), job.group.clone(), job.prompt.clone());
        let submitted_at = crate::event::now_epoch() - job.submitted.elapsed().as_secs_f64();
        // Without missed messages the files they named are all there is (decided at the first fetch: a drop
        // while fetching does not make the messages incomplete).
        let complete = !job.needs_history;
        let fetch = job.fetch.get_or_insert_with(|| Fetch {
            refs_complete: complete,
            ..Fetch::default()
        });
        let refs_complete = fetch.refs_complete;
        fetch.refs.clone_from(&refs);
        fetch.from_history = from_history;
        fetch.in_flight = true;
        let mut saved = fetch.saved.clone();
        let (service, token) = (self.name.clone(), self.token.clone().unwrap_or_default());
        self.spawn(async move {
            // Errors of the link (not of the disk or the data) may be retried: the results are still there.
            let error = async {
                let refs = if from_history {
                    match http.history(&id).await.map_err(|e| link_error(e, false))? {
                        Some(entry) => entry
                            .outputs
                            .iter()
                            .flat_map(|(node, ui)| file_refs(node, ui))
                            .collect(),
                        // Messages were missed and the server no longer knows: the files cannot be named.
                        None if !refs_complete && refs.is_empty() && saved.is_empty() => {
                            let e = Error::new(
                                ErrorCode::ServerRestarted,
                                "the server no longer knows which files the job wrote (it was restarted or its \
                                 history was cleared); submit it again to re-run it",
                            );
                            return Err((e, false));
                        }
                        None => refs,
                    }
                } else {
                    refs
                };
                // One file at a time, so that a retry fetches only what is missing.
                for r in refs {
                    if saved.iter().any(|(done, _)| *done == r) {
                        continue;
                    }
                    let mut got = download_all(&http, &dir, std::slice::from_ref(&r))
                        .await
                        .map_err(|e| link_error(e, true))?;
                    if let Some(file) = got.pop() {
                        saved.push((r, file));
                    }
                }
                let files: Vec<OutputFile> = saved.iter().map(|(_, f)| f.clone()).collect();
                Manifest::new(
                    "comfyui",
                    &service,
                    &job_id,
                    &group,
                    http.endpoint().base(),
                    submitted_at,
                )
                .with("prompt_id", id.as_str())
                .with("workflow", (*prompt).clone())
                .files(&dir, &files)
                .write(&dir, &[&token])
                .await
                .map_err(|e| (e, false))?;
                Ok(())
            }
            .await
            .err();
            Internal::Finished {
                prompt_id: id,
                saved,
                error,
            }
        });
    }

    /// Fetches a finished job's results again (after a link failure), unless a fetch is already running.
    fn retry_fetch(&mut self, prompt_id: &str) {
        let Some(fetch) = self.router.get(prompt_id).and_then(|j| j.fetch.as_ref()) else {
            return;
        };
        if !fetch.in_flight {
            let (refs, from_history) = (fetch.refs.clone(), fetch.from_history);
            self.finish(prompt_id, refs, from_history);
        }
    }

    fn on_submitted(&mut self, prompt_id: String, result: Result<(SubmitOutcome, Option<u32>)>, now: Instant) {
        match result {
            Ok((
                SubmitOutcome::Accepted {
                    prompt_id: theirs,
                    problems,
                },
                position,
            )) => {
                // Key first (no replay yet), announce JobQueued, then route what the server said meanwhile.
                self.router.move_job(&prompt_id, &theirs);
                let cancel = self.router.get(&theirs).is_some_and(|j| j.cancel_requested);
                if let Some(ev) = self.router.announce_queued(&theirs, position, problems) {
                    self.shared.emit_from(self.config.actor_id, ev);
                }
                let effects = self.router.replay_held(now);
                self.apply(effects);
                if cancel {
                    self.check_cancel(&theirs);
                } else if self.connected && self.router.get(&theirs).is_some_and(|j| j.posted_in != self.sessions) {
                    // The socket was replaced while the POST waited for its answer: the reconnect's resync skipped
                    // the job (still submitting) and its messages may have gone to no socket. Ask the server.
                    self.reconcile(&theirs);
                }
            }
            Ok((SubmitOutcome::Rejected(error), _)) => {
                if let Some(job) = self.router.remove(&prompt_id) {
                    self.shared
                        .fail_job_from(self.config.actor_id, &self.name, &job.job_id, error);
                }
                // The stream may have paused for this answer: let what it held go on, or it stays paused.
                let effects = self.router.replay_held(now);
                self.apply(effects);
            }
            Err(e) => {
                let never_sent = e.is_connect();
                if let Some(job) = self.router.get_mut(&prompt_id) {
                    job.phase = Phase::Pending;
                    job.maybe_sent = !never_sent;
                    if never_sent {
                        self.shared.unclaim_post(&job.job_id, self.config.actor_id);
                    }
                }
                // Anything the server already said about it proves it arrived.
                let effects = self.router.replay_held(now);
                self.apply(effects);
                log::info!(
                    "{}: submission not confirmed ({e}); will check after reconnecting",
                    self.name
                );
                if self.connected || self.polling {
                    self.reconcile(&prompt_id);
                }
            }
        }
    }

    fn on_internal(&mut self, report: Internal) {
        let now = Instant::now();
        match report {
            Internal::Submitted { prompt_id, result } => {
                self.submit_in_flight = false;
                self.on_submitted(prompt_id, result, now);
                self.pump_submissions();
            }
            Internal::Finished {
                prompt_id,
                saved,
                error,
            } => {
                if let (Some((e, true)), Some(job)) = (&error, self.router.get_mut(&prompt_id)) {
                    let fetch = job.fetch.get_or_insert_with(Fetch::default);
                    fetch.in_flight = false;
                    fetch.failures += 1;
                    fetch.saved.clone_from(&saved);
                    let failures = fetch.failures;
                    if failures <= MAX_FETCH_FAILURES {
                        // The job ran; its files wait on the server. Fetch them when the link is back (the next
                        // session's resync), or after a pause if the link looks fine.
                        log::info!(
                            "{}: results of {prompt_id} not fetched yet ({e}); trying again",
                            self.name
                        );
                        if self.connected || self.polling {
                            let pause = FETCH_RETRY_PAUSE * 2u32.pow(failures.min(5) - 1);
                            let id = prompt_id.clone();
                            self.spawn(async move {
                                tokio::time::sleep(pause).await;
                                Internal::RetryFetch { prompt_id: id }
                            });
                        }
                        return;
                    }
                }
                let Some(job) = self.router.remove(&prompt_id) else {
                    return;
                };
                match error.map(|(e, _)| e).map_or(Ok(saved), Err) {
                    Ok(saved) => {
                        let outputs = saved.into_iter().map(|(_, f)| f).collect();
                        let ui = Value::Object(job.ui.into_iter().collect::<Map<_, _>>());
                        let elapsed_seconds = job.submitted.elapsed().as_secs_f64();
                        self.shared.emit_from(
                            self.config.actor_id,
                            EventKind::JobCompleted {
                                job_id: job.job_id,
                                outputs,
                                ui,
                                elapsed_seconds,
                            },
                        );
                    }
                    Err(e) => {
                        let mut error = JobError::simple(
                            e.code(),
                            format!("the job finished on the server but its results could not be saved: {e}"),
                        );
                        error.exception_type = Some("OutputError".into());
                        self.shared
                            .fail_job_from(self.config.actor_id, &self.name, &job.job_id, error);
                    }
                }
            }
            Internal::Positions { result } => {
                self.positions_in_flight = false;
                match result {
                    Ok(queue) => self.on_positions(queue),
                    Err(e) => log::debug!("{}: could not read the queue for places: {e}", self.name),
                }
                if std::mem::take(&mut self.positions_stale) {
                    self.refresh_positions();
                }
            }
            Internal::QueueChecked { session, heard, result } => {
                self.queue_check = false;
                match result {
                    Ok(queue) => self.on_queue_checked(session, heard, queue),
                    Err(e) => log::info!("{}: could not look at the queue: {e}", self.name),
                }
            }
            Internal::RetryFetch { prompt_id } => {
                if self.connected || self.polling {
                    self.retry_fetch(&prompt_id);
                }
            }
            Internal::CancelChecked { prompt_id, result } => match result {
                Ok(CancelOutcome::Removed) => {
                    if let Some(job) = self.router.remove(&prompt_id) {
                        self.shared
                            .emit_from(self.config.actor_id, EventKind::JobCancelled { job_id: job.job_id });
                    }
                }
                Ok(CancelOutcome::Interrupting) => {}
                Ok(CancelOutcome::NotOnServer) => self.reconcile(&prompt_id),
                Err(e) => {
                    log::warn!("{}: cancel of {prompt_id} not confirmed: {e}", self.name);
                    self.status.record_error(&e.message);
                }
            },
            Internal::Reconciled {
                prompt_id,
                sends,
                result,
            } => {
                self.checking.remove(&prompt_id);
                let Some(job) = self.router.get(&prompt_id) else { return };
                // A lookup older than the latest POST is stale: "nowhere" then must not send or fail it again.
                if job.phase == Phase::Finishing || job.sends != sends {
                    return;
                }
                match result {
                    Ok(Found::Ended(entry)) => {
                        let effects = self.router.ended_in_history(&prompt_id, &entry, now);
                        self.apply(effects);
                    }
                    Ok(Found::Running) => {
                        if let Some(job) = self.router.get_mut(&prompt_id) {
                            job.maybe_sent = false;
                        }
                        // It may have started while we were not listening: announce what was missed.
                        let effects = self.router.seen_running(&prompt_id, now);
                        self.apply(effects);
                        if self.router.get(&prompt_id).is_some_and(|j| j.cancel_requested) {
                            self.check_cancel(&prompt_id);
                        }
                    }
                    Ok(Found::Queued(position)) => {
                        if let Some(job) = self.router.get_mut(&prompt_id) {
                            job.maybe_sent = false;
                            job.phase = Phase::Queued;
                        }
                        if let Some(ev) = self.router.announce_queued(&prompt_id, position, Vec::new()) {
                            self.shared.emit_from(self.config.actor_id, ev);
                        }
                        if self.router.get(&prompt_id).is_some_and(|j| j.cancel_requested) {
                            self.check_cancel(&prompt_id);
                        }
                    }
                    Ok(Found::Nowhere) => {
                        let was_pending = job.phase == Phase::Pending;
                        if was_pending && !job.cancel_requested {
                            // The lost POST never arrived: sending now is the first and only submission.
                            if let Some(job) = self.router.get_mut(&prompt_id) {
                                job.maybe_sent = false;
                            }
                            self.send_prompt(&prompt_id);
                        } else if self.config.resubmit_on_restart && !job.cancel_requested {
                            let fresh = uuid::Uuid::new_v4().to_string();
                            log::info!(
                                "{}: the server lost {prompt_id} (restart?); sending it again as {fresh}",
                                self.name
                            );
                            let effects = self.router.restart_as(&prompt_id, &fresh, now);
                            self.apply(effects);
                            self.send_prompt(&fresh);
                        } else if let Some(job) = self.router.remove(&prompt_id) {
                            if job.cancel_requested {
                                self.shared
                                    .emit_from(self.config.actor_id, EventKind::JobCancelled { job_id: job.job_id });
                            } else if !self.shared.is_posted(&job.job_id) {
                                // Tracked from an earlier session that never saw it reach the server.
                                self.shared.fail_job_from(
                                    self.config.actor_id,
                                    &self.name,
                                    &job.job_id,
                                    JobError::simple(
                                        ErrorCode::NotPosted.as_str(),
                                        "the server does not know this job, and it was never confirmed to have been \
                                         sent (it was still waiting for the server when the previous session \
                                         ended); submit it again",
                                    ),
                                );
                            } else {
                                self.shared.fail_job_from(
                                    self.config.actor_id,
                                    &self.name,
                                    &job.job_id,
                                    JobError::simple(
                                        ErrorCode::ServerRestarted.as_str(),
                                        "the server no longer knows this job (it was restarted or its queue was \
                                         cleared); submit it again to re-run it",
                                    ),
                                );
                            }
                        }
                    }
                    Err(e) => log::info!("{}: could not check job {prompt_id}: {e}", self.name),
                }
            }
        }
    }
}
