//! ComfyUI wire types: WebSocket JSON messages, binary frames and HTTP bodies, parsed leniently
//! (every field optional where a server version may omit it; unknown message types pass through).
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// A server → client JSON message. Unknown `type`s become `Unknown`, never an error.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    Status(StatusData),
    ExecutionStart(PromptRef),
    ExecutionCached(CachedData),
    Executing(ExecutingData),
    Progress(ProgressData),
    ProgressState(ProgressStateData),
    Executed(ExecutedData),
    ExecutionSuccess(PromptRef),
    ExecutionError(ExecutionErrorData),
    ExecutionInterrupted(InterruptedData),
    FeatureFlags(Value),
    Unknown { kind: String, data: Value },
}

/// `data` stays raw text until the `type` says what it is: typed messages are parsed straight from it, without
/// building a `Value` tree first (that tree was most of the per-message cost of a `progress_state`). A `progress`
/// (one per sampler step) is read in the same pass when `type` comes first, as ComfyUI always writes it.
struct Envelope<'a> {
    /// Borrowed from the frame when it has no escapes (always, for ComfyUI's own types): no allocation.
    kind: Option<Cow<'a, str>>,
    data: Data<'a>,
}

enum Data<'a> {
    Raw(Option<&'a RawValue>),
    Progress(RawProgress<'a>),
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum EnvelopeKey {
    Type,
    Data,
    #[serde(other)]
    Other,
}

/// A string borrowed from the input when it can be.
struct BorrowedStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for BorrowedStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BorrowedStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Envelope<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut env = Envelope {
                    kind: None,
                    data: Data::Raw(None),
                };
                while let Some(key) = map.next_key::<EnvelopeKey>()? {
                    match key {
                        EnvelopeKey::Type => env.kind = Some(map.next_value::<BorrowedStr>()?.0),
                        EnvelopeKey::Data if env.kind.as_deref() == Some("progress") => {
                            env.data = Data::Progress(map.next_value()?);
                        }
                        EnvelopeKey::Data => env.data = Data::Raw(map.next_value()?),
                        EnvelopeKey::Other => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(env)
            }
        }
        d.deserialize_map(V)
    }
}

/// Why a text frame could not be used.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError(pub String);

impl ServerMessage {
    pub fn parse(text: &str) -> Result<ServerMessage, ParseError> {
        match ProgressData::from_plain_text(text) {
            Some(p) => Ok(ServerMessage::Progress(p)),
            None => Self::parse_envelope(text),
        }
    }

    /// `parse` for every message (the general way, through serde).
    fn parse_envelope(text: &str) -> Result<ServerMessage, ParseError> {
        let env: Envelope = serde_json::from_str(text).map_err(|e| ParseError(format!("not a message: {e}")))?;
        let Some(kind) = env.kind else {
            return Err(ParseError("not a message: no `type`".into()));
        };
        let raw = match env.data {
            Data::Progress(p) => return Ok(ServerMessage::Progress(p.into())),
            Data::Raw(raw) => raw,
        };
        fn data<T: for<'de> Deserialize<'de>>(
            kind: &str,
            raw: Option<&serde_json::value::RawValue>,
        ) -> Result<T, ParseError> {
            // A missing `data` reads as `null`, as `#[serde(default)]` on a `Value` did.
            let text = raw.map_or("null", |r| r.get());
            serde_json::from_str(text).map_err(|e| ParseError(format!("bad {kind} message: {e}")))
        }
        fn value(raw: Option<&serde_json::value::RawValue>) -> Value {
            raw.and_then(|r| serde_json::from_str(r.get()).ok())
                .unwrap_or(Value::Null)
        }
        Ok(match &*kind {
            "status" => ServerMessage::Status(data(&kind, raw)?),
            "execution_start" => ServerMessage::ExecutionStart(data(&kind, raw)?),
            "execution_cached" => ServerMessage::ExecutionCached(data(&kind, raw)?),
            "executing" => ServerMessage::Executing(data(&kind, raw)?),
            "progress" => ServerMessage::Progress(ProgressData::from_raw(raw)?),
            "progress_state" => ServerMessage::ProgressState(data(&kind, raw)?),
            "executed" => ServerMessage::Executed(data(&kind, raw)?),
            "execution_success" => ServerMessage::ExecutionSuccess(data(&kind, raw)?),
            "execution_error" => ServerMessage::ExecutionError(data(&kind, raw)?),
            "execution_interrupted" => ServerMessage::ExecutionInterrupted(data(&kind, raw)?),
            "feature_flags" => ServerMessage::FeatureFlags(value(raw)),
            _ => ServerMessage::Unknown {
                data: value(raw),
                kind: kind.into_owned(),
            },
        })
    }

