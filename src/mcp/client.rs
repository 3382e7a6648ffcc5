//! A small MCP client over streamable HTTP: JSON-RPC 2.0 requests POSTed to the server's endpoint, answered as
//! JSON (`json_response`, what WanGP runs) or as an SSE stream carrying the answer. Only what a tool caller
//! needs: `initialize`, `ping`, `tools/call`.
use crate::error::{Error, ErrorCode, Result};
use crate::net::body::read_capped;
use crate::net::sse::SseDecoder;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The protocol revision we speak; servers answer with the one they chose.
pub const PROTOCOL_VERSION: &str = "2025-03-26";
/// Tool calls are short (WanGP's generate returns at once); a longer wait means the server is stuck.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const ANSWER_CAP: usize = 32 * 1024 * 1024;

#[derive(Debug, Deserialize)]
struct RpcResponse {
    #[serde(default)]
    jsonrpc: Option<String>,
    #[serde(default)]
    id: Value,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<RpcError>,
}

#[derive(Debug, Deserialize)]
struct RpcError {
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct ServerInfo {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
}

#[derive(Debug, Deserialize)]
struct InitializeResult {
    #[serde(default, rename = "protocolVersion")]
    protocol_version: String,
    #[serde(default, rename = "serverInfo")]
    server_info: ServerInfo,
}

/// One piece of a tool result's `content`.
#[derive(Debug, Deserialize)]
struct Content {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

#[derive(Debug, Deserialize)]
struct ToolResult {
    #[serde(default)]
    content: Vec<Content>,
    #[serde(default, rename = "structuredContent")]
    structured: Option<Value>,
    #[serde(default, rename = "isError")]
    is_error: bool,
}

impl ToolResult {
    fn text(&self) -> String {
        let texts: Vec<&str> = self
            .content
            .iter()
            .filter(|c| c.kind == "text")
            .map(|c| c.text.as_str())
            .collect();
        texts.join("\n")
    }

    /// The tool's return value: `structuredContent` (lists come wrapped as `{"result": [...]}`), else the JSON
    /// in its text content (one piece per list item from older servers), else the text itself.
    fn value(self) -> Value {
        if let Some(v) = self.structured {
            return match v {
                Value::Object(mut m) if m.len() == 1 && m.contains_key("result") => {
                    m.remove("result").unwrap_or(Value::Null)
                }
                other => other,
            };
        }
        let parsed: Vec<Value> = self
            .content
            .iter()
            .filter(|c| c.kind == "text")
            .filter_map(|c| serde_json::from_str(&c.text).ok())
            .collect();
        match parsed.len() {
            0 => Value::String(self.text()),
            1 => parsed.into_iter().next().unwrap_or(Value::Null),
            _ => Value::Array(parsed),
        }
    }
}

#[derive(Clone)]
pub struct McpClient {
    client: reqwest::Client,
    url: url::Url,
    next_id: Arc<AtomicU64>,
}

impl McpClient {
    pub fn new(client: reqwest::Client, url: url::Url) -> McpClient {
        McpClient {
            client,
            url,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The endpoint, e.g. `http://127.0.0.1:8000/mcp/`.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// A URL the server gave relative to its root (`/wangp_api/gallery/download/…`), on the same host only.
    pub fn resolve(&self, path: &str) -> Result<url::Url> {
        let joined = self
            .url
            .join(path)
            .map_err(|e| Error::new(ErrorCode::Protocol, format!("the server gave a bad URL {path:?}: {e}")))?;
        if joined.origin() != self.url.origin() {
            return Err(Error::new(
                ErrorCode::Protocol,
                format!(
                    "the server pointed a download at another host ({}); refused",
                    joined.origin().ascii_serialization()
                ),
            ));
        }
        Ok(joined)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.client
    }

    async fn request(&self, method: &str, params: Value, timeout: Duration) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let what = format!("MCP {method}");
        let resp = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json, text/event-stream")
            .header("MCP-Protocol-Version", PROTOCOL_VERSION)
            .json(&body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| Error::http(&what, e))?;
        let status = resp.status();
        let sse = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        let bytes = read_capped(resp, ANSWER_CAP, &what).await?;
        let answer = if sse {
            sse_answer(&bytes, id)?
        } else {
            // Any JSON object parses (every field has a default): `{"detail": "..."}` of a 401 is no answer.
            serde_json::from_slice::<RpcResponse>(&bytes)
                .ok()
                .filter(|a| a.jsonrpc.is_some() || a.result.is_some() || a.error.is_some())
        };
        let Some(answer) = answer else {
            if !status.is_success() {
                let e = Error::from_status(&what, status.as_u16(), &bytes);
                // A key, a rate limit or a failing server say so; any other refusal means the path is wrong, and
                // so does 501 (a plain web server that does not take POST at all).
                let not_mcp = status == reqwest::StatusCode::NOT_IMPLEMENTED;
                if !not_mcp && !matches!(e.code, ErrorCode::BadRequest | ErrorCode::HttpStatus) {
                    return Err(e);
                }
            }
            let start: String = String::from_utf8_lossy(&bytes)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(80)
                .collect();
            return Err(Error::new(
                ErrorCode::WrongService,
                format!(
                    "{what}: HTTP {status}, not a JSON-RPC answer ({start:?}); something other than an MCP server \
                     answers here (WanGP's MCP mode: wgp.py --mcp --mcp-transport streamable-http, path /mcp)"
                ),
            ));
        };
        if answer.id != json!(id) && !answer.id.is_null() {
            return Err(Error::new(
                ErrorCode::Protocol,
                format!("{what}: the answer is for another request"),
            ));
        }
        if let Some(e) = answer.error {
            return Err(Error::new(
                ErrorCode::Protocol,
                format!("{what}: the server refused it ({}: {})", e.code, e.message),
            ));
        }
        answer
            .result
            .ok_or_else(|| Error::new(ErrorCode::Protocol, format!("{what}: the answer has no result")))
    }

    /// `initialize`, then the `initialized` notification. Stateless servers (WanGP) need nothing more.
    pub async fn initialize(&self, timeout: Duration) -> Result<ServerInfo> {
        let params = json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "director-link", "version": env!("CARGO_PKG_VERSION")},
        });
        let result = self.request("initialize", params, timeout).await?;
        let init: InitializeResult = serde_json::from_value(result)
            .map_err(|e| Error::protocol(format!("MCP initialize: unexpected answer ({e})")).with_source(e))?;
        if init.protocol_version.is_empty() {
            return Err(Error::new(
                ErrorCode::WrongService,
                "MCP initialize: no protocolVersion in the answer",
            ));
        }
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        // A notification's answer (202) carries nothing; a failure here shows up on the next call.
        let _ = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json, text/event-stream")
            .json(&note)
            .timeout(timeout)
            .send()
            .await;
        Ok(init.server_info)
    }

