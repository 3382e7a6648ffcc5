//! Probing addresses, the one place that does it: a few small GETs, each with a short deadline and a capped body
//! (read through `net::body`), classified by `fingerprint`. Discovery (`probe`) asks every fingerprint; the hub's
//! `probe` (`probe_comfyui`) asks only "is a ComfyUI here", with the same request and the same classification.
//! Discovery's client never follows redirects nor uses proxies, so a probe only reaches the address asked.
use super::fingerprint::{self, GradioConfig, ServerKind};
use super::{Finding, PortRole, Target};
use crate::endpoint::Endpoint;
use crate::error::root_cause;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Bodies of the small probes are capped; `/config` of a big Gradio app (Wan2GP) can be many megabytes.
const SMALL_BODY: usize = 256 * 1024;
const CONFIG_BODY: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Comfy,
    Litellm,
    Gradio,
    Mcp,
}

impl Check {
    fn path(self) -> &'static str {
        match self {
            Check::Comfy => "system_stats",
            Check::Litellm => "health/liveliness",
            Check::Gradio => "config",
            Check::Mcp => "mcp/",
        }
    }

    fn cap(self) -> usize {
        match self {
            Check::Gradio => CONFIG_BODY,
            _ => SMALL_BODY,
        }
    }
}

/// The likeliest fingerprint first; every port still gets the three GETs (never trust the port). The MCP
/// `initialize` POST goes only to MCP's port and to ports the user named.
fn order(role: PortRole) -> &'static [Check] {
    match role {
        PortRole::Comfyui => &[Check::Comfy, Check::Litellm, Check::Gradio],
        PortRole::Any => &[Check::Comfy, Check::Litellm, Check::Gradio, Check::Mcp],
        PortRole::Litellm => &[Check::Litellm, Check::Comfy, Check::Gradio],
        PortRole::Gradio => &[Check::Gradio, Check::Comfy, Check::Litellm],
        PortRole::Mcp => &[Check::Mcp, Check::Comfy, Check::Litellm, Check::Gradio],
    }
}

/// What an MCP client says first; a stateless server (WanGP) answers it on its own.
const MCP_INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"director-link-discovery","version":"1"}}}"#;

/// What `Finding::found` keeps of an answer.
pub(super) struct AnswerMeta {
    pub server: Option<String>,
    pub latency_ms: f64,
}

struct Answer {
    status: u16,
    litellm_version: Option<String>,
    body: Vec<u8>,
    meta: AnswerMeta,
}

enum Failure {
    /// Refused, unreachable or no TCP handshake within the connect timeout.
    Nothing(String),
    /// Connected, but no complete answer in time.
    Silent,
    /// Connected, but the answer was not HTTP or broke off.
    Garbled(String),
}

async fn get(client: &reqwest::Client, base: &url::Url, check: Check, deadline: Instant) -> Result<Answer, Failure> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Failure::Silent);
    }
    let url = base.join(check.path()).map_err(|e| Failure::Garbled(e.to_string()))?;
    let started = Instant::now();
    let request = match check {
        Check::Mcp => client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json, text/event-stream")
            .body(MCP_INITIALIZE),
        _ => client.get(url),
    };
    let sent = request.timeout(left).send().await;
    let resp = sent.map_err(|e| {
        let e = e.without_url();
        if e.is_connect() {
            Failure::Nothing(root_cause(&e))
        } else if e.is_timeout() {
            Failure::Silent
        } else {
            Failure::Garbled(root_cause(&e))
        }
    })?;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(120).collect::<String>())
    };
    let (status, server, litellm_version) = (resp.status().as_u16(), header("server"), header("x-litellm-version"));
    let left = deadline.saturating_duration_since(Instant::now());
    let read = crate::net::body::read_prefix(resp, check.cap(), "reading the probe answer");
    let body = match tokio::time::timeout(left, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => return Err(Failure::Garbled(e.message)),
        Err(_) => return Err(Failure::Silent),
    };
    Ok(Answer {
        status,
        litellm_version,
        body,
        meta: AnswerMeta { server, latency_ms },
    })
}

fn describe_devices(devices: &[String]) -> String {
    match devices {
        [] => "no devices listed".to_string(),
        [one] => format!("1 device ({one})"),
        many => format!("{} devices", many.len()),
    }
}

