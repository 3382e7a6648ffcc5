//! A typed view of `GET /object_info`: per class its inputs in `input_order`, outputs and whether it is an output
//! node.
//!
//! Lenient like the server's variety demands: V1 hidden specs are strings, V3 ones one-element lists; a COMBO is a
//! list of values (old form) or `["COMBO", {"options": [...]}]` (V3); specs may have one element; numbers (seed
//! max = u64::MAX) stay raw. A class whose entry cannot be read at all is skipped, not fatal.
use super::error::{error, ErrorKind, Result};
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

/// All classes a server knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectInfo {
    classes: HashMap<String, NodeSchema>,
    /// (lowercased name, its character histogram, name) for [`ObjectInfo::nearest`].
    lowered: Vec<(String, Histogram, String)>,
}

/// One class.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSchema {
    pub name: String,
    pub display_name: Option<String>,
    pub category: Option<String>,
    /// Required, then optional inputs, each section in `input_order` (falling back to the spec's key order).
    pub inputs: Vec<InputSpec>,
    pub hidden: Vec<String>,
    pub outputs: Vec<OutputSpec>,
    pub output_node: bool,
    pub deprecated: bool,
    pub experimental: bool,
    pub api_node: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Required,
    Optional,
}

/// An input's type.
#[derive(Debug, Clone, PartialEq)]
pub enum InputType {
    Int,
    Float,
    String,
    Boolean,
    /// A choice. `v3` is the `["COMBO", {options}]` form, whose values the server does not check.
    Combo {
        options: Vec<Value>,
        v3: bool,
    },
    /// Link types (`IMAGE`, `MODEL`), `*`, comma-joined unions, frontend widget types (`WEBCAM`).
    Other(String),
}

impl InputType {
    /// The type name as the server compares it (`"COMBO"` for both COMBO forms).
    pub fn name(&self) -> &str {
        match self {
            InputType::Int => "INT",
            InputType::Float => "FLOAT",
            InputType::String => "STRING",
            InputType::Boolean => "BOOLEAN",
            InputType::Combo { .. } => "COMBO",
            InputType::Other(s) => s,
        }
    }
    pub fn is_combo(&self) -> bool {
        matches!(self, InputType::Combo { .. })
    }
}

/// One input spec `[TYPE, {options}]`.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub section: Section,
    pub input_type: InputType,
    pub default: Option<Value>,
    pub min: Option<Number>,
    pub max: Option<Number>,
    pub step: Option<Number>,
    /// `Some(true/false)` when the spec sets it; `None` when absent.
    pub control_after_generate: Option<bool>,
    pub image_upload: bool,
    pub force_input: bool,
    pub multiselect: bool,
    /// The whole options object as sent (tooltip, display, round, upload flags…).
    pub options: Map<String, Value>,
    /// The raw `[TYPE, {options}]` array (what the server echoes as `input_config`).
    pub raw: Value,
}

/// Frontend widget types that take a `widgets_values` slot although they are not one of the five primitives.
const FRONTEND_WIDGET_TYPES: &[&str] = &["WEBCAM", "AUDIO_RECORD", "LOAD_3D", "LOAD_3D_ANIMATION", "MARKDOWN"];

