//! WanGP's MCP tools and what they return (`shared/mcp_server.py`: `_JobRecord.snapshot`, `_result_to_dict`,
//! `_json_safe` of `ProgressUpdate`, `_MediaTransferStore.create_download`).
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const GENERATE: &str = "wangp_generate";
pub const GET_JOB: &str = "wangp_get_job";
pub const CANCEL_JOB: &str = "wangp_cancel_job";
pub const LIST_MODELS: &str = "wangp_list_models";
pub const CREATE_DOWNLOAD: &str = "wangp_create_gallery_download";

/// Events kept per snapshot; WanGP keeps at most 200 per job.
pub const EVENT_LIMIT: u32 = 200;

/// `wangp_generate` / `wangp_get_job` / `wangp_cancel_job`.
#[derive(Debug, Clone, Deserialize)]
pub struct JobSnapshot {
    pub job_id: String,
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(default)]
    pub events: Vec<JobEvent>,
    #[serde(default)]
    pub result: Option<GenerationResult>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JobEvent {
    pub kind: String,
    #[serde(default)]
    pub timestamp: f64,
    #[serde(default)]
    pub data: Value,
}

/// A `progress` (or `preview`) event's data.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProgressUpdate {
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub status: String,
    /// 0–100.
    #[serde(default)]
    pub progress: f64,
    #[serde(default)]
    pub current_step: Option<f64>,
    #[serde(default)]
    pub total_steps: Option<f64>,
}

impl ProgressUpdate {
    /// (value, max, percentage): steps when WanGP counts them, else its percentage.
    pub fn amounts(&self) -> (f64, f64, f64) {
        match (self.current_step, self.total_steps) {
            (Some(v), Some(m)) if m > 0.0 => (v, m, (v / m * 100.0).clamp(0.0, 100.0)),
            _ => {
                let p = self.progress.clamp(0.0, 100.0);
                (p, 100.0, p)
            }
        }
    }

    /// "Denoising | 0:12 / 1:40": the status line, else the phase.
    pub fn text(&self) -> Option<String> {
        [&self.status, &self.phase]
            .into_iter()
            .map(|s| s.trim())
            .find(|s| !s.is_empty())
            .map(str::to_string)
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GenerationResult {
    #[serde(default)]
    pub success: bool,
    #[serde(default)]
    pub cancelled: bool,
    #[serde(default)]
    pub generated_files: Vec<String>,
    #[serde(default)]
    pub errors: Vec<GenerationError>,
    #[serde(default)]
    pub gallery_items: Vec<GalleryItem>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GenerationError {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub cancelled: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct GalleryItem {
    pub gallery_id: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub media_type: String,
}

/// `wangp_create_gallery_download`: a one-use URL below the server root.
#[derive(Debug, Clone, Deserialize)]
pub struct DownloadTicket {
    pub download_url: String,
    #[serde(default)]
    pub filename: String,
    #[serde(default)]
    pub media_type: String,
}

impl GenerationResult {
    /// What went wrong, in WanGP's words.
    pub fn error_text(&self) -> String {
        let messages: Vec<String> = self
            .errors
            .iter()
            .filter(|e| !e.message.trim().is_empty())
            .map(|e| match &e.stage {
                Some(stage) if !stage.is_empty() => format!("{} (during {stage})", e.message.trim()),
                _ => e.message.trim().to_string(),
            })
            .collect();
        if messages.is_empty() {
            "WanGP reported a failed generation without a message".to_string()
        } else {
            messages.join("; ")
        }
    }
}

/// True when a `wangp_get_job` failure means the server no longer knows the job (it was restarted).
pub fn is_unknown_job(message: &str) -> bool {
    message.contains("Unknown WanGP job_id")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn progress_uses_steps_when_counted_and_percent_otherwise() {
        let p: ProgressUpdate = serde_json::from_value(json!({
            "phase": "Denoising", "status": "Denoising | 0:12 / 1:40", "progress": 40,
            "current_step": 4, "total_steps": 10, "raw_phase": "Denoising", "unit": null
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.amounts(), (4.0, 10.0, 40.0));
        assert_eq!(p.text().as_deref(), Some("Denoising | 0:12 / 1:40"));
        let p: ProgressUpdate = serde_json::from_value(json!({"phase": "VAE Decoding", "status": "", "progress": 250}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.amounts(), (100.0, 100.0, 100.0));
        assert_eq!(p.text().as_deref(), Some("VAE Decoding"));
    }

    #[test]
    fn errors_read_like_a_sentence() {
        let r: GenerationResult = serde_json::from_value(json!({
            "success": false, "errors": [{"message": "Out of VRAM", "stage": "generation", "cancelled": false}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.error_text(), "Out of VRAM (during generation)");
        assert!(GenerationResult::default().error_text().contains("without a message"));
    }
}
