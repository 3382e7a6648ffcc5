//! The prompt executor: one prompt at a time in heap order, ComfyUI 0.3.64's message sequence
//! (`execution.PromptExecutor.execute_async` + `main.prompt_worker`), the per-node output cache, progress
//! state, previews and cooperative interrupts.
use super::image::{contain, encode_jpeg, encode_png, resize};
use super::nodes::{self, Args, Val};
use super::pyjson;
use super::state::{heappop, ClientId, QueueItem, Shared, Target};
use super::validate::{class_inputs, is_output_node};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;

/// A node's outputs as kept in the cache, with its UI (`{"meta": .., "output": ..}`) if it had one.
#[derive(Clone)]
pub(crate) struct CachedNode {
    pub outputs: Arc<Vec<Val>>,
    pub ui: Option<Value>,
}

/// ComfyUI's "classic" cache: node outputs by input signature, and node objects by (id, class).
#[derive(Default)]
pub(crate) struct ExecCache {
    pub outputs: HashMap<String, CachedNode>,
    /// PreviewImage's random `_temp_xxxxx` prefix lives on the node object.
    pub objects: HashMap<(String, String), String>,
}

/// Why a node stopped.
pub(crate) enum Failure {
    Interrupted,
    Error {
        kind: String,
        message: String,
        traceback: Vec<String>,
    },
}

impl Failure {
    pub fn new(kind: &str, message: impl Into<String>) -> Failure {
        Failure::Error {
            kind: kind.to_string(),
            message: message.into(),
            traceback: Vec::new(),
        }
    }
}

/// A preview handed to the progress hook: `("JPEG"|"PNG", image, max_size)`.
pub(crate) struct Preview {
    pub png: bool,
    pub w: u32,
    pub h: u32,
    pub rgb: Vec<f32>,
    pub max_size: Option<u32>,
}

#[derive(Clone, Copy, PartialEq)]
enum NodeState {
    Pending,
    Running,
    Finished,
}

struct NodeProgress {
    state: NodeState,
    value: Value,
    max: Value,
}

/// `comfy_execution.progress` registry: every node touched so far, in first-touch order.
#[derive(Default)]
struct ProgressRegistry {
    nodes: Vec<(String, NodeProgress)>,
}

