//! `POST /prompt` validation, ported from ComfyUI 0.3.64 `execution.validate_prompt` / `validate_inputs`
//! against the node schemas in `object_info_core.json`: same error types, messages and quirks (coercion with
//! `int()`/`float()`, V3 COMBO unchecked, errors filed under the node that holds a bad link, ...).
use super::pyjson::{py_repr, py_str, py_truthy, str_repr, type_name};
use super::state::Dirs;
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

/// Link depth at which validation raises `RecursionError`, like Python's default recursion limit.
const MAX_DEPTH: usize = 900;

/// A Python exception raised while validating (becomes `exception_during_*validation`).
#[derive(Debug, Clone)]
pub(crate) struct PyExc {
    pub kind: &'static str,
    pub message: String,
}

impl PyExc {
    fn key_error(key: &Value) -> PyExc {
        PyExc {
            kind: "KeyError",
            message: py_repr(key),
        }
    }

    fn traceback(&self, func: &str) -> Value {
        json!([format!(
            "  File \"director_link/sim/validate.rs\", in {func}\n    ({}: {})\n",
            self.kind, self.message
        )])
    }
}

/// Which outputs `partial_execution_targets` selects.
pub(crate) enum Partial {
    All,
    /// A JSON list: membership.
    List(Vec<Value>),
    /// A string: Python's `x in "..."` is a substring test.
    Substr(String),
}

impl Partial {
    fn includes(&self, id: &str) -> bool {
        match self {
            Partial::All => true,
            Partial::List(items) => items.iter().any(|v| v.as_str() == Some(id)),
            Partial::Substr(s) => s.contains(id),
        }
    }
}

pub(crate) enum PromptCheck {
    Valid {
        outputs: Vec<String>,
        node_errors: Map<String, Value>,
    },
    Invalid {
        error: Value,
        node_errors: Map<String, Value>,
    },
}

fn prompt_error(kind: &str, message: &str, details: &str) -> Value {
    json!({"type": kind, "message": message, "details": details, "extra_info": {}})
}

/// The node schemas plus what `VALIDATE_INPUTS` needs (the input folder).
pub(crate) struct Specs<'a> {
    pub info: &'a Map<String, Value>,
    pub dirs: &'a Dirs,
}

impl<'a> Specs<'a> {
    pub fn class(&self, name: &Value) -> Option<&'a Map<String, Value>> {
        name.as_str().and_then(|n| self.info.get(n)).and_then(Value::as_object)
    }
}

/// A class's inputs in `input_order` (required, then optional), with `(type, extra_info)` and category.
pub(crate) fn class_inputs(spec: &Map<String, Value>) -> Vec<(String, Value, Value, &'static str)> {
    let mut out = Vec::new();
    for cat in ["required", "optional"] {
        let Some(group) = spec.get("input").and_then(|i| i.get(cat)).and_then(Value::as_object) else {
            continue;
        };
        let order: Vec<String> = spec
            .get("input_order")
            .and_then(|o| o.get(cat))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_else(|| group.keys().cloned().collect());
        let mut names: Vec<String> = order.into_iter().filter(|n| group.contains_key(n)).collect();
        for k in group.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
        for name in names {
            let info = group.get(&name).cloned().unwrap_or(Value::Null);
            let (kind, extra) = match info.as_array() {
                Some(a) => (
                    a.first().cloned().unwrap_or(Value::Null),
                    a.get(1).cloned().unwrap_or_else(|| json!({})),
                ),
                None => (Value::Null, json!({})),
            };
            out.push((name, kind, extra, cat));
        }
    }
    out
}

pub(crate) fn is_output_node(spec: &Map<String, Value>) -> bool {
    spec.get("output_node") == Some(&Value::Bool(true))
}

/// Inputs a class's `VALIDATE_INPUTS` takes (their min/max/list checks are skipped, as in ComfyUI).
fn custom_validated(class: &str) -> &'static [&'static str] {
    match class {
        "LoadImage" | "LoadImageMask" => &["image"],
        _ => &[],
    }
}

