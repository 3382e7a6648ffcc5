//! Every registered job ends exactly once, on every path — a randomized, seeded, reproducible stateful test.
//!
//! Each case starts a ComfyUI simulator and a small OpenAI-compatible SSE server (both on 127.0.0.1), then runs a
//! random sequence of: submit (API format, and UI format, which is converted in the background), chat, cancel,
//! remove_service (+ add a fresh one), set_service_url to a dead address and back, reconnect, cut sockets, leave
//! sockets open but unregistered (deaf), restart the simulator, cut chat streams, and close. Afterwards it checks,
//! from the events `poll()` returned:
//! - every registered job has exactly one terminal event, and it is the job's last event;
//! - per-job order: `JobQueued` before `JobStarted`, text pieces in order (0, 1, 2, …) and a completed chat's text
//!   is exactly its pieces joined; no job-scoped event for a job we did not register;
//! - nothing was posted twice: a prompt id reaches the simulator at most once between two restarts;
//! - a job cancelled or ended before it was handed to an actor (cancel during conversion) was never posted.
//!   When the case does not close the hub early, every job must also end on its own (no job left hanging).
//!
//! Reproduce a failing case: `DL_INVARIANT_SEED=<seed> cargo test --test hub_invariant -- --nocapture`.
//! `DL_INVARIANT_CASES` sets how many seeds run (default 12, fixed, so CI time is bounded).
#![allow(clippy::unwrap_used)]

mod sim_support;

use director_link::event::EventKind;
use director_link::hub::Hub;
use director_link::openai::service::ChatRequest;
use director_link::sim::{SimConfig, Simulator};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------------------------
// A minimal OpenAI-compatible server: /v1/models and streamed /v1/chat/completions, one thread per connection.

struct ChatServer {
    port: u16,
    stop: Arc<AtomicBool>,
    /// While set, streams are cut after their first piece (a dropped connection mid-answer).
    cut: Arc<AtomicBool>,
    posts: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ChatServer {
    fn start() -> ChatServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let posts = Arc::new(AtomicU64::new(0));
        let (s, c, p) = (stop.clone(), cut.clone(), posts.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (s, c, p) = (s.clone(), c.clone(), p.clone());
                        std::thread::spawn(move || serve(stream, &s, &c, &p));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ChatServer {
            port,
            stop,
            cut,
            posts,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ChatServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, stop: &AtomicBool, cut: &AtomicBool, posts: &AtomicU64) {
    stream.set_nonblocking(false).unwrap();
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let reply = |out: &mut TcpStream, status: &str, body: &str| {
        let _ = write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    };
    match path.as_str() {
        "/v1/models" => reply(
            &mut out,
            "200 OK",
            r#"{"object":"list","data":[{"id":"mock","object":"model"}]}"#,
        ),
        "/v1/chat/completions" => {
            posts.fetch_add(1, Ordering::Relaxed);
            let pieces = 6;
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            );
            for k in 0..pieces {
                if stop.load(Ordering::Acquire) || (k > 0 && cut.load(Ordering::Acquire)) {
                    return; // cut without [DONE]
                }
                let chunk = json!({"id": "c", "object": "chat.completion.chunk", "model": "mock",
                    "choices": [{"index": 0, "delta": {"content": format!("w{k} ")}, "finish_reason": null}]});
                if write!(out, "data: {chunk}\n\n").is_err() || out.flush().is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(15));
            }
            let last = json!({"id": "c", "object": "chat.completion.chunk", "model": "mock",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
            let _ = write!(out, "data: {last}\n\ndata: [DONE]\n\n");
        }
        _ => reply(&mut out, "404 Not Found", r#"{"error":{"message":"not here"}}"#),
    }
}

// ---------------------------------------------------------------------------------------------------------------

fn progress_prompt(nonce: u64) -> Value {
    json!({
        "1": {"class_type": "AcceptanceProgress", "inputs": {"steps": 3, "step_seconds": 0.03, "width": 32,
              "height": 32, "send_preview": false, "nonce": nonce}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "dl_test/inv"}}
    })
}

fn ui_invert(color: u64) -> Value {
    json!({
        "last_node_id": 3, "last_link_id": 2,
        "nodes": [
            {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
             "widgets_values": [16, 16, 1, color % (1 << 24)], "properties": {}},
            {"id": 2, "type": "ImageInvert", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}], "widgets_values": [], "properties": {}},
            {"id": 3, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 2}],
             "outputs": [], "widgets_values": ["dl_test/ui"], "properties": {}}
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
        "groups": [], "config": {}, "extra": {}, "version": 0.4
    })
}

