//! `studio-load`: the studio benchmark's load generator, a process of its own (bench/bench_studio.py runs it
//! against `director-link serve` and against the FastAPI baseline with the same arguments).
//!
//! ```text
//! studio-load fanout --url http://127.0.0.1:PORT --pid SERVER_PID --connections N --jobs J --prefix P
//!                    [--rounds R] [--flood F] [--publishers K] [--connect-concurrency C]
//! studio-load storm  --url ... --pid ... --connections N --jobs J --prefix P --endpoint events|brief
//! studio-load soak   --url ... --pid ... --connections N --jobs J --prefix P --seconds S --rate R
//! ```
//!
//! Subscribers hold WebSockets on `/ws/{job}` (the brief's endpoint, which both servers serve in the same JSON
//! shapes) or, for the storm, on `/ws/events?jobs={job}&since=&epoch=`. The publisher is an external producer:
//! `POST /api/jobs/{job}/progress` over keep-alive HTTP/1.1 connections, its `message` carrying a sequence
//! number whose send instant this process keeps, so publish → delivery is timed on one clock. Server RSS, open
//! files and threads are read from /proc/PID. One JSON object goes to stdout. Loopback only; every wait bounded.
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;
type Res<T> = Result<T, String>;

/// The longest any one phase may take.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

// ---- arguments ----------------------------------------------------------------------------------------------

struct Args {
    mode: String,
    host: String,
    port: u16,
    pid: u32,
    connections: usize,
    jobs: usize,
    prefix: String,
    rounds: usize,
    flood: usize,
    publishers: usize,
    connect_concurrency: usize,
    endpoint: String,
    seconds: f64,
    rate: f64,
    threads: usize,
}

fn parse_args() -> Res<Args> {
    let mut it = std::env::args().skip(1);
    let mode = it
        .next()
        .ok_or("usage: studio-load fanout|storm|soak --url URL --pid PID ...")?;
    let mut kv: HashMap<String, String> = HashMap::new();
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        kv.insert(k.trim_start_matches("--").to_string(), v);
    }
    let get = |k: &str, d: &str| kv.get(k).cloned().unwrap_or_else(|| d.to_string());
    let num = |k: &str, d: &str| -> Res<f64> { get(k, d).parse::<f64>().map_err(|e| format!("--{k}: {e}")) };
    let url = get("url", "");
    let hostport = url
        .strip_prefix("http://")
        .ok_or("--url must be http://127.0.0.1:PORT")?
        .trim_end_matches('/');
    let (host, port) = hostport.rsplit_once(':').ok_or("--url needs a port")?;
    let port: u16 = port.parse().map_err(|e| format!("--url port: {e}"))?;
    // Loopback only: this tool never talks to another machine.
    if !(host == "127.0.0.1" || host == "localhost" || host == "[::1]") {
        return Err(format!("--url must be a loopback address, not {host}"));
    }
    Ok(Args {
        mode,
        host: host.to_string(),
        port,
        pid: num("pid", "0")? as u32,
        connections: num("connections", "100")? as usize,
        jobs: (num("jobs", "1")? as usize).max(1),
        prefix: get("prefix", "bench"),
        rounds: num("rounds", "5")? as usize,
        flood: num("flood", "5")? as usize,
        publishers: (num("publishers", "4")? as usize).max(1),
        connect_concurrency: (num("connect-concurrency", "64")? as usize).max(1),
        endpoint: get("endpoint", "brief"),
        seconds: num("seconds", "10")?,
        rate: num("rate", "100")?,
        threads: (num("threads", "2")? as usize).max(1),
    })
}

// ---- /proc --------------------------------------------------------------------------------------------------

fn proc_status(pid: u32, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn rss_kib(pid: u32) -> f64 {
    proc_status(pid, "VmRSS:").unwrap_or(0.0)
}

fn threads(pid: u32) -> f64 {
    proc_status(pid, "Threads:").unwrap_or(0.0)
}

fn fds(pid: u32) -> f64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0.0, |d| d.count() as f64)
}

/// 10 000 connections need more than the usual soft limit of open files: raise it to the hard limit.
fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 0;
        }
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur
    }
}

// ---- statistics ---------------------------------------------------------------------------------------------

fn pct(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some((sorted[i.min(sorted.len() - 1)] * 1000.0).round() / 1000.0)
}

