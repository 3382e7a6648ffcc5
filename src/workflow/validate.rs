//! The server's prompt validation (`execution.validate_prompt` / `validate_inputs`, ComfyUI 0.3.64), done locally
//! against `/object_info` before submission, with the same problem codes the server puts in `node_errors`.
//!
//! Like the server: every node must name a known class (`invalid_prompt`); there must be an output node
//! (`prompt_no_outputs`); only nodes reachable from outputs are checked; an output whose ancestry has a problem is
//! skipped while the others still run ([`ValidationReport::is_usable`]). Beyond the server (as warnings, since it
//! accepts them): V3 COMBO values not in the options, numbers off their step, literals given to link-type inputs.
use super::convert::types_compatible;
use super::graph::{InputValue, Prompt};
use super::schema::{InputSpec, InputType, NodeSchema, ObjectInfo};
use crate::event::NodeProblem;
use serde::Serialize;
use serde_json::{Number, Value};
use std::collections::{BTreeSet, HashMap, HashSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The server would reject this (the output it feeds is not run).
    Error,
    /// The server accepts it, but the run will probably fail or differ from what was meant.
    Warning,
}

/// One problem, shaped like the server's `node_errors` entries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// ComfyUI's error `type` (`required_input_missing`, `value_bigger_than_max`, …) or, for checks the server
    /// does not make, our own snake_case code.
    pub code: String,
    /// `None` for prompt-level problems (`prompt_no_outputs`).
    pub node_id: Option<String>,
    pub class_type: Option<String>,
    pub input: Option<String>,
    pub message: String,
    /// What to do about it.
    pub suggestion: Option<String>,
    /// Output nodes that cannot run because of this problem (the server's `dependent_outputs`).
    pub dependent_outputs: Vec<String>,
}

impl Problem {
    /// The same problem as [`NodeProblem`] (what problems parsed from the server look like).
    pub fn to_node_problem(&self) -> NodeProblem {
        NodeProblem {
            node_id: self.node_id.clone().unwrap_or_default(),
            class_type: self.class_type.clone(),
            input: self.input.clone(),
            code: self.code.clone(),
            message: self.message.clone(),
            details: self.suggestion.clone().unwrap_or_default(),
        }
    }
}

/// The outcome of [`validate`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ValidationReport {
    pub problems: Vec<Problem>,
    /// Output nodes considered (all, or the requested targets).
    pub outputs: Vec<String>,
    /// Outputs whose whole ancestry validated.
    pub valid_outputs: Vec<String>,
    /// A prompt-level error (`invalid_prompt`, `prompt_no_outputs`): the server rejects the whole prompt.
    pub rejected: bool,
}

impl ValidationReport {
    /// No errors at all (warnings allowed).
    pub fn is_valid(&self) -> bool {
        !self.rejected && self.errors().next().is_none()
    }
    /// The server would queue it: no prompt-level error and at least one output validates (a partial 200).
    pub fn is_usable(&self) -> bool {
        !self.rejected && !self.valid_outputs.is_empty()
    }
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.severity == Severity::Error)
    }
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.severity == Severity::Warning)
    }
}

/// Options for [`validate_with`].
#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    /// Like `partial_execution_targets`: only these output nodes (and their ancestors) are validated.
    pub targets: Option<Vec<String>>,
}

/// Validates a prompt against the server's classes.
pub fn validate(prompt: &Prompt, info: &ObjectInfo) -> ValidationReport {
    validate_with(prompt, info, &ValidateOptions::default())
}

/// Classes whose `VALIDATE_INPUTS` checks these inputs instead of the COMBO list (file inputs): the server then
/// answers `custom_validation_failed`.
const NODE_VALIDATED_INPUTS: &[(&str, &str)] = &[
    ("LoadImage", "image"),
    ("LoadImageMask", "image"),
    ("LoadImageOutput", "image"),
    ("LoadAudio", "audio"),
    ("LoadVideo", "file"),
    ("LoadLatent", "latent"),
];

