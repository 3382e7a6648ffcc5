//! Gradio 3.x's WebSocket queue (`/queue/join`): `send_hash` → `{fn_index, session_hash}`, `estimation`,
//! `send_data` → `{data, event_data, fn_index, session_hash}`, then `process_starts`, `progress`, `log`,
//! `process_generating` (full values) and `process_completed`, after which the server closes with 1000. There are
//! no heartbeats: the client pings every 15 s and counts the pongs as life. Closing the socket does **not** stop
//! the job in the app (`3.50.2/ws_disconnect_midrun.jsonl`); a cancel says so.
use super::job::{Control, JobCtx, Outcome};
use super::protocol::Message;
use crate::error::Error;
use crate::error::{root_cause, ErrorCode};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const PING_EVERY: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub async fn run(
    ctx: &mut JobCtx,
    control: &mut mpsc::UnboundedReceiver<Control>,
    data: Vec<Value>,
    idle: Duration,
) -> Outcome {
    let url = match ctx.http.ws_url() {
        Ok(u) => u,
        Err(e) => return Outcome::Failed(e),
    };
    let mut request = match url.as_str().into_client_request() {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(Error::new(ErrorCode::InvalidUrl, format!("WebSocket request: {e}"))),
    };
    if let Some(c) = ctx.http.cookie_header().and_then(|c| c.parse().ok()) {
        request.headers_mut().insert("Cookie", c);
    }
    if let Some(b) = ctx.http.bearer().and_then(|b| format!("Bearer {b}").parse().ok()) {
        request.headers_mut().insert("Authorization", b);
    }
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(crate::net::ws::config()), true);
    let mut ws = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Err(_) => {
            return Outcome::Failed(Error::new(
                ErrorCode::Timeout,
                "the 3.x queue WebSocket did not open in time",
            ))
        }
        Ok(Err(e)) => {
            return Outcome::Failed(
                Error::new(
                    ErrorCode::ConnectionFailed,
                    format!("cannot open the app's queue WebSocket: {}", root_cause(&e)),
                )
                .with_source(e),
            )
        }
        Ok(Ok((ws, _))) => ws,
    };
    let fn_index = ctx.endpoint.fn_index;
    let session = ctx.session_hash.clone();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut data = Some(data);
    loop {
        tokio::select! {
            frame = tokio::time::timeout(idle, ws.next()) => {
                let frame = match frame {
                    Err(_) => return Outcome::Failed(Error::new(
                        ErrorCode::Timeout,
                        format!("the app's queue WebSocket was silent for {:.0} s (no pongs); the app seems gone", idle.as_secs_f64()),
                    )),
                    Ok(None) | Ok(Some(Ok(WsMessage::Close(_)))) => return Outcome::Failed(Error::new(
                        ErrorCode::ConnectionFailed,
                        "the app closed the queue connection before the job finished (did it stop?)",
                    )),
                    Ok(Some(Err(e))) if crate::net::ws::is_too_large(&e) => return Outcome::Failed(Error::new(
                        ErrorCode::Protocol,
                        crate::net::ws::describe_read_error(&e),
                    )),
                    Ok(Some(Err(e))) => return Outcome::Failed(Error::new(
                        ErrorCode::ConnectionFailed,
                        format!("the queue connection broke off mid-job (the app stopped?): {}", root_cause(&e)),
                    ).with_source(e)),
                    Ok(Some(Ok(f))) => f,
                };
                let text = match frame {
                    WsMessage::Text(t) => t.to_string(),
                    WsMessage::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                    _ => continue,
                };
                let msg = match Message::parse(&text) {
                    Ok(m) => m,
                    Err(why) => {
                        log::debug!("job {}: skipped {why}", ctx.job_id);
                        continue;
                    }
                };
                let reply = match &msg {
                    Message::SendHash => Some(json!({"fn_index": fn_index, "session_hash": session})),
                    Message::SendData => Some(json!({
                        "data": data.take().unwrap_or_default(),
                        "event_data": null,
                        "fn_index": fn_index,
                        "session_hash": session,
                    })),
                    _ => None,
                };
                if let Some(r) = reply {
                    if let Err(e) = ws.send(WsMessage::text(r.to_string())).await {
                        return Outcome::Failed(Error::new(
                            ErrorCode::ConnectionFailed,
                            format!("sending to the app's queue failed: {}", root_cause(&e)),
                        ).with_source(e));
                    }
                    continue;
                }
                if let Some(outcome) = ctx.on_message(msg) {
                    let _ = ws.close(None).await;
                    return outcome;
                }
            }
            _ = ping.tick() => {
                let _ = ws.send(WsMessage::Ping(Vec::new().into())).await;
            }
            c = control.recv() => match c {
                Some(Control::Cancel) | None => {
                    let _ = ws.close(None).await;
                    ctx.note("cancel", "Gradio 3.x has no cancel: the connection was closed, but the app keeps \
                        running this job until it finishes (the next job waits for it)".into());
                    return Outcome::Cancelled;
                }
                Some(Control::Restarted(why)) => {
                    return Outcome::Failed(Error::new(ErrorCode::ServerRestarted, why));
                }
            },
        }
    }
}
