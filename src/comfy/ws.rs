//! Opening ComfyUI's WebSocket: large frame limits, feature flags, and the first `status` as proof of life.
use crate::endpoint::Endpoint;
use crate::error::{root_cause, Error, ErrorCode, Result};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const FEATURE_FLAGS: &str = r#"{"type":"feature_flags","data":{"supports_preview_metadata":true}}"#;

/// Connects, sends our feature flags and waits for the server's first `status` message, which it always sends.
pub async fn open(endpoint: &Endpoint, client_id: &str, token: Option<&str>, timeout: Duration) -> Result<Socket> {
    let url = endpoint.websocket(client_id);
    let mut request = url.as_str().into_client_request().map_err(|e| {
        Error::new(
            ErrorCode::InvalidUrl,
            format!("cannot build the WebSocket request: {e}"),
        )
    })?;
    if let Some(t) = token {
        let value = format!("Bearer {t}").parse().map_err(|_| {
            Error::new(
                ErrorCode::InvalidUrl,
                "the token contains characters not allowed in a header",
            )
        })?;
        request.headers_mut().insert("Authorization", value);
    }
    let connect = tokio_tungstenite::connect_async_with_config(request, Some(crate::net::ws::config()), true);
    let (mut ws, _resp) = match tokio::time::timeout(timeout, connect).await {
        Err(_) => {
            return Err(Error::new(
                ErrorCode::Timeout,
                "the WebSocket handshake did not finish in time",
            ))
        }
        Ok(Err(e)) => return Err(describe_ws_error(&e)),
        Ok(Ok(pair)) => pair,
    };
    ws.send(Message::text(FEATURE_FLAGS)).await.map_err(|e| {
        Error::new(
            ErrorCode::ConnectionFailed,
            format!("the WebSocket closed at once: {}", root_cause(&e)),
        )
    })?;
    // The first frame is `status` with our sid; a socket that says nothing was hit by the duplicate-clientId race.
    let first = tokio::time::timeout(timeout, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(t)) if t.as_str().contains("\"status\"") => return Ok(()),
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => return Err(describe_ws_error(&e)),
            }
        }
        Err(Error::new(
            ErrorCode::ConnectionFailed,
            "the WebSocket closed before the server said hello",
        ))
    })
    .await;
    match first {
        Ok(Ok(())) => Ok(ws),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::new(
            ErrorCode::Protocol,
            "the WebSocket opened but the server sent no status message; reconnecting",
        )),
    }
}

fn describe_ws_error(e: &tokio_tungstenite::tungstenite::Error) -> Error {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Http(resp) => Error::new(
            ErrorCode::WrongService,
            format!(
                "the server refused the WebSocket upgrade with HTTP {} (a proxy without WebSocket support, or not ComfyUI)",
                resp.status()
            ),
        ),
        E::Io(io) => Error::new(ErrorCode::ConnectionFailed, format!("WebSocket connection failed: {}", root_cause(io))),
        E::Capacity(_) => Error::new(ErrorCode::Protocol, crate::net::ws::describe_read_error(e)),
        other => Error::new(ErrorCode::ConnectionFailed, format!("WebSocket connection failed: {}", root_cause(other))),
    }
}

/// Closes the socket and waits (briefly) until the server has seen the close: a new socket with the same
/// clientId opened before that would be unregistered by the old one's close and receive nothing.
pub async fn close_and_wait(mut ws: Socket) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
