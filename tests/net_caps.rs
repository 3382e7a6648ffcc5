//! The memory limits of the network layer, each met by a real server on 127.0.0.1 that sends too much: an endless
//! JSON answer (ComfyUI's REST calls, MCP), an event stream whose line or event never ends (OpenAI-compatible
//! chat), and a WebSocket message over the limit (ComfyUI's `/ws`). Each must fail with a clear error that names
//! the limit in bytes, never buffer without bound.
#![allow(clippy::unwrap_used)]
use director_link::comfy::http::ComfyHttp;
use director_link::endpoint::Endpoint;
use director_link::event::EventKind;
use director_link::mcp::client::McpClient;
use director_link::net::{body::JSON_CAP, sse::MAX_EVENT, ws::MAX_MESSAGE};
use director_link::openai::service::ChatRequest;
use director_link::{ErrorCode, Hub, HubConfig};
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod scripted;
use scripted::{answer, runtime, Request, Server};

const MIB: usize = 1 << 20;

/// Sends `total` bytes of `fill` as a chunked body after `prefix` (stops early when the client hangs up).
fn chunked(mut stream: TcpStream, content_type: &str, prefix: &[u8], fill: &[u8], total: usize) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let mut send = |data: &[u8]| -> std::io::Result<()> {
        write!(stream, "{:x}\r\n", data.len())?;
        stream.write_all(data)?;
        stream.write_all(b"\r\n")
    };
    if send(prefix).is_err() {
        return;
    }
    let block: Vec<u8> = fill.iter().copied().cycle().take(MIB).collect();
    let mut sent = prefix.len();
    while sent < total {
        if send(&block).is_err() {
            return;
        }
        sent += block.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n");
}

#[test]
fn comfyui_json_answers_are_read_within_the_limit() {
    let server = Server::start(Arc::new(|req: &Request, stream: TcpStream| match req.path.as_str() {
        // Endless JSON whitespace, chunked: only the bytes read can tell it is too large.
        "/object_info" => chunked(stream, "application/json", b"[", b" ", JSON_CAP + 8 * MIB),
        // A declared length over the limit is refused before reading.
        "/queue" => {
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n[",
                1u64 << 40
            );
        }
        _ => answer(stream, "404 Not Found", "text/plain", &[], b"no"),
    }));
    let rt = runtime();
    let http = ComfyHttp::new(
        reqwest::Client::new(),
        Endpoint::parse(&server.url, 8188).unwrap(),
        None,
    );
    let limit = format!("limit of {JSON_CAP} bytes");
    let err = rt.block_on(http.object_info()).unwrap_err();
    assert_eq!(err.code, ErrorCode::Protocol, "{}", err.message);
    assert!(err.message.contains(&limit), "{}", err.message);
    let err = rt.block_on(http.queue()).unwrap_err();
    assert_eq!(err.code, ErrorCode::Protocol, "{}", err.message);
    assert!(err.message.contains(&limit), "{}", err.message);
}

#[test]
fn mcp_answers_are_read_within_the_limit() {
    let server = Server::start(Arc::new(|_req: &Request, stream: TcpStream| {
        chunked(
            stream,
            "application/json",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"",
            b"x",
            40 * MIB,
        )
    }));
    let rt = runtime();
    let url = url::Url::parse(&format!("{}mcp/", server.url)).unwrap();
    let client = McpClient::new(reqwest::Client::new(), url);
    let err = rt.block_on(client.ping(Duration::from_secs(60))).unwrap_err();
    assert_eq!(err.code, ErrorCode::Protocol, "{}", err.message);
    assert!(err.message.contains("limit of 33554432 bytes"), "{}", err.message);
}

