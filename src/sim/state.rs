//! Shared simulator state: the prompt queue (a Python-`heapq` clone), history, the socket registry with
//! ComfyUI's one-socket-per-clientId semantics, message routing, and the stall/restart signals.
use super::exec::ExecCache;
use super::pyjson;
use super::SimConfig;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering as AtOrd};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch, Notify};
use tokio_tungstenite::tungstenite::Message;

/// History entries kept (`MAXIMUM_HISTORY_SIZE` in ComfyUI).
const MAX_HISTORY: usize = 10_000;
/// Request-log entries kept; older ones are dropped so a long benchmark cannot grow memory without bound.
const MAX_REQUEST_LOG: usize = 100_000;

/// A queue priority: the server counter (int) or a client-given `number` (always a Python float).
#[derive(Debug, Clone, Copy)]
pub(crate) enum QNum {
    Int(i64),
    Float(f64),
}

impl QNum {
    pub fn to_json(self) -> Value {
        match self {
            QNum::Int(i) => json!(i),
            QNum::Float(f) => serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
        }
    }

    fn cmp(self, other: QNum) -> Ordering {
        match (self, other) {
            (QNum::Int(a), QNum::Int(b)) => a.cmp(&b),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()).unwrap_or(Ordering::Equal),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            QNum::Int(i) => i as f64,
            QNum::Float(f) => f,
        }
    }
}

/// `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
#[derive(Debug, Clone)]
pub(crate) struct QueueItem {
    pub number: QNum,
    pub prompt_id: String,
    pub prompt: Map<String, Value>,
    pub extra_data: Value,
    pub outputs: Vec<String>,
}

impl QueueItem {
    pub fn to_json(&self) -> Value {
        json!([
            self.number.to_json(),
            self.prompt_id,
            self.prompt,
            self.extra_data,
            self.outputs
        ])
    }

    /// Python tuple order on `(number, prompt_id)` (later fields only matter for exact duplicates).
    fn lt(&self, other: &QueueItem) -> bool {
        match self.number.cmp(other.number) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => self.prompt_id < other.prompt_id,
        }
    }
}

// --- heapq, line by line, so `GET /queue` shows the same raw heap order as the real server ---

pub(crate) fn heappush(heap: &mut Vec<QueueItem>, item: QueueItem) {
    heap.push(item);
    let last = heap.len() - 1;
    siftdown(heap, 0, last);
}

pub(crate) fn heappop(heap: &mut Vec<QueueItem>) -> Option<QueueItem> {
    let last = heap.pop()?;
    if heap.is_empty() {
        return Some(last);
    }
    let top = std::mem::replace(&mut heap[0], last);
    siftup(heap, 0);
    Some(top)
}

pub(crate) fn heapify(heap: &mut [QueueItem]) {
    for i in (0..heap.len() / 2).rev() {
        siftup(heap, i);
    }
}

fn siftdown(heap: &mut [QueueItem], start: usize, mut pos: usize) {
    while pos > start {
        let parent = (pos - 1) >> 1;
        if heap[pos].lt(&heap[parent]) {
            heap.swap(pos, parent);
            pos = parent;
            continue;
        }
        break;
    }
}

fn siftup(heap: &mut [QueueItem], mut pos: usize) {
    let end = heap.len();
    let start = pos;
    let mut child = 2 * pos + 1;
    while child < end {
        let right = child + 1;
        if right < end && !heap[child].lt(&heap[right]) {
            child = right;
        }
        heap.swap(pos, child);
        pos = child;
        child = 2 * pos + 1;
    }
    siftdown(heap, start, pos);
}

/// The running prompt's `client_id` (`extra_data["client_id"]`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClientId {
    /// No client id: S/– messages go nowhere, S/B messages are broadcast.
    None,
    Sid(String),
    /// A non-string id (e.g. a number): matches no socket.
    Unroutable,
}

impl ClientId {
    pub fn from_extra(extra: &Value) -> ClientId {
        match extra.get("client_id") {
            None | Some(Value::Null) => ClientId::None,
            Some(Value::String(s)) => ClientId::Sid(s.clone()),
            Some(_) => ClientId::Unroutable,
        }
    }

    pub fn is_some(&self) -> bool {
        !matches!(self, ClientId::None)
    }

    /// `send_sync(event, data, client_id)`: `None` broadcasts.
    pub fn target(&self) -> Target<'_> {
        match self {
            ClientId::None => Target::All,
            ClientId::Sid(s) => Target::Sid(s),
            ClientId::Unroutable => Target::Nobody,
        }
    }
}

/// Where a message goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// Every registered socket (`sid=None`).
    All,
    /// The socket registered under this id, if any.
    Sid(&'a str),
    Nobody,
}

/// The registration `self.sockets[sid] = ws`.
pub(crate) struct SocketReg {
    pub tx: mpsc::UnboundedSender<Message>,
}

