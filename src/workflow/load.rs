//! Loading workflows: API or UI format from JSON text or a file (detected), or the workflow a ComfyUI PNG carries
//! in its text chunks (`prompt` = API, `workflow` = UI).
use super::error::{error, Error, ErrorKind, Result};
use super::graph::{InputValue, Meta, Prompt, PromptNode};
use super::ui::{looks_like_ui, UiWorkflow};
use indexmap::IndexMap;
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// A workflow in either format.
#[derive(Debug, Clone, PartialEq)]
pub enum Workflow {
    Api(Prompt),
    Ui(UiWorkflow),
}

impl Workflow {
    pub fn format(&self) -> &'static str {
        match self {
            Workflow::Api(_) => "api",
            Workflow::Ui(_) => "ui",
        }
    }
}

/// Which format a JSON value is in, or `None` for neither.
pub fn detect(value: &Value) -> Option<&'static str> {
    if looks_like_ui(value) {
        return Some("ui");
    }
    let obj = value.as_object()?;
    let api = !obj.is_empty()
        && obj.values().all(|n| {
            n.as_object()
                .is_some_and(|o| o.contains_key("class_type") || o.contains_key("inputs"))
        });
    api.then_some("api")
}

/// Parses JSON text; `origin` (a file name or `"<text>"`) starts every error message.
pub fn load_str(text: &str, origin: &str) -> Result<Workflow> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        error(
            ErrorKind::InvalidJson,
            format!("{origin}: not JSON: {e} (expected a ComfyUI workflow, API or UI format)"),
        )
        .with_source(e)
    })?;
    load_value(value, origin)
}

/// Reads a `.json` workflow or a ComfyUI `.png` (by its signature, whatever the extension).
pub fn load_file(path: impl AsRef<Path>) -> Result<Workflow> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|e| error(ErrorKind::Io, format!("{origin}: cannot read the file: {e}")).with_source(e))?;
    if bytes.starts_with(PNG_SIGNATURE) {
        return load_png(&bytes, &origin)?.preferred(&origin);
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        error(
            ErrorKind::InvalidJson,
            format!("{origin}: not UTF-8 text (expected a workflow .json or a ComfyUI .png)"),
        )
    })?;
    load_str(text.trim_start_matches('\u{feff}'), &origin)
}

/// Accepts a parsed JSON value in either format. A `{"prompt": {...}}` body (as POSTed) is unwrapped.
pub fn load_value(value: Value, origin: &str) -> Result<Workflow> {
    match detect(&value) {
        Some("ui") => UiWorkflow::from_value(value, origin).map(Workflow::Ui),
        Some(_) => parse_api(value, origin).map(Workflow::Api),
        None => {
            if let Some(inner) = value.get("prompt").filter(|p| detect(p) == Some("api")) {
                return parse_api(inner.clone(), origin).map(Workflow::Api);
            }
            Err(error(
                ErrorKind::NotAWorkflow,
                format!(
                    "{origin}: at $: expected a ComfyUI workflow: a UI workflow (an object with `nodes` and `links`) \
                     or an API prompt (an object of nodes with `class_type` and `inputs`), found {}",
                    shape(&value)
                ),
            ))
        }
    }
}

fn shape(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let keys: Vec<&str> = o.keys().take(6).map(String::as_str).collect();
            format!("an object with keys {keys:?}")
        }
        Value::Array(a) => format!("an array of {} items", a.len()),
        other => format!("{other}"),
    }
}