pub fn validate_with(prompt: &Prompt, info: &ObjectInfo, options: &ValidateOptions) -> ValidationReport {
    let mut report = ValidationReport::default();
    let mut nearest: HashMap<&str, Vec<String>> = HashMap::new();
    for (id, node) in &prompt.nodes {
        match node.class_type.as_deref() {
            None | Some("") => report.problems.push(Problem {
                severity: Severity::Error,
                code: "invalid_prompt".into(),
                node_id: Some(id.clone()),
                class_type: None,
                input: None,
                message: format!("node {id} has no class_type"),
                suggestion: Some(
                    "every node of an API prompt needs `class_type`; was the file converted from a \
                                  UI workflow with missing custom nodes?"
                        .into(),
                ),
                dependent_outputs: Vec::new(),
            }),
            Some(class) if !info.contains(class) => {
                let near = nearest.entry(class).or_insert_with(|| info.nearest(class, 3)).clone();
                report.problems.push(Problem {
                    severity: Severity::Error,
                    code: "invalid_prompt".into(),
                    node_id: Some(id.clone()),
                    class_type: Some(class.to_string()),
                    input: None,
                    message: format!("node {id}: class {class} does not exist on the server"),
                    suggestion: Some(if near.is_empty() {
                        "install the custom node that provides it, or remove the node".to_string()
                    } else {
                        format!(
                            "install the custom node that provides it; similar known classes: {}",
                            near.join(", ")
                        )
                    }),
                    dependent_outputs: Vec::new(),
                });
            }
            Some(_) => {}
        }
    }
    report.rejected = !report.problems.is_empty();

    let mut outputs: Vec<String> = prompt
        .nodes
        .iter()
        .filter(|(_, n)| {
            n.class_type
                .as_deref()
                .and_then(|c| info.get(c))
                .is_some_and(|s| s.output_node)
        })
        .map(|(id, _)| id.clone())
        .collect();
    if let Some(targets) = &options.targets {
        outputs.retain(|o| targets.contains(o));
    }
    if outputs.is_empty() {
        report.rejected = true;
        report.problems.push(Problem {
            severity: Severity::Error,
            code: "prompt_no_outputs".into(),
            node_id: None,
            class_type: None,
            input: None,
            message: "the prompt has no output node (SaveImage, PreviewImage, …), so nothing would run".into(),
            suggestion: Some("add an output node, or check that the output nodes are not muted".into()),
            dependent_outputs: Vec::new(),
        });
        return report;
    }

    let mut v = Validator {
        prompt,
        info,
        state: HashMap::new(),
        problems: Vec::new(),
        owner: HashMap::new(),
    };
    for out in &outputs {
        let ok = match v.node(out) {
            Ok(ok) => ok,
            Err(exc) => {
                let input = bad_link_input(prompt, out);
                v.fail(
                    out,
                    input.as_deref(),
                    "exception_during_validation",
                    exc,
                    Some("link the input to a node that exists in the prompt".into()),
                    Severity::Error,
                );
                false
            }
        };
        if ok {
            report.valid_outputs.push(out.clone());
        } else {
            // Every failing node in this output's ancestry gets it as a dependent output.
            let ancestry = v.ancestors(out);
            for (node_id, indices) in &v.owner {
                if ancestry.contains(node_id.as_str()) {
                    for i in indices {
                        let p: &mut Problem = &mut v.problems[*i];
                        if p.severity == Severity::Error && !p.dependent_outputs.contains(out) {
                            p.dependent_outputs.push(out.clone());
                        }
                    }
                }
            }
        }
    }
    report.problems.extend(v.problems);
    report.outputs = outputs;
    report
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Visiting,
    Done(bool),
}

struct Validator<'a> {
    prompt: &'a Prompt,
    info: &'a ObjectInfo,
    state: HashMap<String, State>,
    problems: Vec<Problem>,
    /// Problem indices by node id.
    owner: HashMap<String, Vec<usize>>,
}

