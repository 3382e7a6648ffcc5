//! The HTTP routes of ComfyUI's `server.py` (each also under `/api`), the origin-check middleware and
//! aiohttp's 404/405 behaviour.
use super::files;
use super::http::{percent_decode, Request, Response};
use super::pyjson::{py_str, py_truthy};
use super::state::{heapify, heappush, QNum, QueueItem, Shared};
use super::validate::{validate_prompt, Partial, PromptCheck, Specs};
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;

pub(crate) enum Dispatch {
    Reply(Response),
    WebSocket,
}

fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h == "::1" || h.starts_with("127.")
}

/// `(hostname, port)` of `host[:port]` (IPv6 in brackets).
fn split_host(s: &str) -> (String, Option<String>) {
    let s = s.to_ascii_lowercase();
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            return (h.to_string(), tail.strip_prefix(':').map(str::to_string));
        }
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p.to_string())),
        _ => (s, None),
    }
}

/// `create_origin_only_middleware`: a loopback Host with a foreign Origin is refused.
fn origin_refused(req: &Request) -> bool {
    let (Some(host), Some(origin)) = (req.header("host"), req.header("origin")) else {
        return false;
    };
    let netloc = origin.split_once("://").map(|(_, r)| r).unwrap_or("");
    let netloc = netloc.split('/').next().unwrap_or("").to_ascii_lowercase();
    let (host_name, host_port) = split_host(host);
    let (origin_name, origin_port) = split_host(&netloc);
    if !is_loopback_host(&host_name) {
        return false;
    }
    // Python drops the port on one side when the other has none.
    let host_cmp = if origin_port.is_none() {
        host_name.clone()
    } else {
        host.to_ascii_lowercase()
    };
    let origin_cmp = if host_port.is_none() { origin_name } else { netloc };
    !host_cmp.is_empty() && !origin_cmp.is_empty() && host_cmp != origin_cmp
}

const MODEL_FOLDERS: [&str; 20] = [
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
];

pub(crate) fn dispatch(shared: &Shared, req: &Request) -> Dispatch {
    if origin_refused(req) {
        return Dispatch::Reply(Response::empty(403));
    }
    if req.method == "OPTIONS" {
        return Dispatch::Reply(Response::empty(200));
    }
    let path = req.path.as_str();
    let route = path.strip_prefix("/api").filter(|p| p.starts_with('/')).unwrap_or(path);
    let get = req.method == "GET" || req.method == "HEAD";
    let post = req.method == "POST";
    let reply = |r: Response| Dispatch::Reply(r);
    match route {
        "/ws" if get => {
            if super::ws::is_upgrade(req) {
                Dispatch::WebSocket
            } else {
                reply(super::ws::not_an_upgrade())
            }
        }
        "/prompt" if get => reply(Response::json(200, &shared.inner.lock().queue_info())),
        "/prompt" if post => reply(post_prompt(shared, req)),
        "/queue" if get => reply(get_queue(shared)),
        "/queue" if post => reply(post_queue(shared, req)),
        "/interrupt" if post => reply(post_interrupt(shared, req)),
        "/history" if get => reply(get_history(shared, req)),
        "/history" if post => reply(post_history(shared, req)),
        "/free" if post => reply(post_free(shared, req)),
        "/system_stats" if get => reply(Response::json(200, &system_stats(&shared.cfg.comfyui_version))),
        "/features" if get => reply(Response::json(200, &super::ws::server_features(shared))),
        "/object_info" if get => reply(Response::json(200, &Value::Object(object_info(shared)))),
        "/view" if get => reply(files::view(shared, req)),
        "/upload/image" if post => reply(files::upload(shared, req, false)),
        "/upload/mask" if post => reply(files::upload(shared, req, true)),
        "/embeddings" | "/extensions" if get => reply(Response::json(200, &json!([]))),
        "/models" if get => reply(Response::json(200, &json!(MODEL_FOLDERS))),
        "/users" if get => reply(Response::json(200, &json!({"storage": "server", "migrated": true}))),
        "/settings" if get => reply(Response::json(200, &json!({}))),
        "/" if get && path == "/" => reply(Response::bytes(
            200,
            "text/html",
            b"<!doctype html><title>Director Link simulator</title><p>A ComfyUI 0.3.64 protocol simulator.</p>"
                .to_vec(),
        )),
        _ => {
            if let Some(id) = route.strip_prefix("/history/") {
                if get {
                    let id = percent_decode(id, false);
                    let inner = shared.inner.lock();
                    let mut out = Map::new();
                    if let Some(entry) = inner.history.get(&id) {
                        out.insert(id, entry.clone());
                    }
                    return reply(Response::json(200, &Value::Object(out)));
                }
                return reply(method_not_allowed("GET"));
            }
            if let Some(class) = route.strip_prefix("/object_info/") {
                if get {
                    let class = percent_decode(class, false);
                    let info = object_info(shared);
                    let mut out = Map::new();
                    if let Some(spec) = info.get(&class) {
                        out.insert(class, spec.clone());
                    }
                    return reply(Response::json(200, &Value::Object(out)));
                }
                return reply(method_not_allowed("GET"));
            }
            if let Some(folder) = route.strip_prefix("/models/") {
                return reply(if get && MODEL_FOLDERS.contains(&folder) {
                    Response::json(200, &json!([]))
                } else if get {
                    Response::empty(404)
                } else {
                    method_not_allowed("GET")
                });
            }
            let known_get = [
                "/prompt",
                "/queue",
                "/history",
                "/system_stats",
                "/features",
                "/object_info",
                "/view",
                "/ws",
            ];
            let known_post = [
                "/prompt",
                "/queue",
                "/interrupt",
                "/history",
                "/free",
                "/upload/image",
                "/upload/mask",
            ];
            if known_get.contains(&route) || known_post.contains(&route) {
                let mut allow = Vec::new();
                if known_get.contains(&route) {
                    allow.push("GET");
                    allow.push("HEAD");
                }
                if known_post.contains(&route) {
                    allow.push("POST");
                }
                return reply(method_not_allowed(&allow.join(",")));
            }
            reply(Response::not_found())
        }
    }
}

