//! Core errors → the Python exception hierarchy defined in `director_link/errors.py`: the one place that maps a
//! code to an exception class. The exception carries the code, the message, the details as attributes, the HTTP
//! `status` when there is one, `causes` (the texts of the source chain) and, as `__cause__`, the chain itself
//! (an `OSError` with its errno for an OS error, else `ErrorCause`).
use crate::error::{Error, ErrorCode};
use crate::event::JobError;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::error::Error as StdError;

fn class_for(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidUrl => "InvalidUrlError",
        ErrorCode::UnknownService => "UnknownServiceError",
        ErrorCode::DuplicateService => "DuplicateServiceError",
        ErrorCode::UnknownJob => "UnknownJobError",
        ErrorCode::InvalidWorkflow | ErrorCode::InvalidParameter | ErrorCode::ValidationFailed => "WorkflowError",
        ErrorCode::ConnectionFailed
        | ErrorCode::WrongService
        | ErrorCode::HttpStatus
        | ErrorCode::Protocol
        | ErrorCode::AuthFailed
        | ErrorCode::RateLimited
        | ErrorCode::ServerError
        | ErrorCode::BadRequest => "ServiceError",
        ErrorCode::ExecutionFailed
        | ErrorCode::Interrupted
        | ErrorCode::ServerRestarted
        | ErrorCode::ServiceRemoved
        | ErrorCode::NotPosted
        | ErrorCode::ServerLost => "JobFailed",
        ErrorCode::Cancelled => "JobCancelled",
        ErrorCode::Timeout => "Timeout",
        ErrorCode::OutputWrite | ErrorCode::Io => "OutputError",
        ErrorCode::Closed => "HubClosed",
    }
}

fn make(py: Python<'_>, class: &str, message: &str, code: &str, details: Option<Bound<'_, PyDict>>) -> PyErr {
    let built = (|| -> PyResult<PyErr> {
        let module = py.import("director_link.errors")?;
        let cls = module.getattr(class)?;
        let exc = cls.call((message, code), details.as_ref())?;
        Ok(PyErr::from_value(exc))
    })();
    built.unwrap_or_else(|_| PyRuntimeError::new_err(format!("[{code}] {message}")))
}

pub fn to_pyerr(py: Python<'_>, err: Error) -> PyErr {
    // Details (e.g. `problems`) become attributes of the exception.
    let details = err
        .details
        .as_ref()
        .and_then(|d| super::convert::ser_to_py(py, d).ok())
        .and_then(|d| d.into_bound(py).cast_into::<PyDict>().ok())
        .unwrap_or_else(|| PyDict::new(py));
    if let Some(status) = err.status() {
        let _ = details.set_item("status", status);
    }
    let _ = details.set_item("causes", err.causes());
    let exc = make(py, class_for(err.code), &err.message, err.code.as_str(), Some(details));
    if let Some(cause) = StdError::source(&err).map(|s| cause_chain(py, s)) {
        exc.set_cause(py, Some(cause));
    }
    exc
}

/// The source chain as Python exceptions linked by `__cause__`.
fn cause_chain(py: Python<'_>, err: &(dyn StdError + 'static)) -> PyErr {
    let text = err.to_string();
    let exc = match err
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::raw_os_error)
    {
        // `OSError(errno, strerror)` becomes the matching subclass (`ConnectionRefusedError`, …).
        Some(errno) => {
            let strerror = text.strip_suffix(&format!(" (os error {errno})")).unwrap_or(&text);
            PyOSError::new_err((errno, strerror.to_string()))
        }
        None => py
            .import("director_link.errors")
            .and_then(|m| m.getattr("ErrorCause"))
            .and_then(|cls| cls.call1((text.as_str(),)))
            .map(PyErr::from_value)
            .unwrap_or_else(|_| PyRuntimeError::new_err(text.clone())),
    };
    if let Some(next) = err.source() {
        exc.set_cause(py, Some(cause_chain(py, next)));
    }
    exc
}

/// Shorthand for `map_err` on core results.
pub trait IntoPyResult<T> {
    fn py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_pyerr(py, e))
    }
}

/// A job's failure as `JobFailed` (or `JobCancelled`) with its details as attributes.
pub fn job_error(py: Python<'_>, job_id: &str, error: Option<&JobError>, cancelled: bool) -> PyErr {
    let details = PyDict::new(py);
    let _ = details.set_item("job_id", job_id);
    if cancelled {
        return make(
            py,
            "JobCancelled",
            &format!("job {job_id} was cancelled"),
            "cancelled",
            Some(details),
        );
    }
    let (code, message) = match error {
        Some(e) => {
            let _ = details.set_item("node_id", e.node_id.clone());
            let _ = details.set_item("node_type", e.node_type.clone());
            let _ = details.set_item("exception_type", e.exception_type.clone());
            let _ = details.set_item("traceback", e.traceback.clone());
            let _ = details.set_item("causes", e.causes.clone());
            if let Ok(problems) = super::convert::ser_to_py(py, &e.node_errors) {
                let _ = details.set_item("node_errors", problems);
            }
            (e.code.as_str(), e.message.as_str())
        }
        None => {
            let _ = details.set_item("causes", Vec::<String>::new());
            ("execution_failed", "the job failed")
        }
    };
    let class = if code == "validation_failed" {
        "WorkflowError"
    } else {
        "JobFailed"
    };
    make(py, class, message, code, Some(details))
}