/// `folder_paths.annotated_filepath`: `"name [output]"` picks the folder.
pub(crate) fn annotated<'d>(name: &str, dirs: &'d Dirs) -> (String, Option<&'d PathBuf>) {
    for (suffix, dir) in [
        ("[output]", &dirs.output),
        ("[input]", &dirs.input),
        ("[temp]", &dirs.temp),
    ] {
        if let Some(stem) = name.strip_suffix(suffix) {
            let stem = stem.strip_suffix(' ').unwrap_or(stem);
            return (stem.to_string(), Some(dir));
        }
    }
    (name.to_string(), None)
}

/// `get_annotated_filepath(name)` (default folder: input), refusing paths that leave the folder.
pub(crate) fn annotated_path(name: &str, dirs: &Dirs) -> Option<PathBuf> {
    let (rel, base) = annotated(name, dirs);
    let base = base.unwrap_or(&dirs.input);
    join_inside(base, &rel)
}

/// `base/rel` if `rel` stays inside `base` (no `..`, no absolute parts).
pub(crate) fn join_inside(base: &Path, rel: &str) -> Option<PathBuf> {
    let rel_path = Path::new(rel);
    if rel_path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return None;
    }
    Some(base.join(rel_path))
}

/// Python `int(value)` of a JSON literal.
pub(crate) fn py_int(v: &Value) -> Result<Value, String> {
    match v {
        Value::Bool(b) => Ok(json!(i64::from(*b))),
        Value::Number(n) if super::pyjson::is_int_text(n) => Ok(v.clone()),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0).trunc();
            if f.abs() < 9.0e18 {
                Ok(json!(f as i64))
            } else {
                // Exact for the magnitudes JSON floats can hold well enough for a simulator.
                serde_json::from_str(&format!("{f:.0}")).map_err(|e| e.to_string())
            }
        }
        Value::String(s) => {
            let t = s.trim();
            let body = t.strip_prefix(['+', '-']).unwrap_or(t);
            let ok = !body.is_empty()
                && !body.starts_with('_')
                && !body.ends_with('_')
                && !body.contains("__")
                && body.chars().all(|c| c.is_ascii_digit() || c == '_');
            let digits: String = t.chars().filter(|c| *c != '_').collect();
            match (ok, serde_json::from_str::<Value>(digits.trim_start_matches('+'))) {
                (true, Ok(num @ Value::Number(_))) => Ok(num),
                _ => Err(format!("invalid literal for int() with base 10: {}", str_repr(s))),
            }
        }
        other => Err(format!(
            "int() argument must be a string, a bytes-like object or a real number, not '{}'",
            type_name(other)
        )),
    }
}

/// Python `float(value)` of a JSON literal (non-finite results are refused: JSON cannot carry them).
pub(crate) fn py_float(v: &Value) -> Result<Value, String> {
    let f = match v {
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => {
            let t: String = s.trim().chars().filter(|c| *c != '_').collect();
            t.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("could not convert string to float: {}", str_repr(s)))?
        }
        other => {
            return Err(format!(
                "float() argument must be a string or a real number, not '{}'",
                type_name(other)
            ))
        }
    };
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("cannot represent {f}"))
}

fn as_num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// Python `==` between JSON values (1 == 1.0 == True).
fn py_eq(a: &Value, b: &Value) -> bool {
    match (as_num(a), as_num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// `comfy_execution.validation.validate_node_input`.
fn types_compatible(received: &Value, expected: &Value) -> bool {
    if received == expected {
        return true;
    }
    let (Some(r), Some(e)) = (received.as_str(), expected.as_str()) else {
        return false;
    };
    let rs: HashSet<&str> = r.split(',').map(str::trim).collect();
    let es: HashSet<&str> = e.split(',').map(str::trim).collect();
    rs.contains("*") || es.contains("*") || rs.intersection(&es).next().is_some()
}

/// Python `tuple[index]` for a JSON index.
fn tuple_get<'v>(items: &'v [Value], index: &Value) -> Result<&'v Value, PyExc> {
    let i: i64 = match index {
        Value::Bool(b) => i64::from(*b),
        Value::Number(n) if super::pyjson::is_int_text(n) => n.as_i64().unwrap_or(i64::MAX),
        other => {
            return Err(PyExc {
                kind: "TypeError",
                message: format!("tuple indices must be integers or slices, not {}", type_name(other)),
            })
        }
    };
    let len = items.len() as i64;
    let pos = if i < 0 { i + len } else { i };
    usize::try_from(pos).ok().and_then(|p| items.get(p)).ok_or(PyExc {
        kind: "IndexError",
        message: "tuple index out of range".into(),
    })
}

