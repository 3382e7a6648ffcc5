//! One Gradio call as a job: turns queue messages (from the SSE session stream, the 3.x WebSocket or the sync
//! route) into the hub's events, keeps generator values (diffs applied), and ends the job exactly once:
//! outputs downloaded → `JobCompleted`, the app's error → `JobFailed`, a confirmed cancel → `JobCancelled`.
use super::http::GradioHttp;
use super::protocol::{apply_diff, error_text, progress_of, Config, Endpoint, Message};
use crate::error::Error;
use crate::error::ErrorCode;
use crate::event::EventKind;
use crate::tracker::Shared;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// One call as the hub hands it over.
#[derive(Debug, Clone, PartialEq)]
pub struct GradioCall {
    /// With or without the leading `/`.
    pub api_name: Option<String>,
    /// For events without a usable api_name (AudioLDM v1).
    pub fn_index: Option<u64>,
    /// One value per input component; `{"path": "/local/file"}` uploads that file first.
    pub inputs: Vec<Value>,
    /// `None`: the service's shared session (so `gr.State` carries over between calls, e.g. RVC's two steps).
    pub session_hash: Option<String>,
}

impl GradioCall {
    /// How the call is named in events and logs.
    pub fn label(&self) -> String {
        match (&self.api_name, self.fn_index) {
            (Some(n), _) => n.trim_start_matches('/').to_string(),
            (None, Some(i)) => format!("fn_index {i}"),
            (None, None) => "?".into(),
        }
    }
}

/// What the actor tells a running job.
#[derive(Debug, Clone)]
pub enum Control {
    Cancel,
    /// The app was restarted (its app_id changed): the job is lost.
    Restarted(String),
}

/// How a job ended.
#[derive(Debug)]
pub enum Outcome {
    /// `output` of the final `process_completed` (or the sync route's answer).
    Completed(Value),
    Failed(Error),
    Cancelled,
}

/// What every protocol needs to run a call.
pub struct JobCtx {
    pub shared: Arc<Shared>,
    pub service: String,
    pub job_id: String,
    pub http: GradioHttp,
    pub config: Arc<Config>,
    pub endpoint: Endpoint,
    pub session_hash: String,
    pub dir: PathBuf,
    pub started_at: Instant,
    pub call: GradioCall,
    pub diffs: bool,
    started: bool,
    queued_at: Option<u64>,
    generating: Option<Vec<Value>>,
    generated: u64,
    rate: Option<(Instant, f64)>,
    pub cancel_requested: bool,
}