impl InputSpec {
    /// Whether the frontend makes a widget for this input (and so a `widgets_values` slot).
    pub fn is_widget(&self) -> bool {
        !self.force_input && self.has_widget_type()
    }
    /// Whether the type is one the frontend makes widgets for (ignoring `forceInput`).
    pub fn has_widget_type(&self) -> bool {
        match &self.input_type {
            InputType::Int | InputType::Float | InputType::String | InputType::Boolean | InputType::Combo { .. } => {
                true
            }
            InputType::Other(t) => FRONTEND_WIDGET_TYPES.contains(&t.as_str()),
        }
    }
    /// Whether the widget is followed by a `control_after_generate` value ("fixed", "randomize", …).
    /// INTs named `seed`/`noise_seed` get one unless the spec says otherwise.
    pub fn has_control_widget(&self) -> bool {
        match self.input_type {
            InputType::Int => self
                .control_after_generate
                .unwrap_or(self.name == "seed" || self.name == "noise_seed"),
            InputType::Combo { .. } => self.control_after_generate.unwrap_or(false),
            _ => false,
        }
    }
    /// The value a new widget starts with (the frontend's defaults when the spec has none).
    pub fn default_value(&self) -> Option<Value> {
        if let Some(d) = &self.default {
            return Some(d.clone());
        }
        match &self.input_type {
            InputType::Int | InputType::Float => Some(
                self.min
                    .clone()
                    .filter(|m| m.as_f64().is_some_and(|m| m > 0.0))
                    .map(Value::Number)
                    .unwrap_or_else(|| Value::from(0)),
            ),
            InputType::String => Some(Value::String(String::new())),
            InputType::Boolean => Some(Value::Bool(false)),
            InputType::Combo { options, .. } => options.first().cloned(),
            InputType::Other(_) => None,
        }
    }
    pub fn is_required(&self) -> bool {
        self.section == Section::Required
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    pub name: String,
    /// The type; a list-valued output (a COMBO's options) is `"COMBO"`.
    pub output_type: String,
    pub is_list: bool,
}

impl NodeSchema {
    pub fn input(&self, name: &str) -> Option<&InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }
    /// The frontend's title for a new node of this class: `display_name`, or, for V3 classes that send none (the
    /// frontend then shows the English name from its own locale files, which we do not have), the class name split
    /// into words (`ImageBlur` → `Image Blur`, matching the recorded frontend).
    pub fn title(&self) -> String {
        match self.display_name.as_deref().filter(|d| !d.is_empty()) {
            Some(d) => d.to_string(),
            None => split_words(&self.name),
        }
    }
}

impl ObjectInfo {
    /// Parses the body of `GET /object_info`.
    pub fn from_value(value: &Value) -> Result<ObjectInfo> {
        let obj = value.as_object().ok_or_else(|| {
            error(
                ErrorKind::InvalidObjectInfo,
                "object_info: expected a JSON object of classes",
            )
        })?;
        let mut info = ObjectInfo::default();
        for (name, entry) in obj {
            if let Some(schema) = parse_class(name, entry) {
                info.classes.insert(name.clone(), schema);
            }
        }
        info.reindex();
        Ok(info)
    }
    pub fn from_json(text: &str) -> Result<ObjectInfo> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| error(ErrorKind::InvalidObjectInfo, format!("object_info: not JSON ({e})")))?;
        ObjectInfo::from_value(&value)
    }
    pub fn get(&self, class: &str) -> Option<&NodeSchema> {
        self.classes.get(class)
    }
    pub fn contains(&self, class: &str) -> bool {
        self.classes.contains_key(class)
    }
    pub fn len(&self) -> usize {
        self.classes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }
    pub fn class_names(&self) -> impl Iterator<Item = &str> {
        self.classes.keys().map(String::as_str)
    }
    /// Adds or replaces a class (tests, or a server that reports one class at a time).
    pub fn insert(&mut self, schema: NodeSchema) {
        self.classes.insert(schema.name.clone(), schema);
        self.reindex();
    }
    fn reindex(&mut self) {
        self.lowered = self
            .classes
            .keys()
            .map(|k| {
                let lower = k.to_lowercase();
                (lower.clone(), histogram(&lower), k.clone())
            })
            .collect();
        self.lowered.sort();
    }
    /// Up to `n` known class names closest to `name` by edit distance (case-insensitive), closest first.
    pub fn nearest(&self, name: &str, n: usize) -> Vec<String> {
        let lower = name.to_lowercase();
        let limit = (lower.chars().count() / 3).max(2);
        let hist = histogram(&lower);
        let mut scored: Vec<(usize, &str)> = self
            .lowered
            .iter()
            .filter(|(_, h, _)| bag_distance(&hist, h) <= limit)
            .filter_map(|(kl, _, k)| edit_distance_within(&lower, kl, limit).map(|d| (d, k.as_str())))
            .collect();
        scored.sort();
        scored.into_iter().take(n).map(|(_, k)| k.to_string()).collect()
    }
}

/// `CLIPTextEncodeSDXL` → `CLIP Text Encode SDXL`.
fn split_words(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        if i > 0 && c.is_uppercase() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                out.push(' ');
            }
        }
        out.push(*c);
    }
    out
}

type Histogram = [u16; 37];

/// Counts of a–z, 0–9 and everything else.
fn histogram(s: &str) -> Histogram {
    let mut h = [0u16; 37];
    for c in s.chars() {
        let i = match c {
            'a'..='z' => c as usize - 'a' as usize,
            '0'..='9' => 26 + c as usize - '0' as usize,
            _ => 36,
        };
        h[i] = h[i].saturating_add(1);
    }
    h
}

