//! The MCP client against scripted servers on 127.0.0.1 that answer what a well-behaved MCP server does not: an
//! answer for another request, a JSON-RPC error, an initialize without a protocol version, a tool that raised, a
//! tool whose result is plain text, an SSE answer among other events, a key refusal, and a plain web page. And the
//! download links a server hands out must stay on its own host.
#![allow(clippy::unwrap_used)]

mod scripted;

use director_link::mcp::client::McpClient;
use director_link::ErrorCode;
use scripted::{answer, json, runtime, Request, Server};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// An MCP endpoint at `/mcp/` whose answer to each method is `reply(method, id, params)`.
fn mcp(reply: impl Fn(&str, &Value, &Value, TcpStream) + Send + Sync + 'static) -> (Server, McpClient) {
    let server = Server::start(Arc::new(move |req: &Request, s: TcpStream| {
        let body = req.json();
        let method = body["method"].as_str().unwrap_or("").to_string();
        if body.get("id").is_none() {
            return answer(s, "202 Accepted", "application/json", &[], b"");
        }
        reply(&method, &body["id"], &body["params"], s)
    }));
    let url = url::Url::parse(&format!("{}mcp/", server.url)).unwrap();
    let client = McpClient::new(reqwest::Client::builder().no_proxy().build().unwrap(), url);
    (server, client)
}

fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

#[test]
fn answers_that_break_the_protocol_are_protocol_errors() {
    let (_srv, client) = mcp(|method, id, params, s| match method {
        "ping" => json(s, "200 OK", &result(&json!(999), json!({}))),
        "initialize" => json(
            s,
            "200 OK",
            &result(id, json!({"protocolVersion": "", "serverInfo": {"name": "x"}})),
        ),
        _ => match params["name"].as_str() {
            Some("refused") => json(
                s,
                "200 OK",
                &json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "unknown tool"}}),
            ),
            Some("empty") => json(s, "200 OK", &json!({"jsonrpc": "2.0", "id": id})),
            Some("garbled") => json(s, "200 OK", &result(id, json!({"content": "not a list"}))),
            _ => json(s, "200 OK", &result(id, json!({}))),
        },
    });
    let rt = runtime();
    let err = rt.block_on(client.ping(Duration::from_secs(10))).unwrap_err();
    assert_eq!(err.code, ErrorCode::Protocol);
    assert_eq!(err.message, "MCP ping: the answer is for another request");
    let err = rt.block_on(client.initialize(Duration::from_secs(10))).unwrap_err();
    assert_eq!(err.code, ErrorCode::WrongService);
    assert!(err.message.contains("no protocolVersion"), "{}", err.message);
    let err = rt.block_on(client.call_tool("refused", json!({}))).unwrap_err();
    assert_eq!(err.code, ErrorCode::Protocol);
    assert_eq!(
        err.message,
        "MCP tools/call: the server refused it (-32602: unknown tool)"
    );
    let err = rt.block_on(client.call_tool("empty", json!({}))).unwrap_err();
    assert_eq!(err.message, "MCP tools/call: the answer has no result");
    let err = rt.block_on(client.call_tool("garbled", json!({}))).unwrap_err();
    assert_eq!(err.code, ErrorCode::Protocol);
    assert!(
        err.message.starts_with("garbled: unexpected tool result"),
        "{}",
        err.message
    );
}

#[test]
fn tool_results_errors_and_sse_answers_are_read_as_the_server_meant() {
    let (_srv, client) = mcp(|_method, id, params, s| match params["name"].as_str() {
        Some("raises") => json(
            s,
            "200 OK",
            &result(
                id,
                json!({"isError": true, "content": [{"type": "text", "text": "Error executing tool raises: no GPU"}]}),
            ),
        ),
        Some("words") => json(
            s,
            "200 OK",
            &result(
                id,
                json!({"content": [{"type": "text", "text": "queued"}, {"type": "image", "data": "x"}]}),
            ),
        ),
        Some("one_json") => json(
            s,
            "200 OK",
            &result(id, json!({"content": [{"type": "text", "text": "{\"task\": 7}"}]})),
        ),
        _ => {
            // An SSE answer: a progress notification first, then our answer, then an unrelated event.
            let note = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}});
            let ours = result(id, json!({"structuredContent": {"ok": true}}));
            let other = result(&json!(12345), json!({}));
            let body = format!("event: message\ndata: {note}\n\nevent: message\ndata: {ours}\n\ndata: {other}\n\n");
            answer(s, "200 OK", "text/event-stream", &[], body.as_bytes())
        }
    });
    let rt = runtime();
    let err = rt.block_on(client.call_tool("raises", json!({}))).unwrap_err();
    assert_eq!(err.code, ErrorCode::ExecutionFailed);
    assert_eq!(err.message, "raises: no GPU", "the server's prefix is not repeated");
    assert_eq!(
        rt.block_on(client.call_tool("words", json!({}))).unwrap(),
        json!("queued")
    );
    assert_eq!(
        rt.block_on(client.call_tool("one_json", json!({}))).unwrap(),
        json!({"task": 7})
    );
    assert_eq!(
        rt.block_on(client.call_tool("sse", json!({}))).unwrap(),
        json!({"ok": true})
    );
}

#[test]
fn refusals_and_web_pages_say_what_answered() {
    let keyed = Server::start(Arc::new(|_: &Request, s: TcpStream| {
        json(s, "401 Unauthorized", &json!({"detail": "missing key"}))
    }));
    let page = Server::start(Arc::new(|_: &Request, s: TcpStream| {
        answer(
            s,
            "404 Not Found",
            "text/html",
            &[],
            b"<html>\n  <h1>Not   Found</h1>\n</html>",
        )
    }));
    let rt = runtime();
    let client = |srv: &Server| {
        McpClient::new(
            reqwest::Client::new(),
            url::Url::parse(&format!("{}mcp/", srv.url)).unwrap(),
        )
    };
    let err = rt.block_on(client(&keyed).ping(Duration::from_secs(10))).unwrap_err();
    assert_eq!(err.code, ErrorCode::AuthFailed, "{}", err.message);
    let err = rt.block_on(client(&page).ping(Duration::from_secs(10))).unwrap_err();
    assert_eq!(err.code, ErrorCode::WrongService);
    assert!(
        err.message.contains("(\"<html> <h1>Not Found</h1> </html>\")"),
        "whitespace folded: {}",
        err.message
    );
}

#[test]
fn download_links_stay_on_the_servers_host() {
    let c = McpClient::new(
        reqwest::Client::new(),
        url::Url::parse("http://127.0.0.1:8000/mcp/").unwrap(),
    );
    assert_eq!(
        c.resolve("/wangp_api/gallery/download/a.mp4").unwrap().as_str(),
        "http://127.0.0.1:8000/wangp_api/gallery/download/a.mp4"
    );
    let err = c.resolve("http://127.0.0.2:8000/x.mp4").unwrap_err();
    assert_eq!(err.code, ErrorCode::Protocol);
    assert!(
        err.message.contains("another host (http://127.0.0.2:8000); refused"),
        "{}",
        err.message
    );
    let err = c.resolve("http://[::1").unwrap_err();
    assert!(err.message.starts_with("the server gave a bad URL"), "{}", err.message);
}
