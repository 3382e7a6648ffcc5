//! A ComfyUI service's node schemas (`/object_info`), cached per service: UI-format workflows are converted and
//! validated against them.
use super::registry::{ComfyLink, Registry};
use super::Hub;
use crate::comfy::http::ComfyHttp;
use crate::error::Result;
use crate::workflow::ObjectInfo;
use parking_lot::Mutex;
use serde_json::Value;
use std::sync::Arc;

/// A service's node list: raw (as Python sees it) and parsed (for conversion and validation).
pub struct Schema {
    pub raw: Arc<Value>,
    pub info: Arc<ObjectInfo>,
}

impl Schema {
    /// The same node list with a file just uploaded among the choices of every image-upload input: the server
    /// lists it from now on, but this copy was fetched before, and validation must not refuse the new name.
    pub fn with_upload(&self, file: &str) -> Schema {
        let mut raw = (*self.raw).clone();
        add_upload_choice(&mut raw, file);
        let info = ObjectInfo::from_value(&raw).map_or_else(|_| self.info.clone(), Arc::new);
        Schema {
            raw: Arc::new(raw),
            info,
        }
    }
}

fn add_upload_choice(raw: &mut Value, file: &str) {
    let Some(classes) = raw.as_object_mut() else { return };
    for spec in classes.values_mut().flat_map(crate::workflow::schema::input_specs_mut) {
        if spec.pointer("/1/image_upload").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        // `[[choices…], {…}]`, or the v3 form `["COMBO", {"options": [choices…], …}]`.
        let choices = if spec.get(0).is_some_and(Value::is_array) {
            spec.get_mut(0)
        } else {
            spec.pointer_mut("/1/options")
        };
        if let Some(list) = choices.and_then(Value::as_array_mut) {
            if !list.iter().any(|c| c.as_str() == Some(file)) {
                list.push(Value::from(file));
            }
        }
    }
}

pub(super) type SchemaSlot = Arc<Mutex<Option<Arc<Schema>>>>;

pub(super) async fn fetch_schema(http: &ComfyHttp, slot: &SchemaSlot) -> Result<Arc<Schema>> {
    let raw = http.object_info().await?;
    let info = ObjectInfo::from_value(&raw)?;
    let schema = Arc::new(Schema {
        raw: Arc::new(raw),
        info: Arc::new(info),
    });
    *slot.lock() = Some(schema.clone());
    Ok(schema)
}

impl Hub {
    /// The ComfyUI service's HTTP API and schema cache.
    pub(super) fn comfy_api(&self, service: &str) -> Result<(ComfyHttp, SchemaSlot)> {
        let services = self.registry.services.lock();
        let h = services
            .get(service)
            .ok_or_else(|| Registry::unknown_in(&services, service))?;
        // A pool answers with one of its servers (the node list of a server that takes jobs now).
        if let Some(api) = Hub::pool_comfy_api(&services, service) {
            return Ok(api);
        }
        let link = h.typed::<ComfyLink>(service, "a ComfyUI")?;
        Ok((link.api.http.clone(), link.api.schema.clone()))
    }

    /// The server's node schemas (`GET /object_info`), cached per service; `refresh` fetches them again.
    /// Blocks the calling thread (scripts and the CLI, not the UI thread).
    pub fn object_info(&self, service: &str, refresh: bool) -> Result<Arc<Value>> {
        let (http, slot) = self.comfy_api(service)?;
        if !refresh {
            if let Some(hit) = slot.lock().clone() {
                return Ok(hit.raw.clone());
            }
        }
        Ok(self
            .block_on(async move { fetch_schema(&http, &slot).await })??
            .raw
            .clone())
    }
}
