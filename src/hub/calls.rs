//! Chats with OpenAI-compatible servers and calls of Gradio apps: each starts a job on its actor at once.
use super::config::output_group;
use super::registry::{GradioLink, OpenAiLink, Registry};
use super::Hub;
use crate::error::{Error, ErrorCode, Result};
use crate::gradio::service::Command as GradioCommand;
use crate::gradio::GradioCall;
use crate::openai::service::{ChatRequest, Command as OpenAiCommand};
use crate::tracker::Submission;
use std::sync::Arc;

impl Hub {
    /// Starts a chat completion on an OpenAI-compatible service and returns the job id at once. The answer
    /// arrives as `TextDelta` events, then `JobCompleted` with `ui = {"text", "usage", "model", "finish_reason"}`.
    pub fn chat(&self, service: &str, request: ChatRequest, tag: Option<String>) -> Result<String> {
        self.ensure_open()?;
        if !request.messages.is_array() {
            return Err(Error::new(
                ErrorCode::InvalidParameter,
                "messages must be a list of {\"role\": ..., \"content\": ...} objects",
            ));
        }
        let services = self.registry.services.lock();
        let h = services
            .get(service)
            .ok_or_else(|| Registry::unknown_in(&services, service))?;
        let link = h.typed::<OpenAiLink>(service, "an OpenAI-compatible server")?;
        let job_id = uuid::Uuid::new_v4().to_string();
        let submission = Submission {
            workflow: Arc::new(request.messages.clone()),
            params: Vec::new(),
        };
        self.shared.register(&job_id, service, tag, submission);
        let order = OpenAiCommand::Chat {
            job_id: job_id.clone(),
            request,
        };
        // The actor sends the request at once: the job counts as posted from here.
        link.start(&self.shared, &job_id, order, true);
        Ok(job_id)
    }

    /// Calls an endpoint of a Gradio app (by `api_name` or `fn_index`) and returns the job id at once. Progress
    /// arrives as `Progress` events (with the app's `desc` text), gr.Info/Warning as `NodeText` (`log.info`, …),
    /// generator values as `NodeOutput`, then `JobCompleted` with the downloaded files and `ui = {"data": [...]}`.
    pub fn call(&self, service: &str, call: GradioCall, tag: Option<String>) -> Result<String> {
        self.ensure_open()?;
        if call.api_name.as_deref().is_none_or(|n| n.trim().is_empty()) && call.fn_index.is_none() {
            return Err(Error::new(
                ErrorCode::InvalidParameter,
                "a Gradio call needs api_name (e.g. \"/generate\") or fn_index",
            ));
        }
        let services = self.registry.services.lock();
        let h = services
            .get(service)
            .ok_or_else(|| Registry::unknown_in(&services, service))?;
        let link = h.typed::<GradioLink>(service, "a Gradio app")?;
        let job_id = uuid::Uuid::new_v4().to_string();
        let group = output_group(tag.as_deref(), service);
        let submission = Submission {
            workflow: Arc::new(serde_json::json!({
                "api_name": call.api_name,
                "fn_index": call.fn_index,
                "inputs": call.inputs,
            })),
            params: Vec::new(),
        };
        self.shared.register(&job_id, service, tag, submission);
        let order = GradioCommand::Call {
            job_id: job_id.clone(),
            call,
            group,
        };
        link.start(&self.shared, &job_id, order, true);
        Ok(job_id)
    }

    /// The models an OpenAI-compatible service offers (`GET /v1/models`). Blocks the calling thread.
    pub fn models(&self, service: &str) -> Result<Vec<crate::openai::protocol::Model>> {
        let http = {
            let services = self.registry.services.lock();
            let h = services
                .get(service)
                .ok_or_else(|| Registry::unknown_in(&services, service))?;
            h.typed::<OpenAiLink>(service, "an OpenAI-compatible server")?
                .api
                .clone()
        };
        let list = self.block_on(async move { http.models().await })?;
        Ok(list?.data)
    }
}
