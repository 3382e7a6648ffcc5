//! The WebSocket endpoints: the brief's `/ws/{job_id}` and `/ws/monitor`, and our typed stream `/ws/events`.
//!
//! Each connection is one task: it sends what its outbox holds (in batches, one flush each), answers the
//! client, pings (WebSocket pings, plus the brief's application `ping` messages), and closes a peer that stayed
//! silent past the connection timeout or could not keep up (close code 4008; it resumes by offset).
use super::auth::{self, valid_job_id};
use super::clock;
use super::relay::{ConnKind, Filter, Frame, JobView, Outbox};
use super::routes::{brief_connections, check_id, ApiError};
use super::server::AppState;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Close codes (4000–4999 are the application's).
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
pub const CLOSE_TIMEOUT: u16 = 4000;
const CLOSE_GOING_AWAY: u16 = 1001;

/// Clients send small control messages only.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;
/// Frames sent per flush.
const BATCH: usize = 256;
/// The monitor's status is sent at most this often on change.
const MONITOR_MIN_GAP: Duration = Duration::from_millis(250);

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/ws/monitor", get(monitor))
        .route("/ws/events", get(events))
        .route("/ws/{job_id}", get(job))
}

/// Limits before the upgrade: the connection cap and the per-address rate.
fn admit(state: &AppState, peer: SocketAddr) -> Result<(), ApiError> {
    if state.connections.load(Ordering::Relaxed) >= state.config.max_connections {
        state.refused_connections.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!(
                "this studio server holds its maximum of {} connections; try again later",
                state.config.max_connections
            ),
        ));
    }
    let limited = state.config.rate_limit_loopback || !peer.ip().is_loopback();
    if limited && !state.limiter.allow(peer.ip()) {
        state.refused_connections.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many connection attempts from this address; back off and retry".into(),
        ));
    }
    Ok(())
}

/// Small per-connection buffers: tungstenite's defaults allocate ~128 KiB per connection.
fn tune(mut ws: WebSocketUpgrade, headers: &HeaderMap) -> WebSocketUpgrade {
    if let Some(p) = auth::selected_protocol(headers) {
        ws.set_selected_protocol(p);
    }
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
}

/// Counts a connection for as long as it lives.
struct ConnGuard {
    state: Arc<AppState>,
    kind: ConnKind,
}

impl ConnGuard {
    fn new(state: Arc<AppState>, kind: ConnKind) -> ConnGuard {
        state.connections.fetch_add(1, Ordering::Relaxed);
        state.relay.connection_opened(kind);
        ConnGuard { state, kind }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.state.connections.fetch_sub(1, Ordering::Relaxed);
        self.state.relay.connection_closed(self.kind);
    }
}

fn text(v: &Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_string()),
    }))
}

/// Why a connection loop ended.
enum End {
    ClientGone,
    Closed(u16, String),
}

/// What arrives from the client: control messages answered here; true while the connection should go on.
async fn answer(socket: &mut WebSocket, msg: Message, last_seen: &mut Instant) -> Result<bool, axum::Error> {
    *last_seen = Instant::now();
    match msg {
        Message::Text(t) => {
            let reply = match serde_json::from_str::<Value>(t.as_str()) {
                Ok(v) if v.get("type").and_then(Value::as_str) == Some("ping") => {
                    json!({"type": "pong", "timestamp": clock::rfc3339(clock::now())})
                }
                Ok(v) if v.get("type").and_then(Value::as_str) == Some("pong") => return Ok(true),
                Ok(_) => json!({"type": "error", "code": "unknown_message",
                                 "message": "this endpoint only understands {\"type\": \"ping\"}"}),
                Err(_) => json!({"type": "error", "code": "invalid_message", "message": "messages must be JSON"}),
            };
            socket.send(text(&reply)).await?;
            Ok(true)
        }
        Message::Close(_) => Ok(false),
        _ => Ok(true),
    }
}

