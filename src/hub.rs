//! The public Rust API. The hub owns a tokio runtime on named background threads, the service registry, the job
//! table and the event queue. Nothing here waits on the network: commands go down channels to service actors.
use crate::comfy::http::ComfyHttp;
use crate::comfy::service::{ComfyConfig, ComfyService, Command};
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorCode, Result};
use crate::event::{Event, EventKind, JobError, JobState, QueueStats};
use crate::gradio::http::GradioHttp;
use crate::gradio::service::{Command as GradioCommand, GradioOptions, GradioService};
use crate::gradio::GradioCall;
use crate::mcp::client::McpClient;
use crate::mcp::service::{Command as WanGpCommand, WanGpConfig, WanGpService};
use crate::openai::http::OpenAiHttp;
use crate::openai::service::{ChatRequest, Command as OpenAiCommand, OpenAiConfig, OpenAiService};
use crate::service::{BackoffPolicy, BreakerPolicy, ServiceSnapshot, ServiceStatus};
use crate::tracker::{JobSnapshot, Shared, Submission, DEFAULT_FINISHED_CAP};
use crate::workflow::{prepare, ObjectInfo};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest silence inside a streamed chat answer before the job fails `timeout`.
const STREAM_IDLE: Duration = Duration::from_secs(300);

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Where results are written (`<output_dir>/<tag or service>/<job id>/`).
    pub output_dir: PathBuf,
    /// Events waiting for `poll()` before progress/previews are coalesced.
    pub event_capacity: usize,
    pub worker_threads: usize,
    pub heartbeat: Duration,
    pub backoff: BackoffPolicy,
    pub breaker: BreakerPolicy,
    /// How often jobs are checked over HTTP while a WebSocket cannot be opened.
    pub poll_interval: Duration,
    pub connect_timeout: Duration,
    /// Finished jobs remembered for `snapshot()`/`wait()`.
    pub finished_jobs: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            output_dir: default_output_dir(),
            event_capacity: 10_000,
            worker_threads: 2,
            heartbeat: Duration::from_secs(10),
            backoff: BackoffPolicy::default(),
            breaker: BreakerPolicy::default(),
            poll_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            finished_jobs: DEFAULT_FINISHED_CAP,
        }
    }
}

/// The output sub-folder of a job: its tag (a shot name), else its service's name.
fn output_group(tag: Option<&str>, service: &str) -> String {
    tag.filter(|t| !t.trim().is_empty()).unwrap_or(service).to_string()
}

pub fn default_output_dir() -> PathBuf {
    std::env::current_dir()
        .unwrap_or_else(|_| std::env::temp_dir())
        .join("director-link-output")
}

/// The service kinds this build can talk to (`litellm` is another name for `openai`; `wan2gp`, `wangp`, `rvc`
/// and `audioldm` are Gradio apps; `wangp_mcp` is WanGP's MCP server mode, also called `wan2gp_mcp`).
pub const KINDS: &[&str] = &[
    "comfyui",
    "openai",
    "litellm",
    "gradio",
    "wan2gp",
    "wangp",
    "rvc",
    "audioldm",
    "wangp_mcp",
    "wan2gp_mcp",
];

/// A kind as stored: aliases resolved.
fn canonical_kind(kind: &str) -> &str {
    match kind {
        "litellm" => "openai",
        "wan2gp_mcp" | "wangp-mcp" | "wan2gp-mcp" => "wangp_mcp",
        "wan2gp" | "wangp" | "rvc" | "audioldm" => "gradio",
        other => other,
    }
}

fn default_port(kind: &str) -> u16 {
    match kind {
        "openai" => crate::openai::DEFAULT_PORT,
        "wangp_mcp" => crate::mcp::DEFAULT_PORT,
        "gradio" | "wan2gp" | "wangp" | "audioldm" => crate::gradio::DEFAULT_PORT,
        "rvc" => 7865,
        _ => 8188,
    }
}

/// How long a Gradio call waits for its app's first `/config` before it fails.
const GRADIO_CONNECT_WAIT: Duration = Duration::from_secs(30);

struct ServiceHandle {
    kind: String,
    endpoint: Endpoint,
    status: Arc<ServiceStatus>,
    link: Link,
}

/// The per-kind half of a service: how to reach its actor and its HTTP API.
enum Link {
    Comfy(ComfyLink),
    OpenAi(OpenAiLink),
    WanGp(mpsc::UnboundedSender<WanGpCommand>),
    Gradio(GradioLink),
}

