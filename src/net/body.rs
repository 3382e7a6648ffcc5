//! Every HTTP answer read into memory goes through here, so no server (broken, hostile or just huge) can make
//! us buffer more than a stated number of bytes. Streams that are written to disk use `download` instead.
use crate::error::{Error, ErrorCode, Result};

/// JSON answers of API calls: ComfyUI's `/object_info` of a big install and the `/config` of a large Gradio
/// app (Wan2GP has hundreds of components) are a few MB; 64 MiB leaves room without letting a server exhaust
/// memory.
pub const JSON_CAP: usize = 64 << 20;
/// Error bodies and other answers we only show a part of.
pub const ERROR_CAP: usize = 64 << 10;

/// The error for an answer over `cap`: it names the limit in bytes.
pub fn too_large(what: &str, cap: usize) -> Error {
    Error::new(
        ErrorCode::Protocol,
        format!("{what}: the answer is larger than the limit of {cap} bytes; refused (a broken or hostile server?)"),
    )
}

/// Reads the whole body; fails (without reading further) once it would exceed `cap` bytes.
pub async fn read_capped(resp: reqwest::Response, cap: usize, what: &str) -> Result<Vec<u8>> {
    read(resp, cap, what, false).await
}

/// Reads at most `cap` bytes and stops there (for error texts and probes, where a prefix is enough).
pub async fn read_prefix(resp: reqwest::Response, cap: usize, what: &str) -> Result<Vec<u8>> {
    read(resp, cap, what, true).await
}

async fn read(mut resp: reqwest::Response, cap: usize, what: &str, truncate: bool) -> Result<Vec<u8>> {
    if !truncate && resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large(what, cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Error::http(what, e))? {
        if body.len() + chunk.len() > cap {
            if truncate {
                body.extend_from_slice(&chunk[..cap - body.len()]);
                return Ok(body);
            }
            return Err(too_large(what, cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
