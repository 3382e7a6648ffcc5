//! The Gradio wire format, 3.x to 6.x (`fixtures/gradio/<version>/`), read leniently: unknown keys are ignored,
//! `app_id` is a u64 that may not fit in i64, `api_name` is a string, null or false, and 3.x dependencies have no
//! `id` (their list position is the fn_index). Queue messages are parsed by their `msg` into a typed variant.
use serde::Deserialize;
use serde_json::{Map, Value};

/// How an app takes calls, from its `/config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Gradio 3.x: WebSocket `/queue/join` (no `protocol` key).
    Ws,
    /// `sse_v1` … `sse_v3` (4.9+): `POST queue/join` + one `GET queue/data` stream per session. v2+ sends
    /// generator diffs.
    Sse { diffs: bool },
    /// Obsolete `sse` (4.0–4.8) or an app without a queue: the synchronous routes only.
    Sync,
}

/// The parts of `GET /config` the client uses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub api_prefix: Option<String>,
    #[serde(default)]
    pub app_id: Option<Value>,
    #[serde(default)]
    pub enable_queue: Option<bool>,
    #[serde(default)]
    pub components: Vec<Component>,
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Component {
    #[serde(default)]
    pub id: Option<Value>,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub props: Value,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Dependency {
    /// The fn_index (4.x+); absent on 3.x.
    #[serde(default)]
    pub id: Option<Value>,
    /// A string, `null` or `false`.
    #[serde(default)]
    pub api_name: Value,
    /// `[[component_id, "click"], …]` (3.14: `[component_id, …]`).
    #[serde(default)]
    pub targets: Value,
    #[serde(default)]
    pub inputs: Vec<Value>,
    #[serde(default)]
    pub outputs: Vec<Value>,
    #[serde(default)]
    pub queue: Option<bool>,
    #[serde(default)]
    pub types: DependencyTypes,
    #[serde(default)]
    pub backend_fn: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct DependencyTypes {
    #[serde(default)]
    pub generator: bool,
}

/// A value that is a number or a numeric string, as u64.
pub fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| n.to_string().parse().ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// One callable event, resolved from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub fn_index: u64,
    /// What the browser sends as `trigger_id` (`targets[0][0]`).
    pub trigger_id: Option<u64>,
    pub api_name: Option<String>,
    pub generator: bool,
    /// `queue: false` events are called over the synchronous route.
    pub queued: bool,
    /// The output components' types (`file`, `video`, `textbox`, …) and labels, in order.
    pub outputs: Vec<(String, Option<String>)>,
    pub inputs: usize,
    /// Positions of `gr.State` inputs: the server keeps their value per session, so its API page (and Gradio's
    /// own client) leaves them out, and callers do not pass them.
    pub state_inputs: Vec<usize>,
}

impl Endpoint {
    /// The inputs as the app wants them: a call that left out exactly the `gr.State` inputs (as the app's API page
    /// shows it) gets `null` in their places; any other count is sent as given (the app then names what is wrong).
    pub fn with_state_inputs(&self, mut data: Vec<Value>) -> Vec<Value> {
        if !self.state_inputs.is_empty() && data.len() + self.state_inputs.len() == self.inputs {
            for &at in &self.state_inputs {
                data.insert(at.min(data.len()), Value::Null);
            }
        }
        data
    }
}

impl Config {
    pub fn parse(body: &[u8]) -> Result<Config, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
        if !value.get("dependencies").is_some_and(Value::is_array)
            || !value.get("components").is_some_and(Value::is_array)
        {
            return Err("not a Gradio config (no components/dependencies)".into());
        }
        serde_json::from_value(value).map_err(|e| format!("unexpected Gradio config ({e})"))
    }

    pub fn app_id(&self) -> Option<u64> {
        self.app_id.as_ref().and_then(as_u64)
    }

    pub fn protocol(&self) -> Protocol {
        match self.protocol.as_deref() {
            None | Some("ws") => {
                if self.enable_queue == Some(false) {
                    Protocol::Sync
                } else {
                    Protocol::Ws
                }
            }
            Some("sse_v1") => Protocol::Sse { diffs: false },
            Some(p) if p.starts_with("sse_v") => Protocol::Sse { diffs: true },
            Some(_) => Protocol::Sync,
        }
    }

    /// "3.x" for WebSocket apps, else the `protocol` value.
    pub fn protocol_name(&self) -> &str {
        self.protocol.as_deref().unwrap_or("ws")
    }

    fn component(&self, id: &Value) -> Option<&Component> {
        let want = as_u64(id)?;
        self.components
            .iter()
            .find(|c| c.id.as_ref().and_then(as_u64) == Some(want))
    }

    fn endpoint_at(&self, position: usize) -> Option<Endpoint> {
        let dep = self.dependencies.get(position)?;
        let fn_index = dep.id.as_ref().and_then(as_u64).unwrap_or(position as u64);
        let trigger_id = match &dep.targets {
            Value::Array(t) => t.first().and_then(|first| match first {
                Value::Array(pair) => pair.first().and_then(as_u64),
                other => as_u64(other),
            }),
            _ => None,
        };
        let outputs = dep
            .outputs
            .iter()
            .map(|id| match self.component(id) {
                Some(c) => (
                    c.kind.clone(),
                    c.props.get("label").and_then(Value::as_str).map(str::to_string),
                ),
                None => (String::new(), None),
            })
            .collect();
        Some(Endpoint {
            fn_index,
            trigger_id,
            api_name: dep.api_name.as_str().map(str::to_string),
            generator: dep.types.generator,
            queued: dep.queue != Some(false) && self.enable_queue != Some(false),
            outputs,
            inputs: dep.inputs.len(),
            state_inputs: dep
                .inputs
                .iter()
                .enumerate()
                .filter(|(_, id)| self.component(id).is_some_and(|c| c.kind == "state"))
                .map(|(at, _)| at)
                .collect(),
        })
    }

    /// `api_name` (with or without its leading `/`) or `fn_index` → the event to call.
    pub fn resolve(&self, api_name: Option<&str>, fn_index: Option<u64>) -> Result<Endpoint, String> {
        if let Some(name) = api_name {
            let want = name.trim_start_matches('/');
            let position = self
                .dependencies
                .iter()
                .position(|d| d.api_name.as_str() == Some(want) && d.backend_fn != Some(false));
            return match position.and_then(|p| self.endpoint_at(p)) {
                Some(e) => Ok(e),
                None => {
                    let known: Vec<&str> = self
                        .dependencies
                        .iter()
                        .filter_map(|d| d.api_name.as_str())
                        .take(40)
                        .collect();
                    Err(format!(
                        "the app has no endpoint named {want:?}; it has: {}",
                        if known.is_empty() {
                            "none with a name (use fn_index)".to_string()
                        } else {
                            known.join(", ")
                        }
                    ))
                }
            };
        }
        let Some(index) = fn_index else {
            return Err("give api_name or fn_index".into());
        };
        let position = self
            .dependencies
            .iter()
            .enumerate()
            .position(|(i, d)| d.id.as_ref().and_then(as_u64).unwrap_or(i as u64) == index);
        position.and_then(|p| self.endpoint_at(p)).ok_or_else(|| {
            format!(
                "the app has no fn_index {index} (it has {} events)",
                self.dependencies.len()
            )
        })
    }
}