struct GradioLink {
    commands: mpsc::UnboundedSender<GradioCommand>,
}

struct ComfyLink {
    commands: mpsc::UnboundedSender<Command>,
    http: ComfyHttp,
    /// `/object_info` is ~0.5 MB and changes only when nodes are installed: fetched once, refreshed on request.
    schema: SchemaSlot,
    /// SHA-256 of uploaded bytes → the name the server gave them: the same file is never uploaded twice.
    uploads: Arc<Mutex<std::collections::HashMap<String, String>>>,
}

struct OpenAiLink {
    commands: mpsc::UnboundedSender<OpenAiCommand>,
    http: OpenAiHttp,
}

impl Link {
    /// How a service of this kind is used, for errors that name the wrong one.
    fn usage(&self) -> &'static str {
        match self {
            Link::Comfy(_) => "submit a ComfyUI workflow to it",
            Link::OpenAi(_) => "use chat() with it",
            Link::Gradio(_) => "submit a GradioCall to it",
            Link::WanGp(_) => "submit a WanGP settings dict to it",
        }
    }
}

impl ServiceHandle {
    fn wrong_kind(&self, name: &str, needs: &str) -> Error {
        Error::new(
            ErrorCode::WrongService,
            format!(
                "service {name:?} is a {} service; this needs {needs} ({})",
                self.kind,
                self.link.usage()
            ),
        )
    }

    fn comfy(&self, name: &str) -> Result<&ComfyLink> {
        match &self.link {
            Link::Comfy(c) => Ok(c),
            _ => Err(self.wrong_kind(name, "a ComfyUI")),
        }
    }

    fn openai(&self, name: &str) -> Result<&OpenAiLink> {
        match &self.link {
            Link::OpenAi(o) => Ok(o),
            _ => Err(self.wrong_kind(name, "an OpenAI-compatible server")),
        }
    }

    fn gradio(&self, name: &str) -> Result<&GradioLink> {
        match &self.link {
            Link::Gradio(g) => Ok(g),
            _ => Err(self.wrong_kind(name, "a Gradio app")),
        }
    }
}

/// A service's node list: raw (as Python sees it) and parsed (for conversion and validation).
pub struct Schema {
    pub raw: Arc<Value>,
    pub info: Arc<ObjectInfo>,
}

type SchemaSlot = Arc<Mutex<Option<Arc<Schema>>>>;

async fn fetch_schema(http: &ComfyHttp, slot: &SchemaSlot) -> Result<Arc<Schema>> {
    let raw = http.object_info().await?;
    let info = ObjectInfo::from_value(&raw)?;
    let schema = Arc::new(Schema {
        raw: Arc::new(raw),
        info: Arc::new(info),
    });
    *slot.lock() = Some(schema.clone());
    Ok(schema)
}

/// A failure found before posting, as the job's error (with the problems per node when validation found them).
fn job_error(e: Error) -> JobError {
    let mut error = JobError::simple(e.code(), e.message.clone());
    if let Some(problems) = e.details.as_ref().and_then(|d| d.get("node_errors")) {
        error.node_errors = serde_json::from_value(problems.clone()).unwrap_or_default();
    }
    error
}

/// Per-service choices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceOptions {
    /// When a server restart loses a job, send it again automatically instead of failing it `server_restarted`.
    pub resubmit_on_restart: bool,
}

/// What `add_service` understood.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceAdded {
    pub name: String,
    pub url: String,
    pub understood: String,
}

/// Everything a UI needs in one call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// Every service's state in one word, for a status bar.
    pub studio: crate::service::StudioHealth,
    pub services: Vec<ServiceSnapshot>,
    pub jobs: Vec<JobSnapshot>,
    pub events: QueueStats,
}

pub struct Hub {
    shared: Arc<Shared>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    services: Mutex<BTreeMap<String, ServiceHandle>>,
    http: reqwest::Client,
    config: HubConfig,
    closed: Arc<AtomicBool>,
}

