//! Finding and setting a prompt's inputs by selector.
//!
//! A selector is `NODE.input`, where `NODE` is
//! - a node id (`3`, `5:3`),
//! - a role resolved through the graph: `positive` / `negative` (the text-encode node feeding the sampler's
//!   positive/negative input, through intermediate conditioning nodes), `sampler` (KSampler, KSamplerAdvanced,
//!   SamplerCustom…, plus the RandomNoise/BasicScheduler/CFGGuider/KSamplerSelect nodes of custom samplers),
//!   `latent` (the node making the sampler's latent), `frames` (its `length`/`frame_count`/`video_frames` input);
//! - a class name (`KSampler.steps`: an error listing the candidates when several nodes have it),
//! - a title from `_meta.title`, quoted (`"Positive Prompt".text`) or, when nothing else matches, bare.
//!
//! Role input aliases: `sampler.seed` finds `seed` or `noise_seed`, `frames.length` finds `length`, `frame_count`,
//! `video_frames` or `num_frames`.
use super::error::{error, ErrorKind, Result, WithCandidates};
use super::graph::{InputValue, Prompt, PromptNode};
use super::schema::{InputSpec, InputType, ObjectInfo};
use serde::Serialize;
use serde_json::{Number, Value};
use std::collections::{HashSet, VecDeque};

/// A resolved input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Target {
    pub node_id: String,
    pub input: String,
}

/// A settable (literal) input, as [`parameters`] lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parameter {
    pub node_id: String,
    pub class_type: Option<String>,
    pub title: Option<String>,
    pub input: String,
    /// `INT`, `FLOAT`, `STRING`, `BOOLEAN`, `COMBO`, … from the schema, else guessed from the value.
    pub input_type: String,
    pub min: Option<Number>,
    pub max: Option<Number>,
    pub step: Option<Number>,
    /// COMBO options.
    pub options: Option<Vec<Value>>,
    pub default: Option<Value>,
    pub value: Value,
    /// The selector that reaches it: `"<id>.<input>"`.
    pub selector: String,
}

const ROLES: &[&str] = &["positive", "negative", "sampler", "latent", "frames"];

/// Known sampler classes; others qualify when their name contains `Sampler` and they take a latent.
const SAMPLER_CLASSES: &[&str] = &["KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"];

/// Inputs through which custom samplers reach their settings (RandomNoise, BasicScheduler, CFGGuider, …).
const SAMPLER_PARTS: &[&str] = &["noise", "sigmas", "guider", "sampler"];

fn aliases(role: &str, input: &str) -> Vec<String> {
    match (role, input) {
        ("sampler", "seed") | ("sampler", "noise_seed") => vec!["seed".into(), "noise_seed".into()],
        ("frames", "length") | ("frames", "frames") => {
            vec![
                "length".into(),
                "frame_count".into(),
                "video_frames".into(),
                "num_frames".into(),
            ]
        }
        _ => vec![input.to_string()],
    }
}

/// Splits `NODE.input` (the input is after the last dot; a quoted title may contain dots).
fn split(selector: &str) -> Result<(String, bool, String)> {
    let s = selector.trim();
    let bad = || {
        error(
            ErrorKind::InvalidSelector,
            format!(
                "selector {selector:?}: expected NODE.input, where NODE is a node id, a role (positive, negative, \
                 sampler, latent, frames), a class name or a \"quoted title\""
            ),
        )
    };
    if let Some(rest) = s.strip_prefix('"') {
        let end = rest.find('"').ok_or_else(bad)?;
        let (title, after) = (&rest[..end], &rest[end + 1..]);
        let input = after.strip_prefix('.').ok_or_else(bad)?;
        if input.is_empty() || title.is_empty() {
            return Err(bad());
        }
        return Ok((title.to_string(), true, input.to_string()));
    }
    let (head, input) = s.rsplit_once('.').ok_or_else(bad)?;
    if head.is_empty() || input.is_empty() {
        return Err(bad());
    }
    Ok((head.to_string(), false, input.to_string()))
}

fn describe(prompt: &Prompt, id: &str) -> String {
    match prompt.get(id) {
        Some(n) => match n.title() {
            Some(t) if t != n.class() => format!("{id} ({} {t:?})", n.class()),
            _ => format!("{id} ({})", n.class()),
        },
        None => id.to_string(),
    }
}

