//! One actor task per Gradio app: reads `/config` (logging in when the token is `user:password`), then checks
//! `{api_root}/queue/status` (queue depth) and, on 4.x+, `{api_root}/app_id` every heartbeat, with backoff while
//! the app is down. A changed app_id means the app was restarted: jobs in flight fail `server_restarted`. Each call
//! runs in its own task over the protocol the config names (sse_v3 stream, 3.x WebSocket, or the sync route), and
//! calls share the service's session_hash unless they name their own, so `gr.State` carries over between them.
use super::http::GradioHttp;
use super::job::{Control, GradioCall, JobCtx, Outcome};
use super::protocol::{Config, Protocol};
use super::sse::{new_session_hash, Session};
use crate::error::Error;
use crate::error::ErrorCode;
use crate::event::{EventKind, ServiceState};
use crate::service::{BackoffPolicy, HealthRhythm, ServiceStatus};
use crate::tracker::Shared;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

/// Per-service settings.
#[derive(Debug, Clone)]
pub struct GradioOptions {
    pub heartbeat: Duration,
    pub backoff: BackoffPolicy,
    /// Longest silence on a queue stream before its jobs fail (heartbeats come every 15 s).
    pub idle: Duration,
    pub output_dir: PathBuf,
    /// How long a call waits for the app's first `/config` before it fails.
    pub connect_wait: Duration,
}

/// Silence allowed on a queue stream: three missed 15 s heartbeats.
pub const IDLE: Duration = Duration::from_secs(45);

#[derive(Debug, Clone)]
pub enum Command {
    Call {
        job_id: String,
        call: GradioCall,
        group: String,
    },
    Cancel {
        job_id: String,
    },
    Reconnect,
}

impl crate::service::ActorCommand for Command {
    const KIND: &'static str = "gradio";
    const USAGE: &'static str = "submit a GradioCall to it";
    fn cancel(job_id: String) -> Self {
        Command::Cancel { job_id }
    }
    fn reconnect() -> Self {
        Command::Reconnect
    }
}

/// What calls wait for.
#[derive(Debug, Clone)]
enum AppState {
    Unknown,
    Ready(Arc<Config>),
    /// Never reached yet; errors like a refused login fail waiting calls at once.
    Down(Error),
}

struct JobHandle {
    control: mpsc::UnboundedSender<Control>,
    abort: AbortHandle,
}

pub struct GradioService {
    name: String,
    http: GradioHttp,
    shared: Arc<Shared>,
    status: Arc<ServiceStatus>,
    options: GradioOptions,
    commands: mpsc::UnboundedReceiver<Command>,
    jobs: HashMap<String, JobHandle>,
    done_tx: mpsc::UnboundedSender<String>,
    done_rx: mpsc::UnboundedReceiver<String>,
    app: watch::Sender<AppState>,
    sessions: HashMap<String, Arc<Session>>,
    default_session: String,
    app_id: Option<u64>,
    protocol: Option<Protocol>,
}