/// One level of `progress_data`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ProgressUnit {
    #[serde(default)]
    pub index: Option<f64>,
    #[serde(default)]
    pub length: Option<f64>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub progress: Option<f64>,
    #[serde(default)]
    pub desc: Option<String>,
}

/// A queue message (SSE `data:` or 3.x WebSocket frame), by its `msg`.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    SendHash,
    SendData,
    QueueFull,
    Estimation {
        event_id: Option<String>,
        rank: Option<u64>,
        queue_size: Option<u64>,
        rank_eta: Option<f64>,
    },
    ProcessStarts {
        event_id: Option<String>,
        eta: Option<f64>,
    },
    Progress {
        event_id: Option<String>,
        units: Vec<ProgressUnit>,
    },
    Log {
        event_id: Option<String>,
        log: String,
        level: String,
        title: Option<String>,
    },
    /// `process_generating` / `process_streaming`: `output.data` is full values (first one, and always on 3.x)
    /// or diffs.
    Generating {
        event_id: Option<String>,
        output: Value,
    },
    Completed {
        event_id: Option<String>,
        output: Value,
        success: bool,
        title: Option<String>,
    },
    Heartbeat,
    CloseStream,
    UnexpectedError {
        message: String,
        session_not_found: bool,
    },
    /// A `msg` this client does not know (kept for the log).
    Other(String),
}

