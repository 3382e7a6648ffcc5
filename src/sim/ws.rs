//! `/ws`: the upgrade handshake (no extensions), then ComfyUI's `websocket_handler`: registration by
//! clientId (a new socket replaces the entry; any close pops it by id), the first `status`, the reconnect
//! `executing`, feature-flag negotiation, the 4 MiB client message limit (close 1009), and fault hooks
//! (cut without close frame, message budgets, stalls).
use super::http::{Request, Response, SERVER_HEADER};
use super::state::{json_message, ConnInfo, Shared, SocketReg};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// aiohttp's `max_msg_size` for client → server messages.
const MAX_CLIENT_MESSAGE: usize = 4 * 1024 * 1024;
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The server's feature flags (`comfy_api/feature_flags.py`).
pub(crate) fn server_features(shared: &Shared) -> Value {
    json!({"supports_preview_metadata": true, "max_upload_size": shared.cfg.max_upload_size})
}

pub(crate) fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Whether this is a usable upgrade request (the caller answers 400 otherwise).
pub(crate) fn is_upgrade(req: &Request) -> bool {
    let has = |name: &str, token: &str| {
        req.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    req.method == "GET"
        && has("upgrade", "websocket")
        && has("connection", "upgrade")
        && req.header("sec-websocket-key").is_some_and(|k| !k.is_empty())
        && req.header("sec-websocket-version") == Some("13")
}

pub(crate) async fn serve(shared: Arc<Shared>, mut stream: TcpStream, leftover: Vec<u8>, req: Request, epoch: u64) {
    let key = req.header("sec-websocket-key").unwrap_or_default();
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: {}\r\nDate: {}\r\nServer: {SERVER_HEADER}\r\n\r\n",
        accept_key(key),
        super::http::http_date(SystemTime::now())
    );
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
    // Bytes the client sent right after its headers belong to the WebSocket stream.
    let ws = WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(config)).await;
    let client_id = req.query("clientId").map(str::to_string).unwrap_or_default();
    run_socket(shared, ws, client_id, epoch).await;
}

/// A 400 for `/ws` requests that are not upgrades (aiohttp's `WebSocketResponse.prepare` refuses them).
pub(crate) fn not_an_upgrade() -> Response {
    Response::text(400, "Can \"Upgrade\" only to \"WebSocket\".")
}

async fn run_socket(shared: Arc<Shared>, mut ws: WebSocketStream<TcpStream>, client_id: String, epoch: u64) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let kill = Arc::new(Notify::new());
    let budget = Arc::new(AtomicI64::new(-1));
    let conn_id = shared.next_conn_id.fetch_add(1, Ordering::SeqCst);
    shared.counters.ws_total.fetch_add(1, Ordering::SeqCst);
    let sid = {
        let mut inner = shared.inner.lock();
        if inner.epoch != epoch {
            return;
        }
        let sid = if client_id.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            client_id
        };
        // `self.sockets.pop(sid)` then `self.sockets[sid] = ws`: the newest socket owns the id.
        inner.sockets.insert(sid.clone(), SocketReg { tx: tx.clone() });
        inner.sockets_meta.insert(sid.clone(), json!({"feature_flags": {}}));
        inner.conns.insert(
            conn_id,
            ConnInfo {
                tx: tx.clone(),
                kill: kill.clone(),
                budget: budget.clone(),
            },
        );
        let _ = tx.send(json_message(
            "status",
            json!({"status": inner.queue_info(), "sid": sid}),
        ));
        if inner.client_id == super::state::ClientId::Sid(sid.clone()) {
            if let Some(node) = &inner.last_node_id {
                let _ = tx.send(json_message("executing", json!({"node": node})));
            }
        }
        sid
    };

    let mut first_message = true;
    let mut stall_rx = shared.stall_tx.subscribe();
    let mut close_code: Option<CloseCode> = None;
    let cut = loop {
        // While stalled nothing is read or written (so pings go unanswered too).
        if shared.stalled_until().is_some() {
            tokio::select! {
                _ = shared.wait_not_stalled() => {}
                _ = kill.notified() => break true,
                _ = shared.epoch_changed(epoch) => break true,
            }
            continue;
        }
        tokio::select! {
            biased;
            _ = kill.notified() => break true,
            _ = shared.epoch_changed(epoch) => break true,
            _ = stall_rx.changed() => continue,
            out = rx.recv() => {
                let Some(msg) = out else { break false };
                // A budget set while this frame was on its way (its reader may act on it at once) does not count it.
                let armed = budget.load(Ordering::SeqCst) > 0;
                if ws.send(msg).await.is_err() {
                    break false;
                }
                if armed && budget.fetch_sub(1, Ordering::SeqCst) == 1 {
                    break true;
                }
            }
            incoming = ws.next() => match incoming {
                None => break false,
                Some(Ok(Message::Text(text))) => {
                    handle_text(&shared, &sid, text.as_str(), &mut first_message);
                }
                Some(Ok(Message::Ping(_))) => {
                    // tungstenite queued the pong; push it out now.
                    if ws.flush().await.is_err() {
                        break false;
                    }
                }
                Some(Ok(Message::Close(_))) => {
                    let _ = ws.flush().await;
                    break false;
                }
                Some(Ok(_)) => {}
                Some(Err(WsError::Capacity(_))) => {
                    close_code = Some(CloseCode::Size);
                    break false;
                }
                Some(Err(_)) => break false,
            },
        }
    };
    if let Some(code) = close_code {
        let frame = CloseFrame {
            code,
            reason: "".into(),
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), ws.close(Some(frame))).await;
    }
    {
        let mut inner = shared.inner.lock();
        if inner.epoch == epoch {
            // By id, not by socket: an older socket closing unregisters a newer one (ComfyUI's race).
            inner.sockets.remove(&sid);
            inner.sockets_meta.remove(&sid);
        }
        inner.conns.remove(&conn_id);
    }
    if cut || close_code.is_some() {
        // End the TCP connection without (more) frames: FIN first, then drain what the peer still sends, so a
        // reset does not destroy frames it has not read yet (a cut looks like a dying process: 1006).
        let tcp = ws.get_mut();
        let _ = tcp.shutdown().await;
        let mut sink = [0u8; 16 * 1024];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
        for _ in 0..10_000 {
            match tokio::time::timeout_at(deadline, tcp.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => break,
            }
        }
    } else {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), ws.close(None)).await;
    }
}

/// The handler's text-message branch: only a first, parseable `feature_flags` message counts.
fn handle_text(shared: &Shared, sid: &str, text: &str, first_message: &mut bool) {
    let Ok(data) = serde_json::from_str::<Value>(text) else {
        log::debug!("simulator: invalid JSON from client {sid}");
        return;
    };
    let Some(obj) = data.as_object() else { return };
    if *first_message && obj.get("type").and_then(Value::as_str) == Some("feature_flags") {
        let mut inner = shared.inner.lock();
        // If the id was popped meanwhile, Python's KeyError skips the reply.
        let Some(meta) = inner.sockets_meta.get_mut(sid) else {
            return;
        };
        let flags = obj.get("data").cloned().unwrap_or_else(|| json!({}));
        if let Value::Object(m) = meta {
            m.insert("feature_flags".into(), flags);
        }
        let features = server_features(shared);
        if let Some(reg) = inner.sockets.get(sid) {
            let _ = reg.tx.send(json_message("feature_flags", features));
        }
    }
    *first_message = false;
}
