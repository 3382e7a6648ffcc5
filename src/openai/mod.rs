//! OpenAI-compatible servers: the LiteLLM proxy first, also Ollama, LM Studio, vLLM and llama.cpp by URL.
//! `protocol` is the wire format (serde types; the SSE decoder is the shared `net::sse`), `http` the REST calls, `service` the per-service
//! actor that checks health and runs chat jobs, `error` this layer's one error type.
pub mod error;
pub mod http;
pub mod protocol;
pub mod service;

/// The environment variable read for the Bearer key when `add_service` is given none.
pub const KEY_ENV: &str = "DIRECTOR_LINK_OPENAI_KEY";

/// LiteLLM's default port.
pub const DEFAULT_PORT: u16 = 4000;