fn p50_p99(mut v: Vec<f64>) -> (Option<f64>, Option<f64>) {
    v.sort_by(f64::total_cmp);
    (pct(&v, 0.5), pct(&v, 0.99))
}

// ---- HTTP/1.1 keep-alive client (the external producer) ----------------------------------------------------

struct Http {
    io: BufReader<TcpStream>,
    host: String,
    port: u16,
}

impl Http {
    async fn connect(host: &str, port: u16) -> Res<Http> {
        let s = TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = s.set_nodelay(true);
        Ok(Http {
            io: BufReader::new(s),
            host: host.to_string(),
            port,
        })
    }

    async fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> Res<(u16, String)> {
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            self.port,
            body.len()
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(body.as_bytes());
        let io = self.io.get_mut();
        io.write_all(&req).await.map_err(|e| format!("write: {e}"))?;
        let mut line = String::new();
        self.io.read_line(&mut line).await.map_err(|e| format!("read: {e}"))?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(format!("bad status line {line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            let n = self.io.read_line(&mut line).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed in the headers".into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    length = v.trim().parse::<usize>().ok();
                } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                    chunked = true;
                }
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.io.read_line(&mut line).await.map_err(|e| format!("read: {e}"))?;
                let n = usize::from_str_radix(line.trim(), 16).map_err(|e| format!("chunk size: {e}"))?;
                let mut chunk = vec![0u8; n + 2];
                self.io.read_exact(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        } else {
            out.resize(length.unwrap_or(0), 0);
            self.io.read_exact(&mut out).await.map_err(|e| format!("read: {e}"))?;
        }
        Ok((status, String::from_utf8_lossy(&out).into_owned()))
    }
}

/// A producer: posts and checks the answer; reconnects once when the server closed the keep-alive connection.
struct Producer {
    http: Option<Http>,
    host: String,
    port: u16,
    errors: u64,
}

impl Producer {
    fn new(host: &str, port: u16) -> Producer {
        Producer {
            http: None,
            host: host.to_string(),
            port,
            errors: 0,
        }
    }

    async fn post(&mut self, job: &str, body: &Value) -> bool {
        let path = format!("/api/jobs/{job}/progress");
        let text = body.to_string();
        for _ in 0..2 {
            if self.http.is_none() {
                self.http = Http::connect(&self.host, self.port).await.ok();
            }
            let Some(h) = self.http.as_mut() else { continue };
            match h.request("POST", &path, Some(&text)).await {
                Ok((s, _)) if s < 300 => return true,
                Ok(_) => break,
                Err(_) => self.http = None,
            }
        }
        self.errors += 1;
        false
    }

    async fn get_json(&mut self, path: &str) -> Option<Value> {
        if self.http.is_none() {
            self.http = Http::connect(&self.host, self.port).await.ok();
        }
        match self.http.as_mut()?.request("GET", path, None).await {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => {
                self.http = None;
                None
            }
        }
    }
}

// ---- WebSocket subscribers ----------------------------------------------------------------------------------

/// The fields this tool reads from either server's messages; the rest is skipped unparsed.
#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    recovered: Option<bool>,
    #[serde(default, borrow)]
    epoch: Option<Cow<'a, str>>,
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: this process holds up to 10 000 of them.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
}

/// Opens a WebSocket and waits for the server's first message; returns it with the handshake time (TCP connect
/// → first message) in ms.
async fn open(host: &str, port: u16, path: &str) -> Res<(Ws, String, f64)> {
    let t0 = Instant::now();
    let s = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    let url = format!("ws://{host}:{port}{path}");
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, s, Some(ws_config()))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    loop {
        match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                return Ok((ws, t.as_str().to_string(), ms));
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(format!("first message: {e}")),
            Ok(None) => return Err("closed before its first message".into()),
            Err(_) => return Err("no first message within 60 s".into()),
        }
    }
}

/// Shared by a fan-out's subscribers and its publisher.
struct Board {
    base: Instant,
    /// Per sequence number: when its POST was sent (ns since `base`, 0 = not yet).
    sent: Vec<AtomicU64>,
    /// Sequence numbers from here on are the flood's (timed apart from the paced rounds).
    flood_from: AtomicU64,
    delivered: AtomicU64,
    finals: AtomicU64,
    last_final_ns: AtomicU64,
    paced: Mutex<Vec<f64>>,
    flooded: Mutex<Vec<f64>>,
    broken: AtomicU64,
    stop: AtomicBool,
}