impl Hub {
    pub fn new(config: HubConfig) -> Result<Hub> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads.max(1))
            .max_blocking_threads(8)
            .thread_name("director-link")
            .enable_all()
            .build()
            .map_err(|e| Error::new(ErrorCode::Io, format!("cannot start the background runtime: {e}")))?;
        // One pooled client for every service; a native client sends no Origin header (ComfyUI would 403 it).
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("director-link/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::new(ErrorCode::Io, format!("cannot create the HTTP client: {e}")))?;
        Ok(Hub {
            shared: Arc::new(Shared::new(config.event_capacity, config.finished_jobs)),
            runtime: Mutex::new(Some(runtime)),
            services: Mutex::new(BTreeMap::new()),
            http,
            config,
            closed: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    fn ensure_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::new(ErrorCode::Closed, "this hub is closed; create a new Hub"))
        } else {
            Ok(())
        }
    }

    /// Adds a service and starts connecting in the background. Returns at once.
    pub fn add_service(
        &self,
        kind: &str,
        url: &str,
        name: Option<&str>,
        token: Option<String>,
    ) -> Result<ServiceAdded> {
        self.add_service_with(kind, url, name, token, ServiceOptions::default())
    }

    /// `add_service` with per-service options.
    pub fn add_service_with(
        &self,
        kind: &str,
        url: &str,
        name: Option<&str>,
        token: Option<String>,
        options: ServiceOptions,
    ) -> Result<ServiceAdded> {
        self.ensure_open()?;
        let requested = kind.trim().to_ascii_lowercase();
        let kind = canonical_kind(&requested).to_string();
        if !KINDS.contains(&kind.as_str()) {
            return Err(Error::new(
                ErrorCode::UnknownService,
                format!(
                    "unknown service kind {kind:?}; this build supports: {}",
                    KINDS.join(", ")
                ),
            ));
        }
        let endpoint = Endpoint::parse(url, default_port(&requested))?;
        let name = match name.map(str::trim) {
            Some("") => return Err(Error::new(ErrorCode::InvalidUrl, "a service name cannot be empty")),
            Some(n) => n.to_string(),
            None => default_name(&kind, &endpoint),
        };
        let token = token.filter(|t| !t.is_empty());
        let mut services = self.services.lock();
        if services.contains_key(&name) {
            return Err(Error::new(
                ErrorCode::DuplicateService,
                format!("a service named {name:?} exists already; pass another name= or remove it first"),
            ));
        }
        let client_id = format!("director-link-{}", uuid::Uuid::new_v4().simple());
        let status = Arc::new(ServiceStatus::new(&name, &kind, endpoint.base(), &client_id));
        let link = if kind == "openai" {
            self.spawn_openai(&name, &endpoint, token, &status)?
        } else if kind == "wangp_mcp" {
            self.spawn_wangp(&name, &endpoint, &status)?
        } else if kind == "gradio" {
            self.spawn_gradio(&name, &endpoint, token, &status)?
        } else {
            self.spawn_comfy(&name, &endpoint, token, &status, client_id, &options)?
        };
        let added = ServiceAdded {
            name: name.clone(),
            url: endpoint.base().to_string(),
            understood: endpoint.describe(),
        };
        services.insert(
            name,
            ServiceHandle {
                kind,
                endpoint,
                status,
                link,
            },
        );
        Ok(added)
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) -> Result<()> {
        let rt = self.runtime.lock();
        let rt = rt
            .as_ref()
            .ok_or_else(|| Error::new(ErrorCode::Closed, "this hub is closed"))?;
        rt.spawn(fut);
        Ok(())
    }

    fn spawn_openai(
        &self,
        name: &str,
        endpoint: &Endpoint,
        token: Option<String>,
        status: &Arc<ServiceStatus>,
    ) -> Result<Link> {
        let key = crate::openai::http::ApiKey::given_or_env(token);
        let http =
            OpenAiHttp::new(self.http.clone(), endpoint.clone(), key)?.with_latency(status.http_latency_window());
        let (tx, rx) = mpsc::unbounded_channel();
        let actor = OpenAiService::new(
            name,
            http.clone(),
            self.shared.clone(),
            status.clone(),
            OpenAiConfig {
                heartbeat: self.config.heartbeat,
                backoff: self.config.backoff.clone(),
                stream_idle: STREAM_IDLE,
            },
            rx,
        );
        self.spawn(actor.run())?;
        Ok(Link::OpenAi(OpenAiLink { commands: tx, http }))
    }

    fn spawn_wangp(&self, name: &str, endpoint: &Endpoint, status: &Arc<ServiceStatus>) -> Result<Link> {
        let bad = |e: url::ParseError| Error::new(ErrorCode::InvalidUrl, format!("{}: {e}", endpoint.base()));
        let mut url = url::Url::parse(endpoint.base()).map_err(bad)?;
        // A bare server address means FastMCP's default path; a pasted ".../mcp" is kept as given.
        if url.path() == "/" {
            url = url.join(crate::mcp::DEFAULT_PATH).map_err(bad)?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let actor = WanGpService::new(
            name,
            McpClient::new(self.http.clone(), url),
            self.shared.clone(),
            status.clone(),
            WanGpConfig {
                heartbeat: self.config.heartbeat,
                backoff: self.config.backoff.clone(),
                poll_interval: self.config.poll_interval.min(Duration::from_millis(500)),
                output_dir: self.config.output_dir.clone(),
            },
            rx,
        );
        self.spawn(actor.run())?;
        Ok(Link::WanGp(tx))
    }

    fn spawn_gradio(
        &self,
        name: &str,
        endpoint: &Endpoint,
        token: Option<String>,
        status: &Arc<ServiceStatus>,
    ) -> Result<Link> {
        let http =
            GradioHttp::new(self.http.clone(), endpoint.clone(), token)?.with_latency(status.http_latency_window());
        let (tx, rx) = mpsc::unbounded_channel();
        let actor = GradioService::new(
            name,
            http,
            self.shared.clone(),
            status.clone(),
            GradioOptions {
                heartbeat: self.config.heartbeat,
                backoff: self.config.backoff.clone(),
                idle: crate::gradio::service::IDLE,
                output_dir: self.config.output_dir.clone(),
                connect_wait: GRADIO_CONNECT_WAIT,
            },
            rx,
        );
        self.spawn(actor.run())?;
        Ok(Link::Gradio(GradioLink { commands: tx }))
    }

    fn spawn_comfy(
        &self,
        name: &str,
        endpoint: &Endpoint,
        token: Option<String>,
        status: &Arc<ServiceStatus>,
        client_id: String,
        options: &ServiceOptions,
    ) -> Result<Link> {
        let (tx, rx) = mpsc::unbounded_channel();
        let http = ComfyHttp::new(self.http.clone(), endpoint.clone(), token.clone())
            .with_latency(status.http_latency_window());
        let actor = ComfyService::new(
            name,
            http.clone(),
            token,
            self.shared.clone(),
            status.clone(),
            ComfyConfig {
                heartbeat: self.config.heartbeat,
                backoff: self.config.backoff.clone(),
                breaker: self.config.breaker.clone(),
                poll_interval: self.config.poll_interval,
                resubmit_on_restart: options.resubmit_on_restart,
                output_dir: self.config.output_dir.clone(),
                connect_timeout: self.config.connect_timeout,
            },
            client_id,
            rx,
        );
        self.spawn(actor.run())?;
        Ok(Link::Comfy(ComfyLink {
            commands: tx,
            http,
            schema: Arc::new(Mutex::new(None)),
            uploads: Arc::default(),
        }))
    }

    /// Stops a service's connection; its unfinished jobs stay in the table as they are.
    pub fn remove_service(&self, name: &str) -> Result<()> {
        let removed = self.services.lock().remove(name);
        removed.map(|_| ()).ok_or_else(|| self.unknown_service(name))
    }

    fn unknown_service(&self, name: &str) -> Error {
        self.unknown_service_in(&self.services.lock(), name)
    }

    /// For callers that hold the services lock already (it is not re-entrant).
    fn unknown_service_in(&self, services: &BTreeMap<String, ServiceHandle>, name: &str) -> Error {
        let known: Vec<String> = services.keys().cloned().collect();
        let hint = if known.is_empty() {
            "no services are added yet; call add_service first".to_string()
        } else {
            format!("known services: {}", known.join(", "))
        };
        Error::new(ErrorCode::UnknownService, format!("no service named {name:?}; {hint}"))
    }

    pub fn service_names(&self) -> Vec<String> {
        self.services.lock().keys().cloned().collect()
    }

    /// Queues a prompt (API format) on a service and returns the job id at once.
    pub fn submit(
        &self,
        service: &str,
        workflow: Value,
        params: Vec<(String, Value)>,
        tag: Option<String>,
    ) -> Result<String> {
        self.ensure_open()?;
        if let Some(wangp) = self.wangp_link(service)? {
            return self.submit_wangp(service, wangp, workflow, tag);
        }
        let loaded = prepare::load(workflow.clone())?;
        let (commands, http, slot) = {
            let services = self.services.lock();
            let h = services
                .get(service)
                .ok_or_else(|| self.unknown_service_in(&services, service))?;
            let c = h.comfy(service)?;
            (c.commands.clone(), c.http.clone(), c.schema.clone())
        };
        let cached = slot.lock().clone();
        let submission = Submission {
            workflow: Arc::new(workflow),
            params,
        };
        let group = output_group(tag.as_deref(), service);
        let job_id = uuid::Uuid::new_v4().to_string();
        if prepare::needs_object_info(&loaded) && cached.is_none() {
            // A UI-format workflow waits for the server's node list; submit() itself never waits on the network.
            self.shared.register(&job_id, service, tag, submission.clone());
            let (shared, id) = (self.shared.clone(), job_id.clone());
            let rt = self.runtime.lock();
            let rt = rt
                .as_ref()
                .ok_or_else(|| Error::new(ErrorCode::Closed, "this hub is closed"))?;
            rt.spawn(async move {
                let prepared = async {
                    let schema = fetch_schema(&http, &slot).await?;
                    prepare::prepare(&loaded, &submission.params, Some(&schema.info))
                }
                .await;
                match prepared {
                    Ok(p) => {
                        for w in &p.warnings {
                            log::info!("job {id}: {w}");
                        }
                        let _ = commands.send(Command::Submit {
                            job_id: id,
                            prompt: Arc::new(p.prompt),
                            group,
                        });
                    }
                    Err(e) => shared.emit(EventKind::JobFailed {
                        job_id: id,
                        error: job_error(e),
                    }),
                }
            });
            return Ok(job_id);
        }
        let prepared = prepare::prepare(&loaded, &submission.params, cached.as_ref().map(|s| &*s.info))?;
        for w in &prepared.warnings {
            log::info!("job {job_id}: {w}");
        }
        self.shared.register(&job_id, service, tag, submission);
        commands
            .send(Command::Submit {
                job_id: job_id.clone(),
                prompt: Arc::new(prepared.prompt),
                group,
            })
            .map_err(|_| Error::new(ErrorCode::Closed, "the service has stopped; add it again"))?;
        Ok(job_id)
    }

    /// The command channel when `service` is a WanGP MCP server.
    fn wangp_link(&self, service: &str) -> Result<Option<mpsc::UnboundedSender<WanGpCommand>>> {
        let services = self.services.lock();
        let h = services
            .get(service)
            .ok_or_else(|| self.unknown_service_in(&services, service))?;
        Ok(match &h.link {
            Link::WanGp(tx) => Some(tx.clone()),
            _ => None,
        })
    }

    /// A WanGP generation: `source` is what `wangp_generate` takes (a settings dict, a task dict or a task list).
    fn submit_wangp(
        &self,
        service: &str,
        commands: mpsc::UnboundedSender<WanGpCommand>,
        source: Value,
        tag: Option<String>,
    ) -> Result<String> {
        if !(source.is_object() || source.is_array()) {
            return Err(Error::new(
                ErrorCode::InvalidWorkflow,
                "a WanGP job is a settings dict (or a list of tasks), e.g. {\"model_type\": \"t2v_1.3B\", \"prompt\": \"...\"}",
            ));
        }
        let group = output_group(tag.as_deref(), service);
        let job_id = uuid::Uuid::new_v4().to_string();
        let submission = Submission {
            workflow: Arc::new(source.clone()),
            params: Vec::new(),
        };
        self.shared.register(&job_id, service, tag, submission);
        commands
            .send(WanGpCommand::Generate {
                job_id: job_id.clone(),
                source,
                group,
            })
            .map_err(|_| Error::new(ErrorCode::Closed, "the service has stopped; add it again"))?;
        Ok(job_id)
    }

    /// Follows a job that an earlier hub submitted (e.g. before Blender was restarted), by its id: the server is
    /// asked where it is, and its events and results arrive like any other job's. Returns at once.
    pub fn track(&self, service: &str, job_id: &str, tag: Option<String>) -> Result<String> {
        self.ensure_open()?;
        if self.shared.job(job_id).is_some() {
            return Ok(job_id.to_string());
        }
        let commands = {
            let services = self.services.lock();
            let h = services
                .get(service)
                .ok_or_else(|| self.unknown_service_in(&services, service))?;
            h.comfy(service)?.commands.clone()
        };
        let group = output_group(tag.as_deref(), service);
        self.shared.register(job_id, service, tag, Submission::default());
        commands
            .send(Command::Track {
                job_id: job_id.to_string(),
                group,
            })
            .map_err(|_| Error::new(ErrorCode::Closed, "the service has stopped; add it again"))?;
        Ok(job_id.to_string())
    }

    /// Submits a job's workflow again as a new job (same service, tag and parameters).
    pub fn resubmit(&self, job_id: &str) -> Result<String> {
        let (service, tag, submission) = self
            .shared
            .submission(job_id)
            .ok_or_else(|| Error::new(ErrorCode::UnknownJob, format!("no job with id {job_id:?}")))?;
        if submission.workflow.is_null() {
            return Err(Error::new(
                ErrorCode::UnknownJob,
                format!("job {job_id} was tracked, not submitted here: its workflow is not known to this hub"),
            ));
        }
        if self.service_kind(&service).is_some_and(|(k, _)| k == "gradio") {
            let w = &*submission.workflow;
            let call = GradioCall {
                api_name: w.get("api_name").and_then(Value::as_str).map(str::to_string),
                fn_index: w.get("fn_index").and_then(Value::as_u64),
                inputs: w.get("inputs").and_then(Value::as_array).cloned().unwrap_or_default(),
                session_hash: None,
            };
            return self.call(&service, call, tag);
        }
        self.submit(&service, (*submission.workflow).clone(), submission.params, tag)
    }

    /// Asks for a job to be cancelled; `JobCancelled` follows once the server confirms.
    pub fn cancel(&self, job_id: &str) -> Result<()> {
        self.ensure_open()?;
        let job = self
            .shared
            .job(job_id)
            .ok_or_else(|| Error::new(ErrorCode::UnknownJob, format!("no job with id {job_id:?}")))?;
        if job.state.is_terminal() {
            return Ok(());
        }
        let services = self.services.lock();
        let handle = services.get(&job.service).ok_or_else(|| {
            Error::new(
                ErrorCode::UnknownService,
                format!("the job's service {:?} was removed", job.service),
            )
        })?;
        let job_id = job_id.to_string();
        let sent = match &handle.link {
            Link::Comfy(c) => c.commands.send(Command::Cancel { job_id }).is_ok(),
            Link::OpenAi(o) => o.commands.send(OpenAiCommand::Cancel { job_id }).is_ok(),
            Link::WanGp(tx) => tx.send(WanGpCommand::Cancel { job_id }).is_ok(),
            Link::Gradio(g) => g.commands.send(GradioCommand::Cancel { job_id }).is_ok(),
        };
        sent.then_some(())
            .ok_or_else(|| Error::new(ErrorCode::Closed, "the service has stopped"))
    }

    /// Drops the connection and connects again at once (skips the backoff wait).
    pub fn reconnect(&self, service: &str) -> Result<()> {
        let services = self.services.lock();
        let handle = services
            .get(service)
            .ok_or_else(|| Error::new(ErrorCode::UnknownService, format!("no service named {service:?}")))?;
        match &handle.link {
            Link::Comfy(c) => {
                let _ = c.commands.send(Command::Reconnect);
            }
            Link::OpenAi(o) => {
                let _ = o.commands.send(OpenAiCommand::Reconnect);
            }
            Link::WanGp(tx) => {
                let _ = tx.send(WanGpCommand::Reconnect);
            }
            Link::Gradio(g) => {
                let _ = g.commands.send(GradioCommand::Reconnect);
            }
        }
        Ok(())
    }

    /// Takes up to `max` waiting events. Never blocks.
    pub fn poll(&self, max: usize) -> Vec<Event> {
        self.shared.events.drain(max)
    }

    /// Blocks up to `timeout` until an event waits (for scripts; the addon uses `poll`).
    pub fn wait_for_events(&self, timeout: Duration) -> bool {
        self.shared.events.wait_nonempty(timeout)
    }

    pub fn job(&self, job_id: &str) -> Option<JobSnapshot> {
        self.shared.job(job_id)
    }

    /// Blocks until the job ends or `timeout` passes.
    pub fn wait(&self, job_id: &str, timeout: Option<Duration>) -> Result<JobSnapshot> {
        let closed = self.closed.clone();
        let snap = self
            .shared
            .wait_terminal(job_id, timeout, &|| closed.load(Ordering::Acquire))
            .ok_or_else(|| Error::new(ErrorCode::UnknownJob, format!("no job with id {job_id:?}")))?;
        if snap.state.is_terminal() {
            return Ok(snap);
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(ErrorCode::Closed, "the hub was closed while waiting"));
        }
        let secs = timeout.map(|t| t.as_secs_f64()).unwrap_or(0.0);
        Err(Error::new(
            ErrorCode::Timeout,
            format!(
                "job {job_id} did not finish within {secs:.1} s (it is {}); wait longer or cancel it",
                snap.state.as_str()
            ),
        ))
    }

    pub fn snapshot(&self) -> Snapshot {
        let services: Vec<ServiceSnapshot> = self.services.lock().values().map(|h| h.status.snapshot()).collect();
        Snapshot {
            studio: crate::service::StudioHealth::of(&services),
            services,
            jobs: self.shared.jobs(),
            events: self.shared.events.stats(),
        }
    }

    pub fn service(&self, name: &str) -> Option<ServiceSnapshot> {
        self.services.lock().get(name).map(|h| h.status.snapshot())
    }

    pub fn service_kind(&self, name: &str) -> Option<(String, Endpoint)> {
        self.services
            .lock()
            .get(name)
            .map(|h| (h.kind.clone(), h.endpoint.clone()))
    }

    /// Runs a future on the hub's runtime and blocks for its result (CLI helpers; never called from the UI).
    pub fn block_on<F: std::future::Future>(&self, fut: F) -> Result<F::Output> {
        let handle = {
            let rt = self.runtime.lock();
            rt.as_ref()
                .ok_or_else(|| Error::new(ErrorCode::Closed, "this hub is closed"))?
                .handle()
                .clone()
        };
        Ok(handle.block_on(fut))
    }

    pub fn http_client(&self) -> reqwest::Client {
        self.http.clone()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Stops every task and joins every thread. Idempotent.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.services.lock().clear();
        if let Some(rt) = self.runtime.lock().take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        self.shared.wake_all();
    }

    pub fn job_state(&self, job_id: &str) -> Option<JobState> {
        self.shared.job_state(job_id)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.close();
    }
}

