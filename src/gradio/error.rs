//! What only Gradio says about a failure: the hints added to the core's one mapping of an HTTP error answer
//! ([`crate::Error::from_status`]), and the app's own failure of a job. Never carries the password.
use crate::error::{Error, ErrorCode};

/// The message for a 401 when no credentials were given.
pub const LOGIN_NEEDED: &str =
    "this Gradio app requires a login: add the service with token=\"user:password\" (CLI: --token user:password)";

/// The server's error type for an app's own failure (`gr.Error`); it becomes the job error's `exception_type`.
pub const APP_ERROR_TYPE: &str = "gradio.Error";

/// A non-2xx answer to `what`: the core's code, with what to do in Gradio's terms.
pub fn failure(what: &str, status: u16, body: &[u8], logged_in: bool) -> Error {
    let e = Error::from_status(what, status, body);
    let said = String::from_utf8_lossy(body);
    match (e.code, status) {
        (ErrorCode::AuthFailed, _) if logged_in => {
            e.with_hint("the login was refused or has expired; check the user name and password")
        }
        (ErrorCode::AuthFailed, _) => e.with_hint(LOGIN_NEEDED),
        (_, 400) if said.contains("Session hash not found") => e.with_hint("the server wants a session_hash"),
        (_, 404) => e.with_hint("the endpoint does not exist or refuses direct calls"),
        (_, 413) => e.with_hint("the file is larger than the app accepts (max_file_size)"),
        (ErrorCode::RateLimited, _) => e.with_hint("the app's queue is full; try again later"),
        (ErrorCode::ServerError, _) => e.with_hint("an unknown fn_index or wrong inputs cause this"),
        (ErrorCode::BadRequest, 422) => e.with_hint("the inputs were refused"),
        _ => e,
    }
}

/// The app's own failure of a job (`gr.Error` text or the hidden-message note).
pub fn app(message: String) -> Error {
    Error::new(ErrorCode::ExecutionFailed, message).with_details(serde_json::json!({ "error_type": APP_ERROR_TYPE }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_codes_with_gradio_hints() {
        let e = failure("joining", 401, br#"{"detail":"Not authenticated"}"#, false);
        assert_eq!(e.code, ErrorCode::AuthFailed);
        assert_eq!(e.status(), Some(401));
        assert!(e.message.contains("user:password"), "{}", e.message);
        let six = br#"{"detail":{"error":"Not authenticated","auth_message":null}}"#;
        let e = failure("x", 401, six, true);
        assert_eq!(e.code, ErrorCode::AuthFailed);
        assert!(e.message.contains("check the user name and password"), "{}", e.message);
        let e = failure("joining", 500, b"Internal Server Error", false);
        assert_eq!(e.code, ErrorCode::ServerError);
        let e = failure("joining", 400, br#"{"detail":"Session hash not found."}"#, false);
        assert!(e.message.contains("session_hash"), "{}", e.message);
        assert_eq!(
            failure("j", 503, br#"{"detail":"Queue is full."}"#, false).code,
            ErrorCode::RateLimited
        );
        let e = failure("file", 403, br#"{"detail":"File not allowed: /etc/passwd."}"#, false);
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("File not allowed: /etc/passwd."), "{}", e.message);
    }

    #[test]
    fn an_app_failure_names_gradio_as_its_type() {
        let j = app("boom".into()).to_job_error();
        assert_eq!(j.code, "execution_failed");
        assert_eq!(j.exception_type.as_deref(), Some("gradio.Error"));
    }
}