/// Probes one address; never fails (a failure is a finding too) and returns by `deadline`.
pub async fn probe(client: reqwest::Client, target: Target, deadline: Instant) -> Finding {
    let mut first: Option<(Check, u16, Option<String>)> = None;
    let timeout_s = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
        .as_secs_f64();
    for &check in order(target.role) {
        let answer = match get(&client, &target.base, check, deadline).await {
            Ok(a) => a,
            Err(Failure::Nothing(why)) => {
                // The first request decides: a port that refused once is not asked again.
                let summary = if first.is_some() {
                    format!("stopped answering while probed ({why})")
                } else {
                    "nothing there".to_string()
                };
                let kind = if first.is_some() {
                    ServerKind::Unknown
                } else {
                    ServerKind::None
                };
                return Finding::new(&target, kind, summary);
            }
            Err(Failure::Silent) => {
                let mut f = Finding::new(
                    &target,
                    ServerKind::Unknown,
                    format!("accepts connections but gave no answer within {timeout_s:.1} s (busy or stalled)"),
                );
                if let Some((_, _, server)) = first {
                    f.server_header = server;
                }
                return f;
            }
            Err(Failure::Garbled(why)) => {
                return Finding::new(
                    &target,
                    ServerKind::Unknown,
                    format!("something else answers here (not HTTP as expected: {why})"),
                )
            }
        };
        if first.is_none() {
            first = Some((check, answer.status, answer.meta.server.clone()));
        }
        if let Some(found) = classify(&client, &target, check, &answer, deadline).await {
            return found;
        }
    }
    let (check, status, server) = first.unwrap_or((Check::Comfy, 0, None));
    let via = match &server {
        Some(s) => format!(", server: {s}"),
        None => String::new(),
    };
    let mut f = Finding::new(
        &target,
        ServerKind::Unknown,
        format!("something else answers here (HTTP {status} for /{}{via})", check.path()),
    );
    f.server_header = server;
    f
}

async fn classify(
    client: &reqwest::Client,
    target: &Target,
    check: Check,
    answer: &Answer,
    deadline: Instant,
) -> Option<Finding> {
    match check {
        Check::Comfy if answer.status == 200 => {
            let fp = fingerprint::comfyui(&answer.body)?;
            let summary = if fp.simulator {
                format!("Director Link simulator (speaks ComfyUI {})", fp.version)
            } else {
                format!("ComfyUI {}, {}", fp.version, describe_devices(&fp.devices))
            };
            let mut f = Finding::found(target, ServerKind::Comfyui, "ComfyUI", &answer.meta, summary);
            f.version = Some(fp.version);
            f.simulator = fp.simulator;
            f.devices = fp.devices;
            Some(f)
        }
        Check::Litellm if answer.status == 200 && fingerprint::litellm_liveliness(&answer.body) => {
            let mut version = answer.litellm_version.clone();
            if version.is_none() {
                // Older proxies tell their version on readiness; 1.10x ones do not, and that is fine.
                version = readiness_version(client, target, deadline).await;
            }
            let summary = match &version {
                Some(v) => format!("LiteLLM proxy {v} (OpenAI-compatible)"),
                None => "LiteLLM proxy (OpenAI-compatible)".to_string(),
            };
            let mut f = Finding::found(target, ServerKind::Litellm, "LiteLLM", &answer.meta, summary);
            f.version = version;
            Some(f)
        }
        Check::Gradio if answer.status == 401 && fingerprint::gradio_login_required(&answer.body) => {
            let mut f = Finding::found(
                target,
                ServerKind::Gradio,
                "Gradio app (login required)",
                &answer.meta,
                "a Gradio app behind a login (sign in to see which)".to_string(),
            );
            f.login_required = true;
            Some(f)
        }
        Check::Gradio if answer.status == 200 => {
            let config = GradioConfig::parse(&answer.body)?;
            let app = fingerprint::classify_gradio(&config);
            let gradio = format!("Gradio {}", config.version);
            let summary = match (app.kind, &app.app_version) {
                (ServerKind::Gradio, _) => format!("Gradio app '{}' ({gradio})", app.name),
                (_, Some(v)) => format!("{} v{v} ({gradio})", app.name),
                (_, None) => format!("{} ({gradio})", app.name),
            };
            let name = match app.kind {
                ServerKind::Gradio => format!("Gradio app {}", app.name),
                _ => app.name.clone(),
            };
            let mut f = Finding::found(target, app.kind, &name, &answer.meta, summary);
            f.version = Some(config.version.clone());
            f.app_version = app.app_version;
            f.protocol = Some(config.protocol_name().to_string());
            f.api_prefix = config.api_prefix.clone().filter(|p| !p.is_empty());
            Some(f)
        }
        Check::Mcp if answer.status == 200 => {
            let (name, version) = fingerprint::mcp_server_info(&answer.body)?;
            if name != "WanGP" {
                // Some other MCP server: named, not guessed at.
                let mut f = Finding::found(
                    target,
                    ServerKind::Unknown,
                    &format!("MCP server {name}"),
                    &answer.meta,
                    format!("an MCP server calling itself '{name}' (not one this build drives)"),
                );
                f.version = Some(version).filter(|v| !v.is_empty());
                return Some(f);
            }
            let mut f = Finding::found(
                target,
                ServerKind::WangpMcp,
                "WanGP (MCP)",
                &answer.meta,
                format!("WanGP in MCP server mode (mcp {version})"),
            );
            f.version = Some(version).filter(|v| !v.is_empty());
            f.protocol = Some("mcp".into());
            Some(f)
        }
        _ => None,
    }
}