/// Resolves a selector to one input of one node.
///
/// # Errors
/// `invalid_selector`, `selector_not_found` (with close matches as candidates), `ambiguous_selector` (with every
/// candidate).
pub fn resolve(prompt: &Prompt, selector: &str) -> Result<Target> {
    let (head, quoted, input) = split(selector)?;
    if quoted {
        return by_title(prompt, &head, &input, selector);
    }
    if prompt.nodes.contains_key(&head) {
        return Ok(Target { node_id: head, input });
    }
    if ROLES.contains(&head.as_str()) {
        return by_role(prompt, &head, &input, selector);
    }
    let of_class: Vec<&String> = prompt
        .nodes
        .iter()
        .filter(|(_, n)| n.class() == head)
        .map(|(id, _)| id)
        .collect();
    match of_class.len() {
        1 => {
            return Ok(Target {
                node_id: of_class[0].clone(),
                input,
            })
        }
        n if n > 1 => {
            let candidates: Vec<String> = of_class.iter().map(|id| format!("{id}.{input}")).collect();
            return Err(error(
                ErrorKind::AmbiguousSelector,
                format!(
                    "selector {selector:?}: {n} nodes are {head}: {}; use a node id or a \"title\"",
                    of_class
                        .iter()
                        .map(|id| describe(prompt, id))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .with_candidates(candidates));
        }
        _ => {}
    }
    by_title(prompt, &head, &input, selector)
}

fn by_title(prompt: &Prompt, title: &str, input: &str, selector: &str) -> Result<Target> {
    let hits: Vec<&String> = prompt
        .nodes
        .iter()
        .filter(|(_, n)| n.title() == Some(title))
        .map(|(id, _)| id)
        .collect();
    match hits.len() {
        1 => Ok(Target {
            node_id: hits[0].clone(),
            input: input.to_string(),
        }),
        0 => {
            let mut names: Vec<String> = prompt
                .nodes
                .iter()
                .flat_map(|(id, n)| {
                    [
                        Some(id.clone()),
                        n.title().map(|t| format!("{t:?}")),
                        n.class_type.clone(),
                    ]
                })
                .flatten()
                .collect();
            names.sort();
            names.dedup();
            let lower = title.to_lowercase();
            let near: Vec<String> = names
                .iter()
                .filter(|n| {
                    let l = n.trim_matches('"').to_lowercase();
                    l.contains(&lower) || super::schema::edit_distance_within(&lower, &l, 3).is_some()
                })
                .take(8)
                .map(|n| format!("{n}.{input}"))
                .collect();
            Err(error(
                ErrorKind::SelectorNotFound,
                format!(
                    "selector {selector:?}: no node has the id, class or title {title:?}{}",
                    if near.is_empty() {
                        String::new()
                    } else {
                        format!("; close: {}", near.join(", "))
                    }
                ),
            )
            .with_candidates(near))
        }
        n => Err(error(
            ErrorKind::AmbiguousSelector,
            format!(
                "selector {selector:?}: {n} nodes are titled {title:?}: {}; use a node id",
                hits.iter()
                    .map(|id| describe(prompt, id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_candidates(hits.iter().map(|id| format!("{id}.{input}")).collect())),
    }
}

fn is_sampler(node: &PromptNode) -> bool {
    let class = node.class();
    SAMPLER_CLASSES.contains(&class) || (class.contains("Sampler") && node.inputs.contains_key("latent_image"))
}

/// The sampler nodes, in prompt order.
pub fn samplers(prompt: &Prompt) -> Vec<String> {
    prompt
        .nodes
        .iter()
        .filter(|(_, n)| is_sampler(n))
        .map(|(id, _)| id.clone())
        .collect()
}

fn by_role(prompt: &Prompt, role: &str, input: &str, selector: &str) -> Result<Target> {
    let names = aliases(role, input);
    let found_samplers = samplers(prompt);
    if found_samplers.is_empty() {
        return Err(error(
            ErrorKind::SelectorNotFound,
            format!("selector {selector:?}: the workflow has no sampler node (KSampler, SamplerCustom…) to start from"),
        ));
    }
    let mut targets: Vec<Target> = Vec::new();
    let mut per_sampler: Vec<(String, Option<Target>)> = Vec::new();
    for sampler in &found_samplers {
        let t = role_from_sampler(prompt, sampler, role, &names);
        if let Some(t) = &t {
            if !targets.contains(t) {
                targets.push(t.clone());
            }
        }
        per_sampler.push((sampler.clone(), t));
    }
    match targets.len() {
        1 => Ok(targets.remove(0)),
        0 => Err(error(
            ErrorKind::SelectorNotFound,
            format!(
                "selector {selector:?}: no {} input found for role {role} from sampler {}",
                names.join("/"),
                found_samplers
                    .iter()
                    .map(|id| describe(prompt, id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        n => Err(error(
            ErrorKind::AmbiguousSelector,
            format!(
                "selector {selector:?}: the workflow has {} samplers, giving {n} different targets: {}; use a node \
                 id or a \"title\"",
                found_samplers.len(),
                per_sampler
                    .iter()
                    .filter_map(|(s, t)| t.as_ref().map(|t| format!(
                        "{}.{} (from sampler {})",
                        describe(prompt, &t.node_id),
                        t.input,
                        describe(prompt, s)
                    )))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_candidates(targets.iter().map(|t| format!("{}.{}", t.node_id, t.input)).collect())),
    }
}

fn role_from_sampler(prompt: &Prompt, sampler: &str, role: &str, names: &[String]) -> Option<Target> {
    let node = prompt.get(sampler)?;
    let has = |n: &PromptNode| names.iter().find(|name| n.inputs.contains_key(name.as_str())).cloned();
    match role {
        "sampler" => {
            if let Some(name) = has(node) {
                return Some(Target {
                    node_id: sampler.to_string(),
                    input: name,
                });
            }
            SAMPLER_PARTS.iter().find_map(|part| {
                let link = node.inputs.get(*part)?.as_link()?;
                let origin = prompt.get(&link.node)?;
                has(origin).map(|name| Target {
                    node_id: link.node.clone(),
                    input: name,
                })
            })
        }
        "positive" | "negative" => {
            // Custom samplers take conditioning through their guider.
            let start = if node.inputs.contains_key(role) {
                (sampler.to_string(), role.to_string())
            } else {
                let guider = node.inputs.get("guider")?.as_link()?;
                let g = prompt.get(&guider.node)?;
                let name = if g.inputs.contains_key(role) {
                    role
                } else if role == "positive" && g.inputs.contains_key("conditioning") {
                    "conditioning"
                } else {
                    return None;
                };
                (guider.node.clone(), name.to_string())
            };
            let found = upstream(prompt, &start.0, &start.1, names, |name| {
                name == role || name.contains("conditioning") || name.starts_with("cond")
            })?;
            follow_text_link(prompt, found)
        }
        "latent" | "frames" => {
            let start = ["latent_image", "latent", "samples"]
                .iter()
                .find(|n| node.inputs.contains_key(**n))?;
            upstream(prompt, sampler, start, names, |name| {
                name.contains("latent") || name == "samples"
            })
        }
        _ => None,
    }
}

/// Breadth-first search upstream from `node.input` for the nearest node that has one of `names` as an input.
/// At each intermediate node, inputs accepted by `prefer` are followed if there are any, else every link. Several
/// different nodes at the nearest distance → `None` (the caller reports ambiguity through differing targets).
fn upstream(
    prompt: &Prompt,
    node: &str,
    input: &str,
    names: &[String],
    prefer: impl Fn(&str) -> bool,
) -> Option<Target> {
    let first = prompt.get(node)?.inputs.get(input)?.as_link()?;
    let mut queue = VecDeque::from([(first.node.clone(), 0usize)]);
    let mut seen = HashSet::from([node.to_string()]);
    let mut hits: Vec<Target> = Vec::new();
    let mut hit_depth = usize::MAX;
    while let Some((id, depth)) = queue.pop_front() {
        if depth > hit_depth || depth > 32 || !seen.insert(id.clone()) {
            continue;
        }
        let Some(n) = prompt.get(&id) else { continue };
        if let Some(name) = names.iter().find(|name| n.inputs.contains_key(name.as_str())) {
            hit_depth = depth;
            hits.push(Target {
                node_id: id.clone(),
                input: name.clone(),
            });
            continue;
        }
        let links: Vec<(&String, &InputValue)> = n.inputs.iter().filter(|(_, v)| v.as_link().is_some()).collect();
        let preferred: Vec<_> = links.iter().filter(|(k, _)| prefer(k)).collect();
        let follow: Vec<_> = if preferred.is_empty() {
            links.iter().collect()
        } else {
            preferred
        };
        for (_, v) in follow {
            if let Some(l) = v.as_link() {
                queue.push_back((l.node.clone(), depth + 1));
            }
        }
    }
    (hits.len() == 1).then(|| hits.remove(0))
}

/// A text input fed by a link (a string primitive) resolves to the literal string input of that node, hop by hop,
/// as long as each hop has exactly one obvious text input; otherwise it stays on the linked input (so `set` says
/// which node feeds it instead of guessing).
fn follow_text_link(prompt: &Prompt, target: Target) -> Option<Target> {
    let mut current = target;
    for _ in 0..8 {
        let node = prompt.get(&current.node_id)?;
        let Some(link) = node.inputs.get(&current.input).and_then(InputValue::as_link) else {
            return Some(current);
        };
        let Some(origin) = prompt.get(&link.node) else {
            return Some(current);
        };
        let named: Vec<&str> = ["value", "string", "text", "prompt"]
            .into_iter()
            .filter(|n| origin.inputs.contains_key(*n))
            .collect();
        let strings: Vec<&String> = origin
            .inputs
            .iter()
            .filter(|(_, v)| matches!(v, InputValue::Literal(Value::String(_))))
            .map(|(k, _)| k)
            .collect();
        let next = match (named.as_slice(), strings.as_slice()) {
            ([one], _) => one.to_string(),
            ([], [one]) => (*one).clone(),
            _ => return Some(current),
        };
        current = Target {
            node_id: link.node.clone(),
            input: next,
        };
    }
    Some(current)
}

/// The current value of a selector's input (`None` when unset); links are returned as `["id", slot]`.
pub fn get(prompt: &Prompt, selector: &str) -> Result<(Target, Option<Value>)> {
    let target = resolve(prompt, selector)?;
    let value = prompt
        .get(&target.node_id)
        .and_then(|n| n.inputs.get(&target.input))
        .map(|v| v.literal().unwrap_or_else(|| v.to_json()));
    Ok((target, value))
}

/// Sets a selector's input to a literal, checked against the schema (type, range, options) when the class is
/// known. Returns the input it set.
///
/// # Errors
/// The selector errors of [`resolve`]; `input_linked` (the input is fed by a link), `invalid_value` (wrong type or
/// an input the class does not have), `value_out_of_range`, `value_not_in_list` (options as candidates).
pub fn set(prompt: &mut Prompt, info: Option<&ObjectInfo>, selector: &str, value: Value) -> Result<Target> {
    let target = resolve(prompt, selector)?;
    let label = describe(prompt, &target.node_id);
    let node = prompt.nodes.get_mut(&target.node_id).ok_or_else(|| {
        error(
            ErrorKind::SelectorNotFound,
            format!("selector {selector:?}: node {} is gone", target.node_id),
        )
    })?;
    if let Some(InputValue::Link(link)) = node.inputs.get(&target.input) {
        return Err(error(
            ErrorKind::InputLinked,
            format!(
                "{label}.{} is fed by a link from node {}; set the input of that node instead",
                target.input, link.node
            ),
        ));
    }
    let schema = info.and_then(|i| i.get(node.class()));
    match schema.map(|s| s.input(&target.input)) {
        Some(Some(spec)) => check_value(spec, &value, &format!("{label}.{}", target.input))?,
        Some(None) if !node.inputs.contains_key(&target.input) => {
            let mut names: Vec<String> = schema
                .map(|s| {
                    s.inputs
                        .iter()
                        .filter(|i| i.is_widget())
                        .map(|i| i.name.clone())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            return Err(error(
                ErrorKind::SelectorNotFound,
                format!(
                    "{label} has no input {:?}; its settable inputs: {}",
                    target.input,
                    names.join(", ")
                ),
            )
            .with_candidates(names));
        }
        // Unknown class, or an input the schema does not list but the prompt has: nothing to check against.
        _ => {}
    }
    node.inputs.insert(target.input.clone(), InputValue::from_value(value));
    Ok(target)
}

fn check_value(spec: &InputSpec, value: &Value, what: &str) -> Result<()> {
    let wrong = |expected: &str| error(ErrorKind::InvalidValue, format!("{what} takes {expected}, not {value}"));
    let range = |n: &Number| -> Result<()> {
        let v = num(n);
        let below = spec.min.as_ref().is_some_and(|m| lt(&v, &num(m)));
        let above = spec.max.as_ref().is_some_and(|m| lt(&num(m), &v));
        if below || above {
            return Err(error(
                ErrorKind::ValueOutOfRange,
                format!(
                    "{what} = {n} is out of range: {} to {}",
                    spec.min.as_ref().map(Number::to_string).unwrap_or_else(|| "-∞".into()),
                    spec.max.as_ref().map(Number::to_string).unwrap_or_else(|| "∞".into())
                ),
            ));
        }
        Ok(())
    };
    match &spec.input_type {
        InputType::Int => match value {
            Value::Number(n) if n.to_string().parse::<i128>().is_ok() => range(n),
            _ => Err(wrong("a whole number")),
        },
        InputType::Float => match value {
            Value::Number(n) => range(n),
            _ => Err(wrong("a number")),
        },
        InputType::String => value.is_string().then_some(()).ok_or_else(|| wrong("a string")),
        InputType::Boolean => value.is_boolean().then_some(()).ok_or_else(|| wrong("true or false")),
        InputType::Combo { options, .. } => {
            if options.is_empty() || options.contains(value) || (spec.multiselect && value.is_array()) {
                return Ok(());
            }
            let shown: Vec<String> = options.iter().take(30).map(|o| o.to_string()).collect();
            Err(error(
                ErrorKind::ValueNotInList,
                format!(
                    "{what} = {value} is not one of the options: {}{}",
                    shown.join(", "),
                    if options.len() > 30 {
                        format!(" … ({} in all)", options.len())
                    } else {
                        String::new()
                    }
                ),
            )
            .with_candidates(
                options
                    .iter()
                    .map(|o| o.as_str().map(str::to_string).unwrap_or_else(|| o.to_string()))
                    .collect(),
            ))
        }
        // Frontend widget types (WEBCAM, …): the browser makes their value; accept what the caller gives.
        InputType::Other(_) if spec.is_widget() => Ok(()),
        InputType::Other(t) => Err(error(
            ErrorKind::InvalidValue,
            format!("{what} is a {t} input: it takes a link from another node, not a literal value"),
        )),
    }
}

#[derive(Clone, Copy)]
enum N {
    I(i128),
    F(f64),
}

fn num(n: &Number) -> N {
    let s = n.to_string();
    s.parse::<i128>()
        .map(N::I)
        .unwrap_or_else(|_| N::F(s.parse().unwrap_or(f64::NAN)))
}

fn lt(a: &N, b: &N) -> bool {
    match (a, b) {
        (N::I(x), N::I(y)) => x < y,
        (N::I(x), N::F(y)) => (*x as f64) < *y,
        (N::F(x), N::I(y)) => *x < (*y as f64),
        (N::F(x), N::F(y)) => x < y,
    }
}

/// Every literal input of the prompt, with what the schema says about it.
pub fn parameters(prompt: &Prompt, info: Option<&ObjectInfo>) -> Vec<Parameter> {
    let mut out = Vec::new();
    for (id, node) in &prompt.nodes {
        let schema = info.and_then(|i| i.get(node.class()));
        for (name, value) in &node.inputs {
            let Some(literal) = value.literal() else { continue };
            let spec = schema.and_then(|s| s.input(name));
            let input_type = match spec {
                Some(s) => s.input_type.name().to_string(),
                None => guess_type(&literal).to_string(),
            };
            out.push(Parameter {
                node_id: id.clone(),
                class_type: node.class_type.clone(),
                title: node.title().map(str::to_string),
                input: name.clone(),
                input_type,
                min: spec.and_then(|s| s.min.clone()),
                max: spec.and_then(|s| s.max.clone()),
                step: spec.and_then(|s| s.step.clone()),
                options: spec.and_then(|s| match &s.input_type {
                    InputType::Combo { options, .. } => Some(options.clone()),
                    _ => None,
                }),
                default: spec.and_then(InputSpec::default_value),
                value: literal,
                selector: format!("{id}.{name}"),
            });
        }
    }
    out
}

fn guess_type(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "BOOLEAN",
        Value::Number(n) if n.to_string().parse::<i128>().is_ok() => "INT",
        Value::Number(_) => "FLOAT",
        Value::String(_) => "STRING",
        Value::Array(_) => "LIST",
        _ => "*",
    }
}