/// API format with per-node paths in errors.
fn parse_api(value: Value, origin: &str) -> Result<Prompt> {
    let Value::Object(map) = value else {
        return Err(error(
            ErrorKind::InvalidWorkflow,
            format!("{origin}: at $: expected an object of nodes"),
        ));
    };
    let mut nodes = IndexMap::new();
    for (id, node) in map {
        let path = format!("$[{id:?}]");
        let Value::Object(mut obj) = node else {
            return Err(error(
                ErrorKind::InvalidWorkflow,
                format!("{origin}: at {path}: expected a node object {{class_type, inputs}}"),
            ));
        };
        let class_type = match obj.remove("class_type") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                return Err(error(
                    ErrorKind::InvalidWorkflow,
                    format!("{origin}: at {path}.class_type: expected the class name (a string), found {other}"),
                ))
            }
        };
        let inputs = match obj.remove("inputs") {
            None | Some(Value::Null) => IndexMap::new(),
            Some(Value::Object(inputs)) => inputs
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        serde_json::from_value::<InputValue>(v).unwrap_or(InputValue::Literal(Value::Null)),
                    )
                })
                .collect(),
            Some(other) => {
                return Err(error(
                    ErrorKind::InvalidWorkflow,
                    format!("{origin}: at {path}.inputs: expected an object of input values, found {other}"),
                ))
            }
        };
        let meta = obj.remove("_meta").map(|m| Meta {
            title: m.get("title").and_then(Value::as_str).map(str::to_string),
        });
        nodes.insert(
            id,
            PromptNode {
                inputs,
                class_type,
                meta,
            },
        );
    }
    Ok(Prompt { nodes })
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// What a ComfyUI PNG carries: the API prompt (`prompt` chunk) and/or the UI workflow (`workflow` chunk).
#[derive(Debug, Clone, PartialEq)]
pub struct PngWorkflow {
    pub prompt: Option<Prompt>,
    pub workflow: Option<UiWorkflow>,
}

impl PngWorkflow {
    /// The UI workflow when present (it keeps titles, groups and muted nodes), else the API prompt.
    pub fn preferred(self, origin: &str) -> Result<Workflow> {
        match (self.workflow, self.prompt) {
            (Some(ui), _) => Ok(Workflow::Ui(ui)),
            (None, Some(api)) => Ok(Workflow::Api(api)),
            (None, None) => Err(no_workflow(origin)),
        }
    }
}

fn no_workflow(origin: &str) -> Error {
    error(
        ErrorKind::NoEmbeddedWorkflow,
        format!("{origin}: the PNG has no `prompt` or `workflow` text chunk (was it saved by ComfyUI's SaveImage?)"),
    )
}

/// Reads the `prompt`/`workflow` text chunks (tEXt, zTXt or iTXt, before or after the image data) of a PNG.
pub fn load_png(bytes: &[u8], origin: &str) -> Result<PngWorkflow> {
    let chunks = png_text_chunks(bytes, MAX_TEXT_CHUNK).map_err(|problem| match problem {
        ChunkProblem::NotPng => error(
            ErrorKind::NoEmbeddedWorkflow,
            format!("{origin}: not a readable PNG file"),
        ),
        ChunkProblem::TooLarge(keyword) => error(
            ErrorKind::InvalidWorkflow,
            format!(
                "{origin}: the PNG text chunk `{keyword}` inflates to more than the limit of {MAX_TEXT_CHUNK} bytes \
                 (a compression bomb, or not a ComfyUI image); refused"
            ),
        ),
    })?;
    let mut found = PngWorkflow {
        prompt: None,
        workflow: None,
    };
    for (keyword, text) in chunks {
        match keyword.as_str() {
            "prompt" => {
                let value: Value = serde_json::from_str(&text).map_err(|e| {
                    error(
                        ErrorKind::InvalidJson,
                        format!("{origin}: PNG chunk `prompt`: not JSON: {e}"),
                    )
                    .with_source(e)
                })?;
                found.prompt = Some(parse_api(value, &format!("{origin} (PNG chunk `prompt`)"))?);
            }
            "workflow" => {
                let value: Value = serde_json::from_str(&text).map_err(|e| {
                    error(
                        ErrorKind::InvalidJson,
                        format!("{origin}: PNG chunk `workflow`: not JSON: {e}"),
                    )
                    .with_source(e)
                })?;
                found.workflow = Some(UiWorkflow::from_value(
                    value,
                    &format!("{origin} (PNG chunk `workflow`)"),
                )?);
            }
            _ => {}
        }
    }
    if found.prompt.is_none() && found.workflow.is_none() {
        return Err(no_workflow(origin));
    }
    Ok(found)
}

/// The most a compressed text chunk may inflate to. Workflows are a few MB at most; the limit keeps a tiny PNG
/// whose chunk inflates to gigabytes (a zip bomb) from taking the memory.
pub const MAX_TEXT_CHUNK: usize = 32 << 20;

#[derive(Debug, PartialEq)]
enum ChunkProblem {
    NotPng,
    /// The named chunk inflates beyond the limit.
    TooLarge(String),
}

