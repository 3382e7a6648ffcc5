//! The core's one error type, modelled on reqwest's: every public function returns [`Error`], which carries a
//! stable snake_case [`ErrorCode`] (the public contract Python code and tests key on, so messages can improve without
//! breaking anyone), a message that says what was wrong and what to do, optional structured details, and the cause
//! as a [`std::error::Error::source`] chain (the `reqwest`, `io`, `serde_json` or WebSocket error itself, never
//! flattened into a string). One function ([`Error::from_status`]) maps an HTTP error answer to a code for every
//! backend.
//!
//! Secrets: a reqwest error is kept without its URL (a query or userinfo may carry a token), and a backend that
//! knows its secret scrubs the message and the cause texts with [`Error::scrubbed`].
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Stable error codes. The string form (`as_str`) is the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The service URL could not be understood.
    InvalidUrl,
    /// A service name or kind the hub does not know.
    UnknownService,
    /// `add_service` with a name that is taken.
    DuplicateService,
    /// A job id the hub does not track.
    UnknownJob,
    /// The workflow is not valid JSON / not a workflow.
    InvalidWorkflow,
    /// A parameter selector or value was rejected.
    InvalidParameter,
    /// The server rejected the prompt (`node_errors`).
    ValidationFailed,
    /// No TCP connection could be made.
    ConnectionFailed,
    /// Something answers on the port, but it is not the expected server.
    WrongService,
    /// An unexpected HTTP status.
    HttpStatus,
    /// The server sent something we could not understand.
    Protocol,
    /// A node raised while the job ran.
    ExecutionFailed,
    /// The job was interrupted by someone other than us.
    Interrupted,
    /// The job was cancelled.
    Cancelled,
    /// The server no longer knows the job (restart).
    ServerRestarted,
    /// A wait ran out of time.
    Timeout,
    /// Writing a result to disk failed.
    OutputWrite,
    /// The hub was closed (a job still unfinished then ends with this code).
    Closed,
    /// The job's service was removed (or its address changed after the job was sent) before the job ended.
    ServiceRemoved,
    /// The server does not know a job that was never confirmed to have been sent to it.
    NotPosted,
    /// The pool server running the job went down while it ran (the job may or may not have finished there).
    ServerLost,
    /// Any other local I/O problem.
    Io,
    /// The server refused the key (missing, wrong or without access).
    AuthFailed,
    /// The server (or its upstream) is rate limiting (HTTP 429).
    RateLimited,
    /// The server or its upstream model failed (HTTP 5xx).
    ServerError,
    /// The server refused the request as malformed (HTTP 4xx: unknown model, bad options).
    BadRequest,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidUrl => "invalid_url",
            ErrorCode::UnknownService => "unknown_service",
            ErrorCode::DuplicateService => "duplicate_service",
            ErrorCode::UnknownJob => "unknown_job",
            ErrorCode::InvalidWorkflow => "invalid_workflow",
            ErrorCode::InvalidParameter => "invalid_parameter",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::ConnectionFailed => "connection_failed",
            ErrorCode::WrongService => "wrong_service",
            ErrorCode::HttpStatus => "http_status",
            ErrorCode::Protocol => "protocol_error",
            ErrorCode::ExecutionFailed => "execution_failed",
            ErrorCode::Interrupted => "interrupted",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::ServerRestarted => "server_restarted",
            ErrorCode::Timeout => "timeout",
            ErrorCode::OutputWrite => "output_write_failed",
            ErrorCode::Closed => "hub_closed",
            ErrorCode::ServiceRemoved => "service_removed",
            ErrorCode::NotPosted => "not_posted",
            ErrorCode::ServerLost => "server_lost",
            ErrorCode::Io => "io_error",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ServerError => "server_error",
            ErrorCode::BadRequest => "bad_request",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a stable code, a message that says what was wrong and what to do, optional details, and its cause.