impl<'a> Validator<'a> {
    fn ancestors(&self, id: &str) -> HashSet<&'a str> {
        let mut seen = HashSet::new();
        let mut todo = vec![id.to_string()];
        while let Some(cur) = todo.pop() {
            let Some((key, node)) = self.prompt.nodes.get_key_value(&cur) else {
                continue;
            };
            if !seen.insert(key.as_str()) {
                continue;
            }
            for value in node.inputs.values() {
                if let InputValue::Link(l) = value {
                    todo.push(l.node.clone());
                }
            }
        }
        seen
    }

    fn push(&mut self, node_id: &str, problem: Problem) {
        self.owner
            .entry(node_id.to_string())
            .or_default()
            .push(self.problems.len());
        self.problems.push(problem);
    }

    fn fail(
        &mut self,
        node_id: &str,
        input: Option<&str>,
        code: &str,
        message: String,
        suggestion: Option<String>,
        severity: Severity,
    ) {
        let class_type = self.prompt.get(node_id).and_then(|n| n.class_type.clone());
        if severity == Severity::Error {
            self.state.insert(node_id.to_string(), State::Done(false));
        }
        self.push(
            node_id,
            Problem {
                severity,
                code: code.to_string(),
                node_id: Some(node_id.to_string()),
                class_type,
                input: input.map(str::to_string),
                message,
                suggestion,
                dependent_outputs: Vec::new(),
            },
        );
    }

    /// `Ok(valid)`, or `Err(message)` for what makes the server's `validate_inputs` raise (a link to a node that
    /// is not in the prompt, an output index out of range): the caller files that under this node.
    fn node(&mut self, id: &str) -> Result<bool, String> {
        match self.state.get(id) {
            Some(State::Done(ok)) => return Ok(*ok),
            // A cycle: the execution reports it; validation stays quiet like for any already-entered node.
            Some(State::Visiting) => return Ok(true),
            None => {}
        }
        let Some(node) = self.prompt.get(id) else {
            return Err(format!("'{id}'"));
        };
        let Some(schema) = node.class_type.as_deref().and_then(|c| self.info.get(c)) else {
            // Unknown or missing class: already a prompt-level error.
            self.state.insert(id.to_string(), State::Done(false));
            return Ok(false);
        };
        self.state.insert(id.to_string(), State::Visiting);
        let mut valid = true;
        let mut errors = false;
        for spec in &schema.inputs {
            match node.inputs.get(&spec.name) {
                None => {
                    if spec.is_required() {
                        errors = true;
                        self.push_error(
                            id,
                            spec,
                            "required_input_missing",
                            format!("{}: required input {} is missing", label(id, schema), spec.name),
                            Some(if spec.is_widget() {
                                format!("set {} (e.g. to its default {})", spec.name, default_text(spec))
                            } else {
                                format!("connect a {} output to {}", spec.input_type.name(), spec.name)
                            }),
                        );
                    }
                }
                Some(InputValue::MalformedLink(items)) => {
                    errors = true;
                    self.push_error(
                        id,
                        spec,
                        "bad_linked_input",
                        format!(
                            "{}: input {} is a list of {} items; a bare list means a link [node_id, output_index]",
                            label(id, schema),
                            spec.name,
                            items.len()
                        ),
                        Some("wrap a literal list as {\"__value__\": [...]}, or fix the link".into()),
                    );
                }
                Some(InputValue::Link(link)) => {
                    let Some(origin) = self.prompt.get(&link.node) else {
                        self.state.remove(id);
                        return Err(format!(
                            "input {} of node {id} links to node {}, which is not in the prompt",
                            spec.name, link.node
                        ));
                    };
                    let Some(origin_schema) = origin.class_type.as_deref().and_then(|c| self.info.get(c)) else {
                        valid = false;
                        continue;
                    };
                    let Some(output) = origin_schema.outputs.get(link.slot as usize) else {
                        self.state.remove(id);
                        return Err(format!(
                            "input {} of node {id} links to output {} of node {} ({}), which has {} outputs",
                            spec.name,
                            link.slot,
                            link.node,
                            origin_schema.name,
                            origin_schema.outputs.len()
                        ));
                    };
                    if !link_type_ok(&output.output_type, &spec.input_type) {
                        errors = true;
                        self.push_error(
                            id,
                            spec,
                            "return_type_mismatch",
                            format!(
                                "{}: input {} expects {} but node {} ({}) output {} gives {}",
                                label(id, schema),
                                spec.name,
                                spec.input_type.name(),
                                link.node,
                                origin_schema.name,
                                link.slot,
                                output.output_type
                            ),
                            Some(format!("connect a {} output to {}", spec.input_type.name(), spec.name)),
                        );
                        continue;
                    }
                    match self.node(&link.node) {
                        Ok(true) => {}
                        Ok(false) => valid = false,
                        Err(message) => {
                            valid = false;
                            let owner = link.node.clone();
                            self.fail(
                                &owner,
                                None,
                                "exception_during_inner_validation",
                                message,
                                Some("link the input to a node that exists in the prompt".into()),
                                Severity::Error,
                            );
                            // The server names the consumer's input; we name the input that holds the bad link
                            // (the message says which), since the consumer's input does not exist on this node.
                            if let Some(p) = self.problems.last_mut() {
                                p.input = bad_link_input(self.prompt, &owner);
                            }
                        }
                    }
                }
                Some(value) => {
                    let literal = value.literal().unwrap_or(Value::Null);
                    if self.literal(id, &node.class_type, schema, spec, &literal) {
                        errors = true;
                    }
                }
            }
        }
        let ok = valid && !errors && !matches!(self.state.get(id), Some(State::Done(false)));
        self.state.insert(id.to_string(), State::Done(ok));
        Ok(ok)
    }

    fn push_error(&mut self, id: &str, spec: &InputSpec, code: &str, message: String, suggestion: Option<String>) {
        self.fail(id, Some(&spec.name), code, message, suggestion, Severity::Error);
    }

    fn warn(&mut self, id: &str, spec: &InputSpec, code: &str, message: String, suggestion: Option<String>) {
        self.fail(id, Some(&spec.name), code, message, suggestion, Severity::Warning);
    }

    /// Checks a literal; true when it is an error.
    fn literal(
        &mut self,
        id: &str,
        class: &Option<String>,
        schema: &NodeSchema,
        spec: &InputSpec,
        value: &Value,
    ) -> bool {
        let who = label(id, schema);
        let number = match &spec.input_type {
            InputType::Int => match coerce_int(value) {
                Some(n) => Some(Num::Int(n)),
                None => {
                    self.push_error(
                        id,
                        spec,
                        "invalid_input_type",
                        format!("{who}: {} = {} is not an integer", spec.name, short(value)),
                        Some(format!("give {} a whole number", spec.name)),
                    );
                    return true;
                }
            },
            InputType::Float => match coerce_float(value) {
                Some(f) => Some(Num::Float(f)),
                None => {
                    self.push_error(
                        id,
                        spec,
                        "invalid_input_type",
                        format!("{who}: {} = {} is not a number", spec.name, short(value)),
                        Some(format!("give {} a number", spec.name)),
                    );
                    return true;
                }
            },
            _ => None,
        };
        let custom = class
            .as_deref()
            .is_some_and(|c| NODE_VALIDATED_INPUTS.contains(&(c, spec.name.as_str())));
        if let Some(n) = number {
            let (min, max) = (spec.min.as_ref().map(Num::from), spec.max.as_ref().map(Num::from));
            let range = || {
                format!(
                    "use a value from {} to {}",
                    spec.min.as_ref().map(Number::to_string).unwrap_or_else(|| "-∞".into()),
                    spec.max.as_ref().map(Number::to_string).unwrap_or_else(|| "∞".into())
                )
            };
            if let Some(min) = min.filter(|m| n.lt(m)) {
                self.push_error(
                    id,
                    spec,
                    "value_smaller_than_min",
                    format!("{who}: {} = {} is smaller than the minimum {}", spec.name, n, min),
                    Some(range()),
                );
                return true;
            }
            if let Some(max) = max.filter(|m| m.lt(&n)) {
                self.push_error(
                    id,
                    spec,
                    "value_bigger_than_max",
                    format!("{who}: {} = {} is bigger than the maximum {}", spec.name, n, max),
                    Some(range()),
                );
                return true;
            }
            if let Some(step) = spec.step.as_ref().map(Num::from) {
                if !n.on_step(&step, min.as_ref()) {
                    self.warn(
                        id,
                        spec,
                        "value_not_multiple_of_step",
                        format!("{who}: {} = {} is not on its step of {}", spec.name, n, step),
                        Some("the frontend would round it; the server accepts it as is".into()),
                    );
                }
            }
        }
        if let InputType::Combo { options, v3 } = &spec.input_type {
            if custom {
                if !options.iter().any(|o| same_json(o, value)) {
                    self.push_error(
                        id,
                        spec,
                        "custom_validation_failed",
                        format!("{who}: {} {} is not a file on the server", spec.name, short(value)),
                        Some("upload the file first (upload_image) or pick one the server lists".into()),
                    );
                    return true;
                }
            } else {
                // An old-style COMBO with no options at all still fails on the server (`x not in []`); the V3 form
                // is not checked there, and an empty V3 list (remote options) gives us nothing to check against.
                let listed_ok = options.iter().any(|o| same_json(o, value));
                let checkable = !(options.is_empty() && *v3);
                if listed_ok || spec.multiselect || !checkable {
                    return false;
                }
                let listed = list_options(options);
                let near = nearest_options(options, value);
                let suggestion = if options.is_empty() {
                    "the server lists no options at all (no model files of this kind installed?)".to_string()
                } else if near.is_empty() {
                    format!("choose one of: {listed}")
                } else {
                    format!("did you mean {}? options: {listed}", near.join(" or "))
                };
                if *v3 {
                    self.warn(
                        id,
                        spec,
                        "value_not_in_list",
                        format!(
                            "{who}: {} {} is not one of the options (the server does not check this input and the \
                             run will fail)",
                            spec.name,
                            short(value)
                        ),
                        Some(suggestion),
                    );
                } else {
                    self.push_error(
                        id,
                        spec,
                        "value_not_in_list",
                        format!("{who}: {} {} is not one of the options", spec.name, short(value)),
                        Some(suggestion),
                    );
                    return true;
                }
            }
        }
        if let InputType::Other(t) = &spec.input_type {
            if t != "*" && !spec.is_widget() {
                self.warn(
                    id,
                    spec,
                    "literal_for_link_input",
                    format!(
                        "{who}: {} expects a {t} link but has the literal {}",
                        spec.name,
                        short(value)
                    ),
                    Some(format!("connect a {t} output to {}", spec.name)),
                );
            }
        }
        false
    }
}

