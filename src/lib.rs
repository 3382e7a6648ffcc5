//! Director Link core: a native link from Blender to local AI servers (ComfyUI first).
//!
//! The core is plain Rust (`cargo test` needs no Python); the pyo3 binding lives in `py/` behind the
//! `python` feature. Start with [`hub::Hub`].
pub mod comfy;
pub mod discovery;
pub mod endpoint;
pub mod error;
pub mod event;
pub mod gradio;
pub mod hub;
pub mod mcp;
pub mod net;
pub mod openai;
pub mod pool;
pub mod service;
pub mod sim;
pub mod studio;
pub mod tracker;
pub mod workflow;

pub use error::{Error, ErrorCode};
pub use event::{Event, EventKind};
pub use hub::{Hub, HubConfig, ServiceOptions};

#[cfg(feature = "python")]
mod py;