fn default_name(kind: &str, endpoint: &Endpoint) -> String {
    if endpoint.is_loopback() && endpoint.port() == default_port(kind) {
        kind.to_string()
    } else {
        format!("{kind}@{}:{}", endpoint.host(), endpoint.port())
    }
}

impl Hub {
    /// Checks addresses for a ComfyUI (in parallel); blocks the calling thread up to about `timeout`.
    pub fn probe(&self, urls: &[String], timeout: Duration) -> Result<Vec<crate::discovery::probe::ProbeResult>> {
        let client = self.http.clone();
        self.block_on(crate::discovery::probe::probe_all(client, urls, timeout))
    }

    /// Finds the servers on `hosts` (known ports of bare hosts, or the one port given) in parallel; blocks the
    /// calling thread up to about `options.timeout`. One finding per address, "nothing there" included.
    pub fn discover(
        &self,
        hosts: &[String],
        options: &crate::discovery::DiscoveryOptions,
    ) -> Result<Vec<crate::discovery::Finding>> {
        self.ensure_open()?;
        let found = self.block_on(crate::discovery::discover(hosts, options))??;
        for f in found.iter().filter(|f| f.kind != crate::discovery::ServerKind::None) {
            self.shared.emit(EventKind::ServiceDiscovered {
                url: f.url.clone(),
                kind: f.kind.as_str().to_string(),
                name: f.name.clone(),
                summary: f.summary.clone(),
                service_kind: f.service_kind.map(str::to_string),
            });
        }
        Ok(found)
    }

