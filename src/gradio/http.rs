//! The HTTP side of a Gradio app: URL building (`api_root = root + api_prefix`, `/config` and `/login` always at
//! the root), the login cookie, queue join/cancel/reset, the queue stream, uploads and downloads. The password is
//! only ever in the login form; cookies are kept here and sent explicitly (the `-unsecure-` cookie suffices on
//! plain http).
use super::protocol::Config;
use crate::endpoint::Endpoint;
use crate::error::{Error, ErrorCode};
use crate::service::metrics::RttWindow;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Health probes and small calls must not hang the actor when a server stalls.
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(10);
/// `/config` of a big app (Wan2GP has hundreds of components) may take a while.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(30);
const CONFIG_CAP: usize = crate::net::body::JSON_CAP;
const ERROR_BODY_CAP: usize = crate::net::body::ERROR_CAP;

/// `user:password` given as the service token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    password: String,
}

impl Credentials {
    /// `user:password`; `None` for an empty token or one without a colon (sent as a Bearer token instead).
    pub fn parse(token: &str) -> Option<Credentials> {
        let (user, password) = token.split_once(':')?;
        (!user.is_empty()).then(|| Credentials {
            user: user.to_string(),
            password: password.to_string(),
        })
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:***)", self.user)
    }
}

/// Characters kept as they are in a `file=` path (Gradio decodes the rest).
const FILE_PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Clone)]
pub struct GradioHttp {
    client: reqwest::Client,
    endpoint: Endpoint,
    /// Ends in `/`.
    root: url::Url,
    /// `root + api_prefix + /`, known once `/config` was read.
    api_root: Arc<Mutex<url::Url>>,
    credentials: Option<Credentials>,
    bearer: Option<String>,
    cookies: Arc<Mutex<Vec<(String, String)>>>,
    latency: Arc<Mutex<RttWindow>>,
}

/// A request's body, so a request can be sent again after a login or a dropped keep-alive connection.
#[derive(Clone)]
enum Body {
    None,
    Json(Value),
}

impl GradioHttp {
    pub fn new(client: reqwest::Client, endpoint: Endpoint, token: Option<String>) -> crate::error::Result<GradioHttp> {
        let root = url::Url::parse(endpoint.base())
            .map_err(|e| crate::error::Error::new(ErrorCode::InvalidUrl, format!("{endpoint}: {e}")))?;
        let token = token.filter(|t| !t.trim().is_empty());
        let credentials = token.as_deref().and_then(Credentials::parse);
        let bearer = if credentials.is_none() { token } else { None };
        Ok(GradioHttp {
            client,
            endpoint,
            api_root: Arc::new(Mutex::new(root.clone())),
            root,
            credentials,
            bearer,
            cookies: Arc::default(),
            latency: Arc::new(Mutex::new(RttWindow::default())),
        })
    }

    pub fn with_latency(mut self, latency: Arc<Mutex<RttWindow>>) -> GradioHttp {
        self.latency = latency;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    fn logged_in(&self) -> bool {
        !self.cookies.lock().is_empty()
    }

    /// Sets `api_root` from the config's `api_prefix` (`/gradio_api` on 5.x+, none before).
    pub fn set_prefix(&self, prefix: Option<&str>) {
        *self.api_root.lock() = api_root(&self.root, prefix);
    }

    pub fn api_url(&self, path: &str) -> Result<url::Url, Error> {
        self.api_root
            .lock()
            .join(path)
            .map_err(|e| Error::new(ErrorCode::InvalidUrl, format!("{path}: {e}")))
    }

    fn root_url(&self, path: &str) -> Result<url::Url, Error> {
        self.root
            .join(path)
            .map_err(|e| Error::new(ErrorCode::InvalidUrl, format!("{path}: {e}")))
    }

    /// `{api_root}/file={path}` (3.x: `/file={name}` at the root, which is its api_root).
    pub fn file_url(&self, server_path: &str) -> Result<url::Url, Error> {
        let encoded = percent_encoding::utf8_percent_encode(server_path, FILE_PATH).to_string();
        self.api_url(&format!("file={encoded}"))
    }

    /// `ws://…/queue/join` for 3.x apps.
    pub fn ws_url(&self) -> Result<url::Url, Error> {
        let mut url = self.api_url("queue/join")?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme)
            .map_err(|_| Error::new(ErrorCode::InvalidUrl, "cannot make a WebSocket URL"))?;
        Ok(url)
    }

