//! ComfyUI's REST API over the hub's one pooled HTTP client.
use super::protocol::{
    node_problems, supports_targeted_interrupt, HistoryEntry, PromptAccepted, PromptRejected, QueueView,
};
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorCode, Result};
use crate::event::{JobError, NodeProblem};
use crate::net::body::{read_capped, read_prefix, ERROR_CAP, JSON_CAP};
use crate::service::metrics::RttWindow;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Short calls (queue, history, interrupt) must not hang the actor when a server stalls.
const SHORT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone)]
pub struct ComfyHttp {
    client: reqwest::Client,
    endpoint: Endpoint,
    token: Option<String>,
    /// Time to response headers of every API call, for the service's link metrics.
    latency: Arc<Mutex<RttWindow>>,
    /// Whether the server's `/interrupt` honours a prompt id: learnt from the version that `/system_stats`
    /// reports, which the service reads on every connection (a server may be upgraded in between).
    targeted_interrupt: Arc<Mutex<Option<bool>>>,
}

/// After a global interrupt on an older server: how often, and how far apart, the queue is read until our
/// prompt is seen stopped.
const CONFIRM_LOOKS: u32 = 50;
const CONFIRM_PAUSE: Duration = Duration::from_millis(100);

/// What `POST /prompt` said.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitOutcome {
    /// Queued under this id (the server's; old servers ignore ours). Non-empty problems = a partial 200.
    Accepted {
        prompt_id: String,
        problems: Vec<NodeProblem>,
    },
    /// The server refused the prompt; nothing was queued.
    Rejected(JobError),
}

impl ComfyHttp {
    pub fn new(client: reqwest::Client, endpoint: Endpoint, token: Option<String>) -> ComfyHttp {
        ComfyHttp {
            client,
            endpoint,
            token,
            latency: Arc::new(Mutex::new(RttWindow::default())),
            targeted_interrupt: Arc::new(Mutex::new(None)),
        }
    }

    /// Shares the latency window with the service's status, so `snapshot()` shows HTTP p50/p99.
    pub fn with_latency(mut self, latency: Arc<Mutex<RttWindow>>) -> ComfyHttp {
        self.latency = latency;
        self
    }

    /// Sends and records how long the server took to answer.
    async fn send(&self, rb: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
        let started = Instant::now();
        let resp = rb.send().await?;
        self.latency.lock().record(started.elapsed().as_secs_f64() * 1000.0);
        Ok(resp)
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, self.endpoint.http(path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn get_json(&self, path: &str, what: &str) -> Result<Value> {
        let resp = self
            .send(self.request(reqwest::Method::GET, path).timeout(SHORT_TIMEOUT))
            .await
            .map_err(|e| Error::http(what, e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_prefix(resp, ERROR_CAP, what).await.unwrap_or_default();
            return Err(Error::from_status(what, status.as_u16(), &body));
        }
        let bytes = read_capped(resp, JSON_CAP, what).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorCode::WrongService,
                format!(
                    "{what}: the answer is not JSON; is this really a ComfyUI server at {}?",
                    self.endpoint
                ),
            )
            .with_source(e)
        })
    }

