//! The UI workflow format (`workflow.json`, what the frontend saves): nodes, links, subgraph definitions.
//!
//! Parsing is lenient where the frontend is (ids as numbers or strings, links as arrays or objects, `null` lists)
//! and strict where a conversion would otherwise guess; errors carry the JSON path.
use super::error::{error, Error, ErrorKind, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Node modes (`LGraphEventMode`).
pub const MODE_ALWAYS: i64 = 0;
pub const MODE_NEVER: i64 = 2;
pub const MODE_BYPASS: i64 = 4;

/// The subgraph IO pseudo-nodes' ids inside a definition.
pub const SUBGRAPH_INPUT_NODE: &str = "-10";
pub const SUBGRAPH_OUTPUT_NODE: &str = "-20";

/// A whole UI workflow (root graph plus subgraph definitions, nested definitions flattened into one map).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UiWorkflow {
    pub graph: UiGraph,
    pub subgraphs: HashMap<String, SubgraphDef>,
    /// The raw JSON, kept for `extra_pnginfo` (the frontend embeds the workflow into saved images).
    pub raw: Value,
}

/// Nodes and links of one graph level.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UiGraph {
    pub nodes: Vec<UiNode>,
    pub links: HashMap<i64, UiLink>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UiNode {
    /// The id as a string (`5`, or a string id as saved).
    pub id: String,
    /// Class name, or a subgraph definition's uuid.
    pub node_type: String,
    pub mode: i64,
    pub title: Option<String>,
    pub inputs: Vec<UiInput>,
    pub outputs: Vec<UiOutput>,
    pub widgets_values: WidgetsValues,
    pub properties: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub enum WidgetsValues {
    #[default]
    None,
    List(Vec<Value>),
    /// Some custom nodes (VideoHelperSuite) save an object keyed by widget name.
    Map(Map<String, Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct UiInput {
    pub name: String,
    pub slot_type: String,
    pub link: Option<i64>,
    /// `widget.name` when this socket belongs to a widget.
    pub widget: Option<String>,
}

impl UiInput {
    /// The API input name: the widget's name for widget sockets, else the socket name.
    pub fn input_name(&self) -> &str {
        self.widget.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UiOutput {
    pub name: String,
    pub slot_type: String,
    pub links: Vec<i64>,
    pub widget: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UiLink {
    pub id: i64,
    pub origin_id: String,
    pub origin_slot: usize,
    pub target_id: String,
    pub target_slot: usize,
    pub link_type: String,
}

/// A subgraph definition (`definitions.subgraphs[]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubgraphDef {
    pub id: String,
    pub name: String,
    pub inputs: Vec<SubgraphSlot>,
    pub outputs: Vec<SubgraphSlot>,
    pub graph: UiGraph,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubgraphSlot {
    pub name: String,
    pub slot_type: String,
    pub link_ids: Vec<i64>,
}

impl UiNode {
    pub fn is_muted(&self) -> bool {
        self.mode == MODE_NEVER
    }
    pub fn is_bypassed(&self) -> bool {
        self.mode == MODE_BYPASS
    }
    /// `properties["Node name for S&R"]`.
    pub fn sr_name(&self) -> Option<&str> {
        self.properties.get("Node name for S&R").and_then(Value::as_str)
    }
}

impl UiGraph {
    pub fn node(&self, id: &str) -> Option<&UiNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// True for JSON that looks like a UI workflow (`nodes` and `links` at the top).
pub fn looks_like_ui(value: &Value) -> bool {
    value.get("nodes").is_some_and(Value::is_array) && value.get("links").is_some()
}

impl UiWorkflow {
    /// Parses a UI workflow; `origin` (a file name) starts every error message.
    pub fn from_value(value: Value, origin: &str) -> Result<UiWorkflow> {
        let at = Ctx { origin };
        let obj = value
            .as_object()
            .ok_or_else(|| at.err("$", "a JSON object with `nodes` and `links`", &value))?;
        let graph = parse_graph(&at, obj, "$")?;
        let mut subgraphs = HashMap::new();
        collect_definitions(&at, obj, "$", &mut subgraphs)?;
        Ok(UiWorkflow {
            graph,
            subgraphs,
            raw: value,
        })
    }
}

struct Ctx<'a> {
    origin: &'a str,
}

impl Ctx<'_> {
    fn err(&self, path: &str, expected: &str, found: &Value) -> Error {
        error(
            ErrorKind::InvalidWorkflow,
            format!(
                "{}: at {path}: expected {expected}, found {}",
                self.origin,
                describe(found)
            ),
        )
    }
}

fn describe(v: &Value) -> String {
    let kind = match v {
        Value::Null => return "null".into(),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let mut text = v.to_string();
    if text.len() > 60 {
        let cut = (0..=60).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    format!("{kind} {text}")
}

fn collect_definitions(
    at: &Ctx,
    obj: &Map<String, Value>,
    path: &str,
    out: &mut HashMap<String, SubgraphDef>,
) -> Result<()> {
    let Some(defs) = obj.get("definitions") else {
        return Ok(());
    };
    let Some(list) = defs.get("subgraphs") else {
        return Ok(());
    };
    let Some(items) = list.as_array() else {
        return Err(at.err(&format!("{path}.definitions.subgraphs"), "an array", list));
    };
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}.definitions.subgraphs[{i}]");
        let sobj = item
            .as_object()
            .ok_or_else(|| at.err(&p, "a subgraph definition object", item))?;
        let id = sobj
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                at.err(
                    &format!("{p}.id"),
                    "the subgraph's uuid string",
                    sobj.get("id").unwrap_or(&Value::Null),
                )
            })?
            .to_string();
        let def = SubgraphDef {
            id: id.clone(),
            name: sobj.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
            inputs: parse_subgraph_slots(at, sobj.get("inputs"), &format!("{p}.inputs"))?,
            outputs: parse_subgraph_slots(at, sobj.get("outputs"), &format!("{p}.outputs"))?,
            graph: parse_graph(at, sobj, &p)?,
        };
        out.insert(id, def);
        collect_definitions(at, sobj, &p, out)?;
    }
    Ok(())
}

fn parse_subgraph_slots(at: &Ctx, v: Option<&Value>, path: &str) -> Result<Vec<SubgraphSlot>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let items = v
        .as_array()
        .ok_or_else(|| at.err(path, "an array of subgraph slots", v))?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if !item.is_object() {
            return Err(at.err(&p, "a slot object {name, type, linkIds}", item));
        }
        out.push(SubgraphSlot {
            name: item.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
            slot_type: type_string(item.get("type")),
            link_ids: int_list(item.get("linkIds")),
        });
    }
    Ok(out)
}

fn parse_graph(at: &Ctx, obj: &Map<String, Value>, path: &str) -> Result<UiGraph> {
    let nodes_v = obj.get("nodes").unwrap_or(&Value::Null);
    let nodes_a = nodes_v
        .as_array()
        .ok_or_else(|| at.err(&format!("{path}.nodes"), "an array of nodes", nodes_v))?;
    let mut nodes = Vec::with_capacity(nodes_a.len());
    for (i, n) in nodes_a.iter().enumerate() {
        nodes.push(parse_node(at, n, &format!("{path}.nodes[{i}]"))?);
    }
    let mut links = HashMap::new();
    match obj.get("links") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, l) in items.iter().enumerate() {
                if l.is_null() {
                    continue;
                }
                let link = parse_link(at, l, &format!("{path}.links[{i}]"))?;
                links.insert(link.id, link);
            }
        }
        Some(other) => return Err(at.err(&format!("{path}.links"), "an array of links", other)),
    }
    Ok(UiGraph { nodes, links })
}

fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn type_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        // litegraph uses -1/0 for "any" in some old files.
        Some(Value::Number(_)) => "*".to_string(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
        _ => String::new(),
    }
}

fn int_list(v: Option<&Value>) -> Vec<i64> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

fn parse_node(at: &Ctx, v: &Value, path: &str) -> Result<UiNode> {
    let obj = v.as_object().ok_or_else(|| at.err(path, "a node object", v))?;
    let id_v = obj.get("id").unwrap_or(&Value::Null);
    let id = id_string(id_v).ok_or_else(|| at.err(&format!("{path}.id"), "a node id (number or string)", id_v))?;
    let type_v = obj.get("type").unwrap_or(&Value::Null);
    let node_type = type_v
        .as_str()
        .ok_or_else(|| at.err(&format!("{path}.type"), "the node's class name (a string)", type_v))?
        .to_string();
    let mode = obj.get("mode").and_then(Value::as_i64).unwrap_or(MODE_ALWAYS);
    let title = obj.get("title").and_then(Value::as_str).map(str::to_string);
    let mut inputs = Vec::new();
    match obj.get("inputs") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let p = format!("{path}.inputs[{i}]");
                if !item.is_object() {
                    return Err(at.err(&p, "an input slot object {name, type, link}", item));
                }
                let link = match item.get("link") {
                    None | Some(Value::Null) => None,
                    Some(l) => Some(
                        l.as_i64()
                            .ok_or_else(|| at.err(&format!("{p}.link"), "a link id (integer) or null", l))?,
                    ),
                };
                inputs.push(UiInput {
                    name: item.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                    slot_type: type_string(item.get("type")),
                    link,
                    widget: item
                        .get("widget")
                        .and_then(|w| w.get("name"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                });
            }
        }
        Some(other) => return Err(at.err(&format!("{path}.inputs"), "an array of input slots", other)),
    }
    let mut outputs = Vec::new();
    match obj.get("outputs") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if !item.is_object() {
                    return Err(at.err(&format!("{path}.outputs[{i}]"), "an output slot object", item));
                }
                outputs.push(UiOutput {
                    name: item.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                    slot_type: type_string(item.get("type")),
                    links: int_list(item.get("links")),
                    widget: item
                        .get("widget")
                        .and_then(|w| w.get("name"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                });
            }
        }
        Some(other) => return Err(at.err(&format!("{path}.outputs"), "an array of output slots", other)),
    }
    let widgets_values = match obj.get("widgets_values") {
        None | Some(Value::Null) => WidgetsValues::None,
        Some(Value::Array(items)) => WidgetsValues::List(items.clone()),
        Some(Value::Object(map)) => WidgetsValues::Map(map.clone()),
        Some(other) => {
            return Err(at.err(
                &format!("{path}.widgets_values"),
                "an array (or an object) of widget values",
                other,
            ))
        }
    };
    let properties = obj
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    Ok(UiNode {
        id,
        node_type,
        mode,
        title,
        inputs,
        outputs,
        widgets_values,
        properties,
    })
}

