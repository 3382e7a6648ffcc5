//! The workflow layer's error: a stable snake_case `code` plus a message that names the file, the place in it and
//! what was expected.
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

/// An error of the workflow layer. `candidates` lists the alternatives for ambiguous or unknown selectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub candidates: Vec<String>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            candidates: Vec::new(),
        }
    }
    pub fn with_candidates(mut self, candidates: Vec<String>) -> Error {
        self.candidates = candidates;
        self
    }
    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        self.kind.as_str()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for crate::Error {
    fn from(err: Error) -> crate::Error {
        use crate::ErrorCode;
        let code = match err.kind {
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
        };
        // The precise kind and the alternatives travel as details (Python: `e.reason`, `e.candidates`).
        let details = serde_json::json!({ "reason": err.kind.as_str(), "candidates": err.candidates });
        crate::Error::new(code, err.message).with_details(details)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
