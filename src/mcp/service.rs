//! The actor for one WanGP MCP server: a health loop (`initialize` once, then `ping`, with backoff while down) and
//! one task per job that starts it with `wangp_generate`, follows it with `wangp_get_job` and brings its files
//! home through WanGP's one-use gallery download URLs.
use super::client::McpClient;
use super::wangp::{self, DownloadTicket, GenerationResult, JobSnapshot, ProgressUpdate};
use crate::error::{Error, ErrorCode};
use crate::event::{EventKind, JobError, OutputFile, ServiceState};
use crate::net::files::{job_dir, safe_component};
use crate::service::{BackoffPolicy, HealthRhythm, ServiceStatus};
use crate::tracker::Shared;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Health checks must not hang the actor when a server stalls.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A job whose server stays unreachable this long fails instead of waiting forever.
const UNREACHABLE_LIMIT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone)]
pub enum Command {
    Generate {
        job_id: String,
        source: Value,
        group: String,
    },
    Cancel {
        job_id: String,
    },
    Reconnect,
}

impl crate::service::ActorCommand for Command {
    const KIND: &'static str = "wangp_mcp";
    const USAGE: &'static str = "submit a WanGP settings dict to it";
    fn cancel(job_id: String) -> Self {
        Command::Cancel { job_id }
    }
    fn reconnect() -> Self {
        Command::Reconnect
    }
}

#[derive(Clone)]
pub struct WanGpConfig {
    pub heartbeat: Duration,
    pub backoff: BackoffPolicy,
    pub poll_interval: Duration,
    pub output_dir: PathBuf,
}

struct JobHandle {
    task: tokio::task::AbortHandle,
    cancel: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
}

pub struct WanGpService {
    name: String,
    client: McpClient,
    shared: Arc<Shared>,
    status: Arc<ServiceStatus>,
    config: WanGpConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    jobs: HashMap<String, JobHandle>,
    done_tx: mpsc::UnboundedSender<String>,
    done_rx: mpsc::UnboundedReceiver<String>,
}

impl WanGpService {
    pub fn new(
        name: &str,
        client: McpClient,
        shared: Arc<Shared>,
        status: Arc<ServiceStatus>,
        config: WanGpConfig,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> WanGpService {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        WanGpService {
            name: name.to_string(),
            client,
            shared,
            status,
            config,
            commands,
            jobs: HashMap::new(),
            done_tx,
            done_rx,
        }
    }

    pub async fn run(mut self) {
        let mut rhythm = HealthRhythm::new(&self.name, self.config.backoff.clone(), self.config.heartbeat);
        let mut introduced = false;
        self.status.set_state(&self.shared, ServiceState::Connecting, None);
        let mut next_check = tokio::time::Instant::now();
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None => break,
                    Some(Command::Generate { job_id, source, group }) => self.start_job(job_id, source, group),
                    Some(Command::Cancel { job_id }) => self.cancel(&job_id),
                    Some(Command::Reconnect) => next_check = tokio::time::Instant::now(),
                },
                Some(done) = self.done_rx.recv() => {
                    self.jobs.remove(&done);
                }
                _ = tokio::time::sleep_until(next_check) => {
                    let started = Instant::now();
                    let checked = if introduced {
                        self.client.ping(PROBE_TIMEOUT).await
                    } else {
                        self.client.initialize(PROBE_TIMEOUT).await.map(|info| {
                            if info.name != "WanGP" {
                                log::warn!("{}: the MCP server calls itself {:?}, not WanGP", self.name, info.name);
                            }
                            self.status.set_version(format!("{} (MCP {})", info.name, info.version), Vec::new());
                        })
                    };
                    // A restarted server is introduced to again.
                    introduced = checked.is_ok();
                    let outcome = match &checked {
                        Ok(()) => Ok(Some(started.elapsed())),
                        Err(e) => Err(e.message.as_str()),
                    };
                    let wait = rhythm.after(&self.status, &self.shared, outcome);
                    next_check = tokio::time::Instant::now() + wait;
                }
            }
        }
        // The service was removed: its unfinished jobs end now rather than hang.
        for (job_id, handle) in self.jobs.drain() {
            handle.task.abort();
            self.shared.emit(EventKind::JobCancelled { job_id });
        }
        self.status.set_state(&self.shared, ServiceState::Closed, None);
    }

    fn start_job(&mut self, job_id: String, source: Value, group: String) {
        let cancel = Arc::new(AtomicBool::new(false));
        let wake = Arc::new(tokio::sync::Notify::new());
        let run = JobRun {
            client: self.client.clone(),
            shared: self.shared.clone(),
            service: self.name.clone(),
            job_id: job_id.clone(),
            dir: job_dir(&self.config.output_dir, &group, &job_id),
            group,
            poll_interval: self.config.poll_interval,
            cancel: cancel.clone(),
            wake: wake.clone(),
        };
        let done = self.done_tx.clone();
        let id = job_id.clone();
        let task = tokio::spawn(async move {
            run.run(source).await;
            let _ = done.send(id);
        });
        self.jobs.insert(
            job_id,
            JobHandle {
                task: task.abort_handle(),
                cancel,
                wake,
            },
        );
    }

    /// Asks the job's task to cancel on the server; it reports `JobCancelled` once WanGP confirms.
    fn cancel(&mut self, job_id: &str) {
        if let Some(handle) = self.jobs.get(job_id) {
            handle.cancel.store(true, Ordering::SeqCst);
            handle.wake.notify_one();
        }
    }
}

