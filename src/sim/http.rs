//! A minimal HTTP/1.1 server on a tokio `TcpStream`: request line + headers + `Content-Length` body,
//! keep-alive, `Connection: close`, `Expect: 100-continue`, the body limit (413), and responses shaped like
//! aiohttp's.
use super::state::Shared;
use super::RequestRecord;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest request head accepted (aiohttp's line limit is 8190 bytes; headers together get more room).
const MAX_HEAD: usize = 64 * 1024;
/// aiohttp's keep-alive timeout.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Time allowed between bytes once a request has started.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const SERVER_HEADER: &str = "Python/3.11 aiohttp/3.14.5 (director-link-simulator)";

pub(crate) struct Request {
    pub method: String,
    /// The raw (still percent-encoded) path, without the query.
    pub path: String,
    /// Decoded query pairs in order.
    pub query: Vec<(String, String)>,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// `request.rel_url.query.get(name)`: the first value.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub close: bool,
    /// aiohttp's route-less 404 goes out chunked with an empty body.
    pub chunked: bool,
}

impl Response {
    /// A bodyless answer (`web.Response(status=...)`): `Content-Length: 0`, no `Content-Type`.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            close: false,
            chunked: false,
        }
    }

    /// `web.json_response(value)` (serialized like Python's `json.dumps`).
    pub fn json(status: u16, value: &Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json; charset=utf-8".into())],
            body: super::pyjson::dumps(value).into_bytes(),
            close: false,
            chunked: false,
        }
    }

    pub fn text(status: u16, text: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: text.as_bytes().to_vec(),
            close: false,
            chunked: false,
        }
    }

    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body,
            close: false,
            chunked: false,
        }
    }

    /// aiohttp's answer to an unhandled exception.
    pub fn server_error() -> Response {
        let mut r = Response::text(500, "500 Internal Server Error\n\nServer got itself in trouble");
        r.close = true;
        r
    }

    pub fn not_found() -> Response {
        Response {
            status: 404,
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body: Vec::new(),
            close: false,
            chunked: true,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Request Entity Too Large",
        416 => "Requested Range Not Satisfiable",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// `(year, month, day, hour, minute, second)` in UTC.
pub(crate) fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

pub(crate) fn civil_now() -> (i64, u32, u32, u32, u32, u32) {
    civil(SystemTime::now())
}

/// RFC 7231 date: `Sun, 22 Nov 2026 17:49:02 GMT`.
pub(crate) fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let weekday = DAYS[secs.div_euclid(86_400).rem_euclid(7) as usize];
    let (y, m, d, hh, mm, ss) = civil(t);
    let month = MONTHS[(m.clamp(1, 12) - 1) as usize];
    format!("{weekday}, {d:02} {month} {y} {hh:02}:{mm:02}:{ss:02} GMT")
}

pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let s = if plus_is_space {
        s.replace('+', " ")
    } else {
        s.to_string()
    };
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k, true), percent_decode(v, true)),
            None => (percent_decode(p, true), String::new()),
        })
        .collect()
}

enum Read {
    Request(Request),
    Closed,
    Reject(Response),
}

fn bad_request(msg: &str) -> Read {
    let mut r = Response::text(400, &format!("400, message:\n  {msg}"));
    r.close = true;
    Read::Reject(r)
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, timeout: Duration) -> Option<usize> {
    let mut chunk = [0u8; 16 * 1024];
    match tokio::time::timeout(timeout, stream.read(&mut chunk)).await {
        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => None,
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(n)
        }
    }
}

async fn read_request(shared: &Shared, stream: &mut TcpStream, buf: &mut Vec<u8>) -> Read {
    let mut head_end = find_head_end(buf);
    for _ in 0..100_000 {
        if head_end.is_some() {
            break;
        }
        if buf.len() > MAX_HEAD {
            return bad_request("request head too long");
        }
        let timeout = if buf.is_empty() { IDLE_TIMEOUT } else { READ_TIMEOUT };
        if read_more(stream, buf, timeout).await.is_none() {
            return Read::Closed;
        }
        head_end = find_head_end(buf);
    }
    let Some(end) = head_end else {
        return bad_request("request head incomplete");
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);

    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    if parts.len() != 3 || !parts[2].starts_with("HTTP/1.") || parts[0].is_empty() {
        return bad_request("invalid request line");
    }
    let (method, target, version) = (parts[0].to_string(), parts[1], parts[2]);
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return bad_request("invalid header line");
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), parse_query(q)),
        None => (target.to_string(), Vec::new()),
    };
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let conn = header("connection").unwrap_or_default();
    let keep_alive = if version == "HTTP/1.0" {
        conn.contains("keep-alive")
    } else {
        !conn.contains("close")
    };
    if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        return bad_request("chunked request bodies are not supported by the simulator; send Content-Length");
    }
    let length: u64 = match header("content-length") {
        Some(v) => match v.parse() {
            Ok(n) => n,
            Err(_) => return bad_request("invalid Content-Length"),
        },
        None => 0,
    };
    let limit = shared.cfg.max_upload_size;
    let expects_continue = header("expect").is_some_and(|e| e == "100-continue");
    if length > limit {
        if !expects_continue {
            // Read (and drop) the body first so the client gets to see our answer.
            let mut left = length.saturating_sub(buf.len() as u64);
            buf.clear();
            let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
            let mut chunk = vec![0u8; 256 * 1024];
            while left > 0 && tokio::time::Instant::now() < deadline {
                match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n as u64),
                    _ => break,
                }
            }
        }
        let mut r = Response::text(
            413,
            &format!("Maximum request body size {limit} exceeded, actual body size {length}"),
        );
        r.close = true;
        return Read::Reject(r);
    }
    if expects_continue && length > 0 && buf.is_empty() {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    }
    let length = length as usize;
    buf.reserve(length.saturating_sub(buf.len()));
    while buf.len() < length {
        if read_more(stream, buf, READ_TIMEOUT).await.is_none() {
            return Read::Closed;
        }
    }
    let body: Vec<u8> = buf.drain(..length).collect();
    Read::Request(Request {
        method,
        path,
        query,
        headers,
        body,
        keep_alive,
    })
}