impl Board {
    fn ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// A subscriber of the brief's endpoint: counts progress messages, times those that carry a sequence number,
/// ends at `completed`.
async fn subscriber(mut ws: Ws, board: Arc<Board>, deadline: Instant) {
    let mut paced = Vec::new();
    let mut flooded = Vec::new();
    loop {
        if board.stop.load(Ordering::Relaxed) {
            break;
        }
        let next = tokio::time::timeout_at(deadline.into(), ws.next()).await;
        let Ok(Some(Ok(msg))) = next else {
            board.broken.fetch_add(1, Ordering::Relaxed);
            break;
        };
        let Message::Text(t) = msg else { continue };
        let now = board.ns();
        let Ok(m) = serde_json::from_str::<Msg>(t.as_str()) else {
            continue;
        };
        if m.kind != "progress" {
            continue;
        }
        board.delivered.fetch_add(1, Ordering::Relaxed);
        if m.status.as_deref() == Some("completed") {
            board.finals.fetch_add(1, Ordering::Relaxed);
            board.last_final_ns.fetch_max(now, Ordering::Relaxed);
            break;
        }
        let seq = m
            .message
            .as_deref()
            .and_then(|s| s.strip_prefix('s'))
            .and_then(|s| s.parse::<usize>().ok());
        if let Some(seq) = seq {
            if let Some(sent) = board.sent.get(seq).map(|a| a.load(Ordering::Relaxed)) {
                if sent > 0 && now >= sent {
                    let ms = (now - sent) as f64 / 1e6;
                    if (seq as u64) < board.flood_from.load(Ordering::Relaxed) {
                        paced.push(ms);
                    } else {
                        flooded.push(ms);
                    }
                }
            }
        }
    }
    let _ = ws.close(None).await;
    board.paced.lock().map(|mut v| v.extend(paced)).ok();
    board.flooded.lock().map(|mut v| v.extend(flooded)).ok();
}

/// Opens `n` connections on `path_of(i)`, at most `concurrency` handshakes at once. Returns the sockets (by
/// index), their first messages, handshake times and failures.
async fn open_many(
    host: &str,
    port: u16,
    n: usize,
    concurrency: usize,
    path_of: impl Fn(usize) -> String,
) -> (Vec<(usize, Ws, String)>, Vec<f64>, Vec<String>) {
    let sem = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let sem = sem.clone();
        let host = host.to_string();
        let path = path_of(i);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.map_err(|e| e.to_string())?;
            open(&host, port, &path).await.map(|(ws, first, ms)| (i, ws, first, ms))
        }));
    }
    let mut socks = Vec::with_capacity(n);
    let mut hs = Vec::with_capacity(n);
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok((i, ws, first, ms))) => {
                hs.push(ms);
                socks.push((i, ws, first));
            }
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (socks, hs, errors)
}

fn job_name(a: &Args, j: usize) -> String {
    format!("{}-{j}", a.prefix)
}

fn first_errors(errors: &[String]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        if !seen.contains(e) && seen.len() < 5 {
            seen.push(e.clone());
        }
    }
    seen
}

// ---- fanout -------------------------------------------------------------------------------------------------