impl ProgressRegistry {
    fn entry(&mut self, id: &str) -> &mut NodeProgress {
        let pos = match self.nodes.iter().position(|(n, _)| n == id) {
            Some(p) => p,
            None => {
                self.nodes.push((
                    id.to_string(),
                    NodeProgress {
                        state: NodeState::Pending,
                        value: json!(0),
                        max: json!(1),
                    },
                ));
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[pos].1
    }

    fn start(&mut self, id: &str) {
        let e = self.entry(id);
        e.state = NodeState::Running;
        e.value = json!(0.0);
        e.max = json!(1.0);
    }

    fn update(&mut self, id: &str, value: Value, max: Value) {
        let e = self.entry(id);
        e.state = NodeState::Running;
        e.value = value;
        e.max = max;
    }

    fn finish(&mut self, id: &str) {
        let e = self.entry(id);
        e.state = NodeState::Finished;
        e.value = e.max.clone();
    }

    fn message(&self, prompt_id: &str) -> Value {
        let mut nodes = Map::new();
        for (id, p) in &self.nodes {
            if p.state == NodeState::Pending {
                continue;
            }
            let state = if p.state == NodeState::Running {
                "running"
            } else {
                "finished"
            };
            nodes.insert(
                id.clone(),
                json!({
                    "value": p.value, "max": p.max, "state": state, "node_id": id, "prompt_id": prompt_id,
                    "display_node_id": id, "parent_node_id": null, "real_node_id": id,
                }),
            );
        }
        json!({"prompt_id": prompt_id, "nodes": nodes})
    }
}

pub(crate) fn timestamp_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One prompt's execution context.
pub(crate) struct RunCtx {
    pub shared: Arc<Shared>,
    pub prompt_id: String,
    pub client: ClientId,
    pub prompt: Map<String, Value>,
    pub extra_data: Value,
    progress: Mutex<ProgressRegistry>,
    messages: Mutex<Vec<Value>>,
}

impl RunCtx {
    /// `PromptExecutor.add_message`: stored for history, sent if there is a client (or `broadcast`).
    fn add_message(&self, event: &str, data: Value, broadcast: bool) {
        let mut data = data;
        if let Value::Object(m) = &mut data {
            m.insert("timestamp".into(), json!(timestamp_ms()));
        }
        self.messages.lock().push(json!([event, data]));
        if self.client.is_some() || broadcast {
            self.shared.inner.lock().send_json(self.client.target(), event, data);
        }
    }

    /// S/– messages (`if server.client_id is not None`).
    fn send_to_client(&self, event: &str, data: Value) {
        if self.client.is_some() {
            self.shared.inner.lock().send_json(self.client.target(), event, data);
        }
    }

    fn send_progress_state(&self) {
        if !self.shared.inner.lock().has_recipient(self.client.target()) {
            return;
        }
        let msg = self.progress.lock().message(&self.prompt_id);
        self.shared
            .inner
            .lock()
            .send_json(self.client.target(), "progress_state", msg);
    }

    pub fn check_interrupt(&self) -> Result<(), Failure> {
        if self.shared.interrupt.load(Ordering::SeqCst) {
            Err(Failure::Interrupted)
        } else {
            Ok(())
        }
    }
}

/// What a node sees of the executor.
pub(crate) struct NodeCtx<'a> {
    pub run: &'a RunCtx,
    pub node_id: &'a str,
    pub temp_prefix: String,
}

impl NodeCtx<'_> {
    /// Sleeps `seconds` of node time (scaled by `time_scale`); a stall pauses it.
    pub async fn sleep(&self, seconds: f64) {
        let real = (seconds * self.run.shared.cfg.time_scale).clamp(0.0, 3600.0);
        if real > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(real)).await;
        } else {
            tokio::task::yield_now().await;
        }
        self.run.shared.wait_not_stalled().await;
    }

    pub fn check_interrupt(&self) -> Result<(), Failure> {
        self.run.check_interrupt()
    }

    /// `send_progress_text(text, node_id)`: binary event 3, broadcast.
    pub fn progress_text(&self, text: &str) {
        let id = self.node_id.as_bytes();
        let mut frame = Vec::with_capacity(8 + id.len() + text.len());
        frame.extend(3u32.to_be_bytes());
        frame.extend((id.len() as u32).to_be_bytes());
        frame.extend(id);
        frame.extend(text.as_bytes());
        self.run.shared.inner.lock().send(Target::All, &Message::binary(frame));
    }

    /// `ProgressBar.update_absolute` through `main.hijack_progress` and the WebUI progress handler.
    pub async fn progress(&self, value: f64, total: f64, preview: Option<Preview>) -> Result<(), Failure> {
        self.run.shared.wait_not_stalled().await;
        self.check_interrupt()?;
        let value = value.min(total);
        let (v, t) = (num(value), num(total));
        let run = self.run;
        let encoded = preview.map(encode_preview);
        run.progress.lock().update(self.node_id, v.clone(), t.clone());
        let state = run.progress.lock().message(&run.prompt_id);
        let inner = run.shared.inner.lock();
        let target = run.client.target();
        inner.send_json(target, "progress_state", state);
        let with_meta = inner.supports_preview_metadata(&run.client);
        if let (Some(Some((png, bytes))), true) = (&encoded, with_meta) {
            let meta = json!({
                "node_id": self.node_id, "prompt_id": run.prompt_id, "display_node_id": self.node_id,
                "parent_node_id": null, "real_node_id": self.node_id,
                "image_type": if *png { "image/png" } else { "image/jpeg" },
            });
            let meta = pyjson::dumps(&meta).into_bytes();
            let mut frame = Vec::with_capacity(8 + meta.len() + bytes.len());
            frame.extend(4u32.to_be_bytes());
            frame.extend((meta.len() as u32).to_be_bytes());
            frame.extend(meta);
            frame.extend(bytes);
            inner.send(target, &Message::binary(frame));
        }
        inner.send_json(
            target,
            "progress",
            json!({"value": v, "max": t, "prompt_id": run.prompt_id, "node": self.node_id}),
        );
        if let (Some(Some((png, bytes))), false) = (&encoded, with_meta) {
            let mut frame = Vec::with_capacity(8 + bytes.len());
            frame.extend(1u32.to_be_bytes());
            frame.extend((if *png { 2u32 } else { 1u32 }).to_be_bytes());
            frame.extend(bytes);
            inner.send(target, &Message::binary(frame));
        }
        Ok(())
    }

    pub fn prompt(&self) -> &Map<String, Value> {
        &self.run.prompt
    }

    pub fn extra_data(&self) -> &Value {
        &self.run.extra_data
    }

    pub fn shared(&self) -> &Shared {
        &self.run.shared
    }
}

