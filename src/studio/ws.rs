//! The WebSocket endpoints: the brief's `/ws/{job_id}` and `/ws/monitor`, and our typed stream `/ws/events`.
//!
//! Each connection is one task: it sends what its outbox holds (in batches, one flush each), answers the
//! client, pings (WebSocket pings, plus the brief's application `ping` messages), and closes a peer that stayed
//! silent past the connection timeout or could not keep up (close code 4008; it resumes by offset).
use super::auth::{self, valid_job_id};
use super::clock;
use super::relay::{ConnKind, Filter, Frame, FrameClass, JobView, Next, Outbox, Subscription, Text};
use super::routes::{brief_connections, check_id, ApiError};
use super::server::AppState;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
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

/// Our own state per idle connection, by kind (job, monitor, events), as sized when the connection starts: its
/// task's future (the socket handle, timers and loop state — tungstenite's buffers are not in it), its outbox,
/// and its entry in the relay's tables. `/metrics` shows it (the benchmark's "own state" figure).
static STATE_BYTES: [AtomicUsize; 3] = [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)];

const KINDS: [(ConnKind, &str); 3] = [
    (ConnKind::Job, "job"),
    (ConnKind::Monitor, "monitor"),
    (ConnKind::Events, "events"),
];

fn note_state<F>(kind: ConnKind, socket_bytes: usize, fut: F) -> F {
    // An entry of the relay's subscriber tables: id + Arc, at a hash table's load factor (×2 to be safe); the
    // outbox with its Arc counts (its queue is empty while idle). No timer: the relay's one ping timer reaches
    // every connection through its outbox. The socket (axum's WebSocket, tungstenite's state) is counted apart,
    // as tungstenite's.
    let table = 2 * std::mem::size_of::<(u64, Arc<Outbox>)>();
    let outbox = std::mem::size_of::<Outbox>() + 2 * std::mem::size_of::<usize>();
    let ours = std::mem::size_of_val(&fut).saturating_sub(socket_bytes) + outbox + table;
    if let Some(i) = KINDS.iter().position(|(k, _)| *k == kind) {
        STATE_BYTES[i].store(ours, Ordering::Relaxed);
    }
    SOCKET_BYTES.store(socket_bytes, Ordering::Relaxed);
    fut
}

/// The size of one socket's own struct (axum's WebSocket around tungstenite's state; its buffers are apart).
static SOCKET_BYTES: AtomicUsize = AtomicUsize::new(0);

pub fn socket_bytes() -> usize {
    SOCKET_BYTES.load(Ordering::Relaxed)
}

/// (kind, bytes) of our own state per connection, for each kind that has had a connection.
pub fn connection_state_bytes() -> Vec<(&'static str, usize)> {
    KINDS
        .iter()
        .zip(STATE_BYTES.iter())
        .map(|((_, name), b)| (*name, b.load(Ordering::Relaxed)))
        .filter(|(_, b)| *b > 0)
        .collect()
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

/// Small per-connection buffers: tungstenite's defaults allocate ~128 KiB per connection. Clients send only
/// small control messages, so reads go in 1 KiB chunks (a larger message just takes more reads); the buffer is
/// allocated by the first read and stays, so it is most of what an idle connection costs.
fn tune(mut ws: WebSocketUpgrade, headers: &HeaderMap) -> WebSocketUpgrade {
    if let Some(p) = auth::selected_protocol(headers) {
        ws.set_selected_protocol(p);
    }
    ws.read_buffer_size(1024)
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

/// How `/ws/events` sends previews: by reference (the event's `url`, the default) or, opted into with
/// `?previews=binary`, as one binary frame each: a 4-byte big-endian header length, the event's JSON (the same
/// text the reference form sends) and the image bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Previews {
    Url,
    Binary,
}

/// The message for one frame; `None` for a binary preview that a newer one of its job has replaced (previews
/// are latest-wins: the newer one follows).
fn frame_message(state: &AppState, f: &Frame, previews: Previews) -> Option<Message> {
    if previews == Previews::Binary && f.class == FrameClass::Preview {
        let data = state.relay.preview_at(f.job.as_deref()?, f.offset)?;
        let header = f.text.as_bytes();
        let mut out = Vec::with_capacity(4 + header.len() + data.len());
        out.extend_from_slice(&u32::try_from(header.len()).ok()?.to_be_bytes());
        out.extend_from_slice(header);
        out.extend_from_slice(&data);
        return Some(Message::Binary(out.into()));
    }
    Some(Message::Text(f.text.clone()))
}

/// The loop `/ws/{job_id}` and `/ws/events` share: outbox → socket, client → answers, pings, timeout,
/// shutdown. A hand-written future rather than a `select!` over futures: an idle connection's state is these
/// few fields (the relay's one ping timer and shutdown reach it through its outbox), not the sum of every
/// branch's future. `app_ping` adds the brief's `{"type": "ping"}` messages.
struct Pump<'a> {
    state: &'a AppState,
    socket: &'a mut WebSocket,
    outbox: &'a Outbox,
    last_seen: Instant,
    /// A message taken from the outbox that the socket has not accepted yet.
    pending: Option<Message>,
    unflushed: bool,
    app_ping: bool,
    previews: Previews,
}

