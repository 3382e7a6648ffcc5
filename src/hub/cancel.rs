//! Cancelling jobs and reconnecting services, through the backend trait (no match per kind).
use super::Hub;
use crate::error::{Error, ErrorCode, Result};
use crate::event::JobError;

impl Hub {
    /// Asks for a job to be cancelled; `JobCancelled` follows once the server confirms. A job whose workflow is
    /// still being converted is cancelled at once and never sent.
    pub fn cancel(&self, job_id: &str) -> Result<()> {
        self.ensure_open()?;
        let job = self
            .shared
            .job(job_id)
            .ok_or_else(|| Error::new(ErrorCode::UnknownJob, format!("no job with id {job_id:?}")))?;
        if job.state.is_terminal() {
            return Ok(());
        }
        let services = self.registry.services.lock();
        if self.shared.cancel_unsent(job_id) {
            return Ok(());
        }
        let reached = services.get(&job.service).is_some_and(|h| h.actor.cancel(job_id));
        if !reached {
            // No actor will ever end it: end it here, with the true reason.
            self.shared.fail_job(
                &job.service,
                job_id,
                JobError::simple(
                    ErrorCode::ServiceRemoved.as_str(),
                    format!("its service {:?} stopped before the cancel could reach it", job.service),
                ),
            );
        }
        Ok(())
    }

    /// Drops the connection and connects again at once (skips the backoff wait).
    pub fn reconnect(&self, service: &str) -> Result<()> {
        let services = self.registry.services.lock();
        let handle = services
            .get(service)
            .ok_or_else(|| Error::new(ErrorCode::UnknownService, format!("no service named {service:?}")))?;
        if handle.actor.reconnect() {
            Ok(())
        } else {
            Err(Error::new(ErrorCode::Closed, "the service has stopped; add it again"))
        }
    }

    /// Cancels a job by id on a server, including one submitted by another client or process.
    pub fn cancel_remote(&self, service: &str, prompt_id: &str) -> Result<crate::comfy::http::CancelOutcome> {
        let (http, _) = self.comfy_api(service)?;
        let id = prompt_id.to_string();
        self.block_on(async move { http.cancel_prompt(&id).await })?
    }
}