impl GradioService {
    pub fn new(
        name: &str,
        http: GradioHttp,
        shared: Arc<Shared>,
        status: Arc<ServiceStatus>,
        options: GradioOptions,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> GradioService {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (app, _) = watch::channel(AppState::Unknown);
        GradioService {
            name: name.to_string(),
            http,
            shared,
            status,
            options,
            commands,
            jobs: HashMap::new(),
            done_tx,
            done_rx,
            app,
            sessions: HashMap::new(),
            default_session: new_session_hash(),
            app_id: None,
            protocol: None,
        }
    }

    pub async fn run(mut self) {
        let mut rhythm = HealthRhythm::new(&self.name, self.options.backoff.clone(), self.options.heartbeat);
        let mut need_config = true;
        self.status.set_state(&self.shared, ServiceState::Connecting, None);
        let mut next_check = tokio::time::Instant::now();
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None => break,
                    Some(Command::Call { job_id, call, group }) => self.start_job(job_id, call, group),
                    Some(Command::Cancel { job_id }) => self.cancel(&job_id),
                    Some(Command::Reconnect) => {
                        need_config = true;
                        next_check = tokio::time::Instant::now();
                    }
                },
                Some(done) = self.done_rx.recv() => {
                    self.jobs.remove(&done);
                }
                _ = tokio::time::sleep_until(next_check) => {
                    let checked = self.check(&mut need_config).await;
                    let wait = rhythm.after(&self.status, &self.shared, checked.as_ref().map(|()| None).map_err(|e| e.message.as_str()));
                    if let Err(e) = checked {
                        need_config = true;
                        if !rhythm.ever_up() {
                            self.app.send_replace(AppState::Down(e));
                        }
                    }
                    next_check = tokio::time::Instant::now() + wait;
                }
            }
        }
        // The service was removed: its unfinished calls end now rather than hang.
        for (job_id, handle) in self.jobs.drain() {
            handle.abort.abort();
            self.shared.emit(EventKind::JobCancelled { job_id });
        }
        for s in self.sessions.values() {
            s.shutdown();
        }
        self.status.set_state(&self.shared, ServiceState::Closed, None);
    }

    /// One health check: the config when it is not known (or after an outage), else app_id and queue depth.
    async fn check(&mut self, need_config: &mut bool) -> Result<(), Error> {
        if !*need_config && self.protocol.is_some_and(|p| matches!(p, Protocol::Sse { .. })) {
            if let Some(id) = self.http.app_id().await? {
                if self.app_id.is_some_and(|old| old != id) {
                    *need_config = true;
                }
            }
        }
        if *need_config {
            let config = self.http.config().await?;
            let new_id = config.app_id();
            if let (Some(old), Some(new)) = (self.app_id, new_id) {
                if old != new {
                    self.restarted(old, new);
                }
            }
            self.app_id = new_id.or(self.app_id);
            self.protocol = Some(config.protocol());
            log::info!(
                "{}: Gradio {} ({}), title {:?}, {} events",
                self.name,
                config.version,
                config.protocol_name(),
                config.title.as_deref().unwrap_or("Gradio"),
                config.dependencies.len()
            );
            let title = config.title.clone().unwrap_or_else(|| "Gradio".into());
            self.status.set_version(config.version.clone(), vec![title]);
            self.app.send_replace(AppState::Ready(Arc::new(config)));
            *need_config = false;
        }
        match self.http.queue_status().await {
            Ok(Some(n)) => {
                if self.status.set_queue(n) {
                    self.shared.emit(EventKind::QueueChanged {
                        service: self.name.clone(),
                        queue_remaining: n,
                    });
                }
            }
            Ok(None) => {}
            // An app without the route still answers: it is up.
            Err(e) if e.status().is_some() && e.code != ErrorCode::AuthFailed => {
                log::debug!("{}: queue/status: {}", self.name, e.message)
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    fn restarted(&mut self, old: u64, new: u64) {
        log::warn!("{}: the app was restarted (app_id {old} → {new})", self.name);
        let why =
            "the Gradio app was restarted (its app_id changed) while the job ran; the job is lost — submit it again";
        for h in self.jobs.values() {
            let _ = h.control.send(Control::Restarted(why.to_string()));
        }
        for s in self.sessions.values() {
            s.shutdown();
        }
        self.sessions.clear();
    }

    fn start_job(&mut self, job_id: String, call: GradioCall, group: String) {
        let hash = call
            .session_hash
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| self.default_session.clone());
        let (http, idle) = (self.http.clone(), self.options.idle);
        let session = self
            .sessions
            .entry(hash.clone())
            .or_insert_with(|| Session::new(hash.clone(), http, idle))
            .clone();
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let run = JobRun {
            shared: self.shared.clone(),
            service: self.name.clone(),
            job_id: job_id.clone(),
            http: self.http.clone(),
            app: self.app.subscribe(),
            options: self.options.clone(),
            group,
            session,
        };
        let done = self.done_tx.clone();
        let id = job_id.clone();
        let task = tokio::spawn(async move {
            run.run(call, control_rx).await;
            let _ = done.send(id);
        });
        self.jobs.insert(
            job_id,
            JobHandle {
                control: control_tx,
                abort: task.abort_handle(),
            },
        );
    }

    fn cancel(&mut self, job_id: &str) {
        if let Some(h) = self.jobs.get(job_id) {
            log::info!("{}: cancelling job {job_id}", self.name);
            let _ = h.control.send(Control::Cancel);
        }
    }
}

/// One call's task.
struct JobRun {
    shared: Arc<Shared>,
    service: String,
    job_id: String,
    http: GradioHttp,
    app: watch::Receiver<AppState>,
    options: GradioOptions,
    group: String,
    session: Arc<Session>,
}

impl JobRun {
    fn fail(&self, e: Error) {
        self.shared.fail_job(&self.service, &self.job_id, e.to_job_error());
    }

    /// The app's config, waiting (bounded) for the first successful `/config`.
    async fn config(&mut self, control: &mut mpsc::UnboundedReceiver<Control>) -> Result<Option<Arc<Config>>, Error> {
        let deadline = tokio::time::Instant::now() + self.options.connect_wait;
        let mut said_pending = false;
        loop {
            let state = self.app.borrow_and_update().clone();
            match state {
                AppState::Ready(c) => return Ok(Some(c)),
                AppState::Down(e) if matches!(e.code, ErrorCode::AuthFailed | ErrorCode::WrongService) => {
                    return Err(e)
                }
                AppState::Down(_) | AppState::Unknown => {}
            }
            if !said_pending {
                said_pending = true;
                self.shared.emit(EventKind::JobQueued {
                    job_id: self.job_id.clone(),
                    service: self.service.clone(),
                    position: None,
                    pending_connection: true,
                    node_errors: Vec::new(),
                });
            }
            tokio::select! {
                changed = self.app.changed() => if changed.is_err() {
                    return Err(Error::new(ErrorCode::Closed, "the service was removed"));
                },
                c = control.recv() => if matches!(c, Some(Control::Cancel) | None) {
                    return Ok(None);
                },
                _ = tokio::time::sleep_until(deadline) => {
                    let why = match self.app.borrow().clone() {
                        AppState::Down(e) => e.message,
                        _ => "no answer".into(),
                    };
                    return Err(Error::new(
                        ErrorCode::ConnectionFailed,
                        format!("the Gradio app at {} could not be reached within {:.0} s: {why}",
                            self.http.endpoint(), self.options.connect_wait.as_secs_f64()),
                    ));
                }
            }
        }
    }

    async fn run(mut self, call: GradioCall, mut control: mpsc::UnboundedReceiver<Control>) {
        let config = match self.config(&mut control).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return self.shared.emit(EventKind::JobCancelled {
                    job_id: self.job_id.clone(),
                })
            }
            Err(e) => return self.fail(e),
        };
        let endpoint = match config.resolve(call.api_name.as_deref(), call.fn_index) {
            Ok(e) => e,
            Err(why) => return self.fail(Error::new(ErrorCode::InvalidParameter, why)),
        };
        let protocol = if endpoint.queued {
            config.protocol()
        } else {
            Protocol::Sync
        };
        let legacy = protocol == Protocol::Ws || config.version.starts_with("3.");
        let mut data = endpoint.with_state_inputs(call.inputs.clone());
        if let Err(e) = super::files::upload_inputs(&self.http, &mut data, legacy).await {
            return self.fail(e);
        }
        let dir = crate::net::files::job_dir(&self.options.output_dir, &self.group, &self.job_id);
        let diffs = matches!(protocol, Protocol::Sse { diffs: true });
        let mut ctx = JobCtx::new(
            self.shared.clone(),
            self.service.clone(),
            self.job_id.clone(),
            self.http.clone(),
            config,
            endpoint,
            self.session.hash.clone(),
            dir,
            call,
            diffs,
        );
        let outcome: Outcome = match protocol {
            Protocol::Sse { .. } => super::sse::run(&mut ctx, &mut control, &self.session, data).await,
            Protocol::Ws => super::ws3::run(&mut ctx, &mut control, data, self.options.idle).await,
            Protocol::Sync => super::sync::run(&mut ctx, &mut control, data).await,
        };
        ctx.finish(outcome).await;
    }
}
