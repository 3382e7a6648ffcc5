//! UI workflow → API prompt without a browser, matching the frontend's `graphToPrompt` (1.27.10).
//!
//! Steps, in the frontend's order: map each node's `widgets_values` to input names through `/object_info`
//! ([`map_widgets`]); let legacy `PrimitiveNode`s push their value into the widgets they feed; flatten subgraphs
//! into ids `"<instance>:<inner>"`; resolve every link through legacy `Reroute`s, bypassed (mode 4) nodes and
//! subgraph boundaries; drop virtual, muted (mode 2) and bypassed nodes; delete links into nodes that are not
//! emitted; format `%date:…%` in `filename_prefix`. Nodes whose class the server does not know are still emitted
//! (with the links we can resolve) and listed in [`Conversion::unknown_classes`].
use super::graph::{InputValue, Link, Meta, Prompt, PromptNode};
use super::load::Workflow;
use super::schema::{InputSpec, InputType, NodeSchema, ObjectInfo};
use super::ui::{SubgraphDef, UiGraph, UiNode, UiWorkflow, WidgetsValues, SUBGRAPH_INPUT_NODE, SUBGRAPH_OUTPUT_NODE};
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

/// The result of a conversion.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversion {
    pub prompt: Prompt,
    /// Places where the result depends on data we do not have (a widget count that does not match the server's
    /// class, a dangling link, a browser-only widget…).
    pub warnings: Vec<Warning>,
    /// Classes used by emitted nodes that `/object_info` does not list (sorted, unique).
    pub unknown_classes: Vec<String>,
}

/// Something the caller should know about a conversion; `code` is stable snake_case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub code: String,
    pub node_id: Option<String>,
    pub message: String,
}

/// A wall-clock time for `%date:…%` (the frontend uses the browser's local time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl CivilTime {
    /// The time `unix_seconds` after the epoch, in UTC.
    pub fn from_unix(unix_seconds: i64) -> CivilTime {
        let days = unix_seconds.div_euclid(86_400);
        let secs = unix_seconds.rem_euclid(86_400);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        CivilTime {
            year,
            month,
            day,
            hour: (secs / 3600) as u32,
            minute: (secs % 3600 / 60) as u32,
            second: (secs % 60) as u32,
        }
    }
    /// Now, in UTC.
    pub fn now_utc() -> CivilTime {
        CivilTime::from_unix(unix_now())
    }

    /// Now, in the local time zone: what the frontend formats (`new Date()` in the browser, read with
    /// `getHours()` etc.). UTC when the platform cannot tell the zone.
    pub fn now_local() -> CivilTime {
        let secs = unix_now();
        CivilTime::local_from_unix(secs).unwrap_or_else(|| CivilTime::from_unix(secs))
    }

    /// The time `unix_seconds` after the epoch in the local time zone (the C library's view of it: `TZ`, else
    /// the system's zone). `None` when it cannot be told.
    pub fn local_from_unix(unix_seconds: i64) -> Option<CivilTime> {
        let tm = local_tm(unix_seconds)?;
        Some(CivilTime {
            year: i64::from(tm.tm_year) + 1900,
            month: u32::try_from(tm.tm_mon + 1).ok()?,
            day: u32::try_from(tm.tm_mday).ok()?,
            hour: u32::try_from(tm.tm_hour).ok()?,
            minute: u32::try_from(tm.tm_min).ok()?,
            // A leap second (60) is shown as 59, as a browser does.
            second: u32::try_from(tm.tm_sec.min(59)).ok()?,
        })
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(unix)]
fn local_tm(unix_seconds: i64) -> Option<libc::tm> {
    let t = libc::time_t::try_from(unix_seconds).ok()?;
    // SAFETY: an all-zero `tm` is a valid value (plain integers and, on some systems, a null zone-name pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: the reentrant form writes only into `tm`, which we own; both pointers are valid for the call.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    (!r.is_null()).then_some(tm)
}