/// Every open WebSocket, registered or orphaned (for faults and stats).
pub(crate) struct ConnInfo {
    pub tx: mpsc::UnboundedSender<Message>,
    pub kill: Arc<Notify>,
    /// Messages still allowed before the TCP connection is cut; -1 = no limit.
    pub budget: Arc<AtomicI64>,
}

pub(crate) struct Inner {
    /// Bumped by `restart`: work begun under an older epoch must not touch the "new process".
    pub epoch: u64,
    pub number: i64,
    pub queue: Vec<QueueItem>,
    pub running: Option<QueueItem>,
    pub history: Map<String, Value>,
    pub sockets: HashMap<String, SocketReg>,
    pub sockets_meta: HashMap<String, Value>,
    pub conns: HashMap<u64, ConnInfo>,
    /// `server.client_id`: set when a prompt starts, kept after it ends (as in ComfyUI).
    pub client_id: ClientId,
    pub last_node_id: Option<String>,
    pub cache: ExecCache,
}

impl Inner {
    fn new() -> Inner {
        Inner {
            epoch: 0,
            number: 0,
            queue: Vec::new(),
            running: None,
            history: Map::new(),
            sockets: HashMap::new(),
            sockets_meta: HashMap::new(),
            conns: HashMap::new(),
            client_id: ClientId::None,
            last_node_id: None,
            cache: ExecCache::default(),
        }
    }

    pub fn send(&self, target: Target<'_>, msg: &Message) {
        match target {
            Target::All => {
                for reg in self.sockets.values() {
                    let _ = reg.tx.send(msg.clone());
                }
            }
            Target::Sid(sid) => {
                if let Some(reg) = self.sockets.get(sid) {
                    let _ = reg.tx.send(msg.clone());
                }
            }
            Target::Nobody => {}
        }
    }

    pub fn send_json(&self, target: Target<'_>, kind: &str, data: Value) {
        if self.has_recipient(target) {
            self.send(target, &json_message(kind, data));
        }
    }

    /// Whether a message to `target` would reach anyone (so unread messages are not even serialized).
    pub fn has_recipient(&self, target: Target<'_>) -> bool {
        match target {
            Target::All => !self.sockets.is_empty(),
            Target::Sid(sid) => self.sockets.contains_key(sid),
            Target::Nobody => false,
        }
    }

    pub fn queue_remaining(&self) -> usize {
        self.queue.len() + usize::from(self.running.is_some())
    }

    pub fn queue_info(&self) -> Value {
        json!({"exec_info": {"queue_remaining": self.queue_remaining()}})
    }

    /// `server.queue_updated()`: a `status` broadcast.
    pub fn queue_updated(&self) {
        self.send_json(Target::All, "status", json!({"status": self.queue_info()}));
    }

    /// `supports_feature(sockets_metadata, client_id, "supports_preview_metadata")`.
    pub fn supports_preview_metadata(&self, client: &ClientId) -> bool {
        let ClientId::Sid(sid) = client else { return false };
        self.sockets_meta
            .get(sid)
            .and_then(|m| m.get("feature_flags"))
            .and_then(|f| f.get("supports_preview_metadata"))
            == Some(&Value::Bool(true))
    }

    pub fn add_history(&mut self, prompt_id: String, entry: Value) {
        if self.history.len() > MAX_HISTORY && !self.history.contains_key(&prompt_id) {
            if let Some(first) = self.history.keys().next().cloned() {
                self.history.shift_remove(&first);
            }
        }
        // Re-inserting an existing id keeps its position, like a Python dict.
        self.history.insert(prompt_id, entry);
    }
}

/// `{"type": kind, "data": data}` as Python would serialize it.
pub(crate) fn json_message(kind: &str, data: Value) -> Message {
    Message::text(pyjson::dumps(&json!({"type": kind, "data": data})))
}

pub(crate) struct Dirs {
    pub root: PathBuf,
    pub input: PathBuf,
    pub output: PathBuf,
    pub temp: PathBuf,
}

