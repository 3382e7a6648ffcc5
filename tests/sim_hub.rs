//! The hub's ComfyUI actor over real loopback sockets, against the simulator and small fault servers: what the
//! status says while the circuit is open, results whose download meets a restart, and cancels that must never
//! touch another client's job (targeted and global-interrupt servers).
#![allow(clippy::unwrap_used)]

use director_link::event::{EventKind, ServiceState};
use director_link::hub::{Hub, HubConfig, ServiceOptions};
use director_link::service::{BackoffPolicy, BreakerPolicy};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn hub(dir: &std::path::Path, breaker: BreakerPolicy) -> Hub {
    Hub::new(HubConfig {
        output_dir: dir.to_path_buf(),
        heartbeat: Duration::from_millis(500),
        backoff: BackoffPolicy {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(100),
            ..BackoffPolicy::default()
        },
        breaker,
        poll_interval: Duration::from_millis(100),
        connect_timeout: Duration::from_secs(5),
        ..HubConfig::default()
    })
    .unwrap()
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dl-sim-hub-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A ComfyUI whose HTTP API works but whose WebSocket upgrade hangs for `ws_hold`, then closes: every connection
/// attempt fails slowly (as through a proxy that swallows upgrades), so the actor follows jobs over HTTP and the
/// circuit opens. Runs until `stop` is set; every loop is bounded by it.
fn half_broken_server(ws_hold: Duration, stop: Arc<AtomicBool>) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((conn, _)) => {
                    let stop = stop.clone();
                    std::thread::spawn(move || serve_half_broken(conn, ws_hold, &stop));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (port, handle)
}

fn serve_half_broken(mut conn: TcpStream, ws_hold: Duration, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if head.contains("upgrade: websocket") {
        let until = Instant::now() + ws_hold;
        while Instant::now() < until && !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(10));
        }
        return; // closed without an answer
    }
    let body = if head.starts_with("get /system_stats") || head.starts_with("get /api/system_stats") {
        r#"{"system": {"comfyui_version": "0.3.64", "argv": ["main.py"]}, "devices": []}"#
    } else {
        r#"{}"#
    };
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Race A of issue 13: `circuit_open` was set in one step and `next_attempt_at` in another, and after the wait the
/// state stayed `circuit_open` (with no time) through the next, slow attempt while following jobs over HTTP.
/// Every look at the status, and every state event, must show a `circuit_open` with the time of its next try.
#[test]
fn circuit_open_always_says_when_it_will_try_again() {
    let dir = temp_dir("circuit");
    let stop = Arc::new(AtomicBool::new(false));
    // Each WebSocket attempt takes 300 ms to fail: long enough that a sampler sees what the state says meanwhile.
    let (port, server) = half_broken_server(Duration::from_millis(300), stop.clone());
    let hub = hub(
        &dir,
        BreakerPolicy {
            threshold: 2,
            window: Duration::from_secs(60),
            open_for: Duration::from_millis(400),
        },
    );
    let name = hub
        .add_service_with(
            "comfyui",
            &format!("http://127.0.0.1:{port}"),
            Some("half"),
            None,
            ServiceOptions::default(),
        )
        .unwrap()
        .name;

    let mut samples = 0u64;
    let mut open_samples = 0u64;
    let mut bad = Vec::new();
    let mut states = Vec::new();
    let mut opened = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    // Until the circuit has opened three times: its half-open attempts in between are sampled too.
    while opened < 3 && Instant::now() < deadline {
        let snap = hub.service(&name).unwrap();
        samples += 1;
        if snap.state == ServiceState::CircuitOpen {
            open_samples += 1;
            if snap.next_attempt_at.is_none() {
                bad.push(format!("sample {samples}: {:?} / {:?}", snap.state, snap.reason));
            }
        }
        for ev in hub.poll(1000) {
            if let EventKind::ServiceStateChanged { state, .. } = ev.kind {
                // What a consumer woken by the event reads at once.
                let now = hub.service(&name).unwrap();
                if state == ServiceState::CircuitOpen {
                    opened += 1;
                    if now.state == ServiceState::CircuitOpen && now.next_attempt_at.is_none() {
                        bad.push(format!("after the circuit_open event: {:?}", now.reason));
                    }
                }
                states.push(state);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    hub.close();
    stop.store(true, Ordering::Release);
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        opened >= 3,
        "the circuit opened {opened} times; states seen: {states:?}"
    );
    assert!(
        open_samples > 0 && samples > open_samples,
        "{open_samples} of {samples} samples"
    );
    assert!(bad.is_empty(), "circuit_open without its next try: {bad:?}");
    // Between two openings the half-open attempt is visible as such (following jobs over HTTP meanwhile).
    let first = states.iter().position(|s| *s == ServiceState::CircuitOpen).unwrap();
    assert!(
        states[first + 1..].contains(&ServiceState::Polling),
        "after the wait the state says what is happening now: {states:?}"
    );
}

use director_link::sim::{SimConfig, Simulator};
use serde_json::{json, Value};

/// A hub with one ComfyUI service on a simulator of the given version, and every event it has seen.
struct Rig {
    hub: Hub,
    sim: Simulator,
    name: String,
    dir: std::path::PathBuf,
    events: Vec<EventKind>,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Rig {
    fn new(tag: &str, version: &str) -> Rig {
        let sim = Simulator::start(SimConfig {
            time_scale: 0.2,
            comfyui_version: version.to_string(),
            ..SimConfig::default()
        })
        .unwrap();
        let dir = temp_dir(tag);
        // The circuit never opens here: reconnects follow the short backoff.
        let hub = hub(
            &dir,
            BreakerPolicy {
                threshold: 10_000,
                ..BreakerPolicy::default()
            },
        );
        let name = hub
            .add_service_with("comfyui", &sim.url(), Some(tag), None, ServiceOptions::default())
            .unwrap()
            .name;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut rig = Rig {
            hub,
            sim,
            name,
            dir,
            events: Vec::new(),
            rt,
            http,
        };
        rig.wait_state(ServiceState::Connected);
        rig
    }

    fn wait_state(&mut self, state: ServiceState) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.hub.service(&self.name).unwrap().state != state {
            assert!(
                Instant::now() < deadline,
                "never {state:?}: {:?}",
                self.hub.service(&self.name)
            );
            self.pump(Duration::from_millis(20));
        }
    }

    fn pump(&mut self, wait: Duration) {
        self.hub.wait_for_events(wait);
        self.events.extend(self.hub.poll(10_000).into_iter().map(|e| e.kind));
    }

    /// Events until `done` holds for one of them (bounded).
    fn until(&mut self, what: &str, done: impl Fn(&EventKind) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.events.iter().any(&done) {
            assert!(
                Instant::now() < deadline,
                "waited in vain for {what}: {:?}",
                self.names()
            );
            self.pump(Duration::from_millis(50));
        }
    }

    fn terminal(&mut self, job: &str) -> EventKind {
        self.until(&format!("the end of {job}"), |e| {
            e.is_terminal() && e.job_id() == Some(job)
        });
        let ends: Vec<_> = self
            .events
            .iter()
            .filter(|e| e.is_terminal() && e.job_id() == Some(job))
            .cloned()
            .collect();
        assert_eq!(ends.len(), 1, "one terminal event: {ends:?}");
        ends[0].clone()
    }

    fn names(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| format!("{}:{}", e.name(), e.job_id().unwrap_or("-")))
            .collect()
    }

    fn submit(&self, prompt: Value) -> String {
        self.hub.submit(&self.name, prompt, Vec::new(), None).unwrap()
    }

    /// Another client (plain HTTP, its own client id) queues a prompt; returns its prompt id.
    fn other_client_submits(&self, prompt: Value) -> String {
        let url = format!("{}/prompt", self.sim.url());
        let body = json!({"prompt": prompt, "client_id": "someone-else"});
        let answer: Value = self.rt.block_on(async {
            let resp = self.http.post(url).json(&body).send().await.unwrap();
            resp.json().await.unwrap()
        });
        answer["prompt_id"].as_str().unwrap().to_string()
    }

    fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.sim.url());
        self.rt
            .block_on(async { self.http.get(url).send().await.unwrap().json().await.unwrap() })
    }

    /// The server's history entry of a prompt once it ended (bounded).
    fn history(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let h = self.get(&format!("/history/{id}"));
            if let Some(entry) = h.get(id) {
                return entry.clone();
            }
            assert!(Instant::now() < deadline, "{id} never ended on the server");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Requests the simulator received for `route` (without "/api"), by method.
    fn requests(&self, method: &str, route: &str) -> Vec<director_link::sim::RequestRecord> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.trim_start_matches("/api") == route)
            .collect()
    }

    fn posts_of(&self, prompt_id: &str) -> usize {
        self.requests("POST", "/prompt")
            .iter()
            .filter(|r| r.json.get("prompt_id").and_then(Value::as_str) == Some(prompt_id))
            .count()
    }

    fn requests_prefix(&self, method: &str, prefix: &str) -> Vec<director_link::sim::RequestRecord> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.trim_start_matches("/api").starts_with(prefix))
            .collect()
    }

    /// Waits (bounded) until the simulator has received a request whose path starts with `prefix`.
    fn wait_request_prefix(&mut self, method: &str, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.requests_prefix(method, prefix).is_empty() {
            assert!(
                Instant::now() < deadline,
                "no {method} {prefix}… arrived: {:?}",
                self.names()
            );
            self.pump(Duration::from_millis(10));
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.hub.close();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn invert_prompt(color: u64) -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "dl_test/hub"}},
    })
}

