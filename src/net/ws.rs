//! WebSocket limits shared by every backend that uses one (ComfyUI's `/ws`, Gradio 3.x's queue): one message may
//! hold at most `MAX_MESSAGE` bytes, and a message over it is reported with the limit, not as a bare I/O error.
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;

/// The most one WebSocket message (and frame) may hold. Previews are a few hundred KB; ComfyUI's
/// `SaveImageWebsocket` sends a whole PNG in one message, and 64 MiB holds a 4K RGBA PNG with room to spare
/// (tungstenite's own default, 16 MiB, does not).
pub const MAX_MESSAGE: usize = 64 << 20;

/// The configuration every client socket is opened with.
pub fn config() -> WebSocketConfig {
    config_with_limit(MAX_MESSAGE)
}

/// Same, with another limit (tests use a small one).
pub fn config_with_limit(limit: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_frame_size(Some(limit))
        .max_message_size(Some(limit))
}

/// Why reading the socket failed, in words; a message over the limit says its size and the limit in bytes.
pub fn describe_read_error(e: &WsError) -> String {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => format!(
            "the server sent a WebSocket message of {size} bytes, larger than the limit of {max_size} bytes; \
             the connection was dropped"
        ),
        other => format!("connection error: {}", crate::error::root_cause(other)),
    }
}

/// True when the failure is a message over the limit (a protocol problem, not a network one).
pub fn is_too_large(e: &WsError) -> bool {
    matches!(e, WsError::Capacity(_))
}
