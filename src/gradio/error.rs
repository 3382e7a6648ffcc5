//! The Gradio layer's one error type: a stable code (`crate::ErrorCode`), a message that says what happened and
//! what to do, and the HTTP status when the server answered. Never carries the password.
use crate::error::{Error, ErrorCode};
use crate::event::JobError;

#[derive(Debug, Clone, PartialEq)]
pub struct GradioError {
    pub code: ErrorCode,
    pub message: String,
    pub status: Option<u16>,
}

/// The message for a 401 when no credentials were given.
pub const LOGIN_NEEDED: &str =
    "this Gradio app requires a login: add the service with token=\"user:password\" (CLI: --token user:password)";

impl GradioError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> GradioError {
        GradioError {
            code,
            message: message.into(),
            status: None,
        }
    }

    pub fn protocol(message: impl Into<String>) -> GradioError {
        GradioError::new(ErrorCode::Protocol, message)
    }

    /// A non-2xx answer to `what`, classified by status (the body is short text or `{"detail": …}`).
    pub fn from_status(what: &str, status: u16, body: &str, logged_in: bool) -> GradioError {
        let detail = detail_text(body);
        let (code, message) = match status {
            401 | 403 if detail.contains("Not authenticated") || status == 401 => {
                let hint = if logged_in {
                    "the login was refused or has expired; check the user name and password"
                } else {
                    LOGIN_NEEDED
                };
                (ErrorCode::AuthFailed, format!("{what}: HTTP {status} ({hint})"))
            }
            403 => (ErrorCode::BadRequest, format!("{what}: HTTP 403: {detail}")),
            400 if detail.contains("Session hash not found") => (
                ErrorCode::BadRequest,
                format!("{what}: the server wants a session_hash (HTTP 400: {detail})"),
            ),
            404 => (
                ErrorCode::BadRequest,
                format!("{what}: HTTP 404 ({detail}); the endpoint does not exist or refuses direct calls"),
            ),
            413 => (
                ErrorCode::BadRequest,
                format!("{what}: the file is larger than the app accepts (HTTP 413, max_file_size)"),
            ),
            422 => (
                ErrorCode::BadRequest,
                format!("{what}: the inputs were refused (HTTP 422: {detail})"),
            ),
            503 => (
                ErrorCode::RateLimited,
                format!("{what}: the app's queue is full (HTTP 503); try again later"),
            ),
            500..=599 => (
                ErrorCode::ServerError,
                format!(
                    "{what}: the app failed (HTTP {status}: {}); an unknown fn_index or wrong inputs cause this",
                    first_line(&detail)
                ),
            ),
            400..=499 => (ErrorCode::BadRequest, format!("{what}: HTTP {status}: {detail}")),
            _ => (ErrorCode::HttpStatus, format!("{what}: HTTP {status}: {detail}")),
        };
        GradioError {
            code,
            message,
            status: Some(status),
        }
    }

    /// The app's own failure of a job (`gr.Error` text or the hidden-message note).
    pub fn app(message: String) -> GradioError {
        GradioError::new(ErrorCode::ExecutionFailed, message)
    }

    pub fn to_job_error(&self) -> JobError {
        let mut e = JobError::simple(self.code.as_str(), self.message.clone());
        if self.code == ErrorCode::ExecutionFailed {
            e.exception_type = Some("gradio.Error".into());
        }
        e
    }
}

fn first_line(s: &str) -> String {
    let line = s.lines().find(|l| !l.trim().is_empty()).unwrap_or("no details");
    line.chars().take(200).collect()
}

/// `{"detail": "…"}`, `{"detail": {"error": "…"}}`, `{"error": "…"}` or the text itself (shortened).
pub fn detail_text(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let d = v.get("detail").or_else(|| v.get("error"));
        match d {
            Some(serde_json::Value::String(s)) => return s.clone(),
            Some(serde_json::Value::Object(o)) => {
                if let Some(s) = o.get("error").and_then(|e| e.as_str()) {
                    return s.to_string();
                }
            }
            Some(other) if !other.is_null() => return other.to_string().chars().take(300).collect(),
            _ => {}
        }
    }
    let t: String = body.trim().chars().take(300).collect();
    if t.is_empty() {
        "no details".into()
    } else {
        t
    }
}

impl From<Error> for GradioError {
    fn from(e: Error) -> GradioError {
        GradioError::new(e.code, e.message)
    }
}

impl From<GradioError> for Error {
    fn from(e: GradioError) -> Error {
        Error::new(e.code, e.message)
    }
}

impl std::fmt::Display for GradioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GradioError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_codes() {
        let e = GradioError::from_status("joining", 401, r#"{"detail":"Not authenticated"}"#, false);
        assert_eq!(e.code, ErrorCode::AuthFailed);
        assert!(e.message.contains("user:password"), "{}", e.message);
        let six = r#"{"detail":{"error":"Not authenticated","auth_message":null}}"#;
        assert_eq!(
            GradioError::from_status("x", 401, six, true).code,
            ErrorCode::AuthFailed
        );
        let e = GradioError::from_status("joining", 500, "Internal Server Error", false);
        assert_eq!(e.code, ErrorCode::ServerError);
        let e = GradioError::from_status("joining", 400, r#"{"detail":"Session hash not found."}"#, false);
        assert!(e.message.contains("session_hash"));
        assert_eq!(
            GradioError::from_status("j", 503, "", false).code,
            ErrorCode::RateLimited
        );
        assert_eq!(
            detail_text(r#"{"detail":"File not allowed: /etc/passwd."}"#),
            "File not allowed: /etc/passwd."
        );
    }
}