/// The loop every endpoint shares: outbox → socket, client → answers, pings, timeout, shutdown. `app_ping`
/// adds the brief's `{"type": "ping"}` messages.
async fn pump(
    state: &AppState,
    socket: &mut WebSocket,
    outbox: &Outbox,
    app_ping: bool,
    mut on_batch: impl FnMut(&[Frame]),
) -> End {
    let mut ping = tokio::time::interval(state.config.ping_interval());
    ping.tick().await;
    let timeout = state.config.connection_timeout();
    let mut last_seen = Instant::now();
    let mut shutdown = state.shutdown.clone();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            next = outbox.next_batch(&mut batch, BATCH) => {
                if next.is_err() {
                    state.relay.counters.overflow_closes.fetch_add(1, Ordering::Relaxed);
                    return End::Closed(CLOSE_SLOW_CONSUMER, "slow consumer: reconnect with since=<your last offset>".into());
                }
                on_batch(&batch);
                for f in batch.drain(..) {
                    if socket.feed(Message::Text(Utf8Bytes::from(&*f.text))).await.is_err() {
                        return End::ClientGone;
                    }
                }
                if socket.flush().await.is_err() {
                    return End::ClientGone;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(msg)) => match answer(socket, msg, &mut last_seen).await {
                    Ok(true) => {}
                    Ok(false) | Err(_) => return End::ClientGone,
                },
                Some(Err(e)) => {
                    let msg = e.to_string();
                    if msg.contains("too long") || msg.contains("size") {
                        return End::Closed(1009, format!("message too big (at most {MAX_CLIENT_MESSAGE} bytes)"));
                    }
                    return End::ClientGone;
                }
                None => return End::ClientGone,
            },
            _ = ping.tick() => {
                if last_seen.elapsed() > timeout {
                    return End::Closed(CLOSE_TIMEOUT, "no answer within the connection timeout".into());
                }
                if socket.send(Message::Ping(bytes::Bytes::from_static(b"dl"))).await.is_err() {
                    return End::ClientGone;
                }
                if app_ping {
                    let p = json!({"type": "ping", "timestamp": clock::rfc3339(clock::now())});
                    if socket.send(text(&p)).await.is_err() {
                        return End::ClientGone;
                    }
                }
            }
            _ = stopped(&mut shutdown) => {
                return End::Closed(CLOSE_GOING_AWAY, "the studio server is shutting down".into());
            }
        }
    }
}

/// Resolves once the server is shutting down (the watch guard never lives across an await).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

async fn finish(mut socket: WebSocket, end: End) {
    if let End::Closed(code, reason) = end {
        let _ = socket.send(close(code, &reason)).await;
    }
    let _ = socket.close().await;
}

// ---- /ws/{job_id} -------------------------------------------------------------------------------------------

async fn job(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_id(&job_id)?;
    admit(&state, peer)?;
    Ok(tune(ws, &headers).on_upgrade(move |socket| job_connection(state, socket, job_id)))
}

async fn job_connection(state: Arc<AppState>, mut socket: WebSocket, job_id: String) {
    let _guard = ConnGuard::new(state.clone(), ConnKind::Job);
    let (sub, outbox, view) = state.relay.subscribe_brief(&job_id);
    let hello = json!({
        "type": "connection",
        "job_id": job_id,
        "status": "connected",
        "message": match &view {
            Some(_) => "Connected to job progress",
            None => "Connected; this job is not known yet, its progress follows when it starts",
        },
        "timestamp": clock::rfc3339(clock::now()),
    });
    let mut ok = socket.send(text(&hello)).await.is_ok();
    if let (true, Some(v)) = (ok, &view) {
        // The current state at once (a finished job's final state).
        ok = socket
            .send(Message::Text(Utf8Bytes::from(v.brief_progress())))
            .await
            .is_ok();
    }
    if ok {
        let end = pump(&state, &mut socket, &outbox, true, |_| {}).await;
        finish(socket, end).await;
    }
    state.relay.unsubscribe_brief(&job_id, sub);
}

// ---- /ws/monitor --------------------------------------------------------------------------------------------

pub fn system_status(state: &AppState) -> Value {
    let counts = state.relay.job_counts();
    let recent: Vec<Value> = state
        .relay
        .jobs(None, None)
        .iter()
        .take(20)
        .map(|v: &JobView| {
            json!({
                "job_id": v.job_id, "status": v.brief_status(), "state": v.state, "progress": v.progress.round(),
                "message": v.message, "service": v.service, "tag": v.tag, "current_node": v.current_node,
                "estimated_remaining": v.eta_seconds.map(f64::ceil), "output_path": v.first_output(),
                "updated_at": clock::rfc3339(v.updated_at),
            })
        })
        .collect();
    let conns = brief_connections(state);
    let snap = state.hub.snapshot();
    json!({
        "type": "system_status",
        "timestamp": clock::now(),
        "jobs": {"total": counts.total, "active": counts.active, "completed": counts.completed,
                 "failed": counts.failed, "cancelled": counts.cancelled},
        "websockets": {"total_connections": conns["total_connections"],
                       "jobs_with_connections": conns["jobs_with_connections"]},
        "recent_jobs": recent,
        "studio": snap.studio,
        "offset": state.relay.newest_offset(),
        "epoch": state.relay.epoch(),
    })
}