/// A cheap lower bound of the edit distance (the bag distance).
fn bag_distance(a: &Histogram, b: &Histogram) -> usize {
    let (mut more, mut less) = (0usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        if x > y {
            more += usize::from(x - y);
        } else {
            less += usize::from(y - x);
        }
    }
    more.max(less)
}

/// Levenshtein distance over chars.
/// The input specs (`[type or choices, {options}]`) of one `/object_info` class, required and optional.
pub fn input_specs_mut(class: &mut Value) -> impl Iterator<Item = &mut Value> {
    let (required, optional) = match class.get_mut("input").and_then(Value::as_object_mut) {
        Some(input) => {
            let mut required = None;
            let mut optional = None;
            for (section, inputs) in input.iter_mut() {
                match section.as_str() {
                    "required" => required = inputs.as_object_mut(),
                    "optional" => optional = inputs.as_object_mut(),
                    _ => {}
                }
            }
            (required, optional)
        }
        None => (None, None),
    };
    required
        .into_iter()
        .chain(optional)
        .flat_map(|inputs| inputs.values_mut())
}

pub fn edit_distance(a: &str, b: &str) -> usize {
    edit_distance_within(a, b, usize::MAX).unwrap_or(usize::MAX)
}

/// Levenshtein distance if it is at most `limit`: only the diagonal band of width `2·limit+1` is computed, and a
/// row whose cells all exceed the limit ends the search.
pub fn edit_distance_within(a: &str, b: &str, limit: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    let far = limit.saturating_add(1);
    let mut prev: Vec<usize> = (0..=b.len()).map(|j| if j <= limit { j } else { far }).collect();
    let mut cur = vec![far; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        let row = i + 1;
        let lo = row.saturating_sub(limit).max(1);
        let hi = row.saturating_add(limit).min(b.len());
        cur.fill(far);
        cur[0] = if row <= limit { row } else { far };
        let mut row_min = cur[0];
        for j in lo..=hi {
            let cost = usize::from(*ca != b[j - 1]);
            let v = (prev[j - 1] + cost).min(prev[j] + 1).min(cur[j - 1] + 1).min(far);
            cur[j] = v;
            row_min = row_min.min(v);
        }
        if row_min > limit {
            return None;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let d = prev[b.len()];
    (d <= limit).then_some(d)
}

fn parse_class(name: &str, entry: &Value) -> Option<NodeSchema> {
    let obj = entry.as_object()?;
    let input = obj.get("input").and_then(Value::as_object);
    let order = obj.get("input_order").and_then(Value::as_object);
    let mut inputs = Vec::new();
    for (section, key) in [(Section::Required, "required"), (Section::Optional, "optional")] {
        let Some(specs) = input.and_then(|i| i.get(key)).and_then(Value::as_object) else {
            continue;
        };
        let ordered: Vec<&str> = match order.and_then(|o| o.get(key)).and_then(Value::as_array) {
            Some(names) => {
                let mut v: Vec<&str> = names
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|n| specs.contains_key(*n))
                    .collect();
                // Leftovers the order does not mention keep their spec order.
                let leftovers: Vec<&str> = specs.keys().map(String::as_str).filter(|k| !v.contains(k)).collect();
                v.extend(leftovers);
                v
            }
            None => specs.keys().map(String::as_str).collect(),
        };
        for input_name in ordered {
            if let Some(spec) = specs.get(input_name) {
                inputs.push(parse_input(input_name, section, spec));
            }
        }
    }
    let hidden = input
        .and_then(|i| i.get("hidden"))
        .and_then(Value::as_object)
        .map(|h| h.keys().cloned().collect())
        .unwrap_or_default();
    let list = |k: &str| obj.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let (types, names, is_list) = (list("output"), list("output_name"), list("output_is_list"));
    let outputs = types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let output_type = match t {
                Value::String(s) => s.clone(),
                Value::Array(_) => "COMBO".to_string(),
                _ => "*".to_string(),
            };
            OutputSpec {
                name: names.get(i).and_then(Value::as_str).unwrap_or(&output_type).to_string(),
                output_type,
                is_list: is_list.get(i).and_then(Value::as_bool).unwrap_or(false),
            }
        })
        .collect();
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    Some(NodeSchema {
        name: text("name").unwrap_or_else(|| name.to_string()),
        display_name: text("display_name"),
        category: text("category"),
        inputs,
        hidden,
        outputs,
        output_node: flag("output_node"),
        deprecated: flag("deprecated"),
        experimental: flag("experimental"),
        api_node: flag("api_node"),
    })
}