/// Integral values go out as ints (`5`), others as floats, like the Python nodes pass them.
fn num(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// JPEG (quality 95) or PNG bytes of a preview, resized like `ImageOps.contain`.
fn encode_preview(p: Preview) -> Option<(bool, Vec<u8>)> {
    let (w, h, rgb) = match p.max_size {
        Some(max) => {
            let (nw, nh) = contain(p.w, p.h, max.clamp(1, 4096));
            (nw, nh, resize(&p.rgb, p.w, p.h, 3, nw, nh))
        }
        None => (p.w, p.h, p.rgb),
    };
    let bytes = super::image::rgb8(&rgb);
    let out = if p.png {
        encode_png(w, h, &bytes, png::ColorType::Rgb, &[])
    } else {
        encode_jpeg(w, h, &bytes, 95)
    };
    match out {
        Ok(b) => Some((p.png, b)),
        Err(e) => {
            log::warn!("simulator: preview encoding failed: {e}");
            None
        }
    }
}

fn is_link(v: &Value) -> Option<(&str, &Value)> {
    let a = v.as_array()?;
    if a.len() != 2 || !a[1].is_number() {
        return None;
    }
    Some((a[0].as_str()?, &a[1]))
}

/// Cache key: class, `IS_CHANGED`, node id for `UNIQUE_ID` nodes, and inputs with links replaced by the
/// upstream signature (`CacheKeySetInputSignature`).
fn signatures(shared: &Shared, prompt: &Map<String, Value>) -> HashMap<String, String> {
    fn sig(
        shared: &Shared,
        prompt: &Map<String, Value>,
        id: &str,
        memo: &mut HashMap<String, String>,
        depth: usize,
    ) -> String {
        if let Some(s) = memo.get(id) {
            return s.clone();
        }
        let node = prompt.get(id);
        let class = node.and_then(|n| n.get("class_type")).cloned().unwrap_or(Value::Null);
        let spec = class.as_str().and_then(|c| shared.object_info.get(c));
        let mut parts = vec![class.clone()];
        if class.as_str() == Some("LoadImage") || class.as_str() == Some("LoadImageMask") {
            // IS_CHANGED: the file's hash.
            let name = node
                .and_then(|n| n.get("inputs"))
                .and_then(|i| i.get("image"))
                .map(pyjson::py_str);
            let hash = name
                .and_then(|n| super::validate::annotated_path(&n, &shared.dirs))
                .and_then(|p| std::fs::read(p).ok())
                .map(|b| format!("{:x}", Sha256::digest(&b)))
                .unwrap_or_default();
            parts.push(json!(hash));
        }
        let unique = spec
            .and_then(|s| s.get("input"))
            .and_then(|i| i.get("hidden"))
            .and_then(Value::as_object)
            .is_some_and(|h| h.values().any(|v| v == "UNIQUE_ID" || v == &json!(["UNIQUE_ID"])));
        if unique {
            parts.push(json!(id));
        }
        if let Some(Value::Object(inputs)) = node.and_then(|n| n.get("inputs")) {
            let mut keys: Vec<&String> = inputs.keys().collect();
            keys.sort();
            for k in keys {
                let v = &inputs[k];
                match is_link(v) {
                    Some((src, slot)) if prompt.contains_key(src) && depth < 1000 => {
                        let up = sig(shared, prompt, src, memo, depth + 1);
                        parts.push(json!([k, "ANCESTOR", up, slot]));
                    }
                    _ => parts.push(json!([k, v])),
                }
            }
        }
        // Hashed, so a node's key does not grow with (or re-escape) its whole upstream chain.
        let s = format!("{:x}", Sha256::digest(pyjson::dumps(&parts).as_bytes()));
        memo.insert(id.to_string(), s.clone());
        s
    }
    let mut memo = HashMap::new();
    for id in prompt.keys() {
        sig(shared, prompt, id, &mut memo, 0);
    }
    memo
}

/// `comfy_execution.graph.ExecutionList`: pending nodes with block counts and the UX-friendly pick.
struct ExecList<'a> {
    prompt: &'a Map<String, Value>,
    shared: &'a Shared,
    cached: &'a HashSet<String>,
    pending: Vec<String>,
    block_count: HashMap<String, usize>,
    blocking: HashMap<String, Vec<String>>,
}

