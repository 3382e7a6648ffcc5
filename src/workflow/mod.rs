//! Workflows: API and UI formats, conversion, validation and parameters.
//!
//! - [`load`]: read a workflow (API or UI JSON, or a ComfyUI PNG), detecting the format.
//! - [`convert`]: UI → API the way the frontend's `graphToPrompt` does, given the server's `/object_info`
//!   ([`schema`]).
//! - [`validate`]: the server's checks before submission, with the server's problem codes.
//! - [`params`]: find and set inputs by id, class, title or role (`positive.text`, `sampler.seed`).
pub mod convert;
pub mod error;
pub mod graph;
pub mod load;
pub mod params;
pub mod prepare;
pub mod schema;
pub mod ui;
pub mod validate;

pub use convert::{convert, to_api, CivilTime, Conversion, ConvertOptions, Warning};
pub use error::{Error, ErrorKind};
pub use graph::{InputValue, Link, Prompt, PromptNode};
pub use load::{load_file, load_png, load_str, load_value, PngWorkflow, Workflow};
pub use params::{parameters, Parameter, Target};
pub use schema::{InputSpec, InputType, NodeSchema, ObjectInfo};
pub use ui::UiWorkflow;
pub use validate::{validate, validate_with, Problem, Severity, ValidateOptions, ValidationReport};