fn chat_request() -> ChatRequest {
    ChatRequest {
        messages: json!([{"role": "user", "content": "hello"}]),
        model: Some("mock".into()),
        stream: true,
        options: Default::default(),
        max_retries: 0,
    }
}

fn dead_url() -> String {
    // A port that was just free: connections are refused (loopback only).
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn hub(out: &std::path::Path) -> Hub {
    // Restarts and cuts must not open the circuit for long in a test.
    Hub::new(sim_support::quick_hub_config(out)).unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Comfy,
    Chat,
}

struct Case {
    seed: u64,
    hub: Hub,
    sim: Simulator,
    chat: ChatServer,
    /// Live services: name → (kind, pointing at a dead address).
    services: BTreeMap<String, (Kind, bool)>,
    next_name: u32,
    jobs: Vec<(String, Kind)>,
    events: Vec<director_link::Event>,
    /// Request-log index ranges during which the simulator restarted.
    restarts: Vec<(usize, usize)>,
    log: Vec<String>,
}

impl Case {
    fn add(&mut self, kind: Kind) {
        self.next_name += 1;
        let (k, url, name) = match kind {
            Kind::Comfy => ("comfyui", self.sim.url(), format!("comfy{}", self.next_name)),
            Kind::Chat => ("openai", self.chat.url(), format!("chat{}", self.next_name)),
        };
        self.hub.add_service(k, &url, Some(&name), None).unwrap();
        self.services.insert(name, (kind, false));
    }

    fn pick_service(&self, rng: &mut StdRng, kind: Option<Kind>) -> Option<String> {
        let names: Vec<&String> = self
            .services
            .iter()
            .filter(|(_, (k, _))| kind.is_none_or(|want| *k == want))
            .map(|(n, _)| n)
            .collect();
        (!names.is_empty()).then(|| names[rng.random_range(0..names.len())].clone())
    }

    fn drain(&mut self) {
        loop {
            let got = self.hub.poll(1000);
            if got.is_empty() {
                break;
            }
            self.events.extend(got);
        }
    }

    fn step(&mut self, rng: &mut StdRng) {
        let roll = rng.random_range(0..100);
        match roll {
            0..=21 => {
                if let Some(s) = self.pick_service(rng, Some(Kind::Comfy)) {
                    let id = self
                        .hub
                        .submit(&s, progress_prompt(u64::from(rng.random::<u32>())), Vec::new(), None)
                        .unwrap();
                    self.log.push(format!("submit {s} {id}"));
                    self.jobs.push((id, Kind::Comfy));
                }
            }
            22..=31 => {
                if let Some(s) = self.pick_service(rng, Some(Kind::Comfy)) {
                    let id = self
                        .hub
                        .submit(&s, ui_invert(u64::from(rng.random::<u32>())), Vec::new(), None)
                        .unwrap();
                    self.log.push(format!("submit-ui {s} {id}"));
                    self.jobs.push((id.clone(), Kind::Comfy));
                    // Half the time, cancel at once: while its node list is still being fetched, if not cached.
                    if rng.random_bool(0.5) {
                        self.hub.cancel(&id).unwrap();
                        self.log.push(format!("cancel-now {id}"));
                    }
                }
            }
            32..=43 => {
                if let Some(s) = self.pick_service(rng, Some(Kind::Chat)) {
                    let id = self.hub.chat(&s, chat_request(), None).unwrap();
                    self.log.push(format!("chat {s} {id}"));
                    self.jobs.push((id, Kind::Chat));
                }
            }
            44..=55 => {
                if !self.jobs.is_empty() {
                    let (id, _) = self.jobs[rng.random_range(0..self.jobs.len())].clone();
                    self.hub.cancel(&id).unwrap();
                    self.log.push(format!("cancel {id}"));
                }
            }
            56..=59 => {
                if let Some(s) = self.pick_service(rng, None) {
                    let (kind, _) = self.services[&s];
                    self.hub.remove_service(&s).unwrap();
                    self.services.remove(&s);
                    self.log.push(format!("remove {s}"));
                    self.add(kind);
                }
            }
            60..=65 => {
                if let Some(s) = self.pick_service(rng, Some(Kind::Comfy)) {
                    let dead = self.services[&s].1;
                    let url = if dead { self.sim.url() } else { dead_url() };
                    self.hub.set_service_url(&s, &url).unwrap();
                    self.services.insert(s.clone(), (Kind::Comfy, !dead));
                    self.log.push(format!("set-url {s} {url}"));
                }
            }
            66..=68 => {
                if let Some(s) = self.pick_service(rng, None) {
                    self.hub.reconnect(&s).unwrap();
                    self.log.push(format!("reconnect {s}"));
                }
            }
            69..=71 => {
                self.sim.drop_sockets();
                self.log.push("drop-sockets".into());
            }
            72 => {
                // ComfyUI's duplicate-clientId race: sockets stay open but hear nothing.
                self.sim.forget_sockets();
                self.log.push("forget-sockets".into());
            }
            73..=74 => {
                let before = self.sim.requests().len();
                self.sim.restart(0.1).unwrap();
                let after = self.sim.requests().len();
                self.restarts.push((before, after));
                self.log.push("restart".into());
            }
            75..=77 => {
                let on = !self.chat.cut.load(Ordering::Acquire);
                self.chat.cut.store(on, Ordering::Release);
                self.log.push(format!("cut-streams {on}"));
            }
            78..=87 => self.drain(),
            _ => std::thread::sleep(Duration::from_millis(rng.random_range(1..40))),
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!("seed {}: {what}\noperations:\n  {}", self.seed, self.log.join("\n  "));
    }

    fn check(&mut self, closed_early: bool) {
        let registered: HashMap<&str, Kind> = self.jobs.iter().map(|(id, k)| (id.as_str(), *k)).collect();
        let mut per_job: HashMap<&str, Vec<&EventKind>> = HashMap::new();
        let mut last_seq = 0;
        for e in &self.events {
            if e.seq <= last_seq {
                self.fail(format!("event seq {} after {last_seq}", e.seq));
            }
            last_seq = e.seq;
            if let Some(id) = e.kind.job_id() {
                if !registered.contains_key(id) {
                    self.fail(format!("{} for a job never registered: {id}", e.kind.name()));
                }
                per_job.entry(id).or_default().push(&e.kind);
            }
        }
        for (id, kind) in &self.jobs {
            let evs = per_job.get(id.as_str()).cloned().unwrap_or_default();
            let terminals: Vec<&str> = evs.iter().filter(|k| k.is_terminal()).map(|k| k.name()).collect();
            if terminals.len() != 1 {
                self.fail(format!(
                    "job {id} has {} terminal events: {terminals:?}",
                    terminals.len()
                ));
            }
            if !evs.last().is_some_and(|k| k.is_terminal()) {
                let names: Vec<_> = evs.iter().map(|k| k.name()).collect();
                self.fail(format!("job {id}: something after its terminal event: {names:?}"));
            }
            let queued = evs.iter().position(|k| matches!(k, EventKind::JobQueued { .. }));
            let started = evs.iter().position(|k| matches!(k, EventKind::JobStarted { .. }));
            if *kind == Kind::Comfy {
                if let (Some(s), q) = (started, queued) {
                    if q.is_none_or(|q| q > s) {
                        let names: Vec<_> = evs.iter().map(|k| k.name()).collect();
                        self.fail(format!("job {id}: started before queued: {names:?}"));
                    }
                }
            }
            let text: String = evs
                .iter()
                .filter_map(|k| match k {
                    EventKind::TextDelta { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            let indexes: Vec<u64> = evs
                .iter()
                .filter_map(|k| match k {
                    EventKind::TextDelta { index, .. } => Some(*index),
                    _ => None,
                })
                .collect();
            if indexes.iter().enumerate().any(|(i, x)| *x != i as u64) {
                self.fail(format!("job {id}: text pieces out of order: {indexes:?}"));
            }
            if let Some(EventKind::JobCompleted { ui, .. }) = evs.last() {
                if *kind == Kind::Chat && ui.get("text").and_then(Value::as_str) != Some(text.as_str()) {
                    self.fail(format!(
                        "job {id}: completed text {:?} is not its pieces {text:?}",
                        ui.get("text")
                    ));
                }
            }
            if !closed_early {
                if let Some(EventKind::JobFailed { error, .. }) = evs.last() {
                    if error.code == "hub_closed" {
                        let names: Vec<String> = evs
                            .iter()
                            .map(|k| format!("{k:?}").chars().take(160).collect())
                            .collect();
                        // What the server says, so a hang can be told apart from a job stuck on the server.
                        let server = self.sim.stats();
                        let history = self
                            .sim
                            .requests()
                            .iter()
                            .filter(|r| r.path.contains(id.as_str()))
                            .count();
                        self.fail(format!(
                            "job {id} was left hanging until close; its events: {names:#?}\nsimulator: {server:?}; \
                             requests naming the job: {history}"
                        ));
                    }
                }
            }
        }
        // Nothing posted twice: one POST per prompt id between two restarts.
        let requests = self.sim.requests();
        let mut posts: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in requests.iter().enumerate() {
            if r.method == "POST" && r.path == "/prompt" {
                if let Some(pid) = r.json.get("prompt_id").and_then(Value::as_str) {
                    posts.entry(pid.to_string()).or_default().push(i);
                }
            }
        }
        for (pid, at) in &posts {
            for w in at.windows(2) {
                let restart_between = self.restarts.iter().any(|(a, b)| *a <= w[1] && *b > w[0]);
                if !restart_between {
                    self.fail(format!(
                        "prompt {pid} was posted twice (requests {} and {})",
                        w[0], w[1]
                    ));
                }
            }
        }
        // Chats are sent once each (no retries asked): never more requests than chats.
        let chats = self.jobs.iter().filter(|(_, k)| *k == Kind::Chat).count() as u64;
        let chat_posts = self.chat.posts.load(Ordering::Relaxed);
        if chat_posts > chats {
            self.fail(format!("{chat_posts} chat requests for {chats} chats"));
        }
        // A job cancelled before it reached an actor, or ended while never posted, never reaches the server.
        let never_sent: HashSet<&str> = self
            .jobs
            .iter()
            .filter(|(id, k)| {
                *k == Kind::Comfy
                    && per_job
                        .get(id.as_str())
                        .is_some_and(|evs| evs.len() == 1 && matches!(evs[0], EventKind::JobCancelled { .. }))
            })
            .map(|(id, _)| id.as_str())
            .collect();
        for id in never_sent {
            if posts.contains_key(id) && !self.log.iter().any(|l| l.contains(id) && l.starts_with("cancel ")) {
                // Cancelled with no other event at all, by a cancel issued at submit time: it must not be posted.
                self.fail(format!("job {id} was cancelled before it was sent, yet it was posted"));
            }
        }
    }
}

fn run_case(seed: u64, steps: usize) {
    let out = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SimConfig {
        time_scale: 1.0,
        ..SimConfig::default()
    })
    .unwrap();
    let mut case = Case {
        seed,
        hub: hub(out.path()),
        sim,
        chat: ChatServer::start(),
        services: BTreeMap::new(),
        next_name: 0,
        jobs: Vec::new(),
        events: Vec::new(),
        restarts: Vec::new(),
        log: Vec::new(),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    case.add(Kind::Comfy);
    case.add(Kind::Chat);
    if rng.random_bool(0.5) {
        case.add(Kind::Comfy);
    }
    for _ in 0..steps {
        case.step(&mut rng);
    }
    let close_early = rng.random_bool(0.3);
    if close_early {
        case.log.push("close".into());
        case.hub.close();
    } else {
        // Point every service back at a live server, then every job must end on its own.
        case.chat.cut.store(false, Ordering::Release);
        let dead: Vec<String> = case
            .services
            .iter()
            .filter(|(_, (_, d))| *d)
            .map(|(n, _)| n.clone())
            .collect();
        for s in dead {
            case.hub.set_service_url(&s, &case.sim.url()).unwrap();
            case.services.insert(s.clone(), (Kind::Comfy, false));
            case.log.push(format!("set-url {s} back"));
        }
        // Bounded: a job still unfinished after this is reported (with the operations) as left hanging.
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            case.drain();
            let open = case
                .jobs
                .iter()
                .filter(|(id, _)| case.hub.job_state(id).is_none_or(|s| !s.is_terminal()))
                .count();
            if open == 0 {
                break;
            }
            case.hub.wait_for_events(Duration::from_millis(50));
        }
        case.log.push("close".into());
        case.hub.close();
    }
    case.drain();
    for (id, _) in &case.jobs {
        if case.hub.job_state(id).is_some_and(|s| !s.is_terminal()) {
            case.fail(format!("job {id} is still {:?} after close", case.hub.job_state(id)));
        }
    }
    case.check(close_early);
    let kinds: HashMap<&str, Kind> = case.jobs.iter().map(|(id, k)| (id.as_str(), *k)).collect();
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    for e in &case.events {
        let kind = e.kind.job_id().and_then(|id| kinds.get(id)).map_or("?", |k| match k {
            Kind::Comfy => "comfy",
            Kind::Chat => "chat",
        });
        let key = match &e.kind {
            EventKind::JobFailed { error, .. } => format!("{kind} failed:{}", error.code),
            k if k.is_terminal() => format!("{kind} {}", k.name()),
            _ => continue,
        };
        *ends.entry(key).or_default() += 1;
    }
    eprintln!(
        "seed {seed}: {} jobs, {} steps, ends {ends:?}",
        case.jobs.len(),
        case.log.len()
    );
}

#[test]
fn every_job_ends_exactly_once_whatever_happens() {
    let cases: u64 = std::env::var("DL_INVARIANT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let seeds: Vec<u64> = match std::env::var("DL_INVARIANT_SEED").ok().and_then(|v| v.parse().ok()) {
        Some(one) => vec![one],
        None => (1..=cases).collect(),
    };
    for seed in seeds {
        run_case(seed, 40);
    }
}