/// `seconds` of node time (a fifth of it on the simulator's clock here), interruptible every 0.1 s.
fn slow_prompt(seconds: f64, nonce: u64) -> Value {
    json!({"20": {"class_type": "AcceptanceSlow", "inputs": {"seconds": seconds, "nonce": nonce}}})
}

/// The completed job's one file, checked against the server's own copy.
fn assert_one_file_like_the_server(rig: &Rig, end: &EventKind) {
    let EventKind::JobCompleted { outputs, .. } = end else {
        panic!("not completed: {end:?}");
    };
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    let out = &outputs[0];
    let ours = std::fs::read(&out.path).unwrap();
    let theirs = std::fs::read(rig.sim.output_dir().join(&out.subfolder).join(&out.filename)).unwrap();
    assert!(ours == theirs && !ours.is_empty(), "the saved file is the server's");
    let saved: Vec<_> = std::fs::read_dir(out.path.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .collect();
    assert_eq!(saved.len(), 1, "saved once, no partial or duplicate file: {saved:?}");
}

/// Race B of issue 13: a job that finished on the server whose results were being fetched when the server went
/// away failed `connection_failed` — a lost job, although it ran and its file is still there. Now the fetch is
/// tried again when the link is back. Deterministic: the simulator holds `/view` until the restart cuts it.
#[test]
fn results_whose_download_meets_a_restart_are_fetched_when_the_server_is_back() {
    let mut rig = Rig::new("fetch", "0.3.64");
    rig.sim.hold_answers("/view");
    let job = rig.submit(invert_prompt(0x123456));
    rig.wait_request_prefix("GET", "/view");
    rig.sim.restart(0.3).unwrap();
    let end = rig.terminal(&job);
    assert_one_file_like_the_server(&rig, &end);
    assert!(
        rig.requests("GET", "/view").len() >= 2,
        "fetched again after the restart"
    );
    assert_eq!(rig.posts_of(&job), 1, "the job ran once: it is not sent again");
    assert!(
        rig.hub.service(&rig.name).unwrap().drops >= 1,
        "the restart was noticed"
    );
}

/// The same when the job's file list is asked of `/history` (a prompt without files: the actor checks that no
/// file message was missed): the lookup meets the restart, the restarted server knows no history, and the job
/// completes with what its messages said — it is neither lost nor failed `connection_failed`.
#[test]
fn a_history_lookup_that_meets_a_restart_is_not_a_lost_job() {
    let mut rig = Rig::new("history", "0.3.64");
    rig.sim.hold_answers("/history/");
    let job = rig.submit(slow_prompt(0.0, 7));
    rig.wait_request_prefix("GET", "/history/");
    rig.sim.restart(0.3).unwrap();
    match rig.terminal(&job) {
        EventKind::JobCompleted { outputs, ui, .. } => {
            assert!(outputs.is_empty(), "{outputs:?}");
            assert!(ui.get("20").is_some(), "the node's text output is kept: {ui}");
        }
        other => panic!("the job ran; it must complete: {other:?}"),
    }
    assert!(rig.requests_prefix("GET", "/history/").len() >= 2, "looked up again");
    assert_eq!(rig.posts_of(&job), 1);
}

/// The simulator's old-server mode is really dangerous: before 0.3.57 `/interrupt` ignores its `prompt_id` and
/// stops whatever runs; from 0.3.57 on it stops only the prompt it names.
#[test]
fn an_old_server_interrupts_whatever_runs_a_new_one_only_the_named_prompt() {
    for (version, stopped) in [("0.3.56", true), ("0.3.64", false)] {
        let rig = Rig::new(&format!("proof-{}", version.replace('.', "")), version);
        assert_eq!(rig.hub.service(&rig.name).unwrap().version.as_deref(), Some(version));
        let theirs = rig.other_client_submits(slow_prompt(3.0, 1));
        let deadline = Instant::now() + Duration::from_secs(20);
        while rig.sim.stats().running.as_deref() != Some(theirs.as_str()) {
            assert!(Instant::now() < deadline, "their prompt never ran");
            std::thread::sleep(Duration::from_millis(10));
        }
        let url = format!("{}/interrupt", rig.sim.url());
        rig.rt.block_on(async {
            let r = rig
                .http
                .post(url)
                .json(&json!({"prompt_id": "not-the-running-one"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        });
        let status = rig.history(&theirs)["status"]["status_str"].clone();
        let expected = if stopped { "error" } else { "success" };
        assert_eq!(status, json!(expected), "ComfyUI {version}");
    }
}

/// Section 3 of issue 13, on both kinds of server: cancelling our queued job removes it from the queue and never
/// interrupts; cancelling our running job interrupts only after the queue showed it running, and the other
/// client's prompts (running before ours, queued after ours) still complete.
#[test]
fn cancel_never_stops_another_clients_job_on_old_or_new_servers() {
    for version in ["0.3.56", "0.3.64"] {
        let mut rig = Rig::new(&format!("cancel-{}", version.replace('.', "")), version);
        let targeted = version == "0.3.64";

        // Theirs runs; ours waits behind it. Cancel ours: a queue delete, no interrupt at all.
        let theirs_first = rig.other_client_submits(slow_prompt(3.0, 2));
        let queued = rig.submit(slow_prompt(200.0, 3));
        rig.until(
            "ours queued",
            |e| matches!(e, EventKind::JobQueued { job_id, .. } if *job_id == queued),
        );
        rig.hub.cancel(&queued).unwrap();
        assert!(
            matches!(rig.terminal(&queued), EventKind::JobCancelled { .. }),
            "{version}"
        );
        assert!(
            rig.requests("POST", "/interrupt").is_empty(),
            "{version}: a queued job is never interrupted"
        );
        let deletes = rig.requests("POST", "/queue");
        assert_eq!(deletes.len(), 1, "{version}: {deletes:?}");
        assert_eq!(deletes[0].json, json!({"delete": [queued]}));
        assert_eq!(
            rig.history(&theirs_first)["status"]["status_str"],
            json!("success"),
            "{version}: their running job completed"
        );
        assert!(
            rig.get(&format!("/history/{queued}")).get(&queued).is_none(),
            "{version}: the removed job never ran"
        );

        // Ours runs; theirs waits behind it. Cancel ours: one interrupt, ours stops, theirs still runs.
        let running = rig.submit(slow_prompt(200.0, 4));
        rig.until(
            "ours running",
            |e| matches!(e, EventKind::NodeStarted { job_id, .. } if *job_id == running),
        );
        let theirs_next = rig.other_client_submits(slow_prompt(1.0, 5));
        rig.hub.cancel(&running).unwrap();
        assert!(
            matches!(rig.terminal(&running), EventKind::JobCancelled { .. }),
            "{version}"
        );
        assert_eq!(
            rig.history(&theirs_next)["status"]["status_str"],
            json!("success"),
            "{version}: the next client's job ran to its end"
        );
        let interrupts = rig.requests("POST", "/interrupt");
        assert_eq!(interrupts.len(), 1, "{version}: {interrupts:?}");
        assert_eq!(interrupts[0].json, json!({"prompt_id": running}), "{version}");
        // On the old server the interrupt came after a look at the queue (and was confirmed by another).
        let log = rig.sim.requests();
        let at = log
            .iter()
            .position(|r| r.method == "POST" && r.path.ends_with("/interrupt"))
            .unwrap();
        let looked_before = log[..at]
            .iter()
            .rev()
            .take(2)
            .any(|r| r.method == "GET" && r.path.ends_with("/queue"));
        assert!(looked_before, "{version}: the queue was read right before interrupting");
        if !targeted {
            assert!(
                log[at..]
                    .iter()
                    .any(|r| r.method == "GET" && r.path.ends_with("/queue")),
                "{version}: the queue was read again to confirm"
            );
        }
    }
}

/// A POST whose answer is lost on the way (the server queued the prompt) is looked up, not sent again, and the
/// job runs exactly once.
#[test]
fn a_submission_whose_answer_is_lost_is_looked_up_not_sent_again() {
    let mut rig = Rig::new("lost-post", "0.3.64");
    rig.sim.hold_answers("/prompt");
    // Two seconds of node time: still running when the lookup is answered, so the lookup (not a message) is
    // what shows the prompt arrived.
    let job = rig.submit(slow_prompt(2.0, 12));
    rig.wait_request_prefix("POST", "/prompt");
    rig.sim.cut_answers();
    let end = rig.terminal(&job);
    assert!(matches!(end, EventKind::JobCompleted { .. }), "{end:?}");
    assert_eq!(rig.posts_of(&job), 1, "looked up, not sent again");
    assert!(
        !rig.requests_prefix("GET", &format!("/history/{job}")).is_empty(),
        "the server was asked about it"
    );
    assert_eq!(rig.sim.stats().prompts_received, 1, "it ran once");
}

/// The lost job behind issue 13's chaos run: a POST answered only after the socket was replaced. The reconnect's
/// resync skipped the job (its answer was still awaited), its messages went to no socket, and the late answer
/// left it queued forever. Now a late answer is followed by a look at the server. Deterministic: the answer is
/// held while the socket is cut and the prompt ends, and released after the reconnect.
#[test]
fn a_post_answered_after_a_reconnect_is_followed_up() {
    let mut rig = Rig::new("late-answer", "0.3.64");
    rig.sim.hold_answers("/prompt");
    let job = rig.submit(slow_prompt(1.0, 11));
    rig.wait_request_prefix("POST", "/prompt");
    rig.sim.refuse_connections(1.0).unwrap();
    rig.sim.drop_sockets();
    // The prompt ends on the server while no socket of ours is open.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rig.sim.stats().prompts_executed < 1 {
        assert!(Instant::now() < deadline, "the prompt never ended");
        rig.pump(Duration::from_millis(10));
    }
    rig.wait_state(ServiceState::Reconnecting);
    rig.wait_state(ServiceState::Connected);
    rig.sim.release_answers();
    match rig.terminal(&job) {
        EventKind::JobCompleted { ui, .. } => assert!(ui.get("20").is_some(), "{ui}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rig.posts_of(&job), 1);
}

/// Submissions that meet a dropped socket or a stalled server are posted once and complete: neither a drop nor
/// a stall fails a job.
#[test]
fn submissions_that_meet_a_drop_or_a_stall_are_posted_once_and_complete() {
    let mut rig = Rig::new("drop-stall", "0.3.64");
    rig.sim.drop_sockets();
    let after_drop = rig.submit(invert_prompt(1));
    // Stalled for longer than two heartbeats: the actor drops the socket while the POST waits for its answer.
    rig.sim.stall(1.5).unwrap();
    let in_stall = rig.submit(invert_prompt(2));
    for job in [&after_drop, &in_stall] {
        let end = rig.terminal(job);
        assert!(matches!(end, EventKind::JobCompleted { .. }), "{end:?}");
        assert_eq!(rig.posts_of(job), 1, "posted once");
    }
    assert_eq!(rig.sim.stats().prompts_received, 2);
}

/// The rare hang of issue 13's long chaos runs (2 in ~1 500): a job queued forever after a reconnect. ComfyUI
/// (and the simulator) unregister a socket by client id when it closes, so an old socket whose close the server
/// handles after our new socket registered takes the new one's registration with it: the socket stays open and
/// answers pings, but no message of our jobs reaches it. Now, with jobs in flight and nothing heard for three
/// heartbeats, the actor looks at the queue, follows up the jobs that moved on unheard, and connects again.
/// Deterministic: `forget_sockets` leaves exactly that state behind.
#[test]
fn a_deaf_socket_does_not_leave_jobs_queued_forever() {
    let mut rig = Rig::new("deaf", "0.3.64");
    rig.sim.forget_sockets();
    let first = rig.submit(invert_prompt(0x010203));
    let end = rig.terminal(&first);
    assert_one_file_like_the_server(&rig, &end);
    assert_eq!(rig.posts_of(&first), 1, "followed up, not sent again");
    let service = rig.hub.service(&rig.name).unwrap();
    assert!(service.drops >= 1, "the deaf socket was replaced: {service:?}");
    // The new socket hears again: a second job's messages arrive (it starts and reports its node).
    let second = rig.submit(slow_prompt(0.5, 21));
    let end = rig.terminal(&second);
    assert!(matches!(end, EventKind::JobCompleted { .. }), "{end:?}");
    let started = rig
        .events
        .iter()
        .any(|e| matches!(e, EventKind::JobStarted { job_id, .. } if *job_id == second));
    assert!(started, "heard the second job start: {:?}", rig.names());
}

/// A queued job's place follows the queue: `job().queue_position` (what `snapshot()`, the add-on and the studio
/// server show) was the place the job had when it was queued, so the next job to run still read "3rd in line".
/// Now the actor reads the queue again when its length changes.
#[test]
fn a_queued_jobs_place_moves_up_as_the_jobs_ahead_end() {
    let mut rig = Rig::new("places", "0.3.64");
    let first = rig.submit(slow_prompt(60.0, 1));
    let second = rig.submit(slow_prompt(60.0, 2));
    let third = rig.submit(slow_prompt(60.0, 3));
    let place = |rig: &Rig, id: &str| rig.hub.job(id).and_then(|j| j.queue_position);
    rig.until(
        "the first job to start",
        |e| matches!(e, EventKind::JobStarted { job_id, .. } if job_id == &first),
    );
    rig.until(
        "the third job to be queued",
        |e| matches!(e, EventKind::JobQueued { job_id, .. } if job_id == &third),
    );
    assert!(matches!(place(&rig, &third), Some(1 | 2)), "{:?}", rig.hub.job(&third));
    rig.hub.cancel(&first).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while place(&rig, &third) != Some(0) {
        assert!(
            Instant::now() < deadline,
            "third after the first ended: {:?}",
            rig.hub.job(&third)
        );
        rig.pump(Duration::from_millis(20));
    }
    assert_eq!(place(&rig, &second), None, "the second runs now: no place");
    rig.hub.cancel(&second).unwrap();
    rig.hub.cancel(&third).unwrap();
    rig.terminal(&third);
}