fn opt_str(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn opt_f64(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

impl Message {
    /// Parses one message; `Err` when it is not a JSON object with a `msg`.
    pub fn parse(text: &str) -> Result<Message, String> {
        let v: Value = serde_json::from_str(text).map_err(|_| {
            let short: String = text.chars().take(80).collect();
            format!("not a JSON message: {short:?}")
        })?;
        Message::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<Message, String> {
        let msg = v
            .get("msg")
            .and_then(Value::as_str)
            .ok_or("a message without \"msg\"")?;
        let event_id = opt_str(v, "event_id");
        Ok(match msg {
            "send_hash" => Message::SendHash,
            "send_data" => Message::SendData,
            "queue_full" => Message::QueueFull,
            "estimation" => Message::Estimation {
                event_id,
                rank: v.get("rank").and_then(as_u64),
                queue_size: v.get("queue_size").and_then(as_u64),
                rank_eta: opt_f64(v, "rank_eta"),
            },
            "process_starts" => Message::ProcessStarts {
                event_id,
                eta: opt_f64(v, "eta"),
            },
            "progress" => Message::Progress {
                event_id,
                units: v
                    .get("progress_data")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|u| serde_json::from_value(u.clone()).ok())
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            "log" => Message::Log {
                event_id,
                log: opt_str(v, "log").unwrap_or_default(),
                level: opt_str(v, "level").unwrap_or_else(|| "info".into()),
                title: opt_str(v, "title"),
            },
            "process_generating" | "process_streaming" => Message::Generating {
                event_id,
                output: v.get("output").cloned().unwrap_or(Value::Null),
            },
            "process_completed" => Message::Completed {
                event_id,
                output: v.get("output").cloned().unwrap_or(Value::Null),
                success: v.get("success").and_then(Value::as_bool).unwrap_or(false),
                title: opt_str(v, "title"),
            },
            "heartbeat" => Message::Heartbeat,
            "close_stream" => Message::CloseStream,
            "unexpected_error" => Message::UnexpectedError {
                message: opt_str(v, "message").unwrap_or_else(|| "no details".into()),
                session_not_found: v.get("session_not_found").and_then(Value::as_bool).unwrap_or(false),
            },
            other => Message::Other(other.to_string()),
        })
    }

    pub fn event_id(&self) -> Option<&str> {
        match self {
            Message::Estimation { event_id, .. }
            | Message::ProcessStarts { event_id, .. }
            | Message::Progress { event_id, .. }
            | Message::Log { event_id, .. }
            | Message::Generating { event_id, .. }
            | Message::Completed { event_id, .. } => event_id.as_deref(),
            _ => None,
        }
    }
}

/// What a progress message means for a progress bar: (value, max, text). `progress(0.3)` gives (0.3, 1.0);
/// `progress((i, n))` gives (i, n). The innermost level with numbers wins; `desc` texts are joined outer → inner.
pub fn progress_of(units: &[ProgressUnit]) -> Option<(f64, f64, Option<String>)> {
    let numbered = units.iter().rev().find_map(|u| match (u.index, u.length, u.progress) {
        (Some(i), Some(n), _) if n > 0.0 => Some((i, n)),
        (_, _, Some(p)) => Some((p, 1.0)),
        (Some(i), None, None) => Some((i, 0.0)),
        _ => None,
    });
    let texts: Vec<&str> = units
        .iter()
        .filter_map(|u| u.desc.as_deref())
        .filter(|d| !d.trim().is_empty())
        .collect();
    let text = (!texts.is_empty()).then(|| texts.join(" / "));
    match numbered {
        Some((v, m)) => Some((v, m, text)),
        None if text.is_some() => Some((0.0, 0.0, text)),
        None => None,
    }
}

/// The user-facing text of a failed `process_completed` (or a sync route's `{"error": …}`): 4.x and 3.x quote
/// `gr.Error` text as JSON (one layer is removed); `null` means the app hides its errors.
pub fn error_text(output: &Value, top_title: Option<&str>) -> String {
    let message = match output.get("error") {
        Some(Value::String(s)) => unquote(s),
        Some(Value::Null) | None => {
            return "the app raised an error and hides its message (show_error=False); see the server's console"
                .to_string()
        }
        Some(other) => other.to_string(),
    };
    let title = output
        .get("title")
        .and_then(Value::as_str)
        .or(top_title)
        .filter(|t| !t.is_empty() && *t != "Error");
    match title {
        Some(t) => format!("{t}: {message}"),
        None => message,
    }
}

/// `"\"msg\""` → `msg` (one layer of JSON quoting), anything else as it is.
pub fn unquote(s: &str) -> String {
    let t = s.trim();
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        if let Ok(inner) = serde_json::from_str::<String>(t) {
            return inner;
        }
        return t[1..t.len() - 1].to_string();
    }
    s.to_string()
}

/// Applies one output's edits `[[action, path, value], …]` (`gradio_client.utils.apply_diff`).
pub fn apply_diff(value: &Value, diff: &Value) -> Result<Value, String> {
    let edits = diff.as_array().ok_or("a diff is not a list of edits")?;
    let mut out = value.clone();
    for edit in edits {
        // `[action, path, value]`; a `delete` may come without its (null) value.
        let parts = edit
            .as_array()
            .filter(|p| p.len() == 3 || p.len() == 2)
            .ok_or("an edit is not [action, path, value]")?;
        let action = parts[0].as_str().ok_or("an edit's action is not a string")?;
        let path = parts[1].as_array().ok_or("an edit's path is not a list")?;
        apply_edit(&mut out, path, action, parts.get(2).cloned().unwrap_or(Value::Null))?;
    }
    Ok(out)
}

fn append(target: &mut Value, value: Value) -> Result<(), String> {
    match (target, value) {
        (Value::String(a), Value::String(b)) => a.push_str(&b),
        (Value::Array(a), Value::Array(b)) => a.extend(b),
        (t @ Value::Null, v) => *t = v,
        (t, v) => return Err(format!("cannot append {v} to {t}")),
    }
    Ok(())
}

fn index_of(key: &Value, len: usize, inserting: bool) -> Result<usize, String> {
    let i = as_u64(key).ok_or_else(|| format!("{key} is not a list index"))? as usize;
    if i < len || (inserting && i == len) {
        Ok(i)
    } else {
        Err(format!("list index {i} out of range ({len} items)"))
    }
}

fn child<'a>(current: &'a mut Value, key: &Value) -> Result<&'a mut Value, String> {
    match current {
        Value::Array(a) => {
            let i = index_of(key, a.len(), false)?;
            Ok(&mut a[i])
        }
        Value::Object(o) => {
            let k = key.as_str().map(str::to_string).unwrap_or_else(|| key.to_string());
            o.get_mut(&k).ok_or_else(|| format!("no key {k:?}"))
        }
        other => Err(format!("cannot index into {other}")),
    }
}