struct Validator<'a, 's> {
    specs: &'a Specs<'s>,
    prompt: &'a mut Map<String, Value>,
    /// `validated`: insertion-ordered like the Python dict (node_errors follow this order).
    validated: Map<String, Value>,
    visiting: HashSet<String>,
}

fn result_of(v: &Value) -> (bool, Vec<Value>) {
    let ok = v.get(0).and_then(Value::as_bool).unwrap_or(false);
    let errs = v.get(1).and_then(Value::as_array).cloned().unwrap_or_default();
    (ok, errs)
}

impl Validator<'_, '_> {
    fn validate_inputs(&mut self, id: &str) -> Result<(bool, Vec<Value>), PyExc> {
        if let Some(done) = self.validated.get(id) {
            return Ok(result_of(done));
        }
        // Python gives up near 1000 frames; so do we (a long chain must not overflow our stack).
        if self.visiting.len() >= MAX_DEPTH || !self.visiting.insert(id.to_string()) {
            // A static cycle: Python recurses until it gives up.
            return Err(PyExc {
                kind: "RecursionError",
                message: "maximum recursion depth exceeded".into(),
            });
        }
        let res = self.validate_node(id);
        self.visiting.remove(id);
        let (ok, errors) = res?;
        self.validated.insert(id.to_string(), json!([ok, errors]));
        Ok((ok, errors))
    }