    async fn post_json(&self, path: &str, body: &Value, what: &str) -> Result<()> {
        let resp = self
            .send(
                self.request(reqwest::Method::POST, path)
                    .timeout(SHORT_TIMEOUT)
                    .json(body),
            )
            .await
            .map_err(|e| Error::http(what, e))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            let body = read_prefix(resp, ERROR_CAP, what).await.unwrap_or_default();
            Err(Error::from_status(what, status.as_u16(), &body))
        }
    }

    /// `GET /system_stats`: proves it is ComfyUI and gives the version ("unknown" for servers that omit it).
    pub async fn system_stats(&self) -> Result<SystemStats> {
        let v = self.get_json("system_stats", "reading /system_stats").await?;
        let stats: super::protocol::SystemStatsBody = serde_json::from_value(v).map_err(|_| {
            Error::new(
                ErrorCode::WrongService,
                format!(
                    "something answers at {}, but it is not ComfyUI (no system stats)",
                    self.endpoint
                ),
            )
        })?;
        let version = stats.system.comfyui_version.unwrap_or_else(|| "unknown".into());
        *self.targeted_interrupt.lock() = Some(supports_targeted_interrupt(&version));
        Ok(SystemStats {
            version,
            simulator: stats.system.argv.iter().any(|a| a == SIMULATOR_ARGV),
            devices: stats.devices.into_iter().filter_map(|d| d.name).collect(),
        })
    }

    /// `POST /prompt`. Network failures are errors (the caller decides whether the prompt may have arrived).
    pub async fn submit(&self, prompt: &Value, prompt_id: &str, client_id: &str) -> Result<SubmitOutcome> {
        let body = json!({ "prompt": prompt, "client_id": client_id, "prompt_id": prompt_id });
        let resp = self
            .send(
                self.request(reqwest::Method::POST, "prompt")
                    .timeout(Duration::from_secs(60))
                    .json(&body),
            )
            .await
            .map_err(|e| Error::http("submitting the workflow", e))?;
        let status = resp.status();
        let bytes = read_capped(resp, JSON_CAP, "reading the submit answer").await?;
        if status.is_success() {
            // Only an object: serde would also fill the struct from an array (`["queued"]` → prompt id "queued").
            let acc: PromptAccepted = serde_json::from_slice::<Value>(&bytes)
                .and_then(|v| match v {
                    Value::Object(_) => serde_json::from_value(v),
                    _ => Err(<serde_json::Error as serde::de::Error>::custom("not a JSON object")),
                })
                .map_err(|e| {
                    Error::new(
                        ErrorCode::Protocol,
                        "the server accepted the workflow but its answer is not the expected JSON",
                    )
                    .with_source(e)
                })?;
            return Ok(SubmitOutcome::Accepted {
                prompt_id: acc.prompt_id.unwrap_or_else(|| prompt_id.to_string()),
                problems: node_problems(&acc.node_errors),
            });
        }
        if status.as_u16() == 400 {
            let rej: PromptRejected = serde_json::from_slice(&bytes).unwrap_or_default();
            let problems = node_problems(&rej.node_errors);
            let (kind, message) = rej
                .error
                .map(|e| (e.kind.unwrap_or_default(), e.message.unwrap_or_default()))
                .unwrap_or_default();
            let detail = problems
                .iter()
                .map(|p| {
                    let class = p.class_type.as_deref().unwrap_or("?");
                    format!(
                        "node {} ({class}) {}: {} {}",
                        p.node_id,
                        p.input.as_deref().unwrap_or(""),
                        p.message,
                        p.details
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            let mut msg = format!("the server rejected the workflow: {message}");
            if !detail.is_empty() {
                msg.push_str(&format!(" — {detail}"));
            }
            msg.push_str(". Fix the workflow or its parameters and submit again.");
            let mut err = JobError::simple("validation_failed", msg);
            err.exception_type = Some(kind);
            err.node_errors = problems;
            return Ok(SubmitOutcome::Rejected(err));
        }
        // The code comes from the one status mapping; the hint says what it means for a submission to ComfyUI.
        let e = Error::from_status("submitting the workflow", status.as_u16(), &bytes);
        let e = match status.as_u16() {
            413 => e.with_hint("the workflow is larger than the server's max upload size"),
            403 => e.with_hint("the server refused the request (origin check or a proxy's auth)"),
            401 => e.with_hint("the server wants credentials: set a token for this service"),
            404 => e.with_hint(&format!(
                "no ComfyUI prompt endpoint at {}; check the URL and base path",
                self.endpoint
            )),
            500 => e.with_hint("the server failed while reading the workflow (is it API format JSON?)"),
            _ => e,
        };
        Ok(SubmitOutcome::Rejected(e.to_job_error()))
    }

    pub async fn queue(&self) -> Result<QueueView> {
        let v = self.get_json("queue", "reading the queue").await?;
        Ok(QueueView::from_value(&v))
    }

    /// `GET /history/{id}`: `None` while unknown or unfinished.
    pub async fn history(&self, prompt_id: &str) -> Result<Option<HistoryEntry>> {
        let path = format!(
            "history/{}",
            percent_encoding::utf8_percent_encode(prompt_id, PATH_SEGMENT)
        );
        let v = self.get_json(&path, "reading the history").await?;
        match v.get(prompt_id) {
            Some(entry) => serde_json::from_value(entry.clone())
                .map(Some)
                .map_err(|e| Error::new(ErrorCode::Protocol, format!("unexpected history entry: {e}"))),
            None => Ok(None),
        }
    }

    /// Removes a pending prompt (ours only; never `clear`).
    pub async fn delete_pending(&self, prompt_id: &str) -> Result<()> {
        self.post_json(
            "queue",
            &json!({ "delete": [prompt_id] }),
            "removing the job from the queue",
        )
        .await
    }

    /// `POST /interrupt {"prompt_id"}`: stops only that prompt on ComfyUI ≥ 0.3.57; older servers ignore the
    /// body and stop whatever runs, so on those it is sent only after the queue showed ours running.
    pub async fn interrupt(&self, prompt_id: &str) -> Result<()> {
        self.post_json("interrupt", &json!({ "prompt_id": prompt_id }), "interrupting the job")
            .await
    }

    /// Whether `/interrupt` is targeted on this server (read from `/system_stats` if no connection told yet).
    async fn targeted_interrupt(&self) -> Result<bool> {
        let known = *self.targeted_interrupt.lock();
        match known {
            Some(targeted) => Ok(targeted),
            None => Ok(supports_targeted_interrupt(&self.system_stats().await?.version)),
        }
    }

    /// Removes or interrupts only `prompt_id`, wherever it is (never a bare global interrupt, never a clear).
    pub async fn cancel_prompt(&self, prompt_id: &str) -> Result<CancelOutcome> {
        let targeted = self.targeted_interrupt().await?;
        let q = self.queue().await?;
        if q.pending.iter().any(|p| p == prompt_id) {
            self.delete_pending(prompt_id).await?;
            let after = self.queue().await?;
            if after.running.iter().any(|p| p == prompt_id) {
                // It started between our two looks.
                return self.interrupt_running(prompt_id, &after, targeted).await;
            }
            if after.pending.iter().any(|p| p == prompt_id) {
                return Err(Error::new(
                    ErrorCode::HttpStatus,
                    "the server kept the job in its queue",
                ));
            }
            return Ok(CancelOutcome::Removed);
        }
        if q.running.iter().any(|p| p == prompt_id) {
            return self.interrupt_running(prompt_id, &q, targeted).await;
        }
        Ok(CancelOutcome::NotOnServer)
    }

    /// Stops `prompt_id`, which the queue just read shows running. An older server (no targeted interrupt)
    /// stops whatever runs: it is asked only when ours is the one running prompt, at once after that look, and
    /// afterwards the queue and history confirm what stopped.
    async fn interrupt_running(&self, prompt_id: &str, queue: &QueueView, targeted: bool) -> Result<CancelOutcome> {
        if targeted {
            self.interrupt(prompt_id).await?;
            return Ok(CancelOutcome::Interrupting);
        }
        if queue.running.len() != 1 {
            return Err(Error::new(
                ErrorCode::HttpStatus,
                "the server runs several prompts at once and interrupts them all; ours was not interrupted, so \
                 that no one else's job is stopped",
            ));
        }
        self.interrupt(prompt_id).await?;
        for _ in 0..CONFIRM_LOOKS {
            if !self.queue().await?.running.iter().any(|p| p == prompt_id) {
                break;
            }
            tokio::time::sleep(CONFIRM_PAUSE).await;
        }
        let ended = self.history(prompt_id).await?;
        let status = ended
            .as_ref()
            .and_then(|e| e.status.as_ref())
            .and_then(|s| s.status_str.as_deref());
        if status == Some("success") {
            // Ours ended just before the interrupt arrived, which may then have stopped the next prompt.
            log::warn!(
                "{prompt_id} finished before the interrupt arrived; this server (without targeted interrupt) may \
                 have stopped the prompt that ran next"
            );
            return Ok(CancelOutcome::NotOnServer);
        }
        Ok(CancelOutcome::Interrupting)
    }

    pub async fn object_info(&self) -> Result<Value> {
        self.get_json("object_info", "reading /object_info").await
    }

    /// Streams `GET /view` into `dir` as `name` (shared writer: temp file, fsync, rename). Returns the path, the
    /// byte count and the SHA-256.
    pub async fn download(
        &self,
        filename: &str,
        subfolder: &str,
        file_type: &str,
        dir: &std::path::Path,
        name: &str,
    ) -> Result<(std::path::PathBuf, u64, String)> {
        let what = format!("downloading {filename}");
        let resp = self
            .send(
                self.request(reqwest::Method::GET, "view")
                    .query(&[("filename", filename), ("subfolder", subfolder), ("type", file_type)])
                    .timeout(crate::net::download::DOWNLOAD_TIMEOUT),
            )
            .await
            .map_err(|e| Error::http(&what, e))?;
        if !resp.status().is_success() {
            return Err(crate::net::download::status_error(&what, resp).await);
        }
        crate::net::download::save(resp, dir, name, &what).await
    }

    /// `POST /upload/image`: returns the name to use in `LoadImage`.
    pub async fn upload_image(&self, name: &str, bytes: Vec<u8>) -> Result<String> {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
        let form = reqwest::multipart::Form::new().part("image", part);
        let resp = self
            .send(
                self.request(reqwest::Method::POST, "upload/image")
                    .multipart(form)
                    .timeout(Duration::from_secs(300)),
            )
            .await
            .map_err(|e| Error::http("uploading an image", e))?;
        let status = resp.status();
        let bytes = read_capped(resp, ERROR_CAP, "reading the upload answer").await?;
        if !status.is_success() {
            return Err(Error::from_status("uploading an image", status.as_u16(), &bytes));
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::protocol("uploading an image: the answer is not JSON").with_source(e))?;
        let name = v.get("name").and_then(Value::as_str).unwrap_or(name);
        Ok(match v.get("subfolder").and_then(Value::as_str) {
            Some(sub) if !sub.is_empty() => format!("{sub}/{name}"),
            _ => name.to_string(),
        })
    }
}

const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What a cancel found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Was pending, is now gone from the queue.
    Removed,
    /// Running; `execution_interrupted` will follow.
    Interrupting,
    /// Neither pending nor running: it finished or vanished.
    NotOnServer,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SystemStats {
    pub version: String,
    pub devices: Vec<String>,
    /// Director Link's own simulator (`director_link.testing`), not a real ComfyUI.
    pub simulator: bool,
}

/// What the simulator puts in `system.argv`, so tools can tell it from a real server.
pub const SIMULATOR_ARGV: &str = "director-link-simulator";
