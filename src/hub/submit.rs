//! ComfyUI and WanGP jobs: submitting (with UI → API conversion), following a job an earlier session submitted,
//! and submitting a job's workflow again. A job is registered and handed to its actor under the registry lock, so
//! removing the service or closing the hub either sees the job (and ends it) or the submission fails cleanly.
use super::config::output_group;
use super::registry::{ComfyApi, ComfyLink, Registry, WanGpLink};
use super::schema::{fetch_schema, SchemaSlot};
use super::Hub;
use crate::comfy::http::ComfyHttp;
use crate::comfy::service::Command;
use crate::error::{Error, ErrorCode, Result};
use crate::event::JobError;
use crate::gradio::GradioCall;
use crate::mcp::service::Command as WanGpCommand;
use crate::service::ActorHandle;
use crate::tracker::{HandOver, Shared, Submission};
use crate::workflow::prepare;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

impl Registry {
    /// Hands a registered job to whichever actor holds `service` now (the job was converted in the background,
    /// and the service may have been removed or re-addressed meanwhile).
    /// A ComfyUI service's HTTP API and schema cache as they are now (None once it is removed).
    fn comfy_api_of(&self, service: &str) -> Option<(ComfyHttp, SchemaSlot)> {
        let services = self.services.lock();
        let link = services.get(service)?.actor.as_any().downcast_ref::<ComfyLink>()?;
        Some((link.api.http.clone(), link.api.schema.clone()))
    }

    fn start_later<C, X>(&self, shared: &Shared, service: &str, job_id: &str, order: C) -> HandOver
    where
        C: crate::service::ActorCommand,
        X: Send + Sync + 'static,
    {
        let services = self.services.lock();
        match services
            .get(service)
            .and_then(|h| h.actor.as_any().downcast_ref::<ActorHandle<C, X>>())
        {
            Some(link) => link.start(shared, job_id, order, false),
            None => {
                shared.fail_job(
                    service,
                    job_id,
                    JobError::simple(
                        ErrorCode::ServiceRemoved.as_str(),
                        format!("its service {service:?} was removed before the job could be sent"),
                    ),
                );
                HandOver::Failed
            }
        }
    }
}