impl<'a> ExecList<'a> {
    fn add_node(&mut self, start: &str) {
        let mut stack = vec![start.to_string()];
        let mut links: Vec<(String, String)> = Vec::new();
        for _ in 0..100_000 {
            let Some(id) = stack.pop() else { break };
            if self.pending.contains(&id) {
                continue;
            }
            self.pending.push(id.clone());
            self.block_count.insert(id.clone(), 0);
            self.blocking.insert(id.clone(), Vec::new());
            if let Some(Value::Object(inputs)) = self.prompt.get(&id).and_then(|n| n.get("inputs")) {
                for v in inputs.values() {
                    if let Some((src, _)) = is_link(v) {
                        if !self.prompt.contains_key(src) {
                            continue;
                        }
                        if !self.cached.contains(src) {
                            stack.push(src.to_string());
                        }
                        links.push((src.to_string(), id.clone()));
                    }
                }
            }
        }
        for (from, to) in links {
            if self.cached.contains(&from) {
                continue;
            }
            let Some(list) = self.blocking.get_mut(&from) else {
                continue;
            };
            if !list.contains(&to) {
                list.push(to.clone());
                *self.block_count.entry(to).or_insert(0) += 1;
            }
        }
    }

    fn is_output(&self, id: &str) -> bool {
        let class = self
            .prompt
            .get(id)
            .and_then(|n| n.get("class_type"))
            .and_then(Value::as_str);
        class
            .and_then(|c| self.shared.object_info.get(c))
            .and_then(Value::as_object)
            .is_some_and(is_output_node)
    }

    /// `None` when done; `Err` on a cycle.
    fn stage(&self) -> Option<Result<String, ()>> {
        if self.pending.is_empty() {
            return None;
        }
        let ready: Vec<&String> = self
            .pending
            .iter()
            .filter(|n| self.block_count.get(*n) == Some(&0))
            .collect();
        if ready.is_empty() {
            return Some(Err(()));
        }
        let blocked = |n: &String| self.blocking.get(n).cloned().unwrap_or_default();
        if let Some(n) = ready.iter().find(|n| self.is_output(n)) {
            return Some(Ok((*n).clone()));
        }
        if let Some(n) = ready.iter().find(|n| blocked(n).iter().any(|b| self.is_output(b))) {
            return Some(Ok((*n).clone()));
        }
        if let Some(n) = ready
            .iter()
            .find(|n| blocked(n).iter().any(|b| blocked(b).iter().any(|c| self.is_output(c))))
        {
            return Some(Ok((*n).clone()));
        }
        Some(Ok(ready[0].clone()))
    }

    fn complete(&mut self, id: &str) {
        self.pending.retain(|n| n != id);
        for b in self.blocking.remove(id).unwrap_or_default() {
            if let Some(c) = self.block_count.get_mut(&b) {
                *c = c.saturating_sub(1);
            }
        }
    }
}

/// `format_value` for `current_inputs`.
fn format_value(v: &Val) -> Value {
    match v {
        Val::None => Value::Null,
        Val::Json(j @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_))) => j.clone(),
        Val::Json(other) => json!(pyjson::py_repr(other)),
        Val::Image(img) => json!(img.describe()),
        Val::Mask(m) => json!(m.describe()),
        Val::Opaque(o) => json!(o.describe()),
        Val::Int(i) => json!(i),
        Val::Str(s) => json!(s),
    }
}

struct RunState {
    /// Outputs of the nodes run (or replayed) so far; cached upstream nodes are looked up by signature.
    values: HashMap<String, Arc<Vec<Val>>>,
    sigs: HashMap<String, String>,
    executed: Vec<String>,
    ui_outputs: Map<String, Value>,
}