/// One generation, from `wangp_generate` to its terminal event.
struct JobRun {
    client: McpClient,
    shared: Arc<Shared>,
    service: String,
    job_id: String,
    dir: PathBuf,
    /// The tag the job was submitted with (recorded in its manifest).
    group: String,
    poll_interval: Duration,
    cancel: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
}

impl JobRun {
    fn fail(&self, code: ErrorCode, message: String) {
        self.shared
            .fail_job(&self.service, &self.job_id, JobError::simple(code.as_str(), message));
    }

    async fn run(self, source: Value) {
        let started = Instant::now();
        if !(source.is_object() || source.is_array()) {
            return self.fail(
                ErrorCode::InvalidWorkflow,
                "a WanGP job is a settings dict (or a task list), e.g. {\"model_type\": ..., \"prompt\": ...}".into(),
            );
        }
        let args = json!({"source": source, "wait": false, "event_limit": wangp::EVENT_LIMIT});
        let first = match self.start(args).await {
            Ok(s) => s,
            Err(e) => return self.fail(e.code, e.message),
        };
        let remote = first.job_id.clone();
        log::info!("{}: job {} is WanGP job {remote}", self.service, self.job_id);
        self.shared.emit(EventKind::JobQueued {
            job_id: self.job_id.clone(),
            service: self.service.clone(),
            position: None,
            pending_connection: false,
            node_errors: Vec::new(),
        });
        let mut follow = Follow::default();
        let mut snapshot = first;
        let mut cancel_sent = false;
        let mut unreachable_since: Option<Instant> = None;
        loop {
            follow.events(&self, &snapshot);
            if snapshot.done {
                let result = snapshot.result.unwrap_or_default();
                return self.finish(&remote, &source, result, started).await;
            }
            if self.cancel.load(Ordering::SeqCst) && !cancel_sent {
                match self
                    .client
                    .call_tool(wangp::CANCEL_JOB, json!({"job_id": remote, "event_limit": 0}))
                    .await
                {
                    Ok(_) => cancel_sent = true,
                    Err(e) => {
                        // The server cannot be told: say so, and stop following rather than pretend.
                        log::warn!(
                            "{}: job {}: cancelling on the server failed ({}); it may still run there",
                            self.service,
                            self.job_id,
                            e.message
                        );
                        self.shared.emit(EventKind::JobCancelled {
                            job_id: self.job_id.clone(),
                        });
                        return;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll_interval) => {}
                _ = self.wake.notified() => {}
            }
            let args = json!({"job_id": remote, "event_limit": wangp::EVENT_LIMIT});
            match self
                .client
                .call_tool(wangp::GET_JOB, args)
                .await
                .and_then(parse_snapshot)
            {
                Ok(s) => {
                    unreachable_since = None;
                    snapshot = s;
                }
                Err(e) if e.code == ErrorCode::ExecutionFailed && wangp::is_unknown_job(&e.message) => {
                    return self.fail(
                        ErrorCode::ServerRestarted,
                        "WanGP no longer knows this job (it was restarted?); submit it again".into(),
                    );
                }
                Err(e) if matches!(e.code, ErrorCode::ConnectionFailed | ErrorCode::Timeout) => {
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > UNREACHABLE_LIMIT {
                        return self.fail(
                            e.code,
                            format!("WanGP stayed unreachable for 30 minutes: {}", e.message),
                        );
                    }
                    tokio::time::sleep(self.poll_interval.max(Duration::from_secs(1))).await;
                }
                Err(e) => return self.fail(e.code, e.message),
            }
        }
    }

    /// `wangp_generate`, tried again only while nothing could have reached the server (connection refused).
    async fn start(&self, args: Value) -> Result<JobSnapshot, Error> {
        let mut delay = Duration::from_millis(250);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.client.call_tool(wangp::GENERATE, args.clone()).await {
                Err(e) if e.code == ErrorCode::ConnectionFailed && Instant::now() + delay < deadline => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(4));
                }
                other => return other.and_then(parse_snapshot),
            }
        }
    }

    async fn finish(&self, remote: &str, source: &Value, result: GenerationResult, started: Instant) {
        if result.cancelled || (self.cancel.load(Ordering::SeqCst) && !result.success) {
            log::info!("{}: job {} cancelled", self.service, self.job_id);
            return self.shared.emit(EventKind::JobCancelled {
                job_id: self.job_id.clone(),
            });
        }
        if !result.success {
            return self.fail(ErrorCode::ExecutionFailed, result.error_text());
        }
        let mut outputs = Vec::new();
        for item in &result.gallery_items {
            match self.download(item).await {
                Ok(f) => outputs.push(f),
                Err(e) => return self.fail(e.code, e.message),
            }
        }
        if !outputs.is_empty() {
            let submitted_at = crate::event::now_epoch() - started.elapsed().as_secs_f64();
            let written = crate::net::manifest::Manifest::new(
                "wangp_mcp",
                &self.service,
                &self.job_id,
                &self.group,
                self.client.url().as_str(),
                submitted_at,
            )
            .with("server_job_id", remote)
            .with("source", source.clone())
            .with("generated_files", result.generated_files.clone())
            .files(&self.dir, &outputs)
            .write(&self.dir, &[])
            .await;
            // The files are safely home; a manifest that cannot be written is said, not a failed job.
            if let Err(e) = written {
                log::warn!("{}: job {}: {}", self.service, self.job_id, e.message);
            }
        }
        self.shared.emit(EventKind::JobCompleted {
            job_id: self.job_id.clone(),
            outputs,
            ui: json!({
                "server_job_id": remote,
                "generated_files": result.generated_files,
            }),
            elapsed_seconds: started.elapsed().as_secs_f64(),
        });
    }

    async fn download(&self, item: &wangp::GalleryItem) -> Result<OutputFile, Error> {
        let ticket = self
            .client
            .call_tool(wangp::CREATE_DOWNLOAD, json!({"gallery_id": item.gallery_id}))
            .await?;
        let ticket: DownloadTicket = serde_json::from_value(ticket).map_err(|e| {
            Error::protocol(format!("{}: unexpected answer ({e})", wangp::CREATE_DOWNLOAD)).with_source(e)
        })?;
        let url = self.client.resolve(&ticket.download_url)?;
        let fallback = Path::new(&item.path.replace('\\', "/"))
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("output")
            .to_string();
        let filename = if ticket.filename.is_empty() {
            fallback
        } else {
            ticket.filename.clone()
        };
        let name = safe_component(&filename, "output");
        let (path, size, sha256) = crate::net::download::to_dir(self.client.http(), url, &self.dir, &name).await?;
        Ok(OutputFile {
            node_id: "wangp".into(),
            kind: if ticket.media_type.is_empty() {
                item.media_type.clone()
            } else {
                ticket.media_type
            },
            path,
            filename,
            subfolder: String::new(),
            file_type: "output".into(),
            size,
            sha256,
        })
    }
}