    /// Starts a chat completion on an OpenAI-compatible service and returns the job id at once. The answer
    /// arrives as `TextDelta` events, then `JobCompleted` with `ui = {"text", "usage", "model", "finish_reason"}`.
    pub fn chat(&self, service: &str, request: ChatRequest, tag: Option<String>) -> Result<String> {
        self.ensure_open()?;
        if !request.messages.is_array() {
            return Err(Error::new(
                ErrorCode::InvalidParameter,
                "messages must be a list of {\"role\": ..., \"content\": ...} objects",
            ));
        }
        let services = self.services.lock();
        let h = services
            .get(service)
            .ok_or_else(|| self.unknown_service_in(&services, service))?;
        let link = h.openai(service)?;
        let job_id = uuid::Uuid::new_v4().to_string();
        let submission = Submission {
            workflow: Arc::new(request.messages.clone()),
            params: Vec::new(),
        };
        self.shared.register(&job_id, service, tag, submission);
        link.commands
            .send(OpenAiCommand::Chat {
                job_id: job_id.clone(),
                request,
            })
            .map_err(|_| Error::new(ErrorCode::Closed, "the service has stopped; add it again"))?;
        Ok(job_id)
    }

    /// Calls an endpoint of a Gradio app (by `api_name` or `fn_index`) and returns the job id at once. Progress
    /// arrives as `Progress` events (with the app's `desc` text), gr.Info/Warning as `NodeText` (`log.info`, …),
    /// generator values as `NodeOutput`, then `JobCompleted` with the downloaded files and `ui = {"data": [...]}`.
    pub fn call(&self, service: &str, call: GradioCall, tag: Option<String>) -> Result<String> {
        self.ensure_open()?;
        if call.api_name.as_deref().is_none_or(|n| n.trim().is_empty()) && call.fn_index.is_none() {
            return Err(Error::new(
                ErrorCode::InvalidParameter,
                "a Gradio call needs api_name (e.g. \"/generate\") or fn_index",
            ));
        }
        let services = self.services.lock();
        let h = services
            .get(service)
            .ok_or_else(|| self.unknown_service_in(&services, service))?;
        let link = h.gradio(service)?;
        let job_id = uuid::Uuid::new_v4().to_string();
        let group = output_group(tag.as_deref(), service);
        let submission = Submission {
            workflow: Arc::new(serde_json::json!({
                "api_name": call.api_name,
                "fn_index": call.fn_index,
                "inputs": call.inputs,
            })),
            params: Vec::new(),
        };
        self.shared.register(&job_id, service, tag, submission);
        link.commands
            .send(GradioCommand::Call {
                job_id: job_id.clone(),
                call,
                group,
            })
            .map_err(|_| Error::new(ErrorCode::Closed, "the service has stopped; add it again"))?;
        Ok(job_id)
    }

