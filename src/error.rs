//! The core's one error type. Every error carries a stable snake_case `code` that Python code and tests key on,
//! so messages can improve without breaking anyone.
use std::fmt;

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

/// An error with a stable code and a message that says what was wrong and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// Structured details for callers (e.g. `{"problems": [...]}` for a workflow that failed validation).
    pub details: Option<serde_json::Value>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
    pub fn code(&self) -> &'static str {
        self.code.as_str()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Describes a reqwest failure with a hint, without its URL (a query or userinfo may carry a token).
pub fn describe_http_error(err: reqwest::Error, what: &str) -> Error {
    let err = err.without_url();
    if err.is_timeout() {
        Error::new(
            ErrorCode::Timeout,
            format!("{what}: the server did not answer in time; is it busy or stuck?"),
        )
    } else if err.is_connect() {
        Error::new(
            ErrorCode::ConnectionFailed,
            format!(
                "{what}: could not connect ({}); is the server running and is the address right?",
                root_cause(&err)
            ),
        )
    } else if err.is_decode() || err.is_body() {
        Error::new(
            ErrorCode::Protocol,
            format!("{what}: the answer could not be read ({})", root_cause(&err)),
        )
    } else {
        Error::new(ErrorCode::ConnectionFailed, format!("{what}: {}", root_cause(&err)))
    }
}

/// The deepest source's text: "Connection refused (os error 111)" rather than "error sending request".
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