/// The only text chunks read: the rest are skipped without inflating them.
fn wanted(keyword: &str) -> bool {
    matches!(keyword, "prompt" | "workflow")
}

/// (keyword, text) of the `prompt`/`workflow` text chunks.
fn png_text_chunks(bytes: &[u8], limit: usize) -> std::result::Result<Vec<(String, String)>, ChunkProblem> {
    chunks(bytes, limit).ok_or(ChunkProblem::NotPng)?
}

fn chunks(bytes: &[u8], limit: usize) -> Option<std::result::Result<Vec<(String, String)>, ChunkProblem>> {
    let mut rest = bytes.strip_prefix(PNG_SIGNATURE)?;
    let mut out = Vec::new();
    let inflate_capped = |keyword: &str, data: &[u8]| match inflate(data, limit) {
        Inflated::Done(text) => Ok(Some(text)),
        Inflated::Broken => Ok(None),
        Inflated::TooLarge => Err(ChunkProblem::TooLarge(keyword.to_string())),
    };
    while rest.len() >= 12 {
        let len = u32::from_be_bytes(rest[0..4].try_into().ok()?) as usize;
        let kind = &rest[4..8];
        let data = rest.get(8..8 + len)?;
        rest = rest.get(8 + len + 4..)?;
        match kind {
            b"tEXt" => {
                let nul = data.iter().position(|b| *b == 0)?;
                out.push((latin1(&data[..nul]), latin1(&data[nul + 1..])));
            }
            b"zTXt" => {
                let nul = data.iter().position(|b| *b == 0)?;
                let keyword = latin1(&data[..nul]);
                if !wanted(&keyword) {
                    continue;
                }
                match inflate_capped(&keyword, data.get(nul + 2..)?) {
                    Ok(text) => out.push((keyword, latin1(&text?))),
                    Err(problem) => return Some(Err(problem)),
                }
            }
            b"iTXt" => {
                let nul = data.iter().position(|b| *b == 0)?;
                let keyword = latin1(&data[..nul]);
                let compressed = *data.get(nul + 1)? == 1;
                let after = data.get(nul + 3..)?;
                let lang_end = after.iter().position(|b| *b == 0)?;
                let after = &after[lang_end + 1..];
                let trans_end = after.iter().position(|b| *b == 0)?;
                let body = &after[trans_end + 1..];
                if !wanted(&keyword) {
                    continue;
                }
                let text = if compressed {
                    match inflate_capped(&keyword, body) {
                        Ok(text) => text?,
                        Err(problem) => return Some(Err(problem)),
                    }
                } else {
                    body.to_vec()
                };
                out.push((keyword, String::from_utf8_lossy(&text).into_owned()));
            }
            b"IEND" => break,
            _ => {}
        }
    }
    Some(Ok(out))
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|b| *b as char).collect()
}

enum Inflated {
    Done(Vec<u8>),
    Broken,
    TooLarge,
}

