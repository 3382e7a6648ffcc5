//! Bringing a result file home from any server: streamed to a temporary name with its SHA-256, made durable, then
//! renamed, so a crash or a full disk never leaves a short file under the final name.
use crate::comfy::http::write_error;
use crate::comfy::outputs::unique_path;
use crate::error::{describe_http_error, Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Streams a response body into `dest` and makes it durable; returns its size and hex SHA-256.
pub async fn write_body(resp: &mut reqwest::Response, dest: &mut tokio::fs::File, what: &str) -> Result<(u64, String)> {
    use sha2::Digest;
    use tokio::io::AsyncWriteExt;
    let mut total = 0u64;
    let mut hash = sha2::Sha256::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe_http_error(e, what))? {
        dest.write_all(&chunk).await.map_err(|e| write_error(&e))?;
        hash.update(&chunk);
        total += chunk.len() as u64;
    }
    dest.flush().await.map_err(|e| write_error(&e))?;
    // Durable before the rename that publishes it: a crash never leaves a short file under the final name.
    dest.sync_all().await.map_err(|e| write_error(&e))?;
    Ok((total, hash.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

/// Downloads `url` into `dir` as `name` (or "name (1)" when taken). Returns the path, size and hex SHA-256.
pub async fn to_dir(client: &reqwest::Client, url: url::Url, dir: &Path, name: &str) -> Result<(PathBuf, u64, String)> {
    let what = format!("downloading {name}");
    tokio::fs::create_dir_all(dir).await.map_err(|e| write_error(&e))?;
    let mut resp = client
        .get(url)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .map_err(|e| describe_http_error(e, &what))?;
    let status = resp.status();
    if !status.is_success() {
        let body = crate::error::error_body(resp).await;
        return Err(Error::from_status(&what, status.as_u16(), &body));
    }
    let final_path = unique_path(dir, name);
    let tmp = dir.join(format!(".{name}.{}.part", uuid::Uuid::new_v4().simple()));
    let written = async {
        let mut file = tokio::fs::File::create(&tmp).await.map_err(|e| write_error(&e))?;
        let done = write_body(&mut resp, &mut file, &what).await?;
        tokio::fs::rename(&tmp, &final_path)
            .await
            .map_err(|e| write_error(&e))?;
        Ok::<_, Error>(done)
    }
    .await;
    match written {
        Ok((size, sha)) => Ok((final_path, size, sha)),
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(e)
        }
    }
}
