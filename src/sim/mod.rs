//! The ComfyUI simulator: a loopback-only server that speaks ComfyUI 0.3.64 as the fixtures show.
//!
//! It really runs a handful of image nodes and the acceptance test nodes, with ComfyUI's message order,
//! routing rules, cache, validation errors, queue and history, plus scripted faults for resilience tests
//! (cut sockets, refused connections, restarts, stalls, malformed frames). It runs on its own tokio runtime
//! (threads `dl-sim-…`), owns a temporary folder for inputs/outputs, and never binds anything but 127.0.0.1.
//!
//! ```no_run
//! use director_link::sim::{SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig { time_scale: 0.2, ..SimConfig::default() })?;
//! println!("ComfyUI simulator on {}", sim.url());
//! # Ok::<(), director_link::Error>(())
//! ```
mod exec;
mod faults;
mod files;
mod http;
mod image;
mod models;
mod nodes;
mod pyjson;
mod routes;
mod server;
mod state;
mod validate;
mod ws;

use crate::error::{Error, ErrorCode};
use serde::Serialize;
use serde_json::{Map, Value};
use server::Control;
use state::{Dirs, Shared};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The node schemas the simulator validates against (ComfyUI 0.3.64 core subset + acceptance nodes).
const OBJECT_INFO_CORE: &str = include_str!("object_info_core.json");

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Multiplies every node sleep (0.2 = five times faster than the real nodes; 0 = no sleeping).
    pub time_scale: f64,
    /// Longest side of the preview images sent over the WebSocket (the real server's default is 512).
    pub preview_size: u32,
    /// Request body limit in bytes (ComfyUI's `--max-upload-size`, 100 MiB), also advertised in feature flags.
    pub max_upload_size: u64,
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// What `/system_stats` reports. Before "0.3.57" the server behaves like those releases: `/interrupt`
    /// ignores its `prompt_id` and stops whatever runs.
    pub comfyui_version: String,
    /// Node classes this server does not have (left out of `/object_info`; a prompt using one is refused), to
    /// make servers of a pool differ.
    pub without_nodes: Vec<String>,
    /// Model files this server does not have (left out of every list of choices).
    pub without_models: Vec<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            time_scale: 1.0,
            preview_size: 64,
            max_upload_size: 100 * 1024 * 1024,
            port: 0,
            comfyui_version: "0.3.64".into(),
            without_nodes: Vec::new(),
            without_models: Vec::new(),
        }
    }
}

/// One HTTP request as the simulator received it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestRecord {
    pub method: String,
    /// Path as sent (percent-encoded), without the query.
    pub path: String,
    /// Decoded query parameters (first value of each name).
    pub query: Map<String, Value>,
    /// The body parsed as JSON, or null.
    pub json: Value,
}

/// Counters for tests.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SimStats {
    /// WebSockets open now (registered or orphaned).
    pub sockets: usize,
    /// WebSocket connections accepted since start.
    pub connections_total: u64,
    /// TCP connections accepted since start (HTTP and WebSocket).
    pub http_connections_total: u64,
    /// Prompts accepted into the queue since start (rejected ones not counted).
    pub prompts_received: u64,
    /// Prompts that finished (success, error or interrupt) since start.
    pub prompts_executed: u64,
    pub queue_pending: usize,
    /// The running prompt's id.
    pub running: Option<String>,
}

/// A running simulator. `stop()` (or dropping it) shuts everything down and removes its folder.
pub struct Simulator {
    shared: Arc<Shared>,
    control: tokio::sync::mpsc::UnboundedSender<Control>,
    thread: Option<JoinHandle<()>>,
    port: u16,
}

fn io_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::Io, format!("simulator: {what}: {e}"))
}

fn valid_seconds(s: f64, what: &str) -> Result<f64, Error> {
    if s.is_finite() && (0.0..=86_400.0).contains(&s) {
        Ok(s)
    } else {
        Err(Error::new(
            ErrorCode::InvalidParameter,
            format!("{what} must be between 0 and 86400 seconds, not {s}"),
        ))
    }
}