/// Inflates at most `limit` bytes: reading stops one byte past it, so a bomb costs `limit` bytes, not its size.
fn inflate(data: &[u8], limit: usize) -> Inflated {
    let mut out = Vec::new();
    let mut reader = flate2::read::ZlibDecoder::new(data).take(limit as u64 + 1);
    if reader.read_to_end(&mut out).is_err() {
        return Inflated::Broken;
    }
    if out.len() > limit {
        Inflated::TooLarge
    } else {
        Inflated::Done(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn png_with(chunks: &[(&str, &str, bool)]) -> Vec<u8> {
        let mut buf = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut buf, 1, 1);
            enc.set_color(png::ColorType::Grayscale);
            for (k, t, itxt) in chunks {
                if *itxt {
                    enc.add_itxt_chunk(k.to_string(), t.to_string()).unwrap();
                } else {
                    enc.add_text_chunk(k.to_string(), t.to_string()).unwrap();
                }
            }
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[0]).unwrap();
        }
        buf
    }

    #[test]
    fn detects_both_formats_and_names_the_origin_on_errors() {
        let api = r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}"#;
        assert_eq!(load_str(api, "a.json").unwrap().format(), "api");
        let ui = r#"{"nodes": [], "links": []}"#;
        assert_eq!(load_str(ui, "b.json").unwrap().format(), "ui");
        let err = load_str("[1, 2]", "c.json").unwrap_err();
        assert_eq!(err.reason().unwrap_or_default(), "not_a_workflow");
        assert!(
            err.message.starts_with("c.json: at $: expected a ComfyUI workflow"),
            "{}",
            err.message
        );
        let err = load_str("{nope", "d.json").unwrap_err();
        assert_eq!(err.reason().unwrap_or_default(), "invalid_json");
        let err = load_str(r#"{"1": {"class_type": 5, "inputs": {}}}"#, "e.json").unwrap_err();
        assert!(err.message.contains("at $[\"1\"].class_type"), "{}", err.message);
    }

    #[test]
    fn reads_prompt_and_workflow_from_png_text_chunks() {
        let bytes = png_with(&[
            (
                "prompt",
                r#"{"9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}}}"#,
                false,
            ),
            ("workflow", r#"{"nodes": [], "links": [], "version": 0.4}"#, true),
        ]);
        let found = load_png(&bytes, "x.png").unwrap();
        assert_eq!(found.prompt.unwrap().nodes["9"].class(), "SaveImage");
        assert!(found.workflow.is_some());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img.png");
        std::fs::write(
            &path,
            png_with(&[("prompt", r#"{"1": {"class_type": "A", "inputs": {}}}"#, false)]),
        )
        .unwrap();
        assert_eq!(load_file(&path).unwrap().format(), "api");
        std::fs::write(&path, png_with(&[("parameters", "a1111 text", false)])).unwrap();
        assert_eq!(
            load_file(&path).unwrap_err().reason().unwrap_or_default(),
            "no_embedded_workflow"
        );
    }

    /// A PNG with a `zTXt` chunk named `keyword` holding `zeros` zero bytes, compressed (a few KB per 10 MiB).
    fn png_with_bomb(keyword: &str, zeros: usize, itxt: bool) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let block = vec![0u8; 1 << 20];
        for _ in 0..zeros / block.len() {
            enc.write_all(&block).unwrap();
        }
        let packed = enc.finish().unwrap();
        let mut data = keyword.as_bytes().to_vec();
        if itxt {
            data.extend_from_slice(&[0, 1, 0, 0, 0]); // compressed, method 0, no language, no translation
        } else {
            data.extend_from_slice(&[0, 0]); // method 0
        }
        data.extend_from_slice(&packed);
        let kind: &[u8; 4] = if itxt { b"iTXt" } else { b"zTXt" };
        let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
        chunk.extend_from_slice(kind);
        chunk.extend_from_slice(&data);
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(&data);
        chunk.extend_from_slice(&crc.sum().to_be_bytes());
        let mut png = png_with(&[]);
        // After the signature (8) and IHDR (25): where a text chunk may stand.
        png.splice(33..33, chunk);
        png
    }

    #[test]
    fn a_zip_bomb_text_chunk_is_refused_with_the_limit_named() {
        let over = MAX_TEXT_CHUNK + (1 << 20);
        for itxt in [false, true] {
            let bomb = png_with_bomb("workflow", over, itxt);
            assert!(
                bomb.len() < over / 100,
                "the test bomb should be small: {} bytes",
                bomb.len()
            );
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("bomb.png");
            std::fs::write(&path, &bomb).unwrap();
            let err = load_file(&path).unwrap_err();
            assert_eq!(err.reason().unwrap_or_default(), "invalid_workflow", "{}", err.message);
            assert!(
                err.message.contains(&format!("limit of {MAX_TEXT_CHUNK} bytes")) && err.message.contains("`workflow`"),
                "{}",
                err.message
            );
        }
        // Under the limit the same chunk inflates (and is then judged as JSON, which zeros are not).
        let small = png_with_bomb("prompt", 1 << 20, false);
        assert_eq!(
            load_png(&small, "s.png").unwrap_err().reason().unwrap_or_default(),
            "invalid_json"
        );
        assert_eq!(
            png_text_chunks(&small, 1000),
            Err(ChunkProblem::TooLarge("prompt".into()))
        );
        // Chunks we never read are not inflated at all, bomb or not.
        let other = png_with_bomb("comment", over, false);
        assert_eq!(
            load_png(&other, "o.png").unwrap_err().reason().unwrap_or_default(),
            "no_embedded_workflow"
        );
    }
}