impl JobCtx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shared: Arc<Shared>,
        service: String,
        job_id: String,
        http: GradioHttp,
        config: Arc<Config>,
        endpoint: Endpoint,
        session_hash: String,
        dir: PathBuf,
        call: GradioCall,
        diffs: bool,
    ) -> JobCtx {
        JobCtx {
            shared,
            service,
            job_id,
            http,
            config,
            endpoint,
            session_hash,
            dir,
            started_at: Instant::now(),
            call,
            diffs,
            started: false,
            queued_at: None,
            generating: None,
            generated: 0,
            rate: None,
            cancel_requested: false,
        }
    }

    fn node(&self) -> String {
        self.call.label()
    }

    pub fn emit_started(&mut self) {
        if !self.started {
            self.started = true;
            self.shared.emit(EventKind::JobStarted {
                job_id: self.job_id.clone(),
                service: self.service.clone(),
                cached_nodes: Vec::new(),
            });
        }
    }

    pub fn emit_queued(&mut self, position: Option<u64>) {
        if self.started || (self.queued_at.is_some() && self.queued_at == position) {
            return;
        }
        self.queued_at = position;
        self.shared.emit(EventKind::JobQueued {
            job_id: self.job_id.clone(),
            service: self.service.clone(),
            position: position.map(|p| p.min(u64::from(u32::MAX)) as u32),
            pending_connection: false,
            node_errors: Vec::new(),
        });
    }

    /// A note about the job (gr.Info/Warning, or what this client could not do), as `NodeText`.
    pub fn note(&self, kind: &str, text: String) {
        self.shared.emit(EventKind::NodeText {
            job_id: Some(self.job_id.clone()),
            node_id: kind.to_string(),
            text,
        });
    }

    /// Handles one queue message; `Some` when it ends the job.
    pub fn on_message(&mut self, msg: Message) -> Option<Outcome> {
        match msg {
            Message::Estimation { rank, .. } => self.emit_queued(rank),
            Message::ProcessStarts { .. } => self.emit_started(),
            Message::Progress { units, .. } => {
                self.emit_started();
                if let Some((value, max, text)) = progress_of(&units) {
                    let percentage = if max > 0.0 {
                        (value / max * 100.0).clamp(0.0, 100.0)
                    } else {
                        0.0
                    };
                    let eta_seconds = self.eta(value, max);
                    self.shared.emit(EventKind::Progress {
                        job_id: self.job_id.clone(),
                        node_id: Some(self.node()),
                        value,
                        max,
                        percentage,
                        eta_seconds,
                        text,
                    });
                }
            }
            Message::Log { log, level, title, .. } => {
                let text = match title.filter(|t| !t.is_empty()) {
                    Some(t) => format!("{t}: {log}"),
                    None => log,
                };
                self.note(&format!("log.{level}"), text);
            }
            Message::Generating { output, .. } => {
                self.emit_started();
                if let Err(e) = self.generated_values(&output) {
                    log::warn!("{}: job {}: {e}", self.service, self.job_id);
                }
            }
            Message::Completed {
                output, success, title, ..
            } => {
                if !success {
                    return Some(Outcome::Failed(super::error::app(error_text(
                        &output,
                        title.as_deref(),
                    ))));
                }
                let has_data = output.get("data").is_some_and(|d| !d.is_null());
                if !has_data {
                    // A cancelled event completes with `success: true, output: {}`.
                    return Some(Outcome::Cancelled);
                }
                return Some(Outcome::Completed(output));
            }
            Message::QueueFull => {
                return Some(Outcome::Failed(Error::new(
                    ErrorCode::RateLimited,
                    "the app's queue is full; try again later",
                )))
            }
            Message::UnexpectedError { message, .. } => {
                return Some(Outcome::Failed(Error::new(
                    ErrorCode::ServerError,
                    format!("the app's queue failed: {message}"),
                )))
            }
            Message::Other(m) => log::debug!("{}: job {}: ignored message {m:?}", self.service, self.job_id),
            Message::SendHash | Message::SendData | Message::Heartbeat | Message::CloseStream => {}
        }
        None
    }

    /// Seconds left from the observed step rate (only for counted progress).
    fn eta(&mut self, value: f64, max: f64) -> Option<f64> {
        if max <= 1.0 {
            return None;
        }
        let now = Instant::now();
        match self.rate {
            Some((t0, v0)) if value > v0 && value <= max => {
                let per_step = now.duration_since(t0).as_secs_f64() / (value - v0);
                Some((max - value) * per_step)
            }
            Some((_, v0)) if value >= v0 => None,
            _ => {
                self.rate = Some((now, value));
                None
            }
        }
    }

    /// Full values the first time (and always without diffs), edits after that.
    fn generated_values(&mut self, output: &Value) -> Result<(), String> {
        let data = output
            .get("data")
            .and_then(Value::as_array)
            .ok_or("a generator update without data")?;
        let values = match (&self.generating, self.diffs) {
            (Some(prev), true) => {
                let mut next = Vec::with_capacity(data.len());
                for (i, diff) in data.iter().enumerate() {
                    let before = prev.get(i).cloned().unwrap_or(Value::Null);
                    next.push(apply_diff(&before, diff)?);
                }
                next
            }
            _ => data.clone(),
        };
        self.shared.emit(EventKind::NodeOutput {
            job_id: self.job_id.clone(),
            node_id: self.node(),
            output: json!({"data": values, "index": self.generated, "is_generating": true}),
        });
        self.generated += 1;
        self.generating = Some(values);
        Ok(())
    }

    /// Ends the job: downloads files for a completion, emits the one terminal event.
    pub async fn finish(self, outcome: Outcome) {
        match outcome {
            Outcome::Cancelled => {
                log::info!("{}: job {} cancelled", self.service, self.job_id);
                self.shared.emit(EventKind::JobCancelled { job_id: self.job_id });
            }
            Outcome::Failed(e) => {
                log::warn!(
                    "{}: job {} failed [{}]: {}",
                    self.service,
                    self.job_id,
                    e.code.as_str(),
                    e.message
                );
                self.shared.emit(EventKind::JobFailed {
                    job_id: self.job_id,
                    error: Box::new(e.to_job_error()),
                });
            }
            Outcome::Completed(output) => {
                let data: Vec<Value> = output
                    .get("data")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                match super::files::download_outputs(&self.http, &self.dir, &data, &self.endpoint.outputs).await {
                    Ok((files, values)) => {
                        let elapsed = self.started_at.elapsed().as_secs_f64();
                        let ui = json!({
                            "data": values,
                            "api_name": self.endpoint.api_name,
                            "fn_index": self.endpoint.fn_index,
                            "session_hash": self.session_hash,
                            "duration": output.get("duration").cloned().unwrap_or(Value::Null),
                        });
                        if !files.is_empty() {
                            write_manifest(&self, &files, elapsed).await;
                        }
                        self.shared.emit(EventKind::JobCompleted {
                            job_id: self.job_id,
                            outputs: files,
                            ui,
                            elapsed_seconds: elapsed,
                        });
                    }
                    Err(e) => self.shared.emit(EventKind::JobFailed {
                        job_id: self.job_id,
                        error: Box::new(e.to_job_error()),
                    }),
                }
            }
        }
    }
}

/// `manifest.json` next to the files: what was called with which inputs, and what came back. A manifest that
/// cannot be written does not fail a job whose files are safely home; it is logged.
async fn write_manifest(ctx: &JobCtx, files: &[crate::event::OutputFile], elapsed: f64) {
    // The job folder is `<output_dir>/<tag>/<job id>`: its parent's name is the tag as used on disk.
    let tag = ctx
        .dir
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let submitted_at = crate::event::now_epoch() - elapsed;
    let written = crate::net::manifest::Manifest::new(
        "gradio",
        &ctx.service,
        &ctx.job_id,
        &tag,
        ctx.http.endpoint().base(),
        submitted_at,
    )
    .with("app_version", ctx.config.version.as_str())
    .with("api_name", ctx.endpoint.api_name.clone())
    .with("fn_index", ctx.endpoint.fn_index)
    .with("inputs", ctx.call.inputs.clone())
    .files(&ctx.dir, files)
    .write(&ctx.dir, &ctx.http.secrets())
    .await;
    if let Err(e) = written {
        log::warn!("{}: job {}: {}", ctx.service, ctx.job_id, e.message);
    }
}