async fn monitor(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    admit(&state, peer)?;
    Ok(tune(ws, &headers).on_upgrade(move |socket| monitor_connection(state, socket)))
}

async fn monitor_connection(state: Arc<AppState>, mut socket: WebSocket) {
    let _guard = ConnGuard::new(state.clone(), ConnKind::Monitor);
    let hello = json!({"type": "connection", "status": "connected", "message": "Connected to the studio monitor",
                       "timestamp": clock::rfc3339(clock::now())});
    if socket.send(text(&hello)).await.is_err() || socket.send(text(&system_status(&state))).await.is_err() {
        return;
    }
    let mut changes = state.relay.changes();
    changes.mark_unchanged();
    let mut periodic = tokio::time::interval(Duration::from_secs_f64(state.config.monitor_interval_seconds));
    periodic.tick().await;
    let mut ping = tokio::time::interval(state.config.ping_interval());
    ping.tick().await;
    let timeout = state.config.connection_timeout();
    let mut last_seen = Instant::now();
    let mut last_sent = Instant::now();
    let mut shutdown = state.shutdown.clone();
    let end = loop {
        let due = tokio::time::sleep_until((last_sent + MONITOR_MIN_GAP).into());
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    break End::Closed(CLOSE_GOING_AWAY, "the studio server is shutting down".into());
                }
                // Coalesce: at most one status per gap, always the newest.
                due.await;
                changes.mark_unchanged();
                if socket.send(text(&system_status(&state))).await.is_err() {
                    break End::ClientGone;
                }
                last_sent = Instant::now();
            }
            _ = periodic.tick() => {
                if socket.send(text(&system_status(&state))).await.is_err() {
                    break End::ClientGone;
                }
                last_sent = Instant::now();
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(msg)) => match answer(&mut socket, msg, &mut last_seen).await {
                    Ok(true) => {}
                    _ => break End::ClientGone,
                },
                _ => break End::ClientGone,
            },
            _ = ping.tick() => {
                if last_seen.elapsed() > timeout {
                    break End::Closed(CLOSE_TIMEOUT, "no answer within the connection timeout".into());
                }
                let p = json!({"type": "ping", "timestamp": clock::rfc3339(clock::now())});
                if socket.send(Message::Ping(bytes::Bytes::from_static(b"dl"))).await.is_err()
                    || socket.send(text(&p)).await.is_err() {
                    break End::ClientGone;
                }
            }
            _ = stopped(&mut shutdown) => break End::Closed(CLOSE_GOING_AWAY, "the studio server is shutting down".into()),
        }
    };
    finish(socket, end).await;
}

// ---- /ws/events ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct EventsQuery {
    jobs: Option<String>,
    since: Option<u64>,
    epoch: Option<String>,
}

async fn events(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let filter = match q.jobs.as_deref().map(str::trim) {
        None | Some("") | Some("all") => Filter::All,
        Some(list) => {
            let ids: std::collections::HashSet<String> = list.split(',').map(|s| s.trim().to_string()).collect();
            if ids.len() > 1000 || !ids.iter().all(|i| valid_job_id(i)) {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    "invalid_job_id",
                    "jobs= is `all` or up to 1000 comma-separated job ids".into(),
                ));
            }
            Filter::Jobs(ids)
        }
    };
    admit(&state, peer)?;
    Ok(tune(ws, &headers).on_upgrade(move |socket| events_connection(state, socket, filter, q.since, q.epoch)))
}

async fn events_connection(
    state: Arc<AppState>,
    mut socket: WebSocket,
    filter: Filter,
    since: Option<u64>,
    epoch: Option<String>,
) {
    let _guard = ConnGuard::new(state.clone(), ConnKind::Events);
    let sub = state.relay.subscribe(filter, since, epoch.as_deref());
    let mut hello = json!({
        "type": "subscribed",
        "epoch": sub.epoch,
        "offset": sub.offset,
        "recovered": sub.recovered,
        "since": since,
    });
    if let Some(snapshot) = &sub.snapshot {
        hello["snapshot"] = serde_json::to_value(snapshot).unwrap_or(Value::Null);
    }
    let mut ok = socket.feed(text(&hello)).await.is_ok();
    for f in &sub.replay {
        if !ok {
            break;
        }
        ok = socket.feed(Message::Text(Utf8Bytes::from(&*f.text))).await.is_ok();
    }
    ok = ok && socket.flush().await.is_ok();
    if ok {
        let end = pump(&state, &mut socket, &sub.outbox, false, |_| {}).await;
        finish(socket, end).await;
    }
    state.relay.unsubscribe(sub.id);
}