async fn readiness_version(client: &reqwest::Client, target: &Target, deadline: Instant) -> Option<String> {
    let url = target.base.join("health/readiness").ok()?;
    let left = deadline.saturating_duration_since(Instant::now());
    let resp = client.get(url).timeout(left).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let read = crate::net::body::read_prefix(resp, SMALL_BODY, "reading /health/readiness");
    let body = tokio::time::timeout(left, read).await.ok()?.ok()?;
    fingerprint::litellm_readiness_version(&body)
}

/// What the hub's `probe()` says about one address.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    pub url: String,
    /// `comfyui`, `unknown` (something else answers) or `none` (nothing listens).
    pub kind: String,
    pub version: Option<String>,
    pub devices: Vec<String>,
    pub latency_ms: Option<f64>,
    /// True for Director Link's own simulator.
    pub simulator: bool,
    /// What a person should read: "ComfyUI 0.3.64, 1 device (cpu)", "nothing there", ...
    pub summary: String,
}

impl ProbeResult {
    fn not_comfyui(url: String, kind: &str, latency_ms: Option<f64>, summary: String) -> ProbeResult {
        ProbeResult {
            url,
            kind: kind.into(),
            version: None,
            devices: Vec::new(),
            latency_ms,
            simulator: false,
            summary,
        }
    }
}

/// Is a ComfyUI at `url`, which version, how fast does it answer. Never fails; returns within about `timeout`.
pub async fn probe_comfyui(client: reqwest::Client, url: &str, timeout: Duration) -> ProbeResult {
    let endpoint = match Endpoint::parse(url, 8188) {
        Ok(e) => e,
        Err(e) => return ProbeResult::not_comfyui(url.to_string(), "none", None, e.message),
    };
    let base = endpoint.base().to_string();
    let root = match url::Url::parse(&base) {
        Ok(u) => u,
        Err(e) => return ProbeResult::not_comfyui(base, "none", None, e.to_string()),
    };
    let deadline = Instant::now() + timeout;
    let answer = match get(&client, &root, Check::Comfy, deadline).await {
        Ok(a) => a,
        Err(Failure::Nothing(_)) => return ProbeResult::not_comfyui(base, "none", None, "nothing there".into()),
        Err(Failure::Silent) => {
            let summary = format!(
                "no answer within {:.1} s (busy, stalled or filtered)",
                timeout.as_secs_f64()
            );
            return ProbeResult::not_comfyui(base, "unknown", None, summary);
        }
        Err(Failure::Garbled(why)) => {
            let summary = format!("something else answers here (not HTTP as expected: {why})");
            return ProbeResult::not_comfyui(base, "unknown", None, summary);
        }
    };
    let latency = answer.meta.latency_ms;
    let found = (answer.status == 200)
        .then(|| fingerprint::comfyui(&answer.body))
        .flatten();
    let Some(fp) = found else {
        let summary = format!(
            "something else answers here (HTTP {} for /system_stats, not ComfyUI's system stats)",
            answer.status
        );
        return ProbeResult::not_comfyui(base, "unknown", Some(latency), summary);
    };
    let summary = if fp.simulator {
        format!(
            "Director Link simulator (speaks ComfyUI {}), answered in {latency:.0} ms",
            fp.version
        )
    } else {
        format!(
            "ComfyUI {}, {}, answered in {latency:.0} ms",
            fp.version,
            describe_devices(&fp.devices)
        )
    };
    ProbeResult {
        url: base,
        kind: "comfyui".into(),
        summary,
        simulator: fp.simulator,
        version: Some(fp.version),
        devices: fp.devices,
        latency_ms: Some(latency),
    }
}

/// Probes several addresses for a ComfyUI at once.
pub async fn probe_all(client: reqwest::Client, urls: &[String], timeout: Duration) -> Vec<ProbeResult> {
    let tasks: Vec<_> = urls
        .iter()
        .map(|u| {
            let (client, u) = (client.clone(), u.clone());
            tokio::spawn(async move { probe_comfyui(client, &u, timeout).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for (t, url) in tasks.into_iter().zip(urls) {
        out.push(
            t.await
                .unwrap_or_else(|_| ProbeResult::not_comfyui(url.clone(), "none", None, "probe did not finish".into())),
        );
    }
    out
}