fn apply_edit(target: &mut Value, path: &[Value], action: &str, value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return match action {
            "replace" => {
                *target = value;
                Ok(())
            }
            "append" => append(target, value),
            other => Err(format!("edit {other:?} needs a path")),
        };
    };
    let mut current = target;
    for key in parents {
        current = child(current, key)?;
    }
    match action {
        "replace" => *child(current, last)? = value,
        "append" => append(child(current, last)?, value)?,
        "add" => match current {
            Value::Array(a) => {
                let i = index_of(last, a.len(), true)?;
                a.insert(i, value);
            }
            Value::Object(o) => {
                let k = last.as_str().map(str::to_string).unwrap_or_else(|| last.to_string());
                o.insert(k, value);
            }
            other => return Err(format!("cannot add into {other}")),
        },
        "delete" => match current {
            Value::Array(a) => {
                let i = index_of(last, a.len(), false)?;
                a.remove(i);
            }
            Value::Object(o) => {
                let k = last.as_str().map(str::to_string).unwrap_or_else(|| last.to_string());
                o.shift_remove(&k);
            }
            other => return Err(format!("cannot delete from {other}")),
        },
        other => return Err(format!("unknown edit {other:?}")),
    }
    Ok(())
}

/// A file the server refers to in an output.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRef {
    /// The server path (4.x+ `path`, 3.x `name`): what the download URL is built from.
    pub path: String,
    pub orig_name: Option<String>,
}

/// A 4.x+ FileData (`path` plus `meta._type == "gradio.FileData"`, or `url`/`orig_name`) or a 3.x file dict
/// (`name` with `is_file: true`).
pub fn file_ref(v: &Map<String, Value>) -> Option<FileRef> {
    let orig_name = v.get("orig_name").and_then(Value::as_str).map(str::to_string);
    if let Some(path) = v.get("path").and_then(Value::as_str) {
        let tagged = v
            .get("meta")
            .and_then(|m| m.get("_type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t == "gradio.FileData");
        if tagged || v.contains_key("url") || v.contains_key("orig_name") {
            return Some(FileRef {
                path: path.to_string(),
                orig_name,
            });
        }
    }
    if v.get("is_file").and_then(Value::as_bool) == Some(true) {
        if let Some(name) = v.get("name").and_then(Value::as_str) {
            return Some(FileRef {
                path: name.to_string(),
                orig_name,
            });
        }
    }
    None
}

/// Every file in a value, depth first (a gallery, a `{"video": …, "subtitles": …}` pair, nested lists).
pub fn files_in(value: &Value, out: &mut Vec<FileRef>) {
    match value {
        Value::Object(o) => match file_ref(o) {
            Some(f) => out.push(f),
            None => o.values().for_each(|v| files_in(v, out)),
        },
        Value::Array(a) => a.iter().for_each(|v| files_in(v, out)),
        _ => {}
    }
}