/// Gathers a node's inputs (`get_input_data`): links, literals for declared inputs, hidden values.
fn gather_inputs(run: &RunCtx, id: &str, st: &RunState) -> Args {
    let mut args = Args::default();
    let node = run.prompt.get(id);
    let class = node
        .and_then(|n| n.get("class_type"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let spec = run.shared.object_info.get(class).and_then(Value::as_object);
    let declared: Vec<String> = spec
        .map(|s| class_inputs(s).into_iter().map(|(n, ..)| n).collect())
        .unwrap_or_default();
    if let Some(Value::Object(inputs)) = node.and_then(|n| n.get("inputs")) {
        for (name, v) in inputs {
            if let Some((src, slot)) = is_link(v) {
                let idx = slot.as_u64().unwrap_or(0) as usize;
                let outs = st.values.get(src).cloned().or_else(|| {
                    let sig = st.sigs.get(src)?;
                    run.shared
                        .inner
                        .lock()
                        .cache
                        .outputs
                        .get(sig)
                        .map(|c| c.outputs.clone())
                });
                let val = outs.and_then(|o| o.get(idx).cloned()).unwrap_or(Val::None);
                args.set(name, val);
            } else if declared.contains(name) {
                args.set(name, Val::Json(v.clone()));
            }
        }
    }
    if let Some(hidden) = spec
        .and_then(|s| s.get("input"))
        .and_then(|i| i.get("hidden"))
        .and_then(Value::as_object)
    {
        for (name, kind) in hidden {
            let kind = kind
                .as_str()
                .or_else(|| kind.get(0).and_then(Value::as_str))
                .unwrap_or_default();
            match kind {
                "UNIQUE_ID" => args.set(name, Val::Str(id.to_string())),
                "PROMPT" => args.set(name, Val::Json(Value::Object(run.prompt.clone()))),
                "EXTRA_PNGINFO" => {
                    if let Some(info) = run.extra_data.get("extra_pnginfo") {
                        args.set(name, Val::Json(info.clone()));
                    }
                }
                _ => {}
            }
        }
    }
    args
}

enum NodeOutcome {
    Done,
    Failed {
        node_id: String,
        failure: Failure,
        inputs: Value,
    },
}

async fn execute_node(run: &RunCtx, id: &str, sig: &str, st: &mut RunState) -> NodeOutcome {
    let class = run
        .prompt
        .get(id)
        .and_then(|n| n.get("class_type"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let cached = run.shared.inner.lock().cache.outputs.get(sig).cloned();
    if let Some(hit) = cached {
        if run.client.is_some() {
            let output = hit
                .ui
                .as_ref()
                .and_then(|u| u.get("output"))
                .cloned()
                .unwrap_or(Value::Null);
            run.send_to_client(
                "executed",
                json!({"node": id, "display_node": id, "output": output, "prompt_id": run.prompt_id}),
            );
            if let Some(ui) = &hit.ui {
                st.ui_outputs.insert(id.to_string(), ui.clone());
            }
        }
        run.progress.lock().finish(id);
        run.send_progress_state();
        st.values.insert(id.to_string(), hit.outputs);
        return NodeOutcome::Done;
    }

    run.progress.lock().start(id);
    run.send_progress_state();
    let args = gather_inputs(run, id, st);
    if run.client.is_some() {
        let mut inner = run.shared.inner.lock();
        inner.last_node_id = Some(id.to_string());
        inner.send_json(
            run.client.target(),
            "executing",
            json!({"node": id, "display_node": id, "prompt_id": run.prompt_id}),
        );
    }
    let temp_prefix = {
        let mut inner = run.shared.inner.lock();
        inner
            .cache
            .objects
            .entry((id.to_string(), class.clone()))
            .or_insert_with(random_suffix)
            .clone()
    };
    let ctx = NodeCtx {
        run,
        node_id: id,
        temp_prefix,
    };
    // `before_node_execution()`: the interrupt flag is checked once the node is announced.
    let result = match ctx.check_interrupt() {
        Ok(()) => nodes::run(&class, &args, &ctx).await,
        Err(f) => Err(f),
    };
    match result {
        Ok(res) => {
            let ui = res.ui.filter(|u| !u.is_empty()).map(|output| {
                json!({
                    "meta": {"node_id": id, "display_node": id, "parent_node": null, "real_node_id": id},
                    "output": output,
                })
            });
            if let Some(ui) = &ui {
                st.ui_outputs.insert(id.to_string(), ui.clone());
                run.send_to_client(
                    "executed",
                    json!({"node": id, "display_node": id, "output": ui["output"], "prompt_id": run.prompt_id}),
                );
            }
            let outputs = Arc::new(res.outputs);
            run.shared.inner.lock().cache.outputs.insert(
                sig.to_string(),
                CachedNode {
                    outputs: outputs.clone(),
                    ui,
                },
            );
            st.values.insert(id.to_string(), outputs);
            run.progress.lock().finish(id);
            run.send_progress_state();
            st.executed.push(id.to_string());
            NodeOutcome::Done
        }
        Err(failure) => {
            let inputs: Map<String, Value> = args
                .iter()
                .map(|(k, v)| (k.clone(), json!([format_value(v)])))
                .collect();
            NodeOutcome::Failed {
                node_id: id.to_string(),
                failure,
                inputs: Value::Object(inputs),
            }
        }
    }
}

/// `"ComfyUI_temp_" + 5 letters` (the alphabet is ComfyUI's, typo included).
fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstupvxyz";
    let mut rng = rand::rng();
    let s: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("_temp_{s}")
}

struct RunResult {
    success: bool,
    messages: Vec<Value>,
    outputs: Map<String, Value>,
    meta: Map<String, Value>,
}

async fn run_prompt(run: &RunCtx, item: &QueueItem) -> RunResult {
    run.shared.interrupt.store(false, Ordering::SeqCst);
    run.add_message("execution_start", json!({"prompt_id": run.prompt_id}), false);

    let sigs = signatures(&run.shared, &run.prompt);
    let cached: HashSet<String> = {
        let mut inner = run.shared.inner.lock();
        let keep: HashSet<&String> = sigs.values().collect();
        inner.cache.outputs.retain(|k, _| keep.contains(k));
        let ids: HashSet<(String, String)> = run
            .prompt
            .iter()
            .map(|(id, n)| {
                (
                    id.clone(),
                    n.get("class_type")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        inner.cache.objects.retain(|k, _| ids.contains(k));
        run.prompt
            .keys()
            .filter(|id| sigs.get(*id).is_some_and(|s| inner.cache.outputs.contains_key(s)))
            .cloned()
            .collect()
    };
    let cached_list: Vec<&String> = run.prompt.keys().filter(|k| cached.contains(*k)).collect();
    run.add_message(
        "execution_cached",
        json!({"nodes": cached_list, "prompt_id": run.prompt_id}),
        false,
    );

    let mut list = ExecList {
        prompt: &run.prompt,
        shared: &run.shared,
        cached: &cached,
        pending: Vec::new(),
        block_count: HashMap::new(),
        blocking: HashMap::new(),
    };
    for o in &item.outputs {
        if run.prompt.contains_key(o) {
            list.add_node(o);
        }
    }
    let mut st = RunState {
        values: HashMap::new(),
        sigs: sigs.clone(),
        executed: Vec::new(),
        ui_outputs: Map::new(),
    };
    let mut success = true;
    for _ in 0..=run.prompt.len() * 2 + 1 {
        let Some(staged) = list.stage() else { break };
        let outcome = match staged {
            Ok(id) => {
                let sig = sigs.get(&id).cloned().unwrap_or_default();
                let out = execute_node(run, &id, &sig, &mut st).await;
                if matches!(out, NodeOutcome::Done) {
                    list.complete(&id);
                }
                out
            }
            Err(()) => NodeOutcome::Failed {
                node_id: list.pending.first().cloned().unwrap_or_default(),
                failure: Failure::Error {
                    kind: "graph.DependencyCycleError".into(),
                    message: "Dependency cycle detected".into(),
                    traceback: Vec::new(),
                },
                inputs: json!([]),
            },
        };
        if let NodeOutcome::Failed {
            node_id,
            failure,
            inputs,
        } = outcome
        {
            success = false;
            handle_error(run, &node_id, failure, inputs, &st);
            break;
        }
    }
    if success {
        run.add_message("execution_success", json!({"prompt_id": run.prompt_id}), false);
    }
    run.shared.inner.lock().last_node_id = None;
    let mut outputs = Map::new();
    let mut meta = Map::new();
    for (id, ui) in &st.ui_outputs {
        outputs.insert(id.clone(), ui.get("output").cloned().unwrap_or(Value::Null));
        meta.insert(id.clone(), ui.get("meta").cloned().unwrap_or(Value::Null));
    }
    RunResult {
        success,
        messages: std::mem::take(&mut *run.messages.lock()),
        outputs,
        meta,
    }
}

/// `PromptExecutor.handle_execution_error`.
fn handle_error(run: &RunCtx, node_id: &str, failure: Failure, inputs: Value, st: &RunState) {
    let class = run
        .prompt
        .get(node_id)
        .and_then(|n| n.get("class_type"))
        .cloned()
        .unwrap_or(Value::Null);
    match failure {
        Failure::Interrupted => run.add_message(
            "execution_interrupted",
            json!({"prompt_id": run.prompt_id, "node_id": node_id, "node_type": class, "executed": st.executed}),
            true,
        ),
        Failure::Error {
            kind,
            message,
            traceback,
        } => {
            let traceback = if traceback.is_empty() {
                vec![format!(
                    "  File \"director_link/sim/nodes.rs\", in {}\n    raise {kind}({})\n",
                    pyjson::py_str(&class),
                    pyjson::str_repr(&message)
                )]
            } else {
                traceback
            };
            let current_outputs: Vec<&String> = run.prompt.keys().collect();
            run.add_message(
                "execution_error",
                json!({
                    "prompt_id": run.prompt_id, "node_id": node_id, "node_type": class, "executed": st.executed,
                    "exception_message": format!("{message}\n"), "exception_type": kind, "traceback": traceback,
                    "current_inputs": inputs, "current_outputs": current_outputs,
                }),
                false,
            );
        }
    }
}

/// Extra-data keys ComfyUI keeps out of history.
const SENSITIVE_KEYS: [&str; 2] = ["auth_token_comfy_org", "api_key_comfy_org"];

/// `prompt_worker`: forever take the next prompt, run it, file the history entry.
pub(crate) async fn executor_loop(shared: Arc<Shared>) {
    loop {
        shared.wait_not_stalled().await;
        let next = {
            let mut inner = shared.inner.lock();
            match heappop(&mut inner.queue) {
                Some(item) => {
                    inner.running = Some(item.clone());
                    inner.queue_updated();
                    inner.client_id = ClientId::from_extra(&item.extra_data);
                    Some((item, inner.epoch))
                }
                None => None,
            }
        };
        let Some((item, epoch)) = next else {
            tokio::select! {
                _ = shared.queue_notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        };
        let run = RunCtx {
            shared: shared.clone(),
            prompt_id: item.prompt_id.clone(),
            client: ClientId::from_extra(&item.extra_data),
            prompt: item.prompt.clone(),
            extra_data: item.extra_data.clone(),
            progress: Mutex::new(ProgressRegistry::default()),
            messages: Mutex::new(Vec::new()),
        };
        let result = tokio::select! {
            r = run_prompt(&run, &item) => Some(r),
            // A restart makes the running prompt vanish without another word.
            _ = shared.epoch_changed(epoch) => None,
        };
        let Some(result) = result else { continue };
        let mut inner = shared.inner.lock();
        if inner.epoch != epoch {
            continue;
        }
        inner.running = None;
        let mut extra = item.extra_data.clone();
        if let Value::Object(m) = &mut extra {
            for k in SENSITIVE_KEYS {
                m.remove(k);
            }
        }
        let stored = QueueItem {
            extra_data: extra,
            ..item.clone()
        };
        let entry = json!({
            "prompt": stored.to_json(),
            "outputs": result.outputs,
            "status": {
                "status_str": if result.success { "success" } else { "error" },
                "completed": result.success,
                "messages": result.messages,
            },
            "meta": result.meta,
        });
        inner.add_history(item.prompt_id.clone(), entry);
        inner.queue_updated();
        shared.counters.prompts_executed.fetch_add(1, Ordering::SeqCst);
        if run.client.is_some() {
            inner.send_json(
                run.client.target(),
                "executing",
                json!({"node": null, "prompt_id": item.prompt_id}),
            );
        }
    }
}
