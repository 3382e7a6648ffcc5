//! One actor task per OpenAI-compatible service: checks health on a timer (cheap probes only) and runs chat jobs,
//! each in its own task so one slow answer never holds up another or the health checks. Cancelling a job aborts
//! its request.
use super::http::{OpenAiHttp, MAX_RETRY_AFTER};
use super::protocol::{ChatCompletion, Frame};
use crate::error::{Error, ErrorCode};
use crate::event::{EventKind, ServiceState};
use crate::net::sse::SseDecoder;
use crate::service::{BackoffPolicy, HealthRhythm, ServiceStatus};
use crate::tracker::Shared;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// Per-service settings.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Health check interval while the server answers.
    pub heartbeat: Duration,
    /// Waits between health checks while it does not.
    pub backoff: BackoffPolicy,
    /// Longest silence inside a streamed answer before the job fails `timeout`.
    pub stream_idle: Duration,
}

/// One chat request as the hub hands it over.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Value,
    /// `None`: the server's first listed model.
    pub model: Option<String>,
    pub stream: bool,
    /// Extra request fields (`temperature`, `max_tokens`, ...), sent as they are.
    pub options: Map<String, Value>,
    /// Retries on 429/5xx/connection failures before the first token (bounded, `Retry-After` honoured).
    pub max_retries: u32,
}

impl ChatRequest {
    /// The JSON body for `model`.
    pub fn body(&self, model: &str) -> Value {
        let mut body = self.options.clone();
        body.insert("model".into(), model.into());
        body.insert("messages".into(), self.messages.clone());
        body.insert("stream".into(), self.stream.into());
        if self.stream && !body.contains_key("stream_options") {
            body.insert("stream_options".into(), json!({ "include_usage": true }));
        }
        Value::Object(body)
    }
}

/// What the hub asks of the service.
#[derive(Debug, Clone)]
pub enum Command {
    Chat { job_id: String, request: ChatRequest },
    Cancel { job_id: String },
    Reconnect,
}

impl crate::service::ActorCommand for Command {
    const KIND: &'static str = "openai";
    const USAGE: &'static str = "use chat() with it";
    fn cancel(job_id: String) -> Self {
        Command::Cancel { job_id }
    }
    fn reconnect() -> Self {
        Command::Reconnect
    }
}

/// Retries never exceed this, whatever was asked.
pub const MAX_RETRIES: u32 = 10;
/// Wait before retry n (1-based) when the server gave no `Retry-After`: 0.5 s, 1 s, 2 s, … capped at 8 s.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(4)))
}

pub struct OpenAiService {
    name: String,
    http: OpenAiHttp,
    shared: Arc<Shared>,
    status: Arc<ServiceStatus>,
    config: OpenAiConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    jobs: HashMap<String, AbortHandle>,
    done_tx: mpsc::UnboundedSender<String>,
    done_rx: mpsc::UnboundedReceiver<String>,
}

impl OpenAiService {
    pub fn new(
        name: &str,
        http: OpenAiHttp,
        shared: Arc<Shared>,
        status: Arc<ServiceStatus>,
        config: OpenAiConfig,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> OpenAiService {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        OpenAiService {
            name: name.to_string(),
            http,
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
        self.status.set_state(&self.shared, ServiceState::Connecting, None);
        let mut next_check = tokio::time::Instant::now();
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None => break,
                    Some(Command::Chat { job_id, request }) => self.start_job(job_id, request),
                    Some(Command::Cancel { job_id }) => self.cancel(&job_id),
                    Some(Command::Reconnect) => next_check = tokio::time::Instant::now(),
                },
                Some(done) = self.done_rx.recv() => {
                    self.jobs.remove(&done);
                }
                _ = tokio::time::sleep_until(next_check) => {
                    let checked = self.http.health().await;
                    let outcome = match &checked {
                        Ok(h) => Ok(Some(Duration::from_secs_f64(h.latency_ms / 1000.0))),
                        Err(e) => Err(e.message.as_str()),
                    };
                    let wait = rhythm.after(&self.status, &self.shared, outcome);
                    next_check = tokio::time::Instant::now() + wait;
                }
            }
        }
        // The service was removed: its unfinished chats end now rather than hang.
        for (job_id, handle) in self.jobs.drain() {
            handle.abort();
            self.shared.emit(EventKind::JobCancelled { job_id });
        }
        self.status.set_state(&self.shared, ServiceState::Closed, None);
    }

    fn start_job(&mut self, job_id: String, request: ChatRequest) {
        let run = ChatRun {
            http: self.http.clone(),
            shared: self.shared.clone(),
            service: self.name.clone(),
            job_id: job_id.clone(),
            stream_idle: self.config.stream_idle,
        };
        let done = self.done_tx.clone();
        let id = job_id.clone();
        let task = tokio::spawn(async move {
            run.run(request).await;
            let _ = done.send(id);
        });
        self.jobs.insert(job_id, task.abort_handle());
    }

    fn cancel(&mut self, job_id: &str) {
        if let Some(handle) = self.jobs.remove(job_id) {
            handle.abort();
            log::info!("{}: job {job_id} cancelled", self.name);
            self.shared.emit(EventKind::JobCancelled {
                job_id: job_id.to_string(),
            });
        }
    }
}