    fn validate_node(&mut self, id: &str) -> Result<(bool, Vec<Value>), PyExc> {
        let node = self.prompt.get(id).cloned().unwrap_or(Value::Null);
        let inputs = match node.get("inputs") {
            Some(Value::Object(m)) => m.clone(),
            Some(_) => Map::new(),
            None => return Err(PyExc::key_error(&json!("inputs"))),
        };
        let class_name = node.get("class_type").cloned().unwrap_or(Value::Null);
        let spec = self
            .specs
            .class(&class_name)
            .ok_or_else(|| PyExc::key_error(&class_name))?;
        let class_str = class_name.as_str().unwrap_or_default().to_string();
        let custom = custom_validated(&class_str);
        let mut errors: Vec<Value> = Vec::new();
        let mut valid = true;

        for (x, input_type, extra, cat) in class_inputs(spec) {
            let info = json!([input_type, extra]);
            let Some(val) = inputs.get(&x).cloned() else {
                if cat == "required" {
                    errors.push(json!({
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": x,
                        "extra_info": {"input_name": x},
                    }));
                }
                continue;
            };
            if let Value::Array(link) = &val {
                if link.len() != 2 {
                    errors.push(json!({
                        "type": "bad_linked_input",
                        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        "details": x,
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                    }));
                    continue;
                }
                // These lookups raise in Python (KeyError, IndexError) and are caught by the caller.
                let o_id = link[0]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| PyExc::key_error(&link[0]))?;
                let o_node = self.prompt.get(&o_id).ok_or_else(|| PyExc::key_error(&link[0]))?;
                let o_class = o_node.get("class_type").cloned().unwrap_or(Value::Null);
                let o_spec = self.specs.class(&o_class).ok_or_else(|| PyExc::key_error(&o_class))?;
                let returns = o_spec
                    .get("output")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let received = tuple_get(&returns, &link[1])?.clone();
                if !types_compatible(&received, &input_type) {
                    errors.push(json!({
                        "type": "return_type_mismatch",
                        "message": "Return type mismatch between linked nodes",
                        "details": format!("{x}, received_type({}) mismatch input_type({})", py_str(&received), py_str(&input_type)),
                        "extra_info": {"input_name": x, "input_config": info, "received_type": received, "linked_node": val},
                    }));
                    continue;
                }
                match self.validate_inputs(&o_id) {
                    Ok((true, _)) => {}
                    Ok((false, _)) => valid = false,
                    Err(ex) => {
                        valid = false;
                        let reasons = json!([{
                            "type": "exception_during_inner_validation",
                            "message": "Exception when validating inner node",
                            "details": ex.message,
                            "extra_info": {
                                "input_name": x,
                                "input_config": info,
                                "exception_message": ex.message,
                                "exception_type": ex.kind,
                                "traceback": ex.traceback("validate_inputs"),
                                "linked_node": val,
                            },
                        }]);
                        self.validated.insert(o_id.clone(), json!([false, reasons]));
                    }
                }
                continue;
            }

            let mut val = val;
            if let Some(inner) = val.as_object().and_then(|o| o.get("__value__")) {
                val = inner.clone();
                self.set_input(id, &x, val.clone());
            }
            let coerced = match input_type.as_str() {
                Some("INT") => Some(py_int(&val)),
                Some("FLOAT") => Some(py_float(&val)),
                Some("STRING") => Some(Ok(Value::String(py_str(&val)))),
                Some("BOOLEAN") => Some(Ok(Value::Bool(py_truthy(&val)))),
                _ => None,
            };
            match coerced {
                Some(Ok(c)) => {
                    val = c;
                    self.set_input(id, &x, val.clone());
                }
                Some(Err(msg)) => {
                    let kind = py_str(&input_type);
                    errors.push(json!({
                        "type": "invalid_input_type",
                        "message": format!("Failed to convert an input value to a {kind} value"),
                        "details": format!("{x}, {}, {msg}", py_str(&val)),
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val, "exception_message": msg},
                    }));
                    continue;
                }
                None => {}
            }
            if custom.contains(&x.as_str()) {
                continue;
            }
            if let (Some(min), Some(v)) = (extra.get("min"), as_num(&val)) {
                if as_num(min).is_some_and(|m| v < m) {
                    errors.push(json!({
                        "type": "value_smaller_than_min",
                        "message": format!("Value {} smaller than min of {}", py_str(&val), py_str(min)),
                        "details": x,
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                    }));
                    continue;
                }
            }
            if let (Some(max), Some(v)) = (extra.get("max"), as_num(&val)) {
                if as_num(max).is_some_and(|m| v > m) {
                    errors.push(json!({
                        "type": "value_bigger_than_max",
                        "message": format!("Value {} bigger than max of {}", py_str(&val), py_str(max)),
                        "details": x,
                        "extra_info": {"input_name": x, "input_config": info, "received_value": val},
                    }));
                    continue;
                }
            }
            if let Some(options) = input_type.as_array() {
                if !options.iter().any(|o| py_eq(o, &val)) {
                    // Huge lists (model files) are summarised, as in ComfyUI.
                    let (list_info, config) = if options.len() > 20 {
                        (format!("(list of length {})", options.len()), Value::Null)
                    } else {
                        (py_repr(&input_type), info.clone())
                    };
                    errors.push(json!({
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": format!("{x}: '{}' not in {list_info}", py_str(&val)),
                        "extra_info": {"input_name": x, "input_config": config, "received_value": val},
                    }));
                    continue;
                }
            }
        }

        // LoadImage.VALIDATE_INPUTS: the file must exist.
        for x in custom {
            let Some(val) = self
                .prompt
                .get(id)
                .and_then(|n| n.get("inputs"))
                .and_then(|i| i.get(*x))
            else {
                continue;
            };
            if val.is_array() {
                continue;
            }
            let name = py_str(val);
            let exists = annotated_path(&name, self.specs.dirs).is_some_and(|p| p.exists());
            if !exists {
                errors.push(json!({
                    "type": "custom_validation_failed",
                    "message": "Custom validation failed for node",
                    "details": format!("{x} - Invalid image file: {name}"),
                    "extra_info": {"input_name": x},
                }));
            }
        }
        Ok((errors.is_empty() && valid, errors))
    }

    fn set_input(&mut self, id: &str, name: &str, v: Value) {
        if let Some(Value::Object(inputs)) = self.prompt.get_mut(id).and_then(|n| n.get_mut("inputs")) {
            inputs.insert(name.to_string(), v);
        }
    }
}