///
/// Cheap to clone: the cause is shared (`Arc`).
#[derive(Clone)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// Structured details for callers (e.g. `{"problems": [...]}` for a workflow that failed validation, or
    /// `{"error_type": "throttling_error"}` for a server's own error type). Python: attributes of the exception.
    /// Boxed, like the HTTP facts, so that `Result<T, Error>` stays small.
    pub details: Option<Box<serde_json::Value>>,
    /// What the server's answer said, when the error is one (boxed: most errors have none).
    http: Option<Box<HttpFacts>>,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            details: None,
            http: None,
            source: None,
        }
    }

    /// The server sent something we could not understand.
    pub fn protocol(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Protocol, message)
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    /// Keeps `source` as the cause (`source()`). For a reqwest error use [`Error::http`], which drops the URL.
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync + 'static>>) -> Self {
        self.source = Some(Arc::from(source.into()));
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.http.get_or_insert_with(Default::default).status = Some(status);
        self
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        if retry_after.is_some() || self.http.is_some() {
            self.http.get_or_insert_with(Default::default).retry_after = retry_after;
        }
        self
    }

    /// Adds what to do: "`message`; `hint`".
    pub fn with_hint(mut self, hint: &str) -> Self {
        self.message = format!("{}; {hint}", self.message);
        self
    }

    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }

    /// The HTTP status of the server's answer, if the error is one.
    pub fn status(&self) -> Option<u16> {
        self.http.as_ref()?.status
    }

    /// How long the server asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        self.http.as_ref()?.retry_after
    }

    /// The server's own error type (`throttling_error`, `auth_error`, ...), if it said one.
    pub fn error_type(&self) -> Option<&str> {
        self.details.as_ref()?.get("error_type")?.as_str()
    }

    /// The precise reason within the code, when the failing layer names one (workflow: `selector_not_found`, …).
    pub fn reason(&self) -> Option<&str> {
        self.details.as_ref()?.get("reason")?.as_str()
    }

    /// The alternatives the message names (an ambiguous or unknown selector, a COMBO's options).
    pub fn candidates(&self) -> Vec<String> {
        let list = self
            .details
            .as_ref()
            .and_then(|d| d.get("candidates"))
            .and_then(|c| c.as_array());
        list.map(|l| l.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    pub fn is_timeout(&self) -> bool {
        self.code == ErrorCode::Timeout
    }

    /// No connection could be made (refused, unreachable, no such host), so the server never saw the request.
    /// A connection that broke later is `connection_failed` too, but not this.
    pub fn is_connect(&self) -> bool {
        if let Some(r) = self.find_source::<reqwest::Error>() {
            return r.is_connect();
        }
        self.code == ErrorCode::ConnectionFailed
            && self.find_source::<std::io::Error>().is_some_and(|io| {
                use std::io::ErrorKind as K;
                matches!(
                    io.kind(),
                    K::ConnectionRefused | K::AddrNotAvailable | K::HostUnreachable | K::NetworkUnreachable
                )
            })
    }

    /// The server answered with an error status.
    pub fn is_status(&self) -> bool {
        self.status().is_some()
    }

    pub fn is_auth(&self) -> bool {
        self.code == ErrorCode::AuthFailed
    }

    /// 429, 5xx, timeouts and refused connections: worth another try.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::RateLimited | ErrorCode::ServerError | ErrorCode::ConnectionFailed | ErrorCode::Timeout
        )
    }

    /// The texts of the cause chain, outermost first ("error sending request", …, "Connection refused (os error
    /// 111)").
    pub fn causes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = StdError::source(self);
        while let Some(e) = cur {
            out.push(e.to_string());
            cur = e.source();
        }
        out
    }

    /// The first error of type `T` in the cause chain (e.g. the `std::io::Error` under a refused connection).
    pub fn find_source<T: StdError + 'static>(&self) -> Option<&T> {
        let mut cur = StdError::source(self);
        while let Some(e) = cur {
            if let Some(t) = e.downcast_ref::<T>() {
                return Some(t);
            }
            cur = e.source();
        }
        None
    }

    /// A reqwest failure of `what`, classified (timeout, connect, unreadable answer), with the reqwest error kept
    /// as the cause without its URL (a query or userinfo may carry a token).
    pub fn http(what: &str, err: reqwest::Error) -> Error {
        let err = err.without_url();
        let root = root_cause(&err);
        let e = if err.is_timeout() {
            Error::new(
                ErrorCode::Timeout,
                format!("{what}: the server did not answer in time; is it busy or stuck?"),
            )
        } else if err.is_connect() {
            Error::new(
                ErrorCode::ConnectionFailed,
                format!("{what}: could not connect ({root}); is the server running and is the address right?"),
            )
        } else if err.is_decode() || err.is_body() {
            Error::new(
                ErrorCode::Protocol,
                format!("{what}: the answer could not be read ({root})"),
            )
        } else {
            Error::new(ErrorCode::ConnectionFailed, format!("{what}: {root}"))
        };
        let e = match err.status() {
            Some(s) => e.with_status(s.as_u16()),
            None => e,
        };
        e.with_source(err)
    }

    /// A local I/O failure of `what` (code `io_error`), the `io::Error` kept as the cause.
    pub fn io(what: &str, err: std::io::Error) -> Error {
        Error::new(ErrorCode::Io, format!("{what}: {err}")).with_source(err)
    }

    /// The one mapping from an HTTP error answer to an error, for every backend (ComfyUI, Gradio, OpenAI, MCP):
    /// the code from the status and the server's error type, the server's own words from the body
    /// (`{"error": {"message", "type"}}`, `{"error": "…"}`, `{"detail": …}`, `{"message": …}` or the text),
    /// `status()` set and the server's error type in the details. Callers add what to do with [`Error::with_hint`].
    pub fn from_status(what: &str, status: u16, body: &[u8]) -> Error {
        let said = ServerSays::parse(body);
        let code = status_code(status, said.error_type.as_deref(), &said.text);
        let prefix = if what.is_empty() {
            String::new()
        } else {
            format!("{what}: ")
        };
        let mut e = Error::new(code, format!("{prefix}HTTP {status}: {}", said.text)).with_status(status);
        if let Some(t) = said.error_type {
            e = e.with_details(serde_json::json!({ "error_type": t }));
        }
        e
    }

    /// Removes a secret from the message, the details and the cause texts (a server could echo what it was sent).
    pub fn scrubbed(mut self, secret: Option<&str>) -> Error {
        let Some(secret) = secret.filter(|s| s.len() >= 4) else {
            return self;
        };
        if self.message.contains(secret) {
            self.message = self.message.replace(secret, "***");
        }
        if let Some(d) = &self.details {
            let text = d.to_string();
            if text.contains(secret) {
                self.details = serde_json::from_str(&text.replace(secret, "***")).ok().map(Box::new);
            }
        }
        let causes = self.causes();
        if causes.iter().any(|c| c.contains(secret)) {
            // The typed cause cannot be edited: it is replaced by its texts, scrubbed.
            let chain = causes.into_iter().rev().fold(None, |inner: Option<Cause>, text| {
                Some(Cause {
                    text: text.replace(secret, "***"),
                    source: inner.map(Box::new),
                })
            });
            self.source = chain.map(|c| Arc::new(c) as Arc<dyn StdError + Send + Sync>);
        }
        self
    }

    /// The job failure this error ends a job with.
    /// The one way an error becomes a job's failure: code, message, the server's error type, the problems per
    /// node when validation found them, and the causes (texts of the source chain, scrubbed like the error).
    pub fn to_job_error(&self) -> crate::event::JobError {
        let mut e = crate::event::JobError::simple(self.code.as_str(), self.message.clone());
        e.exception_type = self.error_type().map(str::to_string);
        if let Some(problems) = self.details.as_ref().and_then(|d| d.get("node_errors")) {
            e.node_errors = serde_json::from_value(problems.clone()).unwrap_or_default();
        }
        e.causes = self.causes();
        e
    }
}

