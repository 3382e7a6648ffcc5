//! What only OpenAI-compatible servers say about a failure: the hints added to the core's one mapping of an HTTP
//! error answer ([`crate::Error::from_status`]), a failure frame mid-stream, and how many attempts a job made.
//! The key is scrubbed from everything the server echoes.
use super::protocol::ApiError;
use crate::error::{status_code, Error, ErrorCode};
use crate::event::JobError;
use std::time::Duration;

/// An error answer (`{"error": {...}}` or anything else) with its HTTP status and `Retry-After`.
pub fn failure(status: u16, body: &[u8], retry_after: Option<Duration>, secret: Option<&str>) -> Error {
    let e = Error::from_status("", status, body);
    let e = match hint(e.code) {
        Some(h) => e.with_hint(h),
        None => e,
    };
    e.with_retry_after(retry_after).scrubbed(secret)
}

/// A `data: {"error": ...}` frame after the stream had started (its `code` is the status as a string on LiteLLM).
pub fn mid_stream(error: ApiError, secret: Option<&str>) -> Error {
    let status = error.code.as_deref().and_then(|c| c.parse::<u16>().ok());
    let code = match status {
        Some(s) => status_code(s, error.kind.as_deref(), &error.message),
        None => ErrorCode::ServerError,
    };
    let mut e = Error::new(code, format!("the server failed mid-stream: {}", error.message));
    if let Some(s) = status {
        e = e.with_status(s);
    }
    if let Some(t) = error.kind {
        e = e.with_details(serde_json::json!({ "error_type": t }));
    }
    e.scrubbed(secret)
}

fn hint(code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::AuthFailed => "check the API key (token= or DIRECTOR_LINK_OPENAI_KEY)",
        ErrorCode::RateLimited => "the server is rate limiting; wait and try again",
        ErrorCode::ServerError => "the server or its upstream model failed",
        ErrorCode::BadRequest => "the request was refused; check the model name and the options",
        _ => return None,
    })
}

/// The job failure, saying how many attempts were made; the server's error type becomes `exception_type`.
pub fn job_error(e: &Error, attempts: u32) -> JobError {
    let mut j = e.to_job_error();
    if attempts > 1 {
        j.message = format!("{} (after {attempts} attempts)", e.message);
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_stable_codes() {
        let code = |s, t: &str| {
            let body = format!(r#"{{"error": {{"message": "m", "type": "{t}"}}}}"#);
            failure(s, body.as_bytes(), None, None).code.as_str()
        };
        assert_eq!(code(401, "auth_error"), "auth_failed");
        assert_eq!(code(400, "no_db_connection"), "auth_failed");
        assert_eq!(code(400, "invalid_request_error"), "bad_request");
        assert_eq!(code(429, "throttling_error"), "rate_limited");
        assert_eq!(code(500, "internal_server_error"), "server_error");
        assert!(failure(529, b"", None, None).is_retryable());
        assert!(!failure(400, b"", None, None).is_retryable());
        let e = failure(
            429,
            br#"{"error": {"message": "slow down", "type": "throttling_error"}}"#,
            None,
            None,
        );
        assert_eq!(e.status(), Some(429));
        assert_eq!(e.error_type(), Some("throttling_error"));
        assert!(e.message.starts_with("HTTP 429: slow down; "), "{}", e.message);
        assert_eq!(job_error(&e, 3).exception_type.as_deref(), Some("throttling_error"));
        assert!(job_error(&e, 3).message.ends_with("(after 3 attempts)"));
    }

    #[test]
    fn secrets_are_scrubbed() {
        let e = failure(
            401,
            br#"{"error": {"message": "bad key sk-secret-1"}}"#,
            None,
            Some("sk-secret-1"),
        );
        assert!(
            !e.message.contains("sk-secret-1") && e.message.contains("bad key ***"),
            "{}",
            e.message
        );
        let frame = ApiError {
            message: "echo sk-secret-1".into(),
            ..ApiError::default()
        };
        assert!(!mid_stream(frame, Some("sk-secret-1")).message.contains("sk-secret-1"));
    }
}
