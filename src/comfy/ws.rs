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
        Ok(Err(e)) => return Err(describe_ws_error(e)),
        Ok(Ok(pair)) => pair,
    };
    ws.send(Message::text(FEATURE_FLAGS)).await.map_err(|e| {
        Error::new(
            ErrorCode::ConnectionFailed,
            format!("the WebSocket closed at once: {}", root_cause(&e)),
        )
        .with_source(e)
    })?;
    // The first frame is `status` with our sid; a socket that says nothing was hit by the duplicate-clientId race.
    let first = tokio::time::timeout(timeout, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(t)) if t.as_str().contains("\"status\"") => return Ok(()),
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => return Err(describe_ws_error(e)),
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

/// The WebSocket error is kept as the cause.
fn describe_ws_error(e: tokio_tungstenite::tungstenite::Error) -> Error {
    use tokio_tungstenite::tungstenite::Error as E;
    let described = match &e {
        E::Http(resp) => Error::new(
            ErrorCode::WrongService,
            format!(
                "the server refused the WebSocket upgrade with HTTP {} (a proxy without WebSocket support, or not ComfyUI)",
                resp.status()
            ),
        )
        .with_status(resp.status().as_u16()),
        E::Capacity(_) => Error::new(ErrorCode::Protocol, crate::net::ws::describe_read_error(&e)),
        other => Error::new(ErrorCode::ConnectionFailed, format!("WebSocket connection failed: {}", root_cause(other))),
    };
    described.with_source(e)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_websocket_keeps_the_websocket_error_and_not_the_token() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a loopback port")
            .port();
        let endpoint = Endpoint::parse(&format!("127.0.0.1:{port}"), 8188).expect("an address");
        let Err(e) = open(&endpoint, "cid", Some("tok-ws-secret"), Duration::from_secs(5)).await else {
            panic!("nothing listens on {port}");
        };
        assert_eq!(e.code, ErrorCode::ConnectionFailed);
        assert!(e.is_connect(), "{e:?}");
        let ws = e.find_source::<tokio_tungstenite::tungstenite::Error>();
        assert!(
            matches!(ws, Some(tokio_tungstenite::tungstenite::Error::Io(_))),
            "{e:?}"
        );
        assert_eq!(
            e.find_source::<std::io::Error>().map(std::io::Error::kind),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
        let everything = format!("{e} {:?} {e:?}", e.causes());
        assert!(!everything.contains("tok-ws-secret"), "{everything}");
    }
}
