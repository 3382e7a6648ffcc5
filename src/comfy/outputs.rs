//! Result files: safe local names and atomic writes (temp file + rename), so a crash or a full disk never leaves
//! a half-written file under a final name and nothing a server names can escape the output directory.
use super::http::{write_error, ComfyHttp};
use super::protocol::FileRef;
use crate::error::Result;
use crate::event::OutputFile;
use std::path::{Path, PathBuf};

/// A single path component safe on Windows, macOS and Linux: no separators, no `..`, no control or reserved
/// characters, not empty, at most 120 bytes (keeping the extension).
pub fn safe_component(name: &str, fallback: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut s: String = base
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') {
                '_'
            } else {
                c
            }
        })
        .collect();
    s = s.trim_matches(|c: char| c == '.' || c.is_whitespace()).to_string();
    let reserved = [
        "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "LPT1", "LPT2", "LPT3",
    ];
    let stem = s.split('.').next().unwrap_or("").to_ascii_uppercase();
    if s.is_empty() || reserved.contains(&stem.as_str()) {
        s = format!(
            "{fallback}{}",
            if s.is_empty() { String::new() } else { format!("_{s}") }
        );
    }
    if s.len() > 120 {
        let ext = Path::new(&s)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_string();
        let keep = 120 - ext.len().min(16) - 1;
        let mut cut = keep;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s = if ext.is_empty() || ext.len() > 16 {
            s[..cut].to_string()
        } else {
            format!("{}.{ext}", &s[..cut])
        };
    }
    s
}

/// `output_dir/<tag or service>/<job id>/`
pub fn job_dir(output_dir: &Path, group: &str, job_id: &str) -> PathBuf {
    output_dir
        .join(safe_component(group, "jobs"))
        .join(safe_component(job_id, "job"))
}

/// A name not yet taken in `dir` ("a.png", "a (1).png", ...).
pub(crate) fn unique_path(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let p = Path::new(name);
    let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("file");
    let ext = p
        .extension()
        .and_then(|s| s.to_str())
        .map(|e| format!(".{e}"))
        .unwrap_or_default();
    (1..10_000)
        .map(|i| dir.join(format!("{stem} ({i}){ext}")))
        .find(|c| !c.exists())
        .unwrap_or(first)
}

/// Downloads every file into `dir`, each written atomically. Files already on disk from an earlier attempt of
/// the same job (same node, kind and name) are not fetched twice.
pub async fn download_all(http: &ComfyHttp, dir: &Path, refs: &[FileRef]) -> Result<Vec<OutputFile>> {
    tokio::fs::create_dir_all(dir).await.map_err(|e| write_error(&e))?;
    let mut files = Vec::with_capacity(refs.len());
    let mut seen = std::collections::HashSet::new();
    for r in refs {
        if !seen.insert(r.clone()) {
            continue;
        }
        let name = safe_component(&r.filename, "output");
        let final_path = unique_path(dir, &name);
        let tmp = dir.join(format!(".{name}.{}.part", uuid::Uuid::new_v4().simple()));
        let mut file = tokio::fs::File::create(&tmp).await.map_err(|e| write_error(&e))?;
        let result = http.download(&r.filename, &r.subfolder, &r.file_type, &mut file).await;
        drop(file);
        let (size, sha256) = match result {
            Ok(done) => done,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        if let Err(e) = tokio::fs::rename(&tmp, &final_path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(write_error(&e));
        }
        files.push(OutputFile {
            node_id: r.node_id.clone(),
            kind: r.kind.clone(),
            path: final_path,
            filename: r.filename.clone(),
            subfolder: r.subfolder.clone(),
            file_type: r.file_type.clone(),
            size,
            sha256,
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_or_break_the_directory() {
        assert_eq!(safe_component("../../etc/passwd", "x"), "passwd");
        assert_eq!(safe_component("..\\..\\win.ini", "x"), "win.ini");
        assert_eq!(safe_component("..", "x"), "x");
        assert_eq!(safe_component("", "x"), "x");
        assert_eq!(safe_component("a:b?.png", "x"), "a_b_.png");
        assert_eq!(safe_component("CON.png", "x"), "x_CON.png");
        assert_eq!(safe_component("bell\u{7}.png", "x"), "bell_.png");
        let long = format!("{}.png", "é".repeat(200));
        let s = safe_component(&long, "x");
        assert!(s.len() <= 120 && s.ends_with(".png"), "{s}");
    }

    #[test]
    fn job_dirs_nest_under_the_output_dir() {
        let d = job_dir(Path::new("/out"), "../shot 1", "abc");
        assert_eq!(d, PathBuf::from("/out/shot 1/abc"));
    }

    #[test]
    fn unique_names_do_not_overwrite() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("a.png"), b"1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(unique_path(dir.path(), "a.png"), dir.path().join("a (1).png"));
        assert_eq!(unique_path(dir.path(), "b.png"), dir.path().join("b.png"));
    }
}

/// What `manifest.json` in a job's folder records, so a shot can be made again exactly.
#[derive(Debug, serde::Serialize)]
pub struct Manifest<'a> {
    pub job_id: &'a str,
    pub prompt_id: &'a str,
    pub server: &'a str,
    pub tag: &'a str,
    /// The API prompt as posted (conversion and parameters applied).
    pub workflow: &'a serde_json::Value,
    pub submitted_at: f64,
    pub finished_at: f64,
    pub elapsed_seconds: f64,
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, serde::Serialize)]
pub struct ManifestFile {
    /// Relative to the manifest.
    pub path: String,
    pub node_id: String,
    pub kind: String,
    pub size: u64,
    pub sha256: String,
}

/// Writes `manifest.json` next to the job's files (temp file + rename, like the files themselves).
pub async fn write_manifest(dir: &Path, manifest: &Manifest<'_>) -> Result<PathBuf> {
    let text = serde_json::to_vec_pretty(manifest)
        .map_err(|e| crate::Error::new(crate::ErrorCode::Io, format!("cannot encode the manifest: {e}")))?;
    tokio::fs::create_dir_all(dir).await.map_err(|e| write_error(&e))?;
    let path = dir.join("manifest.json");
    let tmp = dir.join(format!(".manifest.{}.part", uuid::Uuid::new_v4().simple()));
    tokio::fs::write(&tmp, text).await.map_err(|e| write_error(&e))?;
    if let Err(e) = tokio::fs::rename(&tmp, &path).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(write_error(&e));
    }
    Ok(path)
}

pub fn manifest_files(dir: &Path, outputs: &[OutputFile]) -> Vec<ManifestFile> {
    outputs
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
        .collect()
}