fn bad_link_input(prompt: &Prompt, node_id: &str) -> Option<String> {
    let node = prompt.get(node_id)?;
    node.inputs
        .iter()
        .find(|(_, v)| v.as_link().is_some_and(|l| prompt.get(&l.node).is_none()))
        .map(|(k, _)| k.clone())
}

fn label(id: &str, schema: &NodeSchema) -> String {
    format!("node {id} ({})", schema.name)
}

fn default_text(spec: &InputSpec) -> String {
    spec.default_value().map(|v| short(&v)).unwrap_or_else(|| "?".into())
}

fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 80 {
        let cut = (0..=80).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn list_options(options: &[Value]) -> String {
    let shown: Vec<String> = options.iter().take(20).map(short).collect();
    if options.len() > 20 {
        format!("{} … ({} in all)", shown.join(", "), options.len())
    } else {
        shown.join(", ")
    }
}

fn nearest_options(options: &[Value], value: &Value) -> Vec<String> {
    let Some(text) = value.as_str() else { return Vec::new() };
    let lower = text.to_lowercase();
    let mut scored: Vec<(usize, &str)> = options
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|o| {
            let limit = (text.chars().count() / 3).max(2);
            super::schema::edit_distance_within(&lower, &o.to_lowercase(), limit).map(|d| (d, o))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(2).map(|(_, o)| format!("{o:?}")).collect()
}

/// The server's `validate_node_input`: equal, `*`, COMBO to COMBO, or unions sharing a member.
fn link_type_ok(received: &str, input: &InputType) -> bool {
    match input {
        InputType::Combo { .. } => received == "COMBO" || received == "*",
        other => {
            let want = other.name();
            received == want || received == "*" || want == "*" || {
                // Unions: `IMAGE,MASK`. Case-sensitive like the server; `types_compatible` adds `*` handling.
                let r: BTreeSet<&str> = received.split(',').map(str::trim).collect();
                want.split(',').map(str::trim).any(|w| r.contains(w)) && types_compatible(received, want)
            }
        }
    }
}

/// JSON `in` like Python's: `1 == 1.0`, strings exact.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.to_string() == y.to_string() || x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn from(n: &Number) -> Num {
        let s = n.to_string();
        match s.parse::<i128>() {
            Ok(i) => Num::Int(i),
            Err(_) => Num::Float(s.parse::<f64>().unwrap_or(f64::NAN)),
        }
    }
    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
    fn lt(&self, other: &Num) -> bool {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => a < b,
            _ => self.f() < other.f(),
        }
    }
    fn on_step(&self, step: &Num, min: Option<&Num>) -> bool {
        match (self, step, min.copied().unwrap_or(Num::Int(0))) {
            (Num::Int(v), Num::Int(s), Num::Int(m)) if *s > 0 => (v - m) % s == 0,
            (Num::Int(_), Num::Int(_), _) => true,
            (_, _, m) => {
                let s = step.f();
                if s <= 0.0 || !s.is_finite() {
                    return true;
                }
                let k = (self.f() - m.f()) / s;
                (k - k.round()).abs() < 1e-6
            }
        }
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::Int(i) => write!(f, "{i}"),
            Num::Float(x) => write!(f, "{x}"),
        }
    }
}