    /// `prompt_id`, moved out of the message.
    pub fn take_prompt_id(&mut self) -> Option<String> {
        match self {
            ServerMessage::ExecutionStart(p) | ServerMessage::ExecutionSuccess(p) => p.prompt_id.take(),
            ServerMessage::ExecutionCached(c) => c.prompt_id.take(),
            ServerMessage::Executing(e) => e.prompt_id.take(),
            ServerMessage::Progress(p) => p.prompt_id.take(),
            ServerMessage::ProgressState(p) => p.prompt_id.take(),
            ServerMessage::Executed(e) => e.prompt_id.take(),
            ServerMessage::ExecutionError(e) => e.prompt_id.take(),
            ServerMessage::ExecutionInterrupted(e) => e.prompt_id.take(),
            _ => None,
        }
    }

    /// The prompt this message names, if it names one.
    pub fn prompt_id(&self) -> Option<&str> {
        match self {
            ServerMessage::ExecutionStart(p) | ServerMessage::ExecutionSuccess(p) => p.prompt_id.as_deref(),
            ServerMessage::ExecutionCached(c) => c.prompt_id.as_deref(),
            ServerMessage::Executing(e) => e.prompt_id.as_deref(),
            ServerMessage::Progress(p) => p.prompt_id.as_deref(),
            ServerMessage::ProgressState(p) => p.prompt_id.as_deref(),
            ServerMessage::Executed(e) => e.prompt_id.as_deref(),
            ServerMessage::ExecutionError(e) => e.prompt_id.as_deref(),
            ServerMessage::ExecutionInterrupted(e) => e.prompt_id.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct StatusData {
    #[serde(default)]
    pub status: Option<StatusInner>,
    #[serde(default)]
    pub sid: Option<String>,
}

impl StatusData {
    pub fn queue_remaining(&self) -> Option<u64> {
        self.status.as_ref()?.exec_info.as_ref()?.queue_remaining
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct StatusInner {
    #[serde(default)]
    pub exec_info: Option<ExecInfo>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct ExecInfo {
    #[serde(default, deserialize_with = "lenient_u64")]
    pub queue_remaining: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct PromptRef {
    #[serde(default, deserialize_with = "lenient_id")]
    pub prompt_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct CachedData {
    #[serde(default, deserialize_with = "lenient_id")]
    pub prompt_id: Option<String>,
    #[serde(default, deserialize_with = "id_list")]
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct ExecutingData {
    /// `None` marks the end of a prompt.
    #[serde(default, deserialize_with = "lenient_id")]
    pub node: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub display_node: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub prompt_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct ProgressData {
    #[serde(default, deserialize_with = "lenient_f64")]
    pub value: f64,
    #[serde(default, deserialize_with = "lenient_f64")]
    pub max: f64,
    #[serde(default, deserialize_with = "lenient_id")]
    pub prompt_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub node: Option<String>,
}

/// `progress` is the one message a sampler sends on every step: read straight from the raw text of its fields,
/// with the same leniency as `lenient_f64` / `lenient_id` but without building a `Value` for each (with
/// `arbitrary_precision`, every number in a `Value` is a heap string).
#[derive(Deserialize)]
struct RawProgress<'a> {
    #[serde(default, borrow)]
    value: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    max: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    prompt_id: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    node: Option<&'a serde_json::value::RawValue>,
}

impl ProgressData {
    fn from_raw(raw: Option<&serde_json::value::RawValue>) -> Result<ProgressData, ParseError> {
        let text = raw.map_or("null", |r| r.get());
        let r: RawProgress =
            serde_json::from_str(text).map_err(|e| ParseError(format!("bad progress message: {e}")))?;
        Ok(r.into())
    }
}

impl From<RawProgress<'_>> for ProgressData {
    fn from(r: RawProgress<'_>) -> ProgressData {
        ProgressData {
            value: raw_f64(r.value.map(|v| v.get())),
            max: raw_f64(r.max.map(|v| v.get())),
            prompt_id: raw_id(r.prompt_id.map(|v| v.get())),
            node: raw_id(r.node.map(|v| v.get())),
        }
    }
}

impl ProgressData {
    /// The fast path for the one message a sampler sends on every step, in the plain shape ComfyUI writes it:
    /// `{"type": "progress", "data": {...}}` whose `data` holds only numbers, `null` and strings without escapes
    /// (any whitespace, any field order inside `data`). Read in one pass without serde; anything else — another
    /// shape, a duplicate or malformed field — is None and goes the general way, which reads it (or rejects it)
    /// exactly as before.
    fn from_plain_text(text: &str) -> Option<ProgressData> {
        let mut c = Plain { text, at: 0 };
        c.token(b'{')?;
        c.literal("\"type\"")?;
        c.token(b':')?;
        c.literal("\"progress\"")?;
        c.token(b',')?;
        c.literal("\"data\"")?;
        c.token(b':')?;
        c.token(b'{')?;
        let mut fields: [Option<&str>; 4] = [None; 4];
        if c.token(b'}').is_none() {
            loop {
                let key = c.string()?;
                c.token(b':')?;
                let value = c.scalar()?;
                let slot = match key {
                    "value" => Some(0),
                    "max" => Some(1),
                    "prompt_id" => Some(2),
                    "node" => Some(3),
                    _ => None,
                };
                if let Some(i) = slot {
                    // serde rejects a duplicate field: leave that to it.
                    if fields[i].replace(value).is_some() {
                        return None;
                    }
                }
                if c.token(b',').is_none() {
                    c.token(b'}')?;
                    break;
                }
            }
        }
        c.token(b'}')?;
        c.ws();
        (c.at == text.len()).then_some(())?;
        Some(ProgressData {
            value: raw_f64(fields[0]),
            max: raw_f64(fields[1]),
            prompt_id: raw_id(fields[2]),
            node: raw_id(fields[3]),
        })
    }
}

/// A cursor over JSON text for `ProgressData::from_plain_text`: only the plain tokens it accepts.
struct Plain<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Plain<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// The byte `b` after optional whitespace.
    fn token(&mut self, b: u8) -> Option<()> {
        self.ws();
        (self.peek() == Some(b)).then(|| self.at += 1)
    }

    /// `lit` after optional whitespace.
    fn literal(&mut self, lit: &str) -> Option<()> {
        self.ws();
        self.text[self.at..].starts_with(lit).then(|| self.at += lit.len())
    }

    /// A string without escapes or control characters: its contents.
    fn string(&mut self) -> Option<&'a str> {
        self.token(b'"')?;
        let start = self.at;
        let rest = &self.text.as_bytes()[start..];
        // One pass: the closing quote, or an escape / control character (left to serde).
        let len = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        (rest[len] == b'"').then_some(())?;
        self.at = start + len + 1;
        self.text.get(start..start + len)
    }

    /// A number, `null` or a plain string: its JSON text.
    fn scalar(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.at;
        let rest = &self.text.as_bytes()[start..];
        match rest.first()? {
            b'"' => {
                self.string()?;
            }
            b'n' => {
                rest.starts_with(b"null").then(|| self.at += 4)?;
            }
            _ => self.at = start + json_number_len(rest)?,
        }
        self.text.get(start..self.at)
    }
}

/// The length of the JSON number at the start of `s` (RFC 8259's grammar), if one is there.
fn json_number_len(s: &[u8]) -> Option<usize> {
    let digits = |from: usize| s[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut i = usize::from(s.first() == Some(&b'-'));
    match s.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i += digits(i),
        _ => return None,
    }
    if s.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        (n > 0).then_some(())?;
        i += 1 + n;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let n = digits(i);
        (n > 0).then_some(())?;
        i += n;
    }
    Some(i)
}

/// A JSON string's contents when it needs no unescaping.
fn plain_string(text: &str) -> Option<&str> {
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .filter(|t| !t.contains('\\'))
}

/// `lenient_f64` on raw JSON text: a finite number, or a string holding one; anything else is 0.
fn raw_f64(raw: Option<&str>) -> f64 {
    let Some(text) = raw else { return 0.0 };
    let parsed = match text.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => small_integer(text).or_else(|| text.parse::<f64>().ok()),
        Some(b'"') => match plain_string(text) {
            Some(inner) => small_integer(inner).or_else(|| inner.parse::<f64>().ok()),
            None => serde_json::from_str::<String>(text).ok().and_then(|s| s.parse().ok()),
        },
        _ => None,
    };
    parsed.filter(|f| f.is_finite()).unwrap_or(0.0)
}

/// A step count's usual text, 1 to 15 digits, read without the general float parser (exact: below 2^53).
fn small_integer(text: &str) -> Option<f64> {
    let digits = text.as_bytes();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')) as f64)
}

/// `lenient_id` on raw JSON text: a string, or a number's text; anything else is None.
fn raw_id(raw: Option<&str>) -> Option<String> {
    let text = raw?;
    match text.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => Some(text.to_string()),
        Some(b'"') => match plain_string(text) {
            Some(inner) => Some(inner.to_string()),
            None => serde_json::from_str::<String>(text).ok(),
        },
        _ => None,
    }
}

/// Whole-graph progress. Only the prompt id is read: the per-node `progress` messages carry what we show, and
/// the `nodes` map (every node of the graph, on every step) is skipped unparsed.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct ProgressStateData {
    #[serde(default, deserialize_with = "lenient_id")]
    pub prompt_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct ExecutedData {
    #[serde(default, deserialize_with = "lenient_id")]
    pub node: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub display_node: Option<String>,
    /// The node's `ui` dict, or null.
    #[serde(default)]
    pub output: Value,
    #[serde(default, deserialize_with = "lenient_id")]
    pub prompt_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct ExecutionErrorData {
    #[serde(default, deserialize_with = "lenient_id")]
    pub prompt_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub node_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub node_type: Option<String>,
    #[serde(default)]
    pub exception_message: Option<String>,
    #[serde(default)]
    pub exception_type: Option<String>,
    #[serde(default, deserialize_with = "string_list")]
    pub traceback: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct InterruptedData {
    #[serde(default, deserialize_with = "lenient_id")]
    pub prompt_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub node_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub node_type: Option<String>,
}

/// Ids are strings, but a custom node may send numbers; anything else becomes None.
fn lenient_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()).unwrap_or(0.0),
        Value::String(s) => s.parse().ok().filter(|f: &f64| f.is_finite()).unwrap_or(0.0),
        _ => 0.0,
    })
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        _ => None,
    })
}