impl Dirs {
    /// `folder_paths.get_directory_by_type`.
    pub fn by_type(&self, kind: &str) -> Option<&PathBuf> {
        match kind {
            "output" => Some(&self.output),
            "input" => Some(&self.input),
            "temp" => Some(&self.temp),
            _ => None,
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub ws_total: AtomicU64,
    pub http_total: AtomicU64,
    pub prompts_received: AtomicU64,
    pub prompts_executed: AtomicU64,
}

pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub dirs: Dirs,
    pub object_info: Map<String, Value>,
    pub inner: Mutex<Inner>,
    pub queue_notify: Notify,
    /// `nodes.interrupt_processing()`: checked cooperatively by the executor.
    pub interrupt: AtomicBool,
    pub epoch_tx: watch::Sender<u64>,
    pub stall_tx: watch::Sender<Option<Instant>>,
    /// Path prefixes whose answers wait (`hold_answers`) until `release_tx` changes or a restart cuts them.
    pub held_paths: Mutex<Vec<String>>,
    /// (generation, cut): bumped to let the held answers go — sent, or their connections closed unanswered.
    pub release_tx: watch::Sender<(u64, bool)>,
    pub requests: Mutex<Vec<super::RequestRecord>>,
    pub counters: Counters,
    pub next_conn_id: AtomicU64,
}

impl Shared {
    pub fn new(cfg: SimConfig, dirs: Dirs, object_info: Map<String, Value>) -> Shared {
        Shared {
            cfg,
            dirs,
            object_info,
            inner: Mutex::new(Inner::new()),
            queue_notify: Notify::new(),
            interrupt: AtomicBool::new(false),
            epoch_tx: watch::channel(0).0,
            stall_tx: watch::channel(None).0,
            held_paths: Mutex::new(Vec::new()),
            release_tx: watch::channel((0, false)).0,
            requests: Mutex::new(Vec::new()),
            counters: Counters::default(),
            next_conn_id: AtomicU64::new(1),
        }
    }

    pub fn stalled_until(&self) -> Option<Instant> {
        let until = *self.stall_tx.borrow();
        until.filter(|t| *t > Instant::now())
    }

    /// Returns once no stall is in effect (a stall can be extended while we wait).
    pub async fn wait_not_stalled(&self) {
        let mut rx = self.stall_tx.subscribe();
        for _ in 0..100_000 {
            let Some(until) = self.stalled_until() else { return };
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                _ = rx.changed() => {}
            }
        }
    }

    /// Resolves when `restart` moves past `epoch`.
    pub async fn epoch_changed(&self, epoch: u64) {
        let mut rx = self.epoch_tx.subscribe();
        // `wait_for` also sees a change that happened before we subscribed.
        if rx.wait_for(|e| *e != epoch).await.is_err() {
            // The sender lives as long as `Shared`, so this means shutdown: never resolve early.
            std::future::pending::<()>().await;
        }
    }

    /// Whether answers to `path` (as sent, "/api" or not) are held back now.
    pub fn answer_held(&self, path: &str) -> bool {
        let route = path.strip_prefix("/api").filter(|p| p.starts_with('/')).unwrap_or(path);
        self.held_paths.lock().iter().any(|p| route.starts_with(p.as_str()))
    }

    /// Lets every held answer go (sent, or `cut`: its connection closed without it) and holds no more.
    pub fn release_answers(&self, cut: bool) {
        self.held_paths.lock().clear();
        self.release_tx.send_modify(|(n, c)| {
            *n += 1;
            *c = cut;
        });
    }

    pub fn current_epoch(&self) -> u64 {
        self.inner.lock().epoch
    }

    pub fn log_request(&self, rec: super::RequestRecord) {
        let mut log = self.requests.lock();
        if log.len() >= MAX_REQUEST_LOG {
            log.remove(0);
        }
        log.push(rec);
    }

    /// Every open socket gets these frames (faults bypass the registry on purpose).
    pub fn send_to_all_conns(&self, msgs: &[Message]) {
        let inner = self.inner.lock();
        for conn in inner.conns.values() {
            for m in msgs {
                let _ = conn.tx.send(m.clone());
            }
        }
    }

    /// A fresh "process": queue, history, cache and sockets gone; open sockets are cut.
    pub fn reset_for_restart(&self) {
        let mut inner = self.inner.lock();
        inner.epoch += 1;
        let epoch = inner.epoch;
        inner.number = 0;
        inner.queue.clear();
        inner.running = None;
        inner.history.clear();
        inner.sockets.clear();
        inner.sockets_meta.clear();
        for conn in inner.conns.values() {
            conn.kill.notify_one();
        }
        inner.client_id = ClientId::None;
        inner.last_node_id = None;
        inner.cache = ExecCache::default();
        drop(inner);
        self.interrupt.store(false, AtOrd::SeqCst);
        // A fresh process is not stalled, and holds no answers (the held ones were cut with their connections).
        self.stall_tx.send_replace(None);
        self.held_paths.lock().clear();
        self.epoch_tx.send_replace(epoch);
    }

    /// Every registration `sockets[sid]` gone, the connections kept (see `Simulator::forget_sockets`).
    pub fn forget_sockets(&self) {
        let mut inner = self.inner.lock();
        inner.sockets.clear();
        inner.sockets_meta.clear();
    }

    pub fn drop_sockets_after(&self, n: u64) {
        let inner = self.inner.lock();
        for conn in inner.conns.values() {
            if n == 0 {
                conn.kill.notify_one();
            } else {
                conn.budget.store(i64::try_from(n).unwrap_or(i64::MAX), AtOrd::SeqCst);
            }
        }
    }
}