async fn fanout(a: &Args) -> Res<Value> {
    let rss0 = rss_kib(a.pid);
    let fds0 = fds(a.pid);
    let started = Instant::now();
    let (socks, hs, errors) = open_many(&a.host, a.port, a.connections, a.connect_concurrency, |i| {
        format!("/ws/{}", job_name(a, i % a.jobs))
    })
    .await;
    let connect_s = started.elapsed().as_secs_f64();
    let held = socks.len();
    // Let the server settle, then read its memory with every connection idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib(a.pid);
    let fds1 = fds(a.pid);
    let threads1 = threads(a.pid);

    let total_seqs = (a.rounds + a.flood) * a.jobs;
    let board = Arc::new(Board {
        base: Instant::now(),
        sent: (0..total_seqs).map(|_| AtomicU64::new(0)).collect(),
        flood_from: AtomicU64::new((a.rounds * a.jobs) as u64),
        delivered: AtomicU64::new(0),
        finals: AtomicU64::new(0),
        last_final_ns: AtomicU64::new(0),
        paced: Mutex::new(Vec::new()),
        flooded: Mutex::new(Vec::new()),
        broken: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let deadline = Instant::now() + PHASE_LIMIT;
    let mut readers = Vec::with_capacity(held);
    for (_, ws, _) in socks {
        readers.push(tokio::spawn(subscriber(ws, board.clone(), deadline)));
    }
    let body = |seq: usize, p: usize| json!({"status": "processing", "progress": p.min(99), "message": format!("s{seq}"), "estimated_remaining": 30});
    // Paced rounds: every job once, one POST at a time, then wait for the round's deliveries.
    let mut producer = Producer::new(&a.host, a.port);
    let mut seq = 0usize;
    let mut round_timeouts = 0;
    for r in 0..a.rounds {
        for j in 0..a.jobs {
            board.sent[seq].store(board.ns().max(1), Ordering::Relaxed);
            producer.post(&job_name(a, j), &body(seq, r)).await;
            seq += 1;
        }
        let want = (held * (r + 1)) as u64;
        let until = Instant::now() + Duration::from_secs(30);
        while board.delivered.load(Ordering::Relaxed) < want && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if board.delivered.load(Ordering::Relaxed) < want {
            round_timeouts += 1;
        }
    }
    // The flood: `publishers` producers at once, as fast as the server answers, then `completed` for every job.
    let delivered_before = board.delivered.load(Ordering::Relaxed);
    let flood_t0 = board.ns();
    let mut pubs = Vec::new();
    for k in 0..a.publishers {
        let board = board.clone();
        let (host, port, jobs, rounds, flood, prefix, npub) = (
            a.host.clone(),
            a.port,
            a.jobs,
            a.rounds,
            a.flood,
            a.prefix.clone(),
            a.publishers,
        );
        pubs.push(tokio::spawn(async move {
            let mut p = Producer::new(&host, port);
            let mut posts = 0u64;
            for u in 0..flood {
                for j in (k..jobs).step_by(npub) {
                    let seq = (rounds + u) * jobs + j;
                    board.sent[seq].store(board.ns().max(1), Ordering::Relaxed);
                    let b = json!({"status": "processing", "progress": (rounds + u).min(99),
                                   "message": format!("s{seq}"), "estimated_remaining": 10});
                    p.post(&format!("{prefix}-{j}"), &b).await;
                    posts += 1;
                }
            }
            for j in (k..jobs).step_by(npub) {
                let b = json!({"status": "completed", "progress": 100, "message": "done",
                               "output_path": format!("/out/{prefix}-{j}.png")});
                p.post(&format!("{prefix}-{j}"), &b).await;
                posts += 1;
            }
            (posts, p.errors)
        }));
    }
    let mut posts = 0;
    let mut post_errors = producer.errors;
    for p in pubs {
        if let Ok((n, e)) = p.await {
            posts += n;
            post_errors += e;
        }
    }
    let publish_s = (board.ns() - flood_t0) as f64 / 1e9;
    for r in readers {
        let _ = r.await;
    }
    let flood_s = (board.last_final_ns.load(Ordering::Relaxed).saturating_sub(flood_t0)) as f64 / 1e9;
    let flood_deliveries = board.delivered.load(Ordering::Relaxed) - delivered_before;
    let (h50, h99) = p50_p99(hs);
    let (p50, p99) = p50_p99(std::mem::take(&mut *board.paced.lock().map_err(|e| e.to_string())?));
    let (f50, f99) = p50_p99(std::mem::take(&mut *board.flooded.lock().map_err(|e| e.to_string())?));
    let subs_per_job = held as f64 / a.jobs as f64;
    let expected = ((a.flood + 1) as f64 * subs_per_job * a.jobs as f64).round();
    Ok(json!({
        "connections": a.connections,
        "held": held,
        "jobs": a.jobs,
        "connect_errors": errors.len(),
        "connect_error_examples": first_errors(&errors),
        "connect_s": connect_s,
        "server_rss_kib_before": rss0,
        "server_rss_kib_idle": rss1,
        "server_rss_kib_per_idle_connection": if held > 0 { (rss1 - rss0) / held as f64 } else { 0.0 },
        "server_fds_before": fds0,
        "server_fds_idle": fds1,
        "server_threads_idle": threads1,
        "handshake_ms_p50": h50,
        "handshake_ms_p99": h99,
        "rounds": a.rounds,
        "round_timeouts": round_timeouts,
        "delivery_ms_p50": p50,
        "delivery_ms_p99": p99,
        "flood_updates_per_job": a.flood,
        "flood_posts": posts,
        "flood_publish_s": publish_s,
        "flood_deliveries": flood_deliveries,
        "flood_deliveries_expected": expected,
        "flood_s": flood_s,
        "deliveries_per_s": if flood_s > 0.0 { flood_deliveries as f64 / flood_s } else { 0.0 },
        // Every subscriber's view brought through every update (delivered, or replaced by a newer one that was)
        // per second: the same as deliveries / s when nothing is coalesced.
        "updates_per_s": if flood_s > 0.0 { expected / flood_s } else { 0.0 },
        "flood_delivery_ms_p50": f50,
        "flood_delivery_ms_p99": f99,
        "finals": board.finals.load(Ordering::Relaxed),
        "broken": board.broken.load(Ordering::Relaxed),
        "post_errors": post_errors,
    }))
}

// ---- storm --------------------------------------------------------------------------------------------------

/// What one storm client knows before the drop.
struct Before {
    job: usize,
    offset: Option<u64>,
    epoch: Option<String>,
}

/// After the reconnect: reads until the job's final state; checks order and the latest progress.
async fn resume_reader(
    mut ws: Ws,
    first: String,
    before_offset: Option<u64>,
    want_text: String,
    events: bool,
    deadline: Instant,
) -> (bool, bool, u64) {
    // (recovered and complete, in order without duplicates, messages)
    let mut msgs = 0u64;
    let mut in_order = true;
    let mut last = before_offset.unwrap_or(0);
    let mut saw_latest = false;
    let mut recovered = !events;
    if events {
        match serde_json::from_str::<Msg>(&first) {
            Ok(m) if m.kind == "subscribed" => recovered = m.recovered == Some(true),
            _ => recovered = false,
        }
        if !recovered {
            // A snapshot instead of the missed events: a gap for this benchmark (nothing more will come).
            let _ = ws.close(None).await;
            return (false, true, 0);
        }
    }
    let complete = loop {
        let next = tokio::time::timeout_at(deadline.into(), ws.next()).await;
        let Ok(Some(Ok(msg))) = next else { break false };
        let Message::Text(t) = msg else { continue };
        let Ok(m) = serde_json::from_str::<Msg>(t.as_str()) else {
            continue;
        };
        msgs += 1;
        if events {
            if let Some(o) = m.offset {
                if o <= last {
                    in_order = false;
                }
                last = o;
            }
            if m.kind == "progress" && m.text.as_deref() == Some(want_text.as_str()) {
                saw_latest = true;
            }
            if m.kind == "job_completed" {
                break saw_latest;
            }
        } else if m.kind == "progress" && m.status.as_deref() == Some("completed") {
            break true;
        }
    };
    let _ = ws.close(None).await;
    (recovered && complete, in_order, msgs)
}

async fn storm(a: &Args) -> Res<Value> {
    let events = a.endpoint == "events";
    let path_of = |i: usize| {
        let job = job_name(a, i % a.jobs);
        if events {
            format!("/ws/events?jobs={job}")
        } else {
            format!("/ws/{job}")
        }
    };
    let (socks, _hs, errors) = open_many(&a.host, a.port, a.connections, a.connect_concurrency, path_of).await;
    let held = socks.len();
    let mut producer = Producer::new(&a.host, a.port);
    // One progress per job, which every client reads: its offset is where it resumes from.
    for j in 0..a.jobs {
        producer
            .post(
                &job_name(a, j),
                &json!({"status": "processing", "progress": 10, "message": "before"}),
            )
            .await;
    }
    let mut befores = Vec::with_capacity(held);
    let mut readers = Vec::with_capacity(held);
    for (i, mut ws, first) in socks {
        let epoch = serde_json::from_str::<Msg>(&first)
            .ok()
            .and_then(|m| m.epoch.map(|e| e.into_owned()));
        readers.push(tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(60);
            let mut offset = None;
            while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until.into(), ws.next()).await {
                if let Message::Text(t) = msg {
                    if let Ok(m) = serde_json::from_str::<Msg>(t.as_str()) {
                        if m.kind == "progress" {
                            offset = m.offset;
                            break;
                        }
                    }
                }
            }
            (i, ws, offset, epoch)
        }));
    }
    let mut held_socks = Vec::with_capacity(held);
    for r in readers {
        if let Ok((i, ws, offset, epoch)) = r.await {
            befores.push(Before {
                job: i % a.jobs,
                offset,
                epoch,
            });
            held_socks.push(ws);
        }
    }
    // Every client drops at once (no close handshake: the TCP connections just end), the jobs move on while
    // nobody listens, then everyone reconnects at the same moment.
    drop(held_socks);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for j in 0..a.jobs {
        let job = job_name(a, j);
        for (p, m) in [(50, "while-down-1"), (80, "while-down-2")] {
            producer
                .post(&job, &json!({"status": "processing", "progress": p, "message": m}))
                .await;
        }
        producer
            .post(
                &job,
                &json!({"status": "completed", "progress": 100, "message": "done", "output_path": "/out/x.png"}),
            )
            .await;
    }
    let no_offset = befores.iter().filter(|b| b.offset.is_none()).count();
    eprintln!("storm: {} clients dropped ({no_offset} without an offset); reconnecting", befores.len());
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(120);
    let mut tasks = Vec::with_capacity(befores.len());
    for (idx, b) in befores.iter().enumerate() {
        let job = job_name(a, b.job);
        let path = if events {
            let mut p = format!("/ws/events?jobs={job}");
            if let Some(o) = b.offset {
                p += &format!("&since={o}");
            }
            if let Some(e) = &b.epoch {
                p += &format!("&epoch={e}");
            }
            p
        } else {
            format!("/ws/{job}")
        };
        let (host, port, before, ev) = (a.host.clone(), a.port, b.offset, events);
        // Without resume (the brief's endpoint), wait a little for a final state that a server may send.
        let wait = if events {
            deadline
        } else {
            Instant::now() + Duration::from_secs(3)
        };
        tasks.push(tokio::spawn(async move {
            // As a real client does: a failed attempt is retried after a growing, jittered pause.
            let mut attempt = 0u32;
            let (ws, first, _ms) = loop {
                match open(&host, port, &path).await {
                    Ok(ok) => break ok,
                    Err(e) if attempt >= 5 => return Err(e),
                    Err(_) => {
                        let jitter = (idx as u64 * 7919) % 100;
                        tokio::time::sleep(Duration::from_millis((100 << attempt) + jitter)).await;
                        attempt += 1;
                    }
                }
            };
            let connected = Instant::now();
            let r = resume_reader(ws, first, before, "while-down-2".into(), ev, wait).await;
            Ok::<_, String>((r, connected, Instant::now()))
        }));
    }
    let mut ok = 0u64;
    let mut out_of_order = 0u64;
    let mut failed_reconnects = Vec::new();
    let mut last_done = t0;
    let mut last_connected = t0;
    let mut messages = 0u64;
    for t in tasks {
        match t.await {
            Ok(Ok(((complete, in_order, msgs), connected, at))) => {
                messages += msgs;
                last_connected = last_connected.max(connected);
                if complete {
                    ok += 1;
                    last_done = last_done.max(at);
                }
                if !in_order {
                    out_of_order += 1;
                }
            }
            Ok(Err(e)) => failed_reconnects.push(e),
            Err(e) => failed_reconnects.push(e.to_string()),
        }
    }
    let clients = befores.len() as u64;
    Ok(json!({
        "endpoint": a.endpoint,
        "connections": a.connections,
        "held": held,
        "connect_errors": errors.len(),
        "clients": clients,
        "clients_without_offset": no_offset,
        "recovered": ok,
        "gaps": clients - ok,
        "out_of_order": out_of_order,
        "reconnect_errors": failed_reconnects.len(),
        "reconnect_error_examples": first_errors(&failed_reconnects),
        "reconnected_s": (last_connected - t0).as_secs_f64(),
        "recovery_s": if ok > 0 { (last_done - t0).as_secs_f64() } else { 0.0 },
        "messages_after_reconnect": messages,
        "post_errors": producer.errors,
    }))
}

