//! The API-format prompt that `POST /prompt` takes: node id → `{class_type, inputs, _meta.title}`.
//!
//! Numbers stay raw `serde_json::Number`s (`arbitrary_precision`), so a seed of `18446744073709551615` survives a
//! round trip; node order is kept as read.
use indexmap::IndexMap;
use serde::de::Deserializer;
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A whole API prompt, in file order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Prompt {
    pub nodes: IndexMap<String, PromptNode>,
}

/// One node of an API prompt. `class_type` is optional here because a prompt without it must still load (the
/// server rejects it with `invalid_prompt`, and so does [`crate::workflow::validate`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptNode {
    #[serde(default)]
    pub inputs: IndexMap<String, InputValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_type: Option<String>,
    #[serde(default, rename = "_meta", skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
}

/// `_meta`: ignored by the server, shown by the frontend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// A link `[origin node id, origin output index]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Link {
    pub node: String,
    pub slot: u64,
}

/// An input's value.
#[derive(Debug, Clone, PartialEq)]
pub enum InputValue {
    /// `["<node id>", <slot>]`.
    Link(Link),
    /// `{"__value__": [...]}`: a literal list (a bare list would mean a link).
    List(Vec<Value>),
    /// A list that is not a well-formed link (`["1", 0, 0]`, `[1, "x"]`); the server answers `bad_linked_input`.
    MalformedLink(Vec<Value>),
    /// Any other JSON value, numbers kept raw.
    Literal(Value),
}

impl InputValue {
    pub fn link(node: impl Into<String>, slot: u64) -> InputValue {
        InputValue::Link(Link {
            node: node.into(),
            slot,
        })
    }
    pub fn as_link(&self) -> Option<&Link> {
        match self {
            InputValue::Link(link) => Some(link),
            _ => None,
        }
    }
    /// The literal value (a `{"__value__"}` list as a JSON array); `None` for links.
    pub fn literal(&self) -> Option<Value> {
        match self {
            InputValue::Literal(v) => Some(v.clone()),
            InputValue::List(items) => Some(Value::Array(items.clone())),
            InputValue::Link(_) | InputValue::MalformedLink(_) => None,
        }
    }
    /// Wraps a JSON value the way the frontend does: arrays become `{"__value__": [...]}`.
    pub fn from_value(value: Value) -> InputValue {
        match value {
            Value::Array(items) => InputValue::List(items),
            other => InputValue::Literal(other),
        }
    }
    /// The JSON this input is sent as.
    pub fn to_json(&self) -> Value {
        match self {
            InputValue::Link(link) => Value::Array(vec![Value::String(link.node.clone()), Value::from(link.slot)]),
            InputValue::List(items) => {
                let mut map = Map::new();
                map.insert("__value__".into(), Value::Array(items.clone()));
                Value::Object(map)
            }
            InputValue::MalformedLink(items) => Value::Array(items.clone()),
            InputValue::Literal(v) => v.clone(),
        }
    }
    fn from_json(value: Value) -> InputValue {
        match value {
            Value::Array(items) => match items.as_slice() {
                [Value::String(node), Value::Number(slot)] if slot.as_u64().is_some() => InputValue::Link(Link {
                    node: node.clone(),
                    slot: slot.as_u64().unwrap_or_default(),
                }),
                _ => InputValue::MalformedLink(items),
            },
            Value::Object(mut map) if map.len() == 1 && map.get("__value__").is_some_and(Value::is_array) => {
                match map.remove("__value__") {
                    Some(Value::Array(items)) => InputValue::List(items),
                    _ => InputValue::Literal(Value::Object(map)),
                }
            }
            other => InputValue::Literal(other),
        }
    }
}

impl Serialize for InputValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            InputValue::Link(link) => {
                let mut seq = serializer.serialize_seq(Some(2))?;
                seq.serialize_element(&link.node)?;
                seq.serialize_element(&link.slot)?;
                seq.end()
            }
            other => other.to_json().serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for InputValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(InputValue::from_json)
    }
}

impl Prompt {
    pub fn get(&self, id: &str) -> Option<&PromptNode> {
        self.nodes.get(id)
    }
    /// The whole prompt as JSON, ready for `POST /prompt`'s `prompt` field.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
    /// Parses an API prompt from a JSON value (see [`crate::workflow::load`] for detection and good errors).
    pub fn from_value(value: Value) -> Result<Prompt, serde_json::Error> {
        serde_json::from_value(value)
    }
    /// Node ids whose node links to `id` (its consumers), with the consuming input's name.
    pub fn consumers<'a>(&'a self, id: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.nodes.iter().flat_map(move |(nid, node)| {
            node.inputs
                .iter()
                .filter(move |(_, v)| v.as_link().is_some_and(|l| l.node == id))
                .map(move |(name, _)| (nid.as_str(), name.as_str()))
        })
    }
}

impl PromptNode {
    pub fn title(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.title.as_deref())
    }
    pub fn class(&self) -> &str {
        self.class_type.as_deref().unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_links_lists_and_huge_numbers() {
        let text = r#"{"3":{"inputs":{"seed":18446744073709551615,"cfg":7.50,"model":["4",0],
            "ids":{"__value__":[1,2]},"bad":["1",0,0]},"class_type":"KSampler","_meta":{"title":"K"}}}"#;
        let prompt: Prompt = serde_json::from_str(text).unwrap();
        let node = prompt.get("3").unwrap();
        assert_eq!(node.inputs["model"], InputValue::link("4", 0));
        assert!(matches!(node.inputs["ids"], InputValue::List(_)));
        assert!(matches!(node.inputs["bad"], InputValue::MalformedLink(_)));
        let out = serde_json::to_string(&prompt).unwrap();
        assert!(out.contains("18446744073709551615"), "{out}");
        assert!(out.contains(r#""model":["4",0]"#), "{out}");
        assert!(out.contains(r#""ids":{"__value__":[1,2]}"#), "{out}");
        assert_eq!(serde_json::from_str::<Prompt>(&out).unwrap(), prompt);
    }
}
