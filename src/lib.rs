//! Director Link core: a native link from Blender to local AI servers (ComfyUI first).
//!
//! The core is plain Rust (`cargo test` needs no Python); the pyo3 binding lives in `py/` behind the
//! `python` feature.
pub mod sim;
pub mod workflow;