/// Validates (and coerces, like ComfyUI, in place) an API prompt.
pub(crate) fn validate_prompt(prompt: &mut Map<String, Value>, partial: &Partial, specs: &Specs<'_>) -> PromptCheck {
    let mut outputs: Vec<String> = Vec::new();
    for (id, node) in prompt.iter() {
        let class_type = match node.as_object().and_then(|n| n.get("class_type")) {
            Some(c) => c,
            None => {
                return PromptCheck::Invalid {
                    error: prompt_error(
                        "invalid_prompt",
                        "Cannot execute because a node is missing the class_type property.",
                        &format!("Node ID '#{id}'"),
                    ),
                    node_errors: Map::new(),
                }
            }
        };
        let Some(spec) = specs.class(class_type) else {
            return PromptCheck::Invalid {
                error: prompt_error(
                    "invalid_prompt",
                    &format!("Cannot execute because node {} does not exist.", py_str(class_type)),
                    &format!("Node ID '#{id}'"),
                ),
                node_errors: Map::new(),
            };
        };
        if is_output_node(spec) && partial.includes(id) {
            outputs.push(id.clone());
        }
    }
    if outputs.is_empty() {
        return PromptCheck::Invalid {
            error: prompt_error("prompt_no_outputs", "Prompt has no outputs", ""),
            node_errors: Map::new(),
        };
    }

    let mut v = Validator {
        specs,
        prompt,
        validated: Map::new(),
        visiting: HashSet::new(),
    };
    let mut good = Vec::new();
    let mut failed: Vec<Vec<Value>> = Vec::new();
    let mut node_errors: Map<String, Value> = Map::new();
    for o in &outputs {
        let (ok, reasons) = match v.validate_inputs(o) {
            Ok(r) => r,
            Err(ex) => {
                let reasons = vec![json!({
                    "type": "exception_during_validation",
                    "message": "Exception when validating node",
                    "details": ex.message,
                    "extra_info": {"exception_type": ex.kind, "traceback": ex.traceback("validate_prompt")},
                })];
                v.validated.insert(o.clone(), json!([false, reasons]));
                (false, reasons)
            }
        };
        if ok {
            good.push(o.clone());
            continue;
        }
        failed.push(reasons);
        // Every node with reasons validated so far gets this output appended (ComfyUI's loop, quirks included).
        for (node_id, result) in v.validated.iter() {
            let (node_ok, node_reasons) = result_of(result);
            if node_ok || node_reasons.is_empty() {
                continue;
            }
            let entry = node_errors.entry(node_id.clone()).or_insert_with(|| {
                let class_type = v
                    .prompt
                    .get(node_id)
                    .and_then(|n| n.get("class_type"))
                    .cloned()
                    .unwrap_or(Value::Null);
                json!({"errors": node_reasons, "dependent_outputs": [], "class_type": class_type})
            });
            if let Some(Value::Array(deps)) = entry.get_mut("dependent_outputs") {
                deps.push(json!(o));
            }
        }
    }
    if good.is_empty() {
        let details: Vec<String> = failed
            .iter()
            .flatten()
            .map(|e| {
                let m = e.get("message").map(py_str).unwrap_or_default();
                let d = e.get("details").map(py_str).unwrap_or_default();
                format!("{m}: {d}")
            })
            .collect();
        return PromptCheck::Invalid {
            error: prompt_error(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                &details.join("\n"),
            ),
            node_errors,
        };
    }
    PromptCheck::Valid {
        outputs: good,
        node_errors,
    }
}