    /// The `Cookie:` header value, if logged in.
    pub fn cookie_header(&self) -> Option<String> {
        let c = self.cookies.lock();
        (!c.is_empty()).then(|| c.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
    }

    pub fn bearer(&self) -> Option<&str> {
        self.bearer.as_deref()
    }

    fn build(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: &Body,
        timeout: Option<Duration>,
    ) -> reqwest::RequestBuilder {
        let mut rb = self.client.request(method, url);
        if let Some(c) = self.cookie_header() {
            rb = rb.header(reqwest::header::COOKIE, c);
        }
        if let Some(b) = &self.bearer {
            rb = rb.bearer_auth(b);
        }
        if let Some(t) = timeout {
            rb = rb.timeout(t);
        }
        match body {
            Body::None => rb,
            Body::Json(v) => rb.json(v),
        }
    }

    /// Sends; on "connection reset" of a pooled keep-alive connection (uvicorn drops it after a 500) sends once
    /// more when `idempotent`; on a 401 with credentials logs in and sends once more.
    async fn send(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: Body,
        timeout: Option<Duration>,
        what: &str,
        idempotent: bool,
    ) -> Result<reqwest::Response, Error> {
        let mut tried_login = false;
        let mut tried_again = false;
        loop {
            let started = Instant::now();
            let sent = self.build(method.clone(), url.clone(), &body, timeout).send().await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) if idempotent && !tried_again && !e.is_timeout() && !e.is_connect() => {
                    tried_again = true;
                    log::debug!(
                        "{what}: {}; sending once more",
                        crate::error::root_cause(&e.without_url())
                    );
                    continue;
                }
                Err(e) => return Err(Error::http(what, e)),
            };
            self.latency.lock().record(started.elapsed().as_secs_f64() * 1000.0);
            if resp.status().as_u16() == 401 && self.credentials.is_some() && !tried_login {
                tried_login = true;
                self.login().await?;
                continue;
            }
            return Ok(resp);
        }
    }

    /// A non-2xx answer as the typed error.
    pub async fn failure(&self, what: &str, resp: reqwest::Response) -> Error {
        let status = resp.status().as_u16();
        let body = crate::net::body::read_prefix(resp, ERROR_BODY_CAP, what)
            .await
            .unwrap_or_default();
        super::error::failure(what, status, &body, self.logged_in())
    }

    /// `POST /login` (form) with the credentials; keeps the cookies it sets.
    pub async fn login(&self) -> Result<(), Error> {
        let Some(c) = &self.credentials else {
            return Err(Error::new(ErrorCode::AuthFailed, super::error::LOGIN_NEEDED));
        };
        let what = "logging in to the Gradio app";
        let resp = self
            .client
            .post(self.root_url("login")?)
            .form(&[("username", c.user.as_str()), ("password", c.password.as_str())])
            .timeout(SHORT_TIMEOUT)
            .send()
            .await
            .map_err(|e| Error::http(what, e))?;
        let status = resp.status().as_u16();
        let mut fresh = Vec::new();
        for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            if let Some(pair) = v.to_str().ok().and_then(cookie_pair) {
                fresh.push(pair);
            }
        }
        if !(200..300).contains(&status) {
            let body = crate::net::body::read_prefix(resp, ERROR_BODY_CAP, what)
                .await
                .unwrap_or_default();
            // Whatever the status, a refused login form is a credentials problem.
            let mut e = Error::from_status(&format!("{what} as {:?} failed", c.user), status, &body)
                .with_hint("check the user name and password");
            e.code = ErrorCode::AuthFailed;
            return Err(e);
        }
        // Over plain http only the `-unsecure-` cookie would be kept by a browser; sending both is harmless.
        let mut cookies = self.cookies.lock();
        for (k, v) in fresh {
            cookies.retain(|(name, _)| *name != k);
            cookies.push((k, v));
        }
        log::info!("{}: logged in as {:?}", self.endpoint, c.user);
        Ok(())
    }

    /// `GET /config` (logging in first when the app wants it), and sets `api_root` from it.
    pub async fn config(&self) -> Result<Config, Error> {
        let what = "reading the Gradio /config";
        let resp = self
            .send(
                reqwest::Method::GET,
                self.root_url("config")?,
                Body::None,
                Some(CONFIG_TIMEOUT),
                what,
                true,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.failure(what, resp).await);
        }
        let body = read_capped(resp, CONFIG_CAP).await?;
        let config = Config::parse(&body).map_err(|why| {
            Error::new(
                ErrorCode::WrongService,
                format!("{} is not a Gradio app: /config is {why}", self.endpoint),
            )
        })?;
        self.set_prefix(config.api_prefix.as_deref());
        Ok(config)
    }

    /// `GET {api_root}/queue/status` → the queue length.
    pub async fn queue_status(&self) -> Result<Option<u64>, Error> {
        self.small_number("queue/status", "queue_size", "checking the Gradio queue")
            .await
    }

    /// `GET {api_root}/app_id` (4.x+) → the id that changes on every launch.
    pub async fn app_id(&self) -> Result<Option<u64>, Error> {
        self.small_number("app_id", "app_id", "checking the Gradio app_id")
            .await
    }

    /// One number from a small JSON answer below the API root (None when the field is missing).
    async fn small_number(&self, path: &str, field: &str, what: &str) -> Result<Option<u64>, Error> {
        let resp = self
            .send(
                reqwest::Method::GET,
                self.api_url(path)?,
                Body::None,
                Some(SHORT_TIMEOUT),
                what,
                true,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.failure(what, resp).await);
        }
        let body = read_capped(resp, ERROR_BODY_CAP).await?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(v.get(field).and_then(super::protocol::as_u64))
    }

    /// `POST {api_root}/queue/join` → event_id. Not retried: a 5xx fails the job.
    pub async fn join(&self, body: Value) -> Result<String, Error> {
        let what = "joining the Gradio queue";
        let resp = self
            .send(
                reqwest::Method::POST,
                self.api_url("queue/join")?,
                Body::Json(body),
                Some(SHORT_TIMEOUT * 3),
                what,
                false,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.failure(what, resp).await);
        }
        let body = read_capped(resp, ERROR_BODY_CAP).await?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        v.get("event_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::protocol("queue/join answered without an event_id"))
    }

    /// `GET {api_root}/queue/data?session_hash=` → the open event stream (no read timeout: an idle watchdog reads it).
    pub async fn queue_data(&self, session_hash: &str) -> Result<reqwest::Response, Error> {
        let what = "opening the Gradio queue stream";
        let mut url = self.api_url("queue/data")?;
        url.query_pairs_mut().append_pair("session_hash", session_hash);
        let resp = self
            .send(reqwest::Method::GET, url, Body::None, None, what, true)
            .await?;
        if !resp.status().is_success() {
            return Err(self.failure(what, resp).await);
        }
        Ok(resp)
    }

    /// `POST {api_root}/cancel` then `POST {api_root}/reset` (what the browser does). `Ok(false)` when the app has
    /// no `/cancel` (Gradio < 4.29).
    pub async fn cancel(&self, session_hash: &str, fn_index: u64, event_id: &str) -> Result<bool, Error> {
        let what = "cancelling the Gradio job";
        let body = json!({"session_hash": session_hash, "fn_index": fn_index, "event_id": event_id});
        let resp = self
            .send(
                reqwest::Method::POST,
                self.api_url("cancel")?,
                Body::Json(body),
                Some(SHORT_TIMEOUT),
                what,
                true,
            )
            .await?;
        let status = resp.status().as_u16();
        if status == 404 || status == 405 {
            return Ok(false);
        }
        if !resp.status().is_success() {
            return Err(self.failure(what, resp).await);
        }
        let reset = json!({ "event_id": event_id });
        if let Ok(r) = self
            .send(
                reqwest::Method::POST,
                self.api_url("reset")?,
                Body::Json(reset),
                Some(SHORT_TIMEOUT),
                what,
                true,
            )
            .await
        {
            log::debug!("reset {event_id}: HTTP {}", r.status());
        }
        Ok(true)
    }

    /// `POST {api_root}/run/predict {data, fn_index, session_hash}` (or `/api/{name}`): the synchronous route.
    pub async fn predict(&self, body: Value, timeout: Duration) -> Result<Value, Error> {
        let what = "calling the Gradio app";
        let resp = self
            .send(
                reqwest::Method::POST,
                self.api_url("run/predict")?,
                Body::Json(body),
                Some(timeout),
                what,
                false,
            )
            .await?;
        let status = resp.status();
        let bytes = read_capped(resp, CONFIG_CAP).await?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        if v.get("error").is_some() {
            return Err(super::error::app(super::protocol::error_text(&v, None)));
        }
        Err(super::error::failure(what, status.as_u16(), &bytes, self.logged_in()))
    }

    /// `POST {api_root}/upload` (multipart field `files`) → the server path of the file.
    pub async fn upload(&self, local: &Path) -> Result<String, Error> {
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "upload.bin".into());
        let what = format!("uploading {name}");
        let bytes = tokio::fs::read(local).await.map_err(|e| {
            Error::new(
                ErrorCode::Io,
                format!("cannot read {} to upload it: {e}", local.display()),
            )
        })?;
        let mut tried_login = false;
        loop {
            let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone());
            let form = reqwest::multipart::Form::new().part("files", part);
            let mut rb = self
                .client
                .post(self.api_url("upload")?)
                .multipart(form)
                .timeout(Duration::from_secs(600));
            if let Some(c) = self.cookie_header() {
                rb = rb.header(reqwest::header::COOKIE, c);
            }
            if let Some(b) = &self.bearer {
                rb = rb.bearer_auth(b);
            }
            let resp = rb.send().await.map_err(|e| Error::http(&what, e))?;
            if resp.status().as_u16() == 401 && self.credentials.is_some() && !tried_login {
                tried_login = true;
                self.login().await?;
                continue;
            }
            if !resp.status().is_success() {
                return Err(self.failure(&what, resp).await);
            }
            let body = read_capped(resp, ERROR_BODY_CAP).await?;
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            return v
                .get(0)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| Error::protocol(format!("{what}: the answer is not a list of server paths")));
        }
    }

    /// `GET {api_root}/file={path}`, saved into `dir` as `name` by the shared writer (temp file, fsync, rename);
    /// returns (path, size, sha256 hex).
    pub async fn download(
        &self,
        server_path: &str,
        dir: &Path,
        name: &str,
    ) -> Result<(std::path::PathBuf, u64, String), Error> {
        let what = format!("downloading {server_path}");
        let url = self.file_url(server_path)?;
        let resp = self
            .send(
                reqwest::Method::GET,
                url,
                Body::None,
                Some(crate::net::download::DOWNLOAD_TIMEOUT),
                &what,
                true,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.failure(&what, resp).await);
        }
        crate::net::download::save(resp, dir, name, &what).await
    }

    /// What a manifest must never show: the password and the bearer token.
    pub fn secrets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.bearer.as_deref().into_iter().collect();
        if let Some(c) = &self.credentials {
            out.push(&c.password);
        }
        out
    }
}