impl Hub {
    /// Queues a prompt (API or UI format) on a service and returns the job id at once. On a WanGP MCP service,
    /// `workflow` is a WanGP settings dict (or task list).
    pub fn submit(
        &self,
        service: &str,
        workflow: Value,
        params: Vec<(String, Value)>,
        tag: Option<String>,
    ) -> Result<String> {
        self.ensure_open()?;
        let (http, slot) = {
            let services = self.registry.services.lock();
            let h = services
                .get(service)
                .ok_or_else(|| Registry::unknown_in(&services, service))?;
            if h.actor.as_any().is::<WanGpLink>() {
                drop(services);
                return self.submit_wangp(service, workflow, tag);
            }
            if Hub::is_pool(&services, service) {
                drop(services);
                return self.submit_pool(service, workflow, params, tag);
            }
            let link = h.typed::<ComfyLink>(service, "a ComfyUI")?;
            (link.api.http.clone(), link.api.schema.clone())
        };
        let loaded = prepare::load(workflow.clone())?;
        let cached = slot.lock().clone();
        let submission = Submission {
            workflow: Arc::new(workflow),
            params,
        };
        let group = output_group(tag.as_deref(), service);
        let job_id = uuid::Uuid::new_v4().to_string();
        if prepare::needs_object_info(&loaded) && cached.is_none() {
            // A UI-format workflow waits for the server's node list; submit() itself never waits on the network.
            // The job is registered unowned: a cancel meanwhile ends it, and it is then never sent.
            let runtime = {
                let services = self.registry.services.lock();
                if !services.contains_key(service) {
                    return Err(Registry::unknown_in(&services, service));
                }
                let rt = self.runtime.lock();
                let handle = rt
                    .as_ref()
                    .ok_or_else(|| Error::new(ErrorCode::Closed, "this hub is closed"))?
                    .handle()
                    .clone();
                self.shared.register(&job_id, service, tag, submission.clone());
                handle
            };
            let (shared, registry) = (self.shared.clone(), self.registry.clone());
            let (id, service) = (job_id.clone(), service.to_string());
            runtime.spawn(async move {
                // A server that cannot be reached yet is waited for (a job submitted while the server is down or
                // its address is being corrected is sent once it answers), with the service's address read
                // afresh each try. The wait ends with the job: a cancel, remove_service or close ends it.
                let mut pause = Duration::from_millis(200);
                let (mut http, mut slot) = (http, slot);
                let prepared = loop {
                    let cached = slot.lock().clone();
                    let fetched = match cached {
                        Some(hit) => Ok(hit),
                        None => fetch_schema(&http, &slot).await,
                    };
                    match fetched {
                        Ok(schema) => break prepare::prepare(&loaded, &submission.params, Some(&schema.info)),
                        Err(e) if e.is_retryable() => {
                            if shared.job_state(&id).is_none_or(|s| s.is_terminal()) {
                                return;
                            }
                            log::debug!("job {id}: waiting for {service:?} to answer: {e}");
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(5));
                            match registry.comfy_api_of(&service) {
                                Some(api) => (http, slot) = api,
                                // Removed meanwhile: remove_service has ended the job (service_removed).
                                None => return,
                            }
                        }
                        Err(e) => break Err(e),
                    }
                };
                match prepared {
                    Ok(p) => {
                        for w in &p.warnings {
                            log::info!("job {id}: {w}");
                        }
                        let order = Command::Submit {
                            job_id: id.clone(),
                            prompt: Arc::new(p.prompt),
                            group,
                            prompt_id: None,
                        };
                        registry.start_later::<Command, ComfyApi>(&shared, &service, &id, order);
                    }
                    Err(e) => shared.fail_job(&service, &id, e.to_job_error()),
                }
            });
            return Ok(job_id);
        }
        let prepared = prepare::prepare(&loaded, &submission.params, cached.as_ref().map(|s| &*s.info))?;
        for w in &prepared.warnings {
            log::info!("job {job_id}: {w}");
        }
        let services = self.registry.services.lock();
        let h = services
            .get(service)
            .ok_or_else(|| Registry::unknown_in(&services, service))?;
        let link = h.typed::<ComfyLink>(service, "a ComfyUI")?;
        self.shared.register(&job_id, service, tag, submission);
        let order = Command::Submit {
            job_id: job_id.clone(),
            prompt: Arc::new(prepared.prompt),
            group,
            prompt_id: None,
        };
        link.start(&self.shared, &job_id, order, false);
        Ok(job_id)
    }

    /// A WanGP generation: `source` is what `wangp_generate` takes (a settings dict, a task dict or a task list).
    fn submit_wangp(&self, service: &str, source: Value, tag: Option<String>) -> Result<String> {
        if !(source.is_object() || source.is_array()) {
            return Err(Error::new(
                ErrorCode::InvalidWorkflow,
                "a WanGP job is a settings dict (or a list of tasks), e.g. {\"model_type\": \"t2v_1.3B\", \"prompt\": \"...\"}",
            ));
        }
        let group = output_group(tag.as_deref(), service);
        let job_id = uuid::Uuid::new_v4().to_string();
        let submission = Submission {
            workflow: Arc::new(source.clone()),
            params: Vec::new(),
        };
        let services = self.registry.services.lock();
        let h = services
            .get(service)
            .ok_or_else(|| Registry::unknown_in(&services, service))?;
        let link = h.typed::<WanGpLink>(service, "a WanGP MCP server")?;
        self.shared.register(&job_id, service, tag, submission);
        let order = WanGpCommand::Generate {
            job_id: job_id.clone(),
            source,
            group,
        };
        link.start(&self.shared, &job_id, order, true);
        Ok(job_id)
    }

    /// Follows a job that an earlier hub submitted (e.g. before Blender was restarted), by its id: the server is
    /// asked where it is, and its events and results arrive like any other job's. Returns at once.
    pub fn track(&self, service: &str, job_id: &str, tag: Option<String>) -> Result<String> {
        self.track_with(service, job_id, tag, true)
    }

    /// `track` for a job that was never confirmed to have reached the server (`posted = false`, e.g. it was still
    /// waiting for the server when the previous session ended): if the server does not know it, it fails
    /// `not_posted` instead of `server_restarted`.
    pub fn track_with(&self, service: &str, job_id: &str, tag: Option<String>, posted: bool) -> Result<String> {
        self.ensure_open()?;
        if self.shared.job(job_id).is_some() {
            return Ok(job_id.to_string());
        }
        let services = self.registry.services.lock();
        let h = services
            .get(service)
            .ok_or_else(|| Registry::unknown_in(&services, service))?;
        let link = h.typed::<ComfyLink>(service, "a ComfyUI")?;
        let group = output_group(tag.as_deref(), service);
        self.shared.register(job_id, service, tag, Submission::default());
        let order = Command::Track {
            job_id: job_id.to_string(),
            group,
        };
        // Never posted by this hub: it is asked about, not sent (`posted` only decides the failure's reason).
        link.start(&self.shared, job_id, order, posted);
        Ok(job_id.to_string())
    }

    /// Submits a job's workflow again as a new job (same service, tag and parameters).
    pub fn resubmit(&self, job_id: &str) -> Result<String> {
        let (service, tag, submission) = self
            .shared
            .submission(job_id)
            .ok_or_else(|| Error::new(ErrorCode::UnknownJob, format!("no job with id {job_id:?}")))?;
        if submission.workflow.is_null() {
            return Err(Error::new(
                ErrorCode::UnknownJob,
                format!("job {job_id} was tracked, not submitted here: its workflow is not known to this hub"),
            ));
        }
        if self.service_kind(&service).is_some_and(|(k, _)| k == "gradio") {
            let w = &*submission.workflow;
            let call = GradioCall {
                api_name: w.get("api_name").and_then(Value::as_str).map(str::to_string),
                fn_index: w.get("fn_index").and_then(Value::as_u64),
                inputs: w.get("inputs").and_then(Value::as_array).cloned().unwrap_or_default(),
                session_hash: None,
            };
            return self.call(&service, call, tag);
        }
        self.submit(&service, (*submission.workflow).clone(), submission.params, tag)
    }
}
