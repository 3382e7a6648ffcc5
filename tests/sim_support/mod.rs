//! Shared helpers for the simulator tests: a tiny HTTP client, WebSocket collectors, message "signatures"
//! (type + the values that must match + the recursive key shape of `data`), and a replayer that drives a
//! recorded fixture case against the simulator and compares what comes back with what the real ComfyUI sent.
#![allow(clippy::unwrap_used, dead_code)]

use director_link::sim::{SimConfig, Simulator};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Node sleeps are scaled by this in all simulator tests (fixture timings too).
pub const SCALE: f64 = 0.2;

/// A hub for tests that cut, stall and restart servers: it reconnects within tens of milliseconds and its circuit
/// never stays open for long.
pub fn quick_hub_config(output_dir: &std::path::Path) -> director_link::hub::HubConfig {
    use director_link::service::{BackoffPolicy, BreakerPolicy};
    director_link::hub::HubConfig {
        output_dir: output_dir.to_path_buf(),
        heartbeat: Duration::from_millis(500),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(20),
            factor: 1.5,
            max: Duration::from_millis(200),
            jitter: 0.2,
            healthy_after: Duration::from_secs(1),
        },
        breaker: BreakerPolicy {
            threshold: 1000,
            window: Duration::from_secs(60),
            open_for: Duration::from_millis(100),
        },
        poll_interval: Duration::from_millis(100),
        connect_timeout: Duration::from_secs(2),
        ..director_link::hub::HubConfig::default()
    }
}

pub fn sim() -> Simulator {
    Simulator::start(SimConfig {
        time_scale: SCALE,
        ..SimConfig::default()
    })
    .unwrap()
}

/// The ComfyUI 0.3.64 recordings copied into the project (`tests/fixtures/comfyui`, see its README).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/comfyui")
}

