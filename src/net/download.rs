//! Bringing a result file home from any server: streamed to a temporary name with its SHA-256, made durable, then
//! renamed, so a crash or a full disk never leaves a short file under the final name. ComfyUI, Gradio and WanGP
//! downloads all end here.
use super::files::{unique_path, write_error};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest a single result download may take.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Streams a response body into `dest` and makes it durable; returns its size and hex SHA-256.
pub async fn write_body(resp: &mut reqwest::Response, dest: &mut tokio::fs::File, what: &str) -> Result<(u64, String)> {
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let mut total = 0u64;
    let mut hash = sha2::Sha256::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Error::http(what, e))? {
        dest.write_all(&chunk).await.map_err(|e| write_error(&e))?;
        hash.update(&chunk);
        total += chunk.len() as u64;
    }
    dest.flush().await.map_err(|e| write_error(&e))?;
    // Durable before the rename that publishes it: a crash never leaves a short file under the final name.
    dest.sync_all().await.map_err(|e| write_error(&e))?;
    Ok((total, hash.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

/// Saves a successful answer's body into `dir` as `name` (or "name (1)" when taken; `name` must already be a
/// safe component). Returns the path, size and hex SHA-256. Nothing is left behind on failure.
pub async fn save(mut resp: reqwest::Response, dir: &Path, name: &str, what: &str) -> Result<(PathBuf, u64, String)> {
    tokio::fs::create_dir_all(dir).await.map_err(|e| write_error(&e))?;
    let tmp = dir.join(format!(".{name}.{}.part", uuid::Uuid::new_v4().simple()));
    let written = async {
        let mut file = tokio::fs::File::create(&tmp).await.map_err(|e| write_error(&e))?;
        let (size, sha) = write_body(&mut resp, &mut file, what).await?;
        drop(file);
        // The free name is chosen only now, so files downloaded side by side do not pick the same one.
        let final_path = unique_path(dir, name);
        tokio::fs::rename(&tmp, &final_path)
            .await
            .map_err(|e| write_error(&e))?;
        Ok::<_, Error>((final_path, size, sha))
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    written
}

/// The error for a download the server answered with a non-2xx status (the core's one mapping, with the
/// start of the server's answer).
pub async fn status_error(what: &str, resp: reqwest::Response) -> Error {
    let status = resp.status().as_u16();
    let body = super::body::read_prefix(resp, super::body::ERROR_CAP, what)
        .await
        .unwrap_or_default();
    Error::from_status(what, status, &body)
}

/// Downloads `url` into `dir` as `name` (or "name (1)" when taken). Returns the path, size and hex SHA-256.
pub async fn to_dir(client: &reqwest::Client, url: url::Url, dir: &Path, name: &str) -> Result<(PathBuf, u64, String)> {
    let what = format!("downloading {name}");
    let resp = client
        .get(url)
        .timeout(DOWNLOAD_TIMEOUT)
        .send()
        .await
        .map_err(|e| Error::http(&what, e))?;
    if !resp.status().is_success() {
        return Err(status_error(&what, resp).await);
    }
    save(resp, dir, name, &what).await
}