/// `root + prefix + /`.
pub fn api_root(root: &url::Url, prefix: Option<&str>) -> url::Url {
    let prefix = prefix.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty());
    match prefix {
        Some(p) => root.join(&format!("{p}/")).unwrap_or_else(|_| root.clone()),
        None => root.clone(),
    }
}

/// `name=value` of a `Set-Cookie` header.
pub fn cookie_pair(header: &str) -> Option<(String, String)> {
    let first = header.split(';').next()?.trim();
    let (k, v) = first.split_once('=')?;
    (!k.trim().is_empty()).then(|| (k.trim().to_string(), v.trim().to_string()))
}

async fn read_capped(resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, Error> {
    crate::net::body::read_capped(resp, cap, "reading the Gradio answer").await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(url: &str, token: Option<&str>) -> GradioHttp {
        let endpoint = Endpoint::parse(url, 7860).unwrap_or_else(|_| unreachable!());
        GradioHttp::new(reqwest::Client::new(), endpoint, token.map(str::to_string)).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn urls_follow_the_api_prefix() {
        let h = http("127.0.0.1:7860", None);
        assert_eq!(
            h.api_url("queue/join").map(|u| u.to_string()).ok().as_deref(),
            Some("http://127.0.0.1:7860/queue/join")
        );
        h.set_prefix(Some("/gradio_api"));
        let u = |p: &str| h.api_url(p).map(|u| u.to_string()).unwrap_or_default();
        assert_eq!(u("queue/join"), "http://127.0.0.1:7860/gradio_api/queue/join");
        assert_eq!(u("upload"), "http://127.0.0.1:7860/gradio_api/upload");
        assert_eq!(
            h.root_url("config").map(|u| u.to_string()).unwrap_or_default(),
            "http://127.0.0.1:7860/config"
        );
        assert_eq!(
            h.root_url("login").map(|u| u.to_string()).unwrap_or_default(),
            "http://127.0.0.1:7860/login"
        );
        let f = h
            .file_url("/tmp/gradio/ab12/my shot#1?.gif")
            .map(|u| u.to_string())
            .unwrap_or_default();
        assert_eq!(
            f,
            "http://127.0.0.1:7860/gradio_api/file=/tmp/gradio/ab12/my%20shot%231%3F.gif"
        );
        let w = h.ws_url().map(|u| u.to_string()).unwrap_or_default();
        assert_eq!(w, "ws://127.0.0.1:7860/gradio_api/queue/join");
        let sub = http("http://127.0.0.1:7860/app/", None);
        sub.set_prefix(Some("/gradio_api/"));
        assert_eq!(
            sub.api_url("info").map(|u| u.to_string()).unwrap_or_default(),
            "http://127.0.0.1:7860/app/gradio_api/info"
        );
        sub.set_prefix(None);
        assert_eq!(
            sub.file_url("x.wav").map(|u| u.to_string()).unwrap_or_default(),
            "http://127.0.0.1:7860/app/file=x.wav"
        );
    }

    #[test]
    fn tokens_with_a_colon_are_credentials() {
        let h = http("127.0.0.1", Some("director:se:cret"));
        assert!(h.has_credentials() && h.bearer().is_none());
        assert_eq!(format!("{:?}", h.credentials), "Some(Credentials(director:***))");
        let b = http("127.0.0.1", Some("hf_abc"));
        assert!(!b.has_credentials() && b.bearer() == Some("hf_abc"));
        assert_eq!(
            cookie_pair("access-token-unsecure-0_aq=u4_k9; Path=/; SameSite=none"),
            Some(("access-token-unsecure-0_aq".into(), "u4_k9".into()))
        );
        assert_eq!(cookie_pair("; Path=/"), None);
    }
}
