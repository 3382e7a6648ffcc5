//! A finished prompt's files, brought home through `/view` with the shared download writer (`net::download`).
use super::http::ComfyHttp;
use super::protocol::FileRef;
use crate::error::Result;
use crate::event::OutputFile;
use crate::net::files::safe_component;
use std::path::Path;

/// Downloads every file into `dir`, each written atomically. Files already on disk from an earlier attempt of
/// the same job (same node, kind and name) are not fetched twice.
pub async fn download_all(http: &ComfyHttp, dir: &Path, refs: &[FileRef]) -> Result<Vec<OutputFile>> {
    let mut files = Vec::with_capacity(refs.len());
    let mut seen = std::collections::HashSet::new();
    for r in refs {
        if !seen.insert(r.clone()) {
            continue;
        }
        let name = safe_component(&r.filename, "output");
        let (path, size, sha256) = http
            .download(&r.filename, &r.subfolder, &r.file_type, dir, &name)
            .await?;
        files.push(OutputFile {
            node_id: r.node_id.clone(),
            kind: r.kind.clone(),
            path,
            filename: r.filename.clone(),
            subfolder: r.subfolder.clone(),
            file_type: r.file_type.clone(),
            size,
            sha256,
        });
    }
    Ok(files)
}
