//! Gradio apps (3.x to 6.x), among them Wan2GP (WanGP), RVC WebUI and AudioLDM. `protocol` is the wire format
//! (config, queue messages, diffs, FileData), `http` URL building, login, upload and download, `sse` the sse_v3
//! session stream, `ws3` the 3.x WebSocket queue, `sync` the synchronous route, `files` upload/download of call
//! values, `job` one call's events, `service` the per-app actor, `error` this layer's one error type.
pub mod error;
pub mod files;
#[cfg(test)]
mod fixture_tests;
pub mod http;
pub mod job;
pub mod protocol;
pub mod service;
pub mod sse;
pub mod sync;
pub mod ws3;

pub use job::GradioCall;

/// Gradio's default port.
pub const DEFAULT_PORT: u16 = 7860;