// ---- soak ---------------------------------------------------------------------------------------------------

async fn soak(a: &Args) -> Res<Value> {
    let (socks, _hs, errors) = open_many(&a.host, a.port, a.connections, a.connect_concurrency, |i| {
        format!("/ws/{}", job_name(a, i % a.jobs))
    })
    .await;
    let held = socks.len();
    let board = Arc::new(Board {
        base: Instant::now(),
        sent: Vec::new(),
        flood_from: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        finals: AtomicU64::new(0),
        last_final_ns: AtomicU64::new(0),
        paced: Mutex::new(Vec::new()),
        flooded: Mutex::new(Vec::new()),
        broken: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds) + PHASE_LIMIT;
    let readers: Vec<_> = socks
        .into_iter()
        .map(|(_, ws, _)| tokio::spawn(subscriber(ws, board.clone(), deadline)))
        .collect();
    let mut producer = Producer::new(&a.host, a.port);
    let mut status = Producer::new(&a.host, a.port);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(a.seconds);
    let gap = Duration::from_secs_f64(1.0 / a.rate.max(0.1));
    let sample_every = Duration::from_secs_f64((a.seconds / 20.0).max(0.5));
    let mut next_sample = t0;
    let mut next_post = t0;
    let mut samples = Vec::new();
    let mut posts = 0u64;
    let mut k = 0usize;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_sample {
            let conns = status
                .get_json("/api/anime/websocket/status")
                .await
                .and_then(|v| v["connections"]["total_connections"].as_f64());
            samples.push(
                json!({"t_s": (now - t0).as_secs_f64(), "rss_kib": rss_kib(a.pid), "fds": fds(a.pid),
                                "threads": threads(a.pid), "connections": conns,
                                "delivered": board.delivered.load(Ordering::Relaxed)}),
            );
            next_sample += sample_every;
        }
        if now >= next_post {
            let j = k % a.jobs;
            let p = (k / a.jobs) % 99;
            producer
                .post(
                    &job_name(a, j),
                    &json!({"status": "processing", "progress": p, "message": format!("soak {k}")}),
                )
                .await;
            posts += 1;
            k += 1;
            next_post += gap;
        } else {
            tokio::time::sleep_until(next_post.min(next_sample).into()).await;
        }
    }
    for j in 0..a.jobs {
        producer
            .post(
                &job_name(a, j),
                &json!({"status": "completed", "progress": 100, "message": "done"}),
            )
            .await;
    }
    for r in readers {
        let _ = r.await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = json!({"rss_kib": rss_kib(a.pid), "fds": fds(a.pid), "threads": threads(a.pid),
                       "connections": status.get_json("/api/anime/websocket/status").await
                           .and_then(|v| v["connections"]["total_connections"].as_f64())});
    Ok(json!({
        "seconds": a.seconds,
        "connections": a.connections,
        "held": held,
        "connect_errors": errors.len(),
        "jobs": a.jobs,
        "posts": posts,
        "delivered": board.delivered.load(Ordering::Relaxed),
        "finals": board.finals.load(Ordering::Relaxed),
        "broken": board.broken.load(Ordering::Relaxed),
        "post_errors": producer.errors,
        "samples": samples,
        "after_close": after,
    }))
}

fn main() {
    let code = match parse_args() {
        Err(e) => {
            eprintln!("studio-load: {e}");
            2
        }
        Ok(a) => {
            let limit = raise_fd_limit();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(a.threads)
                .enable_all()
                .build();
            match rt {
                Err(e) => {
                    eprintln!("studio-load: runtime: {e}");
                    1
                }
                Ok(rt) => {
                    let r = rt.block_on(async {
                        match a.mode.as_str() {
                            "fanout" => fanout(&a).await,
                            "storm" => storm(&a).await,
                            "soak" => soak(&a).await,
                            m => Err(format!("unknown mode {m}")),
                        }
                    });
                    match r {
                        Ok(mut v) => {
                            v["fd_limit"] = json!(limit);
                            v["mode"] = json!(a.mode);
                            println!("{v}");
                            0
                        }
                        Err(e) => {
                            eprintln!("studio-load: {e}");
                            1
                        }
                    }
                }
            }
        }
    };
    std::process::exit(code);
}