/// An OpenAI-compatible server whose chat stream never ends an event.
fn endless_stream_server(fill: Vec<u8>) -> Server {
    Server::start(Arc::new(move |req: &Request, stream: TcpStream| {
        if req.method == "POST" && req.path.ends_with("/chat/completions") {
            chunked(stream, "text/event-stream", b"data: ", &fill, MAX_EVENT + 4 * MIB);
        } else if req.path == "/health/liveliness" {
            answer(stream, "200 OK", "application/json", &[], b"\"I'm alive!\"");
        } else {
            answer(stream, "200 OK", "application/json", &[], br#"{"data": [{"id": "m"}]}"#);
        }
    }))
}

fn chat_fails_with_the_limit(server: &Server) {
    let out = tempfile::tempdir().unwrap();
    let hub = Hub::new(HubConfig {
        output_dir: out.path().to_path_buf(),
        ..HubConfig::default()
    })
    .unwrap();
    let added = hub.add_service("openai", &server.url, None, None).unwrap();
    let request = ChatRequest {
        messages: serde_json::json!([{"role": "user", "content": "hi"}]),
        model: Some("m".into()),
        stream: true,
        options: serde_json::Map::new(),
        max_retries: 0,
    };
    let job = hub.chat(&added.name, request, None).unwrap();
    let snap = hub.wait(&job, Some(Duration::from_secs(120))).unwrap();
    hub.close();
    let error = snap
        .error
        .unwrap_or_else(|| panic!("the job did not fail: {:?}", snap.state));
    assert_eq!(error.code, "protocol_error", "{}", error.message);
    assert!(
        error.message.contains(&format!("limit of {MAX_EVENT} bytes")),
        "{}",
        error.message
    );
}

#[test]
fn an_endless_event_stream_line_fails_the_chat_with_the_limit() {
    let server = endless_stream_server(b"x".to_vec());
    chat_fails_with_the_limit(&server);
}

#[test]
fn endless_multi_line_event_data_fails_the_chat_with_the_limit() {
    // Each line ends, the event never does (no blank line): the data lines add up.
    let mut fill = vec![b'x'; 4096];
    fill.extend_from_slice(b"\ndata: ");
    let server = endless_stream_server(fill);
    chat_fails_with_the_limit(&server);
}

/// Completes a WebSocket handshake by hand (the request was already read) and returns the server side.
fn accept_ws(req: &Request, mut stream: TcpStream) -> Option<tokio_tungstenite::tungstenite::WebSocket<TcpStream>> {
    use base64::Engine;
    use sha1::Digest;
    let key = req.header("sec-websocket-key")?;
    let mut sha = sha1::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    write!(
        stream,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .ok()?;
    Some(tokio_tungstenite::tungstenite::WebSocket::from_raw_socket(
        stream,
        tokio_tungstenite::tungstenite::protocol::Role::Server,
        None,
    ))
}

#[test]
fn a_websocket_message_over_the_limit_drops_the_link_with_the_limit_named() {
    use tokio_tungstenite::tungstenite::Message;
    let sockets = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, stopping) = (sockets.clone(), stop.clone());
    let server = Server::start(Arc::new(move |req: &Request, stream: TcpStream| {
        match req.path.split('?').next().unwrap_or("") {
            "/ws" => {
                let Some(mut ws) = accept_ws(req, stream) else { return };
                let status = r#"{"type":"status","data":{"status":{"exec_info":{"queue_remaining":0}},"sid":"s"}}"#;
                if ws.send(Message::text(status)).is_err() {
                    return;
                }
                if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    // A preview frame (type 1, JPEG) one byte over the limit, on the first socket only.
                    let mut frame = vec![0u8; MAX_MESSAGE + 1];
                    frame[..8].copy_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
                    let _ = ws.send(Message::binary(frame));
                    return;
                }
                // Later sockets stay quiet until the test ends (bounded by the stop flag).
                let _ = ws.get_mut().set_read_timeout(Some(Duration::from_millis(100)));
                while !stopping.load(Ordering::SeqCst) {
                    match ws.read() {
                        Ok(_) => {}
                        Err(tokio_tungstenite::tungstenite::Error::Io(e))
                            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                        Err(_) => return,
                    }
                }
            }
            "/system_stats" => answer(
                stream,
                "200 OK",
                "application/json",
                &[],
                br#"{"system": {"comfyui_version": "0.3.64", "argv": []}, "devices": [{"name": "cpu"}]}"#,
            ),
            "/queue" => answer(
                stream,
                "200 OK",
                "application/json",
                &[],
                br#"{"queue_running": [], "queue_pending": []}"#,
            ),
            _ => answer(stream, "200 OK", "application/json", &[], b"{}"),
        }
    }));
    let out = tempfile::tempdir().unwrap();
    let hub = Hub::new(HubConfig {
        output_dir: out.path().to_path_buf(),
        ..HubConfig::default()
    })
    .unwrap();
    let added = hub.add_service("comfyui", &server.url, None, None).unwrap();
    let limit = format!("limit of {MAX_MESSAGE} bytes");
    let mut reason = None;
    // Bounded: gives up (and fails) after 1 200 waits of at most 100 ms.
    for _ in 0..1200 {
        hub.wait_for_events(Duration::from_millis(100));
        for ev in hub.poll(1000) {
            if let EventKind::ServiceStateChanged {
                service,
                reason: Some(r),
                ..
            } = ev.kind
            {
                if service == added.name && r.contains(&limit) {
                    reason = Some(r);
                }
            }
        }
        if reason.is_some() {
            break;
        }
    }
    hub.close();
    stop.store(true, Ordering::SeqCst);
    let reason = reason.unwrap_or_else(|| panic!("no state change named the limit ({limit})"));
    assert!(reason.contains(&format!("{} bytes", MAX_MESSAGE + 1)), "{reason}");
    assert!(sockets.load(Ordering::SeqCst) >= 1);
}