pub(crate) async fn write_response(
    stream: &mut TcpStream,
    resp: &Response,
    head_only: bool,
    close: bool,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if resp.chunked {
        head.push_str("Transfer-Encoding: chunked\r\n");
    } else {
        head.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    head.push_str(&format!(
        "Date: {}\r\nServer: {SERVER_HEADER}\r\n",
        http_date(SystemTime::now())
    ));
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if resp.chunked {
        if !resp.body.is_empty() && !head_only {
            out.extend(format!("{:x}\r\n", resp.body.len()).into_bytes());
            out.extend(&resp.body);
            out.extend(b"\r\n");
        }
        if !head_only {
            out.extend(b"0\r\n\r\n");
        }
    } else if !head_only {
        out.extend(&resp.body);
    }
    stream.write_all(&out).await?;
    stream.flush().await
}

fn record(req: &Request) -> RequestRecord {
    let mut query = Map::new();
    for (k, v) in &req.query {
        query.entry(k.clone()).or_insert_with(|| Value::String(v.clone()));
    }
    RequestRecord {
        method: req.method.clone(),
        path: req.path.clone(),
        query,
        json: req.json().unwrap_or(Value::Null),
    }
}

/// One TCP connection: requests until close, idle timeout, restart, or a WebSocket upgrade.
pub(crate) async fn serve_conn(shared: Arc<Shared>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let epoch = shared.current_epoch();
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    for _ in 0..1_000_000 {
        let read = tokio::select! {
            r = read_request(&shared, &mut stream, &mut buf) => r,
            _ = shared.epoch_changed(epoch) => return,
        };
        let req = match read {
            Read::Request(r) => r,
            Read::Closed => return,
            Read::Reject(resp) => {
                let _ = write_response(&mut stream, &resp, false, true).await;
                return;
            }
        };
        // A stalled server reads the request but does not answer until the stall ends.
        tokio::select! {
            biased;
            _ = shared.epoch_changed(epoch) => return,
            _ = shared.wait_not_stalled() => {}
        }
        // Logged only by the "process" that handles it: a request a restart cut before it was handled died with
        // the old process (its client sees the connection close), so the log never shows a request twice that
        // the server took once.
        if shared.current_epoch() != epoch {
            return;
        }
        shared.log_request(record(&req));
        match super::routes::dispatch(&shared, &req) {
            super::routes::Dispatch::WebSocket => {
                let leftover = std::mem::take(&mut buf);
                super::ws::serve(shared, stream, leftover, req, epoch).await;
                return;
            }
            super::routes::Dispatch::Reply(resp) => {
                // `hold_answers`: the work is done, the answer waits for `release_answers` or a restart's cut.
                let mut released = shared.release_tx.subscribe();
                if shared.answer_held(&req.path) {
                    tokio::select! {
                        _ = released.changed() => {}
                        _ = shared.epoch_changed(epoch) => return,
                    }
                    if released.borrow().1 {
                        return;
                    }
                }
                let close = resp.close || !req.keep_alive;
                let head_only = req.method == "HEAD";
                if write_response(&mut stream, &resp, head_only, close).await.is_err() || close {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_369_742);
        assert_eq!(http_date(t), "Sun, 22 Nov 2026 17:49:02 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn query_decoding() {
        let q = parse_query("filename=a%20b+c.png&subfolder=&x");
        assert_eq!(q[0], ("filename".into(), "a b c.png".into()));
        assert_eq!(q[1], ("subfolder".into(), String::new()));
        assert_eq!(q[2], ("x".into(), String::new()));
    }
}
