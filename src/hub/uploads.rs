//! Images uploaded into a ComfyUI server's input folder, each distinct file once per service.
use super::registry::{ComfyLink, Registry};
use super::Hub;
use crate::error::Result;
use std::sync::Arc;

impl Hub {
    /// Uploads an image into the server's input folder; returns the name to put in a `LoadImage` node. Bytes
    /// uploaded before to this service are not sent again.
    pub fn upload_image(&self, service: &str, name: &str, bytes: Vec<u8>) -> Result<String> {
        use sha2::Digest;
        let (http, uploads, schema) = {
            let services = self.registry.services.lock();
            let h = services
                .get(service)
                .ok_or_else(|| Registry::unknown_in(&services, service))?;
            if Hub::is_pool(&services, service) {
                // Which server runs the job is decided later; the file would have to be on every one of them.
                return Err(crate::error::Error::new(
                    crate::error::ErrorCode::WrongService,
                    format!(
                        "{service:?} is a pool: uploading an input image to a pool is not supported yet; put the \
                         file in the input folder of each of its servers"
                    ),
                ));
            }
            let link = h.typed::<ComfyLink>(service, "a ComfyUI")?;
            (link.api.http.clone(), link.api.uploads.clone(), link.api.schema.clone())
        };
        let key: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some(known) = uploads.lock().get(&key) {
            return Ok(known.clone());
        }
        let name = crate::net::files::safe_component(name, "upload.png");
        let stored = self.block_on(async move { http.upload_image(&name, bytes).await })??;
        uploads.lock().insert(key, stored.clone());
        let mut cached = schema.lock();
        if let Some(known) = cached.as_ref() {
            *cached = Some(Arc::new(known.with_upload(&stored)));
        }
        Ok(stored)
    }
}