fn parse_input(name: &str, section: Section, spec: &Value) -> InputSpec {
    // Specs: [TYPE], [TYPE, {options}], a bare TYPE string (V3 hidden style), or a bare list (very old COMBO).
    let (type_v, opts) = match spec {
        Value::Array(a) if a.first().is_some_and(|t| t.is_string() || t.is_array()) => (
            a.first().cloned().unwrap_or(Value::Null),
            a.get(1).and_then(Value::as_object).cloned(),
        ),
        Value::Array(a) => (Value::Array(a.clone()), None),
        Value::String(_) => (spec.clone(), None),
        _ => (Value::String("*".into()), None),
    };
    let opts = opts.unwrap_or_default();
    let input_type = match &type_v {
        Value::Array(options) => InputType::Combo {
            options: options.clone(),
            v3: false,
        },
        Value::String(t) => match t.as_str() {
            "INT" => InputType::Int,
            "FLOAT" => InputType::Float,
            "STRING" => InputType::String,
            "BOOLEAN" => InputType::Boolean,
            "COMBO" => InputType::Combo {
                options: opts
                    .get("options")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                v3: true,
            },
            other => InputType::Other(other.to_string()),
        },
        _ => InputType::Other("*".into()),
    };
    let number = |k: &str| match opts.get(k) {
        Some(Value::Number(n)) => Some(n.clone()),
        _ => None,
    };
    let flag = |k: &str| opts.get(k).and_then(Value::as_bool).unwrap_or(false);
    InputSpec {
        name: name.to_string(),
        section,
        input_type,
        default: opts.get("default").cloned(),
        min: number("min"),
        max: number("max"),
        step: number("step"),
        control_after_generate: opts.get("control_after_generate").map(|v| match v {
            Value::Bool(b) => *b,
            Value::Null => false,
            _ => true,
        }),
        image_upload: flag("image_upload"),
        force_input: flag("forceInput"),
        multiselect: flag("multiselect"),
        options: opts,
        raw: spec.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_both_combo_forms_hidden_specs_and_huge_numbers() {
        let info = ObjectInfo::from_value(&json!({
            "KSampler": {"input": {"required": {
                "seed": ["INT", {"default": 0, "min": 0, "max": 18446744073709551615u64, "control_after_generate": true}],
                "sampler_name": [["euler", "ddim"], {}], "model": ["MODEL"]},
                "hidden": {"prompt": "PROMPT"}},
                "input_order": {"required": ["model", "seed", "sampler_name"]},
                "output": ["LATENT"], "output_name": ["LATENT"], "output_is_list": [false]},
            "Morph": {"input": {"required": {"op": ["COMBO", {"options": ["a", "b"]}]},
                "hidden": {"uid": ["UNIQUE_ID"]}}, "output": [["x", "y"]], "output_node": true},
            "Broken": 7
        }))
        .unwrap();
        assert_eq!(info.len(), 2);
        let k = info.get("KSampler").unwrap();
        assert_eq!(
            k.inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["model", "seed", "sampler_name"]
        );
        assert_eq!(
            k.input("seed").unwrap().max.as_ref().unwrap().to_string(),
            "18446744073709551615"
        );
        assert!(k.input("seed").unwrap().has_control_widget());
        assert!(!k.input("model").unwrap().is_widget());
        assert!(matches!(
            k.input("sampler_name").unwrap().input_type,
            InputType::Combo { v3: false, .. }
        ));
        let m = info.get("Morph").unwrap();
        assert!(
            matches!(&m.input("op").unwrap().input_type, InputType::Combo { v3: true, options } if options.len() == 2)
        );
        assert_eq!(m.hidden, ["uid"]);
        assert_eq!(m.outputs[0].output_type, "COMBO");
        assert!(m.output_node);
        assert_eq!(info.nearest("KSamplr", 3), ["KSampler"]);
        assert_eq!(split_words("CLIPTextEncodeSDXL"), "CLIP Text Encode SDXL");
        assert_eq!(split_words("ImageBlur"), "Image Blur");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance_within("kitten", "sitting", 2), None);
        assert_eq!(edit_distance_within("flaw", "lawn", 2), Some(2));
        assert_eq!(edit_distance_within("", "ab", 2), Some(2));
    }
}
