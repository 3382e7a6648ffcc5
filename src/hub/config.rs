//! The hub's settings and the plain values its API returns; service kinds, their aliases and default ports.
use crate::endpoint::Endpoint;
use crate::event::QueueStats;
use crate::service::{BackoffPolicy, BreakerPolicy, ServiceSnapshot};
use crate::tracker::DEFAULT_FINISHED_CAP;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Longest silence inside a streamed chat answer before the job fails `timeout`.
pub(super) const STREAM_IDLE: Duration = Duration::from_secs(300);

/// How long a Gradio call waits for its app's first `/config` before it fails.
pub(super) const GRADIO_CONNECT_WAIT: Duration = Duration::from_secs(30);

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Where results are written (`<output_dir>/<tag or service>/<job id>/`).
    pub output_dir: PathBuf,
    /// Events waiting for `poll()` before progress/previews are coalesced.
    pub event_capacity: usize,
    /// Approximate bytes the waiting events may hold before previews, then progress, are coalesced or dropped
    /// (lifecycle events are always kept).
    pub event_budget_bytes: usize,
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
            event_budget_bytes: crate::event::DEFAULT_EVENT_BUDGET,
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

pub fn default_output_dir() -> PathBuf {
    std::env::current_dir()
        .unwrap_or_else(|_| std::env::temp_dir())
        .join("director-link-output")
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
    /// Every pool: its servers (state, queue, which job runs where) and how their node lists differ.
    pub pools: Vec<super::PoolSnapshot>,
    pub jobs: Vec<crate::tracker::JobSnapshot>,
    pub events: QueueStats,
}

/// The output sub-folder of a job: its tag (a shot name), else its service's name.
pub(super) fn output_group(tag: Option<&str>, service: &str) -> String {
    tag.filter(|t| !t.trim().is_empty()).unwrap_or(service).to_string()
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
pub(super) fn canonical_kind(kind: &str) -> &str {
    match kind {
        "litellm" => "openai",
        "wan2gp_mcp" | "wangp-mcp" | "wan2gp-mcp" => "wangp_mcp",
        "wan2gp" | "wangp" | "rvc" | "audioldm" => "gradio",
        other => other,
    }
}

/// The port of a kind or alias as the user typed it (RVC's WebUI is a Gradio app on its own port).
pub(super) fn default_port(kind: &str) -> u16 {
    match (kind, canonical_kind(kind)) {
        ("rvc", _) => 7865,
        (_, "openai") => crate::openai::DEFAULT_PORT,
        (_, "wangp_mcp") => crate::mcp::DEFAULT_PORT,
        (_, "gradio") => crate::gradio::DEFAULT_PORT,
        _ => 8188,
    }
}

/// The name a reader expects: the kind or alias they typed ("rvc", "litellm", "comfyui"), with `@host:port` added
/// only when the address is not that kind's usual port on this machine.
pub(super) fn default_name(kind: &str, endpoint: &Endpoint) -> String {
    if endpoint.is_loopback() && endpoint.port() == default_port(kind) {
        kind.to_string()
    } else {
        format!("{kind}@{}:{}", endpoint.host(), endpoint.port())
    }
}