/// One chat job.
struct ChatRun {
    http: OpenAiHttp,
    shared: Arc<Shared>,
    service: String,
    job_id: String,
    stream_idle: Duration,
}

/// What a finished answer says, per choice.
#[derive(Default)]
struct Answer {
    texts: BTreeMap<u32, String>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    model: Option<String>,
    id: Option<String>,
    pieces: u64,
}

impl ChatRun {
    fn fail(&self, e: &Error, attempts: u32) {
        self.shared
            .fail_job(&self.service, &self.job_id, super::error::job_error(e, attempts));
    }

    async fn run(self, request: ChatRequest) {
        let started = Instant::now();
        let model = match &request.model {
            Some(m) => m.clone(),
            None => match self.http.models().await {
                Ok(list) => match list.data.into_iter().next() {
                    Some(m) => m.id,
                    None => {
                        let e = Error::new(
                            ErrorCode::BadRequest,
                            "the server lists no models; pass model= explicitly",
                        );
                        return self.fail(&e, 1);
                    }
                },
                Err(e) => return self.fail(&e, 1),
            },
        };
        let body = request.body(&model);
        let max_retries = request.max_retries.min(MAX_RETRIES);
        let mut attempt = 0u32;
        let resp = loop {
            attempt += 1;
            match self.http.start_chat(&body, request.stream).await {
                Ok(resp) => break resp,
                Err(e) if e.is_retryable() && attempt <= max_retries => {
                    let wait = e.retry_after().unwrap_or_else(|| retry_delay(attempt));
                    if wait > MAX_RETRY_AFTER {
                        let mut e = e;
                        e.message = format!("{} (the server asks to wait {} s)", e.message, wait.as_secs());
                        return self.fail(&e, attempt);
                    }
                    log::info!(
                        "{}: job {} attempt {attempt} failed [{}]; retrying in {:.1} s",
                        self.service,
                        self.job_id,
                        e.code.as_str(),
                        wait.as_secs_f64()
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return self.fail(&e, attempt),
            }
        };
        self.shared.emit(EventKind::JobStarted {
            job_id: self.job_id.clone(),
            service: self.service.clone(),
            cached_nodes: Vec::new(),
        });
        let streamed = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        let result = if streamed {
            self.read_stream(resp).await
        } else {
            self.read_whole(resp).await
        };
        match result {
            Ok(mut answer) => {
                answer.model.get_or_insert(model);
                let text = answer.texts.get(&0).cloned().unwrap_or_default();
                let mut ui = json!({
                    "text": text,
                    "usage": answer.usage.unwrap_or(Value::Null),
                    "model": answer.model,
                    "finish_reason": answer.finish_reason,
                    "id": answer.id,
                });
                if answer.texts.len() > 1 {
                    ui["choices"] = answer.texts.values().cloned().collect::<Vec<_>>().into();
                }
                self.shared.emit(EventKind::JobCompleted {
                    job_id: self.job_id.clone(),
                    outputs: Vec::new(),
                    ui,
                    elapsed_seconds: started.elapsed().as_secs_f64(),
                });
            }
            Err(e) => self.fail(&e, 1),
        }
    }

    fn delta(&self, answer: &mut Answer, choice: u32, text: String) {
        if text.is_empty() {
            return;
        }
        answer.texts.entry(choice).or_default().push_str(&text);
        self.shared.emit(EventKind::TextDelta {
            job_id: self.job_id.clone(),
            text,
            index: answer.pieces,
            choice,
        });
        answer.pieces += 1;
    }

    async fn read_whole(&self, resp: reqwest::Response) -> Result<Answer, Error> {
        let what = "reading the chat answer";
        let body = crate::net::body::read_capped(resp, crate::net::body::JSON_CAP, what).await?;
        if let Some(err) = super::protocol::ErrorBody::parse(&body) {
            return Err(super::error::mid_stream(err, self.http.secret()));
        }
        let completion: ChatCompletion = serde_json::from_slice(&body)
            .map_err(|_| Error::new(ErrorCode::Protocol, "the chat answer is not a chat.completion object"))?;
        let mut answer = Answer {
            usage: completion.usage,
            model: completion.model,
            id: completion.id,
            ..Default::default()
        };
        for c in completion.choices {
            if c.index == 0 {
                answer.finish_reason = c.finish_reason.clone();
            }
            self.delta(&mut answer, c.index, c.message.content.unwrap_or_default());
        }
        Ok(answer)
    }

    async fn read_stream(&self, mut resp: reqwest::Response) -> Result<Answer, Error> {
        let mut decoder = SseDecoder::new();
        let mut answer = Answer::default();
        loop {
            let chunk = match tokio::time::timeout(self.stream_idle, resp.chunk()).await {
                Err(_) => {
                    return Err(Error::new(
                        ErrorCode::Timeout,
                        format!(
                            "the answer stopped for {:.0} s in the middle of the stream",
                            self.stream_idle.as_secs_f64()
                        ),
                    ))
                }
                Ok(Err(e)) => {
                    let e = e.without_url();
                    return Err(Error::new(
                        ErrorCode::ConnectionFailed,
                        format!("the stream broke off: {}", crate::error::root_cause(&e)),
                    )
                    .with_source(e));
                }
                Ok(Ok(c)) => c,
            };
            let datas = match &chunk {
                Some(bytes) => decoder.push(bytes)?,
                None => decoder.finish(),
            };
            for data in datas {
                match Frame::parse(&data) {
                    Frame::Done => return Ok(answer),
                    Frame::Error(e) => return Err(super::error::mid_stream(e, self.http.secret())),
                    Frame::Unknown(text) => log::debug!("{}: ignored stream frame {text:?}", self.service),
                    Frame::Chunk(c) => {
                        if c.usage.as_ref().is_some_and(|u| !u.is_null()) {
                            answer.usage = c.usage.clone();
                        }
                        if answer.model.is_none() {
                            answer.model = c.model.clone();
                        }
                        if answer.id.is_none() {
                            answer.id = c.id.clone();
                        }
                        for choice in c.choices {
                            if choice.index == 0 && choice.finish_reason.is_some() {
                                answer.finish_reason = choice.finish_reason.clone();
                            }
                            self.delta(&mut answer, choice.index, choice.delta.content.unwrap_or_default());
                        }
                    }
                }
            }
            if chunk.is_none() {
                // No [DONE]: complete only if the model said it was finished.
                return if answer.finish_reason.is_some() {
                    Ok(answer)
                } else {
                    Err(Error::new(
                        ErrorCode::ConnectionFailed,
                        "the stream ended before the answer was complete",
                    ))
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_options_and_asks_for_usage_when_streaming() {
        let mut options = Map::new();
        options.insert("temperature".into(), json!(0.2));
        let req = ChatRequest {
            messages: json!([{"role": "user", "content": "hi"}]),
            model: None,
            stream: true,
            options,
            max_retries: 2,
        };
        let body = req.body("mock-gpt");
        assert_eq!(body["model"], "mock-gpt");
        assert_eq!(body["temperature"], json!(0.2));
        assert_eq!(body["stream_options"]["include_usage"], true);
        let whole = ChatRequest { stream: false, ..req }.body("m");
        assert!(whole.get("stream_options").is_none());
    }

    #[test]
    fn retry_delays_grow_and_are_capped() {
        assert_eq!(retry_delay(1), Duration::from_millis(500));
        assert_eq!(retry_delay(2), Duration::from_secs(1));
        assert_eq!(retry_delay(30), Duration::from_secs(8));
    }
}
