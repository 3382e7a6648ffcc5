//! `GET /view` (annotations, traversal checks, Range, channel/preview variants for PNGs) and
//! `POST /upload/image|mask` (multipart parsing, SHA-256 dedupe, `name (1).png` renaming).
use super::http::{http_date, Request, Response};
use super::image::{decode_png, encode_jpeg, encode_png};
use super::state::Shared;
use super::validate::{annotated, join_inside};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Lexical `os.path.abspath(os.path.join(base, sub))`, or `None` if it leaves `base`.
fn sub_inside(base: &Path, sub: &str) -> Option<PathBuf> {
    let mut out = base.to_path_buf();
    let depth_base = out.components().count();
    for c in Path::new(sub).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if out.components().count() <= depth_base {
                    return None;
                }
                out.pop();
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn disposition(name: &str) -> String {
    format!("filename=\"{name}\"")
}

/// `server.view_image`.
pub(crate) fn view(shared: &Shared, req: &Request) -> Response {
    let Some(raw) = req.query("filename") else {
        return Response::empty(404);
    };
    let (filename, annotated_dir) = annotated(raw, &shared.dirs);
    if filename.is_empty() || filename.starts_with('/') || filename.contains("..") {
        return Response::empty(400);
    }
    let base = match annotated_dir {
        Some(d) => d.clone(),
        None => match shared.dirs.by_type(req.query("type").unwrap_or("output")) {
            Some(d) => d.clone(),
            None => return Response::empty(400),
        },
    };
    let dir = match req.query("subfolder") {
        Some(sub) => match sub_inside(&base, sub) {
            Some(d) => d,
            None => return Response::empty(403),
        },
        None => base,
    };
    // Only the basename counts: a subfolder inside `filename` is ignored (→ usually 404).
    let name = filename.rsplit('/').next().unwrap_or(&filename).to_string();
    let file = dir.join(&name);
    if !file.is_file() {
        return Response::empty(404);
    }
    let Ok(bytes) = std::fs::read(&file) else {
        return Response::empty(404);
    };
    let channel = req.query("channel").unwrap_or("rgba");
    if let Some(preview) = req.query("preview") {
        return preview_variant(&bytes, &name, preview);
    }
    match channel {
        "rgb" | "a" => channel_variant(&bytes, &name, channel),
        _ => file_response(req, &file, &name, bytes),
    }
}

/// `web.FileResponse`: ETag, Last-Modified, Accept-Ranges and single-range requests.
fn file_response(req: &Request, file: &Path, name: &str, bytes: Vec<u8>) -> Response {
    let meta = std::fs::metadata(file).ok();
    let modified = meta.as_ref().and_then(|m| m.modified().ok()).unwrap_or(UNIX_EPOCH);
    let mtime_ns = modified.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let size = bytes.len();
    let etag = format!("\"{mtime_ns:x}-{size:x}\"");
    let base = |status: u16, body: Vec<u8>| {
        Response::bytes(status, crate::net::files::content_type(name), body)
            .with_header("Content-Disposition", &disposition(name))
            .with_header("Etag", &etag)
            .with_header("Last-Modified", &http_date(modified))
            .with_header("Accept-Ranges", "bytes")
    };
    if req.header("if-none-match") == Some(etag.as_str()) {
        let mut r = base(304, Vec::new());
        r.headers.retain(|(k, _)| k != "Content-Type");
        return r;
    }
    let Some(range) = req.header("range") else {
        return base(200, bytes);
    };
    match parse_range(range, size) {
        Some((start, end)) => {
            base(206, bytes[start..=end].to_vec()).with_header("Content-Range", &format!("bytes {start}-{end}/{size}"))
        }
        None => {
            let mut r = Response::empty(416).with_header("Content-Range", &format!("bytes */{size}"));
            r.close = false;
            r
        }
    }
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` → inclusive `(start, end)`.
fn parse_range(h: &str, size: usize) -> Option<(usize, usize)> {
    let spec = h.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: usize = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        return Some((size.saturating_sub(n), size - 1));
    }
    let start: usize = a.parse().ok()?;
    let end: usize = if b.is_empty() {
        size - 1
    } else {
        b.parse::<usize>().ok()?.min(size - 1)
    };
    (start <= end && start < size).then_some((start, end))
}

/// `preview=jpeg;80` (the simulator has no WebP encoder: `webp` is answered with a JPEG).
fn preview_variant(bytes: &[u8], name: &str, preview: &str) -> Response {
    let Ok(img) = decode_png(bytes) else {
        return Response::server_error();
    };
    let quality = preview
        .rsplit(';')
        .next()
        .and_then(|q| q.parse::<u8>().ok())
        .unwrap_or(90);
    let rgb: Vec<u8> = img.data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    match encode_jpeg(img.w, img.h, &rgb, quality) {
        Ok(jpg) => Response::bytes(200, "image/jpeg", jpg).with_header("Content-Disposition", &disposition(name)),
        Err(_) => Response::server_error(),
    }
}

/// `channel=rgb` (alpha dropped) or `channel=a` (an RGBA image carrying only the alpha).
fn channel_variant(bytes: &[u8], name: &str, channel: &str) -> Response {
    let Ok(img) = decode_png(bytes) else {
        return Response::server_error();
    };
    let out = if channel == "rgb" {
        let rgb: Vec<u8> = img.data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
        encode_png(img.w, img.h, &rgb, png::ColorType::Rgb, &[])
    } else {
        let rgba: Vec<u8> = img.data.chunks_exact(4).flat_map(|p| [0, 0, 0, p[3]]).collect();
        encode_png(img.w, img.h, &rgba, png::ColorType::Rgba, &[])
    };
    match out {
        Ok(png) => Response::bytes(200, "image/png", png).with_header("Content-Disposition", &disposition(name)),
        Err(_) => Response::server_error(),
    }
}

/// One form field: a text value or a file.
pub(crate) struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

fn header_param(h: &str, key: &str) -> Option<String> {
    for piece in h.split(';').skip(1) {
        if let Some((k, v)) = piece.trim().split_once('=') {
            if k.trim().eq_ignore_ascii_case(key) {
                return Some(v.trim().trim_matches('"').to_string());
            }
        }
    }
    None
}

/// `multipart/form-data` or `application/x-www-form-urlencoded` (what `request.post()` reads).
pub(crate) fn parse_form(req: &Request) -> Vec<Part> {
    let ctype = req.header("content-type").unwrap_or_default();
    if ctype
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        let text = String::from_utf8_lossy(&req.body);
        return text
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                Part {
                    name: super::http::percent_decode(k, true),
                    filename: None,
                    data: super::http::percent_decode(v, true).into_bytes(),
                }
            })
            .collect();
    }
    let Some(boundary) = header_param(ctype, "boundary") else {
        return Vec::new();
    };
    let delim = format!("--{boundary}").into_bytes();
    let body = &req.body;
    let mut parts = Vec::new();
    let mut pos = match find(body, &delim, 0) {
        Some(p) => p + delim.len(),
        None => return parts,
    };
    for _ in 0..10_000 {
        if body[pos..].starts_with(b"--") {
            break;
        }
        let start = pos + if body[pos..].starts_with(b"\r\n") { 2 } else { 0 };
        let Some(head_end) = find(body, b"\r\n\r\n", start) else {
            break;
        };
        let head = String::from_utf8_lossy(&body[start..head_end]).into_owned();
        let data_start = head_end + 4;
        let Some(next) = find(body, &delim, data_start) else {
            break;
        };
        let data_end = if next >= 2 && &body[next - 2..next] == b"\r\n" {
            next - 2
        } else {
            next
        };
        let mut name = String::new();
        let mut filename = None;
        for line in head.split("\r\n") {
            if let Some((k, v)) = line.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-disposition") {
                    name = header_param(v, "name").unwrap_or_default();
                    filename = header_param(v, "filename");
                }
            }
        }
        parts.push(Part {
            name,
            filename,
            data: body[data_start..data_end.max(data_start)].to_vec(),
        });
        pos = next + delim.len();
    }
    parts
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() || needle.is_empty() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn field(parts: &[Part], name: &str) -> Option<String> {
    parts
        .iter()
        .find(|p| p.name == name && p.filename.is_none())
        .map(|p| String::from_utf8_lossy(&p.data).into_owned())
}

/// `server.image_upload` (+ `upload_mask`'s save function).
pub(crate) fn upload(shared: &Shared, req: &Request, mask: bool) -> Response {
    let parts = parse_form(req);
    let kind = field(&parts, "type").unwrap_or_else(|| "input".into());
    let Some(dir) = shared.dirs.by_type(&kind) else {
        // `get_dir_by_type` leaves `type_dir` unbound → UnboundLocalError → 500.
        return Response::server_error();
    };
    let Some(image) = parts.iter().find(|p| p.name == "image" && p.filename.is_some()) else {
        return Response::empty(400);
    };
    let Some(mut filename) = image.filename.clone().filter(|f| !f.is_empty()) else {
        return Response::empty(400);
    };
    let subfolder = field(&parts, "subfolder").unwrap_or_default();
    let Some(folder) = sub_inside(dir, &subfolder) else {
        return Response::empty(400);
    };
    let Some(mut path) = join_inside(&folder, &filename) else {
        return Response::empty(400);
    };
    if std::fs::create_dir_all(&folder).is_err() {
        return Response::server_error();
    }
    let overwrite = field(&parts, "overwrite").is_some_and(|o| o == "true" || o == "1");
    let mut duplicate = false;
    if !overwrite {
        let (stem, ext) = match filename.rfind('.') {
            Some(i) if i > 0 => (filename[..i].to_string(), filename[i..].to_string()),
            _ => (filename.clone(), String::new()),
        };
        let digest = Sha256::digest(&image.data);
        for i in 1..100_000 {
            if !path.exists() {
                break;
            }
            if std::fs::read(&path).is_ok_and(|old| Sha256::digest(&old) == digest) {
                duplicate = true;
                break;
            }
            filename = format!("{stem} ({i}){ext}");
            path = folder.join(&filename);
        }
    }
    if !duplicate {
        let data = if mask {
            match apply_mask(shared, &parts, &image.data) {
                Ok(d) => d,
                Err(r) => return r,
            }
        } else {
            image.data.clone()
        };
        if std::fs::write(&path, data).is_err() {
            return Response::server_error();
        }
    }
    Response::json(200, &json!({"name": filename, "subfolder": subfolder, "type": kind}))
}

/// `upload_mask`: the upload's alpha applied to a copy of `original_ref`.
fn apply_mask(shared: &Shared, parts: &[Part], mask_bytes: &[u8]) -> Result<Vec<u8>, Response> {
    let original: Value = field(parts, "original_ref")
        .and_then(|s| serde_json::from_str(&s).ok())
        .ok_or_else(Response::server_error)?;
    let raw = original.get("filename").and_then(Value::as_str).unwrap_or_default();
    let (name, dir) = annotated(raw, &shared.dirs);
    if name.is_empty() || name.starts_with('/') || name.contains("..") {
        return Err(Response::empty(400));
    }
    let base = match dir {
        Some(d) => d.clone(),
        None => shared
            .dirs
            .by_type(original.get("type").and_then(Value::as_str).unwrap_or("output"))
            .cloned()
            .ok_or_else(|| Response::empty(400))?,
    };
    let sub = original.get("subfolder").and_then(Value::as_str).unwrap_or_default();
    let dir = sub_inside(&base, sub).ok_or_else(|| Response::empty(403))?;
    let orig = std::fs::read(dir.join(&name)).map_err(|_| Response::server_error())?;
    let orig = decode_png(&orig).map_err(|_| Response::server_error())?;
    let mask = decode_png(mask_bytes).map_err(|_| Response::server_error())?;
    if (orig.w, orig.h) != (mask.w, mask.h) {
        return Err(Response::server_error());
    }
    let data: Vec<u8> = orig
        .data
        .chunks_exact(4)
        .zip(mask.data.chunks_exact(4))
        .flat_map(|(o, m)| [o[0], o[1], o[2], m[3]])
        .collect();
    encode_png(orig.w, orig.h, &data, png::ColorType::Rgba, &[]).map_err(|_| Response::server_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-200", 100), Some((5, 99)));
    }

    #[test]
    fn subfolders() {
        let base = Path::new("/tmp/x/output");
        assert_eq!(sub_inside(base, "a/b"), Some(PathBuf::from("/tmp/x/output/a/b")));
        assert_eq!(sub_inside(base, "a/../b"), Some(PathBuf::from("/tmp/x/output/b")));
        assert_eq!(sub_inside(base, "../../"), None);
        assert_eq!(sub_inside(base, ""), Some(base.to_path_buf()));
    }
}