impl Simulator {
    /// Starts the server on 127.0.0.1 and returns once it accepts connections.
    pub fn start(cfg: SimConfig) -> Result<Simulator, Error> {
        if !cfg.time_scale.is_finite() || cfg.time_scale < 0.0 {
            return Err(Error::new(
                ErrorCode::InvalidParameter,
                "time_scale must be a number ≥ 0",
            ));
        }
        let mut object_info: Map<String, Value> = serde_json::from_str(OBJECT_INFO_CORE).map_err(|e| {
            Error::new(
                ErrorCode::Protocol,
                format!("simulator: bundled object_info is broken: {e}"),
            )
        })?;
        for class in &cfg.without_nodes {
            object_info.remove(class);
        }
        if !cfg.without_models.is_empty() {
            for spec in object_info
                .values_mut()
                .flat_map(crate::workflow::schema::input_specs_mut)
            {
                if let Some(list) = spec.get_mut(0).and_then(Value::as_array_mut) {
                    list.retain(|c| !c.as_str().is_some_and(|c| cfg.without_models.iter().any(|m| m == c)));
                }
            }
        }
        let root = std::env::temp_dir().join(format!("director-link-sim-{}", uuid::Uuid::new_v4().simple()));
        let dirs = Dirs {
            input: root.join("input"),
            output: root.join("output"),
            temp: root.join("temp"),
            root,
        };
        for d in [&dirs.input, &dirs.output, &dirs.temp] {
            std::fs::create_dir_all(d).map_err(|e| io_error(&format!("cannot create {}", d.display()), e))?;
        }
        let root = dirs.root.clone();
        let shared = Arc::new(Shared::new(cfg.clone(), dirs, object_info));
        let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std_mpsc::channel::<Result<u16, Error>>();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("dl-sim-main".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("dl-sim-worker")
                    .thread_stack_size(8 << 20)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(io_error("cannot start its runtime", e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match server::bind(cfg.port) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(Error::new(
                                ErrorCode::ConnectionFailed,
                                format!("simulator: cannot listen on 127.0.0.1:{}: {e}", cfg.port),
                            )));
                            return;
                        }
                    };
                    let port = listener.local_addr().map(|a| a.port()).unwrap_or(cfg.port);
                    let _ = ready_tx.send(Ok(port));
                    server::run(thread_shared, listener, port, control_rx).await;
                });
                // Drops every task (sockets close) and joins the worker threads.
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(|e| io_error("cannot start its thread", e))?;
        let port = match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(port)) => port,
            Ok(Err(e)) => {
                let _ = thread.join();
                let _ = std::fs::remove_dir_all(&root);
                return Err(e);
            }
            Err(_) => {
                let _ = control.send(Control::Shutdown);
                let _ = std::fs::remove_dir_all(&root);
                return Err(Error::new(ErrorCode::Timeout, "simulator: did not start within 20 s"));
            }
        };
        Ok(Simulator {
            shared,
            control,
            thread: Some(thread),
            port,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where SaveImage writes (`type=output`).
    pub fn output_dir(&self) -> PathBuf {
        self.shared.dirs.output.clone()
    }

    /// Where uploads land and LoadImage reads (`type=input`).
    pub fn input_dir(&self) -> PathBuf {
        self.shared.dirs.input.clone()
    }

    /// Where PreviewImage writes (`type=temp`).
    pub fn temp_dir(&self) -> PathBuf {
        self.shared.dirs.temp.clone()
    }

    /// Every WebSocket open now is cut (TCP closed, no close frame) after `n` more messages to it;
    /// `n = 0` cuts them now. Sockets opened later are not affected.
    pub fn drop_sockets_after(&self, n: u64) {
        self.shared.drop_sockets_after(n);
    }

    /// Cuts every open WebSocket now, without a close frame (the client sees 1006).
    pub fn drop_sockets(&self) {
        self.shared.drop_sockets_after(0);
    }

    /// Unregisters every open WebSocket from its client id but leaves it open (pings are still answered): what
    /// ComfyUI's duplicate-clientId race leaves behind when an older socket of the same id closes after the newer
    /// one registered (`self.sockets.pop(sid)` removes the newer one). No message reaches those sockets any more,
    /// broadcasts included, until the client connects again.
    pub fn forget_sockets(&self) {
        self.shared.forget_sockets();
    }

    fn command(&self, make: impl FnOnce(std_mpsc::Sender<()>) -> Control, what: &str) -> Result<(), Error> {
        let (ack, done) = std_mpsc::channel();
        self.control
            .send(make(ack))
            .map_err(|_| Error::new(ErrorCode::Closed, format!("simulator: {what}: it has been stopped")))?;
        done.recv_timeout(Duration::from_secs(10))
            .map_err(|_| Error::new(ErrorCode::Timeout, format!("simulator: {what} was not acknowledged")))
    }

    /// Stops listening (connects are refused) for `seconds`, then listens again on the same port.
    /// Open connections are not touched. Returns once the listener is closed.
    pub fn refuse_connections(&self, seconds: f64) -> Result<(), Error> {
        let seconds = valid_seconds(seconds, "refuse_connections")?;
        self.command(|ack| Control::Refuse { seconds, ack }, "refuse_connections")
    }

    /// Like a process restart: sockets and keep-alive connections cut without a close frame, queue, history,
    /// cache and the running prompt gone, connections refused for `down_seconds`, then back on the same port.
    pub fn restart(&self, down_seconds: f64) -> Result<(), Error> {
        let down_seconds = valid_seconds(down_seconds, "restart")?;
        self.command(|ack| Control::Restart { down_seconds, ack }, "restart")
    }

    /// For `seconds`: sockets stay open but nothing is sent (pings go unanswered), HTTP requests get no
    /// answer, execution pauses. Queued messages and answers go out when the stall ends.
    pub fn stall(&self, seconds: f64) -> Result<(), Error> {
        let seconds = valid_seconds(seconds, "stall")?;
        self.shared
            .stall_tx
            .send_replace(Some(Instant::now() + Duration::from_secs_f64(seconds)));
        Ok(())
    }

    /// Requests whose path starts with `path` (e.g. "/view", "/prompt"; with or without "/api") are carried out
    /// as usual, but their answers are held back until `release_answers` sends them, or `cut_answers` or
    /// `restart` closes their connections unanswered: a late or lost answer, while other paths keep working.
    pub fn hold_answers(&self, path: &str) {
        let path = path.strip_prefix("/api").filter(|p| p.starts_with('/')).unwrap_or(path);
        self.shared.held_paths.lock().push(path.to_string());
    }

    /// Sends every answer held by `hold_answers`, and holds no more.
    pub fn release_answers(&self) {
        self.shared.release_answers(false);
    }

    /// Closes the connections of every answer held by `hold_answers` without sending it (the work was done:
    /// the answer is lost), and holds no more.
    pub fn cut_answers(&self) {
        self.shared.release_answers(true);
    }

    /// Sends malformed traffic to every open socket: `invalid_json`, `nan_json`, `unknown_type`,
    /// `wrong_types`, `truncated_binary`, `unknown_binary`, `huge_text` (20 MiB), `huge_binary` (20 MiB PNG).
    pub fn send_garbage(&self, kind: &str) -> Result<(), Error> {
        let frames = faults::garbage(kind).ok_or_else(|| {
            Error::new(
                ErrorCode::InvalidParameter,
                format!(
                    "unknown garbage kind {kind:?}; use one of {}",
                    faults::GARBAGE_KINDS.join(", ")
                ),
            )
        })?;
        self.shared.send_to_all_conns(&frames);
        Ok(())
    }

    /// Every HTTP request handled so far (WebSocket upgrades included; not those a restart cut first), oldest
    /// first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.lock().clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.requests.lock().clear();
    }

    pub fn stats(&self) -> SimStats {
        let inner = self.shared.inner.lock();
        let c = &self.shared.counters;
        SimStats {
            sockets: inner.conns.len(),
            connections_total: c.ws_total.load(Ordering::SeqCst),
            http_connections_total: c.http_total.load(Ordering::SeqCst),
            prompts_received: c.prompts_received.load(Ordering::SeqCst),
            prompts_executed: c.prompts_executed.load(Ordering::SeqCst),
            queue_pending: inner.queue.len(),
            running: inner.running.as_ref().map(|r| r.prompt_id.clone()),
        }
    }

    /// True until `stop()`.
    pub fn is_running(&self) -> bool {
        self.thread.is_some()
    }

    /// Shuts the server down, joins its threads and removes its folder. Idempotent.
    pub fn stop(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        let _ = self.control.send(Control::Shutdown);
        let _ = thread.join();
        let _ = std::fs::remove_dir_all(&self.shared.dirs.root);
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("url", &self.url())
            .field("running", &self.is_running())
            .finish()
    }
}
