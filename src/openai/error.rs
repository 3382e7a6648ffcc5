//! The OpenAI layer's error: what went wrong (a stable code), the server's own words, and whether and when the
//! request may be sent again. It never carries the key or a URL with credentials.
use super::protocol::ApiError;
use crate::error::{Error, ErrorCode};
use crate::event::JobError;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiError {
    pub code: ErrorCode,
    pub message: String,
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// The server's `error.type` (`throttling_error`, `auth_error`, ...).
    pub error_type: Option<String>,
    /// The server's `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl OpenAiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> OpenAiError {
        OpenAiError {
            code,
            message: message.into(),
            status: None,
            error_type: None,
            retry_after: None,
        }
    }

    /// 429, 5xx (529 included), timeouts and refused connections: worth another try.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::RateLimited | ErrorCode::ServerError | ErrorCode::ConnectionFailed | ErrorCode::Timeout
        )
    }

    pub fn is_auth(&self) -> bool {
        self.code == ErrorCode::AuthFailed
    }

    /// An error answer (`{"error": {...}}` or anything else) with its HTTP status.
    pub fn from_status(status: u16, error: Option<ApiError>, body_text: &str) -> OpenAiError {
        let error_type = error.as_ref().and_then(|e| e.kind.clone());
        let server_says = match &error {
            Some(e) if !e.message.is_empty() => e.message.clone(),
            _ => {
                let text: String = body_text.trim().chars().take(200).collect();
                if text.is_empty() {
                    "no details".to_string()
                } else {
                    text
                }
            }
        };
        let code = classify(status, error_type.as_deref());
        let hint = match code {
            ErrorCode::AuthFailed => "check the API key (token= or DIRECTOR_LINK_OPENAI_KEY)",
            ErrorCode::RateLimited => "the server is rate limiting; wait and try again",
            ErrorCode::ServerError => "the server or its upstream model failed",
            ErrorCode::BadRequest => "the request was refused; check the model name and the options",
            _ => "unexpected answer",
        };
        OpenAiError {
            code,
            message: format!("HTTP {status}: {server_says} ({hint})"),
            status: Some(status),
            error_type,
            retry_after: None,
        }
    }

    /// A `data: {"error": ...}` frame after the stream had started.
    pub fn mid_stream(error: ApiError) -> OpenAiError {
        let status = error.code.as_deref().and_then(|c| c.parse::<u16>().ok());
        let code = match status {
            Some(s) => classify(s, error.kind.as_deref()),
            None => ErrorCode::ServerError,
        };
        OpenAiError {
            code,
            message: format!("the server failed mid-stream: {}", error.message),
            status,
            error_type: error.kind,
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> OpenAiError {
        self.retry_after = retry_after;
        self
    }

    /// Removes a secret from the message (a server could echo what it was sent).
    pub fn scrubbed(mut self, secret: Option<&str>) -> OpenAiError {
        if let Some(s) = secret.filter(|s| s.len() >= 4) {
            self.message = self.message.replace(s, "***");
        }
        self
    }

    pub fn to_job_error(&self, attempts: u32) -> JobError {
        let mut e = JobError::simple(self.code.as_str(), self.message.clone());
        if attempts > 1 {
            e.message = format!("{} (after {attempts} attempts)", self.message);
        }
        e.exception_type = self.error_type.clone();
        e
    }
}

/// LiteLLM answers a wrong key without a database with 400 `no_db_connection`: a key problem, not a bad request.
fn classify(status: u16, error_type: Option<&str>) -> ErrorCode {
    let auth_like = error_type.is_some_and(|t| t.contains("auth") || t.contains("db"));
    match status {
        401 | 403 => ErrorCode::AuthFailed,
        400 if auth_like => ErrorCode::AuthFailed,
        408 => ErrorCode::Timeout,
        429 => ErrorCode::RateLimited,
        500..=599 => ErrorCode::ServerError,
        400..=499 => ErrorCode::BadRequest,
        _ => ErrorCode::HttpStatus,
    }
}

impl From<crate::error::Error> for OpenAiError {
    fn from(e: crate::error::Error) -> OpenAiError {
        OpenAiError::new(e.code, e.message)
    }
}

impl From<OpenAiError> for Error {
    fn from(e: OpenAiError) -> Error {
        Error::new(e.code, e.message)
    }
}

impl std::fmt::Display for OpenAiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OpenAiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_stable_codes() {
        let code = |s, t: Option<&str>| classify(s, t).as_str();
        assert_eq!(code(401, Some("auth_error")), "auth_failed");
        assert_eq!(code(400, Some("no_db_connection")), "auth_failed");
        assert_eq!(code(400, Some("invalid_request_error")), "bad_request");
        assert_eq!(code(429, Some("throttling_error")), "rate_limited");
        assert_eq!(code(500, Some("internal_server_error")), "server_error");
        assert_eq!(code(529, None), "server_error");
        assert!(OpenAiError::from_status(529, None, "").is_retryable());
        assert!(!OpenAiError::from_status(400, None, "").is_retryable());
    }

    #[test]
    fn secrets_are_scrubbed() {
        let e = OpenAiError::new(ErrorCode::AuthFailed, "bad key sk-secret-1").scrubbed(Some("sk-secret-1"));
        assert_eq!(e.message, "bad key ***");
    }
}