impl Pump<'_> {
    /// What the client sent: control messages answered (through the outbox, in order); `Some` ends the loop.
    fn answer(&mut self, msg: Message) -> Option<End> {
        self.last_seen = Instant::now();
        let reply = match msg {
            Message::Text(t) => match serde_json::from_str::<Value>(t.as_str()) {
                Ok(v) if v.get("type").and_then(Value::as_str) == Some("ping") => {
                    json!({"type": "pong", "timestamp": clock::rfc3339(clock::now())})
                }
                Ok(v) if v.get("type").and_then(Value::as_str) == Some("pong") => return None,
                Ok(_) => json!({"type": "error", "code": "unknown_message",
                                 "message": "this endpoint only understands {\"type\": \"ping\"}"}),
                Err(_) => json!({"type": "error", "code": "invalid_message", "message": "messages must be JSON"}),
            },
            Message::Close(_) => return Some(End::ClientGone),
            // tungstenite queued the pong; it goes out with the next flush.
            Message::Ping(_) => {
                self.unflushed = true;
                return None;
            }
            _ => return None,
        };
        self.outbox.push_own(Text::from(reply.to_string()));
        None
    }

    /// The next message to send, from the outbox; `Err` ends the loop.
    fn take(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, End>> {
        loop {
            return match self.outbox.poll_next(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Next::Frame(f)) => match frame_message(self.state, &f, self.previews) {
                    Some(m) => Poll::Ready(Ok(m)),
                    None => continue,
                },
                Poll::Ready(Next::Ping) => {
                    if self.last_seen.elapsed() > self.state.config.connection_timeout() {
                        return Poll::Ready(Err(End::Closed(
                            CLOSE_TIMEOUT,
                            "no answer within the connection timeout".into(),
                        )));
                    }
                    if self.app_ping {
                        let p = json!({"type": "ping", "timestamp": clock::rfc3339(clock::now())});
                        self.outbox.push_own(Text::from(p.to_string()));
                    }
                    Poll::Ready(Ok(Message::Ping(bytes::Bytes::from_static(b"dl"))))
                }
                Poll::Ready(Next::Closing) => Poll::Ready(Err(End::Closed(
                    CLOSE_GOING_AWAY,
                    "the studio server is shutting down".into(),
                ))),
                Poll::Ready(Next::Overflowed) => {
                    self.state
                        .relay
                        .counters
                        .overflow_closes
                        .fetch_add(1, Ordering::Relaxed);
                    Poll::Ready(Err(End::Closed(
                        CLOSE_SLOW_CONSUMER,
                        "slow consumer: reconnect with since=<your last offset>".into(),
                    )))
                }
            };
        }
    }
}

impl Future for Pump<'_> {
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let this = self.get_mut();
        loop {
            // Writes: as many as the outbox holds (up to a batch), then one flush.
            let mut sent = 0;
            while sent < BATCH {
                if this.pending.is_none() {
                    match this.take(cx) {
                        Poll::Ready(Ok(m)) => this.pending = Some(m),
                        Poll::Ready(Err(end)) => return Poll::Ready(end),
                        Poll::Pending => break,
                    }
                }
                match this.socket.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(End::ClientGone),
                    Poll::Pending => break,
                }
                if let Some(m) = this.pending.take() {
                    if this.socket.start_send_unpin(m).is_err() {
                        return Poll::Ready(End::ClientGone);
                    }
                    this.unflushed = true;
                    sent += 1;
                }
            }
            if this.unflushed {
                match this.socket.poll_flush_unpin(cx) {
                    Poll::Ready(Ok(())) => this.unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(End::ClientGone),
                    Poll::Pending => {}
                }
            }
            // Reads: whatever the client sent.
            match this.socket.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(msg))) => {
                    if let Some(end) = this.answer(msg) {
                        return Poll::Ready(end);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    let msg = e.to_string();
                    if msg.contains("too long") || msg.contains("size") {
                        return Poll::Ready(End::Closed(
                            1009,
                            format!("message too big (at most {MAX_CLIENT_MESSAGE} bytes)"),
                        ));
                    }
                    return Poll::Ready(End::ClientGone);
                }
                Poll::Ready(None) => return Poll::Ready(End::ClientGone),
                Poll::Pending if sent == BATCH => {
                    // A full batch went out and more may wait: yield, then go on.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn pump<'a>(
    state: &'a AppState,
    socket: &'a mut WebSocket,
    outbox: &'a Outbox,
    app_ping: bool,
    previews: Previews,
) -> Pump<'a> {
    Pump {
        state,
        socket,
        outbox,
        last_seen: Instant::now(),
        pending: None,
        unflushed: false,
        app_ping,
        previews,
    }
}