fn method_not_allowed(allow: &str) -> Response {
    Response::text(405, "405: Method Not Allowed").with_header("Allow", allow)
}

/// The core schemas, with LoadImage's file list taken from the simulator's input folder.
fn object_info(shared: &Shared) -> Map<String, Value> {
    let mut info = shared.object_info.clone();
    let mut files: Vec<String> = std::fs::read_dir(&shared.dirs.input)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for class in ["LoadImage", "LoadImageMask"] {
        if let Some(slot) = info
            .get_mut(class)
            .and_then(|c| c.pointer_mut("/input/required/image/0"))
        {
            *slot = json!(files);
        }
    }
    info
}

fn system_stats(version: &str) -> Value {
    const RAM: u64 = 8 * 1024 * 1024 * 1024;
    json!({
        "system": {
            "os": "posix",
            "ram_total": RAM,
            "ram_free": RAM / 2,
            "comfyui_version": version,
            "required_frontend_version": "1.27.10",
            "installed_templates_version": "0.1.95",
            "required_templates_version": "0.1.95",
            "python_version": "3.11.7 (Director Link simulator)",
            "pytorch_version": "2.8.0+cpu",
            "embedded_python": false,
            "argv": ["director-link-simulator"],
        },
        "devices": [{
            "name": "cpu", "type": "cpu", "index": null,
            "vram_total": RAM, "vram_free": RAM / 2, "torch_vram_total": RAM, "torch_vram_free": RAM / 2,
        }],
    })
}

