//! Local names for what servers send: one safe path component, a name not yet taken, a job's folder, and the
//! error for a failed write. Nothing a server names can escape the output directory.
use crate::error::{root_cause, Error, ErrorCode};
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
pub fn unique_path(dir: &Path, name: &str) -> PathBuf {
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

/// A failed write of a result, with what to do about it.
pub fn write_error(e: &std::io::Error) -> Error {
    let hint = match e.kind() {
        std::io::ErrorKind::PermissionDenied => " (no permission: choose another output directory)",
        _ if e.raw_os_error() == Some(28) => " (the disk is full: free space; the file is still on the server)",
        _ => "",
    };
    Error::new(
        ErrorCode::OutputWrite,
        format!("writing a result failed: {}{hint}", root_cause(e)),
    )
    .with_source(same_io_error(e))
}

/// An owned copy of a borrowed `io::Error` to keep as the cause (its OS error number, else its kind and text).
pub fn same_io_error(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// The media type of a result file by its extension (`mimetypes.guess_type` for what ComfyUI writes); the
/// simulator's `/view` and the studio server's file downloads answer with it.
pub fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "wav" => "audio/x-wav",
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "ogg" => "audio/ogg",
        "json" => "application/json",
        "txt" => "text/plain",
        "glb" => "model/gltf-binary",
        // ComfyUI forces HTML/JS/CSS to download.
        _ => "application/octet-stream",
    }
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