fn id_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    })
}

fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .map(|v| v.as_str().map(str::to_string).unwrap_or_default())
            .collect(),
        Value::String(s) => vec![s],
        _ => Vec::new(),
    })
}

/// A decoded binary frame.
#[derive(Debug, Clone, PartialEq)]
pub enum BinaryFrame {
    /// Event 1: a preview (or SaveImageWebsocket image) without a prompt id.
    Preview {
        mime: &'static str,
        image: bytes::Bytes,
    },
    /// Event 3: progress text for a node (broadcast by default).
    Text {
        node_id: String,
        text: String,
    },
    /// Event 4: a preview with metadata naming the prompt and node.
    PreviewWithMetadata {
        meta: PreviewMeta,
        mime: String,
        image: bytes::Bytes,
    },
    Unknown {
        event: u32,
        len: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct PreviewMeta {
    #[serde(default, deserialize_with = "lenient_id")]
    pub node_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub prompt_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_id")]
    pub display_node_id: Option<String>,
    #[serde(default)]
    pub image_type: Option<String>,
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

impl BinaryFrame {
    /// Decodes `[u32 event][payload]` (all integers big-endian). Truncated or inconsistent frames are errors.
    pub fn parse(frame: bytes::Bytes) -> Result<BinaryFrame, ParseError> {
        let event = be_u32(&frame, 0).ok_or_else(|| ParseError(format!("binary frame of {} bytes", frame.len())))?;
        match event {
            1 => {
                let image_type =
                    be_u32(&frame, 4).ok_or_else(|| ParseError("preview frame without image type".into()))?;
                // Unknown image types are treated as JPEG, like the web frontend does.
                let mime = if image_type == 2 { "image/png" } else { "image/jpeg" };
                Ok(BinaryFrame::Preview {
                    mime,
                    image: frame.slice(8..),
                })
            }
            3 => {
                let n = be_u32(&frame, 4).ok_or_else(|| ParseError("text frame without node id length".into()))?;
                let end = 8usize
                    .checked_add(n as usize)
                    .filter(|end| *end <= frame.len())
                    .ok_or_else(|| ParseError(format!("text frame: node id length {n} runs past the frame")))?;
                Ok(BinaryFrame::Text {
                    node_id: String::from_utf8_lossy(&frame[8..end]).into_owned(),
                    text: String::from_utf8_lossy(&frame[end..]).into_owned(),
                })
            }
            4 => {
                let n = be_u32(&frame, 4).ok_or_else(|| ParseError("preview frame without metadata length".into()))?;
                let end = 8usize
                    .checked_add(n as usize)
                    .filter(|end| *end <= frame.len())
                    .ok_or_else(|| ParseError(format!("preview metadata length {n} runs past the frame")))?;
                let meta: PreviewMeta = serde_json::from_slice(&frame[8..end])
                    .map_err(|e| ParseError(format!("preview metadata is not JSON: {e}")))?;
                let mime = meta.image_type.clone().unwrap_or_else(|| "image/jpeg".to_string());
                Ok(BinaryFrame::PreviewWithMetadata {
                    meta,
                    mime,
                    image: frame.slice(end..),
                })
            }
            other => Ok(BinaryFrame::Unknown {
                event: other,
                len: frame.len(),
            }),
        }
    }
}

/// `POST /prompt` 200 body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PromptAccepted {
    #[serde(deserialize_with = "lenient_id")]
    pub prompt_id: Option<String>,
    #[serde(default)]
    pub number: Value,
    #[serde(default)]
    pub node_errors: Value,
}

/// `POST /prompt` 400 body.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct PromptRejected {
    #[serde(default)]
    pub error: Option<ErrorBody>,
    #[serde(default)]
    pub node_errors: Value,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct ErrorBody {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub details: Value,
}

/// Turns a `node_errors` object into per-node problems (one per input error).
pub fn node_problems(node_errors: &Value) -> Vec<crate::event::NodeProblem> {
    let mut out = Vec::new();
    let Some(map) = node_errors.as_object() else { return out };
    for (node_id, entry) in map {
        let class_type = entry.get("class_type").and_then(Value::as_str).map(str::to_string);
        let errors = entry
            .get("errors")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for err in errors {
            let text = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let input = err
                .get("extra_info")
                .and_then(|x| x.get("input_name"))
                .and_then(Value::as_str)
                .map(str::to_string);
            out.push(crate::event::NodeProblem {
                node_id: node_id.clone(),
                class_type: class_type.clone(),
                input,
                code: text("type"),
                message: text("message"),
                details: text("details"),
            });
        }
    }
    out
}

/// One `/queue` item: `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
pub fn queue_item_id(item: &Value) -> Option<String> {
    match item.get(1)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `GET /queue`, sorted into run order (the pending list is a raw heap).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueView {
    pub running: Vec<String>,
    pub pending: Vec<String>,
}

impl QueueView {
    pub fn from_value(v: &Value) -> QueueView {
        let ids = |key: &str| -> Vec<(f64, String)> {
            v.get(key)
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|it| {
                            let n = it.get(0).and_then(Value::as_f64).unwrap_or(0.0);
                            queue_item_id(it).map(|id| (n, id))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut pending = ids("queue_pending");
        pending.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        QueueView {
            running: ids("queue_running").into_iter().map(|(_, id)| id).collect(),
            pending: pending.into_iter().map(|(_, id)| id).collect(),
        }
    }

    /// 0 = runs next; None = not pending.
    pub fn position(&self, prompt_id: &str) -> Option<u32> {
        self.pending.iter().position(|p| p == prompt_id).map(|p| p as u32)
    }
}

/// A history entry's status.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct HistoryStatus {
    #[serde(default)]
    pub status_str: Option<String>,
    #[serde(default)]
    pub completed: Option<bool>,
    #[serde(default)]
    pub messages: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct HistoryEntry {
    #[serde(default)]
    pub outputs: serde_json::Map<String, Value>,
    #[serde(default)]
    pub status: Option<HistoryStatus>,
}

/// A downloadable file named in a node's UI output.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileRef {
    pub node_id: String,
    pub kind: String,
    pub filename: String,
    pub subfolder: String,
    pub file_type: String,
}

/// Every list of `{filename, subfolder, type}` objects in a node's UI output is downloadable.
pub fn file_refs(node_id: &str, ui: &Value) -> Vec<FileRef> {
    let mut out = Vec::new();
    let Some(map) = ui.as_object() else { return out };
    for (kind, list) in map {
        let Some(items) = list.as_array() else { continue };
        for item in items {
            let Some(filename) = item.get("filename").and_then(Value::as_str) else {
                continue;
            };
            out.push(FileRef {
                node_id: node_id.to_string(),
                kind: kind.clone(),
                filename: filename.to_string(),
                subfolder: item.get("subfolder").and_then(Value::as_str).unwrap_or("").to_string(),
                file_type: item.get("type").and_then(Value::as_str).unwrap_or("output").to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// The fast path for `progress` reads what serde reads, and nothing it would reject: every message it takes
    /// (ComfyUI's own, compact, reordered, odd values, and every truncation and one-byte change of them) parses
    /// to the same `ProgressData` the general way, and what it leaves is left to the general way.
    #[test]
    fn plain_progress_reads_exactly_what_serde_reads() {
        let samples = [
            r#"{"type": "progress", "data": {"value": 3, "max": 20, "prompt_id": "0c5e-4f", "node": "3"}}"#,
            r#"{"type":"progress","data":{"node":"12","prompt_id":"p","max":2.5e1,"value":-0.5}}"#,
            r#" { "type" : "progress" , "data" : { "value" : "7", "max" : null, "node" : 31, "x": "y" } } "#,
            r#"{"type": "progress", "data": {}}"#,
            r#"{"type": "progress", "data": {"value": 1E400, "max": 1e-3, "prompt_id": 12, "node": null}}"#,
        ];
        let mut taken = 0;
        let mut checked = 0;
        for sample in samples {
            let mut variants = vec![sample.to_string()];
            for cut in 0..sample.len() {
                variants.push(sample[..cut].to_string());
                for b in [
                    "", "\\", "\"", ",", "}", "0", "-", ".", "e", "x", " ", "\u{1}", "{", "[1]", "true", "é",
                ] {
                    let mut v = sample.to_string();
                    v.replace_range(cut..cut + 1, b);
                    variants.push(v);
                }
            }
            for v in variants {
                let general = ServerMessage::parse_envelope(&v);
                match ProgressData::from_plain_text(&v) {
                    Some(p) => {
                        taken += 1;
                        assert_eq!(general, Ok(ServerMessage::Progress(p)), "{v}");
                    }
                    None => assert_eq!(ServerMessage::parse(&v), general, "{v}"),
                }
                checked += 1;
            }
        }
        for text in [
            "0",
            "7",
            "007",
            "20",
            "999999999999999",
            "1000000000000000",
            "12345678901234567",
            "-3",
            "1.5",
        ] {
            if let Some(f) = small_integer(text) {
                assert_eq!(Some(f), text.parse::<f64>().ok(), "{text}");
            }
        }
        assert_eq!(small_integer("999999999999999"), Some(999_999_999_999_999.0));
        assert_eq!(small_integer("1000000000000000"), None);
        // ComfyUI's own shape takes the fast path.
        assert!(ProgressData::from_plain_text(samples[0]).is_some());
        assert!(taken > 50 && taken < checked, "{taken} of {checked}");
    }

    #[test]
    fn parses_known_and_unknown_messages() {
        let m = ServerMessage::parse(
            r#"{"type":"status","data":{"status":{"exec_info":{"queue_remaining":2}},"sid":"x"}}"#,
        );
        match m {
            Ok(ServerMessage::Status(s)) => {
                assert_eq!(s.queue_remaining(), Some(2));
                assert_eq!(s.sid.as_deref(), Some("x"));
            }
            other => panic!("{other:?}"),
        }
        let m = ServerMessage::parse(r#"{"type":"crystools.monitor","data":{"cpu":3}}"#);
        assert!(matches!(m, Ok(ServerMessage::Unknown { ref kind, .. }) if kind == "crystools.monitor"));
        let m = ServerMessage::parse(r#"{"type":"executing","data":{"node":"3"}}"#);
        assert!(matches!(
            m,
            Ok(ServerMessage::Executing(ExecutingData { prompt_id: None, .. }))
        ));
        assert!(ServerMessage::parse("{not json").is_err());
        assert!(ServerMessage::parse(r#"{"type":"progress","data":{"value":NaN}}"#).is_err());
        // Wrong field types degrade instead of failing.
        let m = ServerMessage::parse(r#"{"type":"progress","data":{"value":"x","max":[1],"prompt_id":7}}"#);
        assert!(
            matches!(m, Ok(ServerMessage::Progress(ProgressData { ref prompt_id, .. })) if prompt_id.as_deref() == Some("7"))
        );
        // The raw-text progress path reads what the `Value` path read.
        for (text, value, max, pid, node) in [
            (
                r#"{"value":3,"max":10,"prompt_id":"p","node":"5"}"#,
                3.0,
                10.0,
                Some("p"),
                Some("5"),
            ),
            (
                r#"{"value":"2.5","max":1e1,"prompt_id":"a\"b","node":12}"#,
                2.5,
                10.0,
                Some("a\"b"),
                Some("12"),
            ),
            (
                r#"{"value":true,"max":"NaN","prompt_id":null,"node":[1]}"#,
                0.0,
                0.0,
                None,
                None,
            ),
            (r#"{"value":1e999,"max":-4,"prompt_id":{"x":1}}"#, 0.0, -4.0, None, None),
            (r#"{"value":"\u0037"}"#, 7.0, 0.0, None, None),
        ] {
            let data = format!(r#"{{"type":"progress","data":{text}}}"#);
            let expected = ProgressData {
                value,
                max,
                prompt_id: pid.map(str::to_string),
                node: node.map(str::to_string),
            };
            assert_eq!(
                ServerMessage::parse(&data),
                Ok(ServerMessage::Progress(expected)),
                "{text}"
            );
        }
        assert!(ServerMessage::parse(r#"{"type":"progress"}"#).is_err());
        // `data` before `type` (not ComfyUI's order) and extra keys read the same.
        let first = ServerMessage::parse(r#"{"type":"progress","data":{"value":1,"max":2,"node":"3"},"x":[1]}"#);
        let last = ServerMessage::parse(r#"{"x":{"y":1},"data":{"value":1,"max":2,"node":"3"},"type":"progress"}"#);
        assert!(
            matches!(first, Ok(ServerMessage::Progress(ProgressData { max: 2.0, .. }))),
            "{first:?}"
        );
        assert_eq!(first, last);
        assert!(
            ServerMessage::parse(r#"{"data":{}}"#).is_err(),
            "a message without a type"
        );
        // Blocked execution_error carries a list for current_inputs and no timestamp.
        let m = ServerMessage::parse(
            r#"{"type":"execution_error","data":{"prompt_id":"p","node_id":"1","exception_type":"ExecutionBlocked","traceback":[],"current_inputs":[]}}"#,
        );
        assert!(matches!(m, Ok(ServerMessage::ExecutionError(_))));
    }

    #[test]
    fn decodes_binary_frames_and_rejects_truncated_ones() {
        let mut f = vec![0, 0, 0, 1, 0, 0, 0, 2];
        f.extend_from_slice(b"\x89PNG");
        assert!(matches!(
            BinaryFrame::parse(Bytes::from(f)),
            Ok(BinaryFrame::Preview { mime: "image/png", .. })
        ));
        let mut f = vec![0, 0, 0, 3, 0, 0, 0, 2];
        f.extend_from_slice(b"10hello");
        assert_eq!(
            BinaryFrame::parse(Bytes::from(f)),
            Ok(BinaryFrame::Text {
                node_id: "10".into(),
                text: "hello".into()
            })
        );
        let meta = br#"{"node_id":"2","prompt_id":"p","image_type":"image/jpeg"}"#;
        let mut f = vec![0, 0, 0, 4];
        f.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        f.extend_from_slice(meta);
        f.extend_from_slice(&[0xff, 0xd8]);
        match BinaryFrame::parse(Bytes::from(f)) {
            Ok(BinaryFrame::PreviewWithMetadata { meta, mime, image }) => {
                assert_eq!(meta.prompt_id.as_deref(), Some("p"));
                assert_eq!(mime, "image/jpeg");
                assert_eq!(&image[..], &[0xff, 0xd8]);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            vec![0u8, 0],
            vec![0, 0, 0, 1],
            vec![0, 0, 0, 4, 0xff, 0, 0, 0, b'{'],
            vec![0, 0, 0, 3, 0, 0, 9, 0],
        ] {
            assert!(BinaryFrame::parse(Bytes::from(bad.clone())).is_err(), "{bad:?}");
        }
        assert!(matches!(
            BinaryFrame::parse(Bytes::from(vec![0, 0, 0, 9])),
            Ok(BinaryFrame::Unknown { event: 9, .. })
        ));
    }

    #[test]
    fn sorts_the_pending_heap_and_reads_node_errors() {
        let q: Value = serde_json::from_str(
            r#"{"queue_running":[[1,"a",{},{},[]]],"queue_pending":[[-25,"c",{},{},[]],[3,"b",{},{},[]],[-100.5,"d",{},{},[]]]}"#,
        )
        .unwrap_or_default();
        let v = QueueView::from_value(&q);
        assert_eq!(v.running, vec!["a"]);
        assert_eq!(v.pending, vec!["d", "c", "b"]);
        assert_eq!(v.position("b"), Some(2));
        let ne: Value = serde_json::from_str(
            r#"{"3":{"errors":[{"type":"value_bigger_than_max","message":"Value too big","details":"steps","extra_info":{"input_name":"steps"}}],"dependent_outputs":["9"],"class_type":"KSampler"}}"#,
        )
        .unwrap_or_default();
        let p = node_problems(&ne);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].input.as_deref(), Some("steps"));
        assert_eq!(p[0].code, "value_bigger_than_max");
    }
}

/// `GET /system_stats`. Every field is optional but `system` itself: that object is what proves it is ComfyUI.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SystemStatsBody {
    pub system: SystemInfo,
    #[serde(default)]
    pub devices: Vec<DeviceInfo>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct SystemInfo {
    #[serde(default)]
    pub comfyui_version: Option<String>,
    #[serde(default)]
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct DeviceInfo {
    #[serde(default)]
    pub name: Option<String>,
}

/// The first ComfyUI release whose `POST /interrupt {"prompt_id"}` stops only that prompt (commit 464ba1d6,
/// PR #9607, 2025-09-02). Older servers ignore the body and stop whatever runs, whoever submitted it.
pub const TARGETED_INTERRUPT_SINCE: (u64, u64, u64) = (0, 3, 57);

/// `major.minor.patch` from a `comfyui_version` such as "0.3.64", "v0.3.57" or "0.8.1-dev"; `None` when it does
/// not start like a version ("unknown", a custom build string).
pub fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let v = version.trim().trim_start_matches(['v', 'V']);
    let mut parts = v.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u64>().ok()
    });
    let major = parts.next().flatten()?;
    let minor = parts.next().flatten()?;
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// Whether a server of this version interrupts only the prompt named in the body. An unknown version counts as
/// old: the careful path is right on every server, the fast one only on new ones.
pub fn supports_targeted_interrupt(version: &str) -> bool {
    parse_version(version).is_some_and(|v| v >= TARGETED_INTERRUPT_SINCE)
}

#[cfg(test)]
mod version_tests {
    use super::*;

    #[test]
    fn targeted_interrupt_from_0_3_57_on() {
        assert_eq!(parse_version("0.3.64"), Some((0, 3, 64)));
        assert_eq!(parse_version("v0.3.57"), Some((0, 3, 57)));
        assert_eq!(parse_version("0.8.1-dev"), Some((0, 8, 1)));
        assert_eq!(parse_version("1.2"), Some((1, 2, 0)));
        assert_eq!(parse_version("unknown"), None);
        assert_eq!(parse_version(""), None);
        for (v, targeted) in [
            ("0.3.56", false),
            ("0.3.57", true),
            ("0.3.64", true),
            ("0.4.0", true),
            ("1.0.0", true),
            ("0.2.99", false),
            ("unknown", false),
            ("abc.def", false),
        ] {
            assert_eq!(supports_targeted_interrupt(v), targeted, "{v}");
        }
    }
}
