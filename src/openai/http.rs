//! The REST calls of an OpenAI-compatible server over the hub's pooled client. The key travels only in the
//! `Authorization` header (marked sensitive) and is never part of a message, a log line or a URL.
use super::protocol::ModelList;
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorCode};
use crate::service::metrics::RttWindow;
use parking_lot::Mutex;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Health and model listing must not hang the actor when a server stalls.
const SHORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `Retry-After` honoured; a longer one fails the job with the server's advice in the message.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
const ERROR_BODY_CAP: usize = crate::net::body::ERROR_CAP;

/// A Bearer key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: String) -> Option<ApiKey> {
        let key = key.trim().to_string();
        (!key.is_empty()).then_some(ApiKey(key))
    }

    /// The key given, else `DIRECTOR_LINK_OPENAI_KEY`, else none.
    pub fn given_or_env(token: Option<String>) -> Option<ApiKey> {
        token
            .and_then(ApiKey::new)
            .or_else(|| std::env::var(super::KEY_ENV).ok().and_then(ApiKey::new))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

#[derive(Clone)]
pub struct OpenAiHttp {
    client: reqwest::Client,
    endpoint: Endpoint,
    /// `…/v1/`: where `models` and `chat/completions` live.
    api_root: url::Url,
    /// The server root, where LiteLLM's `health/liveliness` lives.
    root: url::Url,
    key: Option<ApiKey>,
    latency: Arc<Mutex<RttWindow>>,
}

/// What a health check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub latency_ms: f64,
    /// LiteLLM answered `/health/liveliness`; other servers are checked with `/v1/models`.
    pub litellm: bool,
}

impl OpenAiHttp {
    /// `endpoint` may be the server root (`http://host:4000/`) or the API root (`http://host:11434/v1/`).
    pub fn new(client: reqwest::Client, endpoint: Endpoint, key: Option<ApiKey>) -> crate::error::Result<OpenAiHttp> {
        let bad = |e: url::ParseError| crate::error::Error::new(ErrorCode::InvalidUrl, format!("{endpoint}: {e}"));
        let base = url::Url::parse(endpoint.base()).map_err(bad)?;
        let (root, api_root) = if base.path().ends_with("/v1/") {
            (base.join("../").map_err(bad)?, base)
        } else {
            (base.clone(), base.join("v1/").map_err(bad)?)
        };
        Ok(OpenAiHttp {
            client,
            endpoint,
            api_root,
            root,
            key,
            latency: Arc::new(Mutex::new(RttWindow::default())),
        })
    }

    pub fn with_latency(mut self, latency: Arc<Mutex<RttWindow>>) -> OpenAiHttp {
        self.latency = latency;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// For scrubbing server messages.
    pub fn secret(&self) -> Option<&str> {
        self.key.as_ref().map(ApiKey::expose)
    }

    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, url);
        match &self.key {
            // reqwest marks a bearer header sensitive: it is left out of its Debug output.
            Some(k) => rb.bearer_auth(k.expose()),
            None => rb,
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response, Error> {
        let started = Instant::now();
        let resp = rb.send().await.map_err(|e| Error::http(what, e))?;
        self.latency.lock().record(started.elapsed().as_secs_f64() * 1000.0);
        Ok(resp)
    }

    /// Turns a non-2xx answer into the typed error (with `Retry-After`).
    pub async fn failure(&self, resp: reqwest::Response) -> Error {
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let read = crate::net::body::read_prefix(resp, ERROR_BODY_CAP, "reading the error answer");
        let body = match tokio::time::timeout(SHORT_TIMEOUT, read).await {
            Ok(Ok(body)) => body,
            _ => Vec::new(),
        };
        super::error::failure(status, &body, retry_after, self.secret())
    }

    /// `GET /health/liveliness` (never `/health`, which runs a completion on every model); for servers that are
    /// not LiteLLM (404 there), `GET /v1/models` proves the server is up.
    pub async fn health(&self) -> Result<Health, Error> {
        let started = Instant::now();
        let url = self
            .root
            .join("health/liveliness")
            .map_err(|e| Error::new(ErrorCode::InvalidUrl, e.to_string()))?;
        let resp = self
            .send(
                self.client.get(url).timeout(SHORT_TIMEOUT),
                "checking /health/liveliness",
            )
            .await?;
        let status = resp.status();
        if status.is_success() {
            let body = crate::net::body::read_prefix(resp, ERROR_BODY_CAP, "checking /health/liveliness")
                .await
                .unwrap_or_default();
            return Ok(Health {
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                litellm: crate::discovery::fingerprint::litellm_liveliness(&body),
            });
        }
        if status.as_u16() == 404 {
            let resp = self
                .send(
                    self.request(reqwest::Method::GET, self.api_url("models")?)
                        .timeout(SHORT_TIMEOUT),
                    "checking /v1/models",
                )
                .await?;
            // Answering at all (even 401) means the server is up; the key is checked when it is used.
            if resp.status().is_success() || matches!(resp.status().as_u16(), 401 | 403) {
                return Ok(Health {
                    latency_ms: started.elapsed().as_secs_f64() * 1000.0,
                    litellm: false,
                });
            }
            return Err(self.failure(resp).await);
        }
        Err(self.failure(resp).await)
    }

    fn api_url(&self, path: &str) -> Result<url::Url, Error> {
        self.api_root
            .join(path)
            .map_err(|e| Error::new(ErrorCode::InvalidUrl, e.to_string()))
    }

    /// `GET /v1/models`
    pub async fn models(&self) -> Result<ModelList, Error> {
        let resp = self
            .send(
                self.request(reqwest::Method::GET, self.api_url("models")?)
                    .timeout(SHORT_TIMEOUT),
                "listing models",
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.failure(resp).await);
        }
        let body = crate::net::body::read_capped(resp, crate::net::body::JSON_CAP, "listing models").await?;
        serde_json::from_slice(&body).map_err(|e| {
            Error::new(
                ErrorCode::WrongService,
                format!(
                    "{} answered /v1/models with something that is not a model list",
                    self.endpoint
                ),
            )
            .with_source(e)
        })
    }

    /// `POST /v1/chat/completions`; returns the response once its status is 2xx (the body is read by the caller).
    pub async fn start_chat(&self, body: &Value, stream: bool) -> Result<reqwest::Response, Error> {
        let mut rb = self
            .request(reqwest::Method::POST, self.api_url("chat/completions")?)
            .json(body);
        if stream {
            rb = rb.header(reqwest::header::ACCEPT, "text/event-stream");
        }
        let resp = self.send(rb, "sending the chat request").await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(self.failure(resp).await)
        }
    }
}

/// `Retry-After: <seconds>` (HTTP dates are rare from these servers and treated as absent).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let secs: f64 = v.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str) -> OpenAiHttp {
        let endpoint = Endpoint::parse(url, 4000).unwrap_or_else(|_| unreachable!());
        OpenAiHttp::new(reqwest::Client::new(), endpoint, ApiKey::new("sk-x".into())).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn api_root_and_health_root() {
        let h = http("127.0.0.1");
        assert_eq!(h.api_root.as_str(), "http://127.0.0.1:4000/v1/");
        assert_eq!(h.root.as_str(), "http://127.0.0.1:4000/");
        let o = http("http://127.0.0.1:11434/v1");
        assert_eq!(o.api_root.as_str(), "http://127.0.0.1:11434/v1/");
        assert_eq!(o.root.as_str(), "http://127.0.0.1:11434/");
        assert_eq!(format!("{:?}", h.key), "Some(ApiKey(***))");
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("2"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
