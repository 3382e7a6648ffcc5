//! The OpenAI chat wire format as LiteLLM 1.106.2 speaks it (`fixtures/litellm/`), read leniently: unknown keys
//! are ignored, `code` may be a string or a number, `param` a string or null.
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `GET /v1/models`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ModelList {
    #[serde(default)]
    pub data: Vec<Model>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Model {
    pub id: String,
    #[serde(default)]
    pub object: Option<String>,
    #[serde(default)]
    pub created: Option<i64>,
    #[serde(default)]
    pub owned_by: Option<String>,
}

/// Token counts (`usage`), kept as the server sent them.
pub type Usage = Value;

/// A non-streamed `chat.completion`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatCompletion {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub choices: Vec<Choice>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub message: Message,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Message {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
}

/// One `chat.completion.chunk` of a stream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChatChunk {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Delta {
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
}

/// `{"error": {...}}`, the body of every failure (and of a mid-stream failure frame).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ErrorBody {
    pub error: ApiError,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ApiError {
    #[serde(default, deserialize_with = "lenient_string")]
    pub message: String,
    #[serde(rename = "type", default, deserialize_with = "lenient_opt_string")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub param: Option<String>,
    /// The HTTP status as a string on LiteLLM ("429"); other servers send a number or a word.
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub code: Option<String>,
}

impl ErrorBody {
    /// The error of a body, if it is one (`{"error": {...}}`; a bare string `error` is taken as the message).
    pub fn parse(body: &[u8]) -> Option<ApiError> {
        let value: Value = serde_json::from_slice(body).ok()?;
        match value.get("error")? {
            Value::String(s) => Some(ApiError {
                message: s.clone(),
                ..Default::default()
            }),
            obj @ Value::Object(_) => serde_json::from_value(obj.clone()).ok(),
            _ => None,
        }
    }
}

fn stringify(v: Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

fn lenient_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(stringify(Value::deserialize(d)?))
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(stringify(Value::deserialize(d)?).unwrap_or_default())
}

/// What one SSE `data:` payload of a chat stream means.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Chunk(ChatChunk),
    /// `data: {"error": {...}}`: the server failed after the stream began.
    Error(ApiError),
    /// `data: [DONE]`
    Done,
    /// JSON that is neither a chunk nor an error (ignored, logged).
    Unknown(String),
}

impl Frame {
    pub fn parse(data: &str) -> Frame {
        let data = data.trim();
        if data == "[DONE]" {
            return Frame::Done;
        }
        let Ok(value) = serde_json::from_str::<Value>(data) else {
            return Frame::Unknown(data.chars().take(200).collect());
        };
        if let Some(err) = value.get("error") {
            let parsed = match err {
                Value::String(s) => Some(ApiError {
                    message: s.clone(),
                    ..Default::default()
                }),
                other => serde_json::from_value::<ApiError>(other.clone()).ok(),
            };
            if let Some(e) = parsed {
                return Frame::Error(e);
            }
        }
        match serde_json::from_value::<ChatChunk>(value) {
            Ok(c) => Frame::Chunk(c),
            Err(_) => Frame::Unknown(data.chars().take(200).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(Frame::parse("[DONE]"), Frame::Done);
        let err = Frame::parse(r#"{"error":{"message":"boom","type":null,"param":null,"code":500}}"#);
        match err {
            Frame::Error(e) => assert_eq!((e.message.as_str(), e.code.as_deref()), ("boom", Some("500"))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(Frame::parse("not json"), Frame::Unknown(_)));
    }
}
