//! What every backend shares on the wire and on disk: reading an answer into memory within a limit (`body`),
//! decoding `text/event-stream` (`sse`), WebSocket limits (`ws`), bringing a result file home (`download`), naming files and job folders
//! (`files`) and recording a finished job (`manifest`). ComfyUI, Gradio, OpenAI-compatible and MCP backends all go
//! through these, so a limit or a durability rule is written once.
pub mod body;
pub mod download;
pub mod files;
pub mod manifest;
pub mod sse;
pub mod ws;