/// Resolves once the server is shutting down (the watch guard never lives across an await).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Sends the close frame (by reference: the socket is not moved into one more future of the connection's).
async fn finish(socket: &mut WebSocket, end: End) {
    if let End::Closed(code, reason) = end {
        let _ = socket.send(close(code, &reason)).await;
    }
    let _ = SinkExt::close(socket).await;
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
    Ok(tune(ws, &headers).on_upgrade(move |socket| {
        let n = std::mem::size_of_val(&socket);
        note_state(ConnKind::Job, n, job_connection(state, socket, job_id))
    }))
}

/// The setup runs before the connection's future is built, so that only what the whole connection needs is kept
/// in it (an async fn would keep its arguments and the greeting's state for as long as it lives).
fn job_connection(state: Arc<AppState>, socket: WebSocket, job_id: String) -> impl Future<Output = ()> {
    let guard = ConnGuard::new(state.clone(), ConnKind::Job);
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
    let mut greeting = vec![text(&hello)];
    // The current state at once (a finished job's final state).
    greeting.extend(view.map(|v| Message::Text(Utf8Bytes::from(v.brief_progress()))));
    async move {
        let _guard = guard;
        let mut socket = socket;
        // One-time steps run boxed: their futures are not part of every idle connection's state.
        if Box::pin(greet(&mut socket, greeting)).await {
            let end = pump(&state, &mut socket, &outbox, true, Previews::Url).await;
            Box::pin(finish(&mut socket, end)).await;
        }
        state.relay.unsubscribe_brief(&job_id, sub);
    }
}

async fn greet(socket: &mut WebSocket, greeting: Vec<Message>) -> bool {
    for m in greeting {
        if socket.feed(m).await.is_err() {
            return false;
        }
    }
    socket.flush().await.is_ok()
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
    Ok(tune(ws, &headers).on_upgrade(move |socket| {
        let n = std::mem::size_of_val(&socket);
        note_state(ConnKind::Monitor, n, monitor_connection(state, socket))
    }))
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
    finish(&mut socket, end).await;
}

// ---- /ws/events ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct EventsQuery {
    jobs: Option<String>,
    since: Option<u64>,
    epoch: Option<String>,
    previews: Option<String>,
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
    let previews = match q.previews.as_deref() {
        None | Some("") | Some("url") => Previews::Url,
        Some("binary") => Previews::Binary,
        Some(_) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "invalid_previews",
                "previews= is `url` (the default: by reference) or `binary` (binary frames)".into(),
            ))
        }
    };
    admit(&state, peer)?;
    Ok(tune(ws, &headers).on_upgrade(move |socket| {
        let n = std::mem::size_of_val(&socket);
        note_state(
            ConnKind::Events,
            n,
            events_connection(state, socket, filter, q.since, q.epoch, previews),
        )
    }))
}

fn events_connection(
    state: Arc<AppState>,
    socket: WebSocket,
    filter: Filter,
    since: Option<u64>,
    epoch: Option<String>,
    previews: Previews,
) -> impl Future<Output = ()> {
    let guard = ConnGuard::new(state.clone(), ConnKind::Events);
    let sub = Box::new(state.relay.subscribe(filter, since, epoch.as_deref()));
    let (id, outbox) = (sub.id, sub.outbox.clone());
    async move {
        let _guard = guard;
        let mut socket = socket;
        if Box::pin(greet_events(&state, &mut socket, sub, since, previews)).await {
            let end = pump(&state, &mut socket, &outbox, false, previews).await;
            Box::pin(finish(&mut socket, end)).await;
        }
        state.relay.unsubscribe(id);
    }
}

/// The `subscribed` message and the replay; the subscription (its snapshot and replay) is not kept afterwards.
async fn greet_events(
    state: &AppState,
    socket: &mut WebSocket,
    sub: Box<Subscription>,
    since: Option<u64>,
    previews: Previews,
) -> bool {
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
        if let Some(msg) = frame_message(state, f, previews) {
            ok = socket.feed(msg).await.is_ok();
        }
    }
    ok && socket.flush().await.is_ok()
}
