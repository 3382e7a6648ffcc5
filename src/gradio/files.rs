//! Files in and out of a Gradio call. In: a local file given as `{"path": "/local/file"}` (what
//! `director_link.gradio_file()` makes) is uploaded and replaced by the server's file value (4.x+ FileData, 3.x file
//! dict). Out: every FileData in the outputs is downloaded into the job's folder (URL built from `path`, never from
//! the server's `url`), streamed, hashed, synced and renamed into place; the output values get a `local_path`.
use super::http::GradioHttp;
use super::protocol::{file_ref, files_in, FileRef};
use crate::error::Error;
use crate::event::OutputFile;
use crate::net::files::safe_component;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A local file to upload: an object whose only keys are `path` (+ optional `orig_name`), not a server FileData.
pub fn upload_marker(o: &Map<String, Value>) -> Option<PathBuf> {
    let path = o.get("path")?.as_str()?;
    let only_ours = o.keys().all(|k| k == "path" || k == "orig_name");
    only_ours.then(|| PathBuf::from(path))
}

/// Uploads every marked local file in `inputs` (once per path) and substitutes the server's value.
pub async fn upload_inputs(http: &GradioHttp, inputs: &mut [Value], legacy: bool) -> Result<usize, Error> {
    let mut wanted = Vec::new();
    for v in inputs.iter() {
        collect_markers(v, &mut wanted);
    }
    let mut done: HashMap<PathBuf, Value> = HashMap::new();
    for local in wanted {
        if done.contains_key(&local) {
            continue;
        }
        if !local.is_file() {
            return Err(Error::new(
                crate::ErrorCode::InvalidParameter,
                format!("input file {} does not exist (or is not a file)", local.display()),
            ));
        }
        let server_path = http.upload(&local).await?;
        let orig = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let size = std::fs::metadata(&local).map(|m| m.len()).unwrap_or(0);
        let value = if legacy {
            json!({"name": server_path, "data": null, "is_file": true, "orig_name": orig, "size": size})
        } else {
            json!({"path": server_path, "url": null, "orig_name": orig, "size": size, "mime_type": null,
                   "meta": {"_type": "gradio.FileData"}})
        };
        done.insert(local, value);
    }
    let n = done.len();
    for v in inputs.iter_mut() {
        substitute(v, &done);
    }
    Ok(n)
}

fn collect_markers(v: &Value, out: &mut Vec<PathBuf>) {
    match v {
        Value::Object(o) => match upload_marker(o) {
            Some(p) => out.push(p),
            None => o.values().for_each(|x| collect_markers(x, out)),
        },
        Value::Array(a) => a.iter().for_each(|x| collect_markers(x, out)),
        _ => {}
    }
}

fn substitute(v: &mut Value, done: &HashMap<PathBuf, Value>) {
    if let Value::Object(o) = v {
        if let Some(p) = upload_marker(o) {
            if let Some(server) = done.get(&p) {
                *v = server.clone();
            }
            return;
        }
    }
    match v {
        Value::Object(o) => o.values_mut().for_each(|x| substitute(x, done)),
        Value::Array(a) => a.iter_mut().for_each(|x| substitute(x, done)),
        _ => {}
    }
}

/// Downloads the files of `data` (one value per output component, `kinds` their component types) into `dir`.
/// Returns the files and `data` with `local_path` added to each file value.
pub async fn download_outputs(
    http: &GradioHttp,
    dir: &Path,
    data: &[Value],
    kinds: &[(String, Option<String>)],
) -> Result<(Vec<OutputFile>, Vec<Value>), Error> {
    let mut files = Vec::new();
    let mut local: HashMap<String, PathBuf> = HashMap::new();
    for (i, value) in data.iter().enumerate() {
        let mut refs: Vec<FileRef> = Vec::new();
        files_in(value, &mut refs);
        for r in refs {
            if local.contains_key(&r.path) {
                continue;
            }
            let server_name = r.path.rsplit(['/', '\\']).next().unwrap_or("output").to_string();
            let shown = r.orig_name.clone().filter(|n| !n.is_empty()).unwrap_or(server_name);
            let name = safe_component(&shown, "output");
            let (final_path, size, sha256) = http.download(&r.path, dir, &name).await?;
            let kind = kinds
                .get(i)
                .map(|k| k.0.clone())
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| "file".into());
            files.push(OutputFile {
                node_id: i.to_string(),
                kind,
                path: final_path.clone(),
                filename: shown,
                subfolder: String::new(),
                file_type: "gradio".into(),
                size,
                sha256,
            });
            local.insert(r.path.clone(), final_path);
        }
    }
    let mut values = data.to_vec();
    for v in values.iter_mut() {
        add_local_paths(v, &local);
    }
    Ok((files, values))
}

fn add_local_paths(v: &mut Value, local: &HashMap<String, PathBuf>) {
    match v {
        Value::Object(o) => {
            if let Some(r) = file_ref(o) {
                if let Some(p) = local.get(&r.path) {
                    o.insert("local_path".into(), p.to_string_lossy().into_owned().into());
                }
                return;
            }
            o.values_mut().for_each(|x| add_local_paths(x, local));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| add_local_paths(x, local)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_only_bare_paths() {
        let m = |v: Value| v.as_object().and_then(upload_marker);
        assert_eq!(m(json!({"path": "/a.wav"})), Some(PathBuf::from("/a.wav")));
        assert_eq!(
            m(json!({"path": "/a.wav", "orig_name": "a.wav"})),
            Some(PathBuf::from("/a.wav"))
        );
        assert_eq!(
            m(json!({"path": "/tmp/gradio/x", "meta": {"_type": "gradio.FileData"}})),
            None
        );
        let mut done = HashMap::new();
        done.insert(PathBuf::from("/a.wav"), json!({"name": "/srv/a.wav", "is_file": true}));
        let mut v = json!(["x", [{"path": "/a.wav"}], {"path": "/b"}]);
        substitute(&mut v, &done);
        assert_eq!(
            v,
            json!(["x", [{"name": "/srv/a.wav", "is_file": true}], {"path": "/b"}])
        );
    }
}
