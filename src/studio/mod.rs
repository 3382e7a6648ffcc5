//! The studio server (`director-link serve`): one hub's jobs, live, for every browser, tool and teammate.
//!
//! HTTP + WebSocket on the hub's own runtime (axum). The hub's events are drained by one thread into the
//! [`relay::Relay`], which numbers them in one stream (offsets + epoch), keeps a bounded history for resuming,
//! keeps each job's view for the brief's endpoints, and fans out to every subscriber's bounded outbox.
//! Jobs and history persist in SQLite or PostgreSQL (see [`store`]); with `--redis`, several instances share their
//! jobs' events over Redis Streams (see [`bus`]). Endpoints:
//!
//! - `WS /ws/{job_id}` — the brief's per-job progress messages; `WS /ws/monitor` — `system_status`;
//!   `WS /ws/events?jobs=a,b|all&since=OFFSET&epoch=E[&previews=binary]` — our typed stream with resume.
//! - `POST/GET /api/jobs`, `GET/DELETE /api/jobs/{id}`, `GET /api/jobs/{id}/files/{name}`,
//!   `GET /api/jobs/{id}/preview`, `POST /api/jobs/{id}/progress` (external producers), `GET /api/services`,
//!   `GET /api/services/{name}/object_info`, `POST /api/services/{name}/upload?name=` (clients that check and
//!   upload before they submit: the Blender add-on in studio mode),
//!   `GET /api/health`, `GET /metrics`, `GET /api/anime/websocket/status`.
//! - `GET /` — the monitor page (`web/`), embedded ([`monitor`]).
mod auth;
mod bus;
mod clock;
mod config;
mod monitor;
mod relay;
mod routes;
mod server;
mod store;
mod ws;

pub use config::{ServiceSpec, StudioConfig, DEFAULT_PORT};
pub use relay::{Filter, JobView, Relay};
pub use server::StudioServer;