    /// The models an OpenAI-compatible service offers (`GET /v1/models`). Blocks the calling thread.
    pub fn models(&self, service: &str) -> Result<Vec<crate::openai::protocol::Model>> {
        let http = {
            let services = self.services.lock();
            let h = services
                .get(service)
                .ok_or_else(|| self.unknown_service_in(&services, service))?;
            h.openai(service)?.http.clone()
        };
        let list = self.block_on(async move { http.models().await })?;
        Ok(list?.data)
    }

    /// Cancels a job by id on a server, including one submitted by another client or process.
    pub fn cancel_remote(&self, service: &str, prompt_id: &str) -> Result<crate::comfy::http::CancelOutcome> {
        let http = self.service_http(service)?;
        let id = prompt_id.to_string();
        self.block_on(async move { http.cancel_prompt(&id).await })?
    }

    fn service_http(&self, service: &str) -> Result<ComfyHttp> {
        let services = self.services.lock();
        let h = services
            .get(service)
            .ok_or_else(|| self.unknown_service_in(&services, service))?;
        Ok(h.comfy(service)?.http.clone())
    }

    /// The server's node schemas (`GET /object_info`), cached per service; `refresh` fetches them again.
    /// Blocks the calling thread (scripts and the CLI, not the UI thread).
    pub fn object_info(&self, service: &str, refresh: bool) -> Result<Arc<Value>> {
        let (http, slot) = {
            let services = self.services.lock();
            let h = services
                .get(service)
                .ok_or_else(|| self.unknown_service_in(&services, service))?;
            let c = h.comfy(service)?;
            (c.http.clone(), c.schema.clone())
        };
        if !refresh {
            if let Some(hit) = slot.lock().clone() {
                return Ok(hit.raw.clone());
            }
        }
        Ok(self
            .block_on(async move { fetch_schema(&http, &slot).await })??
            .raw
            .clone())
    }

    /// Uploads an image into the server's input folder; returns the name to put in a `LoadImage` node. Bytes
    /// uploaded before to this service are not sent again.
    pub fn upload_image(&self, service: &str, name: &str, bytes: Vec<u8>) -> Result<String> {
        use sha2::Digest;
        let (http, uploads) = {
            let services = self.services.lock();
            let h = services
                .get(service)
                .ok_or_else(|| self.unknown_service_in(&services, service))?;
            let c = h.comfy(service)?;
            (c.http.clone(), c.uploads.clone())
        };
        let key: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some(known) = uploads.lock().get(&key) {
            return Ok(known.clone());
        }
        let name = crate::net::files::safe_component(name, "upload.png");
        let stored = self.block_on(async move { http.upload_image(&name, bytes).await })??;
        uploads.lock().insert(key, stored.clone());
        Ok(stored)
    }
}
