//! `manifest.json` in a job's folder, for every backend: what was asked of which server, when, and every file
//! that came back with its size and SHA-256, so a shot can be checked and made again. Never a secret: the server
//! is recorded without userinfo or query, and every known secret (token, password) is masked wherever it appears.
use super::files::write_error;
use crate::error::{Error, ErrorCode, Result};
use crate::event::OutputFile;
use serde::Serialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "manifest.json";

#[derive(Debug, Serialize)]
pub struct Manifest<'a> {
    pub job_id: &'a str,
    /// The service kind: `comfyui`, `gradio`, `wangp_mcp`.
    pub backend: &'a str,
    /// The service's name in the hub.
    pub service: &'a str,
    /// The server's base URL (without userinfo or query).
    pub server: String,
    /// The tag the job was submitted with (its output sub-folder).
    pub tag: &'a str,
    pub submitted_at: f64,
    pub finished_at: f64,
    pub elapsed_seconds: f64,
    /// What the backend was asked, in its own terms: ComfyUI's `workflow` (the API prompt as posted) and
    /// `prompt_id`; a Gradio app's `api_name`, `fn_index` and `inputs`; WanGP's `source` settings.
    #[serde(flatten)]
    pub request: Map<String, Value>,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Serialize)]
pub struct ManifestFile {
    /// Relative to the manifest.
    pub path: String,
    pub node_id: String,
    pub kind: String,
    pub size: u64,
    pub sha256: String,
}

impl<'a> Manifest<'a> {
    /// A manifest for a job that finished now; `submitted_at` is the job's submission (epoch seconds).
    pub fn new(
        backend: &'a str,
        service: &'a str,
        job_id: &'a str,
        tag: &'a str,
        server: &str,
        submitted_at: f64,
    ) -> Manifest<'a> {
        let finished_at = crate::event::now_epoch();
        Manifest {
            job_id,
            backend,
            service,
            server: public_url(server),
            tag,
            submitted_at,
            finished_at,
            elapsed_seconds: (finished_at - submitted_at).max(0.0),
            request: Map::new(),
            files: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.request.insert(key.to_string(), value.into());
        self
    }

    /// The job's files, with paths relative to `dir` (the job folder).
    pub fn files(mut self, dir: &Path, outputs: &[OutputFile]) -> Self {
        self.files = outputs
            .iter()
            .map(|o| ManifestFile {
                path: o
                    .path
                    .strip_prefix(dir)
                    .unwrap_or(&o.path)
                    .to_string_lossy()
                    .into_owned(),
                node_id: o.node_id.clone(),
                kind: o.kind.clone(),
                size: o.size,
                sha256: o.sha256.clone(),
            })
            .collect();
        self
    }

    /// Writes `manifest.json` into `dir` (temp file + rename, like the files themselves). `secrets` (tokens,
    /// passwords) are masked wherever they appear, even inside the request.
    pub async fn write(&self, dir: &Path, secrets: &[&str]) -> Result<PathBuf> {
        let mut value = serde_json::to_value(self)
            .map_err(|e| Error::new(ErrorCode::Io, format!("cannot encode the manifest: {e}")))?;
        let secrets: Vec<&str> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
        if !secrets.is_empty() {
            mask(&mut value, &secrets);
        }
        let text = serde_json::to_vec_pretty(&value)
            .map_err(|e| Error::new(ErrorCode::Io, format!("cannot encode the manifest: {e}")))?;
        tokio::fs::create_dir_all(dir).await.map_err(|e| write_error(&e))?;
        let path = dir.join(FILE_NAME);
        let tmp = dir.join(format!(".manifest.{}.part", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, text).await.map_err(|e| write_error(&e))?;
        if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(write_error(&e));
        }
        Ok(path)
    }
}

/// `url` without userinfo, query or fragment (where tokens hide).
fn public_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

fn mask(v: &mut Value, secrets: &[&str]) {
    match v {
        Value::String(s) => {
            for secret in secrets {
                if s.contains(secret) {
                    *s = s.replace(secret, "***");
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| mask(x, secrets)),
        Value::Object(o) => o.values_mut().for_each(|x| mask(x, secrets)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn manifests_hold_no_secrets_and_relative_paths() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = OutputFile {
            node_id: "0".into(),
            kind: "image".into(),
            path: dir.path().join("a.png"),
            filename: "a.png".into(),
            subfolder: String::new(),
            file_type: "gradio".into(),
            size: 3,
            sha256: "abc".into(),
        };
        let m = Manifest::new(
            "gradio",
            "gradio",
            "job1",
            "shot",
            "http://u:pw@127.0.0.1:7860/?token=s3cret",
            1.0,
        )
        .with("inputs", json!(["hello s3cret-token", {"password": "hunter22"}]))
        .files(dir.path(), &[file]);
        let path = m
            .write(dir.path(), &["s3cret-token", "hunter22", ""])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{e}"));
        for secret in ["s3cret", "hunter22", "pw@"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["server"], "http://127.0.0.1:7860/");
        assert_eq!(v["inputs"][0], "hello ***");
        assert_eq!(v["files"][0]["path"], "a.png");
        assert_eq!(v["backend"], "gradio");
        assert!(v["elapsed_seconds"].as_f64().unwrap_or(-1.0) >= 0.0);
    }
}