#[cfg(windows)]
fn local_tm(unix_seconds: i64) -> Option<libc::tm> {
    let t = libc::time_t::try_from(unix_seconds).ok()?;
    // SAFETY: an all-zero `tm` is a valid value of plain integers.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: `localtime_s` writes only into `tm`, which we own; both pointers are valid for the call.
    let r = unsafe { libc::localtime_s(&mut tm, &t) };
    (r == 0).then_some(tm)
}

#[cfg(not(any(unix, windows)))]
fn local_tm(_unix_seconds: i64) -> Option<()> {
    None
}

/// Conversion settings.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// The clock for `%date:…%`; `None` = [`CivilTime::now_local`], like the frontend.
    pub now: Option<CivilTime>,
}

/// Frontend-only node types: never in the prompt; Reroute passes links through, PrimitiveNode feeds widgets.
pub fn is_virtual(node_type: &str) -> bool {
    matches!(node_type, "Reroute" | "PrimitiveNode" | "Note" | "MarkdownNote")
}

/// Classes whose `filename_prefix` the frontend formats (`%date:…%`, `%Node.widget%`) before sending.
const SAVE_CLASSES: &[&str] = &[
    "SaveImage",
    "SaveVideo",
    "SaveAnimatedWEBP",
    "SaveWEBM",
    "SaveAudio",
    "SaveAudioMP3",
    "SaveAudioOpus",
    "SaveGLB",
    "SaveAnimatedPNG",
    "CLIPSave",
    "VAESave",
    "ModelSave",
    "LoraSave",
    "SaveLatent",
];

const MAX_DEPTH: usize = 64;

/// Converts a UI workflow into the API prompt the frontend would send.
pub fn convert(workflow: &UiWorkflow, info: &ObjectInfo, options: &ConvertOptions) -> Conversion {
    let mut cx = Converter {
        wf: workflow,
        info,
        now: options.now.unwrap_or_else(CivilTime::now_local),
        widgets: HashMap::new(),
        promoted: HashMap::new(),
        out: IndexMap::new(),
        warnings: Vec::new(),
        unknown: BTreeSet::new(),
    };
    let root = vec![Frame {
        graph: &workflow.graph,
        prefix: String::new(),
        instance: None,
        def: None,
    }];
    cx.collect_widgets(&root);
    cx.apply_primitives(&root);
    cx.emit(&root);
    cx.drop_dangling_links();
    Conversion {
        prompt: Prompt { nodes: cx.out },
        warnings: cx.warnings,
        unknown_classes: cx.unknown.into_iter().collect(),
    }
}

/// Either format to an API prompt: UI workflows are converted, API prompts pass through (their classes still
/// checked against `info` for [`Conversion::unknown_classes`]).
pub fn to_api(workflow: &Workflow, info: &ObjectInfo, options: &ConvertOptions) -> Conversion {
    match workflow {
        Workflow::Ui(ui) => convert(ui, info, options),
        Workflow::Api(prompt) => {
            let unknown: BTreeSet<String> = prompt
                .nodes
                .values()
                .filter_map(|n| n.class_type.clone())
                .filter(|c| !info.contains(c))
                .collect();
            Conversion {
                prompt: prompt.clone(),
                warnings: Vec::new(),
                unknown_classes: unknown.into_iter().collect(),
            }
        }
    }
}

/// One graph level while walking subgraphs: the root, or a definition entered through an instance node.
struct Frame<'a> {
    graph: &'a UiGraph,
    /// Execution-id prefix: `""`, `"5:"`, `"5:7:"`.
    prefix: String,
    instance: Option<&'a UiNode>,
    def: Option<&'a SubgraphDef>,
}

enum Resolved {
    Link(Link),
    Value(Value),
}

struct Converter<'a> {
    wf: &'a UiWorkflow,
    info: &'a ObjectInfo,
    now: CivilTime,
    /// Widget values by execution id, in widget order.
    widgets: HashMap<String, IndexMap<String, Value>>,
    /// Promoted widget values of subgraph instances, by the instance's execution id and subgraph input name.
    promoted: HashMap<String, HashMap<String, Value>>,
    out: IndexMap<String, PromptNode>,
    warnings: Vec<Warning>,
    unknown: BTreeSet<String>,
}