/// The fixture's lines; a missing or unreadable recording fails the test and names the path.
pub fn fixture(name: &str) -> Vec<Value> {
    let path = fixtures_dir().join(format!("{name}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display())))
        .collect();
    assert!(!lines.is_empty(), "fixture {} is empty", path.display());
    lines
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub struct HttpReply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> HttpReply {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap().to_vec();
    HttpReply { status, headers, body }
}

pub async fn get(c: &reqwest::Client, url: &str) -> HttpReply {
    send(c.get(url)).await
}

pub async fn post_json(c: &reqwest::Client, url: &str, body: &Value) -> HttpReply {
    send(c.post(url).json(body)).await
}

/// Something a WebSocket delivered.
#[derive(Debug, Clone)]
pub enum Recv {
    Text(Value),
    Binary(Vec<u8>),
    Closed(Option<u16>),
}

pub type Sink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// A WebSocket whose incoming frames are collected in the background.
pub struct Ws {
    pub sink: Sink,
    pub got: Arc<Mutex<Vec<Recv>>>,
    /// Text frames exactly as received.
    pub raw: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20))
}

impl Ws {
    pub async fn connect(url: &str) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), false)
            .await
            .unwrap();
        let (sink, mut rx) = stream.split();
        let got = Arc::new(Mutex::new(Vec::new()));
        let raw = Arc::new(Mutex::new(Vec::new()));
        let (g, rw) = (got.clone(), raw.clone());
        let task = tokio::spawn(async move {
            while let Some(m) = rx.next().await {
                let item = match m {
                    Ok(Message::Text(t)) => {
                        rw.lock().await.push(t.as_str().to_string());
                        Recv::Text(serde_json::from_str(t.as_str()).unwrap_or(json!({"unparsed": t.as_str()})))
                    }
                    Ok(Message::Binary(b)) => Recv::Binary(b.to_vec()),
                    Ok(Message::Close(f)) => {
                        g.lock().await.push(Recv::Closed(f.map(|f| u16::from(f.code))));
                        return;
                    }
                    Ok(_) => continue,
                    Err(_) => {
                        g.lock().await.push(Recv::Closed(None));
                        return;
                    }
                };
                g.lock().await.push(item);
            }
            g.lock().await.push(Recv::Closed(None));
        });
        Ws { sink, got, raw, task }
    }

    pub async fn snapshot(&self) -> Vec<Recv> {
        self.got.lock().await.clone()
    }

    /// Frames received so far, without a final `Closed`.
    pub async fn frames(&self) -> Vec<Recv> {
        self.snapshot()
            .await
            .into_iter()
            .filter(|r| !matches!(r, Recv::Closed(_)))
            .collect()
    }

    pub async fn texts(&self) -> Vec<Value> {
        self.snapshot()
            .await
            .into_iter()
            .filter_map(|r| if let Recv::Text(v) = r { Some(v) } else { None })
            .collect()
    }

    /// Waits until `pred` holds for the frames so far (bounded by `timeout`).
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Recv]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.snapshot().await) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for a text message of this type (optionally for this prompt id) and returns it.
    pub async fn wait_type(&self, kind: &str, prompt_id: Option<&str>, timeout: Duration) -> Option<Value> {
        let matches =
            |v: &Value| v["type"] == kind && prompt_id.is_none_or(|p| v["data"]["prompt_id"].as_str() == Some(p));
        self.wait_for(timeout, |rs| {
            rs.iter().any(|r| matches!(r, Recv::Text(v) if matches(v)))
        })
        .await;
        self.texts().await.into_iter().find(|v| matches(v))
    }

    pub async fn closed(&self, timeout: Duration) -> Option<Option<u16>> {
        self.wait_for(timeout, |rs| rs.iter().any(|r| matches!(r, Recv::Closed(_))))
            .await;
        self.snapshot()
            .await
            .into_iter()
            .find_map(|r| if let Recv::Closed(c) = r { Some(c) } else { None })
    }

    pub async fn send_text(&mut self, s: &str) {
        self.sink.send(Message::text(s.to_string())).await.unwrap();
    }

    pub async fn close(mut self) {
        let _ = self.sink.send(Message::Close(None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
    }
}

impl Drop for Ws {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn ws_url(sim: &Simulator, client_id: &str) -> String {
    format!("ws://127.0.0.1:{}/ws?clientId={client_id}", sim.port())
}

// ---------------------------------------------------------------------------------------------------------
// Shapes and signatures

fn num_text(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{}", f as i64),
        Some(f) => format!("{f}"),
        None => "?".into(),
    }
}

/// The recursive key structure of a value: objects by sorted keys, arrays by their element shapes
/// (repeats collapsed, so a 5-line and a 1-line traceback match), scalars by JSON type.
pub fn shape(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "b".into(),
        Value::Number(_) => "n".into(),
        Value::String(_) => "s".into(),
        Value::Array(a) => {
            let mut parts: Vec<String> = Vec::new();
            for x in a {
                let s = shape(x);
                if parts.last() != Some(&s) {
                    parts.push(s);
                }
            }
            format!("[{}]", parts.join(","))
        }
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            let parts: Vec<String> = sorted.into_iter().map(|(k, v)| format!("{k}:{}", shape(v))).collect();
            format!("{{{}}}", parts.join(","))
        }
    }
}