fn number_value(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `server.post_prompt`.
fn post_prompt(shared: &Shared, req: &Request) -> Response {
    let Some(body) = req.json() else {
        return Response::server_error();
    };
    let no_prompt = || {
        Response::json(
            400,
            &json!({"error": {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided", "extra_info": {}}, "node_errors": {}}),
        )
    };
    let data = match &body {
        Value::Object(m) => m,
        // `"number" in [...]` / `in "..."` work in Python; the counter still advances.
        Value::Array(_) | Value::String(_) => {
            shared.inner.lock().number += 1;
            return no_prompt();
        }
        _ => return Response::server_error(),
    };
    let number = match data.get("number") {
        Some(n) => match number_value(n) {
            Some(f) if f.is_finite() => QNum::Float(f),
            _ => return Response::server_error(),
        },
        None => {
            let mut inner = shared.inner.lock();
            let n = inner.number;
            inner.number += 1;
            if data.get("front").is_some_and(py_truthy) {
                QNum::Int(-n)
            } else {
                QNum::Int(n)
            }
        }
    };
    let Some(prompt) = data.get("prompt") else {
        return no_prompt();
    };
    let prompt_id = match data.get("prompt_id") {
        Some(v) => py_str(v),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let partial = match data.get("partial_execution_targets") {
        None | Some(Value::Null) => Partial::All,
        Some(Value::Array(a)) => Partial::List(a.clone()),
        Some(Value::String(s)) => Partial::Substr(s.clone()),
        Some(_) => return Response::server_error(),
    };
    let mut prompt = match prompt {
        Value::Object(m) => m.clone(),
        // Iterating an empty list/string finds no outputs; anything else raises in Python.
        Value::Array(a) if a.is_empty() => Map::new(),
        Value::String(s) if s.is_empty() => Map::new(),
        _ => return Response::server_error(),
    };
    let specs = Specs {
        info: &shared.object_info,
        dirs: &shared.dirs,
    };
    // Validation recurses along links like ComfyUI's; a roomy thread keeps deep prompts off our worker stacks.
    let check = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("dl-sim-validate".into())
            .stack_size(256 << 20)
            .spawn_scoped(scope, || validate_prompt(&mut prompt, &partial, &specs))
            .ok()
            .and_then(|h| h.join().ok())
    });
    let Some(check) = check else {
        return Response::server_error();
    };
    let mut extra_data = data.get("extra_data").cloned().unwrap_or_else(|| json!({}));
    if let Some(cid) = data.get("client_id") {
        match &mut extra_data {
            Value::Object(m) => {
                m.insert("client_id".into(), cid.clone());
            }
            _ => return Response::server_error(),
        }
    }
    match check {
        PromptCheck::Valid { outputs, node_errors } => {
            let item = QueueItem {
                number,
                prompt_id: prompt_id.clone(),
                prompt,
                extra_data,
                outputs,
            };
            {
                let mut inner = shared.inner.lock();
                heappush(&mut inner.queue, item);
                inner.queue_updated();
            }
            shared.counters.prompts_received.fetch_add(1, Ordering::SeqCst);
            shared.queue_notify.notify_one();
            Response::json(
                200,
                &json!({"prompt_id": prompt_id, "number": number.to_json(), "node_errors": node_errors}),
            )
        }
        PromptCheck::Invalid { error, node_errors } => {
            Response::json(400, &json!({"error": error, "node_errors": node_errors}))
        }
    }
}

fn get_queue(shared: &Shared) -> Response {
    let inner = shared.inner.lock();
    let running: Vec<Value> = inner.running.iter().map(QueueItem::to_json).collect();
    let pending: Vec<Value> = inner.queue.iter().map(QueueItem::to_json).collect();
    Response::json(200, &json!({"queue_running": running, "queue_pending": pending}))
}

/// `POST /queue`: `clear` wipes pending, `delete` removes pending ids (each removal broadcasts `status`).
fn post_queue(shared: &Shared, req: &Request) -> Response {
    let Some(Value::Object(data)) = req.json() else {
        return Response::server_error();
    };
    let mut inner = shared.inner.lock();
    if data.get("clear").is_some_and(py_truthy) {
        inner.queue.clear();
        inner.queue_updated();
    }
    if let Some(list) = data.get("delete") {
        let Some(ids) = list.as_array() else {
            return Response::server_error();
        };
        for id in ids {
            let Some(pos) = inner
                .queue
                .iter()
                .position(|item| Value::String(item.prompt_id.clone()) == *id)
            else {
                continue;
            };
            if inner.queue.len() == 1 {
                // `wipe_queue()` broadcasts, then `delete_queue_item` broadcasts again.
                inner.queue.clear();
                inner.queue_updated();
            } else {
                inner.queue.remove(pos);
                heapify(&mut inner.queue);
            }
            inner.queue_updated();
        }
    }
    Response::empty(200)
}

/// `POST /interrupt`: targeted only if that id is running; empty / `{}` / non-JSON is global. Before 0.3.57 the
/// body is ignored and every interrupt is global (`nodes.interrupt_processing()` whoever runs).
fn post_interrupt(shared: &Shared, req: &Request) -> Response {
    if !crate::comfy::protocol::supports_targeted_interrupt(&shared.cfg.comfyui_version) {
        shared.interrupt.store(true, Ordering::SeqCst);
        return Response::empty(200);
    }
    let data = if req.body.is_empty() {
        Some(json!({}))
    } else {
        Some(req.json().unwrap_or_else(|| json!({})))
    };
    let Some(Value::Object(data)) = data else {
        return Response::server_error();
    };
    let target = data.get("prompt_id").filter(|v| py_truthy(v));
    match target {
        Some(id) => {
            let running = shared.inner.lock().running.as_ref().map(|r| r.prompt_id.clone());
            if running.is_some_and(|r| Value::String(r) == *id) {
                shared.interrupt.store(true, Ordering::SeqCst);
            } else {
                log::debug!("simulator: prompt {} is not running, interrupt skipped", py_str(id));
            }
        }
        None => shared.interrupt.store(true, Ordering::SeqCst),
    }
    Response::empty(200)
}

fn get_history(shared: &Shared, req: &Request) -> Response {
    let parse = |name: &str| -> Result<Option<i64>, ()> {
        match req.query(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| ()),
        }
    };
    let (Ok(max_items), Ok(offset)) = (parse("max_items"), parse("offset")) else {
        return Response::server_error();
    };
    let inner = shared.inner.lock();
    let len = inner.history.len() as i64;
    let mut offset = offset.unwrap_or(-1);
    if offset < 0 {
        if let Some(m) = max_items {
            offset = len - m;
        }
    }
    let mut out = Map::new();
    for (i, (k, v)) in inner.history.iter().enumerate() {
        if i as i64 >= offset {
            out.insert(k.clone(), v.clone());
            if max_items.is_some_and(|m| out.len() as i64 >= m) {
                break;
            }
        }
    }
    Response::json(200, &Value::Object(out))
}

fn post_history(shared: &Shared, req: &Request) -> Response {
    let Some(Value::Object(data)) = req.json() else {
        return Response::server_error();
    };
    let mut inner = shared.inner.lock();
    if data.get("clear").is_some_and(py_truthy) {
        inner.history.clear();
    }
    if let Some(list) = data.get("delete") {
        let Some(ids) = list.as_array() else {
            return Response::server_error();
        };
        for id in ids {
            if let Some(id) = id.as_str() {
                inner.history.shift_remove(id);
            }
        }
    }
    Response::empty(200)
}

/// `POST /free`: `free_memory` also drops the execution cache.
fn post_free(shared: &Shared, req: &Request) -> Response {
    let Some(Value::Object(data)) = req.json() else {
        return Response::server_error();
    };
    if data.get("free_memory").is_some_and(py_truthy) {
        shared.inner.lock().cache = super::exec::ExecCache::default();
    }
    Response::empty(200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_rules() {
        let req = |host: &str, origin: &str| Request {
            method: "POST".into(),
            path: "/prompt".into(),
            query: vec![],
            headers: vec![("host".into(), host.into()), ("origin".into(), origin.into())],
            body: vec![],
            keep_alive: true,
        };
        assert!(origin_refused(&req("127.0.0.1:8188", "http://evil.example")));
        assert!(!origin_refused(&req("127.0.0.1:8188", "http://127.0.0.1:8188")));
        assert!(!origin_refused(&req("127.0.0.1:8188", "http://127.0.0.1")));
        assert!(!origin_refused(&req("example.com", "http://evil.example")));
    }
}