fn parse_link(at: &Ctx, v: &Value, path: &str) -> Result<UiLink> {
    let bad = || {
        at.err(
            path,
            "a link [id, origin_id, origin_slot, target_id, target_slot, type] or {id, origin_id, …}",
            v,
        )
    };
    let slot = |v: Option<&Value>| v.and_then(Value::as_u64).map(|s| s as usize);
    match v {
        Value::Array(a) if a.len() >= 5 => Ok(UiLink {
            id: a[0].as_i64().ok_or_else(bad)?,
            origin_id: id_string(&a[1]).ok_or_else(bad)?,
            origin_slot: slot(a.get(2)).ok_or_else(bad)?,
            target_id: id_string(&a[3]).ok_or_else(bad)?,
            target_slot: slot(a.get(4)).ok_or_else(bad)?,
            link_type: type_string(a.get(5)),
        }),
        Value::Object(o) => Ok(UiLink {
            id: o.get("id").and_then(Value::as_i64).ok_or_else(bad)?,
            origin_id: o.get("origin_id").and_then(id_string).ok_or_else(bad)?,
            origin_slot: slot(o.get("origin_slot")).ok_or_else(bad)?,
            target_id: o.get("target_id").and_then(id_string).ok_or_else(bad)?,
            target_slot: slot(o.get("target_slot")).ok_or_else(bad)?,
            link_type: type_string(o.get("type")),
        }),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_name_the_file_and_the_json_path() {
        let v = json!({"nodes": [{"id": 1, "type": "A"}, {"id": 2}], "links": []});
        let err = UiWorkflow::from_value(v, "x.json").unwrap_err();
        assert_eq!(err.reason().unwrap_or_default(), "invalid_workflow");
        assert!(
            err.message.starts_with("x.json: at $.nodes[1].type: expected"),
            "{}",
            err.message
        );
    }

    #[test]
    fn links_in_array_and_object_form() {
        let v = json!({"nodes": [], "links": [[1, 2, 0, 3, 1, "IMAGE"], null],
            "definitions": {"subgraphs": [{"id": "u", "nodes": [], "inputs": [], "outputs": [],
            "links": [{"id": 4, "origin_id": -10, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "IMAGE"}]}]}});
        let wf = UiWorkflow::from_value(v, "x").unwrap();
        assert_eq!(wf.graph.links[&1].target_slot, 1);
        assert_eq!(wf.subgraphs["u"].graph.links[&4].origin_id, "-10");
    }
}
