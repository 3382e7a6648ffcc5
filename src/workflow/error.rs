//! The workflow layer's reasons for failing. Its functions return the core [`Error`] (code `invalid_workflow` or
//! `invalid_parameter`) whose message names the file, the place in it and what was expected; the precise
//! [`ErrorKind`] travels as `reason()` and the alternatives as `candidates()`.
use crate::error::ErrorCode;
pub use crate::error::{Error, Result};
use std::fmt;

/// What went wrong; the string form (`as_str`) is the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The text is not JSON.
    InvalidJson,
    /// JSON, but neither an API prompt nor a UI workflow.
    NotAWorkflow,
    /// A workflow whose structure is broken at some JSON path.
    InvalidWorkflow,
    /// A PNG without an embedded `prompt`/`workflow`, or not a PNG at all.
    NoEmbeddedWorkflow,
    /// `/object_info` could not be understood.
    InvalidObjectInfo,
    /// A parameter selector that cannot be parsed.
    InvalidSelector,
    /// A selector that matches nothing.
    SelectorNotFound,
    /// A selector that matches several inputs (the message lists them).
    AmbiguousSelector,
    /// A value of the wrong type for the input.
    InvalidValue,
    /// A number outside the input's min/max.
    ValueOutOfRange,
    /// A COMBO value that is not one of the options.
    ValueNotInList,
    /// The input is fed by a link, so it has no literal value to set.
    InputLinked,
    /// Reading a file failed.
    Io,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidJson => "invalid_json",
            ErrorKind::NotAWorkflow => "not_a_workflow",
            ErrorKind::InvalidWorkflow => "invalid_workflow",
            ErrorKind::NoEmbeddedWorkflow => "no_embedded_workflow",
            ErrorKind::InvalidObjectInfo => "invalid_object_info",
            ErrorKind::InvalidSelector => "invalid_selector",
            ErrorKind::SelectorNotFound => "selector_not_found",
            ErrorKind::AmbiguousSelector => "ambiguous_selector",
            ErrorKind::InvalidValue => "invalid_value",
            ErrorKind::ValueOutOfRange => "value_out_of_range",
            ErrorKind::ValueNotInList => "value_not_in_list",
            ErrorKind::InputLinked => "input_linked",
            ErrorKind::Io => "io_error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ErrorKind {
    /// The core code this reason falls under (Python: the exception class; the reason is `e.reason`).
    pub fn code(self) -> ErrorCode {
        match self {
            ErrorKind::InvalidJson
            | ErrorKind::NotAWorkflow
            | ErrorKind::InvalidWorkflow
            | ErrorKind::NoEmbeddedWorkflow
            | ErrorKind::InvalidObjectInfo
            // The only files this layer reads are workflows: a missing one is bad input, not an output error.
            | ErrorKind::Io => ErrorCode::InvalidWorkflow,
            ErrorKind::InvalidSelector
            | ErrorKind::SelectorNotFound
            | ErrorKind::AmbiguousSelector
            | ErrorKind::InvalidValue
            | ErrorKind::ValueOutOfRange
            | ErrorKind::ValueNotInList
            | ErrorKind::InputLinked => ErrorCode::InvalidParameter,
        }
    }
}

/// The core error for `kind`: its code, and the precise kind and the alternatives as details (`reason`,
/// `candidates`; Python: `e.reason`, `e.candidates`).
pub fn error(kind: ErrorKind, message: impl Into<String>) -> Error {
    Error::new(kind.code(), message)
        .with_details(serde_json::json!({ "reason": kind.as_str(), "candidates": Vec::<String>::new() }))
}

/// Adds the alternatives an ambiguous or unknown selector could have meant.
pub trait WithCandidates {
    fn with_candidates(self, candidates: Vec<String>) -> Self;
}

impl WithCandidates for Error {
    fn with_candidates(mut self, candidates: Vec<String>) -> Error {
        let mut details = self.details.take().map(|d| *d).unwrap_or_else(|| serde_json::json!({}));
        if let Some(d) = details.as_object_mut() {
            d.insert("candidates".into(), serde_json::json!(candidates));
        }
        self.with_details(details)
    }
}