/// What a server's error answer said besides its body.
#[derive(Debug, Clone, Default, PartialEq)]
struct HttpFacts {
    status: Option<u16>,
    retry_after: Option<Duration>,
}

/// A cause kept as text only (a scrubbed chain).
#[derive(Debug)]
struct Cause {
    text: String,
    source: Option<Box<Cause>>,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl StdError for Cause {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|c| c as &(dyn StdError + 'static))
    }
}

/// The code of an HTTP error answer. `error_type` is the server's own type (OpenAI-style `error.type`), `detail`
/// its words.
pub fn status_code(status: u16, error_type: Option<&str>, detail: &str) -> ErrorCode {
    // LiteLLM answers a wrong key without a database with 400 `no_db_connection`: a key problem, not a bad request.
    let auth_like = error_type.is_some_and(|t| t.contains("auth") || t.contains("db"));
    match status {
        // Gradio answers 403 "File not allowed" for a path outside its allowed folders: a bad request.
        403 if detail.contains("not allowed") && !auth_like => ErrorCode::BadRequest,
        401 | 403 => ErrorCode::AuthFailed,
        400 if auth_like => ErrorCode::AuthFailed,
        408 => ErrorCode::Timeout,
        429 => ErrorCode::RateLimited,
        // Gradio's full queue ("Queue is full") is 503; any other 503 is the server failing.
        503 if detail.to_ascii_lowercase().contains("queue") => ErrorCode::RateLimited,
        500..=599 => ErrorCode::ServerError,
        400..=499 => ErrorCode::BadRequest,
        _ => ErrorCode::HttpStatus,
    }
}

/// The server's words in an error body.
struct ServerSays {
    text: String,
    error_type: Option<String>,
}

impl ServerSays {
    fn parse(body: &[u8]) -> ServerSays {
        use serde_json::Value;
        let short = |s: &str| -> String { s.trim().chars().take(300).collect() };
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            let said = v.get("error").or_else(|| v.get("detail")).or_else(|| v.get("message"));
            match said {
                Some(Value::String(s)) if !s.trim().is_empty() => {
                    return ServerSays {
                        text: short(s),
                        error_type: None,
                    }
                }
                Some(Value::Object(o)) => {
                    let text = o
                        .get("message")
                        .or_else(|| o.get("error"))
                        .and_then(Value::as_str)
                        .map(short)
                        .filter(|t| !t.is_empty())
                        .unwrap_or_else(|| short(&Value::Object(o.clone()).to_string()));
                    let error_type = o.get("type").and_then(Value::as_str).map(str::to_string);
                    return ServerSays { text, error_type };
                }
                Some(other) if !other.is_null() => {
                    return ServerSays {
                        text: short(&other.to_string()),
                        error_type: None,
                    }
                }
                _ => {}
            }
        }
        let text = short(&String::from_utf8_lossy(body));
        ServerSays {
            text: if text.is_empty() { "no details".into() } else { text },
            error_type: None,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("code", &self.code).field("message", &self.message);
        if let Some(details) = &self.details {
            d.field("details", details);
        }
        if let Some(s) = self.status() {
            d.field("status", &s);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

/// Two errors are equal when code, message, details and status are (the causes are not compared).
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        self.code == other.code
            && self.message == other.message
            && self.details == other.details
            && self.status() == other.status()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn StdError + 'static))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The deepest source's text: "Connection refused (os error 111)" rather than "error sending request".
pub fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut cur: &(dyn StdError + 'static) = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback port that nothing listens on (bound, then released).
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        l.local_addr().expect("its address").port()
    }

    #[tokio::test]
    async fn a_refused_connection_keeps_the_os_error_as_its_cause() {
        let port = closed_port();
        let err = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/system_stats"))
            .send()
            .await
            .expect_err("nothing listens there");
        let e = Error::http("reading /system_stats", err);
        assert_eq!(e.code(), "connection_failed");
        assert!(e.is_connect() && !e.is_timeout() && !e.is_status() && e.is_retryable());
        let io = e
            .find_source::<std::io::Error>()
            .expect("the io::Error is in the chain");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        let causes = e.causes();
        assert!(causes.len() >= 2, "{causes:?}");
        assert_eq!(causes.last().map(String::as_str), Some(io.to_string().as_str()));
        assert!(causes.last().is_some_and(|c| c.contains("os error")), "{causes:?}");
        // The reqwest error itself is the first source, and a clone shares the chain.
        assert!(StdError::source(&e).is_some_and(|s| s.is::<reqwest::Error>()));
        assert_eq!(e.clone().causes(), causes);
        assert_eq!(e.clone(), e);
    }

    #[tokio::test]
    async fn a_silent_server_is_a_timeout_with_its_cause() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        // Accepts and says nothing; ends with the test.
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                sockets.push(s);
            }
        });
        let err = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/"))
            .timeout(Duration::from_millis(200))
            .send()
            .await
            .expect_err("the server never answers");
        held.abort();
        let e = Error::http("reading /", err);
        assert_eq!(e.code, ErrorCode::Timeout);
        assert!(e.is_timeout() && !e.is_connect());
        assert!(e
            .find_source::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout));
    }

    #[tokio::test]
    async fn no_token_or_credentials_from_the_url_reach_the_error() {
        let port = closed_port();
        let url = format!("http://alice:pw-s3cret@127.0.0.1:{port}/prompt?token=tok-s3cret&x=1");
        let err = reqwest::Client::new().get(url).send().await.expect_err("closed port");
        let e = Error::http("submitting the workflow", err);
        let everything = format!("{e} {:?} {:?} {e:?}", e.causes(), e.details);
        for secret in ["s3cret", "alice", "token="] {
            assert!(!everything.contains(secret), "{secret} leaked: {everything}");
        }
        assert_eq!(e.code, ErrorCode::ConnectionFailed);
    }

    #[test]
    fn scrubbing_reaches_the_message_the_details_and_the_causes() {
        let inner = std::io::Error::other("the server echoed sk-live-123");
        let e = Error::new(ErrorCode::AuthFailed, "refused key sk-live-123")
            .with_details(serde_json::json!({"echo": "sk-live-123"}))
            .with_source(inner)
            .scrubbed(Some("sk-live-123"));
        let everything = format!("{e} {:?} {:?} {e:?}", e.causes(), e.details);
        assert!(!everything.contains("sk-live-123"), "{everything}");
        assert_eq!(e.causes(), vec!["the server echoed ***".to_string()]);
        assert_eq!(e.message, "refused key ***");
    }

    #[test]
    fn one_mapping_from_http_answers_to_codes() {
        let code = |status, body: &str| Error::from_status("x", status, body.as_bytes()).code.as_str();
        assert_eq!(code(401, ""), "auth_failed");
        assert_eq!(
            code(
                403,
                r#"{"error": {"message": "no access", "type": "permission_error"}}"#
            ),
            "auth_failed"
        );
        assert_eq!(
            code(403, r#"{"detail": "File not allowed: /etc/passwd."}"#),
            "bad_request"
        );
        assert_eq!(
            code(400, r#"{"error": {"message": "no db", "type": "no_db_connection"}}"#),
            "auth_failed"
        );
        assert_eq!(code(400, r#"{"error": "bad prompt"}"#), "bad_request");
        assert_eq!(code(404, "Not Found"), "bad_request");
        assert_eq!(code(408, ""), "timeout");
        assert_eq!(code(429, ""), "rate_limited");
        assert_eq!(code(503, r#"{"detail": "Queue is full."}"#), "rate_limited");
        assert_eq!(code(503, "upstream down"), "server_error");
        assert_eq!(code(500, ""), "server_error");
        assert_eq!(code(302, ""), "http_status");
        let e = Error::from_status(
            "reading /queue",
            500,
            br#"{"error": {"message": "boom", "type": "oops"}}"#,
        );
        assert_eq!(e.message, "reading /queue: HTTP 500: boom");
        assert_eq!((e.status(), e.error_type()), (Some(500), Some("oops")));
        assert!(e.is_status() && e.is_retryable());
        let e = Error::from_status("", 422, br#"{"detail": [{"loc": ["body"], "msg": "field required"}]}"#);
        assert!(e.message.starts_with("HTTP 422: [{"), "{}", e.message);
        assert_eq!(Error::from_status("", 500, b"  ").message, "HTTP 500: no details");
    }

    #[test]
    fn io_and_json_causes_are_kept() {
        let e = Error::io("reading the workflow", std::io::Error::from_raw_os_error(2));
        assert_eq!(e.code(), "io_error");
        assert_eq!(
            e.find_source::<std::io::Error>().and_then(std::io::Error::raw_os_error),
            Some(2)
        );
        let bad = serde_json::from_str::<serde_json::Value>("{").expect_err("not JSON");
        let e = Error::protocol("the answer is not JSON").with_source(bad);
        assert!(e
            .find_source::<serde_json::Error>()
            .is_some_and(serde_json::Error::is_eof));
        assert_eq!(e.causes().len(), 1);
    }

    #[test]
    fn an_error_stays_small_enough_to_return_by_value() {
        // Clippy's `result_large_err` starts at 128 bytes.
        assert!(std::mem::size_of::<Error>() < 128, "{}", std::mem::size_of::<Error>());
    }
}