/// A WebSocket frame's signature: what must match between the simulator and the recording.
pub fn signature(r: &Recv) -> String {
    match r {
        Recv::Text(v) => {
            let kind = v["type"].as_str().unwrap_or("?");
            let d = &v["data"];
            let detail = match kind {
                "status" => format!("({})", d["status"]["exec_info"]["queue_remaining"]),
                "progress" => format!("({}/{} {})", num_text(&d["value"]), num_text(&d["max"]), d["node"]),
                "executing" | "executed" => format!("({})", d["node"]),
                "execution_cached" => format!("({})", d["nodes"]),
                "execution_error" | "execution_interrupted" => {
                    format!("({} {} {})", d["node_id"], d["node_type"], d["executed"])
                }
                "progress_state" => {
                    let nodes = d["nodes"].as_object().cloned().unwrap_or_default();
                    let parts: Vec<String> = nodes
                        .iter()
                        .map(|(id, n)| {
                            format!(
                                "{id}:{}:{}/{}",
                                n["state"].as_str().unwrap_or("?"),
                                num_text(&n["value"]),
                                num_text(&n["max"])
                            )
                        })
                        .collect();
                    format!("({})", parts.join(" "))
                }
                _ => String::new(),
            };
            format!("{kind}{detail}{}", shape(d))
        }
        Recv::Binary(b) => binary_signature(b),
        Recv::Closed(c) => format!("closed({c:?})"),
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

pub fn binary_signature(b: &[u8]) -> String {
    match be32(b, 0) {
        Some(1) => {
            let kind = be32(b, 4).unwrap_or(0);
            let magic = b.get(8..12).map(hex).unwrap_or_default();
            format!("bin1(type {kind}, magic {magic})")
        }
        Some(3) => {
            let n = be32(b, 4).unwrap_or(0) as usize;
            let node = b
                .get(8..8 + n)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default();
            let text = b
                .get(8 + n..)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default();
            format!("bin3({node}: {text:?})")
        }
        Some(4) => {
            let n = be32(b, 4).unwrap_or(0) as usize;
            let meta: Value = b
                .get(8..8 + n)
                .and_then(|s| serde_json::from_slice(s).ok())
                .unwrap_or(Value::Null);
            let magic = b.get(8 + n..12 + n).map(hex).unwrap_or_default();
            format!(
                "bin4({} {} magic {magic}){}",
                meta["node_id"],
                meta["image_type"],
                shape(&meta)
            )
        }
        other => format!("bin?({other:?})"),
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The signature of a recorded `ws_recv` line.
pub fn fixture_signature(line: &Value) -> String {
    if line["binary"] == true {
        let d = &line["decoded"];
        return match d["event_type"].as_u64() {
            Some(1) => format!(
                "bin1(type {}, magic {})",
                d["image_type"],
                d["image_magic_hex"].as_str().unwrap_or("")
            ),
            Some(3) => format!(
                "bin3({}: {:?})",
                d["node_id"].as_str().unwrap_or(""),
                d["text"].as_str().unwrap_or("")
            ),
            Some(4) => {
                let meta = &d["metadata"];
                format!(
                    "bin4({} {} magic {}){}",
                    meta["node_id"],
                    meta["image_type"],
                    d["image_magic_hex"].as_str().unwrap_or(""),
                    shape(meta)
                )
            }
            other => format!("bin?({other:?})"),
        };
    }
    signature(&Recv::Text(line["data"].clone()))
}

/// Replaces object keys that are prompt ids with a placeholder, so id-keyed maps compare by shape.
pub fn normalize_ids(v: &Value, ids: &[String]) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                let key = if ids.contains(k) {
                    "<prompt_id>".to_string()
                } else {
                    k.clone()
                };
                out.insert(key, normalize_ids(x, ids));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| normalize_ids(x, ids)).collect()),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Fixture replay

/// Per-case adjustments.
#[derive(Default)]
pub struct ReplayOptions {
    /// Requests (URL substrings) whose answers are not compared (documented simulator deviations).
    pub skip_compare: Vec<&'static str>,
    /// Bytes for a multipart file field of this recorded length.
    pub file_bytes: HashMap<u64, Vec<u8>>,
    /// Down time used when the recording restarts the server.
    pub restart_down: f64,
    /// Also compare text frames byte for byte (ids, timestamps and file names normalized).
    pub compare_raw: bool,
}

/// Masks what differs by design: PreviewImage's random `ComfyUI_temp_xxxxx_NNNNN_` names and generated sids.
fn mask_random(s: &str) -> String {
    let mut out = s.to_string();
    for marker in ["ComfyUI_temp_", "\"sid\": \""] {
        let mut from = 0;
        while let Some(i) = out[from..].find(marker).map(|i| i + from + marker.len()) {
            let len = if marker.starts_with("Comfy") { 11 } else { 32 };
            let tail: String = out[i..].chars().take(len).collect();
            let random = if len == 11 {
                tail.len() == 11 && tail[..5].chars().all(|c| c.is_ascii_lowercase())
            } else {
                tail.len() == 32 && tail.chars().all(|c| c.is_ascii_hexdigit())
            };
            if random {
                out.replace_range(i..i + len, &"*".repeat(len));
            }
            from = i;
        }
    }
    out
}

/// `"timestamp": 1795369742344` → `"timestamp": 0`.
fn zero_timestamps(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\"timestamp\": ") {
        let (head, tail) = rest.split_at(i + 13);
        out.push_str(head);
        out.push('0');
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

pub struct Replay {
    pub sim: Simulator,
    pub client: reqwest::Client,
    /// fixture prompt id → simulator prompt id
    pub ids: HashMap<String, String>,
    /// fixture output file name → simulator file name (random temp prefixes differ)
    pub names: HashMap<String, String>,
    /// every (fixture, simulator) HTTP exchange in order: (request line, fixture response, our reply)
    pub exchanges: Vec<(Value, Value, HttpReply)>,
    pub streams: HashMap<String, Ws>,
    pub problems: Vec<String>,
}

impl Replay {
    pub fn new(sim: Simulator) -> Replay {
        Replay {
            sim,
            client: http_client(),
            ids: HashMap::new(),
            names: HashMap::new(),
            exchanges: Vec::new(),
            streams: HashMap::new(),
            problems: Vec::new(),
        }
    }

    fn local_url(&self, url: &str) -> String {
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
        let scheme = if url.starts_with("ws") { "ws" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{}", self.sim.port(), self.subst_str(path))
    }

    fn subst_str(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (f, ours) in self.ids.iter().chain(self.names.iter()) {
            if f != ours {
                out = out.replace(f, ours);
            }
        }
        out
    }

    fn subst(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.subst_str(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.subst(x)).collect()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), self.subst(x))).collect()),
            other => other.clone(),
        }
    }

    /// Pairs `filename` values found at the same place in a recorded and a simulator answer.
    fn learn_names(&mut self, rec: &Value, ours: &Value) {
        match (rec, ours) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in a {
                    let ours_key = self.ids.get(k).cloned().unwrap_or_else(|| k.clone());
                    if let Some(w) = b.get(&ours_key) {
                        if k == "filename" {
                            if let (Some(x), Some(y)) = (v.as_str(), w.as_str()) {
                                self.names.insert(x.to_string(), y.to_string());
                            }
                        } else {
                            self.learn_names(v, w);
                        }
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                for (v, w) in a.iter().zip(b) {
                    self.learn_names(v, w);
                }
            }
            _ => {}
        }
    }

    /// Submits a prompt outside the recording (setup), remembering the id pairing.
    pub async fn setup_prompt(&mut self, fixture_id: &str, body: &Value) -> String {
        let r = post_json(&self.client, &format!("{}/prompt", self.sim.url()), body).await;
        assert_eq!(r.status, 200, "setup prompt rejected: {}", r.text());
        let id = r.json()["prompt_id"].as_str().unwrap().to_string();
        self.ids.insert(fixture_id.to_string(), id.clone());
        id
    }

    /// Waits until the simulator has nothing queued or running.
    pub async fn wait_idle(&self) {
        for _ in 0..2000 {
            let st = self.sim.stats();
            if st.running.is_none() && st.queue_pending == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("simulator did not become idle");
    }

    async fn perform(&mut self, line: &Value, opts: &ReplayOptions) -> HttpReply {
        let method = reqwest::Method::from_bytes(line["method"].as_str().unwrap().as_bytes()).unwrap();
        let url = self.local_url(line["url"].as_str().unwrap());
        let mut req = self.client.request(method, &url);
        if let Some(h) = line["headers"].as_object() {
            for (k, v) in h {
                req = req.header(k.as_str(), v.as_str().unwrap_or_default());
            }
        }
        if let Some(j) = line.get("json") {
            req = req
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(&self.subst(j)).unwrap());
        } else if let Some(t) = line["body_text"].as_str() {
            req = req.body(t.to_string());
        } else if let Some(parts) = line["multipart"].as_array() {
            let mut form = reqwest::multipart::Form::new();
            for p in parts {
                let field = p["field"].as_str().unwrap().to_string();
                if let Some(v) = p["value"].as_str() {
                    form = form.text(field, v.to_string());
                } else {
                    let len = p["bytes_len"].as_u64().unwrap_or(0);
                    let bytes = opts
                        .file_bytes
                        .get(&len)
                        .cloned()
                        .unwrap_or_else(|| vec![0u8; len as usize]);
                    let part = reqwest::multipart::Part::bytes(bytes)
                        .file_name(p["filename"].as_str().unwrap_or("file").to_string())
                        .mime_str(p["content_type"].as_str().unwrap_or("application/octet-stream"))
                        .unwrap();
                    form = form.part(field, part);
                }
            }
            req = req.multipart(form);
        } else if let Some(f) = line["form"].as_object() {
            let pairs: Vec<(String, String)> = f
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            req = req.form(&pairs);
        }
        send(req).await
    }

    fn compare_http(&mut self, req: &Value, expected: &Value, got: &HttpReply, opts: &ReplayOptions) {
        let url = req["url"].as_str().unwrap_or("");
        let what = format!("{} {}", req["method"].as_str().unwrap_or(""), url);
        if opts.skip_compare.iter().any(|s| url.contains(s)) {
            return;
        }
        let want_status = expected["status"].as_u64().unwrap_or(0) as u16;
        if want_status != got.status {
            self.problems.push(format!(
                "{what}: status {} (recorded {want_status}): {}",
                got.status,
                got.text()
            ));
            return;
        }
        let hdr = |name: &str| {
            expected["headers"]
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        for name in [
            "Content-Type",
            "Content-Disposition",
            "Accept-Ranges",
            "Etag",
            "Last-Modified",
        ] {
            let (want, have) = (hdr(name), got.header(name));
            let ok = match name {
                "Content-Type" | "Accept-Ranges" => want == have,
                _ => want.is_some() == have.is_some(),
            };
            if !ok {
                self.problems
                    .push(format!("{what}: header {name} = {have:?}, recorded {want:?}"));
            }
        }
        let ids: Vec<String> = self.ids.keys().chain(self.ids.values()).cloned().collect();
        if let Some(j) = expected.get("json") {
            if j.is_string() && j.as_str().is_some_and(|s| s.starts_with("<omitted")) {
                return;
            }
            let (want, have) = (shape(&normalize_ids(j, &ids)), shape(&normalize_ids(&got.json(), &ids)));
            if want != have {
                self.problems.push(format!(
                    "{what}: JSON shape differs\n  simulator: {have}\n  recorded:  {want}"
                ));
            }
        } else if let Some(t) = expected["text"].as_str() {
            if t != got.text() {
                self.problems
                    .push(format!("{what}: body {:?}, recorded {t:?}", got.text()));
            }
        } else if let Some(h) = expected["head_hex"].as_str() {
            if !hex(&got.body).starts_with(&h[..8.min(h.len())]) {
                self.problems.push(format!(
                    "{what}: body starts {}, recorded {h}",
                    hex(&got.body[..got.body.len().min(8)])
                ));
            }
        }
    }

    /// Replays a recorded case (scaled in time), then compares every stream and every answer.
    pub async fn run(&mut self, lines: &[Value], opts: &ReplayOptions) {
        let start = Instant::now();
        let mut expected: HashMap<String, Vec<String>> = HashMap::new();
        let mut expected_raw: HashMap<String, Vec<String>> = HashMap::new();
        let mut expected_close: HashMap<String, u64> = HashMap::new();
        let mut pending: Option<(Value, HttpReply)> = None;
        let mut anchor: Option<(Instant, f64)> = None;
        for (i, line) in lines.iter().enumerate() {
            let kind = line["kind"].as_str().unwrap_or("");
            let stream = line["stream"].as_str().unwrap_or("").to_string();
            let t = line["t"].as_f64().unwrap_or(0.0);
            let is_action = matches!(kind, "ws_open" | "ws_send" | "http_request")
                || (kind == "ws_close" && line["by"] == "client")
                || (kind == "note"
                    && line["text"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("running") && s.contains("restart")));
            if is_action {
                // Not before the scaled recorded time, and not before the scaled gap after the last frame seen:
                // a simulator slowed by a busy machine then keeps the recording's spacing relative to what it
                // sent (e.g. a reconnect lands between the same two progress messages as in the recording).
                let after_anchor =
                    anchor.map(|(at, from): (Instant, f64)| at + Duration::from_secs_f64((t - from).max(0.0) * SCALE));
                let when = (start + Duration::from_secs_f64(t * SCALE)).max(after_anchor.unwrap_or(start));
                tokio::time::sleep_until(when).await;
                // Keep the recording's causality: everything received before this point must be in.
                let mut waited = false;
                for (name, ws) in &self.streams {
                    let want = lines[..i]
                        .iter()
                        .filter(|l| l["kind"] == "ws_recv" && l["stream"] == name.as_str())
                        .count();
                    let have = ws.frames().await.len();
                    waited |= have < want;
                    ws.wait_for(Duration::from_secs(5), |rs| {
                        rs.iter().filter(|r| !matches!(r, Recv::Closed(_))).count() >= want
                    })
                    .await;
                }
                if waited {
                    let last_seen = lines[..i].iter().rev().find(|l| l["kind"] == "ws_recv");
                    if let Some(from) = last_seen.and_then(|l| l["t"].as_f64()) {
                        anchor = Some((Instant::now(), from));
                    }
                }
            }
            match kind {
                "ws_open" => {
                    let url = self.local_url(line["url"].as_str().unwrap());
                    let ws = Ws::connect(&url).await;
                    self.streams.insert(stream.clone(), ws);
                }
                "ws_send" => {
                    let ws = self.streams.get_mut(&stream).unwrap();
                    let msg = if line["binary"] == true {
                        let head = line["head_hex"].as_str().unwrap_or("");
                        let bytes: Vec<u8> = (0..head.len() / 2)
                            .map(|k| u8::from_str_radix(&head[2 * k..2 * k + 2], 16).unwrap())
                            .collect();
                        Message::binary(bytes)
                    } else {
                        let raw = line["raw"].as_str().unwrap_or("");
                        // "<4194314 x 'x'>" stands for that many 'x'.
                        match raw
                            .strip_prefix('<')
                            .and_then(|r| r.strip_suffix(" x 'x'>"))
                            .and_then(|n| n.parse::<usize>().ok())
                        {
                            Some(n) => Message::text("x".repeat(n)),
                            None => Message::text(raw.to_string()),
                        }
                    };
                    let _ = ws.sink.send(msg).await;
                }
                "ws_recv" => {
                    expected
                        .entry(stream.clone())
                        .or_default()
                        .push(fixture_signature(line));
                    if let Some(raw) = line["raw"].as_str() {
                        expected_raw
                            .entry(stream.clone())
                            .or_default()
                            .push(zero_timestamps(raw));
                    }
                }
                "ws_close" if line["by"] == "client" => {
                    if let Some(mut ws) = self.streams.remove(&stream) {
                        let _ = ws.sink.send(Message::Close(None)).await;
                        let _ = tokio::time::timeout(Duration::from_secs(2), &mut ws.task).await;
                        let sigs: Vec<String> = ws.frames().await.iter().map(signature).collect();
                        self.compare_stream(&stream, expected.remove(&stream).unwrap_or_default(), sigs);
                        if opts.compare_raw {
                            let raws = ws.raw.lock().await.clone();
                            self.compare_raw(&stream, expected_raw.remove(&stream).unwrap_or_default(), raws);
                        }
                    }
                }
                "ws_close" => {
                    expected_close.insert(stream.clone(), line["code"].as_u64().unwrap_or(0));
                }
                "note" if is_action => {
                    self.sim.restart(opts.restart_down).unwrap();
                }
                "http_request" => {
                    let reply = self.perform(line, opts).await;
                    pending = Some((line.clone(), reply));
                }
                "http_response" => {
                    if let Some((req, reply)) = pending.take() {
                        if req["method"] == "POST" && req["url"].as_str().is_some_and(|u| u.ends_with("/prompt")) {
                            if let (Some(f), Some(o)) =
                                (line["json"]["prompt_id"].as_str(), reply.json()["prompt_id"].as_str())
                            {
                                self.ids.insert(f.to_string(), o.to_string());
                            }
                        }
                        if let Some(j) = line.get("json") {
                            self.learn_names(j, &reply.json());
                        }
                        self.compare_http(&req, line, &reply, opts);
                        self.exchanges.push((req, line.clone(), reply));
                    }
                }
                _ => {}
            }
        }
        // Streams still open: wait for the recorded count (and a little longer for extras).
        let names: Vec<String> = self.streams.keys().cloned().collect();
        for name in names {
            let want = expected.get(&name).map(Vec::len).unwrap_or(0);
            let ws = &self.streams[&name];
            ws.wait_for(Duration::from_secs(5), |rs| {
                rs.iter().filter(|r| !matches!(r, Recv::Closed(_))).count() >= want
            })
            .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let frames = ws.frames().await;
            if let Some(code) = expected_close.get(&name) {
                let closed = ws.closed(Duration::from_secs(5)).await;
                let ok = match code {
                    1006 => closed == Some(None),
                    c => closed == Some(Some(*c as u16)),
                };
                if !ok {
                    self.problems
                        .push(format!("stream {name}: closed {closed:?}, recorded code {code}"));
                }
            }
            let sigs: Vec<String> = frames.iter().map(signature).collect();
            let raws = ws.raw.lock().await.clone();
            self.compare_stream(&name, expected.remove(&name).unwrap_or_default(), sigs);
            if opts.compare_raw {
                self.compare_raw(&name, expected_raw.remove(&name).unwrap_or_default(), raws);
            }
        }
    }

    fn compare_raw(&mut self, name: &str, want: Vec<String>, have: Vec<String>) {
        let back: Vec<(String, String)> = self
            .ids
            .iter()
            .chain(self.names.iter())
            .map(|(f, o)| (o.clone(), f.clone()))
            .collect();
        for (k, (w, h)) in want.iter().zip(&have).enumerate() {
            let mut h = zero_timestamps(h);
            for (ours, theirs) in &back {
                h = h.replace(ours.as_str(), theirs);
            }
            let (w, h) = (mask_random(w), mask_random(&h));
            if w != h {
                self.problems.push(format!(
                    "stream {name} text frame {k} differs:\n  simulator: {h}\n  recorded:  {w}"
                ));
            }
        }
        if want.len() != have.len() {
            self.problems.push(format!(
                "stream {name}: {} text frames, recorded {}",
                have.len(),
                want.len()
            ));
        }
    }

    fn compare_stream(&mut self, name: &str, want: Vec<String>, have: Vec<String>) {
        if want != have {
            let mut msg = format!(
                "stream {name}: {} frames from the simulator, {} recorded\n",
                have.len(),
                want.len()
            );
            for k in 0..want.len().max(have.len()) {
                let (w, h) = (
                    want.get(k).map(String::as_str).unwrap_or("-"),
                    have.get(k).map(String::as_str).unwrap_or("-"),
                );
                let mark = if w == h { "  " } else { "!!" };
                msg.push_str(&format!("{mark} {k:>3} sim: {h}\n           rec: {w}\n"));
            }
            self.problems.push(msg);
        }
    }

    pub fn assert_ok(&self) {
        assert!(
            self.problems.is_empty(),
            "simulator differs from the recording:\n{}",
            self.problems.join("\n")
        );
    }

    /// Our reply to the n-th recorded request whose URL contains `needle`.
    pub fn reply(&self, needle: &str, n: usize) -> &HttpReply {
        &self
            .exchanges
            .iter()
            .filter(|(r, _, _)| r["url"].as_str().is_some_and(|u| u.contains(needle)))
            .nth(n)
            .unwrap()
            .2
    }
}

/// A small RGB PNG (uploads in tests).
pub fn png_bytes(w: u32, h: u32, rgb: [u8; 3], alpha: Option<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(if alpha.is_some() {
            png::ColorType::Rgba
        } else {
            png::ColorType::Rgb
        });
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().unwrap();
        let px: Vec<u8> = (0..w * h)
            .flat_map(|_| match alpha {
                Some(a) => vec![rgb[0], rgb[1], rgb[2], a],
                None => rgb.to_vec(),
            })
            .collect();
        wr.write_image_data(&px).unwrap();
    }
    out
}

/// Polls `cond` every 10 ms until it holds (true) or `timeout` passes (false). The timeout only bounds a hang: a
/// loaded machine makes the wait longer, never the test fail.
pub async fn eventually<F: std::future::Future<Output = bool>>(timeout: Duration, mut cond: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