fn parse_snapshot(v: Value) -> Result<JobSnapshot, Error> {
    serde_json::from_value(v)
        .map_err(|e| Error::new(ErrorCode::Protocol, format!("WanGP job snapshot not understood ({e})")))
}

/// Which of a job's events were passed on already (snapshots repeat the newest ones).
#[derive(Default)]
struct Follow {
    last_timestamp: f64,
    started: bool,
}

impl Follow {
    fn events(&mut self, run: &JobRun, snapshot: &JobSnapshot) {
        let seen = self.last_timestamp;
        for event in snapshot.events.iter().filter(|e| e.timestamp > seen) {
            self.last_timestamp = self.last_timestamp.max(event.timestamp);
            match event.kind.as_str() {
                "started" | "progress" if !self.started => {
                    self.started = true;
                    run.shared.emit(EventKind::JobStarted {
                        job_id: run.job_id.clone(),
                        service: run.service.clone(),
                        cached_nodes: Vec::new(),
                    });
                }
                _ => {}
            }
            match event.kind.as_str() {
                "progress" => {
                    let p: ProgressUpdate = serde_json::from_value(event.data.clone()).unwrap_or_default();
                    let (value, max, percentage) = p.amounts();
                    run.shared.emit(EventKind::Progress {
                        job_id: run.job_id.clone(),
                        node_id: None,
                        value,
                        max,
                        percentage,
                        eta_seconds: None,
                        text: p.text(),
                    });
                }
                "status" | "info" => {
                    if let Some(text) = event.data.as_str().filter(|t| !t.trim().is_empty()) {
                        run.shared.emit(EventKind::NodeText {
                            job_id: Some(run.job_id.clone()),
                            node_id: event.kind.clone(),
                            text: text.to_string(),
                        });
                    }
                }
                _ => {}
            }
        }
    }
}