    pub async fn ping(&self, timeout: Duration) -> Result<()> {
        self.request("ping", json!({}), timeout).await.map(|_| ())
    }

    /// Calls a tool and returns what it returned. A tool that raised gives `ExecutionFailed` with its message.
    pub async fn call_tool(&self, name: &str, arguments: Value) -> Result<Value> {
        let result = self
            .request(
                "tools/call",
                json!({"name": name, "arguments": arguments}),
                CALL_TIMEOUT,
            )
            .await?;
        let result: ToolResult = serde_json::from_value(result)
            .map_err(|e| Error::protocol(format!("{name}: unexpected tool result ({e})")).with_source(e))?;
        if result.is_error {
            let text = result.text();
            let text = text
                .strip_prefix(&format!("Error executing tool {name}: "))
                .unwrap_or(&text)
                .to_string();
            return Err(Error::new(ErrorCode::ExecutionFailed, format!("{name}: {text}")));
        }
        Ok(result.value())
    }
}

/// The JSON-RPC answer with our id among an SSE stream's `data:` events (the shared decoder, so the same limits
/// hold as for every other event stream).
fn sse_answer(bytes: &[u8], id: u64) -> Result<Option<RpcResponse>> {
    let mut decoder = SseDecoder::new();
    let mut datas = decoder.push(bytes)?;
    datas.extend(decoder.finish());
    Ok(datas
        .iter()
        .filter_map(|d| serde_json::from_str::<RpcResponse>(d).ok())
        .find(|r| r.id == json!(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_content_wins_and_lists_are_unwrapped() {
        let r: ToolResult = serde_json::from_value(json!({
            "content": [{"type": "text", "text": "{}"}],
            "structuredContent": {"result": [1, 2]}, "isError": false
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.value(), json!([1, 2]));
        let r: ToolResult = serde_json::from_value(json!({
            "content": [{"type": "text", "text": "{\"a\": 1}"}, {"type": "text", "text": "{\"b\": 2}"}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.value(), json!([{"a": 1}, {"b": 2}]));
        let r: ToolResult = serde_json::from_value(json!({"content": [{"type": "text", "text": "plain"}]}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.value(), json!("plain"));
    }

    #[test]
    fn sse_answers_are_found_by_id() {
        let body = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n\
                     event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"ok\":true}}\n\n";
        let r = sse_answer(body, 7)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no answer"));
        assert_eq!(r.result, Some(json!({"ok": true})));
        assert!(matches!(sse_answer(body, 8), Ok(None)));
    }

    #[test]
    fn downloads_stay_on_the_server() {
        let c = McpClient::new(
            reqwest::Client::new(),
            url::Url::parse("http://127.0.0.1:8000/mcp/").unwrap_or_else(|e| panic!("{e}")),
        );
        let u = c
            .resolve("/wangp_api/gallery/download/abc")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.as_str(), "http://127.0.0.1:8000/wangp_api/gallery/download/abc");
        assert!(c.resolve("http://10.0.0.1/x").is_err());
    }
}
