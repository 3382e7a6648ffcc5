//! ComfyUI: wire types, REST, WebSocket, job routing, outputs, and the per-service actor.
pub mod http;
pub mod jobs;
pub mod outputs;
pub mod protocol;
pub mod service;
pub mod ws;