/// Python's `int(value)`: integers, floats truncated, booleans, integer strings (`" +16 "`, `1_000`).
fn coerce_int(value: &Value) -> Option<i128> {
    match value {
        Value::Number(n) => match Num::from(n) {
            Num::Int(i) => Some(i),
            Num::Float(f) if f.is_finite() => Some(f.trunc() as i128),
            Num::Float(_) => None,
        },
        Value::Bool(b) => Some(i128::from(*b)),
        Value::String(s) => {
            let t = s.trim();
            let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
            let valid = !digits.is_empty()
                && !digits.starts_with('_')
                && !digits.ends_with('_')
                && !digits.contains("__")
                && digits.chars().all(|c| c.is_ascii_digit() || c == '_');
            if !valid {
                return None;
            }
            t.replace('_', "").parse::<i128>().ok()
        }
        _ => None,
    }
}

/// Python's `float(value)`.
fn coerce_float(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.to_string().parse::<f64>().ok(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::String(s) => {
            let t = s.trim().to_lowercase().replace('_', "");
            match t.as_str() {
                "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
                "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
                "nan" | "+nan" | "-nan" => Some(f64::NAN),
                _ => t.parse::<f64>().ok(),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coerces_like_python() {
        assert_eq!(coerce_int(&json!("16")), Some(16));
        assert_eq!(coerce_int(&json!(16.9)), Some(16));
        assert_eq!(coerce_int(&json!(" -1_000 ")), Some(-1000));
        assert_eq!(coerce_int(&json!("16.0")), None);
        assert_eq!(coerce_int(&json!("wide")), None);
        assert_eq!(coerce_int(&json!(null)), None);
        assert_eq!(coerce_float(&json!("1e3")), Some(1000.0));
        assert_eq!(coerce_int(&json!(18446744073709551615u64)), Some(18446744073709551615));
    }

    #[test]
    fn steps_and_ranges_compare_exactly_for_u64_seeds() {
        let max = Num::from(&serde_json::from_str::<Number>("18446744073709551615").unwrap_or(Number::from(0)));
        assert!(!max.lt(&Num::Int(18446744073709551615)));
        assert!(max.lt(&Num::Int(18446744073709551616)));
        assert!(Num::Int(7).on_step(&Num::Int(8), Some(&Num::Int(-1))));
        assert!(!Num::Int(7).on_step(&Num::Int(8), None));
        assert!(Num::Float(7.5).on_step(&Num::Float(0.1), Some(&Num::Float(0.0))));
    }
}