impl<'a> Converter<'a> {
    fn warn(&mut self, code: &str, node_id: Option<&str>, message: String) {
        self.warnings.push(Warning {
            code: code.to_string(),
            node_id: node_id.map(str::to_string),
            message,
        });
    }

    fn subgraph(&self, node: &UiNode) -> Option<&'a SubgraphDef> {
        self.wf.subgraphs.get(&node.node_type)
    }

    fn enter(&self, stack: &[Frame<'a>], node: &'a UiNode, def: &'a SubgraphDef) -> Option<Frame<'a>> {
        if stack.len() > MAX_DEPTH || stack.iter().any(|f| f.def.is_some_and(|d| d.id == def.id)) {
            return None;
        }
        let prefix = stack.last().map(|f| f.prefix.as_str()).unwrap_or("");
        Some(Frame {
            graph: &def.graph,
            prefix: format!("{prefix}{}:", node.id),
            instance: Some(node),
            def: Some(def),
        })
    }

    /// Pass 1: widget values of every real node (all levels) and promoted values of subgraph instances.
    fn collect_widgets(&mut self, stack: &[Frame<'a>]) {
        let Some(frame) = stack.last() else { return };
        for node in &frame.graph.nodes {
            let exec_id = format!("{}{}", frame.prefix, node.id);
            if let Some(def) = self.subgraph(node) {
                let values = promoted_values(node, def);
                self.promoted.insert(exec_id.clone(), values);
                if let Some(inner) = self.enter(stack, node, def) {
                    let mut deeper: Vec<Frame<'a>> = stack_clone(stack);
                    deeper.push(inner);
                    self.collect_widgets(&deeper);
                } else {
                    self.warn(
                        "subgraph_recursion",
                        Some(&exec_id),
                        format!("subgraph {} contains itself; its inner nodes are skipped", def.name),
                    );
                }
                continue;
            }
            if is_virtual(&node.node_type) {
                continue;
            }
            let Some(schema) = self.info.get(&node.node_type) else {
                continue;
            };
            let (values, warning) = map_widgets(node, schema);
            if let Some(message) = warning {
                self.warn("widget_count_mismatch", Some(&exec_id), message);
            }
            for spec in schema
                .inputs
                .iter()
                .filter(|s| s.is_widget() && matches!(s.input_type, InputType::Other(_)))
            {
                self.warn(
                    "browser_widget",
                    Some(&exec_id),
                    format!(
                        "input {} of node {exec_id} ({}) is a {} widget whose value the browser makes (a capture or \
                         upload); the saved value is sent as is",
                        spec.name,
                        node.node_type,
                        spec.input_type.name()
                    ),
                );
            }
            self.widgets.insert(exec_id, values);
        }
    }

    /// Pass 2: legacy PrimitiveNodes copy their value into every widget they feed (`applyToGraph`).
    fn apply_primitives(&mut self, stack: &[Frame<'a>]) {
        let Some(frame) = stack.last() else { return };
        for node in &frame.graph.nodes {
            if let Some(def) = self.subgraph(node) {
                if let Some(inner) = self.enter(stack, node, def) {
                    let mut deeper = stack_clone(stack);
                    deeper.push(inner);
                    self.apply_primitives(&deeper);
                }
                continue;
            }
            if node.node_type != "PrimitiveNode" {
                continue;
            }
            let WidgetsValues::List(values) = &node.widgets_values else {
                continue;
            };
            let Some(mut value) = values.first().cloned() else {
                continue;
            };
            let replace = node
                .properties
                .get("Run widget replace on values")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if replace {
                if let Value::String(s) = &value {
                    value = Value::String(self.replace_text(frame, s));
                }
            }
            for link_id in node.outputs.iter().flat_map(|o| o.links.iter()) {
                let Some(link) = frame.graph.links.get(link_id) else {
                    continue;
                };
                let Some(target) = frame.graph.node(&link.target_id) else {
                    continue;
                };
                let Some(input) = target.inputs.get(link.target_slot) else {
                    continue;
                };
                let name = input.input_name().to_string();
                let target_exec = format!("{}{}", frame.prefix, target.id);
                if self.subgraph(target).is_some() {
                    self.promoted
                        .entry(target_exec)
                        .or_default()
                        .insert(name, value.clone());
                } else if let Some(widgets) = self.widgets.get_mut(&target_exec) {
                    if let Some(slot) = widgets.get_mut(&name) {
                        *slot = value.clone();
                    }
                }
            }
        }
    }

    /// Pass 3: emit every real, active node with its widget values and resolved links.
    fn emit(&mut self, stack: &[Frame<'a>]) {
        let Some(frame) = stack.last() else { return };
        for node in &frame.graph.nodes {
            let exec_id = format!("{}{}", frame.prefix, node.id);
            if let Some(def) = self.subgraph(node) {
                if node.is_muted() || node.is_bypassed() {
                    continue;
                }
                if let Some(inner) = self.enter(stack, node, def) {
                    let mut deeper = stack_clone(stack);
                    deeper.push(inner);
                    self.emit(&deeper);
                }
                continue;
            }
            if is_virtual(&node.node_type) || node.is_muted() || node.is_bypassed() {
                continue;
            }
            if node.node_type.starts_with("workflow>") || node.node_type.starts_with("workflow/") {
                self.warn(
                    "legacy_group_node",
                    Some(&exec_id),
                    format!(
                        "node {exec_id} is a legacy group node ({}); these are not expanded, convert it to a subgraph in ComfyUI",
                        node.node_type
                    ),
                );
            }
            let schema = self.info.get(&node.node_type);
            let mut inputs: IndexMap<String, InputValue> = IndexMap::new();
            if let Some(values) = self.widgets.get(&exec_id) {
                for (name, value) in values {
                    let value = if node_saves(&node.node_type) && name == "filename_prefix" {
                        match value {
                            Value::String(s) => Value::String(self.replace_text(frame, s)),
                            other => other.clone(),
                        }
                    } else {
                        value.clone()
                    };
                    inputs.insert(name.clone(), InputValue::from_value(value));
                }
            }
            for input in &node.inputs {
                let Some(link_id) = input.link else { continue };
                let resolved = self.resolve_link(stack, link_id, &input.slot_type, 0);
                if resolved.is_none() && input.widget.is_none() && from_subgraph_input(frame.graph, link_id) {
                    self.warn(
                        "subgraph_input_unresolved",
                        Some(&exec_id),
                        format!(
                            "input {} of node {exec_id} comes from a subgraph input that is neither connected nor \
                             has a value we can read (its widget belongs to a class the server does not list?)",
                            input.name
                        ),
                    );
                }
                match resolved {
                    Some(Resolved::Link(link)) => {
                        inputs.insert(input.input_name().to_string(), InputValue::Link(link));
                    }
                    Some(Resolved::Value(v)) => {
                        inputs.insert(input.input_name().to_string(), InputValue::from_value(v));
                    }
                    None => {}
                }
            }
            let title = node
                .title
                .clone()
                .unwrap_or_else(|| schema.map(|s| s.title()).unwrap_or_else(|| node.node_type.clone()));
            if schema.is_none() {
                self.unknown.insert(node.node_type.clone());
                let has_widgets = !matches!(&node.widgets_values, WidgetsValues::None)
                    && !matches!(&node.widgets_values, WidgetsValues::List(v) if v.is_empty());
                self.warn(
                    "unknown_class",
                    Some(&exec_id),
                    format!(
                        "node {exec_id} uses class {}, which the server does not list (a missing custom node?); {}",
                        node.node_type,
                        if has_widgets {
                            "its widget values cannot be named and are left out"
                        } else {
                            "it cannot be validated"
                        }
                    ),
                );
            }
            self.out.insert(
                exec_id,
                PromptNode {
                    inputs,
                    class_type: Some(node.node_type.clone()),
                    meta: Some(Meta { title: Some(title) }),
                },
            );
        }
    }

    fn resolve_link(&mut self, stack: &[Frame<'a>], link_id: i64, target_type: &str, depth: usize) -> Option<Resolved> {
        let frame = stack.last()?;
        let Some(link) = frame.graph.links.get(&link_id) else {
            self.warn(
                "dangling_link",
                None,
                format!("link {link_id} is used by a node but missing from the links list; input dropped"),
            );
            return None;
        };
        self.resolve_output(stack, &link.origin_id, link.origin_slot, target_type, depth + 1)
    }

    /// What feeds a target through output `slot` of node `node_id` at the current level.
    fn resolve_output(
        &mut self,
        stack: &[Frame<'a>],
        node_id: &str,
        slot: usize,
        target_type: &str,
        depth: usize,
    ) -> Option<Resolved> {
        if depth > MAX_DEPTH * 4 {
            self.warn(
                "link_cycle",
                Some(node_id),
                format!("links through node {node_id} form a cycle"),
            );
            return None;
        }
        let frame = stack.last()?;
        if node_id == SUBGRAPH_INPUT_NODE {
            let (instance, def) = (frame.instance?, frame.def?);
            let sg_input = def.inputs.get(slot)?;
            // Saved instances list only connected widget inputs, so match by name; by index only when the lists
            // line up.
            let outer = instance.inputs.iter().find(|i| i.name == sg_input.name).or_else(|| {
                (instance.inputs.len() == def.inputs.len())
                    .then(|| instance.inputs.get(slot))
                    .flatten()
            });
            let parent = &stack[..stack.len() - 1];
            if let Some(link) = outer.and_then(|i| i.link) {
                return self.resolve_link(parent, link, target_type, depth);
            }
            let exec = format!("{}{}", parent.last()?.prefix, instance.id);
            if let Some(v) = self.promoted.get(&exec).and_then(|p| p.get(&sg_input.name)) {
                return Some(Resolved::Value(v.clone()));
            }
            // No value saved on the instance (newer `proxyWidgets` files): the promoted widget shows the value of
            // the inner widget it was promoted from.
            return sg_input
                .link_ids
                .iter()
                .filter_map(|id| def.graph.links.get(id))
                .find_map(|l| {
                    let target = def.graph.node(&l.target_id)?;
                    let widget = target.inputs.get(l.target_slot)?.widget.as_deref()?;
                    self.widgets
                        .get(&format!("{}{}", frame.prefix, target.id))?
                        .get(widget)
                        .cloned()
                })
                .map(Resolved::Value);
        }
        let Some(node) = frame.graph.node(node_id) else {
            self.warn(
                "dangling_link",
                Some(node_id),
                format!(
                    "a link comes from node {}{node_id}, which does not exist; input dropped",
                    frame.prefix
                ),
            );
            return None;
        };
        if node.is_bypassed() {
            let index = bypass_input(node, slot, target_type)?;
            let link = node.inputs.get(index)?.link?;
            return self.resolve_link(stack, link, target_type, depth);
        }
        if let Some(def) = self.subgraph(node) {
            if node.is_muted() {
                return Some(Resolved::Link(Link {
                    node: format!("{}{}", frame.prefix, node.id),
                    slot: slot as u64,
                }));
            }
            let inner = self.enter(stack, node, def)?;
            let feeding = def
                .graph
                .links
                .values()
                .find(|l| l.target_id == SUBGRAPH_OUTPUT_NODE && l.target_slot == slot)?;
            let (origin, origin_slot) = (feeding.origin_id.clone(), feeding.origin_slot);
            let mut deeper = stack_clone(stack);
            deeper.push(inner);
            return self.resolve_output(&deeper, &origin, origin_slot, target_type, depth + 1);
        }
        if node.node_type == "Reroute" {
            let link = node.inputs.get(slot)?.link?;
            return self.resolve_link(stack, link, target_type, depth);
        }
        if is_virtual(&node.node_type) {
            return None;
        }
        Some(Resolved::Link(Link {
            node: format!("{}{}", frame.prefix, node.id),
            slot: slot as u64,
        }))
    }

    /// Step 5: inputs that link to nodes not in the prompt (muted ones) are deleted.
    fn drop_dangling_links(&mut self) {
        let ids: BTreeSet<String> = self.out.keys().cloned().collect();
        let mut notes = Vec::new();
        for (id, node) in self.out.iter_mut() {
            node.inputs.retain(|name, value| match value {
                InputValue::Link(link) if !ids.contains(&link.node) => {
                    notes.push((id.clone(), name.clone(), link.node.clone()));
                    false
                }
                _ => true,
            });
        }
        for (id, name, from) in notes {
            self.warn(
                "input_from_dropped_node",
                Some(&id),
                format!("input {name} of node {id} came from node {from}, which is muted or not emitted; removed"),
            );
        }
    }

    /// `applyTextReplacements`: `%date:FORMAT%` and `%Node.widget%` (S&R name, then title, at this level).
    fn replace_text(&self, frame: &Frame<'a>, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find('%') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('%') else { break };
            let inner = &after[..end];
            out.push_str(&rest[..start]);
            if inner.is_empty() {
                // `%%`: the regex needs one non-% char; keep the first % and rescan from the second.
                out.push('%');
                rest = after;
                continue;
            }
            out.push_str(&self.replacement(frame, inner).unwrap_or_else(|| format!("%{inner}%")));
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn replacement(&self, frame: &Frame<'a>, inner: &str) -> Option<String> {
        let parts: Vec<&str> = inner.split('.').collect();
        if parts.len() != 2 {
            return inner.strip_prefix("date:").map(|f| format_date(f, &self.now));
        }
        let (node_name, widget) = (parts[0], parts[1]);
        let nodes = &frame.graph.nodes;
        let node = nodes
            .iter()
            .find(|n| n.sr_name() == Some(node_name))
            .or_else(|| nodes.iter().find(|n| n.title.as_deref() == Some(node_name)))?;
        let value = self
            .widgets
            .get(&format!("{}{}", frame.prefix, node.id))
            .and_then(|w| w.get(widget))?;
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        Some(
            text.chars()
                .map(|c| {
                    if matches!(c, '/' | '?' | '<' | '>' | '\\' | ':' | '*' | '|' | '"')
                        || (c as u32) < 0x20
                        || c == '\x7f'
                    {
                        '_'
                    } else {
                        c
                    }
                })
                .collect(),
        )
    }
}

fn stack_clone<'a>(stack: &[Frame<'a>]) -> Vec<Frame<'a>> {
    stack
        .iter()
        .map(|f| Frame {
            graph: f.graph,
            prefix: f.prefix.clone(),
            instance: f.instance,
            def: f.def,
        })
        .collect()
}

fn from_subgraph_input(graph: &UiGraph, link_id: i64) -> bool {
    graph
        .links
        .get(&link_id)
        .is_some_and(|l| l.origin_id == SUBGRAPH_INPUT_NODE)
}

fn node_saves(class: &str) -> bool {
    SAVE_CLASSES.contains(&class)
}

/// The frontend's `formatDate`: `yyyy`, `yy`, `MM`/`M`, `dd`/`d`, `hh`/`h`, `mm`/`m`, `ss`/`s`.
pub fn format_date(format: &str, t: &CivilTime) -> String {
    let chars: Vec<char> = format.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|x| **x == c).count();
        match c {
            'y' if run >= 2 => {
                // The regex `yyy?y?` takes up to four y's; "yyyy" → year, "yy" → 2 digits, "yyy" stays.
                let take = run.min(4);
                match take {
                    4 => out.push_str(&t.year.to_string()),
                    2 => out.push_str(&format!("{:02}", t.year.rem_euclid(100))),
                    _ => out.push_str("yyy"),
                }
                i += take;
            }
            'M' | 'd' | 'h' | 'm' | 's' => {
                let take = run.min(2);
                let v = match c {
                    'M' => t.month,
                    'd' => t.day,
                    'h' => t.hour,
                    'm' => t.minute,
                    _ => t.second,
                };
                out.push_str(&format!("{v:0take$}"));
                i += take;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// A bypassed node's input that stands in for its output `slot` toward a target of type `target_type`
/// (`ExecutableNodeDTO` bypass rules).
fn bypass_input(node: &UiNode, slot: usize, target_type: &str) -> Option<usize> {
    let inputs = &node.inputs;
    if target_type == "*" || target_type.is_empty() {
        return if inputs.len() > slot {
            Some(slot)
        } else {
            (!inputs.is_empty()).then_some(0)
        };
    }
    let output_type = node.outputs.get(slot).map(|o| o.slot_type.as_str()).unwrap_or("");
    if let Some(same) = inputs.get(slot) {
        if types_compatible(&same.slot_type, output_type) && types_compatible(&same.slot_type, target_type) {
            return Some(slot);
        }
    }
    inputs.iter().position(|i| i.slot_type == target_type).or_else(|| {
        inputs
            .iter()
            .position(|i| types_compatible(&i.slot_type, output_type) && types_compatible(&i.slot_type, target_type))
    })
}

/// litegraph's `isValidConnection`: `*`/empty match anything, unions match on any shared member.
pub fn types_compatible(a: &str, b: &str) -> bool {
    if a.is_empty() || a == "*" || b.is_empty() || b == "*" || a == b {
        return true;
    }
    let bs: Vec<String> = b.split(',').map(|t| t.trim().to_lowercase()).collect();
    a.split(',').map(|t| t.trim().to_lowercase()).any(|t| bs.contains(&t))
}

/// A widget slot in creation order: a named input, or a value the frontend keeps but never sends
/// (`control_after_generate`, its filter, the upload button).
enum Slot<'s> {
    Input(&'s InputSpec),
    Extra,
}

fn widget_slots(schema: &NodeSchema, with_force_input: bool) -> Vec<Slot<'_>> {
    let mut slots = Vec::new();
    for spec in &schema.inputs {
        // Files saved before frontend 1.16 carry a value for `forceInput` widgets of widget types.
        let legacy_force = with_force_input && spec.force_input && spec.has_widget_type();
        if !spec.is_widget() && !legacy_force {
            continue;
        }
        slots.push(Slot::Input(spec));
        if spec.has_control_widget() {
            slots.push(Slot::Extra);
            if spec.input_type.is_combo() {
                slots.push(Slot::Extra);
            }
        }
        if spec.image_upload && spec.input_type.is_combo() {
            slots.push(Slot::Extra);
        }
    }
    slots
}

/// Names a node's `widgets_values` through its class's `input_order`; missing values get the widget default.
/// Returns the values (in widget order) and a warning when the count does not fit the class.
pub fn map_widgets(node: &UiNode, schema: &NodeSchema) -> (IndexMap<String, Value>, Option<String>) {
    let mut out = IndexMap::new();
    let mut warning = None;
    match &node.widgets_values {
        WidgetsValues::Map(map) => {
            for spec in schema.inputs.iter().filter(|s| s.is_widget()) {
                if let Some(v) = map.get(&spec.name).cloned().or_else(|| spec.default_value()) {
                    out.insert(spec.name.clone(), v);
                }
            }
        }
        WidgetsValues::None => {
            for spec in schema.inputs.iter().filter(|s| s.is_widget()) {
                if let Some(v) = spec.default_value() {
                    out.insert(spec.name.clone(), v);
                }
            }
        }
        WidgetsValues::List(values) => {
            let mut slots = widget_slots(schema, false);
            let has_force = schema.inputs.iter().any(|s| s.force_input && s.has_widget_type());
            if has_force && values.len() != slots.len() {
                let legacy = widget_slots(schema, true);
                if legacy.len() == values.len() {
                    slots = legacy;
                }
            }
            for (i, slot) in slots.iter().enumerate() {
                let Slot::Input(spec) = slot else { continue };
                if spec.force_input && !spec.is_widget() {
                    continue;
                }
                if let Some(v) = values.get(i).cloned().or_else(|| spec.default_value()) {
                    out.insert(spec.name.clone(), v);
                }
            }
            let extra_are_blank = values.len() > slots.len() && values[slots.len()..].iter().all(Value::is_null);
            if values.len() != slots.len() && !extra_are_blank {
                warning = Some(format!(
                    "node {} ({}) has {} widget values, the server's class has {} widget slots; mapped in order{} \
                     (a workflow from another ComfyUI version?)",
                    node.id,
                    node.node_type,
                    values.len(),
                    slots.len(),
                    if values.len() < slots.len() {
                        ", missing ones take defaults"
                    } else {
                        ", extra ones ignored"
                    },
                ));
            }
        }
    }
    (out, warning)
}

/// Promoted widget values of a subgraph instance: `widgets_values[i]` belongs to the i-th subgraph input that
/// feeds a widget inside the definition.
fn promoted_values(instance: &UiNode, def: &SubgraphDef) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    let WidgetsValues::List(values) = &instance.widgets_values else {
        return out;
    };
    let widget_inputs = def.inputs.iter().filter(|input| {
        let feeds_widget = input.link_ids.iter().any(|id| {
            def.graph.links.get(id).is_some_and(|l| {
                def.graph
                    .node(&l.target_id)
                    .and_then(|n| n.inputs.get(l.target_slot))
                    .is_some_and(|i| i.widget.is_some())
            })
        });
        feeds_widget
            || matches!(
                input.slot_type.as_str(),
                "INT" | "FLOAT" | "STRING" | "BOOLEAN" | "COMBO"
            )
    });
    for (input, value) in widget_inputs.zip(values.iter()) {
        out.insert(input.name.clone(), value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates_like_the_frontend() {
        let t = CivilTime::from_unix(1_795_305_600 + 3 * 3600 + 4 * 60 + 5);
        assert_eq!((t.year, t.month, t.day), (2026, 11, 22));
        assert_eq!(format_date("yyyy-MM-dd", &t), "2026-11-22");
        assert_eq!(format_date("yy/M/d hh:mm:ss", &t), "26/11/22 03:04:05");
        assert_eq!(format_date("h-m-s yyy", &t), "3-4-5 yyy");
    }

    /// The frontend formats `%date:…%` in the browser's local time; so do we. The zone is fixed for a child
    /// process (`TZ` is read by the C library, and changing it in this multi-threaded test process would race),
    /// at UTC+05:45 so that neither the hour nor the minute can match UTC by accident.
    #[test]
    fn dates_use_the_local_time_zone() {
        const CHILD: &str = "DIRECTOR_LINK_TZ_CHILD";
        const NAME: &str = "workflow::convert::tests::dates_use_the_local_time_zone";
        if std::env::var_os(CHILD).is_some() {
            let utc = 1_795_305_600 + 3 * 3600 + 4 * 60 + 5; // 2026-11-22 03:04:05 UTC
            let local = CivilTime::local_from_unix(utc).unwrap_or_else(|| panic!("no local time"));
            assert_eq!(format_date("yyyy-MM-dd hh:mm:ss", &local), "2026-11-22 08:49:05");
            // What a conversion uses when no clock is given: the local time now.
            let before = unix_now();
            let now = CivilTime::now_local();
            let after = unix_now();
            let expected: Vec<CivilTime> = (before..=after)
                .map(|s| CivilTime::from_unix(s + 5 * 3600 + 45 * 60))
                .collect();
            assert!(expected.contains(&now), "{now:?} is not local time ({expected:?})");
            return;
        }
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
        let out = std::process::Command::new(exe)
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env("TZ", "XYZ-05:45")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn union_types_are_compatible_on_a_shared_member() {
        assert!(types_compatible("IMAGE,MASK", "mask"));
        assert!(types_compatible("*", "LATENT"));
        assert!(!types_compatible("INT", "IMAGE"));
    }
}
